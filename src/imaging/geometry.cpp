// Geometry arithmetic of volume_io.h (no ITK, no torch).
#include <cmath>

#include "imaging/matrix.h"
#include "imaging/volume_io.h"

namespace m3d::imaging {

std::array<double, 3> Geometry::index_to_physical(const std::array<double, 3>& index) const {
  const auto m = geometry_linear_part(*this);
  std::array<double, 3> p = origin;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) p[r] += m[r * 3 + c] * index[c];
  }
  return p;
}

std::array<double, 3> Geometry::physical_to_index(const std::array<double, 3>& point) const {
  const auto inv = mat3_inverse(geometry_linear_part(*this), "volume geometry: the direction/spacing matrix");
  std::array<double, 3> index{0, 0, 0};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) index[r] += inv[r * 3 + c] * (point[c] - origin[c]);
  }
  return index;
}

std::array<double, 16> Geometry::affine_ras() const {
  const auto m = geometry_linear_part(*this);
  std::array<double, 16> a{};
  for (int r = 0; r < 3; ++r) {
    const double flip = r < 2 ? -1.0 : 1.0;  // LPS -> RAS
    for (int c = 0; c < 3; ++c) a[r * 4 + c] = flip * m[r * 3 + c];
    a[r * 4 + 3] = flip * origin[r];
  }
  a[15] = 1;
  return a;
}

std::string Geometry::axcodes() const {
  const auto a = affine_ras();
  static const char positive[] = {'R', 'A', 'S'}, negative[] = {'L', 'P', 'I'};
  std::string codes;
  for (int c = 0; c < 3; ++c) {
    int best = 0;
    for (int r = 1; r < 3; ++r) {
      if (std::abs(a[r * 4 + c]) > std::abs(a[best * 4 + c])) best = r;
    }
    codes += a[best * 4 + c] >= 0 ? positive[best] : negative[best];
  }
  return codes;
}

}  // namespace m3d::imaging
