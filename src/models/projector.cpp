// mm_projector of M3D-LaMed: BAAI-DCAI/M3D LaMed/src/model/multimodal_projector/
// spatial_pooling_projector.py (SpatialPoolingProjector) and builder.py
// (FullLinear, IdentityMap). The "spp" projector average-pools the ViT patch grid
// (8x16x16 -> 4x8x8 = 256 tokens) and maps each token with an MLP.
// Letters: B batch, N tokens, E vision width, H LLM width, p1 p2 p3 patch grid.
#include "models/projector.h"

#include <ATen/ATen.h>

#include "m3d/error.h"

namespace m3d::models {

int64_t SppConfig::proj_out_num() const {
  if (mm_projector_type != "spp") return grid[0] * grid[1] * grid[2];
  int64_t n = 1;
  for (int64_t g : grid) n *= g / proj_pooling_size;
  return n;
}

ProjectorImpl::ProjectorImpl(const SppConfig& c) : config_(c) {
  if (c.mm_projector_type == "spp") {
    if (c.proj_pooling_type != "spatial" && c.proj_pooling_type != "sequence") {
      fail("projector: unknown proj_pooling_type '{}' (supported: spatial, sequence)", c.proj_pooling_type);
    }
    if (c.proj_layer_num < 1) fail("projector: proj_layer_num must be at least 1, got {}", c.proj_layer_num);
    if (c.proj_pooling_size < 1) fail("projector: proj_pooling_size must be at least 1, got {}", c.proj_pooling_size);
    if (c.proj_layer_type != "mlp" && c.proj_layer_type != "linear") {
      fail("projector: unknown proj_layer_type '{}' (supported: mlp, linear)", c.proj_layer_type);
    }
    projector = register_module("projector", std::make_shared<torch::nn::Module>());
    const int64_t step = c.proj_layer_type == "mlp" ? 2 : 1;  // a GELU sits between the mlp's Linears
    for (int64_t i = 0; i < c.proj_layer_num; ++i) {
      const int64_t in = i == 0 ? c.mm_hidden_size : c.hidden_size;
      layers_.push_back(projector->register_module(std::to_string(i * step), Linear(in, c.hidden_size)));
    }
  } else if (c.mm_projector_type == "linear") {
    linear = register_module("linear", Linear(c.mm_hidden_size, c.hidden_size));
  } else if (c.mm_projector_type != "identity") {
    fail("projector: unknown mm_projector_type '{}' (supported: spp, linear, identity)", c.mm_projector_type);
  }
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& x) {
  const auto& c = config_;
  if (c.mm_projector_type == "identity") return x;
  if (c.mm_projector_type == "linear") return linear(x);
  const int64_t B = x.size(0), E = x.size(2);
  torch::Tensor pooled;
  if (c.proj_pooling_type == "spatial") {
    // avg_pool3d(kernel = stride = s), written as a reshape + mean because libtorch
    // 1.13 has no bf16 avg_pool3d on CPU; a remainder that does not fill a window is dropped, as there.
    const int64_t s = c.proj_pooling_size, a = c.grid[0] / s, b = c.grid[1] / s, d = c.grid[2] / s;
    auto grid = x.transpose(1, 2).reshape({B, E, c.grid[0], c.grid[1], c.grid[2]});  // (B, E, p1, p2, p3)
    grid = grid.slice(2, 0, a * s).slice(3, 0, b * s).slice(4, 0, d * s);
    grid = grid.reshape({B, E, a, s, b, s, d, s}).mean({3, 5, 7});  // (B, E, p1/s, p2/s, p3/s)
    pooled = grid.flatten(2).transpose(1, 2);  // (B, N', E)
  } else {
    const int64_t window = c.proj_pooling_size * c.proj_pooling_size * c.proj_pooling_size;
    pooled = at::avg_pool1d(x.transpose(1, 2), {window}, {window}).transpose(1, 2);  // (B, N / window, E)
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (i > 0 && c.proj_layer_type == "mlp") pooled = at::gelu(pooled);  // nn.GELU(): exact erf
    pooled = layers_[i]->forward(pooled);
  }
  return pooled;  // (B, N', H)
}

}  // namespace m3d::models
