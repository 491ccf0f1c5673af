// Strict loading of a checkpoint into a libtorch module whose registered names
// follow the official PyTorch attribute names (so HF keys match with no rename
// table). Every missing, unexpected, shape- or dtype-mismatched key is gathered
// into one error. Tensors are converted to the module's dtype and device one at a
// time from the mapped file, so an f32 checkpoint loads into a bf16 model without
// two full copies in memory.
#pragma once

#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace torch::nn {
class Module;
}

namespace m3d::io {

struct LoadOptions {
  // Checkpoint key prefix that corresponds to the module's root ("" = none),
  // e.g. "model.vision_tower.vision_tower." to load only the vision tower.
  std::string prefix;
  // Checkpoint keys (after `prefix`) starting with one of these are not loaded
  // and not reported as unexpected: the per-architecture ignore list.
  std::vector<std::string> ignore;
  // When false, keys outside `prefix` are not reported as unexpected.
  bool whole_checkpoint = true;
};

struct LoadReport {
  size_t loaded = 0;
  size_t zero_copy = 0;  // of those, used in place from the mapped file
  std::vector<std::string> ignored;  // checkpoint keys skipped by `ignore`
};

// Casts floating-point parameters and buffers to `type`, leaving integer buffers
// (num_batches_tracked) alone, as PyTorch's Module.to(dtype) does; libtorch's
// Module::to(dtype) would cast them all.
void module_cast_floating(torch::nn::Module& module, c10::ScalarType type);

LoadReport state_dict_load(torch::nn::Module& module, const Checkpoint& checkpoint, const LoadOptions& options = {});

// One part of a bigger model: the tensors under `prefix` (e.g. "model.seg_module.") load
// strictly into `module`; keys outside it are not read.
LoadReport state_dict_load_part(torch::nn::Module& module, const Checkpoint& checkpoint, const std::string& prefix);

}  // namespace m3d::io
