// AVX512 (F BW VL DQ) + VNNI kernels of quant_matmul, the integer sums of
// quant_matmul_avx2.cpp with fewer instructions: 32-element blocks with 256-bit vpdpbusd
// (unsigned x signed, int32 sums of four; signed weights as |w| times a with w's sign), K
// super-blocks in 64-element runs on 512-bit registers with vpmaddubsw into int16 pairs and
// vpdpwssd with the sub-block scales. Exact integers per block; f32 scaling per lane as
// ggml's AVX2 code does. Compiled with the flags CMakeLists.txt gives it and only called
// when the CPU has them all.
#include <immintrin.h>

#include <cstring>

#include "models/quant_matmul.h"

namespace m3d::models::quant_kernels {
namespace {

float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

__m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
__m512i load64(const void* p) { return _mm512_loadu_si512(p); }
__m512i join(__m256i low, __m256i high) { return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1); }

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// --- 32-element blocks: 256-bit vpdpbusd (on AMD Zen 4 the 512-bit forms run as two halves,
// and pairing blocks costs more shuffles than it saves) ---

// Calls block(b, set) for every block b. With one or two rows, two accumulator sets alternate
// so that consecutive blocks' FMAs do not wait on each other; with more, the rows do that.
template <int MR, typename Block>
void each_block(int64_t blocks, const Block& block) {
  int64_t b = 0;
  if constexpr (MR <= 2) {
    for (; b + 2 <= blocks; b += 2) block(b, 0), block(b + 1, 1);
  }
  for (; b < blocks; ++b) block(b, 0);
}

template <int MR>
void store_rows(const __m256 acc[2][MR], float* y, int64_t ldy) {
  for (int r = 0; r < MR; ++r) y[r * ldy] = hsum(_mm256_add_ps(acc[0][r], acc[1][r]));
}

// 16 bytes of nibble pairs -> 32 bytes: the low nibbles, then the high ones (Q4_0 / Q4_1 order).
__m256i nibbles(const uint8_t* p) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F));
}

// Signed weights (Q8_0, and Q4_0 as q - 8): |w| times a with w's sign.
template <int MR>
void signed_block(__m256i w, float dw, const Acts& x, int64_t m0, int64_t b, __m256 acc[MR]) {
  const __m256i abs_w = _mm256_sign_epi8(w, w);
  for (int r = 0; r < MR; ++r) {
    const int64_t row = m0 + r;
    const __m256i a = load32(x.qs + row * x.k + b * 32);
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, _mm256_sign_epi8(a, w));
    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[row * x.blocks + b]), _mm256_cvtepi32_ps(sums), acc[r]);
  }
}

template <int MR>
void rows_q8_0(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m256 acc[2][MR] = {};
  each_block<MR>(x.blocks, [&](int64_t b, int set) { signed_block<MR>(load32(w + 34 * b + 2), load_half(w + 34 * b), x, m0, b, acc[set]); });
  store_rows<MR>(acc, y, ldy);
}

template <int MR>
void rows_q4_0(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m256 acc[2][MR] = {};
  each_block<MR>(x.blocks, [&](int64_t b, int set) {
    const uint8_t* block = w + 18 * b;
    signed_block<MR>(_mm256_sub_epi8(nibbles(block + 2), _mm256_set1_epi8(8)), load_half(block), x, m0, b, acc[set]);
  });
  store_rows<MR>(acc, y, ldy);
}

// Q4_1: unsigned nibbles straight into vpdpbusd; the blocks' m * s (Q8_1) go to scalar sums.
template <int MR>
void rows_q4_1(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m256 acc[2][MR] = {};
  float mins[2][MR] = {};
  each_block<MR>(x.blocks, [&](int64_t b, int set) {
    const uint8_t* block = w + 20 * b;
    const float dw = load_half(block), mw = load_half(block + 2);
    const __m256i q = nibbles(block + 4);
    for (int r = 0; r < MR; ++r) {
      const int64_t row = m0 + r, at = row * x.blocks + b;
      const __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, load32(x.qs + row * x.k + b * 32));
      acc[set][r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[at]), _mm256_cvtepi32_ps(sums), acc[set][r]);
      mins[set][r] += mw * x.s[at];
    }
  });
  for (int r = 0; r < MR; ++r) y[r * ldy] = hsum(_mm256_add_ps(acc[0][r], acc[1][r])) + (mins[0][r] + mins[1][r]);
}

// --- K super-blocks: 64-element runs, int16 pair sums times the sub-block scales ---

// Q4_K: run c = low nibbles of qs[32 c ...] (sub-block 2c) then their high nibbles (2c + 1).
template <int MR>
void rows_q4_k(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m512 acc[MR];
  __m256 acc_min[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps(), acc_min[r] = _mm256_setzero_ps();
  const __m128i pair_up = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int64_t b = 0; b < x.blocks; ++b, w += 144) {
    uint8_t scales[8], mins[8];
    scales_k4_unpack(w + 4, scales, mins);
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mins)), pair_up));
    __m512i isum[MR];
    for (int r = 0; r < MR; ++r) isum[r] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load32(w + 16 + 32 * c);
      const __m512i run = join(_mm256_and_si256(q, low), _mm256_and_si256(_mm256_srli_epi16(q, 4), low));
      const __m512i scale = _mm512_inserti64x4(_mm512_set1_epi16(scales[2 * c]), _mm256_set1_epi16(scales[2 * c + 1]), 1);
      for (int r = 0; r < MR; ++r) {
        const __m512i a = load64(x.qs + (m0 + r) * x.k + b * 256 + 64 * c);
        isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_maddubs_epi16(run, a), scale);
      }
    }
    const float dw = load_half(w), dmin = load_half(w + 2);
    for (int r = 0; r < MR; ++r) {
      const int64_t row = m0 + r;
      const float da = x.d[row * x.blocks + b];
      const __m256i bsums = load32(x.sums + row * x.groups + b * 16);
      acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(dw * da), _mm512_cvtepi32_ps(isum[r]), acc[r]);
      acc_min[r] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * da), _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins16)), acc_min[r]);
    }
  }
  for (int r = 0; r < MR; ++r) y[r * ldy] = _mm512_reduce_add_ps(acc[r]) - hsum(acc_min[r]);
}

// Q6_K: per half of 128 two runs of 64 (elements 0-63 and 64-127 of the half) from 64 ql
// bytes (low / high nibbles) and 32 qh bytes (bit pairs 0-1, 2-3 / 4-5, 6-7), unsigned
// 0..63; the -32 comes back as 32 * sum(scale * bsum). Run q takes sub-blocks 4q .. 4q + 3.
template <int MR>
void rows_q6_k(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m512 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
  static const int16_t kRunLanes[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
  const __m512i lanes = load64(kRunLanes);
  const __m512i low = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
  for (int64_t b = 0; b < x.blocks; ++b, w += 210) {
    const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192)));
    __m512i isum[MR];
    for (int r = 0; r < MR; ++r) {
      const __m256i bsums = load32(x.sums + (m0 + r) * x.groups + b * 16);
      const __m256i offset = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5));
      isum[r] = _mm512_inserti64x4(_mm512_setzero_si512(), offset, 0);
    }
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = load64(w + 64 * h);
      const __m256i qh = load32(w + 128 + 32 * h);
      const __m512i qh2 = join(qh, _mm256_srli_epi16(qh, 2));
      const __m512i runs[2] = {
          _mm512_or_si512(_mm512_and_si512(ql, low), _mm512_and_si512(_mm512_slli_epi16(qh2, 4), bits45)),
          _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low), _mm512_and_si512(qh2, bits45)),
      };
      for (int half_run = 0; half_run < 2; ++half_run) {
        const int run = 2 * h + half_run;
        const __m512i scale =
            _mm512_permutexvar_epi16(_mm512_add_epi16(lanes, _mm512_set1_epi16(static_cast<int16_t>(4 * run))), _mm512_castsi256_si512(scales16));
        for (int r = 0; r < MR; ++r) {
          const __m512i a = load64(x.qs + (m0 + r) * x.k + b * 256 + 64 * run);
          isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_maddubs_epi16(runs[half_run], a), scale);
        }
      }
    }
    const float dw = load_half(w + 208);
    for (int r = 0; r < MR; ++r) { acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(dw * x.d[(m0 + r) * x.blocks + b]), _mm512_cvtepi32_ps(isum[r]), acc[r]); }
  }
  for (int r = 0; r < MR; ++r) y[r * ldy] = _mm512_reduce_add_ps(acc[r]);
}

}  // namespace

Table table_avx512() {
  return {rows_dispatch<rows_q8_0<1>, rows_q8_0<2>, rows_q8_0<3>, rows_q8_0<4>>, rows_dispatch<rows_q4_0<1>, rows_q4_0<2>, rows_q4_0<3>, rows_q4_0<4>>,
          rows_dispatch<rows_q4_1<1>, rows_q4_1<2>, rows_q4_1<3>, rows_q4_1<4>>, rows_dispatch<rows_q4_k<1>, rows_q4_k<2>, rows_q4_k<3>, rows_q4_k<4>>,
          rows_dispatch<rows_q6_k<1>, rows_q6_k<2>, rows_q6_k<3>, rows_q6_k<4>>};
}

}  // namespace m3d::models::quant_kernels
