// Shared blocks: Linear, Embedding, LayerNorm, RMSNorm with the PyTorch / HF
// parameter names and math (transformers' LlamaRMSNorm for RmsNorm).
#include "models/layers.h"

#include "m3d/error.h"
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
