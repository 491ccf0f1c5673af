// M3D-LaMed mm_projector variants: "spp" (3D spatial pooling projector, the
// released one), "linear" (FullLinear over all patch tokens) and "identity".
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <vector>
#include <string>

#include "models/layers.h"

namespace m3d::models {

// Field names are the LaMed config.json keys.
struct SppConfig {
  std::string mm_projector_type = "spp";  // "spp" | "linear" | "identity"
  std::string proj_layer_type = "mlp";  // "mlp" | "linear"
  int64_t proj_layer_num = 2;
  std::string proj_pooling_type = "spatial";  // "spatial" | "sequence"
  int64_t proj_pooling_size = 2;
  int64_t mm_hidden_size = 768;  // vision width
  int64_t hidden_size = 3072;  // LLM width
  std::array<int64_t, 3> grid = {8, 16, 16};  // ViT patch grid (image_size / patch_size)

  int64_t proj_out_num() const;  // image tokens handed to the LLM
};

class ProjectorImpl : public torch::nn::Module {
 public:
  explicit ProjectorImpl(const SppConfig& config);
  // (B, N, mm_hidden_size) patch features -> (B, proj_out_num, hidden_size)
  torch::Tensor forward(const torch::Tensor& x);

 private:
  SppConfig config_;
  // "spp": nn.Sequential(Linear, [GELU,] Linear, ...): Linears at their Sequential
  // indices, so keys are projector.0, projector.2 ... ("mlp") or projector.0, .1 ("linear").
  std::shared_ptr<torch::nn::Module> projector;
  std::vector<Linear> layers_;
  Linear linear{nullptr};  // "linear"
};
TORCH_MODULE(Projector);

}  // namespace m3d::models
