// Mixed-precision products (layers.h): f32 activations with 16-bit weights must
// match the exact product of the same values computed in f64, to f32 accuracy
// for many rows and to bf16 rounding for the few-row (decode) path. The blocked
// attention (attention.h) must match the plain formulation computed in f64, values
// and gradients.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/attention.h"
#include "models/layers.h"

namespace m3d::models {
namespace {

// Largest error relative to max |exact| (so near-zero entries do not dominate).
double relative_error(const at::Tensor& got, const at::Tensor& exact) {
  return (got.to(torch::kDouble) - exact).abs().max().item<double>() / exact.abs().max().item<double>();
}

TEST(DenseLinear, F32ActivationsWithBf16Weights) {
  torch::manual_seed(0);
  const auto w = torch::randn({80, 96}).to(torch::kBFloat16);
  const auto b = torch::randn({80}).to(torch::kBFloat16);
  for (int64_t rows : {1, 4, 64}) {
    SCOPED_TRACE(rows);
    const auto x = torch::randn({rows, 96});
    const auto exact = at::linear(x.to(torch::kDouble), w.to(torch::kDouble), b.to(torch::kDouble));
    const auto ours = dense_linear(x, w, b);
    EXPECT_EQ(ours.scalar_type(), torch::kFloat);
    // Few rows round x to bf16 (GEMV in the weights' dtype): bf16 accuracy; many rows: f32.
    EXPECT_LE(relative_error(ours, exact), rows < 8 ? 2e-2 : 1e-5);
  }
}

TEST(DenseLinear, SameDtypeIsThePlainProduct) {
  const auto x = torch::randn({10, 7});
  const auto w = torch::randn({5, 7});
  EXPECT_TRUE(dense_linear(x, w).equal(at::linear(x, w)));
}

TEST(ComputeDtype, F32StaysF32AndGpuKeepsBf16) {
  EXPECT_EQ(compute_dtype(torch::kFloat, torch::kCPU), torch::kFloat);
  EXPECT_EQ(compute_dtype(torch::kBFloat16, torch::Device(torch::kCUDA, 0)), torch::kBFloat16);
}

// Token counts below, at and across the block size (128 rows), several batches and heads.
TEST(BlockedAttention, ValuesAndGradientsMatchThePlainOpsInF64) {
  torch::manual_seed(1);
  for (int64_t tokens : {5, 128, 300}) {
    SCOPED_TRACE(tokens);
    const int64_t batch = 2, heads = 3, head_dim = 8;
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    const auto qkv = (torch::randn({batch, tokens, 3 * heads * head_dim}) * 2).requires_grad_();
    const auto upstream = torch::randn({batch, tokens, heads * head_dim});
    const auto ours = fused_qkv_attention(qkv, heads, scale);
    const auto grad = torch::autograd::grad({ours}, {qkv}, {upstream})[0];

    const auto qkv64 = qkv.detach().to(torch::kDouble).requires_grad_();
    const auto exact = plain_qkv_attention(qkv64, heads, scale);
    const auto exact_grad = torch::autograd::grad({exact}, {qkv64}, {upstream.to(torch::kDouble)})[0];
    EXPECT_LE(relative_error(ours, exact.detach()), 1e-6);
    EXPECT_LE(relative_error(grad, exact_grad), 1e-5);

    torch::NoGradGuard no_grad;  // the inference path keeps no probabilities and gives the same values
    EXPECT_TRUE(fused_qkv_attention(qkv, heads, scale).equal(ours.detach()));
  }
}

TEST(BlockedAttention, RejectsAQkvWidthThatIsNotThreeTimesTheHeads) {
  EXPECT_THROW(fused_qkv_attention(torch::randn({1, 4, 10}), 3, 1.0), std::exception);
  EXPECT_THROW(fused_qkv_attention(torch::randn({4, 9}), 3, 1.0), std::exception);
}

}  // namespace
}  // namespace m3d::models
