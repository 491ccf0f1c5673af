// Retrieval scoring of an M3D-Cap split: recall@k of an image-report similarity matrix,
// both ways, as M3D-CLIP's evaluation computes it (Bench/eval/eval_itr.py calculate_recall).
// Training's periodic evaluation (train/clip_train) and the benchmark's itr task
// (eval/bench) score with it. Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace m3d::data {

// The fraction of rows i whose column i is among the row's k largest similarities
// (row-major n x n; ties: the lower index first).
double recall_at_k(const std::vector<float>& similarity, int64_t n, int64_t k);
// The same on the transpose (text -> image when rows are images).
double recall_at_k_transposed(const std::vector<float>& similarity, int64_t n, int64_t k);

}  // namespace m3d::data
