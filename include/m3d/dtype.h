// Element types of checkpoint tensors, spelled as safetensors spells them.
// Torch-free so the parsers can be fuzzed and sanitized without libtorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace m3d {

enum class DType : uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// "F32", "BF16", ...
std::string_view dtype_name(DType dtype);
// Bytes per element.
size_t dtype_size(DType dtype);
// Parses a safetensors dtype string; nullopt when it is not one we support.
std::optional<DType> dtype_parse(std::string_view name);
// The supported names, comma separated, for error messages.
std::string dtype_supported_list();

}  // namespace m3d
