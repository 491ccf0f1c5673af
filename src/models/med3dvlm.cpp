// Med3DVLM (Xin et al. 2025, arXiv:2503.20047), mirthAI/Med3DVLM src/model/vlm_arch.py
// src/model/encoder/builder.py (VisionTower) and src/model/llm/qwen.py (VLMQwenModel:
// Qwen2 from models/llama.h; the image splice is LaMed's, CausalLmImpl::embed). The
// alternative "vit3d" tower and the projectors other than "mixer" are in no released
// model and are refused.
// Letters: B batch, N tokens, C channels, H LLM width.
#include "models/med3dvlm.h"

#include <fmt/ranges.h>

#include "io/json_util.h"
#include "io/state_dict.h"
#include "m3d/error.h"

namespace m3d::models {
namespace {

// A list of `count` positive integers (any non-zero length when count is 0).
std::vector<int64_t> positive_ints(const nlohmann::json& j, const char* key, std::vector<int64_t> fallback, size_t count, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  std::vector<int64_t> out = io::json_int_list(j, key, where);
  if ((count > 0 && out.size() != count) || out.empty()) {
    fail("{}: key '{}': expected a list of {} positive integers, got [{}]", where, key, count > 0 ? std::to_string(count) : "one or more",
         fmt::join(out, ", "));
  }
  for (int64_t v : out) {
    if (v <= 0) fail("{}: key '{}': expected positive integers, got [{}]", where, key, fmt::join(out, ", "));
  }
  return out;
}

template <size_t N>
std::array<int64_t, N> positive_ints(const nlohmann::json& j, const char* key, const std::array<int64_t, N>& fallback, const std::string& where) {
  const std::vector<int64_t> v = positive_ints(j, key, {fallback.begin(), fallback.end()}, N, where);
  std::array<int64_t, N> out{};
  std::copy(v.begin(), v.end(), out.begin());
  return out;
}

// The mixer's token and channel counts must be what the last two stages make at the trained grid.
void check_projector_fits(const Med3dvlmConfig& c, const DcformerConfig& dcformer) {
  const auto& p = c.projector;
  for (const auto& [stage, size, key] : {std::tuple{3, p.low_input_size, "low_input_size"}, std::tuple{4, p.high_input_size, "high_input_size"}}) {
    if (size[0] != dcformer.stage_tokens(stage) || size[1] != dcformer.channels[stage]) {
      fail("med3dvlm: {} [{}, {}] does not fit the DCFormer, whose stage s{} gives {} tokens x {} channels at {}", key, size[0], size[1], stage,
           dcformer.stage_tokens(stage), dcformer.channels[stage], fmt::join(dcformer.image_size, "x"));
    }
  }
}

}  // namespace

Med3dvlmConfig Med3dvlmConfig::from_hf(const io::HfConfig& hf, const std::string& where) {
  const auto& j = hf.raw;
  Med3dvlmConfig c;
  c.vision_tower = io::json_string(j, "vision_tower", where).value_or(c.vision_tower);
  c.vision_select_layer = io::json_int(j, "vision_select_layer", where).value_or(c.vision_select_layer);
  c.vision_select_feature = io::json_string(j, "vision_select_feature", where).value_or(c.vision_select_feature);
  c.mm_projector_type = io::json_string(j, "mm_projector_type", where).value_or(c.mm_projector_type);
  if (c.vision_tower != "dcformer") {
    fail("{}: vision_tower '{}' is not supported for Med3DVLM (supported: dcformer; its 'vit3d' is in no released model)", where, c.vision_tower);
  }
  if (c.mm_projector_type != "mixer") {
    fail("{}: mm_projector_type '{}' does not fit the DCFormer tower here (supported: mixer, the released projector)", where, c.mm_projector_type);
  }
  // builder.py: "patch" slices the Python list of stage outputs (it cannot run).
  if (c.vision_select_feature != "cls_patch") {
    fail("{}: vision_select_feature '{}' is not supported with the DCFormer tower (supported: cls_patch)", where, c.vision_select_feature);
  }
  // The mixer unpacks exactly two feature maps (low, high): hidden_states[-2:].
  if (c.vision_select_layer != -2) {
    fail("{}: vision_select_layer {} does not fit the mixer projector, which takes the last two DCFormer stages (supported: -2)", where, c.vision_select_layer);
  }
  auto& p = c.projector;
  p.low_input_size = positive_ints(j, "low_input_size", p.low_input_size, where);
  p.high_input_size = positive_ints(j, "high_input_size", p.high_input_size, where);
  p.low_output_size = positive_ints(j, "low_output_size", p.low_output_size, 0, where);
  p.high_output_size = positive_ints(j, "high_output_size", p.high_output_size, 0, where);
  p.mm_mlp_depth = io::json_int(j, "mm_mlp_depth", where).value_or(p.mm_mlp_depth);
  if (!hf.hidden_size) fail("{}: 'hidden_size' is required", where);
  p.hidden_size = *hf.hidden_size;
  if (p.low_output_size.size() != p.high_output_size.size()) {
    fail("{}: low_output_size [{}] and high_output_size [{}] must have the same length (one entry per mixer layer)", where, fmt::join(p.low_output_size, ", "),
         fmt::join(p.high_output_size, ", "));
  }
  c.proj_out_num = io::json_int(j, "proj_out_num", where).value_or(p.proj_out_num());
  if (c.proj_out_num != p.proj_out_num()) {
    fail("{}: proj_out_num {} does not match the mixer projector, which makes {} + {} tokens", where, c.proj_out_num, p.low_output_size.back(),
         p.high_output_size.back());
  }
  c.dcformer.num_blocks = positive_ints(j, "dcformer_num_blocks", c.dcformer.num_blocks, where);
  c.dcformer.channels = positive_ints(j, "dcformer_channels", c.dcformer.channels, where);
  c.dcformer.in_channels = io::json_int(j, "image_channel", where).value_or(c.dcformer.in_channels);
  // The official VLM trains on 128 x 256 x 256 and ignores `input_size` (bookkeeping only; the
  // shared fixture even writes it in another order), so another grid is m3d's own key, in
  // LaMed's (D, H, W) order.
  c.dcformer.image_size = positive_ints(j, "image_size", c.dcformer.image_size, where);
  return c;
}

DcformerTowerImpl::DcformerTowerImpl(const DcformerConfig& dcformer, int64_t select_layer) : select_layer_(select_layer) {
  if (select_layer > 0 || select_layer < -5) {
    fail("dcformer tower: vision_select_layer {} is not supported (supported: -5 .. -1 for the last stages, 0 for all five)", select_layer);
  }
  vision_tower = register_module("vision_tower", Dcformer(dcformer));
}

int64_t DcformerTowerImpl::num_selected() const { return select_layer_ == 0 ? 5 : -select_layer_; }

std::vector<torch::Tensor> DcformerTowerImpl::forward(const torch::Tensor& image) {
  std::vector<torch::Tensor> hidden_states = vision_tower->forward(image);
  return {hidden_states.end() - num_selected(), hidden_states.end()};  // hidden_states[select_layer:]
}

Med3dvlmVisionImpl::Med3dvlmVisionImpl(const Med3dvlmConfig& c, const DcformerConfig& dcformer) : config_(c) {
  check_projector_fits(c, dcformer);
  vision_tower = register_module("vision_tower", DcformerTower(dcformer, c.vision_select_layer));
  mm_projector = register_module("mm_projector", MixerLowHighHybridMlp(c.projector));
}

void Med3dvlmVisionImpl::check_image(const torch::Tensor& image) const {
  vision_check_image(image, dcformer_config().in_channels, dcformer_config().image_size, "med3dvlm");
}

std::vector<torch::Tensor> Med3dvlmVisionImpl::features(const torch::Tensor& image) {
  check_image(image);
  return vision_tower->forward(image);  // [low (B, N_low, C3), high (B, N_high, C4)]
}

std::vector<std::string> Med3dvlmVisionImpl::feature_names() const { return {"low_features", "high_features"}; }

torch::Tensor Med3dvlmVisionImpl::project(const std::vector<torch::Tensor>& features) {
  if (features.size() != 2) fail("med3dvlm: the mixer projector takes 2 feature maps (low, high), got {}", features.size());
  return mm_projector->forward(features[0], features[1]);  // (B, proj_out_num, H)
}

Med3dvlmModelImpl::Med3dvlmModelImpl(const DecoderConfig& decoder, const Med3dvlmConfig& c, const DcformerConfig& dcformer) : MultimodalModelImpl(decoder) {
  vision = Med3dvlmVision(c, dcformer);
  vision_tower = register_module("vision_tower", vision->vision_tower);
  mm_projector = register_module("mm_projector", vision->mm_projector);
}

std::shared_ptr<Med3dvlmModelImpl> med3dvlm_model_build(const io::HfConfig& hf, const DecoderConfig& decoder, const std::string& where,
                                                        const io::Checkpoint* ckpt) {
  const Med3dvlmConfig config = Med3dvlmConfig::from_hf(hf, where);
  const DcformerConfig dcformer = ckpt ? dcformer_config_from_checkpoint(*ckpt, "model.vision_tower.vision_tower.", config.dcformer) : config.dcformer;
  try {
    return std::make_shared<Med3dvlmModelImpl>(decoder, config, dcformer);
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());  // the config's sizes do not fit the tower
  }
}

Med3dvlmVision med3dvlm_vision_load(const io::Checkpoint& ckpt) {
  const std::string config_path = ckpt.directory + "/config.json";
  const Med3dvlmConfig config = Med3dvlmConfig::from_hf(io::hf_config_read(config_path), config_path);
  const DcformerConfig dcformer = dcformer_config_from_checkpoint(ckpt, "model.vision_tower.vision_tower.", config.dcformer);
  Med3dvlmVision vision{nullptr};
  try {
    vision = Med3dvlmVision(config, dcformer);
  } catch (const Error& e) {
    fail("{}: {}", config_path, e.what());  // the config's sizes do not fit the checkpoint's tower
  }
  vision->eval();
  // Only the vision side is built here; the LLM keys stay unread.
  for (auto [module, prefix] :
       {std::pair<torch::nn::Module*, const char*>{vision->vision_tower.get(), "model.vision_tower."}, {vision->mm_projector.get(), "model.mm_projector."}}) {
    io::LoadOptions options;
    options.prefix = prefix;
    options.whole_checkpoint = false;
    io::state_dict_load(*module, ckpt, options);
  }
  return vision;
}

}  // namespace m3d::models
