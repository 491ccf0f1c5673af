// Vision-side dispatch: config.json's vision_tower picks the family.
#include "models/vision.h"

#include "io/hf_config.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "models/lamed.h"
#include "models/med3dvlm.h"

namespace m3d::models {

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
