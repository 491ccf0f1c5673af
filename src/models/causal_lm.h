// A causal LM as HF nests it: `model` (a decoder, possibly with vision modules,
// as in LaMed) and `lm_head` (absent when tied). The architecture registry builds
// one from a checkpoint directory.
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

namespace m3d::models {

// LamedPhi3Model / LamedLlamaModel: the decoder plus vision_tower and mm_projector.
class LamedModelImpl : public DecoderModelImpl {
 public:
  LamedModelImpl(const DecoderConfig& decoder, const LamedConfig& lamed, const Vit3dConfig& vit);
  torch::Tensor encode_images(const torch::Tensor& images);  // (B, 1, D, H, W) -> (B, proj_out_num, D_llm)
  const LamedConfig& lamed_config() const { return lamed_; }

  Vit3dTower vision_tower{nullptr};
  Projector mm_projector{nullptr};

 private:
  LamedConfig lamed_;
};

class CausalLmImpl : public torch::nn::Module {
 public:
  CausalLmImpl(std::shared_ptr<DecoderModelImpl> model, bool tie_word_embeddings);
  torch::Tensor logits(const torch::Tensor& hidden) const;  // (B, L, D) -> (B, L, V)
  // Token embeddings; with `images`, LaMed's positional splice (lamed_arch.py
  // prepare_inputs_for_multimodal): rows 1..N of every sequence become the N image
  // embeddings, row 0 keeps its own. The <im_patch> ids are never looked at.
  torch::Tensor embed(const torch::Tensor& input_ids, const torch::Tensor& images = {}) const;
  LamedModelImpl* lamed() const;  // null when the model has no vision side

  std::shared_ptr<DecoderModelImpl> model;
  Linear lm_head{nullptr};
};
TORCH_MODULE(CausalLm);

struct LoadedModel {
  std::string architecture;
  io::HfConfig config;
  CausalLm lm{nullptr};
  std::vector<std::string> ignored;  // checkpoint keys not loaded (e.g. the seg module, until supported)
};

// Builds the architecture of `config` with default-initialized weights. With a
// checkpoint, dims the official code does not take from config (the ViT's) come
// from its tensor shapes; without one, from config.
CausalLm model_build(const io::HfConfig& config, const std::string& where, const io::Checkpoint* checkpoint = nullptr);

// Builds the architecture named in `dir`/config.json and loads its weights
// strictly, converting floating weights to `dtype` and moving to `device`.
LoadedModel model_load(const std::string& dir, c10::ScalarType dtype = torch::kFloat, c10::Device device = torch::kCPU);

// Architectures model_load accepts, for messages and docs.
std::vector<std::string> model_architectures();

}  // namespace m3d::models
