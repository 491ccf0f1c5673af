// m3d quantize: a checkpoint directory rewritten with its decoder's Linear weights in
// GGUF blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K). The output is a directory like the
// input (config.json, tokenizer and recipe files copied) whose weights are one
// model.gguf: every tensor under its HF name, quantized ones as blocks, the rest
// in their own dtype, so model_load maps it zero-copy (io/checkpoint.h).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/gguf_blocks.h"

namespace m3d::models {

struct QuantizeOptions {
  io::GgmlType type = io::GgmlType::Q8_0;
  // llama.cpp's Q4_K_M mixture on top of `type` Q4_K: the output matrix (lm_head) in Q6_K,
  // self_attn.v_proj and mlp.down_proj in Q6_K in the layers llama.cpp's use_more_bits
  // picks (the first and last eighth, every third between), Q4_K elsewhere.
  bool k_m_mixture = false;
  // Also the vision tower, projector and [SEG] module Linear weights (default: the LLM's only).
  bool everything = false;
};

struct QuantizeReport {
  int64_t quantized = 0, kept = 0;  // tensors
  uint64_t bytes_in = 0, bytes_out = 0;
  // Weights whose rows are no whole number of the type's blocks: a K type falls back
  // to the 32-element type of the same bits (Q4_K -> Q4_0, Q6_K -> Q8_0), else kept.
  std::vector<std::string> fallbacks;
  std::map<std::string, int64_t> by_type;  // quantized tensors per block type name
};

// The type named "q8_0", "Q4_K", ...; throws listing the choices.
io::GgmlType quantize_type_named(const std::string& name);
// Options for a --type name: a block type, or "q4_k_m" (Q4_K with the mixture above).
QuantizeOptions quantize_options_named(const std::string& name);
QuantizeReport quantize_checkpoint(const std::string& dir, const std::string& out_dir, const QuantizeOptions& options);

}  // namespace m3d::models
