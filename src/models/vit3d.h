// 3D Vision Transformer as M3D builds it (its copy of MONAI 1.3.0's ViT). Used as
// the LaMed / M3D-CLIP vision tower (cls token) and as SegVol's image encoder (no cls).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <vector>

#include "models/layers.h"

namespace m3d::models {

struct Vit3dConfig {
  int64_t in_channels = 1;
  std::array<int64_t, 3> img_size = {32, 256, 256};  // D, H, W
  std::array<int64_t, 3> patch_size = {4, 16, 16};
  int64_t hidden_size = 768;
  int64_t mlp_dim = 3072;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  bool classification = true;  // a cls token at index 0 (no position embedding)
  double layer_norm_eps = 1e-5;

  int64_t num_patches() const;
  std::array<int64_t, 3> grid() const;  // patches along D, H, W
};

// MONAI SABlock: fused qkv without bias, head-major split, unmasked softmax attention.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t hidden_size, int64_t num_heads);
  torch::Tensor forward(const torch::Tensor& x);
  // The output of token 0 only, (B, 1, E): every token is a key, token 0 the only query.
  torch::Tensor forward_first(const torch::Tensor& x);

  Linear qkv{nullptr}, out_proj{nullptr};

 private:
  double scale(const torch::Tensor& x) const;
  int64_t num_heads_;
};
TORCH_MODULE(SelfAttention);

// MONAI MLPBlock: linear1 -> exact (erf) GELU -> linear2.
class MlpBlockImpl : public torch::nn::Module {
 public:
  MlpBlockImpl(int64_t hidden_size, int64_t mlp_dim);
  torch::Tensor forward(const torch::Tensor& x);

  Linear linear1{nullptr}, linear2{nullptr};
};
TORCH_MODULE(MlpBlock);

// Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x)).
class TransformerBlockImpl : public torch::nn::Module {
 public:
  explicit TransformerBlockImpl(const Vit3dConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  // Token 0's output only, (B, 1, E): the same numbers as forward(x)[:, :1].
  torch::Tensor forward_first(const torch::Tensor& x);

  LayerNorm norm1{nullptr}, norm2{nullptr};
  SelfAttention attn{nullptr};
  MlpBlock mlp{nullptr};
};
TORCH_MODULE(TransformerBlock);

// "perceptron" patch embedding: einops rearrange of each patch into a vector
// (patch_embeddings.0, no weights) -> Linear (patch_embeddings.1) -> + learned positions.
class PatchEmbeddingImpl : public torch::nn::Module {
 public:
  explicit PatchEmbeddingImpl(const Vit3dConfig& config);
  torch::Tensor forward(const torch::Tensor& image);

  torch::Tensor position_embeddings;
  Linear linear{nullptr};

 private:
  Vit3dConfig config_;
};
TORCH_MODULE(PatchEmbedding);

struct Vit3dOutput {
  torch::Tensor last;  // (B, N[+1], E) after the final norm
  std::vector<torch::Tensor> hidden_states;  // each block's output, before the final norm
};

class Vit3dImpl : public torch::nn::Module {
 public:
  explicit Vit3dImpl(const Vit3dConfig& config);
  // image (B, C, D, H, W) of exactly config.img_size.
  Vit3dOutput forward(const torch::Tensor& image);
  // The cls token after the final norm, (B, E) = forward(image).last[:, 0], computing in the
  // last block only what token 0 needs (M3D-CLIP's image feature; needs config.classification).
  torch::Tensor forward_cls(const torch::Tensor& image);
  const Vit3dConfig& config() const { return config_; }
  // Gradient checkpointing: in training, each block keeps only its input for the backward
  // and runs its forward again there (activation memory of one block instead of all; about
  // a third more compute). Same gradients.
  void set_gradient_checkpointing(bool on) { checkpointing_ = on; }
  bool gradient_checkpointing() const { return checkpointing_; }

  PatchEmbedding patch_embedding{nullptr};
  torch::Tensor cls_token;
  torch::nn::ModuleList blocks{nullptr};
  LayerNorm norm{nullptr};

 private:
  torch::Tensor embed(const torch::Tensor& image);  // checks the shape; patches (+ cls): (B, N[+1], E)
  torch::Tensor run_block(size_t i, const torch::Tensor& x);  // checkpointed when asked
  Vit3dConfig config_;
  bool checkpointing_ = false;
};
TORCH_MODULE(Vit3d);

}  // namespace m3d::models
