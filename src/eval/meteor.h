// METEOR as M3D-Bench computes it (m3d_bench_spec.md §3.3): HF `evaluate` 0.4.1's
// "meteor" = nltk 3.8.1 nltk/translate/meteor_score.py on nltk.word_tokenize output.
// Tokens are lower-cased, then matched in three greedy stages (exact, Porter stem,
// WordNet synonym of the stem), each pairing hypothesis words from last to first with
// the last unmatched equal reference word; score = (1 - gamma * (chunks/m)^beta) *
// P*R / (alpha*P + (1-alpha)*R), and 0 wherever Python divides by zero.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "eval/nltk_tokenize.h"
#include "eval/wordnet.h"

namespace m3d::eval {

// evaluate's defaults, which are nltk's.
struct MeteorParams {
  double alpha = 0.9, beta = 3.0, gamma = 0.5;
};

// What METEOR reads: the English Punkt parameters and WordNet 3.0 (not thread-safe: the
// WordNet caches). Load once, score many.
struct MeteorData {
  PunktSentenceTokenizer punkt;
  WordNet wordnet;
};
// Paths relative to the working directory unless absolute; errors say which file is missing
// and how to get it (scripts/fetch_vocab.sh, scripts/setup.sh).
MeteorData meteor_data_load(const std::string& punkt_dir = kPunktEnglishDir, const std::string& wordnet_dir = kWordNetDir);

struct MeteorAlignment {
  std::vector<std::pair<int64_t, int64_t>> matches;  // (hypothesis index, reference index), by hypothesis index
  int64_t chunks = 0;  // 0 without matches
};

// _enum_align_words on lower-cased token lists, and single_meteor_score.
MeteorAlignment meteor_align(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference, const WordNet& wordnet);
double meteor_tokens(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference, const WordNet& wordnet,
                     const MeteorParams& params = {});

// evaluate's meteor for one sample: word_tokenize both texts; the best reference's score
// (0 without references, where Python's max() raises).
double meteor(const std::string& prediction, const std::vector<std::string>& references, const MeteorData& data, const MeteorParams& params = {});
double meteor(const std::string& prediction, const std::string& reference, const MeteorData& data, const MeteorParams& params = {});

}  // namespace m3d::eval
