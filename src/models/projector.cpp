// mm_projector of M3D-LaMed: BAAI-DCAI/M3D LaMed/src/model/multimodal_projector/
// spatial_pooling_projector.py (SpatialPoolingProjector) and builder.py
// (FullLinear, IdentityMap). The "spp" projector average-pools the ViT patch grid
// (8x16x16 -> 4x8x8 = 256 tokens) and maps each token with an MLP.
// Letters: B batch, N tokens, E vision width, H LLM width, p1 p2 p3 patch grid.
#include "models/projector.h"

#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/activation.h>

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
    projector = register_module("projector", torch::nn::Sequential());
    projector->push_back(torch::nn::Linear(c.mm_hidden_size, c.hidden_size));
    for (int64_t i = 1; i < c.proj_layer_num; ++i) {
      if (c.proj_layer_type == "mlp") {
        projector->push_back(torch::nn::GELU());
      } else if (c.proj_layer_type != "linear") {
        fail("projector: unknown proj_layer_type '{}' (supported: mlp, linear)", c.proj_layer_type);
      }
      projector->push_back(torch::nn::Linear(c.hidden_size, c.hidden_size));
    }
  } else if (c.mm_projector_type == "linear") {
    linear = register_module("linear", torch::nn::Linear(c.mm_hidden_size, c.hidden_size));
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
    pooled = torch::nn::functional::avg_pool1d(x.transpose(1, 2),
                                               torch::nn::functional::AvgPool1dFuncOptions(window).stride(window))
                 .transpose(1, 2);  // (B, N / window, E)
  }
  return projector->forward(pooled);  // (B, N', H)
}

}  // namespace m3d::models
