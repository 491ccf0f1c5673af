// M3D-Bench text metrics against the Python packages the official evaluation
// calls (tools/reference/make_metric_fixtures.py): BLEU (13a + compute_bleu, via
// sacrebleu), rouge_score, and the `rouge` package, on 500 radiology-style pairs;
// m3d score's columns (METEOR too) against the official columns of predictions CSVs.
#include <gtest/gtest.h>

#include <cmath>

#include "eval/porter.h"
#include "eval/task_metrics.h"
#include "eval/text_metrics.h"
#include "test_support.h"

namespace m3d::eval {
namespace {

const nlohmann::json& reference() {
  static const nlohmann::json json = test::read_json(test::fixture("metrics/text_metrics.json"));
  return json;
}

constexpr double kTolerance = 1e-6;

TEST(TextMetrics, PorterStemmerMatchesNltk) {
  size_t checked = 0;
  for (const auto& [word, stem] : reference()["porter"].items()) {
    EXPECT_EQ(porter_stem(word), stem.get<std::string>()) << word;
    ++checked;
  }
  EXPECT_GT(checked, 300u);
}

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

namespace m3d::eval {
namespace {

const nlohmann::json& task_reference() {
  static const nlohmann::json json = test::read_json(test::fixture("metrics/task_metrics.json"));
  return json;
}

TEST(TaskMetrics, ClosedVqaRuleIsTheOfficialSubstringTest) {
  for (const auto& c : task_reference()["closed_vqa"]) {
    EXPECT_EQ(closed_vqa_correct(c["prediction"], c["choice"]), c["correct"].get<int>() == 1) << c.dump();
  }
}

TEST(TaskMetrics, BoxParsingMatchesTheOfficialRegex) {
  for (const auto& c : task_reference()["boxes"]) {
    const auto box = text::parse_box(c["text"]);
    if (c["box"].is_null()) {
      EXPECT_FALSE(box.has_value()) << c["text"];
    } else {
      ASSERT_TRUE(box.has_value()) << c["text"];
      const auto want = c["box"].get<std::vector<double>>();
      for (size_t i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ((*box)[i], want[i]) << c["text"];
    }
  }
}

TEST(TaskMetrics, IouOfficialAndTrue) {
  for (const auto& c : task_reference()["iou"]) {
    const auto a = c["a"].get<std::vector<double>>(), b = c["b"].get<std::vector<double>>();
    Box x{}, y{};
    std::copy(a.begin(), a.end(), x.begin());
    std::copy(b.begin(), b.end(), y.begin());
    EXPECT_NEAR(iou_official(x, y), c["official"].get<double>(), 1e-12) << c.dump();
    EXPECT_NEAR(iou_true(x, y), c["true"].get<double>(), 1e-12) << c.dump();
    EXPECT_LE(iou_official(x, y), iou_true(x, y) + 1e-12);  // the enclosing box is never smaller than the union
  }
  // Hand-checked: two unit cubes offset by half along one axis.
  const Box a{0, 0, 0, 1, 1, 1}, b{0.5, 0, 0, 1.5, 1, 1};
  EXPECT_NEAR(iou_true(a, b), 0.5 / 1.5, 1e-12);
  EXPECT_NEAR(iou_official(a, b), 0.5 / (1.5 + 1e-6), 1e-12);
}

TEST(TaskMetrics, MaskToBoxIsM3dsMask2box) {
  for (const auto& c : task_reference()["mask2box"]) {
    const auto shape = c["shape"].get<std::vector<int64_t>>();
    const auto mask = c["mask"].get<std::vector<uint8_t>>();
    const auto box = text::mask_to_box(mask, shape[0], shape[1], shape[2]);
    if (c["box"].is_null()) {
      EXPECT_FALSE(box.has_value());
      continue;
    }
    ASSERT_TRUE(box.has_value());
    const auto want = c["box"].get<std::vector<double>>();
    for (size_t i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ((*box)[i], want[i]) << c["text"];
    EXPECT_EQ(text::box_text(*box), c["text"].get<std::string>());
  }
  EXPECT_EQ(text::box_text({0.062, 0.5, 0.0, 0.969, 1.0, 0.25}), "[0.062, 0.5, 0.0, 0.969, 1.0, 0.25]");
}

TEST(TaskMetrics, DiceSoftAndHard) {
  for (const auto& c : task_reference()["dice"]) {
    const auto p = c["p"].get<std::vector<float>>(), g = c["g"].get<std::vector<float>>();
    EXPECT_NEAR(dice_soft(p, g), c["soft"].get<double>(), 1e-6);
    EXPECT_NEAR(dice_hard(p, g), c["hard"].get<double>(), 1e-6);  // the reference divides in float32
  }
  EXPECT_NEAR(dice_soft({1, 1, 0}, {1, 1, 0}), 4.0 / 5.0, 1e-12);  // the smoothing term keeps a perfect soft Dice below 1
  EXPECT_EQ(dice_hard({0.9f, 0.2f}, {1, 0}), 1.0);
  EXPECT_EQ(dice_hard({0.1f}, {0}), 1.0);
}

TEST(TaskMetrics, RecallAtKBothDirections) {
  for (const auto& c : task_reference()["recall"]) {
    const int64_t n = c["n"];
    const auto s = c["similarity"].get<std::vector<float>>();
    for (const auto& [k, v] : c["i2t"].items()) EXPECT_NEAR(recall_at_k(s, n, std::stoll(k)), v.get<double>(), 1e-6) << n << " R@" << k;
    for (const auto& [k, v] : c["t2i"].items()) { EXPECT_NEAR(recall_at_k_transposed(s, n, std::stoll(k)), v.get<double>(), 1e-6) << n << " R@" << k; }
  }
  // (The reference averages in float32, hence 1e-6.) Hand-checked: the identity ranks every row's own column first.
  EXPECT_EQ(recall_at_k({1, 0, 0, 1}, 2, 1), 1.0);
  EXPECT_EQ(recall_at_k({0, 1, 1, 0}, 2, 1), 0.0);
}

}  // namespace
}  // namespace m3d::eval

#include "eval/score.h"
#include "io/csv.h"

namespace m3d::eval {
namespace {

const MeteorData& meteor_data() {  // fails the tests that need it when the data is missing
  static const MeteorData data = score_meteor_data_load(std::string(M3D_SOURCE_DIR) + "/" + kPunktEnglishDir, kWordNetDir);
  return data;
}

// Predictions files written by csv.writer with the official columns, their metric
// columns filled by the reference packages: m3d score recomputes the same values.
// (bert_f1, from bert_score with MiniLM, is checked through the m3d program: test_cli.)
TEST(Score, ReportRowsMatchTheOfficialColumns) {
  const auto table = io::csv_read(test::fixture("metrics/report_predictions.csv"));
  ScoreOptions options;
  options.meteor = &meteor_data();
  const ScoreResult r = score_predictions("report", table, "report.csv", options);
  const int bleu = table.column("bleu"), rouge1 = table.column("rouge1"), meteor = table.column("meteor");
  const int m3d_bleu = r.scored.column("m3d_bleu"), m3d_rouge1 = r.scored.column("m3d_rouge1"), m3d_meteor = r.scored.column("m3d_meteor");
  ASSERT_GE(m3d_bleu, 0);
  ASSERT_GE(m3d_meteor, 0);
  double sum = 0, sum_meteor = 0;
  for (size_t i = 0; i < table.rows.size(); ++i) {
    EXPECT_NEAR(std::stod(r.scored.rows[i][m3d_bleu]), std::stod(table.rows[i][bleu]), 1e-6) << i;
    EXPECT_NEAR(std::stod(r.scored.rows[i][m3d_rouge1]), std::stod(table.rows[i][rouge1]), 1e-6) << i;
    EXPECT_NEAR(std::stod(r.scored.rows[i][m3d_meteor]), std::stod(table.rows[i][meteor]), 1e-6) << i;
    sum += std::stod(table.rows[i][bleu]);
    sum_meteor += std::stod(table.rows[i][meteor]);
  }
  const auto n = static_cast<double>(table.rows.size());
  EXPECT_NEAR(r.summary["metrics"]["m3d_bleu"].get<double>(), sum / n, 1e-6);
  EXPECT_NEAR(r.summary["metrics"]["m3d_meteor"].get<double>(), sum_meteor / n, 1e-6);
  // Without a BERTScore model the summary says why, and no column pretends otherwise.
  EXPECT_EQ(r.scored.column("m3d_bert_f1"), -1);
  EXPECT_NE(r.summary["not_computed"]["m3d_bert_f1"].get<std::string>().find("roberta-large, 17 layers"), std::string::npos);
  EXPECT_NE(r.markdown.find("| m3d_bert_f1 | not computed: needs a BERTScore model"), std::string::npos) << r.markdown;
}

TEST(Score, MissingMeteorDataIsAClearError) {
  const auto table = io::csv_read(test::fixture("metrics/report_predictions.csv"));
  test::expect_one_line_error([&] { score_predictions("vqa-open", table, "r.csv"); }, "r.csv", "task 'vqa-open' needs a column 'Answer'");
  test::expect_one_line_error([&] { score_predictions("report", table, "r.csv"); }, "r.csv", "computes METEOR: its data was not given");
  test::expect_one_line_error([&] { score_meteor_data_load("/nonexistent", kWordNetDir); }, "/nonexistent/abbrev_types.txt", "scripts/fetch_vocab.sh");
  test::expect_one_line_error([&] { score_meteor_data_load(std::string(M3D_SOURCE_DIR) + "/" + kPunktEnglishDir, "/nonexistent"); }, "/nonexistent/",
                              "wordnet-base");
  ScoreOptions options;
  options.meteor = &meteor_data();
  options.bert_f1 = [](const std::vector<std::string>&, const std::vector<std::string>&) { return std::vector<double>{0.5}; };
  test::expect_one_line_error([&] { score_predictions("report", table, "r.csv", options); }, "r.csv", "BERTScore gave 1 values for 92 samples");
}

TEST(Score, ClosedVqaAndRecMatchTheOfficialColumns) {
  const auto vqa = io::csv_read(test::fixture("metrics/vqa_closed_predictions.csv"));
  const ScoreResult v = score_predictions("vqa-closed", vqa, "vqa.csv");
  double correct = 0;
  for (size_t i = 0; i < vqa.rows.size(); ++i) {
    EXPECT_EQ(v.scored.rows[i][v.scored.column("m3d_correct")], vqa.rows[i][vqa.column("Correct")]) << i;
    correct += std::stod(vqa.rows[i][vqa.column("Correct")]);
  }
  EXPECT_NEAR(v.summary["metrics"]["m3d_correct"].get<double>(), correct / static_cast<double>(vqa.rows.size()), 1e-12);
  EXPECT_EQ(v.summary["groups"].size(), 5u);
  const auto rec = io::csv_read(test::fixture("metrics/rec_predictions.csv"));
  const ScoreResult r = score_predictions("rec", rec, "rec.csv");
  for (size_t i = 0; i < rec.rows.size(); ++i) {
    EXPECT_NEAR(std::stod(r.scored.rows[i][r.scored.column("m3d_iou")]), std::stod(rec.rows[i][rec.column("IOU")]), 1e-6) << i;
  }
  EXPECT_GT(r.summary["rows_without_a_box"].get<int64_t>(), 0);
}

TEST(Score, BadInputIsAClearError) {
  const auto table = io::csv_read(test::fixture("metrics/vqa_closed_predictions.csv"));
  const auto no_pred = io::csv_parse("Question,Ground Truth\nq,a\n", "n.csv");
  test::expect_one_line_error([&] { score_predictions("report", no_pred, "n.csv"); }, "n.csv",
                              "task 'report' needs a column 'pred'; the file has: Question, Ground Truth");
  test::expect_one_line_error([&] { score_predictions("segmentation", table, "v.csv"); }, "", "unknown task 'segmentation'");
  test::expect_one_line_error([&] { score_predictions("vqa-closed", io::csv_parse("Pred,Answer Choice\n", "e.csv"), "e.csv"); }, "e.csv", "no predictions");
  test::expect_one_line_error([&] { io::csv_parse("a,b\n1,2,3\n", "x.csv"); }, "x.csv", "row 1 has 3 fields, the header has 2");
  test::expect_one_line_error([&] { io::csv_parse("a,b\n\"open,2\n", "q.csv"); }, "q.csv", "line 2: a quoted field is not closed");
  test::expect_one_line_error([&] { io::csv_parse("", "z.csv"); }, "z.csv", "empty CSV");
  test::expect_one_line_error([&] { io::csv_read("/nonexistent.csv"); }, "/nonexistent.csv", "cannot open");
  const auto quoted = io::csv_parse("a,b\r\n\"x, \"\"y\"\"\",\"line\nbreak\"\r\n", "ok.csv");
  EXPECT_EQ(quoted.rows[0][0], "x, \"y\"");
  EXPECT_EQ(quoted.rows[0][1], "line\nbreak");
  EXPECT_EQ(io::csv_line(quoted.rows[0]), "\"x, \"\"y\"\"\",\"line\nbreak\"\n");
}

}  // namespace
}  // namespace m3d::eval
