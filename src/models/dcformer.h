// DCFormer (decomposed 3D convolutions), the vision encoder of Med3DVLM: a stem
// of three-branch (H, W, D) convolutions and four stages of ConvBlocks, each
// stage's tokens returned. Module names are the official attribute names, so
// `encoder.*` keys of Med3DVLM / DCFormer_SigLIP checkpoints load unchanged.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/layers.h"

namespace m3d::models {

// DecompModel's arguments (Med3DVLM src/model/encoder/dcformer.py); the defaults
// are decomp_small, the only variant the released models use.
struct DcformerConfig {
  int64_t in_channels = 1;
  std::array<int64_t, 5> num_blocks = {1, 2, 3, 6, 2};  // s0 (the stem: always 1) .. s4
  std::array<int64_t, 5> channels = {64, 96, 192, 384, 768};
  std::array<int64_t, 4> kernel_sizes = {13, 11, 9, 7};  // depthwise kernels of s1 .. s4
  // D, H, W of the input. The network is fully convolutional; this is the grid
  // Med3DVLM trained on and its projector's token counts require.
  std::array<int64_t, 3> image_size = {128, 256, 256};
  // BatchNorm's num_batches_tracked buffers: present in PyTorch state dicts,
  // absent from the official fixture. Inference never reads them.
  bool num_batches_tracked = true;

  // D', H', W' of stage `stage` (0 = stem .. 4) for image_size: the stem takes
  // ceil(n / 4) (kernel 7, stride 4, padding 3), every later stage ceil(n / 2)
  // (max-pool 3, stride 2, padding 1, floor mode).
  std::array<int64_t, 3> stage_grid(int stage) const;
  int64_t stage_tokens(int stage) const;
};

// decomp_nano, decomp_naive, decomp_tiny, decomp_small, decomp_base, decomp_large.
DcformerConfig dcformer_variant(const std::string& name);
std::vector<std::string> dcformer_variants();

// DcformerConfig::image_size (D, H, W) from a config's `input_size`, which Med3DVLM
// (DEC_CLIPConfig, train_vlm.py, train_clip.py) writes in the encoder's internal
// (H, W, D) order: [256, 256, 128] is the 128 x 256 x 256 volume. Three positive
// integers; `fallback` (D, H, W) when the key is absent.
std::array<int64_t, 3> dcformer_image_size_from_input_size(const nlohmann::json& config, const std::string& where, std::array<int64_t, 3> fallback);

// Blocks, channels and kernels from tensor shapes under `prefix` (the key prefix
// before "encoder.", e.g. "model.vision_tower.vision_tower."); image_size from `base`.
DcformerConfig dcformer_config_from_checkpoint(const io::Checkpoint& checkpoint, const std::string& prefix, const DcformerConfig& base);

// nn.BatchNorm3d (eps 1e-5, momentum 0.1): running statistics in eval mode, batch
// statistics (and running-stat updates) in train mode, as PyTorch.
class BatchNorm3dImpl : public torch::nn::Module {
 public:
  BatchNorm3dImpl(int64_t size, bool num_batches_tracked);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(BatchNorm3d);

// One branch of DecompConv3D: nn.Sequential(Conv3d with bias, BatchNorm3d), so
// the keys are 0.weight, 0.bias and 1.*.
class DecompBranchImpl : public torch::nn::Module {
 public:
  DecompBranchImpl(int64_t in, int64_t out, std::array<int64_t, 3> kernel, int64_t stride, int64_t groups, bool num_batches_tracked);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;  // the Conv3d's, registered under "0"
  BatchNorm3d norm{nullptr};  // "1"

 private:
  std::array<int64_t, 3> padding_;
  int64_t stride_, groups_;
};
TORCH_MODULE(DecompBranch);

// DecompConv3D: c1 (k,1,1) + c2 (1,k,1) + c3 (1,1,k) over the internal
// (H, W, D) axes, each with its own BatchNorm; no activation in any use.
class DecompConv3dImpl : public torch::nn::Module {
 public:
  DecompConv3dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, bool num_batches_tracked);
  torch::Tensor forward(const torch::Tensor& x);
  DecompBranch c1{nullptr}, c2{nullptr}, c3{nullptr};
};
TORCH_MODULE(DecompConv3d);

// ConvBlock: [max-pool + 1x1x1 proj] -> depthwise DecompConv3D -> channels-last
// MLP (Linear, exact GELU, Linear: keys mlp.mlp.0 / mlp.mlp.3) -> * scale -> + residual.
class ConvBlockImpl : public torch::nn::Module {
 public:
  ConvBlockImpl(int64_t in, int64_t out, int64_t kernel, bool downsample, bool num_batches_tracked);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor proj;  // (out, in, 1, 1, 1), bias-free; only with downsample
  DecompConv3d dwconv{nullptr};
  Linear fc1{nullptr}, fc2{nullptr};
  torch::Tensor scale;  // layer scale, (out)
};
TORCH_MODULE(ConvBlock);

// DecompModel: `encoder` holds s0 (the stem) .. s4.
class DcformerImpl : public torch::nn::Module {
 public:
  explicit DcformerImpl(const DcformerConfig& config);
  // image (B, C, D, H, W) of exactly config.image_size -> the 5 stages' outputs,
  // each (B, D'*H'*W', C_s) with tokens row-major over (D', H', W').
  std::vector<torch::Tensor> forward(const torch::Tensor& image);
  const DcformerConfig& config() const { return config_; }

  std::array<torch::nn::ModuleList, 5> stages;  // encoder.s0 .. encoder.s4

 private:
  torch::nn::ModuleList stem_{nullptr};  // encoder.s0.0
  DcformerConfig config_;
};
TORCH_MODULE(Dcformer);

}  // namespace m3d::models
