// See preprocess.h. This file: Volume <-> RawVolume, the index-map algebra, and the
// JSON form of a preparation's way back. The ops and prepare() are in ops.cpp, recipes
// in recipe.cpp, the mapping back onto the original scan in inverse.cpp.
#include "imaging/preprocess.h"

#include <ATen/ATen.h>

#include "imaging/matrix.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

using json = nlohmann::json;

at::ScalarType scalar_type(DType dtype) {
  switch (dtype) {
    case DType::U8:
      return at::kByte;
    case DType::I8:
      return at::kChar;
    case DType::I16:
      return at::kShort;
    case DType::I32:
      return at::kInt;
    case DType::I64:
      return at::kLong;
    case DType::F32:
      return at::kFloat;
    case DType::F64:
      return at::kDouble;
    default:
      fail("volume: unsupported voxel type {}", dtype_name(dtype));
  }
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
  out.matrix = mat3_mul(matrix, next.matrix);
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
  v.voxels = at::from_blob(
      owner->data(), {raw.size[2], raw.size[1], raw.size[0]}, [owner](void*) { delete owner; }, at::TensorOptions(type));
  v.geometry = raw.geometry;
  v.info = std::move(raw.info);
  return v;
}

RawVolume volume_to_raw(const Volume& volume) {
  RawVolume raw;
  const at::Tensor t = volume.voxels.contiguous();
  switch (t.scalar_type()) {
    case at::kByte:
      raw.dtype = DType::U8;
      break;
    case at::kShort:
      raw.dtype = DType::I16;
      break;
    case at::kInt:
      raw.dtype = DType::I32;
      break;
    case at::kLong:
      raw.dtype = DType::I64;
      break;
    case at::kFloat:
      raw.dtype = DType::F32;
      break;
    case at::kDouble:
      raw.dtype = DType::F64;
      break;
    default:
      fail("volume: cannot store voxels of type {}", c10::toString(t.scalar_type()));
  }
  raw.size = volume.size_ijk();
  const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
  raw.data.assign(bytes, bytes + t.numel() * t.element_size());
  raw.geometry = volume.geometry;
  raw.info = volume.info;
  return raw;
}

json prepared_map_to_json(const Prepared& p) {
  const Geometry& g = p.original_geometry;
  return {
      {"original", {{"size_ijk", p.original_size}, {"spacing", g.spacing}, {"origin_lps", g.origin}, {"direction", g.direction}, {"path", p.volume.info.path}}},
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
  } catch (const json::exception& e) { fail("{}: not an m3d preprocessing map: {}", where, e.what()); }
  for (int a = 0; a < 3; ++a) {
    if (p.original_size[a] <= 0 || p.model_size[a] <= 0 || p.original_size[a] > 1000000 || p.model_size[a] > 1000000) { fail("{}: sizes out of range", where); }
  }
  return p;
}

}  // namespace m3d::imaging
