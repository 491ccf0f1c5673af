// Reading a volume that is already in model space: an M3D-Data .npy (1 x D x H x W
// float, as the official datasets store them) or one tensor of a safetensors file.
// Raw scans (DICOM, NIfTI) go through the preprocessing recipes (model_input_from_path).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "imaging/preprocess.h"

namespace m3d::imaging {

// Returns (1, 1, D, H, W) float32. Accepts D x H x W, 1 x D x H x W and
// 1 x 1 x D x H x W arrays of any real dtype; `key` picks the safetensors tensor
// (default: the only one). NaN or infinite voxels are an error.
at::Tensor model_input_load(const std::string& path, const std::string& key = "");

// Any image the CLI accepts: a model-space .npy / .safetensors as above; a scan
// (NIfTI, DICOM file or directory, NRRD, MHA, slice folder) prepared by `recipe`
// ("auto": the checkpoint's m3d_recipe.json when it has one, else med3dvlm for a
// DCFormer checkpoint and m3d-lamed for the rest).
// Returns (1, 1, D, H, W) float32. For a scan, `prepared` (when given) receives the
// way back onto it (model_mask_write); it stays empty for model-space inputs.
at::Tensor model_input_from_path(const std::string& path, const std::string& key, const std::string& recipe, const std::string& checkpoint_dir,
                                 std::optional<Prepared>* prepared = nullptr);

// A model-space mask (D, H, W) on the scan's own grid with its geometry: nearest sampling
// back through `prepared` (to_original_grid), uint8.
Volume model_mask_to_scan(const at::Tensor& mask, const Prepared& prepared);

// A model-space mask (1, 1, D, H, W) or (D, H, W), uint8, to `path`: ".npy" keeps model
// space (1, 1, D, H, W); an image file (.nii.gz, .nii, .nrrd, .mha) is on the scan's own
// grid with its geometry when `prepared` holds the way back (nearest sampling,
// to_original_grid), else on the model grid with unit spacing.
void model_mask_write(const std::string& path, const at::Tensor& mask, const std::optional<Prepared>& prepared);

}  // namespace m3d::imaging
