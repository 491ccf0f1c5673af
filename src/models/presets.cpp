// Presets follow the released configs: M3D-LaMed-Phi-3-4B and -Llama-2-7B
// (m3d_lamed_spec.md §4.2, §4.5; vision 768/3072/12/12, spp projector), the bare
// decoders they are built on, and DCFormer_SigLIP (med3dvlm_spec.md §2: decomp_small
// on 128x256x256, ClinicalBERT's DistilBERT, projections to 768).
#include "models/presets.h"

#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/clip.h"

namespace m3d::models {
namespace {

using json = nlohmann::json;

json lamed_keys(int64_t hidden) {
  return {{"image_channel", 1},         {"image_size", {32, 256, 256}},
          {"patch_size", {4, 16, 16}},  {"vision_tower", "vit3d"},
          {"vision_select_layer", -1},  {"vision_select_feature", "patch"},
          {"mm_projector_type", "spp"}, {"proj_layer_type", "mlp"},
          {"proj_layer_num", 2},        {"proj_pooling_type", "spatial"},
          {"proj_pooling_size", 2},     {"mm_hidden_size", 768},
          {"proj_out_num", 256},        {"hidden_size", hidden}};
}

json phi3_mini() {
  return {{"architectures", {"Phi3ForCausalLM"}},
          {"model_type", "phi3"},
          {"hidden_size", 3072},
          {"intermediate_size", 8192},
          {"num_hidden_layers", 32},
          {"num_attention_heads", 32},
          {"num_key_value_heads", 32},
          {"vocab_size", 32064},
          {"max_position_embeddings", 4096},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 32000},
          {"pad_token_id", 32000},
          {"hidden_act", "silu"},
          {"torch_dtype", "bfloat16"}};
}

json llama2_7b() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 4096},
          {"intermediate_size", 11008},
          {"num_hidden_layers", 32},
          {"num_attention_heads", 32},
          {"num_key_value_heads", 32},
          {"vocab_size", 32000},
          {"max_position_embeddings", 4096},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"hidden_act", "silu"},
          {"torch_dtype", "float16"}};
}

// DEC_CLIP as train_clip.py builds it for scripts/train_clip.sh, through m3d's writer.
json dcformer_siglip() {
  const json released = {{"model_type", "dec_clip"},     {"language_model_name_or_path", "medicalai/ClinicalBERT"},
                         {"vision_encoder", "dcformer"}, {"input_size", {256, 256, 128}},
                         {"hidden_size", 768},           {"loss_type", "sigmoid"}};
  return ClipConfig::from_json(released, "preset dcformer-siglip").to_json();
}

json with(json base, const json& changes) {
  base.update(changes);
  return base;
}

const std::vector<std::pair<std::string, json>>& presets() {
  static const std::vector<std::pair<std::string, json>> kPresets = {
      {"phi3-mini-4k", phi3_mini()},
      {"llama2-7b", llama2_7b()},
      {"lamed-phi3-4b", with(with(phi3_mini(), lamed_keys(3072)), {{"architectures", {"LamedPhi3ForCausalLM"}},
                                                                   {"model_type", "lamed_phi3"},
                                                                   {"vocab_size", 32015},
                                                                   {"seg_token_id", 32014},
                                                                   {"torch_dtype", "float32"}})},
      {"lamed-llama2-7b", with(with(llama2_7b(), lamed_keys(4096)), {{"architectures", {"LamedLlamaForCausalLM"}},
                                                                     {"model_type", "lamed_llama"},
                                                                     {"vocab_size", 32004},
                                                                     {"seg_token_id", 32003},
                                                                     {"torch_dtype", "float32"}})},
      // A few-MB LaMed for smoke tests: real vision geometry, tiny widths.
      {"lamed-tiny", with(with(phi3_mini(), lamed_keys(96)), {{"architectures", {"LamedPhi3ForCausalLM"}},
                                                              {"model_type", "lamed_phi3"},
                                                              {"intermediate_size", 160},
                                                              {"num_hidden_layers", 2},
                                                              {"num_attention_heads", 4},
                                                              {"num_key_value_heads", 4},
                                                              {"vocab_size", 32015},
                                                              {"mm_hidden_size", 64},
                                                              {"vision_hidden_size", 64},
                                                              {"vision_mlp_dim", 128},
                                                              {"vision_num_layers", 2},
                                                              {"vision_num_heads", 4},
                                                              {"torch_dtype", "float32"}})},
      {"dcformer-siglip", dcformer_siglip()},
  };
  return kPresets;
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, config] : presets()) names.push_back(name);
  return names;
}

json preset_config(const std::string& name) {
  for (const auto& [preset, config] : presets()) {
    if (preset == name) return config;
  }
  fail("unknown preset '{}' (available: {})", name, fmt::join(preset_names(), ", "));
}

void init_random_checkpoint(const json& config, const std::string& dir, const std::string& dtype, uint64_t seed) {
  std::filesystem::create_directories(dir);
  { io::write_file_atomic(dir + "/config.json", config.dump(2) + "\n"); }
  torch::manual_seed(seed);
  const c10::ScalarType type = dtype == "bf16" ? torch::kBFloat16 : dtype == "f16" ? torch::kHalf : torch::kFloat;
  const std::string model_type = config.value("model_type", std::string());
  std::shared_ptr<torch::nn::Module> model;
  {
    // Parameters are born uninitialised in the target dtype: a 7B model costs its weight bytes once.
    const DefaultDtypeGuard guard(type);
    if (model_type == "m3d_clip" || model_type == "dec_clip") {
      model = ClipModel(ClipConfig::from_json(config, dir + "/config.json")).ptr();
    } else {
      model = model_build(io::hf_config_read(dir + "/config.json"), dir + "/config.json").ptr();
    }
  }
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : model->named_parameters(true)) {
    const std::string& name = item.key();
    at::Tensor t = item.value();
    auto ends_with = [&](const char* suffix) {
      const size_t n = std::strlen(suffix);
      return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
    };
    if (ends_with(".bias")) {
      t.zero_();
    } else if (ends_with("norm.weight") || ends_with("norm1.weight") || ends_with("norm2.weight") || ends_with("LayerNorm.weight")) {
      t.normal_(1.0, 0.1);  // norms near identity, but not exactly, so they are exercised
    } else {
      t.normal_(0.0, 0.02);
    }
    tensors.emplace_back(name, t);
  }
  // BatchNorm statistics as constructed (mean 0, variance 1); BatchNorm scales near 1.
  for (const auto& item : model->named_modules()) {
    if (auto* norm = dynamic_cast<BatchNorm3dImpl*>(item.value().get())) norm->weight.normal_(1.0, 0.1);
  }
  for (const auto& item : model->named_buffers(true)) tensors.emplace_back(item.key(), item.value());
  io::safetensors_save(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace m3d::models
