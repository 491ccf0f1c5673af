// Unmasked softmax self-attention over a fused qkv projection, computed in row blocks
// so that each block of scores stays in the CPU cache (the ViT3D's 2,049-token attention
// has 16.8 MB of scores per head).
#pragma once

#include <ATen/core/Tensor.h>

namespace m3d::models {

// qkv: (B, N, 3 * H * d), feature j = (q|k|v, head, dim) as MONAI's SABlock splits it.
// Returns (B, N, H * d) = softmax(q k^T * scale) v with heads concatenated, the same
// numbers as the plain formulation up to rounding. On the CPU the score matrix is
// built block by block; with autograd on, the probabilities are kept for a custom
// backward that also runs block by block. On other devices it runs the plain ops.
at::Tensor fused_qkv_attention(const at::Tensor& qkv, int64_t num_heads, double scale);

// The plain formulation (matmul, softmax, matmul), for tests and other devices. With
// first_queries > 0 only the first that many tokens are queries (every token stays a key
// and value): (B, first_queries, H * d).
at::Tensor plain_qkv_attention(const at::Tensor& qkv, int64_t num_heads, double scale, int64_t first_queries = -1);

}  // namespace m3d::models
