// LoRA adapters on a model's Linear layers, as peft (0.8-0.11) builds, saves and
// merges them: adapters by module name, peft's adapter_config.json /
// adapter_model.safetensors (keys "base_model.model.<module>.lora_{A,B}.weight"),
// and merge_and_unload into the base weights.
#pragma once

#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace m3d::models {

struct LoraConfig {
  int64_t r = 16;
  double alpha = 32;
  double dropout = 0.05;
  // Module names, matched as peft does: equal to the name or its ending after a
  // '.'. Empty: M3D's rule (every Linear outside lora_excluded_keywords()).
  std::vector<std::string> target_modules;

  static LoraConfig from_peft_json(const nlohmann::json& config, const std::string& where);
  // adapter_config.json as peft 0.11 writes it (LORA, CAUSAL_LM, bias "none").
  nlohmann::json to_peft_json(const std::vector<std::string>& targets) const;
};

// M3D train.py's find_all_linear_names: modules whose names contain one of these
// are never adapted (and are trained in full in stage 2).
const std::vector<std::string>& lora_excluded_keywords();

// The Linear modules `config` selects, by name.
std::vector<std::string> lora_targets(torch::nn::Module& model, const LoraConfig& config);

// Adds adapters to the targets, initialised as peft does (A Kaiming-uniform with
// a = sqrt(5), B zero, so the model's output is unchanged). Returns the targets;
// fails when there are none.
std::vector<std::string> lora_apply(torch::nn::Module& model, const LoraConfig& config);

// Loads a peft adapter directory (adapter_config.json and adapter_model.safetensors
// or adapter_model.bin) onto `model`: adds the adapters, then loads their weights
// strictly (every adapter weight present, no unknown key).
LoraConfig lora_load_adapter(torch::nn::Module& model, const std::string& dir);

// Writes the adapters in peft's layout.
void lora_save_adapter(torch::nn::Module& model, const LoraConfig& config, const std::string& dir);

// Merges every adapter into its base weight and removes it; returns how many.
size_t lora_merge(torch::nn::Module& model);

// peft's prefix for adapter keys in adapter_model files.
inline constexpr const char* kPeftPrefix = "base_model.model.";

}  // namespace m3d::models
