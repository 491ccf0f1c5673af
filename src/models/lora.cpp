// LoRA (see lora.h). peft names in-memory adapter weights
// "<module>.lora_A.default.weight" and drops the adapter name when saving; ours
// are registered as "<module>.lora_A.weight", the saved form.
#include "models/lora.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/tensor.h"
#include "io/tensor_record.h"
#include "m3d/error.h"
#include "models/layers.h"

namespace m3d::models {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

bool peft_matches(const std::string& name, const std::string& target) {
  return name == target ||
         (name.size() > target.size() && name.compare(name.size() - target.size(), target.size(), target) == 0 && name[name.size() - target.size() - 1] == '.');
}

std::vector<std::pair<std::string, LinearImpl*>> linears(torch::nn::Module& model) {
  std::vector<std::pair<std::string, LinearImpl*>> out;
  for (const auto& item : model.named_modules("", false)) {
    auto* linear = dynamic_cast<LinearImpl*>(item.value().get());
    const std::string& name = item.key();
    // An adapter's own A and B are Linears too; they are never targets.
    if (linear == nullptr || name.find(".lora_A") != std::string::npos || name.find(".lora_B") != std::string::npos) continue;
    out.emplace_back(name, linear);
  }
  return out;
}

}  // namespace

const std::vector<std::string>& lora_excluded_keywords() {
  static const std::vector<std::string> keywords = {"vision_tower", "mm_projector", "embed_tokens", "lm_head", "seg_projector", "seg_module"};
  return keywords;
}

// Typed reads (io/json_util.h): a value of the wrong type is an error naming the file and key.
LoraConfig LoraConfig::from_peft_json(const json& c, const std::string& where) {
  if (!c.is_object()) fail("{}: expected a JSON object", where);
  const std::string peft_type = io::json_string(c, "peft_type", where).value_or("LORA");
  if (peft_type != "LORA") fail("{}: peft_type '{}' is not supported (only LORA)", where, peft_type);
  const std::string bias = io::json_string(c, "bias", where).value_or("none");
  if (bias != "none") fail("{}: LoRA bias '{}' is not supported (only \"none\", as M3D trains)", where, bias);
  for (const char* unsupported : {"use_dora", "use_rslora", "fan_in_fan_out"}) {
    if (io::json_bool(c, unsupported, where).value_or(false)) fail("{}: \"{}\": true is not supported", where, unsupported);
  }
  for (const char* unsupported : {"rank_pattern", "alpha_pattern"}) {
    if (c.contains(unsupported) && c[unsupported].is_object() && !c[unsupported].empty()) fail("{}: \"{}\" is not supported", where, unsupported);
  }
  LoraConfig config;
  config.r = io::json_int(c, "r", where).value_or(config.r);
  config.alpha = io::json_number(c, "lora_alpha", where).value_or(config.alpha);
  config.dropout = io::json_number(c, "lora_dropout", where).value_or(config.dropout);
  if (config.r < 1) fail("{}: r must be at least 1, not {}", where, config.r);
  if (!(config.dropout >= 0 && config.dropout < 1)) fail("{}: lora_dropout must be in [0, 1), not {}", where, config.dropout);
  if (c.contains("target_modules") && c["target_modules"].is_string()) {
    fail("{}: target_modules as a regular expression is not supported; list the module names", where);
  }
  if (c.contains("target_modules") && !c["target_modules"].is_null()) config.target_modules = io::json_string_list(c, "target_modules", where);
  return config;
}

json LoraConfig::to_peft_json(const std::vector<std::string>& targets) const {
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", r},
          {"lora_alpha", alpha},
          {"lora_dropout", dropout},
          {"target_modules", targets},
          {"bias", "none"},
          {"fan_in_fan_out", false},
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"use_rslora", false},
          {"use_dora", false},
          {"modules_to_save", nullptr},
          {"base_model_name_or_path", ""},
          {"rank_pattern", json::object()},
          {"alpha_pattern", json::object()}};
}

std::vector<std::string> lora_targets(torch::nn::Module& model, const LoraConfig& config) {
  std::vector<std::string> out;
  for (const auto& [name, linear] : linears(model)) {
    bool selected;
    if (config.target_modules.empty()) {
      const auto& excluded = lora_excluded_keywords();
      selected = std::none_of(excluded.begin(), excluded.end(), [&](const std::string& k) { return name.find(k) != std::string::npos; });
    } else {
      selected = std::any_of(config.target_modules.begin(), config.target_modules.end(), [&](const std::string& t) { return peft_matches(name, t); });
    }
    if (selected) out.push_back(name);
  }
  return out;
}

std::vector<std::string> lora_apply(torch::nn::Module& model, const LoraConfig& config) {
  const auto targets = lora_targets(model, config);
  if (targets.empty()) fail("LoRA: no Linear layer matches the target modules");
  const std::set<std::string> chosen(targets.begin(), targets.end());
  torch::NoGradGuard no_grad;
  for (const auto& [name, linear] : linears(model)) {
    if (chosen.count(name) == 0) continue;
    linear->add_lora(config.r, config.alpha, config.dropout);
    // nn.init.kaiming_uniform_(a=sqrt(5)): bound = 1 / sqrt(fan_in); B = 0.
    const double bound = 1.0 / std::sqrt(static_cast<double>(linear->weight.size(1)));
    linear->lora_A()->weight.uniform_(-bound, bound);
    linear->lora_B()->weight.zero_();
  }
  return targets;
}

LoraConfig lora_load_adapter(torch::nn::Module& model, const std::string& dir) {
  const std::string config_path = dir + "/adapter_config.json";
  if (!fs::exists(config_path)) fail("{}: not a LoRA adapter directory (no adapter_config.json)", dir);
  LoraConfig config = LoraConfig::from_peft_json(io::json_read_file(config_path), config_path);
  std::string weights = dir + "/adapter_model.safetensors";
  if (!fs::exists(weights)) weights = dir + "/adapter_model.bin";
  if (!fs::exists(weights)) fail("{}: no adapter_model.safetensors or adapter_model.bin", dir);
  const io::Checkpoint checkpoint = io::checkpoint_open(weights);
  lora_apply(model, config);
  std::map<std::string, torch::Tensor> params;
  for (const auto& item : model.named_parameters()) {
    if (item.key().find(".lora_") != std::string::npos) params[item.key()] = item.value();
  }
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& [key, record] : checkpoint.tensors) {
    std::string name = key;
    if (name.rfind(kPeftPrefix, 0) == 0) name = name.substr(std::string(kPeftPrefix).size());
    auto it = params.find(name);
    if (it == params.end()) fail("{}: '{}' is not an adapter weight of this model", weights, key);
    const torch::Tensor value = io::tensor_from_record(record);
    if (value.sizes() != it->second.sizes()) {
      fail("{}: '{}' has shape {}, the model's adapter has {}", weights, key, fmt::join(value.sizes(), "x"), fmt::join(it->second.sizes(), "x"));
    }
    it->second.copy_(value);
    loaded.insert(name);
  }
  for (const auto& [name, p] : params) {
    if (loaded.count(name) == 0) fail("{}: adapter weight '{}' is missing", weights, name);
  }
  return config;
}

void lora_save_adapter(torch::nn::Module& model, const LoraConfig& config, const std::string& dir) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::vector<std::string> targets;
  for (const auto& [name, linear] : linears(model)) {
    if (!linear->has_lora()) continue;
    targets.push_back(name);
    tensors.emplace_back(kPeftPrefix + name + ".lora_A.weight", linear->lora_A()->weight.detach());
    tensors.emplace_back(kPeftPrefix + name + ".lora_B.weight", linear->lora_B()->weight.detach());
  }
  if (targets.empty()) fail("LoRA: the model has no adapters to save");
  fs::create_directories(dir);
  io::safetensors_save(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  io::write_file_atomic(dir + "/adapter_config.json", config.to_peft_json(targets).dump(2) + "\n");
}

size_t lora_merge(torch::nn::Module& model) {
  size_t merged = 0;
  for (const auto& [name, linear] : linears(model)) {
    if (linear->has_lora()) linear->merge_lora(), ++merged;
  }
  return merged;
}

}  // namespace m3d::models
