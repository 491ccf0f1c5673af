// NumPy .npy files (format versions 1-3): the M3D-Data image format (1 x D x H x W
// float32 per study). The header is parsed and validated before any data is used.
#pragma once

#include <string>

#include "io/tensor_record.h"

namespace m3d::io {

struct NpyFile {
  TensorRecord array;  // name = the file path; C-order strides
};

NpyFile npy_read(const std::string& path);
NpyFile npy_parse(std::shared_ptr<const MappedFile> file);

// Writes a C-order array atomically (format version 1.0).
void npy_write(const std::string& path, DType dtype, const std::vector<int64_t>& shape, const void* data);

}  // namespace m3d::io
