// models/quant_matmul against ggml: the scalar reference reproduces values printed by ggml's
// own C (ggml_vec_dot_*_generic after the x86 activation quantizers; the Q4_K / Q6_K
// reference quantizers' bytes) bit for bit; every SIMD kernel equals the reference on odd
// shapes; the reference equals the product of ggml_dequantize's weights (the gguf-py-checked
// decoders) with x up to a bound derived from the activation rounding; one-hot weights read
// the quantized activations back, which must be ggml's grids; the K quantizers land within
// half a step of their own grids.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <random>
#include <tuple>
#include <vector>

#include "io/gguf_blocks.h"
#include "models/quant_matmul.h"
#include "test_support.h"

namespace m3d::models {
namespace {

using io::GgmlType;

constexpr GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K};

// Restores automatic ISA selection when a test ends, pass or fail.
struct IsaGuard {
  ~IsaGuard() { quant_isa_force(QuantIsa::kAuto); }
};

std::vector<QuantIsa> available_isas() {
  std::vector<QuantIsa> isas;
  for (QuantIsa isa : {QuantIsa::kScalar, QuantIsa::kAvx2, QuantIsa::kAvx512}) {
    if (quant_isa_available(isa)) isas.push_back(isa);
  }
  return isas;
}

std::vector<float> random_values(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& v : values) v = normal(rng);
  return values;
}

size_t row_bytes(GgmlType type, int64_t k) { return static_cast<size_t>(k / io::ggml_type_info(type).block_size) * io::ggml_type_info(type).type_size; }

// n rows of k weights quantized by the reference quantizers (ggml_quantize or quant_quantize_k).
std::vector<uint8_t> random_weights(GgmlType type, int64_t n, int64_t k, uint32_t seed) {
  const std::vector<float> values = random_values(static_cast<size_t>(n * k), seed, 0.05f);
  std::vector<uint8_t> bytes(row_bytes(type, k) * static_cast<size_t>(n));
  if (type == GgmlType::Q4_K || type == GgmlType::Q6_K) {
    quant_quantize_k(type, values.data(), bytes.data(), n * k);
  } else {
    io::ggml_quantize(type, values.data(), bytes.data(), n * k);
  }
  if (type == GgmlType::Q8_0) {
    for (size_t b = 0; b < bytes.size() / 34; ++b) bytes[34 * b + 2 + b % 32] = 0x80;  // -128: ggml's quantizer never writes it, files may
  }
  return bytes;
}

std::vector<float> dequantized(GgmlType type, const std::vector<uint8_t>& bytes, int64_t count) {
  std::vector<float> values(static_cast<size_t>(count));
  io::ggml_dequantize(type, bytes.data(), values.data(), count);
  return values;
}

TEST(QuantMatmul, EveryIsaEqualsTheReference) {
  IsaGuard guard;
  const std::vector<QuantIsa> isas = available_isas();
  if (isas.size() == 1) std::cerr << "note: this CPU has neither AVX2 nor AVX512-VNNI; only the scalar kernels ran\n";
  for (GgmlType type : kTypes) {
    const int64_t block = io::ggml_type_info(type).block_size;
    for (int64_t k : {block, 3 * block, int64_t{768}}) {
      for (int64_t n : {1, 3, 17, 67}) {
        const std::vector<uint8_t> w = random_weights(type, n, k, static_cast<uint32_t>(n * 1000 + k));
        const std::vector<float> w_f32 = dequantized(type, w, n * k);
        for (int64_t m : {1, 2, 5, 7, 9, 70}) {  // tiles of 1..4 rows; 70 spans two groups of 64
          if (m == 70 && n != 17) continue;
          SCOPED_TRACE(testing::Message() << io::ggml_type_name(type) << " n=" << n << " k=" << k << " m=" << m);
          const std::vector<float> x = random_values(static_cast<size_t>(m * k), static_cast<uint32_t>(m + k));
          std::vector<float> want(static_cast<size_t>(m * n)), got(want.size());
          std::vector<double> magnitude(want.size());  // sum of |terms|, the scale of f32 accumulation-order differences
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              for (int64_t e = 0; e < k; ++e) magnitude[i * n + j] += std::fabs(double{w_f32[j * k + e]} * x[i * k + e]);
            }
          }
          quant_matmul_reference(type, w.data(), n, k, x.data(), m, want.data());
          for (QuantIsa isa : isas) {
            quant_isa_force(isa);
            std::fill(got.begin(), got.end(), NAN);
            quant_matmul(type, w.data(), n, k, x.data(), m, got.data());
            for (size_t i = 0; i < got.size(); ++i) {
              if (isa == QuantIsa::kScalar) {
                ASSERT_EQ(got[i], want[i]) << "the threaded scalar path is the reference itself";
              } else {
                ASSERT_NEAR(got[i], want[i], 1e-5 * magnitude[i] + 1e-30) << quant_kernels_description() << " output " << i;
              }
            }
          }
        }
      }
    }
  }
}

// What ggml's activation quantization for `type` allows at each element of x: per block
// (32, or 256 for Q8_K) the step d and |x_q - x| <= d / 2 plus the f16 rounding of d.
std::vector<double> activation_error_bounds(GgmlType type, const std::vector<float>& x) {
  const bool k_type = type == GgmlType::Q4_K || type == GgmlType::Q6_K;
  const size_t block = k_type ? 256 : 32;
  std::vector<double> bound(x.size());
  for (size_t b0 = 0; b0 < x.size(); b0 += block) {
    float amax = 0;
    for (size_t e = b0; e < b0 + block; ++e) amax = std::max(amax, std::fabs(x[e]));
    const double d = amax / 127.0;
    const double d_stored = k_type ? d : io::fp16_to_f32(io::f32_to_fp16(static_cast<float>(d)));
    // |q| <= 127 steps of the rounding of d, plus f32 rounding of x * (1 / d) (a few ulp).
    for (size_t e = b0; e < b0 + block; ++e) bound[e] = d / 2 + 127 * std::fabs(d_stored - d) + 4e-7 * (std::fabs(x[e]) + d);
  }
  return bound;
}

TEST(QuantMatmul, ReferenceIsTheDequantizedProductUpToActivationRounding) {
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(io::ggml_type_name(type));
    const int64_t n = 7, k = 1024, m = 3, blocks = k / io::ggml_type_info(type).block_size;
    const std::vector<uint8_t> w = random_weights(type, n, k, 7);
    const std::vector<float> w_f32 = dequantized(type, w, n * k);
    std::vector<float> x = random_values(static_cast<size_t>(m * k), 11, 3.0f);
    x[5] = 0.0f;
    x[40] = 1e3f;  // one block dominated by an outlier
    const std::vector<double> act_bound = activation_error_bounds(type, x);
    std::vector<float> y(static_cast<size_t>(m * n));
    quant_matmul_reference(type, w.data(), n, k, x.data(), m, y.data());
    double worst = 0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double exact = 0, bound = 0, magnitude = 0;
        for (int64_t e = 0; e < k; ++e) {
          const double wv = w_f32[j * k + e], xv = x[i * k + e];
          exact += wv * xv;
          bound += std::fabs(wv) * act_bound[i * k + e];
          magnitude += std::fabs(wv) * (std::fabs(xv) + act_bound[i * k + e]);
        }
        if (type == GgmlType::Q4_1) {
          // Q8_1's s = f16(d * sum q) with the unrounded d: |s - d_f16 sum q| <= 2 * 2^-11 * d * 32 * 127 per block.
          for (int64_t b = 0; b < blocks; ++b) {
            uint16_t mh;
            std::memcpy(&mh, &w[j * row_bytes(type, k) + 20 * b + 2], 2);
            float amax = 0;
            for (int64_t e = 0; e < 32; ++e) amax = std::max(amax, std::fabs(x[i * k + 32 * b + e]));
            bound += std::fabs(io::fp16_to_f32(mh)) * 2 * std::ldexp(1.0, -11) * amax / 127 * 32 * 127;
          }
        }
        bound += (blocks + 4) * std::ldexp(1.0, -23) * magnitude;  // f32 scaling and accumulation
        const double error = std::fabs(y[i * n + j] - exact);
        EXPECT_LE(error, bound) << "row " << i << " col " << j;
        worst = std::max(worst, error / bound);
      }
    }
    EXPECT_GT(worst, 0.01) << "the bound is loose enough to hide a wrong scale";
  }
}

// One-hot weights (w[j][j] = 1, d = 1) make y[i][j] = d_x * q_x[i][j] exactly, so the
// reference returns the dequantized activations: each q must be x / d rounded to nearest
// with ggml's d (Q8_0 / Q8_1: amax / 127 stored as f16; Q8_K: max / -127 in f32).
void expect_activation_grid(GgmlType type, const std::vector<uint8_t>& identity, int64_t k) {
  SCOPED_TRACE(io::ggml_type_name(type));
  const bool k_type = type == GgmlType::Q6_K;
  const int64_t block = k_type ? 256 : 32;
  std::vector<float> x = random_values(static_cast<size_t>(k), 5, 2.0f);
  x[7] = 127.0f;  // block 0's scale is exactly 1, so x[3] = 2.5 is a tie
  x[3] = 2.5f;
  std::vector<float> y(static_cast<size_t>(k));
  quant_matmul_reference(type, identity.data(), k, k, x.data(), 1, y.data());
  for (int64_t b0 = 0; b0 < k; b0 += block) {
    float amax = 0, max = 0;
    for (int64_t e = b0; e < b0 + block; ++e) {
      if (std::fabs(x[e]) > amax) {
        amax = std::fabs(x[e]);
        max = x[e];
      }
    }
    const float d = k_type ? 1 / (-127.f / max) : io::fp16_to_f32(io::f32_to_fp16(amax / 127.f));
    const float steps = k_type ? -127.f / max : 127.f / amax;
    for (int64_t e = b0; e < b0 + block; ++e) {
      const float q = std::nearbyint(y[e] / d);
      ASSERT_EQ(y[e], d * q) << "element " << e << " is not on the block's grid";
      ASSERT_LE(std::fabs(q), 127.f);
      ASSERT_LE(std::fabs(q - x[e] * steps), 0.5f + 1e-4f) << "element " << e << " is not the nearest grid point";
    }
  }
  EXPECT_EQ(y[3], 2.0f) << "2.5 rounds to even, as _mm256_round_ps and nearest_int do (roundf would give 3)";
}

TEST(QuantMatmul, OneHotWeightsReadBackGgmlsActivationGrid) {
  const int64_t k = 512;
  std::vector<uint8_t> q8(row_bytes(GgmlType::Q8_0, k) * k, 0), q41(row_bytes(GgmlType::Q4_1, k) * k, 0), q6(row_bytes(GgmlType::Q6_K, k) * k, 0);
  const uint16_t one = io::f32_to_fp16(1.0f);
  for (int64_t j = 0; j < k; ++j) {
    uint8_t* b8 = &q8[j * row_bytes(GgmlType::Q8_0, k) + 34 * (j / 32)];
    std::memcpy(b8, &one, 2);
    b8[2 + j % 32] = 1;
    uint8_t* b41 = &q41[j * row_bytes(GgmlType::Q4_1, k) + 20 * (j / 32)];
    std::memcpy(b41, &one, 2);  // m = 0
    b41[4 + j % 16] = static_cast<uint8_t>(j % 32 < 16 ? 0x01 : 0x10);
    uint8_t* b6 = &q6[j * row_bytes(GgmlType::Q6_K, k) + 210 * (j / 256)];
    std::memset(b6 + 192, 1, 16);  // scales 1, d 1, every q 32 (value 0) but element j's 33
    std::memcpy(b6 + 208, &one, 2);
    std::memset(b6, 0, 128);
    std::memset(b6 + 128, 0xAA, 64);  // high bit pairs 2: q = 32
    const int64_t e = j % 256, h = e / 128, i = e % 128;
    b6[64 * h + i % 64] |= static_cast<uint8_t>(1 << (4 * (i / 64)));
  }
  const auto row2 = q6.begin() + 2 * static_cast<int64_t>(row_bytes(GgmlType::Q6_K, k));
  const std::vector<float> check = dequantized(GgmlType::Q6_K, std::vector<uint8_t>(row2, row2 + 210), 256);
  ASSERT_EQ(check[2], 1.0f) << "the one-hot Q6_K row decodes to 1 at its own column";
  ASSERT_EQ(check[3], 0.0f);
  expect_activation_grid(GgmlType::Q8_0, q8, k);
  expect_activation_grid(GgmlType::Q4_1, q41, k);
  expect_activation_grid(GgmlType::Q6_K, q6, k);
}

// Per 32 (Q4_K) or 16 (Q6_K) elements: the decoded step and offset of the sub-block, from the
// block bytes as ggml-common.h lays them out (value = step * level - offset).
struct SubBlock {
  float step, offset;
  int lowest, highest;  // the levels, after removing Q6_K's bias of 32
};

SubBlock k_sub_block(GgmlType type, const uint8_t* block, int s) {
  if (type == GgmlType::Q4_K) {
    uint8_t scales[8], mins[8];
    quant_kernels::scales_k4_unpack(block + 4, scales, mins);
    uint16_t d, dmin;
    std::memcpy(&d, block, 2);
    std::memcpy(&dmin, block + 2, 2);
    return {io::fp16_to_f32(d) * scales[s], io::fp16_to_f32(dmin) * mins[s], 0, 15};
  }
  uint16_t d;
  std::memcpy(&d, block + 208, 2);
  return {io::fp16_to_f32(d) * static_cast<int8_t>(block[192 + s]), 0.0f, -32, 31};
}

// dequantize(quantize(x)) is within half a step of x wherever x's nearest level is in range
// (the rest is clamped: rare), the error overall is what 4 and 6 bits give on Gaussian data,
// and requantizing decoded values is stable.
TEST(QuantMatmul, KQuantizersLandOnTheirGrids) {
  const int64_t n = 256 * 64;
  std::vector<float> x = random_values(static_cast<size_t>(n), 3);
  std::fill(x.begin() + 256, x.begin() + 512, 0.0f);  // an all-zero super-block
  for (auto [type, max_rms, max_clamped] : {std::tuple{GgmlType::Q4_K, 0.08, 0.005}, std::tuple{GgmlType::Q6_K, 0.02, 0.0005}}) {
    SCOPED_TRACE(io::ggml_type_name(type));
    const size_t block_bytes = io::ggml_type_info(type).type_size;
    std::vector<uint8_t> q(row_bytes(type, n) + 8, 0xEE);
    ASSERT_EQ(quant_quantize_k(type, x.data(), q.data(), n), row_bytes(type, n));
    EXPECT_EQ(q[row_bytes(type, n)], 0xEE) << "wrote past the end";
    const std::vector<float> y = dequantized(type, q, n);
    double sq = 0, sq_x = 0;
    for (int64_t e = 0; e < n; ++e) sq += (y[e] - x[e]) * (y[e] - x[e]), sq_x += x[e] * x[e];
    EXPECT_LT(std::sqrt(sq / sq_x), max_rms);
    for (int64_t e = 256; e < 512; ++e) ASSERT_EQ(y[e], 0.0f);
    const int sub = type == GgmlType::Q4_K ? 32 : 16;
    int64_t clamped = 0;
    for (int64_t e = 0; e < n; ++e) {
      const SubBlock g = k_sub_block(type, &q[e / 256 * block_bytes], static_cast<int>(e % 256 / sub));
      if (g.step == 0) continue;
      const float level = (x[e] + g.offset) / g.step;
      if (level < g.lowest - 0.5f || level > g.highest + 0.5f) {
        ++clamped;
        continue;
      }
      ASSERT_LE(std::fabs(y[e] - x[e]), std::fabs(g.step) / 2 * (1 + 1e-5f) + 1e-6f * (std::fabs(x[e]) + g.offset)) << "element " << e;
    }
    EXPECT_LE(clamped, max_clamped * n);
    // Requantizing the decoded values keeps most blocks (ggml's search does not always find the
    // same grid again) and is byte-stable from the second round on.
    std::vector<uint8_t> q2(q.size()), q3(q.size());
    quant_quantize_k(type, y.data(), q2.data(), n);
    const std::vector<float> y2 = dequantized(type, q2, n);
    quant_quantize_k(type, y2.data(), q3.data(), n);
    int64_t same_values = 0;
    for (int64_t e = 0; e < n; ++e) same_values += y2[e] == y[e];
    EXPECT_GE(same_values, n * 99 / 100);
    EXPECT_EQ(q2, q3);
  }
}

// Exactly representable pseudo-random values: blocks of 32 at scales 2^-2..2^2, every 7th
// block zero and every 7th (offset 5) all positive, to reach the quantizers' special cases.
std::vector<float> golden_values(int64_t count, uint32_t seed) {
  std::vector<float> values(static_cast<size_t>(count));
  uint32_t state = seed;
  for (int64_t i = 0; i < count; ++i) {
    state = state * 1664525u + 1013904223u;
    const int block = static_cast<int>(i / 32);
    const float unit = std::ldexp(static_cast<float>(static_cast<int32_t>(state >> 8) - (1 << 23)), -23);  // in [-1, 1)
    values[i] = block % 7 == 3 ? 0.0f : block % 7 == 5 ? std::fabs(unit) : std::ldexp(unit, block % 5 - 2);
  }
  return values;
}

uint64_t fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t hash = 14695981039346656037ull;
  for (uint8_t b : bytes) hash = (hash ^ b) * 1099511628211ull;
  return hash;
}

// Values printed by ggml's own C from the llama-cpp-python 0.3.36 sdist (vendor/llama.cpp/ggml,
// built with -ffp-contract=off): quantize_row_q4_K_ref / q6_K_ref of golden_values(4096, 1),
// and ggml_vec_dot_*_generic of weights golden_values(3 * 512, 2) (quantize_row_*_ref) with
// activations 8 * golden_values(2 * 512, 3) quantized by the x86 quantize_row_q8_0 / q8_1 / q8_K.
TEST(QuantMatmul, ReferenceMatchesGgmlsCBitForBit) {
  const std::vector<float> source = golden_values(4096, 1);
  for (auto [type, hash] : {std::pair{GgmlType::Q4_K, 0x5ec3b16aed75ca10ull}, std::pair{GgmlType::Q6_K, 0x95cbca70ae09279bull}}) {
    std::vector<uint8_t> q(row_bytes(type, 4096));
    quant_quantize_k(type, source.data(), q.data(), 4096);
    EXPECT_EQ(fnv1a(q), hash) << io::ggml_type_name(type) << " bytes differ from quantize_row_*_ref's";
  }
  const std::pair<GgmlType, std::vector<float>> dots[] = {
      {GgmlType::Q8_0, {0x1.40e08ep+6, 0x1.419e2ep+4, -0x1.14cbb8p+5, -0x1.664e0ap+4, 0x1.80ff5p+8, -0x1.b66166p+7}},
      {GgmlType::Q4_0, {0x1.40088ep+4, 0x1.46302p+3, -0x1.61e78cp+5, -0x1.b16864p+2, 0x1.7e4496p+8, -0x1.c5f842p+7}},
      {GgmlType::Q4_1, {0x1.92df8ap+5, 0x1.3f7488p+4, -0x1.363872p+5, -0x1.80bcfap+4, 0x1.89aafep+8, -0x1.a14c98p+7}},
      {GgmlType::Q4_K, {0x1.98c8d8p+6, 0x1.8c2858p+3, -0x1.37f5p+5, -0x1.f5f108p+4, 0x1.8b7d28p+8, -0x1.a2b076p+7}},
      {GgmlType::Q6_K, {0x1.6526fcp+6, 0x1.500156p+4, -0x1.1d91b8p+5, -0x1.9031ecp+4, 0x1.7d57b8p+8, -0x1.afdff8p+7}},
  };
  const int64_t n = 3, k = 512, m = 2;
  const std::vector<float> w_f32 = golden_values(n * k, 2);
  std::vector<float> x = golden_values(m * k, 3);
  for (float& v : x) v *= 8;
  for (const auto& [type, want] : dots) {
    SCOPED_TRACE(io::ggml_type_name(type));
    std::vector<uint8_t> w(row_bytes(type, k) * n);
    if (type == GgmlType::Q4_K || type == GgmlType::Q6_K) {
      quant_quantize_k(type, w_f32.data(), w.data(), n * k);
    } else {
      io::ggml_quantize(type, w_f32.data(), w.data(), n * k);
    }
    std::vector<float> y(static_cast<size_t>(m * n));
    quant_matmul_reference(type, w.data(), n, k, x.data(), m, y.data());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(y[i], static_cast<float>(want[i])) << "output " << i;
  }
}

TEST(QuantMatmul, RejectsUnsupportedTypesAndPartialBlocks) {
  const std::vector<uint8_t> w(1024);
  const std::vector<float> x(512);
  std::vector<float> y(16);
  test::expect_one_line_error([&] { quant_matmul(GgmlType::Q5_0, w.data(), 1, 32, x.data(), 1, y.data()); }, "", "weight type Q5_0 has no quantized kernel");
  test::expect_one_line_error([&] { quant_matmul_reference(GgmlType::F16, w.data(), 1, 32, x.data(), 1, y.data()); }, "", "supported: Q8_0, Q4_0");
  test::expect_one_line_error([&] { quant_matmul(GgmlType::Q8_0, w.data(), 1, 48, x.data(), 1, y.data()); }, "",
                              "Q8_0 row length k = 48 is not a multiple of its block size 32");
  test::expect_one_line_error([&] { quant_matmul(GgmlType::Q4_K, w.data(), 1, 288, x.data(), 1, y.data()); }, "", "block size 256");
  test::expect_one_line_error([&] { quant_quantize_k(GgmlType::Q8_0, x.data(), std::vector<uint8_t>(300).data(), 256); }, "", "(Q4_K, Q6_K)");
  test::expect_one_line_error([&] { quant_quantize_k(GgmlType::Q6_K, x.data(), std::vector<uint8_t>(300).data(), 100); }, "", "whole super-blocks");
  for (GgmlType type : kTypes) EXPECT_TRUE(quant_matmul_supported(type));
  EXPECT_FALSE(quant_matmul_supported(GgmlType::Q5_K));
}

TEST(QuantMatmul, ForcingAnIsaSelectsIt) {
  IsaGuard guard;
  EXPECT_NE(quant_isa_active(), QuantIsa::kAuto);
  for (QuantIsa isa : available_isas()) {
    quant_isa_force(isa);
    EXPECT_EQ(quant_isa_active(), isa);
  }
  quant_isa_force(QuantIsa::kScalar);
  EXPECT_EQ(quant_kernels_description(), "scalar (q8_0 q4_0 q4_1 q4_k q6_k)");
}

}  // namespace
}  // namespace m3d::models
