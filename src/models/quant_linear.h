// Weight matrices kept in GGUF blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) inside a
// Linear or Embedding: the bytes stay as the file has them (memory-mapped), products
// run in models/quant_matmul's kernels, and activations stay f32 around them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include "io/gguf_blocks.h"

namespace m3d::models {

struct QuantWeight {
  io::GgmlType type = io::GgmlType::Q8_0;
  int64_t rows = 0, cols = 0;  // (out, in) as an nn.Linear weight
  const uint8_t* data = nullptr;  // rows x row_bytes()
  std::shared_ptr<const void> owner;  // keeps `data` alive (the mapped file or an owned copy)

  size_t row_bytes() const;
};

// x (..., cols) times W^T (+ bias): (..., rows) in x's dtype, computed in f32 on the CPU.
at::Tensor quant_linear(const at::Tensor& x, const QuantWeight& w, const at::Tensor& bias = {});
// Rows `ids` of W dequantized (an embedding lookup): (ids..., cols) float32.
at::Tensor quant_rows(const QuantWeight& w, const at::Tensor& ids);
// The whole matrix dequantized, (rows, cols) float32.
at::Tensor quant_dequantize(const QuantWeight& w);

}  // namespace m3d::models
