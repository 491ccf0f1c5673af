// nltk.word_tokenize as nltk 3.8.1 runs it for METEOR (m3d_bench_spec.md §3.3): Punkt
// sentence splitting with nltk_data's English parameters (nltk/tokenize/punkt.py,
// PunktSentenceTokenizer.tokenize with realign_boundaries=True), then NLTKWordTokenizer
// (nltk/tokenize/destructive.py, convert_parentheses=False) on each sentence. The
// Punkt training code is left out. Python's re semantics come from PCRE2 with Unicode
// properties, str.lower / isupper / islower from utf8proc (Unicode 13 rather than
// Python 3.11's 14).
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace m3d::eval {

// nltk_data's tokenizers/punkt_tab/english/ under the repository root (scripts/fetch_vocab.sh).
inline constexpr const char* kPunktEnglishDir = "third_party/nltk/tokenizers/punkt_tab/english";

// nltk's PunktParameters: what training learnt from the WSJ corpus.
struct PunktParameters {
  std::unordered_set<std::string> abbrev_types;  // lower case, without the final period
  std::set<std::pair<std::string, std::string>> collocations;  // (word before a period, word after)
  std::unordered_set<std::string> sent_starters;
  std::unordered_map<std::string, int> ortho_context;  // type -> _ORTHO_* flags
};

// Reads abbrev_types.txt, collocations.tab, sent_starters.txt and ortho_context.tab of `dir`
// as nltk 3.9's load_punkt_params does.
PunktParameters punkt_parameters_load(const std::string& dir);

class PunktSentenceTokenizer {
 public:
  explicit PunktSentenceTokenizer(PunktParameters params) : params_(std::move(params)) {}

  // Byte ranges [begin, end) of the sentences of `text` (valid UTF-8, else m3d::Error).
  std::vector<std::pair<size_t, size_t>> span_tokenize(std::string_view text) const;
  std::vector<std::string> tokenize(std::string_view text) const;

  const PunktParameters& parameters() const { return params_; }

 private:
  bool text_contains_sentbreak(std::string_view context) const;

  PunktParameters params_;
};

// NLTKWordTokenizer().tokenize(sentence) on valid UTF-8.
std::vector<std::string> nltk_tokenize_words(const std::string& sentence);

// nltk.word_tokenize(text): the words of every Punkt sentence. Invalid UTF-8 is first
// replaced by U+FFFD (Python strings cannot hold it; the other metrics never fail on it).
std::vector<std::string> word_tokenize(const std::string& text, const PunktSentenceTokenizer& punkt);

// Python's str.lower() on valid UTF-8 (full mapping: U+0130 becomes "i\u0307"; final sigma).
std::string python_lower(std::string_view text);

}  // namespace m3d::eval
