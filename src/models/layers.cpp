// Shared blocks: Linear, Embedding, LayerNorm, RMSNorm with the PyTorch / HF
// parameter names and math (transformers' LlamaRMSNorm for RmsNorm).
#include "models/layers.h"

#include "m3d/error.h"
#include "models/bf16_gemv.h"
#include "models/quant_linear.h"

#include <ATen/ATen.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>

namespace m3d::models {
namespace {

std::atomic<CpuHalfActivations> cpu_half_mode{CpuHalfActivations::kAuto};

// Rows up to which bf16 weights go to bf16_matmul (bench_gemv --sweep, AVX512 EPYC, 2
// threads, 3072 -> 9216). f32 x: the alternative upcasts the whole weight per call (~110 ms
// against 8 ms for 1 row, 24 ms for 32 rows here), so bf16_matmul wins up to >100 rows; 32
// keeps a margin for AVX2, whose FMAs are half as wide. bf16 x: at::linear's bf16 GEMM
// (AVX512-BF16) ties at 6 rows and wins from 8.
constexpr int64_t kGemvMaxRowsF32 = 32, kGemvMaxRowsBf16 = 4;

// Decode with a bf16 weight (bf16_gemv.h): libtorch's bf16 GEMV reads the weight at half the
// memory bandwidth. Not for autograd (the kernel has no backward), strided weights, or a CPU
// without AVX2 (the scalar kernel is slower than libtorch).
bool bf16_gemv_applies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!x.device().is_cpu() || weight.scalar_type() != torch::kBFloat16 || weight.dim() != 2 || !weight.is_contiguous()) return false;
  if ((x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kBFloat16) || x.dim() == 0) return false;
  const int64_t k = weight.size(1), max_rows = x.scalar_type() == torch::kFloat ? kGemvMaxRowsF32 : kGemvMaxRowsBf16;
  if (k == 0 || x.size(-1) != k || x.numel() / k > max_rows) return false;  // at::linear reports mismatched shapes
  if (bf16_gemv_isa_active() == QuantIsa::kScalar) return false;
  return !at::GradMode::is_enabled() || (!x.requires_grad() && !weight.requires_grad() && !(bias.defined() && bias.requires_grad()));
}

// f32 products of the exact weights, bias added in f32, then one rounding to x's dtype: for
// bf16 x what at::linear in bf16 returns (f32 accumulation, one rounding); for f32 x more
// exact than the former bf16 GEMV, which rounded x to bf16.
torch::Tensor bf16_gemv_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const int64_t n = weight.size(0), k = weight.size(1), rows = x.numel() / k;
  const auto x32 = x.to(torch::kFloat).contiguous();
  auto y = at::empty({rows, n}, x32.options());
  bf16_matmul(static_cast<const uint16_t*>(weight.data_ptr()), n, k, x32.data_ptr<float>(), rows, y.data_ptr<float>());
  if (bias.defined()) y.add_(bias.to(torch::kFloat));
  auto sizes = x.sizes().vec();
  sizes.back() = n;  // (..., n)
  return y.view(sizes).to(x.scalar_type());
}

}  // namespace

bool cpu_has_bf16_arithmetic() {
  static const bool has = __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
  return has;
}

void cpu_half_activations_set(CpuHalfActivations mode) { cpu_half_mode.store(mode); }

bool cpu_half_activations() {
  switch (cpu_half_mode.load()) {
    case CpuHalfActivations::kHalf:
      return true;
    case CpuHalfActivations::kFloat:
      return false;
    case CpuHalfActivations::kAuto:
      break;
  }
  return cpu_has_bf16_arithmetic();
}

c10::ScalarType compute_dtype(c10::ScalarType weight_type, const c10::Device& device) {
  const bool half = weight_type == torch::kBFloat16 || weight_type == torch::kHalf;
  if (half && device.is_cpu() && !cpu_half_activations()) return torch::kFloat;
  return weight_type;
}

torch::Tensor dense_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (bf16_gemv_applies(x, weight, bias)) return bf16_gemv_linear(x, weight, bias);
  if (x.scalar_type() == weight.scalar_type()) return at::linear(x, weight, bias);
  const int64_t rows = x.numel() / std::max<int64_t>(x.size(-1), 1);
  if (rows >= 8) { return at::linear(x, weight.to(x.scalar_type()), bias.defined() ? bias.to(x.scalar_type()) : bias); }
  return at::linear(x.to(weight.scalar_type()), weight, bias).to(x.scalar_type());
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_features}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) const {
  auto y = quantized_ ? quant_linear(x, *quantized_, bias) : dense_linear(x, weight, bias);
  if (!lora_A_) return y;
  const auto h = lora_dropout_ > 0 && is_training() ? at::dropout(x, lora_dropout_, true) : x;
  return y + lora_B_->forward(lora_A_->forward(h)) * lora_scaling_;
}

void LinearImpl::set_quantized(std::shared_ptr<const QuantWeight> quantized) {
  if (quantized->rows != weight.size(0) || quantized->cols != weight.size(1)) {
    fail("linear layer of shape ({}, {}) given a quantized weight of shape ({}, {})", weight.size(0), weight.size(1), quantized->rows, quantized->cols);
  }
  weight.set_data(torch::empty({0}, weight.options()));
  quantized_ = std::move(quantized);
}

void LinearImpl::dequantize() {
  if (!quantized_) return;
  weight.set_data(quant_dequantize(*quantized_));
  quantized_.reset();
}

void LinearImpl::add_lora(int64_t r, double alpha, double dropout) {
  if (lora_A_) throw std::logic_error("LinearImpl::add_lora: this layer already has an adapter");
  if (quantized_) fail("a LoRA adapter needs a float weight; this layer's is quantized ({})", io::ggml_type_name(quantized_->type));
  lora_A_ = register_module("lora_A", std::make_shared<LinearImpl>(weight.size(1), r, false));
  lora_B_ = register_module("lora_B", std::make_shared<LinearImpl>(r, weight.size(0), false));
  lora_A_->weight.set_data(lora_A_->weight.to(weight.options()));
  lora_B_->weight.set_data(lora_B_->weight.to(weight.options()));
  lora_scaling_ = alpha / static_cast<double>(r);
  lora_dropout_ = dropout;
}

void LinearImpl::merge_lora() {
  if (!lora_A_) return;
  {
    torch::NoGradGuard no_grad;
    const auto delta = torch::matmul(lora_B_->weight.to(torch::kFloat), lora_A_->weight.to(torch::kFloat)) * lora_scaling_;
    weight.copy_(weight.to(torch::kFloat) + delta);
  }
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A_.reset();
  lora_B_.reset();
}

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim) {
  weight = register_parameter("weight", torch::empty({num_embeddings, embedding_dim}));
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) const { return quantized_ ? quant_rows(*quantized_, ids) : at::embedding(weight, ids); }

void EmbeddingImpl::dequantize() {
  if (!quantized_) return;
  weight.set_data(quant_dequantize(*quantized_));
  quantized_.reset();
}

void EmbeddingImpl::set_quantized(std::shared_ptr<const QuantWeight> quantized) {
  if (quantized->rows != weight.size(0) || quantized->cols != weight.size(1)) {
    fail("embedding of shape ({}, {}) given a quantized table of shape ({}, {})", weight.size(0), weight.size(1), quantized->rows, quantized->cols);
  }
  weight.set_data(torch::empty({0}, weight.options()));
  quantized_ = std::move(quantized);
}

LayerNormImpl::LayerNormImpl(int64_t size, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::empty({size}));
  bias = register_parameter("bias", torch::empty({size}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) const {
  return at::layer_norm(x, {x.size(-1)}, weight.to(x.scalar_type()), bias.to(x.scalar_type()), eps_);
}

RmsNormImpl::RmsNormImpl(int64_t size, double eps) : eps_(eps) { weight = register_parameter("weight", torch::empty({size})); }

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) const {
  const auto x32 = x.to(torch::kFloat);
  const auto normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + eps_);
  return weight.to(x.scalar_type()) * normed.to(x.scalar_type());  // cast back before the weight, as HF does
}

DefaultDtypeGuard::DefaultDtypeGuard(c10::ScalarType type) : previous_(torch::get_default_dtype()) {
  torch::set_default_dtype(caffe2::TypeMeta::fromScalarType(type));
}

DefaultDtypeGuard::~DefaultDtypeGuard() { torch::set_default_dtype(previous_); }

}  // namespace m3d::models
