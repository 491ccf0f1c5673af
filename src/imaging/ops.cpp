// The preprocessing ops of preprocess.h, one function each, and prepare() that runs a
// list of them. Each op follows MONAI 1.3.0's transform of the same name
// (tools/reference/make_preprocess_fixtures.py runs MONAI on the same volumes):
//   orient           Orientation(axcodes)                      (nibabel orientation algebra)
//   spacing          Spacing(pixdim, mode)                     (zoom_affine, compute_shape_offset,
//                                                               grid_sample with border padding, float64)
//   window           ScaleIntensityRange(L-W/2, L+W/2, 0, 1, clip=True)
//   scale_range      ScaleIntensityRange(a_min, a_max, b_min, b_max, clip)
//   percentile_range ScaleIntensityRangePercentiles(lower, upper, b_min, b_max, clip)
//   zscore           NormalizeIntensity()                      (population std; std 0 -> 1)
//   minmax           M3D / Med3DVLM data preparation: x -= min; x /= max(max, 1e-8)
//   crop_foreground  CropForeground(select_fn=x > threshold, margin, allow_smaller=True)
//   resize           Resize(size, mode)                        (torch interpolate, align_corners=False)
//   pad              SpatialPad(size)                          (symmetric, zeros)
//   center_crop      CenterSpatialCrop(size)
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "imaging/matrix.h"
#include "imaging/preprocess.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

using json = nlohmann::json;

// (D, H, W) sizes from a recipe's "size": [D, H, W].
std::array<int64_t, 3> size_param(const Op& op) {
  const json& size = op.params.at("size");
  if (!size.is_array() || size.size() != 3) fail("recipe op '{}': \"size\" must be [D, H, W], got {}", op.name, size.dump());
  std::array<int64_t, 3> out{};
  for (int d = 0; d < 3; ++d) {
    out[d] = size[d].get<int64_t>();
    if (out[d] <= 0 || out[d] > 100000) fail("recipe op '{}': size {} is not a positive voxel count", op.name, out[d]);
  }
  return out;
}

double number(const Op& op, const char* key, double fallback) {
  if (!op.params.contains(key)) return fallback;
  const json& v = op.params.at(key);
  if (!v.is_number()) fail("recipe op '{}': \"{}\" must be a number, got {}", op.name, key, v.dump());
  return v.get<double>();
}

double required(const Op& op, const char* key) {
  if (!op.params.contains(key)) fail("recipe op '{}' needs \"{}\"", op.name, key);
  return number(op, key, 0);
}

// CropForeground's box (allow_smaller=True): [start, stop) per tensor dim of the voxels > threshold, widened by margin.
void foreground_box(const at::Tensor& x, double threshold, int64_t margin, int64_t start[3], int64_t stop[3]) {
  if (margin < 0) fail("recipe op 'crop_foreground': margin must not be negative");
  // Integer voxels compare with an integer (x > t is x > floor(t)), which keeps the comparison in their type.
  const at::Tensor fg = at::isFloatingType(x.scalar_type()) ? x > threshold : x > static_cast<int64_t>(std::floor(threshold));
  const at::Tensor plane = fg.amax(0);  // (H, W): any slice; two passes over the volume in all
  const at::Tensor along[3] = {fg.flatten(1).amax(1), plane.amax(1), plane.amax(0)};
  if (!along[0].any().item<bool>()) fail("crop_foreground: no voxel is above {} (is the intensity already scaled?)", threshold);
  for (int d = 0; d < 3; ++d) {
    const at::Tensor where = along[d].nonzero().flatten();
    start[d] = std::max<int64_t>(where.min().item<int64_t>() - margin, 0);
    stop[d] = std::min<int64_t>(where.max().item<int64_t>() + margin + 1, x.size(d));
  }
}

// A map that changes index axis a by in = scale * out + shift (tensor dim 2 - a).
IndexMap axis_map(const std::array<double, 3>& scale, const std::array<double, 3>& shift) {
  IndexMap m;
  for (int a = 0; a < 3; ++a) m.matrix[a * 3 + a] = scale[a], m.offset[a] = shift[a];
  return m;
}

// The crop map of a foreground box.
IndexMap crop_map(const int64_t start[3]) {
  return axis_map({1, 1, 1}, {static_cast<double>(start[2]), static_cast<double>(start[1]), static_cast<double>(start[0])});
}

Geometry moved(const Geometry& g, const IndexMap& map) {
  // p = o + A (M out + t): the new grid's origin is o + A t, its linear part A M.
  const Mat3 linear = mat3_mul(geometry_linear_part(g), map.matrix);
  Geometry out;
  out.origin = g.index_to_physical(map.offset);
  for (int c = 0; c < 3; ++c) {
    double norm = 0;
    for (int r = 0; r < 3; ++r) norm += linear[r * 3 + c] * linear[r * 3 + c];
    norm = std::sqrt(norm);
    out.spacing[c] = norm;
    for (int r = 0; r < 3; ++r) out.direction[r * 3 + c] = norm > 0 ? linear[r * 3 + c] / norm : (r == c ? 1 : 0);
  }
  return out;
}

double percentile(const at::Tensor& x, double q) {
  at::Tensor sorted = std::get<0>(x.flatten().to(at::kDouble).sort());
  const int64_t n = sorted.numel();
  const double* v = sorted.data_ptr<double>();
  const double position = q / 100.0 * static_cast<double>(n - 1);
  const int64_t lo = static_cast<int64_t>(std::floor(position));
  const int64_t hi = std::min(lo + 1, n - 1);
  const double t = position - static_cast<double>(lo), a = v[lo], b = v[hi];
  return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t;  // numpy's _lerp
}

at::Tensor scale_range(const at::Tensor& x, double a_min, double a_max, double b_min, double b_max, bool clip) {
  if (a_max == a_min) fail("scale_range: a_min and a_max are both {}", a_min);
  at::Tensor y = (x - a_min) / (a_max - a_min);
  y = y * (b_max - b_min) + b_min;
  return clip ? y.clamp(b_min, b_max) : y;
}

Volume with_voxels(const Volume& v, at::Tensor voxels) {
  Volume out = v;
  out.voxels = std::move(voxels);
  return out;
}

// The window letters of nibabel's axis codes: world axis and sign.
std::pair<int, int> code_axis(char c) {
  switch (std::toupper(static_cast<unsigned char>(c))) {
    case 'R':
      return {0, 1};
    case 'L':
      return {0, -1};
    case 'A':
      return {1, 1};
    case 'P':
      return {1, -1};
    case 'S':
      return {2, 1};
    case 'I':
      return {2, -1};
    default:
      return {-1, 0};
  }
}

Volume op_orient(const Volume& v, const Op& op, IndexMap* map) {
  const std::string target = op.params.value("axcodes", "RAS");
  if (target.size() != 3) fail("recipe op 'orient': axcodes must be three letters such as \"RAS\", got \"{}\"", target);
  int want_axis[3], want_sign[3];
  bool used[3] = {false, false, false};
  for (int t = 0; t < 3; ++t) {
    std::tie(want_axis[t], want_sign[t]) = code_axis(target[t]);
    if (want_axis[t] < 0 || used[want_axis[t]]) fail("recipe op 'orient': \"{}\" is not a valid axcodes string (one of R/L, A/P, S/I each)", target);
    used[want_axis[t]] = true;
  }
  const std::string current = v.geometry.axcodes();
  const auto size = v.size_ijk();
  IndexMap m;
  m.matrix = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<int64_t> permutation(3);
  std::vector<int64_t> flips;
  for (int t = 0; t < 3; ++t) {
    for (int s = 0; s < 3; ++s) {
      const auto [axis, sign] = code_axis(current[s]);
      if (axis != want_axis[t]) continue;
      const bool flip = sign != want_sign[t];
      m.matrix[s * 3 + t] = flip ? -1 : 1;
      m.offset[s] = flip ? static_cast<double>(size[s] - 1) : 0;
      permutation[2 - t] = 2 - s;
      if (flip) flips.push_back(2 - t);
    }
  }
  at::Tensor voxels = v.voxels.permute(permutation);
  if (!flips.empty()) voxels = voxels.flip(flips);
  *map = m;
  return with_voxels(v, voxels.contiguous());
}

// MONAI Spacing's target affine: zoom_affine keeps the rotation of `src` and sets the
// new voxel sizes; compute_shape_offset (scale_extent=False) places the input corners
// in the new grid. Returns the new affine (dst) and grid size.
std::pair<Mat4, std::array<int64_t, 3>> spacing_target(const Mat4& src, const std::array<int64_t, 3>& size, const std::array<double, 3>& pixdim_ijk) {
  // zoom_affine: rzs = rotation @ zs with zs upper triangular (Cholesky of rzs^T rzs).
  double g[3][3] = {};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) {
      for (int k = 0; k < 3; ++k) g[r][c] += src[k * 4 + r] * src[k * 4 + c];
    }
  }
  double l[3][3] = {};  // g = l l^T, zs = l^T
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j <= i; ++j) {
      double sum = g[i][j];
      for (int k = 0; k < j; ++k) sum -= l[i][k] * l[j][k];
      if (i == j) {
        if (!(sum > 0)) fail("spacing: the volume's affine is degenerate");
        l[i][i] = std::sqrt(sum);
      } else {
        l[i][j] = sum / l[j][j];
      }
    }
  }
  Mat4 zs{}, rzs{};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) zs[r * 4 + c] = l[c][r], rzs[r * 4 + c] = src[r * 4 + c];
  }
  zs[15] = rzs[15] = 1;
  const char* singular = "spacing: the volume's affine";
  const Mat4 rotation = mat4_mul(rzs, mat4_inverse(zs, singular));
  Mat4 dst{};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) dst[r * 4 + c] = rotation[r * 4 + c] * std::abs(pixdim_ijk[c]);  // sign(diag(zs)) = +1
  }
  dst[15] = 1;
  // compute_shape_offset (scale_extent=False): the input corners in the new grid.
  const Mat4 to_dst = mat4_mul(mat4_inverse(dst, singular), src);
  double corners_out[3][8], corners_world[3][8];
  for (int n = 0; n < 8; ++n) {  // np.meshgrid(..., indexing="ij") order: axis 0 slowest
    const double in[4] = {(n & 4) ? static_cast<double>(size[0] - 1) : 0.0, (n & 2) ? static_cast<double>(size[1] - 1) : 0.0,
                          (n & 1) ? static_cast<double>(size[2] - 1) : 0.0, 1.0};
    for (int r = 0; r < 3; ++r) {
      corners_out[r][n] = corners_world[r][n] = 0;
      for (int k = 0; k < 4; ++k) corners_out[r][n] += to_dst[r * 4 + k] * in[k], corners_world[r][n] += src[r * 4 + k] * in[k];
    }
  }
  std::array<int64_t, 3> out_size{};
  for (int r = 0; r < 3; ++r) {
    const double lo = *std::min_element(corners_out[r], corners_out[r] + 8), hi = *std::max_element(corners_out[r], corners_out[r] + 8);
    out_size[r] = static_cast<int64_t>(std::nearbyint(hi - lo + 1.0));
    if (out_size[r] <= 0 || out_size[r] > 100000) fail("spacing: the resampled size {} is out of range", out_size[r]);
  }
  bool found = false;
  for (int n = 0; n < 8 && !found; ++n) {
    bool smallest = true;
    for (int r = 0; r < 3; ++r) {
      for (int m = 0; m < 8; ++m) smallest &= corners_out[r][m] - corners_out[r][n] >= -1e-8;
    }
    if (smallest) {
      for (int r = 0; r < 3; ++r) dst[r * 4 + 3] = corners_world[r][n];
      found = true;
    }
  }
  if (!found) {  // centre-aligned
    for (int r = 0; r < 3; ++r) {
      double o = src[r * 4 + 3];
      for (int c = 0; c < 3; ++c) o += src[r * 4 + c] * static_cast<double>(size[c]) / 2.0 - dst[r * 4 + c] * static_cast<double>(out_size[c]) / 2.0;
      dst[r * 4 + 3] = o;
    }
  }
  return {dst, out_size};
}

// MONAI Spacing: the target grid of spacing_target, then SpatialResample through
// AffineTransform (grid_sample, align_corners=False, border).
Volume resample_spacing(const Volume& v, const std::array<double, 3>& pixdim_ijk, const std::string& mode, IndexMap* map) {
  const Mat4 src = v.geometry.affine_ras();
  const auto size = v.size_ijk();
  const auto [dst, out_size] = spacing_target(src, size, pixdim_ijk);
  const char* singular = "spacing: the volume's affine";
  const Mat4 xform = mat4_mul(mat4_inverse(src, singular), dst);  // new index -> old index
  // theta in grid_sample's normalized coordinates; grid (x, y, z) = (i, j, k) for a (D, H, W) tensor.
  auto normalize = [](const std::array<int64_t, 3>& n) {
    Mat4 m{};
    for (int a = 0; a < 3; ++a) m[a * 4 + a] = 2.0 / static_cast<double>(n[a]), m[a * 4 + 3] = 1.0 / static_cast<double>(n[a]) - 1.0;
    m[15] = 1;
    return m;
  };
  const Mat4 theta = mat4_mul(mat4_mul(normalize(size), xform), mat4_inverse(normalize(out_size), singular));
  at::Tensor t = at::empty({1, 3, 4}, at::kDouble);
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) t[0][r][c] = theta[r * 4 + c];
  }
  const at::Tensor grid = at::affine_grid_generator(t, {1, 1, out_size[2], out_size[1], out_size[0]}, /*align_corners=*/false);
  int64_t interpolation = 0;
  if (mode == "nearest") interpolation = 1;
  else if (mode != "bilinear" && mode != "trilinear") fail("recipe op 'spacing': mode '{}' is not bilinear or nearest", mode);
  const at::Tensor input = v.voxels.to(at::kDouble).unsqueeze(0).unsqueeze(0);
  Volume out = v;
  out.voxels = at::grid_sampler(input, grid, interpolation, /*padding_mode=*/1, /*align_corners=*/false).squeeze(0).squeeze(0).to(at::kFloat).contiguous();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) map->matrix[r * 3 + c] = xform[r * 4 + c];
    map->offset[r] = xform[r * 4 + 3];
  }
  return out;
}

Volume op_spacing(const Volume& v, const Op& op, IndexMap* map) {
  const json& pixdim = op.params.at("pixdim");
  if (!pixdim.is_array() || pixdim.size() != 3) fail("recipe op 'spacing': \"pixdim\" must be [D, H, W] millimetres, got {}", pixdim.dump());
  std::array<double, 3> ijk{};
  for (int d = 0; d < 3; ++d) {
    ijk[2 - d] = pixdim[d].get<double>();
    if (!(ijk[2 - d] > 0) || !std::isfinite(ijk[2 - d])) fail("recipe op 'spacing': pixdim {} is not a positive length", ijk[2 - d]);
  }
  return resample_spacing(v, ijk, op.params.value("mode", "bilinear"), map);
}

Volume op_window(const Volume& v, const Op& op, IndexMap*) {
  double level, width;
  if (op.params.contains("preset")) {
    std::tie(level, width) = window_preset(op.params.at("preset").get<std::string>());
  } else {
    level = required(op, "level"), width = required(op, "width");
  }
  if (!(width > 0)) fail("recipe op 'window': width must be positive, got {}", width);
  return with_voxels(v, scale_range(v.voxels.to(at::kFloat), level - width / 2, level + width / 2, 0, 1, true));
}

Volume op_scale_range(const Volume& v, const Op& op, IndexMap*) {
  return with_voxels(v, scale_range(v.voxels.to(at::kFloat), required(op, "a_min"), required(op, "a_max"), number(op, "b_min", 0), number(op, "b_max", 1),
                                    op.params.value("clip", false)));
}

Volume op_percentile_range(const Volume& v, const Op& op, IndexMap*) {
  const double lower = number(op, "lower", 0.5), upper = number(op, "upper", 99.5);
  if (!(lower >= 0 && upper <= 100 && lower < upper)) fail("recipe op 'percentile_range': need 0 <= lower < upper <= 100");
  const at::Tensor f = v.voxels.to(at::kFloat);
  const double a_min = static_cast<float>(percentile(f, lower)), a_max = static_cast<float>(percentile(f, upper));
  return with_voxels(v, scale_range(f, a_min, a_max, number(op, "b_min", 0), number(op, "b_max", 1), op.params.value("clip", false)));
}

Volume op_zscore(const Volume& v, const Op&, IndexMap*) {
  const at::Tensor f = v.voxels.to(at::kFloat);
  const double mean = f.mean().item<double>();
  double std = f.std(/*unbiased=*/false).item<double>();
  if (std == 0) std = 1;
  return with_voxels(v, (f - mean) / std);
}

Volume op_minmax(const Volume& v, const Op&, IndexMap*) {
  at::Tensor f = v.voxels.to(at::kFloat);
  f = f - f.min();
  return with_voxels(v, f / std::max(f.max().item<double>(), 1e-8));
}

Volume op_crop_foreground(const Volume& v, const Op& op, IndexMap* map) {
  const at::Tensor& x = v.voxels;
  int64_t start[3], stop[3];
  foreground_box(x, number(op, "threshold", 0), static_cast<int64_t>(number(op, "margin", 0)), start, stop);
  *map = crop_map(start);
  return with_voxels(v, x.slice(0, start[0], stop[0]).slice(1, start[1], stop[1]).slice(2, start[2], stop[2]).contiguous());
}

Volume op_resize(const Volume& v, const Op& op, IndexMap* map) {
  const at::Tensor& x = v.voxels;
  const auto size = size_param(op);
  const std::string mode = op.params.value("mode", "trilinear");
  const at::Tensor f = x.to(at::kFloat).unsqueeze(0).unsqueeze(0);
  at::Tensor y;
  if (mode == "trilinear") {
    y = at::upsample_trilinear3d(f, {size[0], size[1], size[2]}, /*align_corners=*/false);
  } else if (mode == "nearest") {
    y = at::upsample_nearest3d(f, {size[0], size[1], size[2]});
  } else if (mode == "area") {
    y = at::adaptive_avg_pool3d(f, {size[0], size[1], size[2]});
  } else {
    fail("recipe op 'resize': mode '{}' is not one of trilinear, nearest, area", mode);
  }
  std::array<double, 3> scale{}, shift{};
  for (int a = 0; a < 3; ++a) {
    scale[a] = static_cast<double>(x.size(2 - a)) / static_cast<double>(size[2 - a]);
    shift[a] = 0.5 * scale[a] - 0.5;  // voxel centres: in = (out + 0.5) * scale - 0.5
  }
  *map = axis_map(scale, shift);
  return with_voxels(v, y.squeeze(0).squeeze(0).contiguous());
}

Volume op_pad(const Volume& v, const Op& op, IndexMap* map) {
  const at::Tensor& x = v.voxels;
  const auto size = size_param(op);
  std::vector<int64_t> pads;  // constant_pad_nd order: last dim first
  std::array<double, 3> shift{};
  for (int d = 2; d >= 0; --d) {
    const int64_t diff = std::max<int64_t>(size[d] - x.size(d), 0);
    pads.push_back(diff / 2);
    pads.push_back(diff - diff / 2);
    shift[2 - d] = -static_cast<double>(diff / 2);
  }
  *map = axis_map({1, 1, 1}, shift);
  return with_voxels(v, at::constant_pad_nd(x, pads, 0).contiguous());
}

Volume op_center_crop(const Volume& v, const Op& op, IndexMap* map) {
  const at::Tensor& x = v.voxels;
  const auto size = size_param(op);
  at::Tensor y = x;
  std::array<double, 3> shift{};
  for (int d = 0; d < 3; ++d) {
    if (size[d] >= x.size(d)) continue;
    const int64_t start = std::max<int64_t>(x.size(d) / 2 - size[d] / 2, 0);
    y = y.slice(d, start, start + size[d]);
    shift[2 - d] = static_cast<double>(start);
  }
  *map = axis_map({1, 1, 1}, shift);
  return with_voxels(v, y.contiguous());
}

// An op: the volume after it and, through `map` (identity on entry), its index map.
using OpFunction = Volume (*)(const Volume&, const Op&, IndexMap*);

// The ops by name, in the order op_names() lists them.
const std::vector<std::pair<std::string, OpFunction>>& op_table() {
  static const std::vector<std::pair<std::string, OpFunction>> table = {{"orient", op_orient},
                                                                        {"spacing", op_spacing},
                                                                        {"window", op_window},
                                                                        {"scale_range", op_scale_range},
                                                                        {"percentile_range", op_percentile_range},
                                                                        {"zscore", op_zscore},
                                                                        {"minmax", op_minmax},
                                                                        {"crop_foreground", op_crop_foreground},
                                                                        {"resize", op_resize},
                                                                        {"pad", op_pad},
                                                                        {"center_crop", op_center_crop}};
  return table;
}

// minmax then crop_foreground(threshold 0): the foreground of the scaled volume is
// x > min of the raw one, and the scaled maximum lies inside it, so crop the raw
// voxels first and scale only what is kept (the same float operations on the same
// values as the two ops one after the other, on a fraction of the voxels).
bool fused_minmax_crop(const Volume& in, const Op& minmax, const Op& crop, Volume* out, IndexMap* map) {
  if (minmax.name != "minmax" || crop.name != "crop_foreground" || number(crop, "threshold", 0) != 0) return false;
  const at::Tensor& x = in.voxels;
  const double lowest = x.min().item<double>();
  int64_t start[3], stop[3];
  foreground_box(x, lowest, static_cast<int64_t>(number(crop, "margin", 0)), start, stop);
  at::Tensor f = x.slice(0, start[0], stop[0]).slice(1, start[1], stop[1]).slice(2, start[2], stop[2]).to(at::kFloat);
  f.sub_(static_cast<float>(lowest));
  f.div_(std::max(f.max().item<double>(), 1e-8));
  *map = crop_map(start);
  *out = in;
  out->voxels = f;
  out->geometry = moved(in.geometry, *map);
  return true;
}

}  // namespace

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const auto& entry : op_table()) names.push_back(entry.first);
  return names;
}

std::pair<double, double> window_preset(const std::string& name) {
  static const std::map<std::string, std::pair<double, double>> presets = {{"lung", {-600, 1600}}, {"mediastinum", {50, 350}}, {"abdomen", {40, 400}},
                                                                           {"liver", {60, 160}},   {"bone", {500, 2000}},      {"brain", {40, 80}}};
  auto it = presets.find(name);
  if (it == presets.end()) fail("unknown window preset '{}' (lung, mediastinum, abdomen, liver, bone, brain)", name);
  return it->second;
}

Volume apply_op(const Volume& volume, const Op& op, IndexMap* map) {
  *map = IndexMap{};
  const auto& table = op_table();
  auto it = std::find_if(table.begin(), table.end(), [&](const auto& entry) { return entry.first == op.name; });
  if (it == table.end()) fail("unknown preprocessing op '{}' (supported: {})", op.name, fmt::join(op_names(), ", "));
  Volume out = it->second(volume, op, map);
  out.geometry = moved(volume.geometry, *map);
  return out;
}

Prepared prepare(const Volume& volume, const std::vector<Op>& ops) {
  Prepared p;
  p.original_size = volume.size_ijk();
  p.original_geometry = volume.geometry;
  p.volume = volume;
  for (size_t i = 0; i < ops.size(); ++i) {
    IndexMap map;
    const bool integral = !at::isFloatingType(p.volume.voxels.scalar_type());
    if (i + 1 < ops.size() && integral && fused_minmax_crop(p.volume, ops[i], ops[i + 1], &p.volume, &map)) {
      ++i;
    } else {
      if (integral) p.volume.voxels = p.volume.voxels.to(at::kFloat);
      p.volume = apply_op(p.volume, ops[i], &map);
    }
    p.to_original = p.to_original.then(map);
  }
  p.volume.voxels = p.volume.voxels.to(at::kFloat);
  if (!at::isfinite(p.volume.voxels).all().item<bool>()) fail("{}: the prepared volume contains NaN or infinite values", volume.info.path);
  p.model_size = p.volume.size_ijk();
  return p;
}

}  // namespace m3d::imaging
