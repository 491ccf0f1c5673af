// Torch-free products of bf16 weights with a few f32 activation rows (single-token decode),
// at the speed of reading the weights: libtorch 1.13's bf16 GEMV streams about half the
// memory bandwidth on an AVX512 EPYC (bench/bench_gemv.cpp). Each weight is decoded exactly
// (bf16 is the top half of an f32), multiplied by the f32 activation and summed in f32; no
// activation is rounded to bf16. Scalar reference, AVX2+FMA and AVX-512F kernels, picked at
// run time as quant_matmul's are (quant_matmul.h).
#pragma once

#include <cstdint>
#include <string>

#include "models/quant_matmul.h"

namespace m3d::models {

// The ISA levels are quant_matmul's, but not its requirements (kAvx512 needs only AVX-512F
// here, not VNNI) nor its forcing: forcing one family leaves the other on its best kernels.
// Forcing one the CPU lacks throws; kAuto = the best the CPU has.
void bf16_gemv_isa_force(QuantIsa isa);
QuantIsa bf16_gemv_isa_active();  // never kAuto
bool bf16_gemv_isa_available(QuantIsa isa);
std::string bf16_gemv_description();  // e.g. "avx512" for m3d --version

// y (m x n, row-major) = x (m x k, row-major f32) times W^T, W being n rows of k bf16 values
// (row-major, any alignment). Summation order: the SIMD kernels keep 8 (AVX2) or 16 (AVX-512)
// f32 lanes in 1-4 accumulator sets per output; element e goes to lane e mod lanes of the set
// its chunk falls to, with a fused multiply-add (the product of a bf16 and an f32 is exact
// inside it); sets, then lanes are added at the end (bf16_gemv_avx512.cpp). The reference
// sums in index order. They agree to f32 summation-order error.
// Threads: OpenMP over output rows (omp_get_max_threads, which at::set_num_threads and
// runtime_set_threads set, as for quant_matmul). Built for few rows (dense_linear sends up to
// 32); any m works, each weight block passing once per 4 rows of x.
void bf16_matmul(const uint16_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y);
// The same by plain scalar code: each product rounded to f32, added in index order to one f32 sum.
void bf16_matmul_reference(const uint16_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y);

// --- internal: the interface between bf16_gemv.cpp and the per-ISA kernel files ---
namespace bf16_kernels {

// y[r * ldy + j] = dot(w row j, x row r) for j < rows and r < mr (1..4), w rows k apart,
// x rows k apart.
using RowKernel = void (*)(const uint16_t* w, int64_t rows, int64_t k, const float* x, int mr, float* y, int64_t ldy);

RowKernel kernel_avx2();
RowKernel kernel_avx512();

// One tile: a fixed number of weight rows (k apart) against MR activation rows, y[r * ldy + j].
using TileFn = void (*)(const uint16_t* w, int64_t k, const float* x, float* y, int64_t ldy);
using RowsFn = void (*)(const uint16_t* w, int64_t rows, int64_t k, const float* x, float* y, int64_t ldy);

// Any number of weight rows from tiles of G rows and a one-row tile for the rest. Instantiated
// with an ISA file's internal functions, these templates are internal to that file too.
template <int G, TileFn Group, TileFn One>
void rows_tiled(const uint16_t* w, int64_t rows, int64_t k, const float* x, float* y, int64_t ldy) {
  int64_t j = 0;
  for (; j + G <= rows; j += G) Group(w + j * k, k, x, y + j, ldy);
  for (; j < rows; ++j) One(w + j * k, k, x, y + j, ldy);
}

// A RowKernel from one RowsFn per activation-tile height (1..4).
template <RowsFn M1, RowsFn M2, RowsFn M3, RowsFn M4>
void rows_dispatch(const uint16_t* w, int64_t rows, int64_t k, const float* x, int mr, float* y, int64_t ldy) {
  switch (mr) {
    case 1:
      return M1(w, rows, k, x, y, ldy);
    case 2:
      return M2(w, rows, k, x, y, ldy);
    case 3:
      return M3(w, rows, k, x, y, ldy);
    default:
      return M4(w, rows, k, x, y, ldy);
  }
}

}  // namespace bf16_kernels
}  // namespace m3d::models
