// models/bf16_gemv against independent sums: every SIMD kernel equals the scalar reference on
// odd shapes up to the f32 summation-order bound; the reference equals a double-precision dot
// product of the bf16-decoded weights (io::bf16_to_f32, the gguf-py-checked decoder) to the
// same bound; dense_linear with the kernel equals at::linear of the f32-upcast weight (f32
// activations) and at::linear in bf16 up to its one rounding (bf16 activations).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "io/gguf_blocks.h"
#include "models/bf16_gemv.h"
#include "models/layers.h"
#include "test_support.h"

namespace m3d::models {
namespace {

constexpr double kU = std::numeric_limits<float>::epsilon() / 2;  // f32 unit roundoff, 2^-24

// Restores automatic ISA selection when a test ends, pass or fail.
struct IsaGuard {
  ~IsaGuard() { bf16_gemv_isa_force(QuantIsa::kAuto); }
};

std::vector<QuantIsa> available_isas() {
  std::vector<QuantIsa> isas;
  for (QuantIsa isa : {QuantIsa::kScalar, QuantIsa::kAvx2, QuantIsa::kAvx512}) {
    if (bf16_gemv_isa_available(isa)) isas.push_back(isa);
  }
  return isas;
}

std::vector<float> random_values(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& v : values) v = normal(rng);
  return values;
}

std::vector<uint16_t> random_bf16(size_t count, uint32_t seed) {
  const std::vector<float> values = random_values(count, seed);
  std::vector<uint16_t> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = io::f32_to_bf16(values[i]);
  return out;
}

// The exact product in double (a bf16 times an f32 is exact in double, and k of them sum with
// relative error ~k 2^-53), and the sum of |terms|, the scale of f32 rounding errors.
void exact_product(const std::vector<uint16_t>& w, int64_t n, int64_t k, const std::vector<float>& x, int64_t m, std::vector<double>* exact,
                   std::vector<double>* magnitude) {
  exact->assign(static_cast<size_t>(m * n), 0.0);
  magnitude->assign(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t e = 0; e < k; ++e) {
        const double term = double{io::bf16_to_f32(w[j * k + e])} * x[i * k + e];
        (*exact)[i * n + j] += term;
        (*magnitude)[i * n + j] += std::fabs(term);
      }
    }
  }
}

// Higham's bound for an f32 dot product of k terms in any summation order, products rounded
// or fused: |computed - exact| <= gamma_k sum |terms|, gamma_k = k u / (1 - k u).
double gamma(int64_t k) { return k * kU / (1 - k * kU); }

TEST(Bf16Gemv, EveryIsaEqualsTheReferenceOnOddShapes) {
  IsaGuard guard;
  const std::vector<QuantIsa> isas = available_isas();
  if (isas.size() == 1) std::cerr << "note: this CPU has neither AVX2 nor AVX-512; only the scalar kernel ran\n";
  for (int64_t k : {1, 7, 31, 33, 257, 4099}) {
    for (int64_t n : {1, 3, 17, 129}) {
      const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(n * k), static_cast<uint32_t>(n * 10000 + k));
      for (int64_t m = 1; m <= 8; ++m) {
        SCOPED_TRACE(testing::Message() << "n=" << n << " k=" << k << " m=" << m);
        const std::vector<float> x = random_values(static_cast<size_t>(m * k), static_cast<uint32_t>(m + k));
        std::vector<double> exact, magnitude;
        exact_product(w, n, k, x, m, &exact, &magnitude);
        std::vector<float> want(static_cast<size_t>(m * n)), got(want.size());
        bf16_matmul_reference(w.data(), n, k, x.data(), m, want.data());
        for (QuantIsa isa : isas) {
          bf16_gemv_isa_force(isa);
          std::fill(got.begin(), got.end(), NAN);
          bf16_matmul(w.data(), n, k, x.data(), m, got.data());
          for (size_t i = 0; i < got.size(); ++i) {
            if (isa == QuantIsa::kScalar) {
              ASSERT_EQ(got[i], want[i]) << "the threaded scalar path is the reference itself";
            } else {
              // Both within gamma_k of the exact sum, so within twice that of each other.
              ASSERT_LE(std::fabs(double{got[i]} - want[i]), 2 * gamma(k) * magnitude[i]) << bf16_gemv_description() << " output " << i;
            }
          }
        }
      }
    }
  }
}

TEST(Bf16Gemv, ReferenceIsTheDoubleProductOfTheDecodedWeights) {
  for (int64_t k : {1, 33, 4099}) {
    SCOPED_TRACE(k);
    const int64_t n = 5, m = 3;
    const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(n * k), 3);
    std::vector<float> x = random_values(static_cast<size_t>(m * k), 4);
    x[0] = 1e6f;  // one large term: the bound scales with sum |terms|, not with |result|
    std::vector<double> exact, magnitude;
    exact_product(w, n, k, x, m, &exact, &magnitude);
    std::vector<float> y(static_cast<size_t>(m * n));
    bf16_matmul_reference(w.data(), n, k, x.data(), m, y.data());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_LE(std::fabs(y[i] - exact[i]), gamma(k) * magnitude[i]) << "output " << i;
  }
}

TEST(Bf16Gemv, RowsOfExactTermsAreExactOnEveryIsa) {
  // Weights and x of few significant bits: every product and partial sum is exact in f32,
  // so any summation order gives the exact result, which a wrong lane or tail would miss.
  IsaGuard guard;
  const int64_t n = 9, k = 4099, m = 5;
  std::vector<uint16_t> w(static_cast<size_t>(n * k));
  std::vector<float> x(static_cast<size_t>(m * k));
  for (size_t i = 0; i < w.size(); ++i) w[i] = io::f32_to_bf16(static_cast<float>(static_cast<int>(i * 7 % 13) - 6));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i * 5 % 11) - 5) / 4;
  std::vector<double> exact, magnitude;
  exact_product(w, n, k, x, m, &exact, &magnitude);
  std::vector<float> y(static_cast<size_t>(m * n));
  for (QuantIsa isa : available_isas()) {
    bf16_gemv_isa_force(isa);
    bf16_matmul(w.data(), n, k, x.data(), m, y.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], exact[i]) << bf16_gemv_description() << " output " << i;
  }
}

TEST(Bf16Gemv, EmptyShapesAndErrors) {
  std::vector<float> y(4, NAN);
  bf16_matmul(nullptr, 2, 0, nullptr, 2, y.data());  // k = 0: empty sums
  for (float v : y) EXPECT_EQ(v, 0.0f);
  bf16_matmul(nullptr, 0, 5, nullptr, 3, y.data());
  test::expect_one_line_error([&] { bf16_matmul(nullptr, -1, 5, nullptr, 1, y.data()); }, "", "shapes must be non-negative, got n = -1");
}

TEST(Bf16Gemv, ForcingAnIsaSelectsItAndLeavesTheQuantizedKernels) {
  IsaGuard guard;
  const QuantIsa quant = quant_isa_active();
  for (QuantIsa isa : available_isas()) {
    bf16_gemv_isa_force(isa);
    EXPECT_EQ(bf16_gemv_isa_active(), isa);
  }
  bf16_gemv_isa_force(QuantIsa::kScalar);
  EXPECT_EQ(bf16_gemv_description(), "scalar");
  EXPECT_EQ(quant_isa_active(), quant);
}

// Largest |got - want| relative to max |want|.
double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>() / want.to(torch::kDouble).abs().max().item<double>();
}

TEST(Bf16Gemv, DenseLinearWithF32ActivationsIsTheF32Product) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  const auto w = torch::randn({129, 4099}).to(torch::kBFloat16);
  const auto b = torch::randn({129}).to(torch::kBFloat16);
  for (int64_t rows : {1, 3, 8, 32, 33}) {  // 33: past the crossover, at::linear's f32 GEMM
    SCOPED_TRACE(rows);
    const auto x = torch::randn({1, rows, 4099});
    const auto ours = dense_linear(x, w, b);
    EXPECT_EQ(ours.sizes(), (std::vector<int64_t>{1, rows, 129}));
    EXPECT_EQ(ours.scalar_type(), torch::kFloat);
    // f32 against f32 (oneDNN's order): both f32 sums of k = 4099 terms.
    EXPECT_LE(relative_error(ours, at::linear(x, w.to(torch::kFloat), b.to(torch::kFloat))), 1e-5);
  }
}

TEST(Bf16Gemv, DenseLinearWithBf16ActivationsRoundsOnce) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const auto w = torch::randn({129, 257}).to(torch::kBFloat16);
  const auto b = torch::randn({129}).to(torch::kBFloat16);
  const auto x = torch::randn({2, 257}).to(torch::kBFloat16);
  const auto ours = dense_linear(x, w, b);
  EXPECT_EQ(ours.scalar_type(), torch::kBFloat16);
  // The exact product rounded once: the f32 sum s (k terms and the bias) is within
  // gamma_{k+1} sum |terms| of exact, and rounding s to bf16 (8 significant bits) moves it by
  // at most 2^-8 |s|.
  const auto x32 = x.to(torch::kDouble), w32 = w.to(torch::kDouble), b32 = b.to(torch::kDouble);
  const auto exact = at::linear(x32, w32, b32), magnitude = at::linear(x32.abs(), w32.abs(), b32.abs());
  const auto err = (ours.to(torch::kDouble) - exact).abs();
  const auto bound = exact.abs() * std::ldexp(1.0, -8) + magnitude * (gamma(258) * (1 + std::ldexp(1.0, -8)));
  EXPECT_TRUE((err <= bound).all().item<bool>()) << (err - bound).max().item<double>();
  // And at::linear in bf16 stays within its own one rounding of the same (f32 accumulation).
  EXPECT_LE(relative_error(ours, at::linear(x, w, b)), std::ldexp(1.0, -7));
}

TEST(Bf16Gemv, DenseLinearKeepsAutogradOnAtLinear) {
  torch::manual_seed(2);
  const auto w = torch::randn({6, 10}).to(torch::kBFloat16).requires_grad_();
  const auto x = torch::randn({1, 10});
  const auto y = dense_linear(x, w);
  ASSERT_TRUE(y.requires_grad()) << "a product that needs a gradient must keep at::linear's graph";
  y.sum().backward();
  EXPECT_TRUE(w.grad().defined());
}

}  // namespace
}  // namespace m3d::models
