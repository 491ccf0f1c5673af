// Writes GGUF version 3 files (ggml docs/gguf.md) the way gguf-py's GGUFWriter lays
// them out: header, metadata in the order given, tensor infos in the order given,
// padding to the alignment, then each tensor's bytes padded to the alignment. The file
// goes temp -> fsync -> rename (io/atomic_file.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace m3d::io {

// One metadata value to write: a scalar or an array of one element type.
struct GgufWriteValue {
  GgufType type = GgufType::STRING;  // ARRAY for arrays
  GgufType element = GgufType::STRING;
  std::vector<std::string> strings;  // STRING scalar / array
  std::vector<int64_t> ints;  // integer and BOOL types
  std::vector<double> floats;  // F32 / F64

  static GgufWriteValue string(std::string value);
  static GgufWriteValue u32(uint32_t value);
  static GgufWriteValue i32(int32_t value);
  static GgufWriteValue u64(uint64_t value);
  static GgufWriteValue f32(float value);
  static GgufWriteValue boolean(bool value);
  static GgufWriteValue string_array(std::vector<std::string> values);
  static GgufWriteValue i32_array(std::vector<int32_t> values);
};

struct GgufWriteTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> shape;  // outermost first (as numpy); written innermost first
  std::vector<uint8_t> bytes;  // rows of whole blocks, row-major
};

// Throws m3d::Error naming `path` for a name over 63 bytes, more than 4 dimensions,
// a byte count that does not match the shape and type, or any write error.
void gguf_write(const std::string& path, const std::vector<std::pair<std::string, GgufWriteValue>>& metadata, const std::vector<GgufWriteTensor>& tensors,
                uint64_t alignment = 32);

}  // namespace m3d::io
