// AVX2+FMA kernel of bf16_matmul, bf16_gemv_avx512.cpp on 8 lanes: 8 bf16 weights widened to
// f32 exactly (zero-extend to 32 bits, shift into the top half), a fused multiply-add per
// activation row. Element e of a row goes to lane e mod 8 of accumulator set (e / 8) mod U for
// the chunks of 8 U, of set 0 after them (the zero-padded tail included); sets and then lanes
// are added at the end. Compiled with the flags CMakeLists.txt gives it and only called when
// the CPU has them.
#include <immintrin.h>

#include <cstring>

#include "models/bf16_gemv.h"

namespace m3d::models::bf16_kernels {
namespace {

__m256 load_bf16(const uint16_t* p) {
  const __m128i bf16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bf16), 16));
}

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// acc[j][r] += 8 weights of row j times 8 activations of row r, from offset 0 of w and x;
// the last count < 8 elements of a row zero-padded when Tail (zero weights times zeroed x add +0).
template <int R, int MR, bool Tail>
void step(const uint16_t* w, int64_t k, const float* x, int64_t count, __m256 (&acc)[R][MR]) {
  __m256 xs[MR];
  for (int r = 0; r < MR; ++r) {
    if constexpr (Tail) {
      float padded[8] = {};
      std::memcpy(padded, x + r * k, static_cast<size_t>(count) * sizeof(float));
      xs[r] = _mm256_loadu_ps(padded);
    } else {
      xs[r] = _mm256_loadu_ps(x + r * k);
    }
  }
  for (int j = 0; j < R; ++j) {
    __m256 wv;
    if constexpr (Tail) {
      uint16_t padded[8] = {};
      std::memcpy(padded, w + j * k, static_cast<size_t>(count) * sizeof(uint16_t));
      wv = load_bf16(padded);
    } else {
      wv = load_bf16(w + j * k);
    }
    for (int r = 0; r < MR; ++r) acc[j][r] = _mm256_fmadd_ps(wv, xs[r], acc[j][r]);
  }
}

// R weight rows against MR activation rows with U accumulator sets; R U MR <= 8 of the 16 registers.
template <int R, int U, int MR>
void tile(const uint16_t* w, int64_t k, const float* x, float* y, int64_t ldy) {
  __m256 acc[U][R][MR];
  for (int u = 0; u < U; ++u) {
    for (int j = 0; j < R; ++j) {
      for (int r = 0; r < MR; ++r) acc[u][j][r] = _mm256_setzero_ps();
    }
  }
  int64_t e = 0;
  for (; e + 8 * U <= k; e += 8 * U) {
    for (int u = 0; u < U; ++u) step<R, MR, false>(w + e + 8 * u, k, x + e + 8 * u, 8, acc[u]);
  }
  for (; e + 8 <= k; e += 8) step<R, MR, false>(w + e, k, x + e, 8, acc[0]);
  if (e < k) step<R, MR, true>(w + e, k, x + e, k - e, acc[0]);
  for (int j = 0; j < R; ++j) {
    for (int r = 0; r < MR; ++r) {
      __m256 sum = acc[0][j][r];
      for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[u][j][r]);
      y[r * ldy + j] = hsum(sum);
    }
  }
}

// As in bf16_gemv_avx512.cpp: one weight row at a time (one sequential stream) while x's rows
// fit in half of a 32 KiB L1, else several rows sharing each x load.
template <int MR>
void rows(const uint16_t* w, int64_t count, int64_t k, const float* x, float* y, int64_t ldy) {
  constexpr int kSets = MR == 1 ? 4 : MR == 2 ? 2 : 1;  // at least 4 independent sums
  constexpr int kGroup = MR <= 2 ? 4 : 2;
  if (MR * k * static_cast<int64_t>(sizeof(float)) <= (16 << 10)) return rows_tiled<1, tile<1, kSets, MR>, tile<1, kSets, MR>>(w, count, k, x, y, ldy);
  rows_tiled<kGroup, tile<kGroup, 1, MR>, tile<1, kSets, MR>>(w, count, k, x, y, ldy);
}

}  // namespace

RowKernel kernel_avx2() { return rows_dispatch<rows<1>, rows<2>, rows<3>, rows<4>>; }

}  // namespace m3d::models::bf16_kernels
