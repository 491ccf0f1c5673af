// Torch-free matrix products with weights kept in GGUF blocks (Q8_0, Q4_0, Q4_1, Q4_K,
// Q6_K), with the numerics of ggml's x86 CPU backend (ggml-cpu/arch/x86/quants.c):
// activations are quantized per row to ggml's vec_dot_type, each block's dot product is an
// exact integer sum, and the sums are scaled by the blocks' f16 scales in f32. The scalar
// reference (quant_matmul_reference) equals ggml's ggml_vec_dot_*_generic bit for bit; the
// AVX2 and AVX512-VNNI kernels equal it up to f32 summation order. Also ggml's Q4_K / Q6_K
// reference quantizers.
#pragma once

#include <cstdint>
#include <string>

#include "io/gguf_blocks.h"
#include "models/cpu_isa.h"

namespace m3d::models {

// Forces an implementation (tests, benchmarks); kAuto = best the CPU has. Forcing one the CPU lacks throws.
void quant_isa_force(QuantIsa isa);
QuantIsa quant_isa_active();  // what quant_matmul uses now (never kAuto)
bool quant_isa_available(QuantIsa isa);
std::string quant_kernels_description();  // e.g. "avx512-vnni (q8_0 q4_0 q4_1 q4_k q6_k)" for m3d --version

// The weight types quant_matmul takes: Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
bool quant_matmul_supported(io::GgmlType type);

// y (m x n, row-major) = x (m x k, row-major f32) times W^T, W being n rows of k elements
// stored as `type` blocks (row stride k / block_size * type_size bytes). Activations are
// quantized per row the way ggml's CPU backend does for that weight type (its vec_dot_type:
// Q8_0 for Q8_0/Q4_0, Q8_1 for Q4_1, Q8_K for Q4_K/Q6_K) and the dot products are exact
// integer sums per block, scaled as ggml does. Throws m3d::Error on an unsupported type or
// k not a multiple of the block size. Threads: OpenMP over output rows (and over m when m is large).
void quant_matmul(io::GgmlType type, const uint8_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y);
// The same computed by the plain scalar code (what every SIMD path must equal).
void quant_matmul_reference(io::GgmlType type, const uint8_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y);

// Encodes n f32 values (a whole number of 256-element super-blocks) as Q4_K or Q6_K with
// ggml's quantize_row_q4_K_ref / quantize_row_q6_K_ref (no importance weights), evaluated
// without fused multiply-adds. Returns the bytes written.
size_t quant_quantize_k(io::GgmlType type, const float* src, uint8_t* dst, int64_t n);

// --- internal: the interface between quant_matmul.cpp and the per-ISA kernel files ---
namespace quant_kernels {

// Activation rows quantized for one weight type (raw pointers: the ISA files use no
// inline library code, whose out-of-line copies could carry their instruction sets).
struct Acts {
  const int8_t* qs;  // (m, k) quantized values
  const float* d;  // (m, k / block) scales: f16-rounded for Q8_0 / Q8_1, f32 for Q8_K
  const float* s;  // Q8_1: (m, k / 32) f16-rounded d * sum(qs), as ggml stores it
  const int16_t* sums;  // (m, k / group) sums of qs: per 32 for Q8_0 / Q8_1, per 16 for Q8_K (bsums)
  int64_t k, blocks, groups;  // elements, blocks and sums per row
};

// y[r * ldy + j] = dot(weight row j, activation row m0 + r) for j < rows and r < mr (1..4),
// weight row j starting at w + j * row_bytes.
using RowKernel = void (*)(const uint8_t* w, size_t row_bytes, int64_t rows, const Acts& x, int64_t m0, int mr, float* y, int64_t ldy);

struct Table {
  RowKernel q8_0, q4_0, q4_1, q4_k, q6_k;
};

Table table_avx2();
Table table_avx512();

// A RowKernel from four tile sizes (one weight row against 1..4 activation rows), each its own
// template instance so the accumulators stay in registers. Instantiated with an ISA file's
// internal functions, it is internal to that file too.
using TileFn = void (*)(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy);
template <TileFn Tile>
void rows_each(const uint8_t* w, size_t row_bytes, int64_t rows, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  for (int64_t j = 0; j < rows; ++j) Tile(w + j * row_bytes, x, m0, y + j, ldy);
}
template <TileFn R1, TileFn R2, TileFn R3, TileFn R4>
void rows_dispatch(const uint8_t* w, size_t row_bytes, int64_t rows, const Acts& x, int64_t m0, int mr, float* y, int64_t ldy) {
  switch (mr) {
    case 1:
      return rows_each<R1>(w, row_bytes, rows, x, m0, y, ldy);
    case 2:
      return rows_each<R2>(w, row_bytes, rows, x, m0, y, ldy);
    case 3:
      return rows_each<R3>(w, row_bytes, rows, x, m0, y, ldy);
    default:
      return rows_each<R4>(w, row_bytes, rows, x, m0, y, ldy);
  }
}

// The eight 6-bit (scale, min) pairs of a Q4_K super-block, packed in 12 bytes: pairs 0-3 in
// the low 6 bits of bytes 0-3 / 4-7, pairs 4-7 in the nibbles of bytes 8-11 with their top
// 2 bits in the top bits of bytes 0-3 / 4-7. Static: each ISA file compiles its own copy.
static inline void scales_k4_unpack(const uint8_t* packed, uint8_t scales[8], uint8_t mins[8]) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 0x3F;
    mins[j] = packed[j + 4] & 0x3F;
    scales[j + 4] = static_cast<uint8_t>((packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4));
    mins[j + 4] = static_cast<uint8_t>((packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4));
  }
}

}  // namespace quant_kernels
}  // namespace m3d::models
