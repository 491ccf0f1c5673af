// m3d::PreparedScan (include/m3d/recipe.h) over model_input_from_path and the
// recipe's inverse maps (preprocess.h).
#include "imaging/scan.h"

#include <ATen/ATen.h>

#include "imaging/model_input.h"
#include "m3d/error.h"

namespace m3d {

PreparedScan PreparedScan::prepare(const std::string& path, const PrepareOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  impl->input = imaging::model_input_from_path(path, options.key, options.recipe, options.model_dir, &impl->prepared);
  const at::Tensor flat = impl->input.reshape({-1}).contiguous();
  impl->voxels.assign(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
  if (impl->prepared) impl->prepared->volume.voxels = at::Tensor();  // held once, in `input`
  PreparedScan scan;
  scan.impl_ = std::move(impl);
  return scan;
}

std::array<int64_t, 3> PreparedScan::model_size() const {
  const auto& input = impl_->input;
  return {input.size(2), input.size(3), input.size(4)};
}

const std::vector<float>& PreparedScan::model_voxels() const { return impl_->voxels; }

bool PreparedScan::has_map() const { return impl_->prepared.has_value(); }

std::array<int64_t, 3> PreparedScan::scan_size() const {
  if (impl_->prepared) return impl_->prepared->original_size;
  const auto dhw = model_size();
  return {dhw[2], dhw[1], dhw[0]};
}

Geometry PreparedScan::scan_geometry() const { return impl_->prepared ? impl_->prepared->original_geometry : Geometry{}; }

ScanBox PreparedScan::box(const std::array<double, 6>& normalized) const {
  for (double v : normalized) {
    if (!(v >= 0 && v <= 1)) fail("box: values must be in [0, 1], got [{}]", fmt::join(normalized, ", "));
  }
  const auto dhw = model_size();
  ScanBox out;
  out.normalized = normalized;
  // (i, j, k) = (w, h, d), as box_to_original scales them.
  out.model_min = {normalized[2] * static_cast<double>(dhw[2]), normalized[1] * static_cast<double>(dhw[1]), normalized[0] * static_cast<double>(dhw[0])};
  out.model_max = {normalized[5] * static_cast<double>(dhw[2]), normalized[4] * static_cast<double>(dhw[1]), normalized[3] * static_cast<double>(dhw[0])};
  if (!impl_->prepared) {
    out.scan_min = out.mm_min = out.model_min;
    out.scan_max = out.mm_max = out.model_max;
    return out;
  }
  const imaging::OriginalBox original = imaging::box_to_original(*impl_->prepared, normalized);
  out.scan_min = original.index_min;
  out.scan_max = original.index_max;
  out.mm_min = original.mm_min;
  out.mm_max = original.mm_max;
  out.on_scan = true;
  return out;
}

RawVolume PreparedScan::mask_to_scan(const std::vector<uint8_t>& model_mask) const {
  const auto dhw = model_size();
  if (static_cast<int64_t>(model_mask.size()) != dhw[0] * dhw[1] * dhw[2]) {
    fail("mask: {} values for a {}x{}x{} model grid (D x H x W)", model_mask.size(), dhw[0], dhw[1], dhw[2]);
  }
  const at::Tensor mask = at::from_blob(const_cast<uint8_t*>(model_mask.data()), {dhw[0], dhw[1], dhw[2]}, at::kByte);
  imaging::Volume out;
  if (impl_->prepared) {
    // Nearest sampling, as m3d volume back --mask.
    out.voxels = imaging::to_original_grid(*impl_->prepared, mask.to(at::kFloat), true).round().clamp(0, 255).to(at::kByte);
    out.geometry = impl_->prepared->original_geometry;
  } else {
    out.voxels = mask.clone();
  }
  return imaging::volume_to_raw(out);
}

std::string PreparedScan::map_json() const {
  if (!impl_->prepared) fail("{}: a model-space input has no map back to a scan", impl_->path);
  return imaging::prepared_map_to_json(*impl_->prepared).dump(2);
}

}  // namespace m3d
