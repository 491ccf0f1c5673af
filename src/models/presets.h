// Named configs of real model shapes, for `m3d init-random` (benchmarks at
// real size without downloading weights) and tests.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace m3d::models {

// config.json contents for `name`; throws listing the presets for an unknown one.
nlohmann::json preset_config(const std::string& name);
std::vector<std::string> preset_names();

// Writes `dir`/config.json and a model.safetensors of random weights in `dtype`
// ("f32" | "bf16" | "f16") for the config's architecture, seeded.
void init_random_checkpoint(const nlohmann::json& config, const std::string& dir, const std::string& dtype, uint64_t seed);

}  // namespace m3d::models
