// DCFormer: Xin et al. 2025 (Med3DVLM, arXiv:2503.20047; DCFormer arXiv:2502.05091),
// as mirthAI/Med3DVLM src/model/encoder/dcformer.py builds it (DecompModel, Encoder,
// DecomposedStem, DecompConv3D, ConvBlock, MLP). Dropout and DropPath are p=0 there
// and are not built; the unused attention blocks ("T") and the `norm=False` / `act`
// options of DecompConv3D (no released variant reaches them) are left out.
// Letters: B batch, C channels, D H W depth height width of the input, N tokens.
#include "models/dcformer.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

#include "m3d/error.h"

namespace m3d::models {
namespace {

constexpr double kBatchNormEps = 1e-5;  // nn.BatchNorm3d defaults
constexpr double kBatchNormMomentum = 0.1;

// libtorch 1.13 has no bf16 / f16 max_pool3d on the CPU: compute it in f32 there
// (max-pooling only selects values, so the result is the same).
torch::Tensor max_pool_halving(const torch::Tensor& x) {
  // nn.MaxPool3d(3, 2, 1): -inf padding, floor mode -> ceil(n / 2) per axis.
  const bool upcast = x.device().is_cpu() && (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf);
  const auto y = at::max_pool3d(upcast ? x.to(torch::kFloat) : x, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, false);
  return upcast ? y.to(x.scalar_type()) : y;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::array<int64_t, 3> DcformerConfig::stage_grid(int stage) const {
  std::array<int64_t, 3> grid{};
  for (size_t i = 0; i < 3; ++i) {
    grid[i] = ceil_div(image_size[i], 4);
    for (int s = 1; s <= stage; ++s) grid[i] = ceil_div(grid[i], 2);
  }
  return grid;
}

int64_t DcformerConfig::stage_tokens(int stage) const {
  const auto g = stage_grid(stage);
  return g[0] * g[1] * g[2];
}

std::vector<std::string> dcformer_variants() { return {"decomp_nano", "decomp_naive", "decomp_tiny", "decomp_small", "decomp_base", "decomp_large"}; }

DcformerConfig dcformer_variant(const std::string& name) {
  // The factory functions at the end of dcformer.py (their kernel sizes are DecompModel's default).
  static const std::map<std::string, std::pair<std::array<int64_t, 5>, std::array<int64_t, 5>>> variants = {
      {"decomp_nano", {{1, 1, 1, 1, 1}, {32, 32, 64, 128, 256}}},    {"decomp_naive", {{1, 2, 2, 2, 2}, {32, 64, 128, 256, 512}}},
      {"decomp_tiny", {{1, 2, 3, 3, 2}, {64, 96, 192, 384, 768}}},   {"decomp_small", {{1, 2, 3, 6, 2}, {64, 96, 192, 384, 768}}},
      {"decomp_base", {{1, 2, 6, 6, 2}, {64, 128, 256, 512, 1024}}}, {"decomp_large", {{1, 2, 6, 12, 2}, {64, 256, 512, 1024, 2048}}},
  };
  auto it = variants.find(name);
  if (it == variants.end()) fail("dcformer: unknown variant '{}' (supported: {})", name, fmt::join(dcformer_variants(), ", "));
  DcformerConfig c;
  c.num_blocks = it->second.first;
  c.channels = it->second.second;
  return c;
}

std::array<int64_t, 3> dcformer_image_size_from_input_size(const nlohmann::json& config, const std::string& where, std::array<int64_t, 3> fallback) {
  if (!config.contains("input_size")) return fallback;
  const nlohmann::json& v = config.at("input_size");
  const auto positive = [](const nlohmann::json& n) { return n.is_number_integer() && n.get<int64_t>() > 0; };
  if (!v.is_array() || v.size() != 3 || !std::all_of(v.begin(), v.end(), positive)) {
    fail("{}: input_size must be 3 positive integers (H, W, D, e.g. [256, 256, 128] for a 128x256x256 volume), got {}", where, v.dump());
  }
  return {v[2].get<int64_t>(), v[0].get<int64_t>(), v[1].get<int64_t>()};  // (H, W, D) -> (D, H, W)
}

DcformerConfig dcformer_config_from_checkpoint(const io::Checkpoint& ckpt, const std::string& prefix, const DcformerConfig& base) {
  DcformerConfig c = base;
  const std::string encoder = prefix + "encoder.";
  const auto& stem = ckpt.tensor(encoder + "s0.0.0.c1.0.weight");  // (C0, C_in, 7, 1, 1)
  if (stem.shape.size() != 5) fail("{}: {} is not a 5-D convolution weight", ckpt.path, stem.name);
  c.channels[0] = stem.shape[0];
  c.in_channels = stem.shape[1];
  for (int s = 1; s <= 4; ++s) {
    const std::string stage = fmt::format("{}s{}.", encoder, s);
    c.channels[s] = ckpt.tensor(stage + "0.scale").shape.at(0);
    c.kernel_sizes[s - 1] = ckpt.tensor(stage + "0.dwconv.c1.0.weight").shape.at(2);  // (C, 1, k, 1, 1)
    c.num_blocks[s] = 0;
    while (ckpt.tensors.count(fmt::format("{}{}.scale", stage, c.num_blocks[s]))) ++c.num_blocks[s];
  }
  c.num_batches_tracked = ckpt.tensors.count(encoder + "s0.0.0.c1.1.num_batches_tracked") > 0;
  return c;
}

BatchNorm3dImpl::BatchNorm3dImpl(int64_t size, bool with_num_batches_tracked) {
  weight = register_parameter("weight", torch::empty({size}));
  bias = register_parameter("bias", torch::empty({size}));
  running_mean = register_buffer("running_mean", torch::zeros({size}));
  running_var = register_buffer("running_var", torch::ones({size}));
  if (with_num_batches_tracked) num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

torch::Tensor BatchNorm3dImpl::forward(const torch::Tensor& x) {
  const bool training = is_training();
  const auto type = x.scalar_type();
  // In train mode the running statistics are updated in place: a converted copy would drop the update.
  if (training && running_mean.scalar_type() != type) {
    fail("dcformer: BatchNorm in train mode needs activations in its statistics' dtype ({}), got {}", c10::toString(running_mean.scalar_type()),
         c10::toString(type));
  }
  if (training && num_batches_tracked.defined()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
  }
  return at::batch_norm(x, weight.to(type), bias.to(type), running_mean.to(type), running_var.to(type), training, kBatchNormMomentum, kBatchNormEps, true);
}

DecompBranchImpl::DecompBranchImpl(int64_t in, int64_t out, std::array<int64_t, 3> kernel, int64_t stride, int64_t groups, bool num_batches_tracked)
    : stride_(stride), groups_(groups) {
  if (groups <= 0 || in % groups != 0 || out % groups != 0) fail("dcformer: {} -> {} channels in {} groups", in, out, groups);
  for (size_t i = 0; i < 3; ++i) padding_[i] = kernel[i] / 2;  // "same" for odd kernels
  auto conv = register_module("0", std::make_shared<torch::nn::Module>());
  weight = conv->register_parameter("weight", torch::empty({out, in / groups, kernel[0], kernel[1], kernel[2]}));
  bias = conv->register_parameter("bias", torch::empty({out}));
  norm = register_module("1", BatchNorm3d(out, num_batches_tracked));
}

torch::Tensor DecompBranchImpl::forward(const torch::Tensor& x) {
  const auto type = x.scalar_type();
  // An int stride applies to all three axes, also those the branch's kernel does not span.
  const auto y = at::conv3d(x, weight.to(type), bias.to(type), {stride_, stride_, stride_}, {padding_[0], padding_[1], padding_[2]}, {1, 1, 1},
                            groups_);  // (B, out, H', W', D')
  return norm(y);
}

DecompConv3dImpl::DecompConv3dImpl(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, bool num_batches_tracked) {
  c1 = register_module("c1", DecompBranch(in, out, std::array<int64_t, 3>{k, 1, 1}, stride, groups, num_batches_tracked));
  c2 = register_module("c2", DecompBranch(in, out, std::array<int64_t, 3>{1, k, 1}, stride, groups, num_batches_tracked));
  c3 = register_module("c3", DecompBranch(in, out, std::array<int64_t, 3>{1, 1, k}, stride, groups, num_batches_tracked));
}

torch::Tensor DecompConv3dImpl::forward(const torch::Tensor& x) { return c1(x) + c2(x) + c3(x); }

ConvBlockImpl::ConvBlockImpl(int64_t in, int64_t out, int64_t kernel, bool downsample, bool num_batches_tracked) {
  if (downsample) { proj = register_module("proj", std::make_shared<torch::nn::Module>())->register_parameter("weight", torch::empty({out, in, 1, 1, 1})); }
  dwconv = register_module("dwconv", DecompConv3d(out, out, kernel, 1, out, num_batches_tracked));
  // MLP(oup, 4 * oup): self.mlp = nn.Sequential(Linear, GELU, Dropout, Linear, Dropout).
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  auto sequence = mlp->register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = sequence->register_module("0", Linear(out, 4 * out));
  fc2 = sequence->register_module("3", Linear(4 * out, out));
  scale = register_parameter("scale", torch::empty({out}));
}

torch::Tensor ConvBlockImpl::forward(const torch::Tensor& input) {
  auto x = input;
  if (proj.defined()) x = at::conv3d(max_pool_halving(x), proj.to(x.scalar_type()));  // (B, out, H/2, W/2, D/2)
  const auto residual = x;  // taken after the downsampling
  auto h = dwconv(x).permute({0, 2, 3, 4, 1});  // (B, H, W, D, C)
  h = fc2(at::gelu(fc1(h)));  // nn.GELU(): exact erf
  h = h * scale.to(h.scalar_type());
  return residual + h.permute({0, 4, 1, 2, 3});  // (B, C, H, W, D)
}

DcformerImpl::DcformerImpl(const DcformerConfig& c) : config_(c) {
  if (c.num_blocks[0] != 1) fail("dcformer: the stem is one DecomposedStem (num_blocks[0] = 1), got {}", c.num_blocks[0]);
  for (int s = 1; s <= 4; ++s) {
    if (c.num_blocks[s] < 1) fail("dcformer: stage s{} has {} blocks; every stage needs at least one", s, c.num_blocks[s]);
  }
  auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
  const bool nbt = c.num_batches_tracked;
  // s0 = nn.Sequential(DecomposedStem) and DecomposedStem is itself an nn.Sequential
  // of four DecompConv3D: keys s0.0.{0..3}. The nn.GELU() passed to each lands in the
  // `norm` argument, so BatchNorm is on and there is no activation at all.
  stages[0] = encoder->register_module("s0", torch::nn::ModuleList());
  stem_ = torch::nn::ModuleList();
  stem_->push_back(DecompConv3d(c.in_channels, c.channels[0], 7, 4, 1, nbt));
  for (int i = 0; i < 3; ++i) stem_->push_back(DecompConv3d(c.channels[0], c.channels[0], 3, 1, 1, nbt));
  stages[0]->push_back(stem_);
  for (int s = 1; s <= 4; ++s) {
    stages[s] = encoder->register_module(fmt::format("s{}", s), torch::nn::ModuleList());
    for (int64_t j = 0; j < c.num_blocks[s]; ++j) {
      const int64_t in = j == 0 ? c.channels[s - 1] : c.channels[s];
      stages[s]->push_back(ConvBlock(in, c.channels[s], c.kernel_sizes[s - 1], j == 0, nbt));  // every stage halves
    }
  }
}

std::vector<torch::Tensor> DcformerImpl::forward(const torch::Tensor& image) {
  const auto& c = config_;
  if (image.dim() != 5 || image.size(1) != c.in_channels || image.size(2) != c.image_size[0] || image.size(3) != c.image_size[1] ||
      image.size(4) != c.image_size[2]) {
    fail("dcformer: expected an image of shape [B, {}, {}, {}, {}] (C, D, H, W), got {}", c.in_channels, c.image_size[0], c.image_size[1], c.image_size[2],
         fmt::join(image.sizes(), "x"));
  }
  auto x = image.permute({0, 1, 3, 4, 2});  // (B, C, H, W, D): the encoder's layout, which the kernels' axes refer to
  std::vector<torch::Tensor> hidden_states;
  for (const auto& layer : *stem_) x = layer->as<DecompConv3dImpl>()->forward(x);  // (B, C_0, H/4, W/4, D/4)
  hidden_states.push_back(x);
  for (int s = 1; s <= 4; ++s) {
    for (const auto& block : *stages[s]) x = block->as<ConvBlockImpl>()->forward(x);  // (B, C_s, H', W', D')
    hidden_states.push_back(x);
  }
  // "b d h w t -> b t h w d" then pack "b * d": tokens row-major over (D', H', W').
  for (auto& h : hidden_states) h = h.permute({0, 4, 2, 3, 1}).flatten(1, 3);  // (B, N, C_s)
  return hidden_states;
}

}  // namespace m3d::models
