// Scoring report pairs with M3D-Bench's text metrics: sentence BLEU-1 and rouge_score's
// ROUGE-1/2/L/Lsum per pair, over the 500 pairs of tests/fixtures/metrics/text_metrics.json
// repeated to N pairs; median of R runs. bench/metrics_reference.py times the Python packages.
//   bench_metrics [--pairs N] [--repeat R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "eval/text_metrics.h"
#include "io/json_util.h"

int main(int argc, char** argv) {
  int64_t pairs = 2000;
  int repeat = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--pairs") pairs = std::stoll(argv[i + 1]);
    if (flag == "--repeat") repeat = std::stoi(argv[i + 1]);
  }
  const auto corpus = m3d::io::json_read_file(std::string(M3D_SOURCE_DIR) + "/tests/fixtures/metrics/text_metrics.json")["pairs"];
  std::vector<std::pair<std::string, std::string>> items;
  for (int64_t n = 0; n < pairs; ++n) {
    const auto& p = corpus[static_cast<size_t>(n) % corpus.size()];
    items.emplace_back(p["prediction"].get<std::string>(), p["references"][0].get<std::string>());
  }
  std::vector<double> times;
  double checksum = 0;
  for (int r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (const auto& [pred, ref] : items) {
      checksum += m3d::eval::bleu(pred, {ref}, 1);
      const auto s = m3d::eval::rouge(pred, {ref});
      checksum += s.rouge1.fmeasure + s.rouge2.fmeasure + s.rougeL.fmeasure + s.rougeLsum.fmeasure;
    }
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  std::printf("{\"impl\": \"m3d\", \"pairs\": %lld, \"bleu1_rouge_s\": %.3f, \"checksum\": %.6f}\n", static_cast<long long>(pairs),
              times[times.size() / 2], checksum / repeat);
  return 0;
}
