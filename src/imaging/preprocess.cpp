// See preprocess.h. Each op follows MONAI 1.3.0's transform of the same name
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
#include "imaging/preprocess.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "io/json_util.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

at::ScalarType scalar_type(DType dtype) {
  switch (dtype) {
    case DType::U8: return at::kByte;
    case DType::I8: return at::kChar;
    case DType::I16: return at::kShort;
    case DType::I32: return at::kInt;
    case DType::I64: return at::kLong;
    case DType::F32: return at::kFloat;
    case DType::F64: return at::kDouble;
    default: fail("volume: unsupported voxel type {}", dtype_name(dtype));
  }
}

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

Geometry moved(const Geometry& g, const IndexMap& map) {
  // p = o + A (M out + t): the new grid's origin is o + A t, its linear part A M.
  std::array<double, 9> a{};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) a[r * 3 + c] = g.direction[r * 3 + c] * g.spacing[c];
  }
  Geometry out;
  out.origin = g.index_to_physical(map.offset);
  for (int c = 0; c < 3; ++c) {
    double column[3] = {0, 0, 0}, norm = 0;
    for (int r = 0; r < 3; ++r) {
      for (int k = 0; k < 3; ++k) column[r] += a[r * 3 + k] * map.matrix[k * 3 + c];
      norm += column[r] * column[r];
    }
    norm = std::sqrt(norm);
    out.spacing[c] = norm;
    for (int r = 0; r < 3; ++r) out.direction[r * 3 + c] = norm > 0 ? column[r] / norm : (r == c ? 1 : 0);
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

// The window letters of nibabel's axis codes: world axis and sign.
std::pair<int, int> code_axis(char c) {
  switch (std::toupper(static_cast<unsigned char>(c))) {
    case 'R': return {0, 1};
    case 'L': return {0, -1};
    case 'A': return {1, 1};
    case 'P': return {1, -1};
    case 'S': return {2, 1};
    case 'I': return {2, -1};
    default: return {-1, 0};
  }
}

Volume orient(const Volume& v, const std::string& target, IndexMap* map) {
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
  Volume out = v;
  out.voxels = v.voxels.permute(permutation);
  if (!flips.empty()) out.voxels = out.voxels.flip(flips);
  out.voxels = out.voxels.contiguous();
  *map = m;
  return out;
}

using Mat4 = std::array<double, 16>;

Mat4 mat_mul(const Mat4& a, const Mat4& b) {
  Mat4 c{};
  for (int r = 0; r < 4; ++r) {
    for (int k = 0; k < 4; ++k) {
      for (int col = 0; col < 4; ++col) c[r * 4 + col] += a[r * 4 + k] * b[k * 4 + col];
    }
  }
  return c;
}

Mat4 mat_inverse(const Mat4& m) {  // Gauss-Jordan with partial pivoting
  Mat4 a = m, inv{};
  for (int i = 0; i < 4; ++i) inv[i * 4 + i] = 1;
  for (int col = 0; col < 4; ++col) {
    int pivot = col;
    for (int r = col + 1; r < 4; ++r) {
      if (std::abs(a[r * 4 + col]) > std::abs(a[pivot * 4 + col])) pivot = r;
    }
    if (std::abs(a[pivot * 4 + col]) < 1e-12) fail("spacing: the volume's affine is singular");
    for (int k = 0; k < 4; ++k) std::swap(a[col * 4 + k], a[pivot * 4 + k]), std::swap(inv[col * 4 + k], inv[pivot * 4 + k]);
    const double d = a[col * 4 + col];
    for (int k = 0; k < 4; ++k) a[col * 4 + k] /= d, inv[col * 4 + k] /= d;
    for (int r = 0; r < 4; ++r) {
      if (r == col) continue;
      const double f = a[r * 4 + col];
      for (int k = 0; k < 4; ++k) a[r * 4 + k] -= f * a[col * 4 + k], inv[r * 4 + k] -= f * inv[col * 4 + k];
    }
  }
  return inv;
}

// MONAI Spacing: zoom_affine (keeps the rotation, new voxel sizes), compute_shape_offset,
// then SpatialResample through AffineTransform (grid_sample, align_corners=False, border).
Volume resample_spacing(const Volume& v, const std::array<double, 3>& pixdim_ijk, const std::string& mode, IndexMap* map) {
  const Mat4 src = v.geometry.affine_ras();
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
  const Mat4 rotation = mat_mul(rzs, mat_inverse(zs));
  Mat4 dst{};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) dst[r * 4 + c] = rotation[r * 4 + c] * std::abs(pixdim_ijk[c]);  // sign(diag(zs)) = +1
  }
  dst[15] = 1;
  // compute_shape_offset (scale_extent=False): the input corners in the new grid.
  const auto size = v.size_ijk();
  const Mat4 to_dst = mat_mul(mat_inverse(dst), src);
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
  const Mat4 xform = mat_mul(mat_inverse(src), dst);  // new index -> old index
  // theta in grid_sample's normalized coordinates; grid (x, y, z) = (i, j, k) for a (D, H, W) tensor.
  auto normalize = [](const std::array<int64_t, 3>& n) {
    Mat4 m{};
    for (int a = 0; a < 3; ++a) m[a * 4 + a] = 2.0 / static_cast<double>(n[a]), m[a * 4 + 3] = 1.0 / static_cast<double>(n[a]) - 1.0;
    m[15] = 1;
    return m;
  };
  const Mat4 theta = mat_mul(mat_mul(normalize(size), xform), mat_inverse(normalize(out_size)));
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

}  // namespace

std::array<double, 3> IndexMap::apply(const std::array<double, 3>& out_index) const {
  std::array<double, 3> in = offset;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) in[r] += matrix[r * 3 + c] * out_index[c];
  }
  return in;
}

IndexMap IndexMap::then(const IndexMap& next) const {
  IndexMap out;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) {
      double sum = 0;
      for (int k = 0; k < 3; ++k) sum += matrix[r * 3 + k] * next.matrix[k * 3 + c];
      out.matrix[r * 3 + c] = sum;
    }
  }
  out.offset = apply(next.offset);
  return out;
}

IndexMap IndexMap::inverse() const {
  Geometry g;  // reuse the 3x3 inverse of Geometry: index = inverse(matrix) (p - offset)
  g.spacing = {1, 1, 1};
  g.direction = matrix;
  g.origin = offset;
  IndexMap out;
  out.offset = g.physical_to_index({0, 0, 0});  // -M^-1 t
  for (int c = 0; c < 3; ++c) {
    std::array<double, 3> unit = offset;
    unit[c] += 1;
    const auto column = g.physical_to_index(unit);  // M^-1 e_c
    for (int r = 0; r < 3; ++r) out.matrix[r * 3 + c] = column[r];
  }
  return out;
}

std::array<int64_t, 3> Volume::size_ijk() const { return {voxels.size(2), voxels.size(1), voxels.size(0)}; }

Volume volume_from_raw(const RawVolume& raw) {
  Volume v;
  const auto type = scalar_type(raw.dtype);
  v.voxels = at::from_blob(const_cast<uint8_t*>(raw.data.data()), {raw.size[2], raw.size[1], raw.size[0]}, at::TensorOptions(type)).clone();
  v.geometry = raw.geometry;
  v.info = raw.info;
  return v;
}

Volume volume_from_raw(RawVolume&& raw) {
  Volume v;
  const auto type = scalar_type(raw.dtype);
  auto* owner = new std::vector<uint8_t>(std::move(raw.data));
  v.voxels = at::from_blob(owner->data(), {raw.size[2], raw.size[1], raw.size[0]}, [owner](void*) { delete owner; }, at::TensorOptions(type));
  v.geometry = raw.geometry;
  v.info = std::move(raw.info);
  return v;
}

RawVolume volume_to_raw(const Volume& volume) {
  RawVolume raw;
  const at::Tensor t = volume.voxels.contiguous();
  switch (t.scalar_type()) {
    case at::kByte: raw.dtype = DType::U8; break;
    case at::kShort: raw.dtype = DType::I16; break;
    case at::kInt: raw.dtype = DType::I32; break;
    case at::kLong: raw.dtype = DType::I64; break;
    case at::kFloat: raw.dtype = DType::F32; break;
    case at::kDouble: raw.dtype = DType::F64; break;
    default: fail("volume: cannot store voxels of type {}", c10::toString(t.scalar_type()));
  }
  raw.size = volume.size_ijk();
  const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
  raw.data.assign(bytes, bytes + t.numel() * t.element_size());
  raw.geometry = volume.geometry;
  raw.info = volume.info;
  return raw;
}

std::vector<std::string> op_names() {
  return {"orient", "spacing", "window", "scale_range", "percentile_range", "zscore", "minmax", "crop_foreground", "resize", "pad", "center_crop"};
}

std::pair<double, double> window_preset(const std::string& name) {
  static const std::map<std::string, std::pair<double, double>> presets = {
      {"lung", {-600, 1600}}, {"mediastinum", {50, 350}}, {"abdomen", {40, 400}}, {"liver", {60, 160}}, {"bone", {500, 2000}}, {"brain", {40, 80}}};
  auto it = presets.find(name);
  if (it == presets.end()) fail("unknown window preset '{}' (lung, mediastinum, abdomen, liver, bone, brain)", name);
  return it->second;
}

Volume apply_op(const Volume& volume, const Op& op, IndexMap* map) {
  IndexMap identity;
  *map = identity;
  Volume out = volume;
  const at::Tensor& x = volume.voxels;
  const std::string& name = op.name;
  if (name == "orient") {
    out = orient(volume, op.params.value("axcodes", "RAS"), map);
  } else if (name == "spacing") {
    const json& pixdim = op.params.at("pixdim");
    if (!pixdim.is_array() || pixdim.size() != 3) fail("recipe op 'spacing': \"pixdim\" must be [D, H, W] millimetres, got {}", pixdim.dump());
    std::array<double, 3> ijk{};
    for (int d = 0; d < 3; ++d) {
      ijk[2 - d] = pixdim[d].get<double>();
      if (!(ijk[2 - d] > 0) || !std::isfinite(ijk[2 - d])) fail("recipe op 'spacing': pixdim {} is not a positive length", ijk[2 - d]);
    }
    out = resample_spacing(volume, ijk, op.params.value("mode", "bilinear"), map);
  } else if (name == "window") {
    double level, width;
    if (op.params.contains("preset")) {
      std::tie(level, width) = window_preset(op.params.at("preset").get<std::string>());
    } else {
      level = required(op, "level"), width = required(op, "width");
    }
    if (!(width > 0)) fail("recipe op 'window': width must be positive, got {}", width);
    out.voxels = scale_range(x.to(at::kFloat), level - width / 2, level + width / 2, 0, 1, true);
  } else if (name == "scale_range") {
    out.voxels = scale_range(x.to(at::kFloat), required(op, "a_min"), required(op, "a_max"), number(op, "b_min", 0), number(op, "b_max", 1),
                             op.params.value("clip", false));
  } else if (name == "percentile_range") {
    const double lower = number(op, "lower", 0.5), upper = number(op, "upper", 99.5);
    if (!(lower >= 0 && upper <= 100 && lower < upper)) fail("recipe op 'percentile_range': need 0 <= lower < upper <= 100");
    const at::Tensor f = x.to(at::kFloat);
    const double a_min = static_cast<float>(percentile(f, lower)), a_max = static_cast<float>(percentile(f, upper));
    out.voxels = scale_range(f, a_min, a_max, number(op, "b_min", 0), number(op, "b_max", 1), op.params.value("clip", false));
  } else if (name == "zscore") {
    const at::Tensor f = x.to(at::kFloat);
    const double mean = f.mean().item<double>();
    double std = f.std(/*unbiased=*/false).item<double>();
    if (std == 0) std = 1;
    out.voxels = (f - mean) / std;
  } else if (name == "minmax") {
    at::Tensor f = x.to(at::kFloat);
    f = f - f.min();
    out.voxels = f / std::max(f.max().item<double>(), 1e-8);
  } else if (name == "crop_foreground") {
    int64_t start[3], stop[3];
    foreground_box(x, number(op, "threshold", 0), static_cast<int64_t>(number(op, "margin", 0)), start, stop);
    out.voxels = x.slice(0, start[0], stop[0]).slice(1, start[1], stop[1]).slice(2, start[2], stop[2]).contiguous();
    *map = axis_map({1, 1, 1}, {static_cast<double>(start[2]), static_cast<double>(start[1]), static_cast<double>(start[0])});
  } else if (name == "resize") {
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
    out.voxels = y.squeeze(0).squeeze(0).contiguous();
    std::array<double, 3> scale{}, shift{};
    for (int a = 0; a < 3; ++a) {
      scale[a] = static_cast<double>(x.size(2 - a)) / static_cast<double>(size[2 - a]);
      shift[a] = 0.5 * scale[a] - 0.5;  // voxel centres: in = (out + 0.5) * scale - 0.5
    }
    *map = axis_map(scale, shift);
  } else if (name == "pad") {
    const auto size = size_param(op);
    std::vector<int64_t> pads;  // constant_pad_nd order: last dim first
    std::array<double, 3> shift{};
    for (int d = 2; d >= 0; --d) {
      const int64_t diff = std::max<int64_t>(size[d] - x.size(d), 0);
      pads.push_back(diff / 2);
      pads.push_back(diff - diff / 2);
      shift[2 - d] = -static_cast<double>(diff / 2);
    }
    out.voxels = at::constant_pad_nd(x, pads, 0).contiguous();
    *map = axis_map({1, 1, 1}, shift);
  } else if (name == "center_crop") {
    const auto size = size_param(op);
    at::Tensor y = x;
    std::array<double, 3> shift{};
    for (int d = 0; d < 3; ++d) {
      if (size[d] >= x.size(d)) continue;
      const int64_t start = std::max<int64_t>(x.size(d) / 2 - size[d] / 2, 0);
      y = y.slice(d, start, start + size[d]);
      shift[2 - d] = static_cast<double>(start);
    }
    out.voxels = y.contiguous();
    *map = axis_map({1, 1, 1}, shift);
  } else {
    fail("unknown preprocessing op '{}' (supported: {})", name, fmt::join(op_names(), ", "));
  }
  out.geometry = moved(volume.geometry, *map);
  return out;
}

namespace {

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
  *map = axis_map({1, 1, 1}, {static_cast<double>(start[2]), static_cast<double>(start[1]), static_cast<double>(start[0])});
  *out = in;
  out->voxels = f;
  out->geometry = moved(in.geometry, *map);
  return true;
}

}  // namespace

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

json prepared_map_to_json(const Prepared& p) {
  const Geometry& g = p.original_geometry;
  return {{"original", {{"size_ijk", p.original_size}, {"spacing", g.spacing}, {"origin_lps", g.origin}, {"direction", g.direction},
                        {"path", p.volume.info.path}}},
          {"model_size_ijk", p.model_size},
          {"to_original", {{"matrix", p.to_original.matrix}, {"offset", p.to_original.offset}}}};
}

Prepared prepared_map_from_json(const json& j, const std::string& where) {
  Prepared p;
  try {
    const json& o = j.at("original");
    p.original_size = o.at("size_ijk").get<std::array<int64_t, 3>>();
    p.original_geometry.spacing = o.at("spacing").get<std::array<double, 3>>();
    p.original_geometry.origin = o.at("origin_lps").get<std::array<double, 3>>();
    p.original_geometry.direction = o.at("direction").get<std::array<double, 9>>();
    p.volume.info.path = o.value("path", "");
    p.model_size = j.at("model_size_ijk").get<std::array<int64_t, 3>>();
    p.to_original.matrix = j.at("to_original").at("matrix").get<std::array<double, 9>>();
    p.to_original.offset = j.at("to_original").at("offset").get<std::array<double, 3>>();
  } catch (const json::exception& e) {
    fail("{}: not an m3d preprocessing map: {}", where, e.what());
  }
  for (int a = 0; a < 3; ++a) {
    if (p.original_size[a] <= 0 || p.model_size[a] <= 0 || p.original_size[a] > 1000000 || p.model_size[a] > 1000000) {
      fail("{}: sizes out of range", where);
    }
  }
  return p;
}

// --- recipes ---

std::vector<std::string> recipe_builtin_names() { return {"m3d-lamed", "med3dvlm"}; }

Recipe recipe_builtin(const std::string& name) {
  // M3D-Data preparation (m3d_lamed_spec.md §11.2; med3dvlm_spec.md §5.1): min-max over the
  // volume, CropForeground (voxels > 0, no margin), Resize with "bilinear" = trilinear in 3D.
  auto pipeline = [](int64_t depth) {
    return std::vector<Op>{{"minmax", json::object()},
                           {"crop_foreground", {{"threshold", 0}, {"margin", 0}}},
                           {"resize", {{"size", {depth, 256, 256}}, {"mode", "trilinear"}}}};
  };
  if (name == "m3d-lamed") return {name, "M3D Data/process/m3d_cap_data_prepare.py: min-max, CropForeground, Resize([32,256,256])", pipeline(32)};
  if (name == "med3dvlm") return {name, "Med3DVLM src/utils/m3d_cap_data_prepare_128.py: min-max, CropForeground, Resize([128,256,256])", pipeline(128)};
  fail("unknown recipe '{}' (built-in: {}; or a recipe .json file)", name, fmt::join(recipe_builtin_names(), ", "));
}

Recipe recipe_parse(const std::string& text, const std::string& where) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", where, e.what());
  }
  if (!root.is_object() || !root.contains("ops") || !root["ops"].is_array()) fail("{}: a recipe is {{\"name\": ..., \"ops\": [...]}}", where);
  Recipe recipe;
  recipe.name = root.value("name", fs::path(where).stem().string());
  recipe.source = root.value("source", "");
  const auto names = op_names();
  for (const auto& item : root["ops"]) {
    if (!item.is_object() || !item.contains("op") || !item["op"].is_string()) fail("{}: each op is an object with \"op\": name", where);
    Op op{item["op"].get<std::string>(), item};
    op.params.erase("op");
    if (std::find(names.begin(), names.end(), op.name) == names.end()) {
      fail("{}: unknown op '{}' (supported: {})", where, op.name, fmt::join(names, ", "));
    }
    recipe.ops.push_back(op);
  }
  return recipe;
}

Recipe recipe_load(const std::string& name_or_path) {
  std::error_code ec;
  if (fs::is_directory(name_or_path, ec)) {
    const std::string path = name_or_path + "/m3d_recipe.json";
    if (!fs::exists(path)) fail("{}: no m3d_recipe.json in this checkpoint directory; name a recipe ({})", name_or_path,
                                fmt::join(recipe_builtin_names(), ", "));
    return recipe_load(path);
  }
  if (fs::exists(name_or_path, ec)) return recipe_parse(io::json_read_file(name_or_path).dump(), name_or_path);
  return recipe_builtin(name_or_path);
}

std::string recipe_to_json(const Recipe& recipe) {
  json ops = json::array();
  for (const auto& op : recipe.ops) {
    json item = op.params;
    item["op"] = op.name;
    ops.push_back(item);
  }
  return json{{"name", recipe.name}, {"source", recipe.source}, {"ops", ops}}.dump(2);
}

// --- back to the original scan ---

at::Tensor to_original_grid(const Prepared& prepared, const at::Tensor& model, bool nearest) {
  if (model.dim() != 3) fail("to_original_grid: expected a (D, H, W) tensor, got {} dimensions", model.dim());
  const auto model_size = prepared.model_size;
  for (int a = 0; a < 3; ++a) {
    if (model.size(2 - a) != model_size[a]) {
      fail("to_original_grid: the tensor is [{}] but the model grid is [{}, {}, {}]", fmt::join(model.sizes(), ", "), model_size[2],
           model_size[1], model_size[0]);
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
