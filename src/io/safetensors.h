// safetensors (huggingface/safetensors): 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the
// data buffer. Reading validates every offset against the file before any tensor
// is made; writing is atomic (temp file, fsync, rename).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/tensor_record.h"

namespace m3d::io {

struct SafetensorsFile {
  std::shared_ptr<const MappedFile> file;
  std::map<std::string, std::string> metadata;
  std::vector<TensorRecord> tensors;  // sorted by name
};

// Largest header we accept; the official implementation uses the same bound.
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

SafetensorsFile safetensors_read(const std::string& path);
// Parses bytes that are already mapped; errors name file->path().
SafetensorsFile safetensors_parse(std::shared_ptr<const MappedFile> file);

// A contiguous tensor to write.
struct TensorBytes {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes `path` atomically: the bytes go to a temporary file in the same
// directory, which is fsynced and renamed over `path`, so a crash never leaves a
// half-written checkpoint under the final name.
void safetensors_write(const std::string& path, const std::vector<TensorBytes>& tensors, const std::map<std::string, std::string>& metadata = {});

}  // namespace m3d::io
