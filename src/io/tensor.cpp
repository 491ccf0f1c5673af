#include "io/tensor.h"

#include <ATen/ATen.h>

#include "io/safetensors.h"
#include "m3d/error.h"

namespace m3d::io {

c10::ScalarType dtype_to_scalar(DType dtype) {
  switch (dtype) {
    case DType::F64:
      return c10::kDouble;
    case DType::F32:
      return c10::kFloat;
    case DType::F16:
      return c10::kHalf;
    case DType::BF16:
      return c10::kBFloat16;
    case DType::I64:
      return c10::kLong;
    case DType::I32:
      return c10::kInt;
    case DType::I16:
      return c10::kShort;
    case DType::I8:
      return c10::kChar;
    case DType::U8:
      return c10::kByte;
    case DType::BOOL:
      return c10::kBool;
  }
  fail("unreachable dtype");
}

DType dtype_from_scalar(c10::ScalarType type) {
  for (DType dtype : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    if (dtype_to_scalar(dtype) == type) return dtype;
  }
  fail("tensor type {} cannot be stored in safetensors", c10::toString(type));
}

at::Tensor tensor_from_record(const TensorRecord& record) {
  const auto options = at::TensorOptions().dtype(dtype_to_scalar(record.dtype)).device(at::kCPU);
  auto* data = const_cast<uint8_t*>(record.data);
  const bool aligned = reinterpret_cast<uintptr_t>(data) % dtype_size(record.dtype) == 0;
  if (aligned) {
    auto owner = record.file;  // keeps the mapping alive as long as the tensor
    return at::from_blob(
        data, record.shape, record.strides, [owner](void*) {}, options);
  }
  // Unaligned storage (possible in third-party files): copy the bytes the view spans.
  int64_t span = 1;
  for (size_t i = 0; i < record.shape.size(); ++i) {
    if (record.shape[i] == 0) span = 0;
  }
  if (span != 0) {
    for (size_t i = 0; i < record.shape.size(); ++i) span += (record.shape[i] - 1) * record.strides[i];
  }
  at::Tensor storage = at::empty({span}, options);
  if (span > 0) std::memcpy(storage.data_ptr(), data, static_cast<size_t>(span) * dtype_size(record.dtype));
  return storage.as_strided(record.shape, record.strides).clone();
}

void safetensors_save(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // contiguous CPU copies, alive until written
  std::vector<TensorBytes> records;
  keep.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    keep.push_back(tensor.detach().to(at::kCPU).contiguous());
    const at::Tensor& t = keep.back();
    records.push_back({name, dtype_from_scalar(t.scalar_type()), t.sizes().vec(), t.data_ptr(), t.nbytes()});
  }
  safetensors_write(path, records, metadata);
}

}  // namespace m3d::io
