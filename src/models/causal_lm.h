// A causal LM as HF nests it: `model` (a decoder, possibly with vision modules,
// as in LaMed) and `lm_head` (absent when tied). model_load builds one from a
// checkpoint directory whose architecture the registry (models/registry.h) knows.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/hf_config.h"
#include "models/lamed.h"
#include "models/llama.h"
#include "models/segvol.h"

namespace m3d::models {

class CausalLmImpl : public torch::nn::Module {
 public:
  CausalLmImpl(std::shared_ptr<DecoderModelImpl> model, bool tie_word_embeddings);
  torch::Tensor logits(const torch::Tensor& hidden) const;  // (B, L, D) -> (B, L, V)
  // Token embeddings; with `images`, LaMed's positional splice (lamed_arch.py
  // prepare_inputs_for_multimodal, copied by Med3DVLM's vlm_arch.py): rows 1..N of
  // every sequence become the N image embeddings, row 0 keeps its own. The
  // <im_patch> ids are never looked at; with Med3DVLM's BOS-less prompts this drops
  // the first text token (med3dvlm_spec.md §4.5).
  torch::Tensor embed(const torch::Tensor& input_ids, const torch::Tensor& images = {}) const;
  LamedModelImpl* lamed() const;  // null unless the model is a LaMed
  MultimodalModelImpl* multimodal() const;  // null when the model has no vision side

  std::shared_ptr<DecoderModelImpl> model;
  Linear lm_head{nullptr};
};
TORCH_MODULE(CausalLm);

struct LoadedModel {
  std::string architecture;
  io::HfConfig config;
  CausalLm lm{nullptr};
  // LaMed's [SEG] mask path (model.seg_module + model.seg_projector), when config.json
  // names a segmentation_module; null otherwise.
  LamedSeg seg{nullptr};
  std::vector<std::string> ignored;  // checkpoint keys not loaded (seg tensors of a config without segmentation_module)
};

// Builds the architecture of `config` (a registry row of kind Text, Lamed or
// Med3dvlm; CLIP is refused) with default-initialized weights. With a
// checkpoint, dims the official code does not take from config (the ViT's) come
// from its tensor shapes; without one, from config.
CausalLm model_build(const io::HfConfig& config, const std::string& where, const io::Checkpoint* checkpoint = nullptr);

// Builds the architecture named in `dir`/config.json and loads its weights
// strictly, converting floating weights to `dtype` and moving to `device`; with the
// [SEG] path (lamed_seg_load) when config.json has segmentation_module. A .gguf file
// in place of `dir` loads through model_load_gguf (CPU only).
LoadedModel model_load(const std::string& dir, c10::ScalarType dtype = torch::kFloat, c10::Device device = torch::kCPU);

}  // namespace m3d::models
