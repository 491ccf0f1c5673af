// What `m3d inspect` reports about a checkpoint: architecture, parameter count
// and bytes per top-level module, dtypes, and the config's main keys.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/gguf.h"

namespace m3d::io {

struct ModuleSummary {
  std::string name;  // e.g. "model.vision_tower", "lm_head"
  int64_t parameters = 0;  // elements
  uint64_t bytes = 0;
  size_t tensors = 0;
  std::map<std::string, size_t> dtypes;  // tensors per dtype
};

struct CheckpointSummary {
  std::string path;
  std::string format;  // "safetensors" | "torch"
  std::vector<std::string> files;
  std::string architecture;  // "" when there is no config.json
  nlohmann::ordered_json config;  // the main config keys present
  std::map<std::string, std::string> metadata;
  int64_t parameters = 0;
  uint64_t bytes = 0;
  std::vector<ModuleSummary> modules;
  std::map<std::string, size_t> dtypes;
  std::map<std::string, uint64_t> dtype_bytes;  // GGUF only: bytes per block type
  struct Tensor {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
  };
  std::vector<Tensor> tensors;  // sorted by name
};

// The top-level module a key belongs to: HF wraps the base model in `model.`, so
// "model.vision_tower.x.y" -> "model.vision_tower", "lm_head.weight" -> "lm_head".
std::string module_of(const std::string& key);

// Summarizes the checkpoint and the config.json beside it, when there is one.
CheckpointSummary checkpoint_summarize(const Checkpoint& checkpoint);
// The same for a GGUF file: general.architecture, the config its llama.* keys
// stand for (llama family), every metadata key shortened, tensors by GGUF name
// with their block types (parameters are elements, bytes as stored).
CheckpointSummary gguf_summarize(const GgufFile& gguf);

std::string summary_text(const CheckpointSummary& summary, bool list_tensors);
nlohmann::ordered_json summary_json(const CheckpointSummary& summary, bool list_tensors);

}  // namespace m3d::io
