// See report.h. Source: M3D LaMed/src/dataset/multi_dataset.py ITRDataset.truncate_text.
#include "text/report.h"

#include <algorithm>
#include <vector>

namespace m3d::text {

std::string report_truncate(const std::string& report, const Tokenizer& tokenizer, int64_t max_tokens, std::mt19937_64& rng) {
  auto count = [&](const std::string& s) { return static_cast<int64_t>(tokenizer.encode(s).size()); };
  if (count(report) <= max_tokens) return report;
  std::vector<std::string> sentences;
  size_t start = 0;
  for (size_t dot; (dot = report.find('.', start)) != std::string::npos; start = dot + 1) sentences.push_back(report.substr(start, dot - start));
  sentences.push_back(report.substr(start));
  std::vector<std::string> selected = {sentences.front()};
  sentences.erase(sentences.begin());
  int64_t tokens = 0;
  while (tokens <= max_tokens && !sentences.empty()) {
    const size_t pick = static_cast<size_t>(rng() % sentences.size());
    const int64_t n = count(sentences[pick]);
    if (tokens + n <= max_tokens && std::find(selected.begin(), selected.end(), sentences[pick]) == selected.end()) {
      selected.push_back(sentences[pick]);
      tokens += n;
    } else {
      sentences.erase(sentences.begin() + static_cast<std::ptrdiff_t>(pick));
    }
  }
  std::string out;
  for (size_t i = 0; i < selected.size(); ++i) out += (i ? "." : "") + selected[i];
  return out;
}

}  // namespace m3d::text
