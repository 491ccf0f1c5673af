// AVX2 + FMA + F16C kernels of quant_matmul, after ggml-cpu/arch/x86/quants.c's AVX2 paths:
// 8-bit products with _mm256_maddubs_epi16 (unsigned x signed, so signed weights go through
// the sign trick) summed pairwise to int32 with _mm256_madd_epi16, which for the K types
// multiplies by the sub-block scales at the same time. Each block's integers are exact; its
// 8 int32 lanes are scaled in f32 and accumulated per lane. Compiled with -mavx2 -mfma
// -mf16c (CMakeLists.txt) and only called when the CPU has them. Tiles: one weight row
// against MR <= 4 activation rows, so each weight block is unpacked once for all of them.
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

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// 16 bytes of nibble pairs -> 32 bytes: the low nibbles, then the high ones (Q4_0 / Q4_1 order).
__m256i nibbles(const uint8_t* p) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F));
}

// sum of u8 x s8 products, pairwise to int32, each pair weighted by the int16 in `scale`.
__m256i dot_u8s8(__m256i u, __m256i s, __m256i scale) { return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), scale); }

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

// Q8_0 weights and Q4_0's (q - 8) are signed: |w| times a with w's sign (ggml's mul_sum_i8_pairs).
template <int MR>
void signed_block(__m256i w, float dw, const Acts& x, int64_t m0, int64_t b, __m256 acc[MR]) {
  const __m256i abs_w = _mm256_sign_epi8(w, w), ones = _mm256_set1_epi16(1);
  for (int r = 0; r < MR; ++r) {
    const int64_t row = m0 + r;
    const __m256i a = load32(x.qs + row * x.k + b * 32);
    const __m256i sums = dot_u8s8(abs_w, _mm256_sign_epi8(a, w), ones);
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

// Q4_1: unsigned nibbles times a directly; the blocks' m * s go to scalar sums.
template <int MR>
void rows_q4_1(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m256 acc[2][MR] = {};
  float mins[2][MR] = {};
  const __m256i ones = _mm256_set1_epi16(1);
  each_block<MR>(x.blocks, [&](int64_t b, int set) {
    const uint8_t* block = w + 20 * b;
    const float dw = load_half(block), mw = load_half(block + 2);
    const __m256i q = nibbles(block + 4);
    for (int r = 0; r < MR; ++r) {
      const int64_t row = m0 + r, at = row * x.blocks + b;
      const __m256i sums = dot_u8s8(q, load32(x.qs + row * x.k + b * 32), ones);
      acc[set][r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[at]), _mm256_cvtepi32_ps(sums), acc[set][r]);
      mins[set][r] += mw * x.s[at];
    }
  });
  for (int r = 0; r < MR; ++r) y[r * ldy] = hsum(_mm256_add_ps(acc[0][r], acc[1][r])) + (mins[0][r] + mins[1][r]);
}

// Q4_K: per 64 elements the low nibbles of 32 bytes (sub-block 2c) then the high ones (2c + 1),
// each scaled by its 6-bit scale in the madd; the mins meet Q8_K's bsums (16 int16 per block).
template <int MR>
void rows_q4_k(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m256 acc[MR], acc_min[MR];
  for (int r = 0; r < MR; ++r) acc[r] = acc_min[r] = _mm256_setzero_ps();
  const __m128i pair_up = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int64_t b = 0; b < x.blocks; ++b, w += 144) {
    uint8_t scales[8], mins[8];
    scales_k4_unpack(w + 4, scales, mins);
    const float dw = load_half(w), dmin = load_half(w + 2);
    const __m128i mins8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mins));
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(mins8, pair_up));  // min s for bsums 2s, 2s + 1
    __m256i isum[MR];
    for (int r = 0; r < MR; ++r) isum[r] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load32(w + 16 + 32 * c);
      const __m256i q_low = _mm256_and_si256(q, low), q_high = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
      const __m256i s_low = _mm256_set1_epi16(scales[2 * c]), s_high = _mm256_set1_epi16(scales[2 * c + 1]);
      for (int r = 0; r < MR; ++r) {
        const int8_t* a = x.qs + (m0 + r) * x.k + b * 256 + 64 * c;
        isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(dot_u8s8(q_low, load32(a), s_low), dot_u8s8(q_high, load32(a + 32), s_high)));
      }
    }
    for (int r = 0; r < MR; ++r) {
      const int64_t row = m0 + r;
      const float da = x.d[row * x.blocks + b];
      const __m256i bsums = load32(x.sums + row * x.groups + b * 16);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * da), _mm256_cvtepi32_ps(isum[r]), acc[r]);
      acc_min[r] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * da), _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins16)), acc_min[r]);
    }
  }
  for (int r = 0; r < MR; ++r) y[r * ldy] = hsum(acc[r]) - hsum(acc_min[r]);
}

// Q6_K: per half of 128, four 32-element runs rebuilt from ql nibbles and qh bit pairs as
// unsigned 0..63; the -32 comes back as 32 * sum(scale * bsum), all in int32.
template <int MR>
void rows_q6_k(const uint8_t* w, const Acts& x, int64_t m0, float* y, int64_t ldy) {
  __m256 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
  for (int64_t b = 0; b < x.blocks; ++b, w += 210) {
    const auto* scales = reinterpret_cast<const int8_t*>(w + 192);
    const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales)));
    __m256i isum[MR];
    for (int r = 0; r < MR; ++r) {
      const __m256i bsums = load32(x.sums + (m0 + r) * x.groups + b * 16);
      isum[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5));
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load32(w + 64 * h), ql1 = load32(w + 64 * h + 32), qh = load32(w + 128 + 32 * h);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
          _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), _mm256_and_si256(qh, bits45)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low), _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
      };
      for (int c = 0; c < 4; ++c) {
        const int s = 8 * h + 2 * c;  // the two 16-element sub-blocks of run c
        const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(scales[s + 1]), _mm_set1_epi16(scales[s]));
        for (int r = 0; r < MR; ++r) {
          const int8_t* a = x.qs + (m0 + r) * x.k + b * 256 + 128 * h + 32 * c;
          isum[r] = _mm256_add_epi32(isum[r], dot_u8s8(q[c], load32(a), scale));
        }
      }
    }
    const float dw = load_half(w + 208);
    for (int r = 0; r < MR; ++r) { acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[(m0 + r) * x.blocks + b]), _mm256_cvtepi32_ps(isum[r]), acc[r]); }
  }
  for (int r = 0; r < MR; ++r) y[r * ldy] = hsum(acc[r]);
}

}  // namespace

Table table_avx2() {
  return {rows_dispatch<rows_q8_0<1>, rows_q8_0<2>, rows_q8_0<3>, rows_q8_0<4>>, rows_dispatch<rows_q4_0<1>, rows_q4_0<2>, rows_q4_0<3>, rows_q4_0<4>>,
          rows_dispatch<rows_q4_1<1>, rows_q4_1<2>, rows_q4_1<3>, rows_q4_1<4>>, rows_dispatch<rows_q4_k<1>, rows_q4_k<2>, rows_q4_k<3>, rows_q4_k<4>>,
          rows_dispatch<rows_q6_k<1>, rows_q6_k<2>, rows_q6_k<3>, rows_q6_k<4>>};
}

}  // namespace m3d::models::quant_kernels
