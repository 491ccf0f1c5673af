// Reading a volume that is already in model space: an M3D-Data .npy (1 x D x H x W
// float, as the official datasets store them) or one tensor of a safetensors file.
// Raw scans (DICOM, NIfTI) go through the preprocessing recipes instead.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace m3d::imaging {

// Returns (1, 1, D, H, W) float32. Accepts D x H x W, 1 x D x H x W and
// 1 x 1 x D x H x W arrays of any real dtype; `key` picks the safetensors tensor
// (default: the only one). NaN or infinite voxels are an error.
at::Tensor model_input_load(const std::string& path, const std::string& key = "");

}  // namespace m3d::imaging
