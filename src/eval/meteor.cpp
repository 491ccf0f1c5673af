// See meteor.h. Sources: nltk 3.8.1 nltk/translate/meteor_score.py (_generate_enums,
// _match_enums, _enum_stem_match, _enum_wordnetsyn_match, _enum_align_words,
// _count_chunks, single_meteor_score, meteor_score); evaluate v0.4.1
// metrics/meteor/meteor.py _compute (list references, nltk >= 3.6.5).
#include "eval/meteor.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "eval/porter.h"

namespace m3d::eval {
namespace {

using Enumerated = std::vector<std::pair<int64_t, std::string>>;  // (position, word)

// _match_enums: for each hypothesis word from the last, the last equal reference word; both leave the lists.
void match_equal(Enumerated& hyp, Enumerated& ref, std::vector<std::pair<int64_t, int64_t>>& matches) {
  for (size_t i = hyp.size(); i-- > 0;) {
    for (size_t j = ref.size(); j-- > 0;) {
      if (hyp[i].second != ref[j].second) continue;
      matches.emplace_back(hyp[i].first, ref[j].first);
      hyp.erase(hyp.begin() + static_cast<std::ptrdiff_t>(i));
      ref.erase(ref.begin() + static_cast<std::ptrdiff_t>(j));
      break;
    }
  }
}

Enumerated enumerate_lower(const std::vector<std::string>& words) {
  Enumerated out;
  for (size_t i = 0; i < words.size(); ++i) out.emplace_back(static_cast<int64_t>(i), python_lower(words[i]));
  return out;
}

}  // namespace

MeteorData meteor_data_load(const std::string& punkt_dir, const std::string& wordnet_dir) {
  return MeteorData{PunktSentenceTokenizer(punkt_parameters_load(punkt_dir)), WordNet(wordnet_dir)};
}

MeteorAlignment meteor_align(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference, const WordNet& wordnet) {
  MeteorAlignment out;
  Enumerated hyp = enumerate_lower(hypothesis), ref = enumerate_lower(reference);
  match_equal(hyp, ref, out.matches);  // 1. exact
  for (auto& [i, w] : hyp) w = porter_stem(w);
  for (auto& [j, w] : ref) w = porter_stem(w);
  match_equal(hyp, ref, out.matches);  // 2. Porter stems; the leftovers stay stemmed for stage 3
  for (size_t i = hyp.size(); i-- > 0 && !ref.empty();) {  // 3. WordNet synonyms of the hypothesis stem
    const auto& synonyms = wordnet.synonyms(hyp[i].second);
    for (size_t j = ref.size(); j-- > 0;) {
      if (!synonyms.count(ref[j].second)) continue;
      out.matches.emplace_back(hyp[i].first, ref[j].first);
      hyp.erase(hyp.begin() + static_cast<std::ptrdiff_t>(i));
      ref.erase(ref.begin() + static_cast<std::ptrdiff_t>(j));
      break;
    }
  }
  std::stable_sort(out.matches.begin(), out.matches.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  if (!out.matches.empty()) {
    out.chunks = 1;
    for (size_t k = 0; k + 1 < out.matches.size(); ++k) {
      const bool adjacent = out.matches[k + 1].first == out.matches[k].first + 1 && out.matches[k + 1].second == out.matches[k].second + 1;
      if (!adjacent) ++out.chunks;
    }
  }
  return out;
}

double meteor_tokens(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference, const WordNet& wordnet,
                     const MeteorParams& params) {
  if (hypothesis.empty() || reference.empty()) return 0.0;  // ZeroDivisionError -> 0.0
  const MeteorAlignment a = meteor_align(hypothesis, reference, wordnet);
  const double m = static_cast<double>(a.matches.size());
  const double precision = m / static_cast<double>(hypothesis.size());
  const double recall = m / static_cast<double>(reference.size());
  const double denominator = params.alpha * precision + (1 - params.alpha) * recall;
  if (denominator == 0 || a.matches.empty()) return 0.0;
  const double fmean = (precision * recall) / denominator;
  const double fragmentation = static_cast<double>(a.chunks) / m;
  const double penalty = params.gamma * std::pow(fragmentation, params.beta);
  return (1 - penalty) * fmean;
}

double meteor(const std::string& prediction, const std::vector<std::string>& references, const MeteorData& data, const MeteorParams& params) {
  const auto hypothesis = word_tokenize(prediction, data.punkt);
  double best = 0;
  for (size_t r = 0; r < references.size(); ++r) {  // meteor_score: max over the references
    const double s = meteor_tokens(hypothesis, word_tokenize(references[r], data.punkt), data.wordnet, params);
    best = r == 0 ? s : std::max(best, s);
  }
  return best;
}

double meteor(const std::string& prediction, const std::string& reference, const MeteorData& data, const MeteorParams& params) {
  return meteor(prediction, std::vector<std::string>{reference}, data, params);
}

}  // namespace m3d::eval
