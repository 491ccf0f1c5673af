// See retrieval.h. Source: Bench/eval/eval_itr.py (calculate_recall).
#include "data/retrieval.h"

#include <algorithm>

namespace m3d::data {
namespace {

double recall(const std::vector<float>& s, int64_t n, int64_t k, bool transposed) {
  if (n <= 0 || static_cast<int64_t>(s.size()) != n * n) return 0.0;
  k = std::min(k, n);
  int64_t hits = 0;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto value = [&](int64_t j) { return transposed ? s[static_cast<size_t>(j * n + i)] : s[static_cast<size_t>(i * n + j)]; };
    for (int64_t j = 0; j < n; ++j) order[static_cast<size_t>(j)] = j;
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int64_t a, int64_t b) { return value(a) > value(b) || (value(a) == value(b) && a < b); });
    hits += std::find(order.begin(), order.begin() + k, i) != order.begin() + k;
  }
  return static_cast<double>(hits) / static_cast<double>(n);
}

}  // namespace

double recall_at_k(const std::vector<float>& s, int64_t n, int64_t k) { return recall(s, n, k, false); }
double recall_at_k_transposed(const std::vector<float>& s, int64_t n, int64_t k) { return recall(s, n, k, true); }

}  // namespace m3d::data
