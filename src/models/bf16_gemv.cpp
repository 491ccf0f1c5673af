// The scalar half of bf16_matmul: ISA selection, the reference dot products and the
// threaded driver. Compiled with -ffp-contract=off (CMakeLists.txt) so the reference rounds
// each product, as documented. SIMD kernels: bf16_gemv_avx2.cpp, bf16_gemv_avx512.cpp.
#include "models/bf16_gemv.h"

#include <algorithm>
#include <atomic>

#include "io/gguf_blocks.h"
#include "m3d/error.h"

namespace m3d::models {
namespace {

using bf16_kernels::RowKernel;

void rows_scalar(const uint16_t* w, int64_t rows, int64_t k, const float* x, int mr, float* y, int64_t ldy) {
  for (int64_t j = 0; j < rows; ++j) {
    for (int r = 0; r < mr; ++r) {
      float sum = 0.0f;
      for (int64_t e = 0; e < k; ++e) sum += io::bf16_to_f32(w[j * k + e]) * x[r * k + e];
      y[r * ldy + j] = sum;
    }
  }
}

// Weight rows in blocks of about 32 KiB, a multiple of the kernels' 4-row groups: all
// 4-row tiles of x pass over a block while it is in L1/L2, so it is read from memory once.
// Blocks are split statically, so each thread streams one contiguous range of W.
void matmul_run(RowKernel kernel, const uint16_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y, bool threaded) {
  if (n < 0 || m < 0 || k < 0) fail("bf16_matmul: shapes must be non-negative, got n = {}, k = {}, m = {}", n, k, m);
  if (n == 0 || m == 0) return;
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  const int64_t block = std::clamp<int64_t>((32 << 10) / (2 * k) / 4 * 4, 4, 256);
  const int64_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) if (threaded && n * k * m >= (1 << 15))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * block, rows = std::min(n, j0 + block) - j0;
    for (int64_t m0 = 0; m0 < m; m0 += 4) {
      const int mr = static_cast<int>(std::min<int64_t>(4, m - m0));
      kernel(w + j0 * k, rows, k, x + m0 * k, mr, y + m0 * n + j0, n);
    }
  }
}

bool has_avx512() { return __builtin_cpu_supports("avx512f"); }

IsaChoice& isa_choice() {
  static IsaChoice choice("bf16_gemv_isa_force", has_avx512);
  return choice;
}

}  // namespace

void bf16_gemv_isa_force(QuantIsa isa) { isa_choice().force(isa); }

QuantIsa bf16_gemv_isa_active() { return isa_choice().active(); }

bool bf16_gemv_isa_available(QuantIsa isa) { return isa_choice().available(isa); }

std::string bf16_gemv_description() { return isa_name(bf16_gemv_isa_active()); }

void bf16_matmul(const uint16_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y) {
  switch (bf16_gemv_isa_active()) {
    case QuantIsa::kAvx512:
      return matmul_run(bf16_kernels::kernel_avx512(), w, n, k, x, m, y, true);
    case QuantIsa::kAvx2:
      return matmul_run(bf16_kernels::kernel_avx2(), w, n, k, x, m, y, true);
    default:
      return matmul_run(rows_scalar, w, n, k, x, m, y, true);
  }
}

void bf16_matmul_reference(const uint16_t* w, int64_t n, int64_t k, const float* x, int64_t m, float* y) { matmul_run(rows_scalar, w, n, k, x, m, y, false); }

}  // namespace m3d::models
