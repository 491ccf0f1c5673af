// The scalar half of quant_matmul: ISA selection, activation quantization (ggml's
// quantize_row_q8_0 / q8_1 for x86, which round with _mm256_round_ps, and
// quantize_row_q8_K_ref), the reference dot products (ggml-cpu/quants.c,
// ggml_vec_dot_*_generic), the threaded driver, and ggml's Q4_K / Q6_K reference
// quantizers (ggml-quants.c). Compiled with -ffp-contract=off (CMakeLists.txt) so float
// expressions round as written. SIMD kernels: quant_matmul_avx2.cpp, quant_matmul_avx512.cpp.
#include "models/quant_matmul.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "m3d/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF blocks are little-endian");

namespace m3d::models {
namespace {

using io::GgmlType;
using quant_kernels::Acts;

constexpr int kQK = 32;  // elements per block of Q8_0 / Q4_0 / Q4_1 / Q8_1
constexpr int kQKK = 256;  // elements per super-block of the K types

float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return io::fp16_to_f32(h);
}

void store_half(uint8_t* p, float value) {
  const uint16_t h = io::f32_to_fp16(value);
  std::memcpy(p, &h, 2);
}

float round_to_half(float value) { return io::fp16_to_f32(io::f32_to_fp16(value)); }

// ggml's nearest_int: round half to even through the float adder (valid for |v| < 2^22).
int nearest_int(float v) {
  const float biased = v + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &biased, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

// --- activations ---

// ggml's vec_dot_type: the format the CPU backend quantizes activations to for a weight type.
GgmlType act_type(GgmlType weight) {
  if (weight == GgmlType::Q4_1) return GgmlType::Q8_1;
  if (weight == GgmlType::Q4_K || weight == GgmlType::Q6_K) return GgmlType::Q8_K;
  return GgmlType::Q8_0;
}

struct ActBuffers {
  std::vector<int8_t> qs;
  std::vector<float> d, s;
  std::vector<int16_t> sums;
  Acts view{};
};

// The largest |x[j]|, j < n (n a multiple of 8), in 8 independent lanes: max is exact in any order.
float abs_max(const float* x, int n) {
  float lanes[8] = {};
  for (int j = 0; j < n; j += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] = std::max(lanes[l], std::fabs(x[j + l]));
  }
  return *std::max_element(lanes, lanes + 8);
}

// One block of quantize_row_q8_0 / q8_1 as ggml's x86 build runs it: d = amax / 127 and
// q = round-half-even(x * (127 / amax)) (_mm256_round_ps, which nearest_int equals for
// |v| <= 127); Q8_1 (s given) also stores s = f16(d * sum q).
void quantize_q8_block(const float* x, int8_t* q, float* d, float* s, int16_t* sum) {
  const float amax = abs_max(x, kQK);
  const float scale = amax / 127.f;
  const float inverse = amax != 0.0f ? 127.f / amax : 0.0f;
  int total = 0;
  for (int j = 0; j < kQK; ++j) {
    q[j] = static_cast<int8_t>(nearest_int(x[j] * inverse));
    total += q[j];
  }
  *d = round_to_half(scale);
  if (s != nullptr) *s = round_to_half(scale * static_cast<float>(total));
  *sum = static_cast<int16_t>(total);
}

// One super-block of quantize_row_q8_K_ref: the scale from the signed absmax (the first
// element of largest magnitude), f32 d, bsums per 16.
void quantize_q8_k_block(const float* x, int8_t* q, float* d, int16_t* bsums) {
  const float amax = abs_max(x, kQKK);
  if (amax == 0.0f) {
    std::memset(q, 0, kQKK);
    std::fill(bsums, bsums + kQKK / 16, int16_t{0});
    *d = 0.0f;
    return;
  }
  const float max = *std::find_if(x, x + kQKK, [&](float v) { return std::fabs(v) == amax; });
  const float iscale = -127.f / max;
  for (int j = 0; j < kQKK; ++j) q[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
  for (int g = 0; g < kQKK / 16; ++g) {
    int total = 0;
    for (int j = 0; j < 16; ++j) total += q[16 * g + j];
    bsums[g] = static_cast<int16_t>(total);
  }
  *d = 1 / iscale;
}

void quantize_acts(GgmlType weight, const float* x, int64_t m, int64_t k, ActBuffers* out) {
  const bool k_type = act_type(weight) == GgmlType::Q8_K, q8_1 = act_type(weight) == GgmlType::Q8_1;
  const int64_t blocks = k / (k_type ? kQKK : kQK), groups = k_type ? k / 16 : blocks;
  out->qs.resize(static_cast<size_t>(m * k));
  out->d.resize(static_cast<size_t>(m * blocks));
  out->s.resize(static_cast<size_t>(m * blocks));
  out->sums.resize(static_cast<size_t>(m * groups));
#pragma omp parallel for schedule(static) if (m * k >= (1 << 16))
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t at = r * blocks + b;
      if (k_type) {
        quantize_q8_k_block(x + r * k + b * kQKK, &out->qs[r * k + b * kQKK], &out->d[at], &out->sums[r * groups + b * 16]);
      } else {
        quantize_q8_block(x + r * k + b * kQK, &out->qs[r * k + b * kQK], &out->d[at], q8_1 ? &out->s[at] : nullptr, &out->sums[at]);
      }
    }
  }
  out->view = Acts{out->qs.data(), out->d.data(), out->s.data(), out->sums.data(), k, blocks, groups};
}

// --- reference dot products: one weight row against one activation row ---

// Q8_0: d, qs[32] (int8).
float dot_q8_0(const uint8_t* w, const Acts& x, int64_t row) {
  const int8_t* a = x.qs + row * x.k;
  float sum = 0.0f;
  for (int64_t b = 0; b < x.blocks; ++b, w += 34, a += kQK) {
    int block = 0;
    for (int j = 0; j < kQK; ++j) block += static_cast<int8_t>(w[2 + j]) * a[j];
    sum += static_cast<float>(block) * (load_half(w) * x.d[row * x.blocks + b]);
  }
  return sum;
}

// Q4_0: d, qs[16]; element j < 16 the low nibble of qs[j], j >= 16 the high nibble of qs[j - 16]; value q - 8.
float dot_q4_0(const uint8_t* w, const Acts& x, int64_t row) {
  const int8_t* a = x.qs + row * x.k;
  float sum = 0.0f;
  for (int64_t b = 0; b < x.blocks; ++b, w += 18, a += kQK) {
    int block = 0;
    for (int j = 0; j < 16; ++j) block += ((w[2 + j] & 0x0F) - 8) * a[j] + ((w[2 + j] >> 4) - 8) * a[j + 16];
    sum += static_cast<float>(block) * load_half(w) * x.d[row * x.blocks + b];
  }
  return sum;
}

// Q4_1: d, m, qs[16] (nibbles as Q4_0); value d * q + m, so each block adds m * s of Q8_1.
float dot_q4_1(const uint8_t* w, const Acts& x, int64_t row) {
  const int8_t* a = x.qs + row * x.k;
  float sum = 0.0f;
  for (int64_t b = 0; b < x.blocks; ++b, w += 20, a += kQK) {
    int block = 0;
    for (int j = 0; j < 16; ++j) block += (w[4 + j] & 0x0F) * a[j] + (w[4 + j] >> 4) * a[j + 16];
    const int64_t at = row * x.blocks + b;
    sum += (load_half(w) * x.d[at]) * static_cast<float>(block) + load_half(w + 2) * x.s[at];
  }
  return sum;
}

// The K dot products keep ggml's generic float order: integer sums in 8 lanes (element e in
// lane e % 8), lane f32 sums across super-blocks, then the lanes added in order at the end.
float lanes_total(float sum, const float lanes[8]) {
  for (int l = 0; l < 8; ++l) sum += lanes[l];
  return sum;
}

// Q4_K: d, dmin, scales[12], qs[128]; sub-block s (32 elements) takes the low (s even) or high
// (s odd) nibbles of qs[32 (s / 2) ...], value (d scale_s) q - dmin min_s.
float dot_q4_k(const uint8_t* w, const Acts& x, int64_t row) {
  const int8_t* a = x.qs + row * x.k;
  const int16_t* bsums = x.sums + row * x.groups;
  float sum = 0.0f, lanes[8] = {};
  for (int64_t b = 0; b < x.blocks; ++b, w += 144, a += kQKK, bsums += 16) {
    uint8_t scales[8], mins[8];
    quant_kernels::scales_k4_unpack(w + 4, scales, mins);
    int block[8] = {}, block_min = 0;
    for (int e = 0; e < kQKK; ++e) block[e % 8] += scales[e / 32] * ((w[16 + 32 * (e / 64) + e % 32] >> (4 * (e / 32 % 2))) & 0x0F) * a[e];
    for (int g = 0; g < 16; ++g) block_min += bsums[g] * mins[g / 2];
    const float d = load_half(w) * x.d[row * x.blocks + b], dmin = load_half(w + 2) * x.d[row * x.blocks + b];
    for (int l = 0; l < 8; ++l) lanes[l] += d * static_cast<float>(block[l]);
    sum -= dmin * static_cast<float>(block_min);
  }
  return lanes_total(sum, lanes);
}

// Q6_K: ql[128], qh[64], scales[16] (int8, per 16 elements), d; element e of half h = e / 128,
// at i = e % 128: low 4 bits from nibble i / 64 of ql[64 h + i % 64], high 2 bits from bits
// 2 (i / 32) of qh[32 h + i % 32]; value d scale (q - 32).
float dot_q6_k(const uint8_t* w, const Acts& x, int64_t row) {
  const int8_t* a = x.qs + row * x.k;
  float lanes[8] = {};
  for (int64_t b = 0; b < x.blocks; ++b, w += 210, a += kQKK) {
    int block[8] = {};
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, i = e % 128;
      const int low = (w[64 * h + i % 64] >> (4 * (i / 64))) & 0x0F;
      const int high = (w[128 + 32 * h + i % 32] >> (2 * (i / 32))) & 3;
      block[e % 8] += static_cast<int8_t>(w[192 + e / 16]) * ((low | (high << 4)) - 32) * a[e];
    }
    const float d = load_half(w + 208) * x.d[row * x.blocks + b];
    for (int l = 0; l < 8; ++l) lanes[l] += d * static_cast<float>(block[l]);
  }
  return lanes_total(0.0f, lanes);
}

template <float (*Dot)(const uint8_t*, const Acts&, int64_t)>
void rows_scalar(const uint8_t* w, size_t row_bytes, int64_t rows, const Acts& x, int64_t m0, int mr, float* y, int64_t ldy) {
  for (int64_t j = 0; j < rows; ++j) {
    for (int r = 0; r < mr; ++r) y[r * ldy + j] = Dot(w + j * row_bytes, x, m0 + r);
  }
}

const quant_kernels::Table kScalar = {rows_scalar<dot_q8_0>, rows_scalar<dot_q4_0>, rows_scalar<dot_q4_1>, rows_scalar<dot_q4_k>, rows_scalar<dot_q6_k>};

// --- ggml's reference K quantizers (ggml-quants.c), with its float expressions as written ---

// make_qkx2_quants as quantize_row_q4_K_ref calls it (32 values, levels 0..15, rmin -1,
// rdelta 0.1, 20 steps, squared error): the weighted least-squares (scale, min) over 21
// candidate grids. Returns the scale; *the_min is the offset subtracted (>= 0).
float make_qkx2_quants(const float* x, const float* weights, uint8_t* levels, float* the_min) {
  constexpr int kN = 32, kMax = 15;
  float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < kN; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::memset(levels, 0, kN);
    *the_min = -min;
    return 0.f;
  }
  float iscale = kMax / (max - min), scale = 1 / iscale, best_error = 0;
  for (int i = 0; i < kN; ++i) {
    levels[i] = static_cast<uint8_t>(std::clamp(nearest_int(iscale * (x[i] - min)), 0, kMax));
    const float diff = scale * levels[i] + min - x[i];
    best_error += weights[i] * (diff * diff);
  }
  uint8_t trial[kN];
  for (int step = 0; step <= 20; ++step) {
    iscale = (-1.f + 0.1f * step + kMax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < kN; ++i) {
      const int l = std::clamp(nearest_int(iscale * (x[i] - min)), 0, kMax);
      trial[i] = static_cast<uint8_t>(l);
      sum_l += weights[i] * l;
      sum_l2 += weights[i] * l * l;
      sum_xl += weights[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det, this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0;
    for (int i = 0; i < kN; ++i) {
      const float diff = this_scale * trial[i] + this_min - x[i];
      error += weights[i] * (diff * diff);
    }
    if (error < best_error) {
      std::memcpy(levels, trial, kN);
      best_error = error;
      scale = this_scale;
      min = this_min;
    }
  }
  *the_min = -min;
  return scale;
}

// quantize_row_q4_K_ref for one super-block: per 32 a (scale, min) from make_qkx2_quants
// weighted by rms + |x|, both quantized to 6 bits against the largest, then levels redone
// against the stored scales.
void quantize_q4_k_block(const float* x, uint8_t* out) {
  uint8_t levels[kQKK];
  float scales[8], mins[8], max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0, weights[32];
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(x + 32 * j, weights, levels + 32 * j, &mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t* packed = out + 4;
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0x0F) | ((lm & 0x0F) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  store_half(out, max_scale / 63.f);
  store_half(out + 2, max_min / 63.f);
  uint8_t sc[8], mn[8];
  quant_kernels::scales_k4_unpack(packed, sc, mn);
  for (int j = 0; j < 8; ++j) {
    const float d = load_half(out) * sc[j];
    if (d == 0) continue;  // keeps make_qkx2_quants' levels, as ggml does
    const float dm = load_half(out + 2) * mn[j];
    for (int l = 0; l < 32; ++l) levels[32 * j + l] = static_cast<uint8_t>(std::clamp(nearest_int((x[32 * j + l] + dm) / d), 0, 15));
  }
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) out[16 + 32 * c + l] = static_cast<uint8_t>(levels[64 * c + l] | (levels[64 * c + 32 + l] << 4));
  }
}

// make_qx_quants as quantize_row_q6_K_ref calls it (16 values, levels -32..31, weights x^2):
// the symmetric scale over 19 candidate grids. Levels are stored offset by 32.
float make_qx_quants(const float* x, int8_t* levels) {
  constexpr int kN = 16, kMax = 32;
  float max = 0, amax = 0;
  for (int i = 0; i < kN; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax < 1e-15f) {  // GROUP_MAX_EPS
    std::memset(levels, 0, kN);
    return 0.f;
  }
  auto fit = [&](float iscale, float* sumlx, float* suml2, bool store) {
    *sumlx = *suml2 = 0;
    for (int i = 0; i < kN; ++i) {
      const int l = std::clamp(nearest_int(iscale * x[i]), -kMax, kMax - 1);
      if (store) levels[i] = static_cast<int8_t>(l + kMax);
      const float w = x[i] * x[i];
      *sumlx += w * x[i] * l;
      *suml2 += w * l * l;
    }
  };
  float sumlx, suml2;
  fit(-kMax / max, &sumlx, &suml2, true);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    const float iscale = -(kMax + 0.1f * step) / max;
    fit(iscale, &sumlx, &suml2, false);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      fit(iscale, &sumlx, &suml2, true);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// quantize_row_q6_K_ref for one super-block: per 16 a scale from make_qx_quants, quantized to
// int8 against the largest in magnitude, then levels redone against the stored scales.
void quantize_q6_k_block(const float* x, uint8_t* out) {
  int8_t levels[kQKK];
  float scales[16], max_scale = 0, max_abs_scale = 0;
  for (int s = 0; s < 16; ++s) {
    scales[s] = make_qx_quants(x + 16 * s, levels + 16 * s);
    if (std::fabs(scales[s]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[s]);
      max_scale = scales[s];
    }
  }
  std::memset(out, 0, 210);
  if (max_abs_scale < 1e-15f) return;  // all zero, d = 0
  const float iscale = -128.f / max_scale;
  store_half(out + 208, 1 / iscale);
  for (int s = 0; s < 16; ++s) out[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[s]))));
  for (int s = 0; s < 16; ++s) {
    const float d = load_half(out + 208) * static_cast<int8_t>(out[192 + s]);
    if (d == 0) continue;  // keeps make_qx_quants' levels, as ggml does
    for (int i = 16 * s; i < 16 * s + 16; ++i) levels[i] = static_cast<int8_t>(std::clamp(nearest_int(x[i] / d), -32, 31) + 32);
  }
  for (int h = 0; h < 2; ++h) {
    const int8_t* L = levels + 128 * h;
    for (int l = 0; l < 32; ++l) {
      out[64 * h + l] = static_cast<uint8_t>((L[l] & 0x0F) | ((L[l + 64] & 0x0F) << 4));
      out[64 * h + l + 32] = static_cast<uint8_t>((L[l + 32] & 0x0F) | ((L[l + 96] & 0x0F) << 4));
      out[128 + 32 * h + l] = static_cast<uint8_t>((L[l] >> 4) | ((L[l + 32] >> 4) << 2) | ((L[l + 64] >> 4) << 4) | ((L[l + 96] >> 4) << 6));
    }
  }
}

// --- dispatch and the driver ---

[[noreturn]] void fail_unsupported(GgmlType type) {
  fail("quant_matmul: weight type {} has no quantized kernel (supported: Q8_0, Q4_0, Q4_1, Q4_K, Q6_K); dequantize it to F32 or F16 first",
       io::ggml_type_name(type));
}

quant_kernels::RowKernel kernel_for(const quant_kernels::Table& table, GgmlType type) {
  switch (type) {
    case GgmlType::Q8_0:
      return table.q8_0;
    case GgmlType::Q4_0:
      return table.q4_0;
    case GgmlType::Q4_1:
      return table.q4_1;
    case GgmlType::Q4_K:
      return table.q4_k;
    case GgmlType::Q6_K:
      return table.q6_k;
    default:
      fail_unsupported(type);
  }
}

size_t row_bytes_checked(GgmlType type, int64_t n, int64_t k, int64_t m) {
  if (!quant_matmul_supported(type)) fail_unsupported(type);
  const io::GgmlTypeInfo& info = io::ggml_type_info(type);
  if (n < 0 || m < 0 || k < 0) fail("quant_matmul: {} shapes must be non-negative, got n = {}, k = {}, m = {}", info.name, n, k, m);
  if (k % info.block_size != 0) { fail("quant_matmul: {} row length k = {} is not a multiple of its block size {}", info.name, k, info.block_size); }
  return static_cast<size_t>(k / info.block_size) * info.type_size;
}

// Weight rows in chunks of about 256 KiB (they stay in L2 while 4-row tiles of x pass over
// them), x rows in groups of 64; work items are (chunk, group), chunk-major, split statically.
void matmul_run(const quant_kernels::Table& table, GgmlType type, const uint8_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y, bool threaded) {
  const size_t row_bytes = row_bytes_checked(type, n, k, m);
  if (n == 0 || m == 0) return;
  const quant_kernels::RowKernel kernel = kernel_for(table, type);
  thread_local ActBuffers acts;  // reused: decoding calls this hundreds of times per token
  quantize_acts(type, x, m, k, &acts);
  constexpr int64_t kGroup = 64;
  const int64_t groups = (m + kGroup - 1) / kGroup;
  int64_t chunk = std::clamp<int64_t>(static_cast<int64_t>((256 << 10) / std::max<size_t>(row_bytes, 1)), 1, 1024);
  chunk = std::min(chunk, std::max<int64_t>(1, n * groups / 32));  // enough items to balance threads
  const int64_t chunks = (n + chunk - 1) / chunk;
  const Acts& view = acts.view;
#pragma omp parallel for schedule(static) if (threaded && n * k * m >= (1 << 15))
  for (int64_t item = 0; item < chunks * groups; ++item) {
    const int64_t j0 = item / groups * chunk, j1 = std::min(n, j0 + chunk);
    const int64_t g0 = item % groups * kGroup, g1 = std::min(m, g0 + kGroup);
    for (int64_t m0 = g0; m0 < g1; m0 += 4) {
      const int mr = static_cast<int>(std::min<int64_t>(4, g1 - m0));
      kernel(w + j0 * row_bytes, row_bytes, j1 - j0, view, m0, mr, y + m0 * n + j0, n);
    }
  }
}

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

IsaChoice& isa_choice() {
  static IsaChoice choice("quant_isa_force", has_avx512);
  return choice;
}

}  // namespace

void quant_isa_force(QuantIsa isa) { isa_choice().force(isa); }

QuantIsa quant_isa_active() { return isa_choice().active(); }

bool quant_isa_available(QuantIsa isa) { return isa_choice().available(isa); }

std::string quant_kernels_description() {
  const QuantIsa isa = quant_isa_active();
  return fmt::format("{} (q8_0 q4_0 q4_1 q4_k q6_k)", isa == QuantIsa::kAvx512 ? "avx512-vnni" : isa_name(isa));
}

bool quant_matmul_supported(io::GgmlType type) {
  return type == GgmlType::Q8_0 || type == GgmlType::Q4_0 || type == GgmlType::Q4_1 || type == GgmlType::Q4_K || type == GgmlType::Q6_K;
}

void quant_matmul(io::GgmlType type, const uint8_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y) {
  switch (quant_isa_active()) {
    case QuantIsa::kAvx512:
      return matmul_run(quant_kernels::table_avx512(), type, w, n, k, x, m, y, true);
    case QuantIsa::kAvx2:
      return matmul_run(quant_kernels::table_avx2(), type, w, n, k, x, m, y, true);
    default:
      return matmul_run(kScalar, type, w, n, k, x, m, y, true);
  }
}

size_t quant_quantize_k(io::GgmlType type, const float* src, uint8_t* dst, int64_t n) {
  if (type != GgmlType::Q4_K && type != GgmlType::Q6_K) fail("quant_quantize_k: {} is not a K type this quantizes (Q4_K, Q6_K)", io::ggml_type_name(type));
  if (n < 0 || n % kQKK != 0) fail("quant_quantize_k: {} needs whole super-blocks of 256 values, got {}", io::ggml_type_name(type), n);
  const size_t block_bytes = io::ggml_type_info(type).type_size;
  for (int64_t b = 0; b < n / kQKK; ++b) {
    if (type == GgmlType::Q4_K) {
      quantize_q4_k_block(src + b * kQKK, dst + b * block_bytes);
    } else {
      quantize_q6_k_block(src + b * kQKK, dst + b * block_bytes);
    }
  }
  return static_cast<size_t>(n / kQKK) * block_bytes;
}

void quant_matmul_reference(io::GgmlType type, const uint8_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y) {
  matmul_run(kScalar, type, w, n, k, x, m, y, false);
}

}  // namespace m3d::models
