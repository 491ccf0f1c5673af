// Geometry arithmetic of volume_io.h (no ITK, no torch).
#include <cmath>

#include "imaging/volume_io.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

// direction * diag(spacing), row-major.
std::array<double, 9> linear_part(const Geometry& g) {
  std::array<double, 9> m{};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) m[r * 3 + c] = g.direction[r * 3 + c] * g.spacing[c];
  }
  return m;
}

std::array<double, 9> inverse(const std::array<double, 9>& m) {
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
  if (!(std::abs(det) > 1e-12)) fail("volume geometry: the direction/spacing matrix is singular");
  const double d = 1.0 / det;
  return {(m[4] * m[8] - m[5] * m[7]) * d, (m[2] * m[7] - m[1] * m[8]) * d, (m[1] * m[5] - m[2] * m[4]) * d,
          (m[5] * m[6] - m[3] * m[8]) * d, (m[0] * m[8] - m[2] * m[6]) * d, (m[2] * m[3] - m[0] * m[5]) * d,
          (m[3] * m[7] - m[4] * m[6]) * d, (m[1] * m[6] - m[0] * m[7]) * d, (m[0] * m[4] - m[1] * m[3]) * d};
}

}  // namespace

std::array<double, 3> Geometry::index_to_physical(const std::array<double, 3>& index) const {
  const auto m = linear_part(*this);
  std::array<double, 3> p = origin;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) p[r] += m[r * 3 + c] * index[c];
  }
  return p;
}

std::array<double, 3> Geometry::physical_to_index(const std::array<double, 3>& point) const {
  const auto inv = inverse(linear_part(*this));
  std::array<double, 3> index{0, 0, 0};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) index[r] += inv[r * 3 + c] * (point[c] - origin[c]);
  }
  return index;
}

std::array<double, 16> Geometry::affine_ras() const {
  const auto m = linear_part(*this);
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
