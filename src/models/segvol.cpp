// SegVol (Du et al. 2023, arXiv:2311.13385), the 3D SAM that M3D-LaMed drives with its
// [SEG] token: BAAI-DCAI/M3D LaMed/src/model/segmentation_module/ (segvol.py; in
// segment_anything_volumetric/modeling/ prompt_encoder.py, mask_decoder.py, and SegVol's
// transformer.py) with MONAI 1.3.0's ViT (classification=False) as image encoder, plus
// lamed_arch.py's seg_projector. Left out: SegVol's CLIP text tower (M3D drops it), mask
// prompts (a 2D SAM leftover M3D never calls), multimask output and zoom-in/zoom-out.
// Letters: B batch, D H W volume, h w d embedding grid, N image tokens, T prompt tokens,
// P points, E embed (768), I attention width, C upscaled channels (E / 8).
#include "models/segvol.h"

#include <torch/nn/functional/upsampling.h>

#include <cctype>
#include <cmath>
#include <tuple>

#include <fmt/ranges.h>

#include "io/json_util.h"
#include "io/state_dict.h"
#include "m3d/error.h"

namespace m3d::models {
namespace {

std::array<int64_t, 3> int3(const nlohmann::json& raw, const char* key, std::array<int64_t, 3> fallback, const std::string& where) {
  const std::vector<int64_t> values = io::json_int_list(raw, key, where);
  if (values.empty()) return fallback;
  if (values.size() != 3 || values[0] <= 0 || values[1] <= 0 || values[2] <= 0) {
    fail("{}: key '{}': expected 3 positive integers, got [{}]", where, key, fmt::join(values, ", "));
  }
  return {values[0], values[1], values[2]};
}

// The dtype activations take for weights of `weight`'s dtype on its device.
c10::ScalarType activation_type(const torch::Tensor& weight) { return compute_dtype(weight.scalar_type(), weight.device()); }

std::string shape_of(const torch::Tensor& t) { return t.defined() ? fmt::format("{}", fmt::join(t.sizes(), "x")) : "none"; }

}  // namespace

std::array<int64_t, 3> SegvolConfig::grid() const {
  std::array<int64_t, 3> g{};
  for (size_t i = 0; i < 3; ++i) g[i] = image_size[i] / patch_size[i];
  return g;
}

Vit3dConfig SegvolConfig::vit3d() const {
  Vit3dConfig vit;
  vit.in_channels = 1;
  vit.img_size = image_size;
  vit.patch_size = patch_size;
  vit.hidden_size = embed_dim;
  vit.mlp_dim = vit_mlp_dim;
  vit.num_layers = vit_num_layers;
  vit.num_heads = vit_num_heads;
  vit.classification = false;  // build_sam.py: no cls token
  return vit;
}

SegvolConfig SegvolConfig::from_hf(const io::HfConfig& hf, const std::string& where) {
  const auto& j = hf.raw;
  SegvolConfig c;
  const auto module = io::json_string(j, "segmentation_module", where);
  if (!module) {
    fail(
        "{}: 'segmentation_module' is not set: this checkpoint has no [SEG] segmentation head (supported: segvol, "
        "as in M3D-LaMed)",
        where);
  }
  std::string lower = *module;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  // builder.py accepts any name containing "segvol".
  if (lower.find("segvol") == std::string::npos) fail("{}: segmentation_module '{}' is not supported (supported: segvol)", where, *module);
  c.segmentation_module = *module;
  c.image_size = int3(j, "image_size", c.image_size, where);
  c.patch_size = int3(j, "patch_size", c.patch_size, where);
  c.embed_dim = io::json_int(j, "seg_embed_dim", where).value_or(c.embed_dim);
  c.vit_mlp_dim = io::json_int(j, "seg_vit_mlp_dim", where).value_or(c.vit_mlp_dim);
  c.vit_num_layers = io::json_int(j, "seg_vit_num_layers", where).value_or(c.vit_num_layers);
  c.vit_num_heads = io::json_int(j, "seg_vit_num_heads", where).value_or(c.vit_num_heads);
  c.twoway_mlp_dim = io::json_int(j, "seg_twoway_mlp_dim", where).value_or(c.twoway_mlp_dim);
  c.iou_head_hidden_dim = io::json_int(j, "seg_iou_head_hidden_dim", where).value_or(c.iou_head_hidden_dim);
  c.mm_hidden_size = io::json_int(j, "mm_hidden_size", where).value_or(c.mm_hidden_size);
  if (!hf.hidden_size) fail("{}: 'hidden_size' is required (the LLM width the seg_projector takes)", where);
  c.hidden_size = *hf.hidden_size;
  for (size_t i = 0; i < 3; ++i) {
    if (c.image_size[i] % c.patch_size[i] != 0) {
      fail("{}: image_size {} is not a multiple of patch_size {} along axis {}", where, c.image_size[i], c.patch_size[i], i);
    }
  }
  if (c.embed_dim % 8 != 0) { fail("{}: seg_embed_dim {} is not a multiple of 8 (the decoder upscales to E/4 and E/8 channels)", where, c.embed_dim); }
  return c;
}

bool segvol_configured(const io::HfConfig& hf) {
  const auto it = hf.raw.find("segmentation_module");
  return it != hf.raw.end() && !it->is_null();
}

SegvolConfig segvol_config_from_checkpoint(const io::Checkpoint& ckpt, const std::string& seg_prefix, const std::string& projector_prefix,
                                           const SegvolConfig& config) {
  auto has_prefix = [&](const std::string& prefix) {
    auto it = ckpt.tensors.lower_bound(prefix);
    return it != ckpt.tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0;
  };
  for (const auto& prefix : {seg_prefix, projector_prefix}) {
    if (!has_prefix(prefix)) {
      fail(
          "{}: no tensors under '{}': this checkpoint has no SegVol [SEG] head (config.json says segmentation_module "
          "'{}')",
          ckpt.path, prefix, config.segmentation_module);
    }
  }
  auto dim = [&](const std::string& key, size_t axis) {
    const auto& record = ckpt.tensor(key);
    if (record.shape.size() <= axis) {
      fail("{}: tensor '{}' has shape {}, expected at least {} dimensions", ckpt.path, key, io::shape_string(record.shape), axis + 1);
    }
    return record.shape[axis];
  };
  auto count = [&](const std::string& head, const std::string& tail) {  // layers head{0,1,...}tail
    int64_t n = 0;
    while (ckpt.tensors.count(head + std::to_string(n) + tail)) ++n;
    return n;
  };
  SegvolConfig c = config;
  const std::string vit = seg_prefix + "image_encoder.";
  const std::string dec = seg_prefix + "mask_decoder.";
  c.embed_dim = dim(vit + "patch_embedding.patch_embeddings.1.weight", 0);
  c.vit_num_layers = count(vit + "blocks.", ".norm1.weight");
  if (c.vit_num_layers > 0) c.vit_mlp_dim = dim(vit + "blocks.0.mlp.linear1.weight", 0);
  c.twoway_depth = count(dec + "transformer.layers.", ".norm1.weight");
  if (c.twoway_depth > 0) c.twoway_mlp_dim = dim(dec + "transformer.layers.0.mlp.lin1.weight", 0);
  c.num_mask_tokens = dim(dec + "mask_tokens.weight", 0);
  c.iou_head_depth = count(dec + "iou_prediction_head.layers.", ".weight");
  if (c.iou_head_depth > 1) c.iou_head_hidden_dim = dim(dec + "iou_prediction_head.layers.0.weight", 0);
  c.text_dim = dim(dec + "txt_align_upscaled_embedding.weight", 1);
  c.mask_in_chans = dim(seg_prefix + "prompt_encoder.mask_downscaling.3.weight", 0);
  c.hidden_size = dim(projector_prefix + "0.weight", 1);
  c.mm_hidden_size = dim(projector_prefix + "2.weight", 0);
  if (c.embed_dim % 8 != 0) fail("{}: SegVol width {} is not a multiple of 8", ckpt.path, c.embed_dim);
  return c;
}

// ---- prompt encoder ----

PositionEmbeddingRandomImpl::PositionEmbeddingRandomImpl(int64_t num_pos_feats) {
  // A buffer filled from randn at init in the official code: it must come from the checkpoint.
  positional_encoding_gaussian_matrix = register_buffer("positional_encoding_gaussian_matrix", torch::empty({3, num_pos_feats}));
}

torch::Tensor PositionEmbeddingRandomImpl::encode(const torch::Tensor& coords) const {
  auto c = 2 * coords.to(torch::kFloat) - 1;
  c = at::matmul(c, positional_encoding_gaussian_matrix.to(torch::kFloat));  // (..., E/2)
  c = 2 * M_PI * c;
  return at::cat({at::sin(c), at::cos(c)}, -1);  // (..., E): sin first, not interleaved
}

torch::Tensor PositionEmbeddingRandomImpl::dense(const std::array<int64_t, 3>& size) const {
  const auto [h, w, d] = size;
  const auto options = positional_encoding_gaussian_matrix.options().dtype(torch::kFloat);
  // Cell centres, each axis over its own length.
  const auto y = ((at::arange(h, options) + 0.5) / h).view({h, 1, 1}).expand({h, w, d});
  const auto x = ((at::arange(w, options) + 0.5) / w).view({1, w, 1}).expand({h, w, d});
  const auto z = ((at::arange(d, options) + 0.5) / d).view({1, 1, d}).expand({h, w, d});
  // Stacked (axis 1, axis 0, axis 2): SAM's (x, y) order carried to 3D (prompt_encoder.py).
  const auto pe = encode(at::stack({x, y, z}, -1));  // (h, w, d, E)
  return pe.permute({3, 0, 1, 2});  // (E, h, w, d)
}

torch::Tensor PositionEmbeddingRandomImpl::with_coords(const torch::Tensor& coords, const std::array<int64_t, 3>& image_size) const {
  // Index 0 (depth) is divided by image_size[1] and index 1 by image_size[0]: the
  // weights were trained with this swap (forward_with_coords), so it is kept.
  const auto scale = torch::tensor({static_cast<float>(image_size[1]), static_cast<float>(image_size[0]), static_cast<float>(image_size[2])},
                                   coords.options().dtype(torch::kFloat));
  return encode(coords.to(torch::kFloat) / scale);  // (B, P, E)
}

UnusedWeightsImpl::UnusedWeightsImpl(const std::vector<int64_t>& weight_shape, int64_t bias_size) {
  weight = register_parameter("weight", torch::empty(weight_shape));
  bias = register_parameter("bias", torch::empty({bias_size}));
}

PromptEncoderImpl::PromptEncoderImpl(const SegvolConfig& c) : config_(c) {
  const int64_t E = c.embed_dim, m = c.mask_in_chans;
  pe_layer = register_module("pe_layer", PositionEmbeddingRandom(E / 2));
  point_embeddings = register_module("point_embeddings", torch::nn::ModuleList());
  for (int i = 0; i < 4; ++i) point_embeddings->push_back(Embedding(1, E));
  not_a_point_embed = register_module("not_a_point_embed", Embedding(1, E));
  no_mask_embed = register_module("no_mask_embed", Embedding(1, E));
  mask_downscaling = register_module("mask_downscaling", std::make_shared<torch::nn::Module>());
  using Shape = std::vector<int64_t>;
  mask_downscaling->register_module("0", UnusedWeights(Shape{m / 4, 1, 2, 2}, m / 4));  // Conv2d
  mask_downscaling->register_module("1", UnusedWeights(Shape{m / 4}, m / 4));  // LayerNorm2d
  mask_downscaling->register_module("3", UnusedWeights(Shape{m, m / 4, 2, 2}, m));  // Conv2d
  mask_downscaling->register_module("4", UnusedWeights(Shape{m}, m));  // LayerNorm2d
  mask_downscaling->register_module("6", UnusedWeights(Shape{E, m, 1, 1}, E));  // Conv2d 1x1
}

torch::Tensor PromptEncoderImpl::dense_pe() const { return pe_layer->dense(config_.grid()).unsqueeze(0); }  // (1, E, h, w, d)

torch::Tensor PromptEncoderImpl::embed_points(const torch::Tensor& points, const torch::Tensor& labels, bool pad) const {
  auto coords = points.to(torch::kFloat) + 0.5;  // voxel centres
  auto l = labels.to(torch::kFloat);
  if (pad) {
    // One "not a point" is appended when no box follows (SAM's padding).
    coords = at::cat({coords, at::zeros({coords.size(0), 1, 3}, coords.options())}, 1);  // (B, P+1, 3)
    l = at::cat({l, at::full({l.size(0), 1}, -1.0, l.options())}, 1);  // (B, P+1)
  }
  auto e = pe_layer->with_coords(coords, config_.image_size);  // (B, P, E)
  l = l.unsqueeze(-1);  // (B, P, 1)
  auto point = [&](size_t i) { return point_embeddings->at<EmbeddingImpl>(i).weight.to(torch::kFloat); };  // (1, E)
  e = at::where(l == -1, not_a_point_embed->weight.to(torch::kFloat).expand_as(e), e);
  e = at::where(l == 0, e + point(0), e);
  e = at::where(l == 1, e + point(1), e);
  return e;
}

torch::Tensor PromptEncoderImpl::embed_boxes(const torch::Tensor& boxes) const {
  const auto coords = (boxes.to(torch::kFloat) + 0.5).reshape({-1, 2, 3});  // (B, 2, 3): the two corners
  const auto e = pe_layer->with_coords(coords, config_.image_size);  // (B, 2, E)
  const auto first = e.narrow(1, 0, 1) + point_embeddings->at<EmbeddingImpl>(2).weight.to(torch::kFloat);
  const auto second = e.narrow(1, 1, 1) + point_embeddings->at<EmbeddingImpl>(3).weight.to(torch::kFloat);
  return at::cat({first, second}, 1);  // (B, 2, E)
}

std::pair<torch::Tensor, torch::Tensor> PromptEncoderImpl::forward(const SegPrompts& p) const {
  const int64_t E = config_.embed_dim;
  const int64_t B = p.points.defined() ? p.points.size(0) : p.boxes.defined() ? p.boxes.size(0) : p.text.defined() ? p.text.size(0) : 1;
  if (p.points.defined() && (p.points.dim() != 3 || p.points.size(2) != 3 || !p.point_labels.defined() || p.point_labels.dim() != 2 ||
                             p.point_labels.size(0) != B || p.point_labels.size(1) != p.points.size(1))) {
    fail("segvol: expected points [B, P, 3] with labels [B, P], got points {} and labels {}", shape_of(p.points), shape_of(p.point_labels));
  }
  if (p.boxes.defined() && (p.boxes.dim() != 2 || p.boxes.size(0) != B || p.boxes.size(1) != 6)) {
    fail("segvol: expected boxes [{}, 6] (min d h w, max d h w), got {}", B, shape_of(p.boxes));
  }
  if (p.text.defined() && (p.text.dim() != 2 || p.text.size(0) != B || p.text.size(1) != E)) {
    fail("segvol: expected a text prompt [{}, {}], got {}", B, E, shape_of(p.text));
  }
  const auto type = activation_type(no_mask_embed->weight);
  std::vector<torch::Tensor> parts;
  if (p.points.defined()) parts.push_back(embed_points(p.points, p.point_labels, !p.boxes.defined()).to(type));
  if (p.boxes.defined()) parts.push_back(embed_boxes(p.boxes).to(type));
  if (p.text.defined()) parts.push_back(p.text.to(type).unsqueeze(1));  // (B, 1, E)
  const auto g = config_.grid();
  auto sparse = parts.empty() ? at::empty({B, 0, E}, no_mask_embed->weight.options().dtype(type)) : at::cat(parts, 1);  // (B, T, E)
  auto dense = no_mask_embed->weight.to(type).reshape({1, E, 1, 1, 1}).expand({B, E, g[0], g[1], g[2]});  // (B, E, h, w, d)
  return {sparse, dense};
}

// ---- two-way transformer ----

DecoderAttentionImpl::DecoderAttentionImpl(int64_t embedding_dim, int64_t num_heads, int64_t downsample_rate) : num_heads_(num_heads) {
  const int64_t internal = embedding_dim / downsample_rate;
  if (num_heads <= 0 || internal % num_heads != 0) fail("segvol: attention width {} is not divisible by {} heads", internal, num_heads);
  q_proj = register_module("q_proj", Linear(embedding_dim, internal));
  k_proj = register_module("k_proj", Linear(embedding_dim, internal));
  v_proj = register_module("v_proj", Linear(embedding_dim, internal));
  out_proj = register_module("out_proj", Linear(internal, embedding_dim));
}

torch::Tensor DecoderAttentionImpl::forward(const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& v_in) {
  auto heads = [&](const torch::Tensor& x) { return x.reshape({x.size(0), x.size(1), num_heads_, -1}).transpose(1, 2); };
  const auto q = heads(q_proj(q_in));  // (B, heads, Nq, I / heads)
  const auto k = heads(k_proj(k_in));  // (B, heads, Nk, I / heads)
  const auto v = heads(v_proj(v_in));
  auto attn = at::matmul(q, k.transpose(-2, -1));  // (B, heads, Nq, Nk)
  attn = at::softmax(attn / std::sqrt(static_cast<double>(q.size(-1))), -1);
  const auto out = at::matmul(attn, v).transpose(1, 2);  // (B, Nq, heads, I / heads)
  return out_proj(out.reshape({q_in.size(0), q_in.size(1), -1}));  // (B, Nq, E)
}

DecoderMlpBlockImpl::DecoderMlpBlockImpl(int64_t embedding_dim, int64_t mlp_dim) {
  lin1 = register_module("lin1", Linear(embedding_dim, mlp_dim));
  lin2 = register_module("lin2", Linear(mlp_dim, embedding_dim));
}

torch::Tensor DecoderMlpBlockImpl::forward(const torch::Tensor& x) { return lin2(at::relu(lin1(x))); }

TwoWayAttentionBlockImpl::TwoWayAttentionBlockImpl(const SegvolConfig& c, bool skip_first_layer_pe) : skip_first_layer_pe_(skip_first_layer_pe) {
  const int64_t E = c.embed_dim;
  self_attn = register_module("self_attn", DecoderAttention(E, c.twoway_num_heads, 1));
  norm1 = register_module("norm1", LayerNorm(E, 1e-5));
  cross_attn_token_to_image = register_module("cross_attn_token_to_image", DecoderAttention(E, c.twoway_num_heads, c.attention_downsample_rate));
  norm2 = register_module("norm2", LayerNorm(E, 1e-5));
  mlp = register_module("mlp", DecoderMlpBlock(E, c.twoway_mlp_dim));
  norm3 = register_module("norm3", LayerNorm(E, 1e-5));
  norm4 = register_module("norm4", LayerNorm(E, 1e-5));
  cross_attn_image_to_token = register_module("cross_attn_image_to_token", DecoderAttention(E, c.twoway_num_heads, c.attention_downsample_rate));
}

std::pair<torch::Tensor, torch::Tensor> TwoWayAttentionBlockImpl::forward(torch::Tensor queries, torch::Tensor keys, const torch::Tensor& query_pe,
                                                                          const torch::Tensor& key_pe) {
  if (skip_first_layer_pe_) {
    queries = self_attn(queries, queries, queries);  // layer 0 replaces the queries: no residual, no PE
  } else {
    const auto q = queries + query_pe;
    queries = queries + self_attn(q, q, queries);
  }
  queries = norm1(queries);
  auto q = queries + query_pe;
  auto k = keys + key_pe;
  queries = norm2(queries + cross_attn_token_to_image(q, k, keys));
  queries = norm3(queries + mlp(queries));
  q = queries + query_pe;
  k = keys + key_pe;
  keys = norm4(keys + cross_attn_image_to_token(k, q, queries));  // the image side queries the tokens
  return {queries, keys};
}

TwoWayTransformerImpl::TwoWayTransformerImpl(const SegvolConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.twoway_depth; ++i) layers->push_back(TwoWayAttentionBlock(c, i == 0));
  final_attn_token_to_image = register_module("final_attn_token_to_image", DecoderAttention(c.embed_dim, c.twoway_num_heads, c.attention_downsample_rate));
  norm_final_attn = register_module("norm_final_attn", LayerNorm(c.embed_dim, 1e-5));
}

std::pair<torch::Tensor, torch::Tensor> TwoWayTransformerImpl::forward(const torch::Tensor& image, const torch::Tensor& image_pe, const torch::Tensor& tokens) {
  const auto image_tokens = image.flatten(2).permute({0, 2, 1});  // (B, N, E), (h, w, d) row-major
  const auto key_pe = image_pe.flatten(2).permute({0, 2, 1});  // (B, N, E)
  torch::Tensor queries = tokens, keys = image_tokens;
  // The query PE of every layer is the original tokens (transformer.py).
  for (size_t i = 0; i < layers->size(); ++i) { std::tie(queries, keys) = layers->at<TwoWayAttentionBlockImpl>(i).forward(queries, keys, tokens, key_pe); }
  queries = queries + final_attn_token_to_image(queries + tokens, keys + key_pe, keys);
  return {norm_final_attn(queries), keys};  // (B, T, E), (B, N, E)
}

// ---- mask decoder ----

DecoderMlpImpl::DecoderMlpImpl(int64_t input_dim, int64_t hidden_dim, int64_t output_dim, int64_t num_layers) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) { layers->push_back(Linear(i == 0 ? input_dim : hidden_dim, i + 1 == num_layers ? output_dim : hidden_dim)); }
}

torch::Tensor DecoderMlpImpl::forward(torch::Tensor x) const {
  for (size_t i = 0; i < layers->size(); ++i) {
    x = layers->at<LinearImpl>(i).forward(x);
    if (i + 1 < layers->size()) x = at::relu(x);
  }
  return x;
}

ConvTranspose3dImpl::ConvTranspose3dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel) : kernel_(kernel) {
  weight = register_parameter("weight", torch::empty({in_channels, out_channels, kernel, kernel, kernel}));
  bias = register_parameter("bias", torch::empty({out_channels}));
}

torch::Tensor ConvTranspose3dImpl::forward(const torch::Tensor& x) const {
  // With stride = kernel the output blocks do not overlap: each input voxel's k^3 block is
  // one product with the weight. Written as that GEMM (libtorch 1.13's mkldnn route for a
  // bf16 conv_transpose3d treats it as a forward convolution and fails).
  const auto type = x.scalar_type();
  const int64_t B = x.size(0), D = x.size(2), H = x.size(3), W = x.size(4), k = kernel_;
  const int64_t out = weight.size(1);
  auto y = at::matmul(x.permute({0, 2, 3, 4, 1}), weight.to(type).reshape({weight.size(0), -1}));  // (B, D, H, W, out*k^3)
  y = y.view({B, D, H, W, out, k, k, k}).permute({0, 4, 1, 5, 2, 6, 3, 7});  // (B, out, D, k, H, k, W, k)
  return y.reshape({B, out, D * k, H * k, W * k}) + bias.to(type).view({1, out, 1, 1, 1});  // (B, out, k*D, k*H, k*W)
}

LayerNormNdImpl::LayerNormNdImpl(std::vector<int64_t> shape, double eps) : shape_(std::move(shape)), eps_(eps) {
  weight = register_parameter("weight", torch::empty(shape_));
  bias = register_parameter("bias", torch::empty(shape_));
}

torch::Tensor LayerNormNdImpl::forward(const torch::Tensor& x) const {
  const auto type = x.scalar_type();
  return at::layer_norm(x, shape_, weight.to(type), bias.to(type), eps_);
}

MaskDecoderImpl::MaskDecoderImpl(const SegvolConfig& c) {
  const int64_t E = c.embed_dim;
  const auto g = c.grid();
  transformer = register_module("transformer", TwoWayTransformer(c));
  iou_token = register_module("iou_token", Embedding(1, E));
  mask_tokens = register_module("mask_tokens", Embedding(c.num_mask_tokens, E));
  auto upscaling = register_module("output_upscaling", std::make_shared<torch::nn::Module>());
  upscale1 = upscaling->register_module("0", ConvTranspose3d(E, E / 4, 2));
  // nn.LayerNorm((E/4, 2h, 2w, 2d)): one mean and variance per sample over all of it,
  // per-voxel affine weights; this is why the decoder takes one input size only.
  upscale_norm = upscaling->register_module("1", LayerNormNd(std::vector<int64_t>{E / 4, 2 * g[0], 2 * g[1], 2 * g[2]}, 1e-5));
  upscale2 = upscaling->register_module("3", ConvTranspose3d(E / 4, E / 8, 2));
  output_hypernetworks_mlps = register_module("output_hypernetworks_mlps", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_mask_tokens; ++i) output_hypernetworks_mlps->push_back(DecoderMlp(E, E, E / 8, 3));
  iou_prediction_head = register_module("iou_prediction_head", DecoderMlp(E, c.iou_head_hidden_dim, c.num_mask_tokens, c.iou_head_depth));
  txt_align_upscaled_embedding = register_module("txt_align_upscaled_embedding", Linear(c.text_dim, E / 8));
}

torch::Tensor MaskDecoderImpl::forward(const torch::Tensor& image, const torch::Tensor& text, const torch::Tensor& image_pe, const torch::Tensor& sparse,
                                       const torch::Tensor& dense) {
  const int64_t B = sparse.size(0);
  const auto type = image.scalar_type();
  if (image.size(0) != B && image.size(0) != 1) fail("segvol: {} images for {} prompts", image.size(0), B);
  const auto output_tokens = at::cat({iou_token->weight, mask_tokens->weight}, 0).to(type);  // (1 + masks, E)
  const auto tokens = at::cat({output_tokens.unsqueeze(0).expand({B, -1, -1}), sparse}, 1);  // (B, T, E)
  const auto src = image.expand({B, -1, -1, -1, -1}) + dense;  // (B, E, h, w, d)
  const auto pos = image_pe.expand({B, -1, -1, -1, -1});  // (B, E, h, w, d)
  const auto [hs, keys] = transformer(src, pos, tokens);  // (B, T, E), (B, N, E)
  const int64_t E = src.size(1), h = src.size(2), w = src.size(3), d = src.size(4);
  auto up = keys.transpose(1, 2).reshape({B, E, h, w, d});  // (B, E, h, w, d)
  up = at::gelu(upscale_norm(upscale1(up)));  // (B, E/4, 2h, 2w, 2d)
  up = at::gelu(upscale2(up));  // (B, C, 4h, 4w, 4d)
  const int64_t C = up.size(1);
  const auto flat = up.reshape({B, C, -1});  // (B, C, 64hwd)
  // multimask_output=False keeps mask token 0 only (token 1 of hs, after the IoU token);
  // the other hypernetworks and the IoU head do not change it, so they are not run.
  const auto hyper = output_hypernetworks_mlps->at<DecoderMlpImpl>(0).forward(hs.select(1, 1));  // (B, C)
  auto masks = at::matmul(hyper.unsqueeze(1), flat);  // (B, 1, 64hwd)
  if (text.defined()) {
    // The text enters a second time: its 768 -> C projection dotted with every voxel's feature.
    const auto text_down = txt_align_upscaled_embedding(text.to(type)).unsqueeze(1);  // (B, 1, C)
    masks = masks + at::matmul(text_down, flat);  // (B, 1, 64hwd)
  }
  return masks.view({B, 1, 4 * h, 4 * w, 4 * d});  // (B, 1, 4h, 4w, 4d)
}

// ---- SegVol and the [SEG] path ----

SegvolImpl::SegvolImpl(const SegvolConfig& c) : config_(c) {
  image_encoder = register_module("image_encoder", Vit3d(c.vit3d()));
  prompt_encoder = register_module("prompt_encoder", PromptEncoder(c));
  mask_decoder = register_module("mask_decoder", MaskDecoder(c));
}

torch::Tensor SegvolImpl::forward(const torch::Tensor& image, const SegPrompts& prompts) {
  const auto& s = config_.image_size;
  if (image.dim() != 5 || image.size(1) != 1 || image.size(2) != s[0] || image.size(3) != s[1] || image.size(4) != s[2]) {
    fail("segvol: expected an image of shape [B, 1, {}, {}, {}] (the mask decoder takes this size only), got {}", s[0], s[1], s[2], shape_of(image));
  }
  const auto type = activation_type(image_encoder->norm->weight);
  const int64_t B = image.size(0), E = config_.embed_dim;
  const auto g = config_.grid();
  const auto tokens = image_encoder->forward(image.to(type)).last;  // (B, N, E)
  const auto embedding = tokens.transpose(1, 2).reshape({B, E, g[0], g[1], g[2]});  // (B, E, h, w, d)
  const auto [sparse, dense] = prompt_encoder->forward(prompts);  // (B, T, E), (B, E, h, w, d)
  const auto image_pe = prompt_encoder->dense_pe().to(type);  // (1, E, h, w, d)
  const auto low_res = mask_decoder->forward(embedding, prompts.text, image_pe, sparse, dense);  // (B, 1, 4h, 4w, 4d)
  namespace F = torch::nn::functional;
  return F::interpolate(
      low_res, F::InterpolateFuncOptions().size(std::vector<int64_t>{s[0], s[1], s[2]}).mode(torch::kTrilinear).align_corners(false));  // (B, 1, D, H, W)
}

SegProjectorImpl::SegProjectorImpl(int64_t hidden_size, int64_t out_size) {
  // nn.Sequential(Linear, ReLU, Linear, Dropout): the Linears are keys 0 and 2.
  fc1 = register_module("0", Linear(hidden_size, hidden_size));
  fc2 = register_module("2", Linear(hidden_size, out_size));
}

torch::Tensor SegProjectorImpl::forward(const torch::Tensor& hidden) {
  const auto x = fc2(at::relu(fc1(hidden)));  // (B, 768)
  return at::dropout(x, 0.1, is_training());
}

LamedSegImpl::LamedSegImpl(const SegvolConfig& c) {
  seg_module = register_module("seg_module", Segvol(c));
  seg_projector = register_module("seg_projector", SegProjector(c.hidden_size, c.mm_hidden_size));
}

torch::Tensor LamedSegImpl::forward(const torch::Tensor& image, const torch::Tensor& seg_hidden, const SegPrompts& spatial) {
  SegPrompts prompts = spatial;
  prompts.text = torch::Tensor();
  if (seg_hidden.defined()) {
    const int64_t h = seg_module->config().hidden_size;
    if (seg_hidden.dim() != 2 || seg_hidden.size(1) != h || seg_hidden.size(0) != image.size(0)) {
      fail("segvol: expected the [SEG] hidden state as [{}, {}] (batch, LLM hidden_size), got {}", image.size(0), h, shape_of(seg_hidden));
    }
    const auto type = activation_type(seg_projector->fc1->weight);
    prompts.text = seg_projector->forward(seg_hidden.to(type));  // (B, 768)
  }
  return seg_module->forward(image, prompts);  // (B, 1, D, H, W)
}

LamedSeg lamed_seg_load(const io::Checkpoint& ckpt) {
  const std::string config_path = ckpt.directory + "/config.json";
  const io::HfConfig hf = io::hf_config_read(config_path);
  const SegvolConfig config = segvol_config_from_checkpoint(ckpt, kSegModulePrefix, kSegProjectorPrefix, SegvolConfig::from_hf(hf, config_path));
  LamedSeg seg(config);
  seg->eval();
  // Only the [SEG] path is built here; the LLM and vision keys stay unread.
  io::state_dict_load_part(*seg->seg_module, ckpt, kSegModulePrefix);
  io::state_dict_load_part(*seg->seg_projector, ckpt, kSegProjectorPrefix);
  return seg;
}

}  // namespace m3d::models
