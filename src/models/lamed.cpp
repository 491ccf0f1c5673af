// M3D-LaMed (Bai et al. 2024, arXiv:2404.00578), BAAI-DCAI/M3D
// LaMed/src/model/lamed_arch.py, multimodal_encoder/vit.py (ViT3DTower) and
// language_model/lamed_phi3.py, lamed_llama.py (the decoder from models/llama.h; the
// image splice is CausalLmImpl::embed). The [SEG] path is models/segvol.h (LamedSeg).
// Letters: B batch, N tokens, E vision width, H LLM width.
#include "models/lamed.h"

#include "io/json_util.h"
#include "io/state_dict.h"
#include "m3d/error.h"

namespace m3d::models {
namespace {

std::array<int64_t, 3> int3(const nlohmann::json& raw, const char* key, std::array<int64_t, 3> fallback, const std::string& where) {
  auto it = raw.find(key);
  if (it == raw.end() || it->is_null()) return fallback;
  if (!it->is_array() || it->size() != 3) fail("{}: key '{}': expected a list of 3 integers", where, key);
  std::array<int64_t, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    if (!(*it)[i].is_number_integer() || (*it)[i].get<int64_t>() <= 0) { fail("{}: key '{}': expected 3 positive integers", where, key); }
    out[i] = (*it)[i].get<int64_t>();
  }
  return out;
}

}  // namespace

LamedConfig LamedConfig::from_hf(const io::HfConfig& hf, const std::string& where) {
  const auto& j = hf.raw;
  LamedConfig c;
  c.image_channel = io::json_int(j, "image_channel", where).value_or(c.image_channel);
  c.image_size = int3(j, "image_size", c.image_size, where);
  c.patch_size = int3(j, "patch_size", c.patch_size, where);
  c.vision_tower = io::json_string(j, "vision_tower", where).value_or(c.vision_tower);
  c.vision_select_layer = io::json_int(j, "vision_select_layer", where).value_or(c.vision_select_layer);
  c.vision_select_feature = io::json_string(j, "vision_select_feature", where).value_or(c.vision_select_feature);
  c.vision_hidden_size = io::json_int(j, "vision_hidden_size", where).value_or(c.vision_hidden_size);
  c.vision_mlp_dim = io::json_int(j, "vision_mlp_dim", where).value_or(c.vision_mlp_dim);
  c.vision_num_layers = io::json_int(j, "vision_num_layers", where).value_or(c.vision_num_layers);
  c.vision_num_heads = io::json_int(j, "vision_num_heads", where).value_or(c.vision_num_heads);
  auto& p = c.projector;
  p.mm_projector_type = io::json_string(j, "mm_projector_type", where).value_or(p.mm_projector_type);
  p.proj_layer_type = io::json_string(j, "proj_layer_type", where).value_or(p.proj_layer_type);
  p.proj_layer_num = io::json_int(j, "proj_layer_num", where).value_or(p.proj_layer_num);
  p.proj_pooling_type = io::json_string(j, "proj_pooling_type", where).value_or(p.proj_pooling_type);
  p.proj_pooling_size = io::json_int(j, "proj_pooling_size", where).value_or(p.proj_pooling_size);
  p.mm_hidden_size = io::json_int(j, "mm_hidden_size", where).value_or(p.mm_hidden_size);
  if (!hf.hidden_size) fail("{}: 'hidden_size' is required", where);
  p.hidden_size = *hf.hidden_size;
  for (size_t i = 0; i < 3; ++i) {
    if (c.image_size[i] % c.patch_size[i] != 0) {
      fail("{}: image_size {} is not a multiple of patch_size {} along axis {}", where, c.image_size[i], c.patch_size[i], i);
    }
    p.grid[i] = c.image_size[i] / c.patch_size[i];
  }
  c.proj_out_num = io::json_int(j, "proj_out_num", where).value_or(p.proj_out_num());
  if (c.vision_tower != "vit3d") fail("{}: vision_tower '{}' is not supported (supported: vit3d)", where, c.vision_tower);
  if (c.vision_select_feature != "patch" && c.vision_select_feature != "cls_patch") {
    fail("{}: vision_select_feature '{}' is not supported (supported: patch, cls_patch)", where, c.vision_select_feature);
  }
  if (c.proj_out_num != p.proj_out_num()) {
    fail("{}: proj_out_num {} does not match the projector, which makes {} tokens", where, c.proj_out_num, p.proj_out_num());
  }
  return c;
}

Vit3dConfig LamedConfig::vit3d() const {
  Vit3dConfig vit;
  vit.in_channels = image_channel;
  vit.img_size = image_size;
  vit.patch_size = patch_size;
  vit.hidden_size = vision_hidden_size;
  vit.mlp_dim = vision_mlp_dim;
  vit.num_layers = vision_num_layers;
  vit.num_heads = vision_num_heads;
  return vit;
}

Vit3dConfig vit3d_config_from_checkpoint(const io::Checkpoint& ckpt, const std::string& prefix, const LamedConfig& c) {
  Vit3dConfig vit = c.vit3d();
  const auto& embed = ckpt.tensor(prefix + "patch_embedding.patch_embeddings.1.weight");
  if (embed.shape.size() != 2) fail("{}: {} is not a matrix", ckpt.path, embed.name);
  vit.hidden_size = embed.shape[0];
  vit.mlp_dim = ckpt.tensor(prefix + "blocks.0.mlp.linear1.weight").shape.at(0);
  vit.classification = ckpt.tensors.count(prefix + "cls_token") > 0;
  vit.num_layers = 0;
  while (ckpt.tensors.count(fmt::format("{}blocks.{}.norm1.weight", prefix, vit.num_layers))) ++vit.num_layers;
  return vit;
}

Vit3dTowerImpl::Vit3dTowerImpl(const Vit3dConfig& vit, int64_t select_layer, std::string select_feature)
    : select_layer_(select_layer), select_feature_(std::move(select_feature)) {
  vision_tower = register_module("vision_tower", Vit3d(vit));
  if (select_layer_ != -1) {
    // vit.py indexes hidden_states with a string for select_layer < -1: it cannot run.
    fail("vit3d tower: vision_select_layer {} is not supported (the official code only runs -1)", select_layer_);
  }
}

torch::Tensor Vit3dTowerImpl::forward(const torch::Tensor& image) {
  const torch::Tensor last = vision_tower->forward(image).last;  // (B, N+1, E) with cls first
  if (select_feature_ == "patch") return last.slice(1, 1);  // (B, N, E)
  return last;
}

LamedVisionImpl::LamedVisionImpl(const LamedConfig& c, const Vit3dConfig& vit) : config_(c) {
  vision_tower = register_module("vision_tower", Vit3dTower(vit, c.vision_select_layer, c.vision_select_feature));
  mm_projector = register_module("mm_projector", Projector(c.projector));
}

void LamedVisionImpl::check_image(const torch::Tensor& image) const { vision_check_image(image, config_.image_channel, config_.image_size, "m3d-lamed"); }

std::vector<torch::Tensor> LamedVisionImpl::features(const torch::Tensor& image) {
  check_image(image);
  return {vision_tower->forward(image)};  // [(B, N, E)]
}

std::vector<std::string> LamedVisionImpl::feature_names() const { return {"vision_features"}; }

torch::Tensor LamedVisionImpl::project(const std::vector<torch::Tensor>& features) {
  if (features.size() != 1) fail("lamed: the projector takes 1 feature map, got {}", features.size());
  return mm_projector->forward(features[0]);  // (B, proj_out_num, H)
}

LamedModelImpl::LamedModelImpl(const DecoderConfig& decoder, const LamedConfig& lamed, const Vit3dConfig& vit) : MultimodalModelImpl(decoder) {
  if (lamed.projector.hidden_size != decoder.hidden_size) {
    fail("lamed: projector output {} differs from the LLM hidden size {}", lamed.projector.hidden_size, decoder.hidden_size);
  }
  vision = LamedVision(lamed, vit);
  vision_tower = register_module("vision_tower", vision->vision_tower);
  mm_projector = register_module("mm_projector", vision->mm_projector);
}

LamedVision lamed_vision_load(const io::Checkpoint& ckpt) {
  const std::string config_path = ckpt.directory + "/config.json";
  const io::HfConfig hf = io::hf_config_read(config_path);
  const LamedConfig config = LamedConfig::from_hf(hf, config_path);
  const Vit3dConfig vit = vit3d_config_from_checkpoint(ckpt, "model.vision_tower.vision_tower.", config);
  LamedVision vision(config, vit);
  vision->eval();
  // Only the vision side is built here; the LLM and seg keys stay unread.
  io::state_dict_load_part(*vision->vision_tower, ckpt, "model.vision_tower.");
  io::state_dict_load_part(*vision->mm_projector, ckpt, "model.mm_projector.");
  return vision;
}

}  // namespace m3d::models
