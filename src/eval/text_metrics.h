// Text metrics of M3D-Bench, as the Python packages the official evaluation calls
// compute them (m3d_bench_spec.md §3):
//  - BLEU: HF `evaluate` "bleu" = the 13a tokenizer + tensorflow/nmt compute_bleu
//    (clipped n-gram precision up to max_order, geometric mean, brevity penalty,
//    no smoothing); M3D records the sentence-level BLEU-1 of each sample;
//  - ROUGE: Google's `rouge_score` 0.1.2 (its tokenizer, no stemming; rouge1/2/L/Lsum;
//    several references: the one with the best F per type), which `evaluate` wraps;
//  - the `rouge` 1.0.1 package's ROUGE-1/2/L (set semantics, sentences split on '.'),
//    used by Bench/eval/metrics.py.
// Torch-free; UTF-8 in, ASCII-only case folding where Python would fold more.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace m3d::eval {

// sacrebleu / evaluate Tokenizer13a.
std::vector<std::string> tokenize_13a(const std::string& text);

struct BleuStats {
  std::vector<int64_t> matches, possible;  // per order 1..max_order
  int64_t prediction_length = 0, reference_length = 0;
  void add(const BleuStats& other);
};
BleuStats bleu_stats(const std::string& prediction, const std::vector<std::string>& references, int max_order);
// compute_bleu without smoothing; 0 for an empty prediction (the Python code divides by zero there).
double bleu_score(const BleuStats& stats);
double bleu(const std::string& prediction, const std::vector<std::string>& references, int max_order = 4);

struct Prf {
  double precision = 0, recall = 0, fmeasure = 0;
};

// rouge_score's tokenizer: lower case, runs of characters outside [a-z0-9] become spaces.
std::vector<std::string> rouge_tokenize(const std::string& text);
struct RougeScores {
  Prf rouge1, rouge2, rougeL, rougeLsum;
};
// rouge_score RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False).score_multi.
RougeScores rouge(const std::string& prediction, const std::vector<std::string>& references);

// The `rouge` package (1.0.1): Rouge().get_scores([prediction], [reference])[0].
struct RougePackageScores {
  Prf rouge1, rouge2, rougeL;
  bool valid = true;  // false where the package raises (empty hypothesis or reference)
};
RougePackageScores rouge_package(const std::string& prediction, const std::string& reference);

}  // namespace m3d::eval
