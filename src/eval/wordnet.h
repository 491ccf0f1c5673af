// WordNet 3.0 as nltk 3.8.1's WordNetCorpusReader reads it for METEOR's synonym stage
// (nltk/corpus/reader/wordnet.py: _load_lemma_pos_offset_map, _load_exception_map, the
// lemma names of _synset_from_pos_and_line, _morphy, synsets). Reads the Princeton
// database files index.<pos>, data.<pos> and <pos>.exc of a dict folder, e.g. Debian
// wordnet-base's /usr/share/wordnet. Leaves out glosses, pointers, verb frames, sense
// keys, lexnames and the multilingual (OMW) data: METEOR only needs lemma names.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

namespace m3d::eval {

// Debian's wordnet-base (scripts/setup.sh).
inline constexpr const char* kWordNetDir = "/usr/share/wordnet";

class WordNet {
 public:
  // Indexes the four index files and reads the exception lists of `dir`; the data files are
  // memory-mapped and read where a synset is looked up. Not thread-safe (caches).
  explicit WordNet(const std::string& dir = kWordNetDir);
  ~WordNet();
  WordNet(WordNet&&) noexcept;
  WordNet& operator=(WordNet&&) noexcept;

  // nltk's _morphy(form, pos), pos one of n v a r (s reads as a): the forms of `form` that
  // index.<pos> lists, from the exception list or the detachment rules, in nltk's order.
  std::vector<std::string> morphy(const std::string& form, char pos) const;

  // The lemma names of the synsets wn.synsets(word) returns (every part of speech, markers
  // such as "(a)" removed, case kept), in nltk's order, repeats included.
  std::vector<std::string> synset_lemma_names(const std::string& word) const;

  // What meteor_score's _enum_wordnetsyn_match matches a hypothesis word against: `word`
  // and every name of synset_lemma_names(word) without "_". Cached per word.
  const std::unordered_set<std::string>& synonyms(const std::string& word) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace m3d::eval
