// The non-text metrics of M3D-Bench with the official rules (m3d_bench_spec.md §2):
// closed-VQA correctness, box text parsing, the official "IoU" (enclosing-box
// denominator) and the true IoU, Dice (the official soft Dice and a hard Dice),
// retrieval recall@k in both directions, and M3D's box derivation from a mask. Torch-free.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace m3d::eval {

using Box = std::array<double, 6>;  // [d1, h1, w1, d2, h2, w2], normalized, maxima inclusive

// eval_vqa.py: correct iff `answer_choice + "."` occurs in the prediction (case-sensitive substring).
bool closed_vqa_correct(const std::string& prediction, const std::string& answer_choice);

// Bench/utils.py: the first "[n, n, n, n, n, n]" (", " separators; n = [-+]?\d*\.\d+|[-+]?\d+).
std::optional<Box> parse_box(const std::string& text);
// Python's str(list) of the box values as mask2box writes them (round(v, 3), repr floats).
std::string box_text(const Box& box);

// calculate_iou: prod(intersection) / (prod(enclosing extent) + 1e-6), per axis extents.
double iou_official(const Box& a, const Box& b);
// |A n B| / |A u B| for the same boxes (0 when both are empty).
double iou_true(const Box& a, const Box& b);

// BinaryDice (smooth 1) on probabilities p and a target g (negative values count as 0):
// 2 sum(p g) / (sum p + sum g + 1).
double dice_soft(const std::vector<float>& probabilities, const std::vector<float>& target);
// Hard Dice of p > 0.5 against g > 0: 2|P n G| / (|P| + |G|); 1 when both are empty.
double dice_hard(const std::vector<float>& probabilities, const std::vector<float>& target);

// calculate_recall: the fraction of rows i whose column i is among the row's k
// largest similarities (row-major n x n; ties: the lower index first).
double recall_at_k(const std::vector<float>& similarity, int64_t n, int64_t k);
// The same on the transpose (text -> image when rows are images).
double recall_at_k_transposed(const std::vector<float>& similarity, int64_t n, int64_t k);

// mask2box on a (D, H, W) mask: [min_d/D, min_h/H, min_w/W, max_d/D, max_h/H, max_w/W],
// each round(v, 3) (round half to even on the binary value, as Python); nullopt when empty.
std::optional<Box> mask_to_box(const std::vector<uint8_t>& mask, int64_t depth, int64_t height, int64_t width);

}  // namespace m3d::eval
