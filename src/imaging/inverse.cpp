// Back from model space to the original scan (preprocess.h): model-grid tensors
// resampled onto the original grid, and normalized boxes as original voxels and LPS mm.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "imaging/preprocess.h"
#include "m3d/error.h"

namespace m3d::imaging {

at::Tensor to_original_grid(const Prepared& prepared, const at::Tensor& model, bool nearest) {
  if (model.dim() != 3) fail("to_original_grid: expected a (D, H, W) tensor, got {} dimensions", model.dim());
  const auto model_size = prepared.model_size;
  for (int a = 0; a < 3; ++a) {
    if (model.size(2 - a) != model_size[a]) {
      fail("to_original_grid: the tensor is [{}] but the model grid is [{}, {}, {}]", fmt::join(model.sizes(), ", "), model_size[2], model_size[1],
           model_size[0]);
    }
  }
  const IndexMap to_model = prepared.to_original.inverse();
  // Separable: each model axis follows exactly one original axis (crop, pad, resize, reorient).
  at::Tensor t = model.to(at::kFloat);
  int source_of[3];  // model axis -> original axis
  for (int m = 0; m < 3; ++m) {
    int count = 0;
    for (int a = 0; a < 3; ++a) {
      if (std::abs(to_model.matrix[m * 3 + a]) > 1e-12) source_of[m] = a, ++count;
    }
    if (count != 1) fail("to_original_grid: the recipe mixes axes (oblique resampling); not supported");
  }
  for (int m = 0; m < 3; ++m) {
    const int a = source_of[m];
    const int64_t n_out = prepared.original_size[a], n_in = model_size[m];
    const int dim = 2 - m;
    const at::Tensor coords = at::arange(n_out, at::kDouble) * to_model.matrix[m * 3 + a] + to_model.offset[m];
    if (nearest) {
      const at::Tensor index = (coords + 0.5).floor().to(at::kLong);
      const at::Tensor valid = (index >= 0) & (index < n_in);
      at::Tensor gathered = t.index_select(dim, index.clamp(0, n_in - 1));
      std::vector<int64_t> shape(3, 1);
      shape[dim] = n_out;
      t = gathered * valid.to(at::kFloat).view(shape);
    } else {
      const at::Tensor lo = coords.floor();
      const at::Tensor w_hi = (coords - lo).to(at::kFloat);
      const at::Tensor i_lo = lo.to(at::kLong), i_hi = i_lo + 1;
      std::vector<int64_t> shape(3, 1);
      shape[dim] = n_out;
      auto take = [&](const at::Tensor& index, const at::Tensor& weight) {
        const at::Tensor valid = ((index >= 0) & (index < n_in)).to(at::kFloat);
        return t.index_select(dim, index.clamp(0, n_in - 1)) * (weight * valid).view(shape);
      };
      t = take(i_lo, 1 - w_hi) + take(i_hi, w_hi);
    }
  }
  // Tensor dim 2 - m now runs along original axis source_of[m]; put original axis a at dim 2 - a.
  std::vector<int64_t> permutation(3);
  for (int m = 0; m < 3; ++m) permutation[2 - source_of[m]] = 2 - m;
  return t.permute(permutation).contiguous();
}

OriginalBox box_to_original(const Prepared& prepared, const std::array<double, 6>& b) {
  const auto size = prepared.model_size;  // (W, H, D)
  for (double v : b) {
    if (!(v >= 0 && v <= 1)) fail("box: values must be in [0, 1], got [{}]", fmt::join(b, ", "));
  }
  // Model voxel indices (i, j, k) = (w, h, d) of the two corners.
  const std::array<double, 3> lo{b[2] * size[0], b[1] * size[1], b[0] * size[2]};
  const std::array<double, 3> hi{b[5] * size[0], b[4] * size[1], b[3] * size[2]};
  OriginalBox out;
  out.index_min = {INFINITY, INFINITY, INFINITY};
  out.index_max = {-INFINITY, -INFINITY, -INFINITY};
  out.mm_min = out.index_min;
  out.mm_max = out.index_max;
  for (int corner = 0; corner < 8; ++corner) {
    const std::array<double, 3> model{(corner & 1) ? hi[0] : lo[0], (corner & 2) ? hi[1] : lo[1], (corner & 4) ? hi[2] : lo[2]};
    const auto index = prepared.to_original.apply(model);
    const auto mm = prepared.original_geometry.index_to_physical(index);
    for (int a = 0; a < 3; ++a) {
      out.index_min[a] = std::min(out.index_min[a], index[a]);
      out.index_max[a] = std::max(out.index_max[a], index[a]);
      out.mm_min[a] = std::min(out.mm_min[a], mm[a]);
      out.mm_max[a] = std::max(out.mm_max[a], mm[a]);
    }
  }
  return out;
}

}  // namespace m3d::imaging
