// M3D-LaMed: the multimodal wrapper around a decoder LLM (lamed_arch.py): its
// config keys, the vision side (ViT3D tower with feature selection + mm_projector),
// which `m3d encode` runs on its own, and LamedPhi3Model / LamedLlamaModel, the
// decoder with that same vision side, which the architecture registry (causal_lm.h) builds.
#pragma once

#include <torch/nn/module.h>

#include <array>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/hf_config.h"
#include "models/llama.h"
#include "models/projector.h"
#include "models/vision.h"
#include "models/vit3d.h"

namespace m3d::models {

// LaMed keys of config.json (M3D LaMed/src/train/train.py ModelArguments); the
// defaults are the released ones.
struct LamedConfig {
  int64_t image_channel = 1;
  std::array<int64_t, 3> image_size = {32, 256, 256};
  std::array<int64_t, 3> patch_size = {4, 16, 16};
  std::string vision_tower = "vit3d";
  int64_t vision_select_layer = -1;
  std::string vision_select_feature = "patch";
  SppConfig projector;  // mm_projector_type, proj_*, mm_hidden_size, hidden_size
  int64_t proj_out_num = 256;
  // The official ViT3DTower ignores config and always builds 768/3072/12/12;
  // checkpoints give widths and depth by their shapes. These test-only keys (see
  // ../shared/fixtures/README.md) give them without one, and the heads always.
  int64_t vision_hidden_size = 768;
  int64_t vision_mlp_dim = 3072;
  int64_t vision_num_layers = 12;
  int64_t vision_num_heads = 12;

  // The ViT as the config describes it (no checkpoint to read shapes from).
  Vit3dConfig vit3d() const;

  static LamedConfig from_hf(const io::HfConfig& config, const std::string& where);
};

// The ViT's hyper-parameters from tensor shapes under `prefix` (e.g.
// "model.vision_tower.vision_tower."), so any width and depth load.
Vit3dConfig vit3d_config_from_checkpoint(const io::Checkpoint& checkpoint, const std::string& prefix, const LamedConfig& config);

// ViT3DTower (multimodal_encoder/vit.py): the ViT plus select layer / feature.
class Vit3dTowerImpl : public torch::nn::Module {
 public:
  Vit3dTowerImpl(const Vit3dConfig& vit, int64_t select_layer, std::string select_feature);
  // (B, C, D, H, W) -> (B, N, E) with "patch", (B, N+1, E) with "cls_patch"
  torch::Tensor forward(const torch::Tensor& image);

  Vit3d vision_tower{nullptr};

 private:
  int64_t select_layer_;
  std::string select_feature_;
};
TORCH_MODULE(Vit3dTower);

// Vision side of a LaMed checkpoint as the CausalLM nests it: model.vision_tower, model.mm_projector.
class LamedVisionImpl : public VisionSideImpl {
 public:
  LamedVisionImpl(const LamedConfig& config, const Vit3dConfig& vit);
  void check_image(const torch::Tensor& image) const override;  // (B, image_channel, image_size)
  std::vector<torch::Tensor> features(const torch::Tensor& image) override;  // [(B, N, E)]
  std::vector<std::string> feature_names() const override;
  torch::Tensor project(const std::vector<torch::Tensor>& features) override;  // (B, proj_out_num, hidden_size)
  const LamedConfig& config() const { return config_; }

  Vit3dTower vision_tower{nullptr};
  Projector mm_projector{nullptr};

 private:
  LamedConfig config_;
};
TORCH_MODULE(LamedVision);

// LamedPhi3Model / LamedLlamaModel (lamed_phi3.py, lamed_llama.py; LamedMetaModel in
// lamed_arch.py): the decoder plus one LamedVision, whose two children are registered
// here as model.vision_tower and model.mm_projector (the checkpoint's keys) rather
// than under a module of its own.
class LamedModelImpl : public MultimodalModelImpl {
 public:
  LamedModelImpl(const DecoderConfig& decoder, const LamedConfig& lamed, const Vit3dConfig& vit);
  int64_t proj_out_num() const override { return vision->config().proj_out_num; }
  std::array<int64_t, 3> image_grid() const override { return vision->config().image_size; }
  VisionSideImpl& vision_side() const override { return *vision.ptr(); }
  int64_t image_channels() const override { return vision->config().image_channel; }
  torch::nn::Module& clip_vision_tower() const override { return *vision_tower->vision_tower.ptr(); }
  const LamedConfig& lamed_config() const { return vision->config(); }

  LamedVision vision{nullptr};
  Vit3dTower vision_tower{nullptr};  // vision->vision_tower
  Projector mm_projector{nullptr};  // vision->mm_projector
};

// Builds the vision side from a checkpoint directory's config.json and weights.
LamedVision lamed_vision_load(const io::Checkpoint& checkpoint);

}  // namespace m3d::models
