#include "data/sample.h"

#include "text/report.h"

namespace m3d::data {

std::mt19937_64 sample_rng(uint64_t seed, uint64_t purpose, uint64_t epoch, uint64_t index) {
  std::seed_seq seq{static_cast<uint32_t>(seed),  static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(purpose),
                    static_cast<uint32_t>(epoch), static_cast<uint32_t>(index),      static_cast<uint32_t>(index >> 32)};
  return std::mt19937_64(seq);
}

std::string report_truncate_seeded(const std::string& report, const text::Tokenizer& tokenizer, int64_t max_tokens, uint64_t seed, int64_t index) {
  auto rng = sample_rng(seed, 2, 0, static_cast<uint64_t>(index));
  return text::report_truncate(report, tokenizer, max_tokens, rng);
}

const std::vector<std::string>& caption_templates() {
  static const std::vector<std::string> templates = {"Can you provide a caption consists of findings for this medical image?",
                                                     "Please generate a medical report based on this image.",
                                                     "Describe the findings of the medical image you see."};
  return templates;
}

}  // namespace m3d::data
