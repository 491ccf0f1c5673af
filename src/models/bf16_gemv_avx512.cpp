// AVX-512F kernel of bf16_matmul: 16 bf16 weights widened to f32 exactly (zero-extend to 32
// bits, shift into the top half), a fused multiply-add per activation row into 16 f32 lanes.
// Element e of a row goes to lane e mod 16 of accumulator set (e / 16) mod U for the chunks
// of 16 U, of set 0 after them (the zero-padded tail included); sets and then lanes are
// added at the end. Compiled with the flags CMakeLists.txt gives it and only called when the
// CPU has them.
#include <immintrin.h>

#include <cstring>

#include "models/bf16_gemv.h"

namespace m3d::models::bf16_kernels {
namespace {

__m512 load_bf16(const uint16_t* p) {
  const __m256i bf16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16), 16));
}

// acc[j][r] += 16 weights of row j times 16 activations of row r, from offset 0 of w and x;
// the last count < 16 elements of a row zero-padded when Tail (zero weights times zeroed x add +0).
template <int R, int MR, bool Tail>
void step(const uint16_t* w, int64_t k, const float* x, int64_t count, __m512 (&acc)[R][MR]) {
  const __mmask16 mask = Tail ? static_cast<__mmask16>((1u << count) - 1) : 0xFFFF;
  __m512 xs[MR];
  for (int r = 0; r < MR; ++r) xs[r] = Tail ? _mm512_maskz_loadu_ps(mask, x + r * k) : _mm512_loadu_ps(x + r * k);
  for (int j = 0; j < R; ++j) {
    __m512 wv;
    if constexpr (Tail) {
      uint16_t padded[16] = {};
      std::memcpy(padded, w + j * k, static_cast<size_t>(count) * sizeof(uint16_t));
      wv = load_bf16(padded);
    } else {
      wv = load_bf16(w + j * k);
    }
    for (int r = 0; r < MR; ++r) acc[j][r] = _mm512_fmadd_ps(wv, xs[r], acc[j][r]);
  }
}

// R weight rows against MR activation rows with U accumulator sets (U MR independent sums).
template <int R, int U, int MR>
void tile(const uint16_t* w, int64_t k, const float* x, float* y, int64_t ldy) {
  __m512 acc[U][R][MR];
  for (int u = 0; u < U; ++u) {
    for (int j = 0; j < R; ++j) {
      for (int r = 0; r < MR; ++r) acc[u][j][r] = _mm512_setzero_ps();
    }
  }
  int64_t e = 0;
  for (; e + 16 * U <= k; e += 16 * U) {
    for (int u = 0; u < U; ++u) step<R, MR, false>(w + e + 16 * u, k, x + e + 16 * u, 16, acc[u]);
  }
  for (; e + 16 <= k; e += 16) step<R, MR, false>(w + e, k, x + e, 16, acc[0]);
  if (e < k) step<R, MR, true>(w + e, k, x + e, k - e, acc[0]);
  for (int j = 0; j < R; ++j) {
    for (int r = 0; r < MR; ++r) {
      __m512 sum = acc[0][j][r];
      for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][j][r]);
      y[r * ldy + j] = _mm512_reduce_add_ps(sum);
    }
  }
}

// One weight row at a time while x's rows take at most half of a 32 KiB L1: W is then one
// sequential stream, like a plain read (bench_gemv, 1 thread, EPYC: ~0.9 of the read roofline
// against ~0.75 for 4 interleaved rows). Longer x rows would be fetched from L2 for every
// weight row (k 8192: half speed), so there 4 rows share each x load.
template <int MR>
void rows(const uint16_t* w, int64_t count, int64_t k, const float* x, float* y, int64_t ldy) {
  constexpr int kSets = MR == 1 ? 4 : MR == 2 ? 2 : 1;  // at least 4 independent sums
  if (MR * k * static_cast<int64_t>(sizeof(float)) <= (16 << 10)) return rows_tiled<1, tile<1, kSets, MR>, tile<1, kSets, MR>>(w, count, k, x, y, ldy);
  rows_tiled<4, tile<4, 1, MR>, tile<1, kSets, MR>>(w, count, k, x, y, ldy);
}

}  // namespace

RowKernel kernel_avx512() { return rows_dispatch<rows<1>, rows<2>, rows<3>, rows<4>>; }

}  // namespace m3d::models::bf16_kernels
