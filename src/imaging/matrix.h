// Row-major 3x3 and 4x4 matrices of doubles: the few operations that the volume
// geometry (geometry.cpp) and the preprocessing ops (spacing, index maps, moved grids)
// share. Torch-free.
#pragma once

#include <array>
#include <string_view>

#include "m3d/volume.h"

namespace m3d::imaging {

using Mat3 = std::array<double, 9>;
using Mat4 = std::array<double, 16>;

Mat3 mat3_mul(const Mat3& a, const Mat3& b);
// Fails with "`what` is singular" when |det| <= 1e-12.
Mat3 mat3_inverse(const Mat3& m, std::string_view what);
Mat4 mat4_mul(const Mat4& a, const Mat4& b);
// Gauss-Jordan with partial pivoting; fails with "`what` is singular" on a pivot under 1e-12.
Mat4 mat4_inverse(const Mat4& m, std::string_view what);

// direction * diag(spacing): voxel index steps to LPS millimetres.
Mat3 geometry_linear_part(const Geometry& g);

}  // namespace m3d::imaging
