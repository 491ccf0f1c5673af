// Preprocessing of a volume into model space, op by op as MONAI does it, with
// each op's index map recorded so outputs (masks, logits, boxes) map back onto the
// original scan.
//
// Axis order, decided once: a Volume's tensor is (D, H, W) = (k, j, i), the file's
// slice, row and column axes (ITK's z, y, x; nibabel's data[i, j, k] transposed).
// Sizes in ops and recipes are given in that (D, H, W) order. M3D-LaMed's
// (1, 32, 256, 256) input is then 32 slices of 256 x 256.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <array>
#include <string>
#include <vector>

#include "imaging/recipe.h"  // Op, Recipe and their parser (torch-free)
#include "imaging/volume_io.h"

namespace m3d::imaging {

// An affine map between voxel indices: in = matrix * out + offset, on (i, j, k)
// index vectors (row-major 3x3). Every op is one (crop, pad, resize, reorient,
// resample); a recipe composes them.
struct IndexMap {
  std::array<double, 9> matrix{1, 0, 0, 0, 1, 0, 0, 0, 1};
  std::array<double, 3> offset{0, 0, 0};

  std::array<double, 3> apply(const std::array<double, 3>& out_index) const;
  IndexMap then(const IndexMap& next) const;  // this op's output feeds `next`: in = this(next(out))
  IndexMap inverse() const;
};

struct Volume {
  at::Tensor voxels;  // (D, H, W)
  Geometry geometry;
  VolumeInfo info;
  std::array<int64_t, 3> size_ijk() const;  // (W, H, D)
};

Volume volume_from_raw(const RawVolume& raw);  // voxels keep their type (unsigned 16/32 widened)
Volume volume_from_raw(RawVolume&& raw);  // the same without copying the voxels
RawVolume volume_to_raw(const Volume& volume);  // F32/F64/U8/I16/I32/I64 as the tensor is

struct Prepared {
  Volume volume;  // model space, float32, with the geometry of the model grid
  IndexMap to_original;  // model index -> original index
  std::array<int64_t, 3> original_size{0, 0, 0};  // (i, j, k)
  Geometry original_geometry;
  std::array<int64_t, 3> model_size{0, 0, 0};  // (i, j, k) of the model grid
};

// The way back without the voxels: JSON {"original": {size, spacing, origin,
// direction, path}, "model_size", "to_original": {matrix, offset}} (`m3d volume prep --map`).
nlohmann::json prepared_map_to_json(const Prepared& prepared);
Prepared prepared_map_from_json(const nlohmann::json& json, const std::string& where);

// Op names: orient, spacing, window, scale_range, percentile_range, zscore, minmax,
// crop_foreground, resize, pad, center_crop.
std::vector<std::string> op_names();
Volume apply_op(const Volume& volume, const Op& op, IndexMap* map);
Prepared prepare(const Volume& volume, const std::vector<Op>& ops);

// The HU window presets (level, width): lung, mediastinum, abdomen, liver, bone, brain.
std::pair<double, double> window_preset(const std::string& name);

// Model-space values back onto the original grid: `model` is (D, H, W) in model
// space; nearest (masks) or linear (probabilities) sampling; outside the model grid: 0.
at::Tensor to_original_grid(const Prepared& prepared, const at::Tensor& model, bool nearest);

// A box in normalized model coordinates (M3D box text, m3d_lamed_spec.md §8:
// [d1/D, h1/H, w1/W, d2/D, h2/H, w2/W], the maxima inclusive voxel indices) as
// original voxel indices (i, j, k) and LPS millimetres.
struct OriginalBox {
  std::array<double, 3> index_min, index_max;  // inclusive voxel bounds in the original scan
  std::array<double, 3> mm_min, mm_max;  // LPS millimetres of those voxel centres (component-wise min/max)
};
OriginalBox box_to_original(const Prepared& prepared, const std::array<double, 6>& normalized);

}  // namespace m3d::imaging
