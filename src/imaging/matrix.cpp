// See matrix.h.
#include "imaging/matrix.h"

#include <cmath>
#include <utility>

#include "m3d/error.h"

namespace m3d::imaging {

Mat3 mat3_mul(const Mat3& a, const Mat3& b) {
  Mat3 c{};
  for (int r = 0; r < 3; ++r) {
    for (int col = 0; col < 3; ++col) {
      double sum = 0;
      for (int k = 0; k < 3; ++k) sum += a[r * 3 + k] * b[k * 3 + col];
      c[r * 3 + col] = sum;
    }
  }
  return c;
}

Mat3 mat3_inverse(const Mat3& m, std::string_view what) {
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
  if (!(std::abs(det) > 1e-12)) fail("{} is singular", what);
  const double d = 1.0 / det;
  return {(m[4] * m[8] - m[5] * m[7]) * d, (m[2] * m[7] - m[1] * m[8]) * d, (m[1] * m[5] - m[2] * m[4]) * d,
          (m[5] * m[6] - m[3] * m[8]) * d, (m[0] * m[8] - m[2] * m[6]) * d, (m[2] * m[3] - m[0] * m[5]) * d,
          (m[3] * m[7] - m[4] * m[6]) * d, (m[1] * m[6] - m[0] * m[7]) * d, (m[0] * m[4] - m[1] * m[3]) * d};
}

Mat4 mat4_mul(const Mat4& a, const Mat4& b) {
  Mat4 c{};
  for (int r = 0; r < 4; ++r) {
    for (int k = 0; k < 4; ++k) {
      for (int col = 0; col < 4; ++col) c[r * 4 + col] += a[r * 4 + k] * b[k * 4 + col];
    }
  }
  return c;
}

Mat4 mat4_inverse(const Mat4& m, std::string_view what) {
  Mat4 a = m, inv{};
  for (int i = 0; i < 4; ++i) inv[i * 4 + i] = 1;
  for (int col = 0; col < 4; ++col) {
    int pivot = col;
    for (int r = col + 1; r < 4; ++r) {
      if (std::abs(a[r * 4 + col]) > std::abs(a[pivot * 4 + col])) pivot = r;
    }
    if (std::abs(a[pivot * 4 + col]) < 1e-12) fail("{} is singular", what);
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

Mat3 geometry_linear_part(const Geometry& g) {
  Mat3 m{};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) m[r * 3 + c] = g.direction[r * 3 + c] * g.spacing[c];
  }
  return m;
}

}  // namespace m3d::imaging
