// Public API: a scan prepared for a model, and the way back onto it.
//
// A scan (NIfTI, DICOM, NRRD, MHA) is read and prepared by a recipe, the op list of
// docs/preprocessing.md (orient, spacing, window, crop, resize, ...), into the
// model's grid; every op's index map is kept, so what the model says about its
// grid (a box, a mask) lands on the patient's scan in its own voxels and LPS
// millimetres. A model-space volume (an M3D-Data .npy, a .safetensors tensor) is
// used as it is and has no way back: its boxes stay on the model grid.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "m3d/volume.h"

namespace m3d {

struct PrepareOptions {
  // "auto": the checkpoint's m3d_recipe.json when `model_dir` has one, else med3dvlm
  // for a DCFormer checkpoint and m3d-lamed for the rest; a built-in name
  // (m3d-lamed, med3dvlm) or a recipe .json file.
  std::string recipe = "auto";
  std::string model_dir;  // the checkpoint "auto" asks
  std::string key;  // the tensor of a .safetensors input with several
};

// A box the model gave in M3D's box text ([d1, h1, w1, d2, h2, w2], normalized to
// the model grid, maxima inclusive), in the three spaces a reader needs. Index
// triples are (i, j, k): column, row, slice.
struct ScanBox {
  std::array<double, 6> normalized{};
  std::array<double, 3> model_min{}, model_max{};  // model-grid voxel indices
  std::array<double, 3> scan_min{}, scan_max{};  // voxel indices of the original scan (= model_* without a map)
  std::array<double, 3> mm_min{}, mm_max{};  // LPS millimetres of those voxel centres (unit spacing without a map)
  bool on_scan = false;  // whether scan_* and mm_* are on an original scan
};

class PreparedScan {
 public:
  // Reads `path` and prepares it for a model (see above). Throws m3d::Error naming
  // the file and the problem.
  static PreparedScan prepare(const std::string& path, const PrepareOptions& options = {});

  std::array<int64_t, 3> model_size() const;  // (D, H, W) of the model grid
  const std::vector<float>& model_voxels() const;  // D * H * W values, row-major (D, H, W)
  bool has_map() const;  // false for a model-space input
  std::array<int64_t, 3> scan_size() const;  // (i, j, k) of the original scan (the model grid's without a map)
  Geometry scan_geometry() const;  // the original scan's (unit spacing at the origin without a map)

  // A normalized model box on the scan.
  ScanBox box(const std::array<double, 6>& normalized) const;
  // A model-grid mask (D * H * W bytes, row-major) on the scan's own grid with its
  // geometry (nearest sampling; 0 outside the model grid), or on the model grid
  // (unit spacing) without a map; dtype U8.
  RawVolume mask_to_scan(const std::vector<uint8_t>& model_mask) const;
  // The way back as JSON (`m3d volume prep --map`, read by `m3d volume back --map`).
  std::string map_json() const;

  struct Impl;  // the library's side (src/imaging/scan.h)
  const std::shared_ptr<const Impl>& impl() const { return impl_; }

 private:
  std::shared_ptr<const Impl> impl_;
};

}  // namespace m3d
