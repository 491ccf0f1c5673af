// Blocks shared by every model file. Parameters are created uninitialised
// (torch::empty, in the default dtype): checkpoints overwrite them, so a 7B model
// costs its weight bytes once and no time in random init (torch::nn's modules
// would initialise in f32 first). `m3d init-random` initialises explicitly.
#pragma once

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace m3d::models {

struct QuantWeight;  // models/quant_linear.h

// Activations are computed in f32 for 16-bit weights on a CPU without bf16/f16
// arithmetic (no AVX512-BF16 / AMX): there libtorch's bf16 GEMM runs at ~50
// GFLOP/s against ~200 in f32 (measured on the project machine), and bf16
// element-wise ops are slow too. The weights stay 16-bit in memory. Elsewhere
// (GPU, CPUs with bf16 units) activations take the weights' dtype, as in PyTorch.
c10::ScalarType compute_dtype(c10::ScalarType weight_type, const c10::Device& device);

// Which of the two CPU paths 16-bit weights take: chosen from the CPU's flags
// (kAuto), or forced, so tests and benchmarks run both paths on any CPU.
enum class CpuHalfActivations { kAuto, kHalf, kFloat };
void cpu_half_activations_set(CpuHalfActivations mode);
// True when 16-bit weights on the CPU compute in their own dtype (bf16 activations).
bool cpu_half_activations();
// Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX). Without it, libtorch
// 1.13's bf16 kernels (measured on an AVX2 EPYC) drift far beyond PyTorch-on-AVX512
// bounds (logits max diff / std ~2 on the tiny LaMed), which is one reason kAuto keeps
// activations in f32 there.
bool cpu_has_bf16_arithmetic();

// x W^T + b for activations x of compute_dtype and weights of any float dtype.
// A bf16 weight against few rows (decode: up to 32 f32 or 4 bf16 rows) on a CPU
// with AVX2, without autograd, runs in bf16_matmul (bf16_gemv.h) at memory speed:
// f32 products and sums, bias added in f32, one rounding to x's dtype. Otherwise, mixed f32 x 16-bit: many rows
// (prefill) multiply in f32 with the weight upcast; few rows multiply in the
// weight's dtype (libtorch's GEMV) and return f32.
torch::Tensor dense_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

// y = x W^T + b; keys weight (out, in), bias (out). With a LoRA adapter (peft's
// lora.Linear): y + B(A(dropout(x))) * scaling, keys lora_A.weight (r, in) and
// lora_B.weight (out, r) beside the base weight (models/lora.h).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;

  // Keeps the weight as GGUF blocks (a GGUF model): `weight` becomes an empty tensor
  // and products run in the quantized kernels (models/quant_linear.h).
  void set_quantized(std::shared_ptr<const QuantWeight> quantized);
  const QuantWeight* quantized() const { return quantized_.get(); }
  // Back to a dense f32 weight holding the blocks' values (a reference for the kernels).
  void dequantize();

  // Adds an adapter with uninitialised A and B (lora_apply initialises them).
  void add_lora(int64_t r, double alpha, double dropout);
  bool has_lora() const { return lora_A_ != nullptr; }
  // W += B A * scaling, then the adapter is removed (peft's merge_and_unload).
  void merge_lora();
  LinearImpl* lora_A() const { return lora_A_.get(); }
  LinearImpl* lora_B() const { return lora_B_.get(); }
  double lora_scaling() const { return lora_scaling_; }
  double lora_dropout() const { return lora_dropout_; }

 private:
  std::shared_ptr<LinearImpl> lora_A_, lora_B_;
  double lora_scaling_ = 0, lora_dropout_ = 0;
  std::shared_ptr<const QuantWeight> quantized_;
};
TORCH_MODULE(Linear);

// Row lookup; key weight (num, dim).
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim);
  torch::Tensor forward(const torch::Tensor& ids) const;
  torch::Tensor weight;

  // As LinearImpl::set_quantized: rows are dequantized as they are looked up (f32).
  void set_quantized(std::shared_ptr<const QuantWeight> quantized);
  const QuantWeight* quantized() const { return quantized_.get(); }
  void dequantize();

 private:
  std::shared_ptr<const QuantWeight> quantized_;
};
TORCH_MODULE(Embedding);

// nn.LayerNorm over the last dimension with affine weight and bias.
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;

 private:
  double eps_;
};
TORCH_MODULE(LayerNorm);

// Llama/Phi-3/Qwen2 RMSNorm: normalise in fp32, cast back, then scale (no +1).
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x) const;
  double eps() const { return eps_; }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

// Sets the default dtype (the dtype new parameters get) for a scope.
class DefaultDtypeGuard {
 public:
  explicit DefaultDtypeGuard(c10::ScalarType type);
  ~DefaultDtypeGuard();
  DefaultDtypeGuard(const DefaultDtypeGuard&) = delete;
  DefaultDtypeGuard& operator=(const DefaultDtypeGuard&) = delete;

 private:
  caffe2::TypeMeta previous_;
};

}  // namespace m3d::models
