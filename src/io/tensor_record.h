// A tensor as found in a checkpoint file: where its bytes are, not yet a torch tensor.
// Readers of every format (safetensors, torch .bin) produce these after validating
// that every element lies inside the file; src/io/tensor.h turns them into tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "m3d/dtype.h"

namespace m3d::io {

struct TensorRecord {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements; row-major for safetensors
  const uint8_t* data = nullptr;  // first element (may be unaligned)
  std::shared_ptr<const MappedFile> file;  // keeps `data` alive

  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool is_contiguous() const;
};

// Row-major strides for `shape`.
std::vector<int64_t> strides_contiguous(const std::vector<int64_t>& shape);
// Element count, or -1 when a dimension is negative or the product overflows int64.
int64_t shape_numel_checked(const std::vector<int64_t>& shape);
// "[2, 3, 4]"
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace m3d::io
