// The vision side of a multimodal checkpoint as HF nests it (model.vision_tower,
// model.mm_projector): what `m3d encode` runs. One interface over the families:
// LaMed (ViT3D + spatial pooling projector, models/lamed.h) and Med3DVLM
// (DCFormer + MLP-Mixer projector, models/med3dvlm.h); vision_load picks by config.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace m3d::models {

class VisionSideImpl : public torch::nn::Module {
 public:
  // image (B, C, D, H, W) -> the tower's selected features, each (B, N_i, E_i)
  virtual std::vector<torch::Tensor> features(const torch::Tensor& image) = 0;
  // Names for features() in output files, same order.
  virtual std::vector<std::string> feature_names() const = 0;
  // features -> image embeddings (B, proj_out_num, hidden_size)
  virtual torch::Tensor project(const std::vector<torch::Tensor>& features) = 0;
  torch::Tensor forward(const torch::Tensor& image) { return project(features(image)); }
};
TORCH_MODULE(VisionSide);

// Builds the vision side named by a checkpoint directory's config.json
// (vision_tower "vit3d": LaMed; "dcformer": Med3DVLM) and loads its weights
// strictly; the LLM's keys stay unread. In eval mode, f32.
VisionSide vision_load(const io::Checkpoint& checkpoint);

}  // namespace m3d::models
