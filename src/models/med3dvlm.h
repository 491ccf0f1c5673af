// Med3DVLM: the multimodal wrapper around a Qwen2.5 decoder (vlm_arch.py): its
// config keys, the vision side (DCFormer tower with feature selection + the mixer
// mm_projector), which `m3d encode` runs on its own, and VLMQwenModel, the decoder
// with that vision side, which the architecture registry (causal_lm.h) builds.
#pragma once

#include <torch/nn/module.h>

#include <array>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/hf_config.h"
#include "models/dcformer.h"
#include "models/llama.h"
#include "models/mixer_projector.h"
#include "models/vision.h"

namespace m3d::models {

// Med3DVLM keys of config.json (vlm_arch.py initialize_vision_modules,
// train_vlm.py ModelArguments); the defaults are the released ones.
struct Med3dvlmConfig {
  std::string vision_tower = "dcformer";
  int64_t vision_select_layer = -2;  // hidden_states[-2:] = [s3, s4]
  std::string vision_select_feature = "cls_patch";
  std::string mm_projector_type = "mixer";
  MixerConfig projector;  // low/high_input_size, low/high_output_size, mm_mlp_depth, hidden_size
  int64_t proj_out_num = 256;
  // The official tower is always decomp_small and ignores config (input_size only
  // feeds unused bookkeeping); checkpoints give their dims by shapes. The test-only
  // keys dcformer_num_blocks / dcformer_channels (../shared/fixtures/README.md) give
  // them without one.
  DcformerConfig dcformer;

  static Med3dvlmConfig from_hf(const io::HfConfig& config, const std::string& where);
};

// VisionTower (src/model/encoder/builder.py) around DCFormer: the stage outputs
// picked by vision_select_layer (< 0: the last |n|; 0: all five).
class DcformerTowerImpl : public torch::nn::Module {
 public:
  DcformerTowerImpl(const DcformerConfig& dcformer, int64_t select_layer);
  // (B, C, D, H, W) -> the selected stages' tokens, each (B, N_s, C_s)
  std::vector<torch::Tensor> forward(const torch::Tensor& image);
  int64_t num_selected() const;

  Dcformer vision_tower{nullptr};

 private:
  int64_t select_layer_;
};
TORCH_MODULE(DcformerTower);

// Vision side of a Med3DVLM checkpoint as VLMQwenModel nests it: model.vision_tower, model.mm_projector.
class Med3dvlmVisionImpl : public VisionSideImpl {
 public:
  Med3dvlmVisionImpl(const Med3dvlmConfig& config, const DcformerConfig& dcformer);
  // (B, in_channels, 128, 256, 256): the mixer's token counts need the trained grid
  void check_image(const torch::Tensor& image) const override;
  std::vector<torch::Tensor> features(const torch::Tensor& image) override;  // [low (B, 256, 384), high (B, 32, 768)]
  std::vector<std::string> feature_names() const override;
  torch::Tensor project(const std::vector<torch::Tensor>& features) override;  // (B, proj_out_num, hidden_size)
  const Med3dvlmConfig& config() const { return config_; }
  const DcformerConfig& dcformer_config() const { return vision_tower->vision_tower->config(); }

  DcformerTower vision_tower{nullptr};
  MixerLowHighHybridMlp mm_projector{nullptr};

 private:
  Med3dvlmConfig config_;
};
TORCH_MODULE(Med3dvlmVision);

// VLMQwenModel (src/model/llm/qwen.py): the Qwen2 decoder plus one Med3dvlmVision,
// whose two children are registered here as model.vision_tower and model.mm_projector
// (the checkpoint's keys). Prompts are "<im_patch>" x proj_out_num + text, with no
// BOS and no chat template (spec §4.4); CausalLmImpl::embed splices the image in.
class Med3dvlmModelImpl : public MultimodalModelImpl {
 public:
  Med3dvlmModelImpl(const DecoderConfig& decoder, const Med3dvlmConfig& config, const DcformerConfig& dcformer);
  int64_t proj_out_num() const override { return vision->config().proj_out_num; }
  std::array<int64_t, 3> image_grid() const override { return vision->dcformer_config().image_size; }
  VisionSideImpl& vision_side() const override { return *vision.ptr(); }
  int64_t image_channels() const override { return vision->dcformer_config().in_channels; }
  torch::nn::Module& clip_vision_tower() const override { return *vision_tower->vision_tower.ptr(); }
  const Med3dvlmConfig& med3dvlm_config() const { return vision->config(); }

  Med3dvlmVision vision{nullptr};
  DcformerTower vision_tower{nullptr};  // vision->vision_tower
  MixerLowHighHybridMlp mm_projector{nullptr};  // vision->mm_projector
};

// The VLMQwenModel of a config.json (model_type vlm_qwen); DCFormer dims from the
// checkpoint's shapes when one is given, else from config (decomp_small unless the
// test-only dcformer_* keys say otherwise).
std::shared_ptr<Med3dvlmModelImpl> med3dvlm_model_build(const io::HfConfig& config, const DecoderConfig& decoder, const std::string& where,
                                                        const io::Checkpoint* checkpoint);

// Builds the vision side from a checkpoint directory's config.json and weights
// (DCFormer dims from the tensor shapes). In eval mode, f32.
Med3dvlmVision med3dvlm_vision_load(const io::Checkpoint& checkpoint);

}  // namespace m3d::models
