// Scoring report pairs with M3D-Bench's text metrics: sentence BLEU-1, rouge_score's
// ROUGE-1/2/L/Lsum and METEOR (nltk 3.8.1's, with its Punkt and WordNet data) per pair,
// over the 500 pairs of tests/fixtures/metrics/text_metrics.json repeated to N pairs.
// Each run starts cold, as one `m3d score` process does: METEOR's data is loaded (its
// WordNet cache empty), then every pair is scored; then, cold again, the data load plus
// score_predictions (the m3d score path: strip, every metric, the CSV cells) on the
// same pairs as a table. Medians of R runs. bench/metrics_reference.py times the Python packages.
//   bench_metrics [--pairs N] [--repeat R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "eval/meteor.h"
#include "eval/score.h"
#include "eval/text_metrics.h"
#include "io/json_util.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t pairs = 2000;
  int repeat = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--pairs") pairs = std::stoll(argv[i + 1]);
    if (flag == "--repeat") repeat = std::stoi(argv[i + 1]);
  }
  const std::string source = M3D_SOURCE_DIR;
  const auto corpus = m3d::io::json_read_file(source + "/tests/fixtures/metrics/text_metrics.json")["pairs"];
  std::vector<std::pair<std::string, std::string>> items;
  m3d::io::CsvTable table;
  table.header = {"Ground Truth", "pred"};
  for (int64_t n = 0; n < pairs; ++n) {
    const auto& p = corpus[static_cast<size_t>(n) % corpus.size()];
    items.emplace_back(p["prediction"].get<std::string>(), p["references"][0].get<std::string>());
    table.rows.push_back({items.back().second, items.back().first});
  }
  std::vector<double> load, bleu_rouge, meteor, total, score_path;
  double checksum_bleu_rouge = 0, checksum_meteor = 0;
  for (int r = 0; r < repeat; ++r) {
    auto start = std::chrono::steady_clock::now();
    const m3d::eval::MeteorData data = m3d::eval::meteor_data_load(source + "/" + m3d::eval::kPunktEnglishDir, m3d::eval::kWordNetDir);
    load.push_back(seconds_since(start));
    start = std::chrono::steady_clock::now();
    for (const auto& [pred, ref] : items) {
      checksum_bleu_rouge += m3d::eval::bleu(pred, {ref}, 1);
      const auto s = m3d::eval::rouge(pred, {ref});
      checksum_bleu_rouge += s.rouge1.fmeasure + s.rouge2.fmeasure + s.rougeL.fmeasure + s.rougeLsum.fmeasure;
    }
    bleu_rouge.push_back(seconds_since(start));
    start = std::chrono::steady_clock::now();
    for (const auto& [pred, ref] : items) checksum_meteor += m3d::eval::meteor(pred, ref, data);
    meteor.push_back(seconds_since(start));
    total.push_back(load.back() + bleu_rouge.back() + meteor.back());
    start = std::chrono::steady_clock::now();
    const m3d::eval::MeteorData fresh = m3d::eval::meteor_data_load(source + "/" + m3d::eval::kPunktEnglishDir, m3d::eval::kWordNetDir);
    m3d::eval::ScoreOptions options;
    options.meteor = &fresh;
    m3d::eval::score_predictions("report", table, "bench", options);
    score_path.push_back(seconds_since(start));
  }
  std::printf(
      "{\"impl\": \"m3d\", \"pairs\": %lld, \"meteor_load_s\": %.3f, \"bleu1_rouge_s\": %.3f, \"meteor_s\": %.3f, \"total_s\": %.3f, "
      "\"score_predictions_s\": %.3f, \"checksum_bleu_rouge\": %.6f, \"checksum_meteor\": %.6f}\n",
      static_cast<long long>(pairs), median(load), median(bleu_rouge), median(meteor), median(total), median(score_path), checksum_bleu_rouge / repeat,
      checksum_meteor / repeat);
  return 0;
}
