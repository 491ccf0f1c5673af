// Reference block decoders and encoders. Each function handles one block and is
// written for reading, not speed: the fast kernels (issue 20, item 2) are tested
// against these. Byte layouts are given beside each decoder; "d" is always an f16
// scale unless said otherwise. Float expressions are evaluated in the order gguf-py
// evaluates them, and this file is compiled with -ffp-contract=off (CMakeLists.txt)
// so no multiply-add is fused: results equal gguf-py's bit for bit.
#include "io/gguf_blocks.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "m3d/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF block decoders assume a little-endian host");

namespace m3d::io {
namespace {

constexpr int64_t kQK = 32;  // elements per block of the 32-element formats
constexpr int64_t kQKK = 256;  // elements per super-block of the K formats

constexpr std::array<GgmlTypeInfo, 31> kTypes = {{
    {GgmlType::F32, "F32", 1, 4, true},
    {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", kQK, 2 + 16, true},
    {GgmlType::Q4_1, "Q4_1", kQK, 2 + 2 + 16, true},
    {GgmlType::Q5_0, "Q5_0", kQK, 2 + 4 + 16, true},
    {GgmlType::Q5_1, "Q5_1", kQK, 2 + 2 + 4 + 16, true},
    {GgmlType::Q8_0, "Q8_0", kQK, 2 + 32, true},
    {GgmlType::Q8_1, "Q8_1", kQK, 4 + 4 + 32, false},
    {GgmlType::Q2_K, "Q2_K", kQKK, 2 + 2 + kQKK / 16 + kQKK / 4, true},
    {GgmlType::Q3_K, "Q3_K", kQKK, 2 + kQKK / 4 + kQKK / 8 + 12, true},
    {GgmlType::Q4_K, "Q4_K", kQKK, 2 + 2 + kQKK / 2 + 12, true},
    {GgmlType::Q5_K, "Q5_K", kQKK, 2 + 2 + kQKK / 2 + kQKK / 8 + 12, true},
    {GgmlType::Q6_K, "Q6_K", kQKK, 2 + kQKK / 2 + kQKK / 4 + kQKK / 16, true},
    {GgmlType::Q8_K, "Q8_K", kQKK, 4 + kQKK + kQKK / 8, true},
    {GgmlType::IQ2_XXS, "IQ2_XXS", kQKK, 2 + kQKK / 4, false},
    {GgmlType::IQ2_XS, "IQ2_XS", kQKK, 2 + kQKK / 4 + kQKK / 32, false},
    {GgmlType::IQ3_XXS, "IQ3_XXS", kQKK, 2 + kQKK / 4 + kQKK / 8, false},
    {GgmlType::IQ1_S, "IQ1_S", kQKK, 2 + kQKK / 8 + kQKK / 16, false},
    {GgmlType::IQ4_NL, "IQ4_NL", kQK, 2 + 16, false},
    {GgmlType::IQ3_S, "IQ3_S", kQKK, 2 + kQKK / 4 + kQKK / 8 + kQKK / 32 + 4, false},
    {GgmlType::IQ2_S, "IQ2_S", kQKK, 2 + kQKK / 4 + kQKK / 16, false},
    {GgmlType::IQ4_XS, "IQ4_XS", kQKK, 2 + 2 + kQKK / 2 + kQKK / 64, false},
    {GgmlType::I8, "I8", 1, 1, true},
    {GgmlType::I16, "I16", 1, 2, true},
    {GgmlType::I32, "I32", 1, 4, true},
    {GgmlType::I64, "I64", 1, 8, true},
    {GgmlType::F64, "F64", 1, 8, true},
    {GgmlType::IQ1_M, "IQ1_M", kQKK, kQKK / 8 + kQKK / 16 + kQKK / 32, false},
    {GgmlType::BF16, "BF16", 1, 2, true},
    {GgmlType::TQ1_0, "TQ1_0", kQKK, 2 + 4 * 13, false},
    {GgmlType::TQ2_0, "TQ2_0", kQKK, 2 + 64, false},
}};

template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

float load_half(const uint8_t* p) { return fp16_to_f32(load<uint16_t>(p)); }

void store_half(uint8_t* p, float value) {
  const uint16_t h = f32_to_fp16(value);
  std::memcpy(p, &h, 2);
}

// Q4_0: d, qs[16]; element j < 16 is the low nibble of qs[j], j >= 16 the high
// nibble of qs[j - 16]; value d * (q - 8).
void dequantize_q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((b[2 + j] & 0x0F) - 8);
    y[j + 16] = d * static_cast<float>((b[2 + j] >> 4) - 8);
  }
}

// Q4_1: d, m, qs[16]; nibbles as Q4_0; value d * q + m.
void dequantize_q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(b[4 + j] & 0x0F) + m;
    y[j + 16] = d * static_cast<float>(b[4 + j] >> 4) + m;
  }
}

// Q5_0: d, qh (u32: bit j is bit 4 of element j), qs[16] (low nibbles as Q4_0);
// value d * (q - 16).
void dequantize_q5_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint32_t qh = load<uint32_t>(b + 2);
  for (int j = 0; j < 16; ++j) {
    const int lo = (b[6 + j] & 0x0F) | (((qh >> j) & 1) << 4);
    const int hi = (b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = d * static_cast<float>(lo - 16);
    y[j + 16] = d * static_cast<float>(hi - 16);
  }
}

// Q5_1: d, m, qh, qs[16]; value d * q + m.
void dequantize_q5_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  const uint32_t qh = load<uint32_t>(b + 4);
  for (int j = 0; j < 16; ++j) {
    const int lo = (b[8 + j] & 0x0F) | (((qh >> j) & 1) << 4);
    const int hi = (b[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = d * static_cast<float>(lo) + m;
    y[j + 16] = d * static_cast<float>(hi) + m;
  }
}

// Q8_0: d, qs[32] (int8); value q * d.
void dequantize_q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// Q2_K: scales[16] (low nibble scale, high nibble min, per 16 elements), qs[64]
// (2 bits), d, dmin. Element e: byte 32 * (e / 128) + e % 32 of qs, bits
// 2 * ((e % 128) / 32); value (d * scale) * q - dmin * min.
void dequantize_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = load_half(b + 80), dmin = load_half(b + 82);
  for (int e = 0; e < kQKK; ++e) {
    const int q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const float dl = d * static_cast<float>(scales[e / 16] & 0x0F);
    const float ml = dmin * static_cast<float>(scales[e / 16] >> 4);
    y[e] = dl * static_cast<float>(q) - ml;
  }
}

// Q3_K: hmask[32], qs[64] (low 2 bits as Q2_K), scales[12] (sixteen 6-bit scales:
// low 4 bits in nibbles of bytes 0-7, high 2 bits in bytes 8-11), d. Bit e / 32 of
// hmask[e % 32] clear means subtract 4; value (d * (scale - 32)) * q.
void dequantize_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = load_half(b + 108);
  for (int e = 0; e < kQKK; ++e) {
    const int k = e / 16;
    const int low = (sc[k % 8] >> (4 * (k / 8))) & 0x0F;
    const int high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    const float dl = d * static_cast<float>((low | (high << 4)) - 32);
    const int q2 = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const int hbit = (hmask[e % 32] >> (e / 32)) & 1;
    y[e] = dl * static_cast<float>(q2 - (hbit ? 0 : 4));
  }
}

// The eight 6-bit (scale, min) pairs of Q4_K/Q5_K packed in 12 bytes: pairs 0-3
// in the low 6 bits of bytes 0-3 / 4-7; pairs 4-7 in the nibbles of bytes 8-11
// with their top 2 bits in the top bits of bytes 0-3 / 4-7.
void scale_min_k4(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 0x3F;
    *min = s[j + 4] & 0x3F;
  } else {
    *scale = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K: d, dmin, scales[12], qs[128]. Eight sub-blocks of 32: sub-block s takes
// the low (s even) or high (s odd) nibbles of qs[32 * (s / 2) ...]; value
// (d * scale) * q - dmin * min.
void dequantize_q4_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    int scale = 0, min = 0;
    scale_min_k4(b + 4, s, &scale, &min);
    const float d1 = d * static_cast<float>(scale), m1 = dmin * static_cast<float>(min);
    for (int l = 0; l < 32; ++l) {
      const int q = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F;
      y[32 * s + l] = d1 * static_cast<float>(q) - m1;
    }
  }
}

// Q5_K: d, dmin, scales[12], qh[32], qs[128]; as Q4_K plus bit s of qh[l] as
// bit 4 of element 32 * s + l.
void dequantize_q5_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    int scale = 0, min = 0;
    scale_min_k4(b + 4, s, &scale, &min);
    const float d1 = d * static_cast<float>(scale), m1 = dmin * static_cast<float>(min);
    for (int l = 0; l < 32; ++l) {
      const int q = ((qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F) | (((qh[l] >> s) & 1) << 4);
      y[32 * s + l] = d1 * static_cast<float>(q) - m1;
    }
  }
}

// Q6_K: ql[128], qh[64], scales[16] (int8, per 16 elements), d. Element e, in
// half h = e / 128 at w = e % 128: low 4 bits from nibble w / 64 of
// ql[64 h + w % 64], high 2 bits from bits 2 (w / 32) of qh[32 h + w % 32];
// value (d * scale) * (q - 32).
void dequantize_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_half(b + 208);
  for (int e = 0; e < kQKK; ++e) {
    const int h = e / 128, w = e % 128;
    const int low = (ql[64 * h + w % 64] >> (4 * (w / 64))) & 0x0F;
    const int high = (qh[32 * h + w % 32] >> (2 * (w / 32))) & 3;
    y[e] = (d * static_cast<float>(scales[e / 16])) * static_cast<float>((low | (high << 4)) - 32);
  }
}

// Q8_K: d (f32), qs[256] (int8), bsums[16] (sums of 16 qs, for dot products only);
// value d * q, as dequantize_row_q8_K.
void dequantize_q8_k(const uint8_t* b, float* y) {
  const float d = load<float>(b);
  for (int e = 0; e < kQKK; ++e) y[e] = d * static_cast<float>(static_cast<int8_t>(b[4 + e]));
}

// --- encoders: quantize_row_*_ref, with gguf-py's arithmetic ---

// The element of largest magnitude, the first one on ties, with its sign.
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// ggml's Q4_0/Q5_0 computes x * id + offset in float where the compiler may fuse
// it; gguf-py pins it as an exact double product plus offset, rounded to float
// and truncated. We do the same.
int quant_symmetric(float x, float id, double offset, int top) {
  const float t = static_cast<float>(static_cast<double>(x) * static_cast<double>(id) + offset);
  return std::clamp(static_cast<int>(std::trunc(t)), 0, top);
}

int quant_affine(float x, float min, float id, int top) {
  const float scaled = (x - min) * id;
  return std::clamp(static_cast<int>(std::trunc(scaled + 0.5f)), 0, top);
}

void quantize_q4_0(const float* x, uint8_t* b) {
  const float d = signed_absmax(x, 32) / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  for (int j = 0; j < 16; ++j) { b[2 + j] = static_cast<uint8_t>(quant_symmetric(x[j], id, 8.5, 15) | (quant_symmetric(x[j + 16], id, 8.5, 15) << 4)); }
}

void quantize_q5_0(const float* x, uint8_t* b) {
  const float d = signed_absmax(x, 32) / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int lo = quant_symmetric(x[j], id, 16.5, 31), hi = quant_symmetric(x[j + 16], id, 16.5, 31);
    b[6 + j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
    qh |= static_cast<uint32_t>(lo >> 4) << j;
    qh |= static_cast<uint32_t>(hi >> 4) << (j + 16);
  }
  std::memcpy(b + 2, &qh, 4);
}

void min_max(const float* x, int n, float* min, float* max) {
  *min = std::numeric_limits<float>::max();
  *max = -std::numeric_limits<float>::max();
  for (int j = 0; j < n; ++j) {
    *min = std::min(*min, x[j]);
    *max = std::max(*max, x[j]);
  }
}

void quantize_q4_1(const float* x, uint8_t* b) {
  float min = 0, max = 0;
  min_max(x, 32, &min, &max);
  const float d = (max - min) / 15;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  store_half(b + 2, min);
  for (int j = 0; j < 16; ++j) { b[4 + j] = static_cast<uint8_t>(quant_affine(x[j], min, id, 15) | (quant_affine(x[j + 16], min, id, 15) << 4)); }
}

void quantize_q5_1(const float* x, uint8_t* b) {
  float min = 0, max = 0;
  min_max(x, 32, &min, &max);
  const float d = (max - min) / 31;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  store_half(b + 2, min);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int lo = quant_affine(x[j], min, id, 31), hi = quant_affine(x[j + 16], min, id, 31);
    b[8 + j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
    qh |= static_cast<uint32_t>(lo >> 4) << j;
    qh |= static_cast<uint32_t>(hi >> 4) << (j + 16);
  }
  std::memcpy(b + 4, &qh, 4);
}

void quantize_q8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
}

using BlockDecoder = void (*)(const uint8_t*, float*);

BlockDecoder block_decoder(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0:
      return dequantize_q4_0;
    case GgmlType::Q4_1:
      return dequantize_q4_1;
    case GgmlType::Q5_0:
      return dequantize_q5_0;
    case GgmlType::Q5_1:
      return dequantize_q5_1;
    case GgmlType::Q8_0:
      return dequantize_q8_0;
    case GgmlType::Q2_K:
      return dequantize_q2_k;
    case GgmlType::Q3_K:
      return dequantize_q3_k;
    case GgmlType::Q4_K:
      return dequantize_q4_k;
    case GgmlType::Q5_K:
      return dequantize_q5_k;
    case GgmlType::Q6_K:
      return dequantize_q6_k;
    case GgmlType::Q8_K:
      return dequantize_q8_k;
    default:
      return nullptr;
  }
}

int64_t whole_blocks(const GgmlTypeInfo& info, int64_t n, const char* what) {
  if (n < 0 || n % info.block_size != 0) { fail("ggml_{}: {} elements are not a whole number of {} blocks of {}", what, n, info.name, info.block_size); }
  return n / info.block_size;
}

}  // namespace

std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type) {
  for (const auto& info : kTypes) {
    if (static_cast<uint32_t>(info.type) == type) return info;
  }
  return std::nullopt;
}

const GgmlTypeInfo& ggml_type_info(GgmlType type) {
  for (const auto& info : kTypes) {
    if (info.type == type) return info;
  }
  fail("ggml type {} is unknown", static_cast<uint32_t>(type));
}

std::string_view ggml_type_name(GgmlType type) { return ggml_type_info(type).name; }

std::string ggml_dequantize_supported_list() {
  std::string out;
  for (const auto& info : kTypes) {
    if (!info.dequantize) continue;
    if (!out.empty()) out += ", ";
    out += info.name;
  }
  return out;
}

void ggml_dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  const int64_t blocks = whole_blocks(info, n, "dequantize");
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_half(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load<uint16_t>(src + 2 * i));
      return;
    case GgmlType::F64:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<double>(src + 8 * i));
      return;
    case GgmlType::I8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<int8_t>(src + i));
      return;
    case GgmlType::I16:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<int16_t>(src + 2 * i));
      return;
    case GgmlType::I32:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<int32_t>(src + 4 * i));
      return;
    case GgmlType::I64:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<int64_t>(src + 8 * i));
      return;
    default:
      break;
  }
  const BlockDecoder decode = block_decoder(type);
  if (decode == nullptr) { fail("ggml_dequantize: no reference dequantizer for {} (supported: {})", info.name, ggml_dequantize_supported_list()); }
  for (int64_t i = 0; i < blocks; ++i) decode(src + i * info.type_size, dst + i * info.block_size);
}

size_t ggml_quantize(GgmlType type, const float* src, uint8_t* dst, int64_t n) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  const int64_t blocks = whole_blocks(info, n, "quantize");
  void (*encode)(const float*, uint8_t*) = nullptr;
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return static_cast<size_t>(n) * 4;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) store_half(dst + 2 * i, src[i]);
      return static_cast<size_t>(n) * 2;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return static_cast<size_t>(n) * 2;
    case GgmlType::Q4_0:
      encode = quantize_q4_0;
      break;
    case GgmlType::Q4_1:
      encode = quantize_q4_1;
      break;
    case GgmlType::Q5_0:
      encode = quantize_q5_0;
      break;
    case GgmlType::Q5_1:
      encode = quantize_q5_1;
      break;
    case GgmlType::Q8_0:
      encode = quantize_q8_0;
      break;
    default:
      fail("ggml_quantize: no reference quantizer for {} (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)", info.name);
  }
  for (int64_t i = 0; i < blocks; ++i) encode(src + i * info.block_size, dst + i * info.type_size);
  return static_cast<size_t>(blocks) * info.type_size;
}

float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  const uint32_t mantissa = h & 0x3FF;
  uint32_t bits = 0;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf, NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {
    // Subnormal: mantissa * 2^-24, exact in float.
    const float value = std::ldexp(static_cast<float>(mantissa), -24);
    std::memcpy(&bits, &value, 4);
    bits |= sign;
  } else {
    bits = sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

uint16_t f32_to_fp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs = bits & 0x7FFFFFFF;
  if (abs > 0x7F800000) return static_cast<uint16_t>(sign | 0x7E00 | ((abs >> 13) & 0x3FF));  // NaN stays NaN
  if (abs >= 0x47800000) {
    // >= 65536 overflows; values in [65520, 65536) round up to inf too.
    return static_cast<uint16_t>(sign | 0x7C00);
  }
  if (abs < 0x38800000) {
    // Below the smallest normal half (2^-14): round abs * 2^24 to an integer, ties to even.
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    const float scaled = std::nearbyint(magnitude * 16777216.0f);  // exact product; default rounding is to even
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(scaled));
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even;
  // a carry out of the mantissa correctly bumps the exponent (up to inf).
  const uint32_t rebased = abs - (112u << 23);
  const uint32_t rounded = rebased + 0x0FFF + ((rebased >> 13) & 1);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((bits >> 16) | 64);  // quiet NaN
  return static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

}  // namespace m3d::io
