// See task_metrics.h. Sources: Bench/eval/eval_vqa.py (closed-VQA rule),
// Bench/utils.py (calculate_iou), Bench/eval/metrics.py (BinaryDice).
#include "eval/task_metrics.h"

#include <algorithm>
#include <cmath>

namespace m3d::eval {
namespace {

double extent(double lo, double hi) { return std::max(0.0, hi - lo); }

}  // namespace

bool closed_vqa_correct(const std::string& prediction, const std::string& answer_choice) { return prediction.find(answer_choice + ".") != std::string::npos; }

double iou_official(const Box& a, const Box& b) {
  double intersection = 1, enclosing = 1;
  for (int axis = 0; axis < 3; ++axis) {
    const double lo1 = a[axis], hi1 = a[axis + 3], lo2 = b[axis], hi2 = b[axis + 3];
    intersection *= std::max(0.0, std::min(hi1, hi2) - std::max(lo1, lo2));
    enclosing *= std::max(hi1, hi2) - std::min(lo1, lo2);
  }
  return intersection / (enclosing + 1e-6);
}

double iou_true(const Box& a, const Box& b) {
  double intersection = 1, volume_a = 1, volume_b = 1;
  for (int axis = 0; axis < 3; ++axis) {
    intersection *= extent(std::max(a[axis], b[axis]), std::min(a[axis + 3], b[axis + 3]));
    volume_a *= extent(a[axis], a[axis + 3]);
    volume_b *= extent(b[axis], b[axis + 3]);
  }
  const double union_volume = volume_a + volume_b - intersection;
  return union_volume > 0 ? intersection / union_volume : 0.0;
}

double dice_soft(const std::vector<float>& p, const std::vector<float>& g) {
  double overlap = 0, sum_p = 0, sum_g = 0;
  const size_t n = std::min(p.size(), g.size());
  for (size_t i = 0; i < n; ++i) {
    const double t = g[i] < 0 ? 0.0 : g[i];
    overlap += p[i] * t;
    sum_p += p[i];
    sum_g += t;
  }
  return 2 * overlap / (sum_p + sum_g + 1);
}

double dice_hard(const std::vector<float>& p, const std::vector<float>& g) {
  int64_t both = 0, count_p = 0, count_g = 0;
  const size_t n = std::min(p.size(), g.size());
  for (size_t i = 0; i < n; ++i) {
    const bool a = p[i] > 0.5f, b = g[i] > 0;
    both += a && b, count_p += a, count_g += b;
  }
  return count_p + count_g == 0 ? 1.0 : 2.0 * static_cast<double>(both) / static_cast<double>(count_p + count_g);
}

}  // namespace m3d::eval
