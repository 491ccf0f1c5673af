#include "io/tensor_record.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <limits>

namespace m3d::io {

int64_t shape_numel_checked(const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return -1;
    if (dim != 0 && numel > std::numeric_limits<int64_t>::max() / dim) return -1;
    numel *= dim;
  }
  return numel;
}

int64_t TensorRecord::numel() const { return shape_numel_checked(shape); }

std::vector<int64_t> strides_contiguous(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * std::max<int64_t>(shape[i], 1);
  return strides;
}

bool TensorRecord::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 1) continue;
    if (strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace m3d::io
