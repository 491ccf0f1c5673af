// Med3DVLM's mm_projector "mixer" (MixerLowHighHybridMLP): two MLP-Mixer streams,
// one over the DCFormer's low (s3) tokens and one over its high (s4) tokens, whose
// outputs are concatenated, low first. Module names are the official ones.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <vector>

#include "models/layers.h"

namespace m3d::models {

// Field names are the Med3DVLM config.json keys; the defaults are the released
// model's (vlm_arch.py hard-codes the input sizes, train_vlm.py the rest).
struct MixerConfig {
  std::array<int64_t, 2> low_input_size = {256, 384};  // tokens, channels of the low features
  std::vector<int64_t> low_output_size = {192, 128};  // tokens after each low layer
  std::array<int64_t, 2> high_input_size = {32, 768};
  std::vector<int64_t> high_output_size = {64, 128};
  int64_t mm_mlp_depth = 2;
  int64_t hidden_size = 3584;  // output_dim: the LLM width

  int64_t depth() const { return static_cast<int64_t>(low_output_size.size()); }
  int64_t proj_out_num() const;  // image tokens handed to the LLM
};

// MultiModalProjector: Linear(in, out) then (mlp_depth - 1) x Sequential(GELU,
// Linear(out, out)); keys mm_projector.0.*, mm_projector.{i}.1.*.
class MultiModalProjectorImpl : public torch::nn::Module {
 public:
  MultiModalProjectorImpl(int64_t input_size, int64_t output_size, int64_t mlp_depth);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::vector<Linear> layers_;
};
TORCH_MODULE(MultiModalProjector);

// MixerLayer: LayerNorm -> token-mixing MLP (mlp1) -> LayerNorm -> channel MLP
// (mlp2); no residual connections.
class MixerLayerImpl : public torch::nn::Module {
 public:
  MixerLayerImpl(std::array<int64_t, 2> input_size, std::array<int64_t, 2> output_size, int64_t mlp_depth);
  // (B, n_in, d_in) -> (B, n_out, d_out)
  torch::Tensor forward(const torch::Tensor& x);

  LayerNorm ln1{nullptr}, ln2{nullptr};
  MultiModalProjector mlp1{nullptr}, mlp2{nullptr};
};
TORCH_MODULE(MixerLayer);

class MixerLowHighHybridMlpImpl : public torch::nn::Module {
 public:
  explicit MixerLowHighHybridMlpImpl(const MixerConfig& config);
  // low (B, low_input_size), high (B, high_input_size) -> (B, proj_out_num, hidden_size)
  torch::Tensor forward(const torch::Tensor& low, const torch::Tensor& high);
  const MixerConfig& config() const { return config_; }

  torch::nn::ModuleList low_mixer{nullptr}, high_mixer{nullptr};

 private:
  MixerConfig config_;
};
TORCH_MODULE(MixerLowHighHybridMlp);

}  // namespace m3d::models
