// SegVol (Du et al. 2023, arXiv:2311.13385) as M3D-LaMed uses it behind its [SEG]
// token: the segmentation module (MONAI ViT image encoder, SAM-style 3D prompt
// encoder and two-way mask decoder) and LaMed's seg_projector, which turns the
// LLM's hidden state into the 768-d "text" prompt. Module names are the official
// attribute names, so checkpoint keys load as they are.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/hf_config.h"
#include "models/layers.h"
#include "models/vit3d.h"

namespace m3d::models {

// Where a LaMed checkpoint keeps the [SEG] path's tensors.
inline constexpr const char* kSegModulePrefix = "model.seg_module.";
inline constexpr const char* kSegProjectorPrefix = "model.seg_projector.";

// The seg module's hyper-parameters. M3D's builder (segment_anything_volumetric/
// build_sam.py) fixes all but image_size and patch_size; the defaults are those.
// The seg_* keys are test-only config.json keys (../shared/fixtures/README.md,
// segvol_small) for smaller modules; with a checkpoint, widths and depths come
// from the tensor shapes (segvol_config_from_checkpoint), heads from here.
struct SegvolConfig {
  std::string segmentation_module = "segvol";
  std::array<int64_t, 3> image_size = {32, 256, 256};  // D, H, W: the only input size the decoder accepts
  std::array<int64_t, 3> patch_size = {4, 16, 16};
  int64_t embed_dim = 768;  // seg_embed_dim: ViT width = prompt / decoder width
  int64_t vit_mlp_dim = 3072;  // seg_vit_mlp_dim
  int64_t vit_num_layers = 12;  // seg_vit_num_layers
  int64_t vit_num_heads = 12;  // seg_vit_num_heads
  int64_t twoway_depth = 2;
  int64_t twoway_num_heads = 8;
  int64_t twoway_mlp_dim = 2048;  // seg_twoway_mlp_dim
  int64_t attention_downsample_rate = 2;  // cross attentions run at embed_dim / 2
  int64_t num_mask_tokens = 4;  // num_multimask_outputs 3 + 1
  int64_t iou_head_depth = 3;
  int64_t iou_head_hidden_dim = 256;  // seg_iou_head_hidden_dim
  int64_t mask_in_chans = 16;  // the unused 2D mask_downscaling branch
  int64_t text_dim = 768;  // mask_decoder.py hard-wires nn.Linear(768, 96) for the text
  int64_t hidden_size = 0;  // the LLM's width: seg_projector's input
  int64_t mm_hidden_size = 768;  // seg_projector's output (= the text prompt width)

  std::array<int64_t, 3> grid() const;  // image embedding size (D, H, W) / patch
  Vit3dConfig vit3d() const;  // the image encoder: MONAI ViT without cls token

  // Fails when config.json has no "segmentation_module" (a checkpoint without the
  // [SEG] head) or names one other than segvol.
  static SegvolConfig from_hf(const io::HfConfig& config, const std::string& where);
};

// Whether config.json names a segmentation module (LamedMetaModel builds one when
// `segmentation_module` is set and not null).
bool segvol_configured(const io::HfConfig& config);

// Widths and depths from the tensors under `seg_prefix` (e.g. "model.seg_module.")
// and `projector_prefix` ("model.seg_projector."); heads and sizes from `config`.
SegvolConfig segvol_config_from_checkpoint(const io::Checkpoint& checkpoint, const std::string& seg_prefix, const std::string& projector_prefix,
                                           const SegvolConfig& config);

// Prompts for one forward; each is optional (undefined tensor). Coordinates are voxel
// indices of the (D, H, W) model input, as SegVol's generate_box / select_points make them.
struct SegPrompts {
  torch::Tensor points;  // (B, P, 3) float (d, h, w)
  torch::Tensor point_labels;  // (B, P): 1 positive, 0 negative, -1 padding
  torch::Tensor boxes;  // (B, 6) float: min corner (d, h, w), max corner (d, h, w)
  torch::Tensor text;  // (B, 768): in M3D the projected [SEG] state
};

// SAM's random Fourier position encoding in 3D (PositionEmbeddingRandom).
class PositionEmbeddingRandomImpl : public torch::nn::Module {
 public:
  explicit PositionEmbeddingRandomImpl(int64_t num_pos_feats);
  // coords (..., 3) in [0, 1] -> (..., 2 * num_pos_feats): cat(sin, cos)
  torch::Tensor encode(const torch::Tensor& coords) const;
  // The grid's cell centres -> (E, h, w, d)
  torch::Tensor dense(const std::array<int64_t, 3>& size) const;
  // Voxel coordinates (B, P, 3) of an image of `image_size` -> (B, P, E)
  torch::Tensor with_coords(const torch::Tensor& coords, const std::array<int64_t, 3>& image_size) const;

  torch::Tensor positional_encoding_gaussian_matrix;  // (3, E / 2), a buffer from the checkpoint
};
TORCH_MODULE(PositionEmbeddingRandom);

// A layer whose weights the checkpoint holds but no forward uses.
class UnusedWeightsImpl : public torch::nn::Module {
 public:
  UnusedWeightsImpl(const std::vector<int64_t>& weight_shape, int64_t bias_size);
  torch::Tensor weight, bias;
};
TORCH_MODULE(UnusedWeights);

class PromptEncoderImpl : public torch::nn::Module {
 public:
  explicit PromptEncoderImpl(const SegvolConfig& config);
  // -> (sparse (B, T, E), dense (B, E, h, w, d)); T = points (+1 pad without boxes) + 2 box corners + text.
  std::pair<torch::Tensor, torch::Tensor> forward(const SegPrompts& prompts) const;
  torch::Tensor dense_pe() const;  // (1, E, h, w, d)

  PositionEmbeddingRandom pe_layer{nullptr};
  torch::nn::ModuleList point_embeddings{nullptr};  // 0 negative, 1 positive, 2 / 3 box corners
  Embedding not_a_point_embed{nullptr}, no_mask_embed{nullptr};
  // SAM's 2D mask path (Conv2d, LayerNorm2d, ...): loaded, never run (M3D passes no masks,
  // and its 2D convolutions could not take a 3D mask).
  std::shared_ptr<torch::nn::Module> mask_downscaling;

 private:
  torch::Tensor embed_points(const torch::Tensor& points, const torch::Tensor& labels, bool pad) const;
  torch::Tensor embed_boxes(const torch::Tensor& boxes) const;
  SegvolConfig config_;
};
TORCH_MODULE(PromptEncoder);

// SAM's Attention: q/k/v projected to embed_dim / downsample_rate, split into heads.
class DecoderAttentionImpl : public torch::nn::Module {
 public:
  DecoderAttentionImpl(int64_t embedding_dim, int64_t num_heads, int64_t downsample_rate);
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t num_heads_;
};
TORCH_MODULE(DecoderAttention);

// SAM's MLPBlock: lin1 -> ReLU -> lin2.
class DecoderMlpBlockImpl : public torch::nn::Module {
 public:
  DecoderMlpBlockImpl(int64_t embedding_dim, int64_t mlp_dim);
  torch::Tensor forward(const torch::Tensor& x);
  Linear lin1{nullptr}, lin2{nullptr};
};
TORCH_MODULE(DecoderMlpBlock);

class TwoWayAttentionBlockImpl : public torch::nn::Module {
 public:
  TwoWayAttentionBlockImpl(const SegvolConfig& config, bool skip_first_layer_pe);
  // queries (B, T, E), keys (B, N, E) -> updated (queries, keys)
  std::pair<torch::Tensor, torch::Tensor> forward(torch::Tensor queries, torch::Tensor keys, const torch::Tensor& query_pe, const torch::Tensor& key_pe);

  DecoderAttention self_attn{nullptr}, cross_attn_token_to_image{nullptr}, cross_attn_image_to_token{nullptr};
  LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr}, norm4{nullptr};
  DecoderMlpBlock mlp{nullptr};

 private:
  bool skip_first_layer_pe_;
};
TORCH_MODULE(TwoWayAttentionBlock);

class TwoWayTransformerImpl : public torch::nn::Module {
 public:
  explicit TwoWayTransformerImpl(const SegvolConfig& config);
  // image (B, E, h, w, d), image_pe (B, E, h, w, d), tokens (B, T, E) -> (queries (B, T, E), keys (B, N, E))
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& image, const torch::Tensor& image_pe, const torch::Tensor& tokens);

  torch::nn::ModuleList layers{nullptr};
  DecoderAttention final_attn_token_to_image{nullptr};
  LayerNorm norm_final_attn{nullptr};
};
TORCH_MODULE(TwoWayTransformer);

// MaskFormer's MLP as SAM has it: `layers`, ReLU between them.
class DecoderMlpImpl : public torch::nn::Module {
 public:
  DecoderMlpImpl(int64_t input_dim, int64_t hidden_dim, int64_t output_dim, int64_t num_layers);
  torch::Tensor forward(torch::Tensor x) const;
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(DecoderMlp);

// nn.ConvTranspose3d with kernel = stride (the decoder's 2x upsampling); weight (in, out, k, k, k).
class ConvTranspose3dImpl : public torch::nn::Module {
 public:
  ConvTranspose3dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;

 private:
  int64_t kernel_;
};
TORCH_MODULE(ConvTranspose3d);

// nn.LayerNorm over several trailing dimensions with per-element affine weights.
class LayerNormNdImpl : public torch::nn::Module {
 public:
  LayerNormNdImpl(std::vector<int64_t> shape, double eps);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;

 private:
  std::vector<int64_t> shape_;
  double eps_;
};
TORCH_MODULE(LayerNormNd);

class MaskDecoderImpl : public torch::nn::Module {
 public:
  explicit MaskDecoderImpl(const SegvolConfig& config);
  // image (B or 1, E, h, w, d), text (B, 768) or undefined, image_pe (1, E, h, w, d),
  // sparse (B, T, E), dense (B, E, h, w, d) -> mask token 0's logits (B, 1, 4h, 4w, 4d).
  torch::Tensor forward(const torch::Tensor& image, const torch::Tensor& text, const torch::Tensor& image_pe, const torch::Tensor& sparse,
                        const torch::Tensor& dense);

  TwoWayTransformer transformer{nullptr};
  Embedding iou_token{nullptr}, mask_tokens{nullptr};
  // output_upscaling: 0 ConvT3d, 1 LayerNormNd, 2 GELU, 3 ConvT3d, 4 GELU
  ConvTranspose3d upscale1{nullptr}, upscale2{nullptr};
  LayerNormNd upscale_norm{nullptr};
  torch::nn::ModuleList output_hypernetworks_mlps{nullptr};
  DecoderMlp iou_prediction_head{nullptr};  // loaded; its output is discarded by every caller
  Linear txt_align_upscaled_embedding{nullptr};
};
TORCH_MODULE(MaskDecoder);

// M3D's SegVol (segmentation_module/segvol.py): no CLIP text tower, the prompt is given.
class SegvolImpl : public torch::nn::Module {
 public:
  explicit SegvolImpl(const SegvolConfig& config);
  // image (B, 1, D, H, W) of exactly config.image_size -> logits (B, 1, D, H, W); mask = logits > 0.
  torch::Tensor forward(const torch::Tensor& image, const SegPrompts& prompts);
  const SegvolConfig& config() const { return config_; }

  Vit3d image_encoder{nullptr};
  PromptEncoder prompt_encoder{nullptr};
  MaskDecoder mask_decoder{nullptr};

 private:
  SegvolConfig config_;
};
TORCH_MODULE(Segvol);

// LaMed's seg_projector: Linear(h, h) -> ReLU -> Linear(h, 768) -> Dropout(0.1); keys 0.* and 2.*.
class SegProjectorImpl : public torch::nn::Module {
 public:
  SegProjectorImpl(int64_t hidden_size, int64_t out_size);
  // (B, h) -> (B, 768)
  torch::Tensor forward(const torch::Tensor& hidden);
  Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SegProjector);

// The [SEG] path of a LaMed checkpoint as the CausalLM nests it: model.seg_module, model.seg_projector.
class LamedSegImpl : public torch::nn::Module {
 public:
  explicit LamedSegImpl(const SegvolConfig& config);
  // image (B, 1, D, H, W), hidden (B, h): the LLM's state before [SEG] -> logits (B, 1, D, H, W).
  // `spatial` adds point / box prompts (its text is ignored) beside the projected state, as
  // SegVol's forward_decoder combines them; an undefined `seg_hidden` leaves them alone.
  torch::Tensor forward(const torch::Tensor& image, const torch::Tensor& seg_hidden, const SegPrompts& spatial = {});

  Segvol seg_module{nullptr};
  SegProjector seg_projector{nullptr};
};
TORCH_MODULE(LamedSeg);

// Builds the [SEG] path from a checkpoint directory's config.json and the tensors under
// model.seg_module. / model.seg_projector. (other keys, e.g. the LLM's, are not read).
LamedSeg lamed_seg_load(const io::Checkpoint& checkpoint);

}  // namespace m3d::models
