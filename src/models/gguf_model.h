// A causal LM from one GGUF file (llama.cpp's format): the llama-family decoder the
// metadata describes (io::gguf_hf_config), its tensors renamed to the HF keys with
// Q/K's rotary row permutation undone. Block-quantized weights of Linear layers and
// the embedding stay in their blocks, memory-mapped (Q/K: a permuted copy), and run in
// the quantized kernels (models/quant_linear.h); plain tensors load as `dtype`.
#pragma once

#include <c10/core/ScalarType.h>

#include <string>

#include "io/checkpoint.h"
#include "models/causal_lm.h"

namespace m3d::models {

struct GgufLoadOptions {
  c10::ScalarType dtype = c10::kFloat;  // plain (F32/F16/BF16) tensors and dequantized ones
  // false: every block-quantized tensor is dequantized into a `dtype` weight (the
  // reference the quantized kernels are checked against; also what types without a
  // kernel get).
  bool keep_quantized = true;
};

// m3d quantize's checkpoints (io::Checkpoint::blocks): every block-quantized tensor
// whose key starts with `prefix` goes into the Linear / Embedding owning that weight
// (memory-mapped), before io::state_dict_load loads the rest. Throws naming the key
// when its owner is no such layer or the type has no kernel.
void attach_quantized(torch::nn::Module& root, const io::Checkpoint& checkpoint, const std::string& prefix = "");

// True when `path` is a regular file that starts with the GGUF magic.
bool is_gguf_model(const std::string& path);
// Every tensor is used and every parameter set (tied lm_head excepted); throws naming
// the file and tensor otherwise, or for an architecture m3d does not build.
LoadedModel model_load_gguf(const std::string& path, const GgufLoadOptions& options = {});

}  // namespace m3d::models
