// The non-text metrics of M3D-Bench with the official rules (m3d_bench_spec.md §2):
// closed-VQA correctness, the official "IoU" (enclosing-box denominator) and the true
// IoU, Dice (the official soft Dice and a hard Dice); retrieval recall@k in both
// directions comes from data/retrieval.h (training's evaluation scores with it too).
// Torch-free. Boxes themselves (text, parsing, from a mask): text/box.h.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/retrieval.h"
#include "text/box.h"

namespace m3d::eval {

using text::Box;

// eval_vqa.py: correct iff `answer_choice + "."` occurs in the prediction (case-sensitive substring).
bool closed_vqa_correct(const std::string& prediction, const std::string& answer_choice);

// calculate_iou: prod(intersection) / (prod(enclosing extent) + 1e-6), per axis extents.
double iou_official(const Box& a, const Box& b);
// |A n B| / |A u B| for the same boxes (0 when both are empty).
double iou_true(const Box& a, const Box& b);

// BinaryDice (smooth 1) on probabilities p and a target g (negative values count as 0):
// 2 sum(p g) / (sum p + sum g + 1).
double dice_soft(const std::vector<float>& probabilities, const std::vector<float>& target);
// Hard Dice of p > 0.5 against g > 0: 2|P n G| / (|P| + |G|); 1 when both are empty.
double dice_hard(const std::vector<float>& probabilities, const std::vector<float>& target);

// Retrieval recall@k (eval_itr.py calculate_recall), defined in data/retrieval.h.
using data::recall_at_k;
using data::recall_at_k_transposed;

}  // namespace m3d::eval
