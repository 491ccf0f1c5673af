// ViT3D: Dosovitskiy et al. 2021 in 3D, as BAAI-DCAI/M3D
// LaMed/src/model/multimodal_encoder/vit.py builds it from MONAI 1.3.0 blocks
// (patchembedding.py, transformerblock.py, selfattention.py, mlp.py); all
// dropouts are p=0 there, so none is built. The classification head is commented
// out in M3D's copy and is absent here too.
// Letters: B batch, C channels, D H W volume, h w d patch grid, N tokens, E embed.
#include "models/vit3d.h"

#include <cmath>

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/functional/activation.h>

#include <fmt/ranges.h>

#include "m3d/error.h"
#include "models/attention.h"
#include "models/autocast.h"

namespace m3d::models {
namespace {

// Checkpointed block: the forward runs without building a graph and keeps the input; the
// backward runs the block again with autograd (under the forward's autocast state) and
// backpropagates through it, which also accumulates the block's parameter gradients.
class CheckpointedBlock : public torch::autograd::Function<CheckpointedBlock> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, TransformerBlockImpl* block) {
    ctx->save_for_backward({x});
    // The block outlives the graph (it is a module of the model being trained).
    ctx->saved_data["block"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(block));
    const auto device = x.device().type();
    const bool autocast = (device == c10::DeviceType::CPU || device == c10::DeviceType::CUDA) && autocast_enabled(device);
    ctx->saved_data["autocast"] = autocast;
    if (autocast) ctx->saved_data["autocast_dtype"] = static_cast<int64_t>(autocast_dtype(device));
    return block->forward(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto* block = reinterpret_cast<TransformerBlockImpl*>(static_cast<intptr_t>(ctx->saved_data["block"].toInt()));
    const auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor out;
    {
      torch::AutoGradMode grad_mode(true);
      const bool autocast = ctx->saved_data["autocast"].toBool();
      AutocastGuard guard(autocast, x.device().type(), autocast ? static_cast<c10::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()) : c10::kBFloat16);
      out = block->forward(x);
    }
    torch::autograd::backward({out}, {grads[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

int64_t Vit3dConfig::num_patches() const {
  const auto g = grid();
  return g[0] * g[1] * g[2];
}

std::array<int64_t, 3> Vit3dConfig::grid() const {
  std::array<int64_t, 3> g{};
  for (size_t i = 0; i < 3; ++i) {
    if (patch_size[i] <= 0 || img_size[i] % patch_size[i] != 0) {
      fail("vit3d: image size {} is not a multiple of patch size {} along axis {}", img_size[i], patch_size[i], i);
    }
    g[i] = img_size[i] / patch_size[i];
  }
  return g;
}

SelfAttentionImpl::SelfAttentionImpl(int64_t hidden_size, int64_t num_heads) : num_heads_(num_heads) {
  if (num_heads <= 0 || hidden_size % num_heads != 0) { fail("vit3d: hidden size {} is not divisible by {} heads", hidden_size, num_heads); }
  qkv = register_module("qkv", Linear(hidden_size, 3 * hidden_size, false));
  out_proj = register_module("out_proj", Linear(hidden_size, hidden_size));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x) { return out_proj(fused_qkv_attention(qkv(x), num_heads_, scale(x))); }

torch::Tensor SelfAttentionImpl::forward_first(const torch::Tensor& x) {
  return out_proj(plain_qkv_attention(qkv(x), num_heads_, scale(x), 1));  // (B, 1, E)
}

double SelfAttentionImpl::scale(const torch::Tensor& x) const {
  return 1.0 / std::sqrt(static_cast<double>(x.size(-1) / num_heads_));  // 1 / sqrt(head_dim)
}

MlpBlockImpl::MlpBlockImpl(int64_t hidden_size, int64_t mlp_dim) {
  linear1 = register_module("linear1", Linear(hidden_size, mlp_dim));
  linear2 = register_module("linear2", Linear(mlp_dim, hidden_size));
}

torch::Tensor MlpBlockImpl::forward(const torch::Tensor& x) {
  return linear2(torch::gelu(linear1(x)));  // nn.GELU(): exact erf form
}

TransformerBlockImpl::TransformerBlockImpl(const Vit3dConfig& c) {
  norm1 = register_module("norm1", LayerNorm(c.hidden_size, c.layer_norm_eps));
  attn = register_module("attn", SelfAttention(c.hidden_size, c.num_heads));
  norm2 = register_module("norm2", LayerNorm(c.hidden_size, c.layer_norm_eps));
  mlp = register_module("mlp", MlpBlock(c.hidden_size, c.mlp_dim));
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor& x) {
  auto h = x + attn(norm1(x));
  return h + mlp(norm2(h));
}

torch::Tensor TransformerBlockImpl::forward_first(const torch::Tensor& x) {
  auto h = x.narrow(1, 0, 1) + attn->forward_first(norm1(x));
  return h + mlp(norm2(h));
}

PatchEmbeddingImpl::PatchEmbeddingImpl(const Vit3dConfig& c) : config_(c) {
  const int64_t patch_dim = c.in_channels * c.patch_size[0] * c.patch_size[1] * c.patch_size[2];
  // The official module is Sequential(Rearrange, Linear): the Linear's key is "patch_embeddings.1".
  auto sequence = register_module("patch_embeddings", std::make_shared<torch::nn::Module>());
  linear = sequence->register_module("1", Linear(patch_dim, c.hidden_size));
  position_embeddings = register_parameter("position_embeddings", torch::empty({1, c.num_patches(), c.hidden_size}));
}

torch::Tensor PatchEmbeddingImpl::forward(const torch::Tensor& image) {
  const auto& c = config_;
  const auto g = c.grid();
  const int64_t B = image.size(0);
  // "b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)"
  auto x = image.view({B, c.in_channels, g[0], c.patch_size[0], g[1], c.patch_size[1], g[2], c.patch_size[2]});
  x = x.permute({0, 2, 4, 6, 3, 5, 7, 1});  // (B, h, w, d, p1, p2, p3, C)
  x = x.reshape({B, c.num_patches(), -1});  // (B, N, p1*p2*p3*C)
  return linear(x) + position_embeddings.to(x.scalar_type());  // (B, N, E)
}

Vit3dImpl::Vit3dImpl(const Vit3dConfig& c) : config_(c) {
  patch_embedding = register_module("patch_embedding", PatchEmbedding(c));
  if (c.classification) cls_token = register_parameter("cls_token", torch::empty({1, 1, c.hidden_size}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) blocks->push_back(TransformerBlock(c));
  norm = register_module("norm", LayerNorm(c.hidden_size, c.layer_norm_eps));
}

torch::Tensor Vit3dImpl::embed(const torch::Tensor& image) {
  const auto& c = config_;
  if (image.dim() != 5 || image.size(1) != c.in_channels || image.size(2) != c.img_size[0] || image.size(3) != c.img_size[1] ||
      image.size(4) != c.img_size[2]) {
    fail("vit3d: expected an image of shape [B, {}, {}, {}, {}], got {}", c.in_channels, c.img_size[0], c.img_size[1], c.img_size[2],
         fmt::join(image.sizes(), "x"));
  }
  auto x = patch_embedding(image);  // (B, N, E)
  if (!c.classification) return x;
  // cls goes in after the position embedding, so it has none (vit.py:116-118).
  return torch::cat({cls_token.to(x.scalar_type()).expand({x.size(0), -1, -1}), x}, 1);  // (B, N+1, E)
}

Vit3dOutput Vit3dImpl::forward(const torch::Tensor& image) {
  auto x = embed(image);
  Vit3dOutput out;
  for (size_t i = 0; i < blocks->size(); ++i) {
    x = run_block(i, x);
    out.hidden_states.push_back(x);
  }
  out.last = norm(x);
  return out;
}

torch::Tensor Vit3dImpl::run_block(size_t i, const torch::Tensor& x) {
  auto& block = blocks->at<TransformerBlockImpl>(i);
  // Only where a backward will follow through x (the block's input must carry the gradient on).
  if (checkpointing_ && is_training() && torch::GradMode::is_enabled() && x.requires_grad()) return CheckpointedBlock::apply(x, &block);
  return block.forward(x);
}

torch::Tensor Vit3dImpl::forward_cls(const torch::Tensor& image) {
  if (!config_.classification) fail("vit3d: this encoder has no cls token");
  auto x = embed(image);
  const size_t n = blocks->size();
  if (n == 0) return norm(x).select(1, 0);
  for (size_t i = 0; i + 1 < n; ++i) x = run_block(i, x);
  return norm(blocks->at<TransformerBlockImpl>(n - 1).forward_first(x)).select(1, 0);  // (B, E)
}

}  // namespace m3d::models
