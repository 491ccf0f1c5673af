// Vision-side dispatch (config.json's vision_tower picks the family) and the input
// check both the vision side and the decoder-side model run.
#include "models/vision.h"

#include <fmt/ranges.h>

#include "io/hf_config.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "models/lamed.h"
#include "models/med3dvlm.h"

namespace m3d::models {

void vision_check_image(const torch::Tensor& image, int64_t channels, const std::array<int64_t, 3>& grid, const std::string& recipe) {
  const std::string expected = fmt::format("expected an image of shape [B, {}, {}]", channels, fmt::join(grid, ", "));
  const std::string what_to_do =
      fmt::format("prepare the scan with --recipe (the checkpoint's m3d_recipe.json or the built-in {}) or give a .npy already on the model grid", recipe);
  if (image.dim() != 5) { fail("image has shape [{}] but this model takes B x C x D x H x W ({}): {}", fmt::join(image.sizes(), ", "), expected, what_to_do); }
  const std::string shape = fmt::format("{}", fmt::join(image.sizes(), "x"));
  if (image.size(1) != channels) {
    fail("image is {} with {} channels but this model takes {} ({}): {}", shape, image.size(1), channels, expected, what_to_do);
  }
  if (image.sizes().slice(2) != at::IntArrayRef(grid.data(), grid.size())) {
    fail("image is {} but this model's grid is {} (D x H x W; {}): {}", shape, fmt::join(grid, "x"), expected, what_to_do);
  }
}

torch::Tensor MultimodalModelImpl::encode_images(const torch::Tensor& images) {
  const auto& weight = embed_tokens->weight;
  return vision_side().forward(images.to(weight.device(), compute_dtype(weight.scalar_type(), weight.device())));  // (B, N, D_llm)
}

VisionSide vision_load(const io::Checkpoint& ckpt) {
  const std::string config_path = ckpt.directory + "/config.json";
  const io::HfConfig hf = io::hf_config_read(config_path);
  const std::string tower = io::json_string(hf.raw, "vision_tower", config_path).value_or("");
  if (tower == "dcformer") return VisionSide(std::shared_ptr<VisionSideImpl>(med3dvlm_vision_load(ckpt).ptr()));
  if (hf.model_type == "vlm_qwen") {
    fail("{}: vision_tower '{}' is not supported for Med3DVLM (model_type vlm_qwen; supported: dcformer)", config_path, tower);
  }
  if (tower.empty()) fail("{}: no 'vision_tower': this checkpoint has no vision side (supported towers: vit3d, dcformer)", config_path);
  return VisionSide(std::shared_ptr<VisionSideImpl>(lamed_vision_load(ckpt).ptr()));  // vit3d; LamedConfig refuses anything else
}

}  // namespace m3d::models
