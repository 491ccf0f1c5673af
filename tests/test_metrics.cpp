// M3D-Bench text metrics against the Python packages the official evaluation
// calls (tools/reference/make_metric_fixtures.py): BLEU (13a + compute_bleu, via
// sacrebleu), rouge_score, and the `rouge` package, on 500 radiology-style pairs.
#include <gtest/gtest.h>

#include <cmath>

#include "eval/text_metrics.h"
#include "test_support.h"

namespace m3d::eval {
namespace {

const nlohmann::json& reference() {
  static const nlohmann::json json = test::read_json(test::fixture("metrics/text_metrics.json"));
  return json;
}

constexpr double kTolerance = 1e-6;

TEST(TextMetrics, TokenizersMatch) {
  size_t checked = 0;
  for (const auto& p : reference()["pairs"]) {
    if (!p.contains("tokens_13a")) continue;
    const std::string text = p["prediction"];
    EXPECT_EQ(tokenize_13a(text), p["tokens_13a"].get<std::vector<std::string>>()) << text;
    EXPECT_EQ(rouge_tokenize(text), p["rouge_tokens"].get<std::vector<std::string>>()) << text;
    ++checked;
  }
  EXPECT_GT(checked, 100u);
}

TEST(TextMetrics, SentenceBleuMatchesOnEveryPair) {
  const auto& pairs = reference()["pairs"];
  ASSERT_GE(pairs.size(), 500u);
  size_t identical = 0, checked = 0;
  for (const auto& p : pairs) {
    if (p["bleu1"].is_null()) continue;
    ++checked;  // several references: see the hand-checked case below
    const std::string pred = p["prediction"];
    const auto refs = p["references"].get<std::vector<std::string>>();
    const double b1 = bleu(pred, refs, 1), b4 = bleu(pred, refs, 4);
    EXPECT_NEAR(b1, p["bleu1"].get<double>(), kTolerance) << pred;
    EXPECT_NEAR(b4, p["bleu4"].get<double>(), kTolerance) << pred;
    identical += std::abs(b1 - p["bleu1"].get<double>()) <= kTolerance && std::abs(b4 - p["bleu4"].get<double>()) <= kTolerance;
  }
  std::printf("BLEU-1 and BLEU-4: %zu of %zu single-reference pairs within %g\n", identical, checked, kTolerance);
  EXPECT_GE(checked, 450u);
}

TEST(TextMetrics, CorpusBleuAndTheSpecVector) {
  BleuStats one, four;
  for (const auto& p : reference()["pairs"]) {
    const std::vector<std::string> ref{p["references"][0].get<std::string>()};
    one.add(bleu_stats(p["prediction"], ref, 1));
    four.add(bleu_stats(p["prediction"], ref, 4));
  }
  EXPECT_NEAR(bleu_score(one), reference()["corpus_bleu1"].get<double>(), kTolerance);
  EXPECT_NEAR(bleu_score(four), reference()["corpus_bleu4"].get<double>(), kTolerance);
  // m3d_bench_spec.md §3.8.
  const std::string ref = "The liver is enlarged with multiple hypodense lesions in the right lobe.";
  const std::string hyp = "Enlarged liver with several hypodense lesions in right hepatic lobe.";
  EXPECT_NEAR(bleu(hyp, {ref}, 1), 0.606366, 1e-6);
  EXPECT_NEAR(rouge(hyp, {ref}).rouge1.fmeasure, 0.727273, 1e-6);
  EXPECT_EQ(bleu("", {ref}, 1), 0.0);  // Python divides by zero here; m3d scores 0
  // Several references: compute_bleu's brevity penalty uses the shortest (3 tokens < 6), so none applies.
  EXPECT_NEAR(bleu("a b c d e f", {"a b c d e f g", "a b c"}, 1), 1.0, 1e-12);
  EXPECT_NEAR(bleu("a b c", {"a b c d e f"}, 1), std::exp(1.0 - 6.0 / 3.0), 1e-12);
}

void expect_prf(const Prf& got, const nlohmann::json& want, const std::string& what) {
  EXPECT_NEAR(got.precision, want[0].get<double>(), kTolerance) << what;
  EXPECT_NEAR(got.recall, want[1].get<double>(), kTolerance) << what;
  EXPECT_NEAR(got.fmeasure, want[2].get<double>(), kTolerance) << what;
}

TEST(TextMetrics, RougeScoreMatchesOnEveryPair) {
  for (const auto& p : reference()["pairs"]) {
    const std::string pred = p["prediction"];
    const RougeScores s = rouge(pred, p["references"].get<std::vector<std::string>>());
    expect_prf(s.rouge1, p["rouge"]["rouge1"], "rouge1: " + pred);
    expect_prf(s.rouge2, p["rouge"]["rouge2"], "rouge2: " + pred);
    expect_prf(s.rougeL, p["rouge"]["rougeL"], "rougeL: " + pred);
    expect_prf(s.rougeLsum, p["rouge"]["rougeLsum"], "rougeLsum: " + pred);
  }
}

TEST(TextMetrics, RougePackageMatchesOnEveryPair) {
  size_t invalid = 0;
  for (const auto& p : reference()["pairs"]) {
    const std::string pred = p["prediction"];
    const RougePackageScores s = rouge_package(pred, p["references"][0].get<std::string>());
    if (p["rouge_package"].is_null()) {
      EXPECT_FALSE(s.valid) << pred;
      ++invalid;
      continue;
    }
    ASSERT_TRUE(s.valid) << pred;
    expect_prf(s.rouge1, p["rouge_package"]["rouge-1"], "rouge-1: " + pred);
    expect_prf(s.rouge2, p["rouge_package"]["rouge-2"], "rouge-2: " + pred);
    expect_prf(s.rougeL, p["rouge_package"]["rouge-l"], "rouge-l: " + pred);
  }
  EXPECT_GT(invalid, 0u);  // the corpus has the empty cases the package refuses
}

}  // namespace
}  // namespace m3d::eval
