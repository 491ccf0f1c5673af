// Checkpoint records as libtorch tensors, and tensors written as safetensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/tensor_record.h"

namespace m3d::io {

c10::ScalarType dtype_to_scalar(DType dtype);
// Throws for scalar types safetensors cannot hold (complex, quantized, ...).
DType dtype_from_scalar(c10::ScalarType type);

// A CPU tensor over the mapped bytes (zero-copy) when the data is aligned for its
// type, otherwise an aligned copy. Views keep the file mapped while alive.
at::Tensor tensor_from_record(const TensorRecord& record);

// Writes tensors (any device, any layout) atomically as one safetensors file.
void safetensors_save(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace m3d::io
