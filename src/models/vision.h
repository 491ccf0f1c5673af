// The vision side of a multimodal checkpoint as HF nests it (model.vision_tower,
// model.mm_projector): what `m3d encode` runs, and what the decoder-side model
// (MultimodalModelImpl) runs to splice an image into a prompt, so both see the same
// input checks. One interface over the families: LaMed (ViT3D + spatial pooling
// projector, models/lamed.h) and Med3DVLM (DCFormer + MLP-Mixer projector,
// models/med3dvlm.h); vision_load picks by config.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/llama.h"

namespace m3d::models {

class VisionSideImpl : public torch::nn::Module {
 public:
  // Throws unless image is (B, C, D, H, W) on the model grid (vision_check_image).
  virtual void check_image(const torch::Tensor& image) const = 0;
  // image (B, C, D, H, W) on the model grid -> the tower's selected features, each
  // (B, N_i, E_i); check_image first.
  virtual std::vector<torch::Tensor> features(const torch::Tensor& image) = 0;
  // Names for features() in output files, same order.
  virtual std::vector<std::string> feature_names() const = 0;
  // features -> image embeddings (B, proj_out_num, hidden_size)
  virtual torch::Tensor project(const std::vector<torch::Tensor>& features) = 0;
  torch::Tensor forward(const torch::Tensor& image) { return project(features(image)); }
};
TORCH_MODULE(VisionSide);

// A decoder with a vision side whose image embeddings CausalLmImpl::embed splices
// into the prompt: LaMed (models/lamed.h) and Med3DVLM (models/med3dvlm.h).
class MultimodalModelImpl : public DecoderModelImpl {
 public:
  using DecoderModelImpl::DecoderModelImpl;
  // (B, C, D, H, W) on image_grid() -> (B, proj_out_num, D_llm): vision_side()->forward in
  // the decoder's device and compute dtype; an image off the grid throws, never resampled.
  torch::Tensor encode_images(const torch::Tensor& images);
  // The error encode_images would throw for `images`, without running the tower.
  void check_image(const torch::Tensor& images) const { vision_side().check_image(images); }
  virtual int64_t proj_out_num() const = 0;  // image tokens in the prompt
  virtual std::array<int64_t, 3> image_grid() const = 0;  // (D, H, W) the tower was trained on
  // The one vision side, whose children the model registers as model.vision_tower and
  // model.mm_projector (the checkpoint's keys); the same class `m3d encode` runs.
  virtual VisionSideImpl& vision_side() const = 0;
  virtual int64_t image_channels() const = 0;  // C of the (B, C, D, H, W) images
  // The tower a contrastive model's vision encoder loads into (train.py's
  // pretrain_clip_model / pretrain_vision_model): the ViT3D (M3D-CLIP) or the DCFormer
  // (DCFormer_SigLIP), whose keys follow the CLIP's "vision_encoder." prefix.
  virtual torch::nn::Module& clip_vision_tower() const = 0;
};

// Refuses an image that is not (B, `channels`, D, H, W) on `grid`, saying what to do:
// the towers' token counts are the trained grid's, and no path resamples silently, so
// `m3d encode` and `m3d generate` see the same input. `recipe` names the built-in
// recipe that prepares a scan for this family ("m3d-lamed", "med3dvlm").
void vision_check_image(const torch::Tensor& image, int64_t channels, const std::array<int64_t, 3>& grid, const std::string& recipe);

// Builds the vision side named by a checkpoint directory's config.json
// (vision_tower "vit3d": LaMed; "dcformer": Med3DVLM) and loads its weights
// strictly; the LLM's keys stay unread. In eval mode, f32.
VisionSide vision_load(const io::Checkpoint& checkpoint);

}  // namespace m3d::models
