// Dual-stream MLP-Mixer projector of Med3DVLM (Xin et al. 2025, arXiv:2503.20047):
// mirthAI/Med3DVLM src/model/projector/mlp.py (MultiModalProjector, MixerLayer,
// MixerLowHighHybridMLP). The other projectors of that file (linear, mlp,
// low_high_mlp, mhsa) are not in a released model and are left out.
// Letters: B batch, N tokens, E channels (features), H LLM width.
#include "models/mixer_projector.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include "m3d/error.h"

namespace m3d::models {

int64_t MixerConfig::proj_out_num() const { return low_output_size.back() + high_output_size.back(); }

MultiModalProjectorImpl::MultiModalProjectorImpl(int64_t input_size, int64_t output_size, int64_t mlp_depth) {
  auto sequence = register_module("mm_projector", std::make_shared<torch::nn::Module>());
  layers_.push_back(sequence->register_module("0", Linear(input_size, output_size)));
  for (int64_t i = 1; i < mlp_depth; ++i) {
    // nn.Sequential(nn.GELU(), nn.Linear): the Linear is element "1" of element i.
    auto block = sequence->register_module(std::to_string(i), std::make_shared<torch::nn::Module>());
    layers_.push_back(block->register_module("1", Linear(output_size, output_size)));
  }
}

torch::Tensor MultiModalProjectorImpl::forward(const torch::Tensor& x) {
  auto h = layers_[0]->forward(x);
  for (size_t i = 1; i < layers_.size(); ++i) h = layers_[i]->forward(at::gelu(h));  // nn.GELU(): exact erf
  return h;
}

MixerLayerImpl::MixerLayerImpl(std::array<int64_t, 2> input_size, std::array<int64_t, 2> output_size, int64_t mlp_depth) {
  // Both norms are over the input channels: ln2 runs after token mixing, which keeps them.
  ln1 = register_module("ln1", LayerNorm(input_size[1], 1e-5));
  ln2 = register_module("ln2", LayerNorm(input_size[1], 1e-5));
  mlp1 = register_module("mlp1", MultiModalProjector(input_size[0], output_size[0], mlp_depth));
  mlp2 = register_module("mlp2", MultiModalProjector(input_size[1], output_size[1], mlp_depth));
}

torch::Tensor MixerLayerImpl::forward(const torch::Tensor& x) {
  auto h = ln1(x).transpose(1, 2);  // (B, E_in, N_in)
  h = mlp1(h).transpose(1, 2);  // token mixing: (B, N_out, E_in)
  return mlp2(ln2(h));  // channel mixing: (B, N_out, E_out)
}

MixerLowHighHybridMlpImpl::MixerLowHighHybridMlpImpl(const MixerConfig& c) : config_(c) {
  const int64_t depth = c.depth();
  if (depth < 1 || static_cast<int64_t>(c.high_output_size.size()) != depth) {
    fail("mixer projector: low_output_size and high_output_size must be non-empty lists of equal length, got [{}] and [{}]", fmt::join(c.low_output_size, ", "),
         fmt::join(c.high_output_size, ", "));
  }
  if (depth >= 31 || c.hidden_size % (int64_t{1} << depth) != 0) {
    fail("mixer projector: hidden_size {} is not divisible by 2^{} (2 to the number of mixer layers)", c.hidden_size, depth);
  }
  if (c.mm_mlp_depth < 1) fail("mixer projector: mm_mlp_depth must be at least 1, got {}", c.mm_mlp_depth);
  low_mixer = register_module("low_mixer", torch::nn::ModuleList());
  high_mixer = register_module("high_mixer", torch::nn::ModuleList());
  // Layer i doubles the channels up to hidden_size: hidden_size / 2^(depth - i - 1) out.
  for (int64_t i = 0; i < depth; ++i) {
    const int64_t in_channels = c.hidden_size >> (depth - i), out_channels = c.hidden_size >> (depth - i - 1);
    const std::array<int64_t, 2> low_in = i == 0 ? c.low_input_size : std::array<int64_t, 2>{c.low_output_size[i - 1], in_channels};
    const std::array<int64_t, 2> high_in = i == 0 ? c.high_input_size : std::array<int64_t, 2>{c.high_output_size[i - 1], in_channels};
    low_mixer->push_back(MixerLayer(low_in, std::array<int64_t, 2>{c.low_output_size[i], out_channels}, c.mm_mlp_depth));
    high_mixer->push_back(MixerLayer(high_in, std::array<int64_t, 2>{c.high_output_size[i], out_channels}, c.mm_mlp_depth));
  }
}

torch::Tensor MixerLowHighHybridMlpImpl::forward(const torch::Tensor& low, const torch::Tensor& high) {
  const auto& c = config_;
  for (const auto& [x, size, name] : {std::tuple{&low, c.low_input_size, "low"}, std::tuple{&high, c.high_input_size, "high"}}) {
    if (x->dim() != 3 || x->size(1) != size[0] || x->size(2) != size[1]) {
      fail("mixer projector: {} features of shape {}, expected [B, {}, {}] ({}_input_size)", name, fmt::join(x->sizes(), "x"), size[0], size[1], name);
    }
  }
  auto l = low, h = high;
  for (size_t i = 0; i < low_mixer->size(); ++i) {
    l = low_mixer->at<MixerLayerImpl>(i).forward(l);  // (B, low_output_size[i], E_i)
    h = high_mixer->at<MixerLayerImpl>(i).forward(h);  // (B, high_output_size[i], E_i)
  }
  return at::cat({l, h}, 1);  // (B, proj_out_num, H), low tokens first
}

}  // namespace m3d::models
