// Blocks shared by every model file. Parameters are created uninitialised
// (torch::empty, in the default dtype): checkpoints overwrite them, so a 7B model
// costs its weight bytes once and no time in random init (torch::nn's modules
// would initialise in f32 first). `m3d init-random` initialises explicitly.
#pragma once

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace m3d::models {

// y = x W^T + b; keys weight (out, in), bias (out).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;
};
TORCH_MODULE(Linear);

// Row lookup; key weight (num, dim).
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim);
  torch::Tensor forward(const torch::Tensor& ids) const;
  torch::Tensor weight;
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
