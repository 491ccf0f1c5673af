// Medical volumes on disk (the public part: include/m3d/volume.h), through ITK 5
// with GDCM; NIfTI uses our own reader (nifti.h). Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "m3d/volume.h"

namespace m3d::imaging {

// An 8-bit grey PNG, rows of `width` bytes.
void png_write(const std::string& path, int64_t width, int64_t height, const std::vector<uint8_t>& grey);

}  // namespace m3d::imaging
