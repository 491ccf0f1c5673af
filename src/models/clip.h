// Contrastive image-report models: M3D-CLIP (M3D LaMed/src/model/CLIP.py: ViT3D
// with a cls token + BERT + two linear projections + a logit scale), its
// sigmoid-loss variant as Med3DVLM trains it (t_prime and bias parameters,
// m3d_lamed_spec.md §9, med3dvlm_spec.md §2), and Med3DVLM's DCFormer_SigLIP
// (DEC_CLIP, Med3DVLM src/model/CLIP.py: DCFormer + DistilBERT, same heads). The
// losses are functions of the (gathered) features so that data-parallel training
// can call them on all ranks'.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>

#include <string>

#include "io/checkpoint.h"
#include "models/bert.h"
#include "models/dcformer.h"
#include "models/layers.h"
#include "models/vit3d.h"

namespace m3d::models {

// config.json of M3D-CLIP (M3DCLIPConfig, model_type "m3d_clip") plus m3d's keys:
//  - loss_type "nce" (M3D-CLIP, logit_scale) | "sigmoid" (SigLIP: t_prime, bias);
//  - the text tower's BERT config: `text_config` (an HF BertConfig dict) when present,
//    else bert-base-uncased's (what language_model_name_or_path names in the
//    release), with widths, depth and vocabulary taken from the checkpoint's shapes.
// DEC_CLIPConfig (model_type "dec_clip"): vision_encoder "dcformer" (decomp_small, dims
// from the checkpoint; m3d's keys dcformer_num_blocks / dcformer_channels for others),
// the input grid as `input_size` (H, W, D), the text tower's config as m3d's
// `text_config` (DistilBERT as released; BERT / RoBERTa towers are m3d's extension:
// the official code reads the tower's width as DistilBERT's config.dim), else ClinicalBERT's.
struct ClipConfig {
  std::string model_type = "m3d_clip";  // "m3d_clip" | "dec_clip"
  Vit3dConfig vision;  // m3d_clip; classification (cls token) always on
  DcformerConfig dcformer;  // dec_clip
  BertConfig text;
  int64_t hidden_size = 768;  // projection output (= the ViT width in M3D)
  std::string loss_type = "nce";
  bool gather_loss = true, local_loss = false;
  double logit_scale_init = 2.659260036932778;  // ln(1/0.07); config key logit_scale_init (m3d's)
  double t_prime_init = 2.659260036932778, bias_init = 0.0;
  int64_t max_text_len = 512;  // what train_CLIP.py tokenizes to (config's max_text_len is unused there)
  std::string language_model_name_or_path = "bert-base-uncased";  // where the text tower came from (informative)

  // The image input's channels and (D, H, W) grid, of whichever vision tower.
  int64_t image_channels() const;
  std::array<int64_t, 3> image_size() const;

  static ClipConfig from_json(const nlohmann::json& config, const std::string& where);
  nlohmann::json to_json() const;
};

class ClipModelImpl : public torch::nn::Module {
 public:
  explicit ClipModelImpl(const ClipConfig& config);
  // (B, 1, D, H, W) -> (B, E): normalize(mm_vision_proj(ViT(image) token 0)); DEC_CLIP:
  // of the mean of DCFormer's last-stage tokens.
  torch::Tensor encode_image(const torch::Tensor& image);
  // (B, L) ids and mask -> (B, E): normalize(mm_language_proj(BERT(ids) token 0)) (DistilBERT for DEC_CLIP).
  torch::Tensor encode_text(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  // The contrastive loss of this model's loss_type on features of the whole
  // (global) batch, pairs on the diagonal.
  torch::Tensor loss(const torch::Tensor& image_features, const torch::Tensor& text_features) const;
  const ClipConfig& config() const { return config_; }

  Vit3d vision_encoder{nullptr};  // m3d_clip
  Dcformer dcformer_encoder{nullptr};  // dec_clip, registered as vision_encoder
  BertModel language_encoder{nullptr};
  Linear mm_vision_proj{nullptr}, mm_language_proj{nullptr};
  torch::Tensor logit_scale, t_prime, bias;

 private:
  ClipConfig config_;
};
TORCH_MODULE(ClipModel);

// M3D-CLIP's loss: logits = s * I T^T with s NOT exponentiated; (CE(logits, arange)
// + CE(logits^T, arange)) / 2.
torch::Tensor clip_loss(const torch::Tensor& image_features, const torch::Tensor& text_features, const torch::Tensor& logit_scale);
// Med3DVLM's sigmoid loss as executed under torch.distributed (its training setup):
// logits = exp(t') I T^T + b, symmetrised (L + L^T) / 2; labels 2 Eye - 1;
// -sum(logsigmoid(labels * logits)) / N.
torch::Tensor siglip_loss(const torch::Tensor& image_features, const torch::Tensor& text_features, const torch::Tensor& t_prime, const torch::Tensor& bias);

// Builds from `dir`/config.json and loads the weights strictly (dims from shapes).
ClipModel clip_load(const std::string& dir, c10::ScalarType dtype = torch::kFloat, c10::Device device = torch::kCPU);
// The config a checkpoint implies: config.json, with dims from the tensors.
ClipConfig clip_config_from_checkpoint(const io::Checkpoint& checkpoint);

}  // namespace m3d::models
