// ggml tensor element types as stored in GGUF files: block sizes, bytes per block,
// and the plain reference conversions to f32 that every fast kernel is tested
// against. Layouts follow ggml's block_* structs (ggml-common.h) and the numpy
// reference in gguf-py's quants.py; tests/test_gguf.cpp checks each against
// gguf-py's own dequantize. Torch-free; little-endian hosts only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace m3d::io {

// Values are ggml's `enum ggml_type` (stored as uint32 in GGUF tensor infos).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
};

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;  // as gguf-py spells it: "Q4_K", "BF16"
  int64_t block_size;  // elements per block (1 for plain types)
  size_t type_size;  // bytes per block
  bool dequantize;  // ggml_dequantize supports it
};

// nullopt for a value that is no ggml type (or one ggml has removed: 4, 5, 31-33).
std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type);
const GgmlTypeInfo& ggml_type_info(GgmlType type);
std::string_view ggml_type_name(GgmlType type);
// The types ggml_dequantize supports, comma separated, for error messages.
std::string ggml_dequantize_supported_list();

// Writes `n` f32 values decoded from `src` (n / block_size blocks). Throws
// m3d::Error when the type has no reference dequantizer or n is not a whole
// number of blocks. Integer types convert to float like numpy's astype.
void ggml_dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n);

// Encodes `n` f32 values into n / block_size blocks with ggml's reference
// rounding (quantize_row_*_ref), bit-identical to gguf-py's quantize: Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1, plus F32, F16, BF16. Returns the bytes written.
size_t ggml_quantize(GgmlType type, const float* src, uint8_t* dst, int64_t n);

// IEEE half and bfloat16 conversions; f32 -> half rounds to nearest even like numpy's
// astype(float16), f32 -> bf16 like ggml_compute_fp32_to_bf16 (NaN kept quiet).
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

}  // namespace m3d::io
