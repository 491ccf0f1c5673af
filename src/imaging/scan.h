// The library's side of m3d::PreparedScan (include/m3d/recipe.h): the model input
// tensor and, for a scan, the recorded way back.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "imaging/preprocess.h"
#include "m3d/recipe.h"

namespace m3d {

struct PreparedScan::Impl {
  std::string path;
  at::Tensor input;  // (1, 1, D, H, W) float32, what the model takes
  std::vector<float> voxels;  // the same values, for the public accessor
  std::optional<imaging::Prepared> prepared;  // the way back (its voxels released); empty for model-space inputs
};

}  // namespace m3d
