// See wordnet.h. File formats: wndb(5WN) (index.pos, data.pos) and morphy(7WN) (pos.exc,
// the detachment rules); behaviour: nltk 3.8.1 nltk/corpus/reader/wordnet.py.
#include "eval/wordnet.h"

#include <fmt/format.h>

#include <filesystem>
#include <string_view>
#include <unordered_set>
#include <unordered_map>

#include "core/strings.h"
#include "eval/nltk_tokenize.h"
#include "io/mapped_file.h"
#include "m3d/error.h"

namespace m3d::eval {
namespace {

constexpr std::array<const char*, 4> kPosNames = {"noun", "verb", "adj", "adv"};  // POS_LIST order: n v a r

int pos_index(char pos) {
  switch (pos) {
    case 'n':
      return 0;
    case 'v':
      return 1;
    case 'a':
    case 's':
      return 2;  // satellites live in data.adj and share the adjective index and exceptions
    case 'r':
      return 3;
    default:
      fail("wordnet: unknown part of speech '{}' (expected n, v, a, s or r)", pos);
  }
}

std::shared_ptr<const io::MappedFile> open_file(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    fail(
        "wordnet: {} is missing (WordNet 3.0's database files: apt-get install wordnet-base, as scripts/setup.sh does, "
        "or pass the folder that holds index.noun)",
        path);
  }
  return io::MappedFile::open(path);
}

std::string_view view(const io::MappedFile& file) { return {reinterpret_cast<const char*>(file.data()), file.size()}; }

// Whitespace-separated fields of a line, as str.split() sees ASCII text.
std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

std::string_view line_at(std::string_view text, size_t offset) {
  const size_t end = text.find('\n', offset);
  return text.substr(offset, end == std::string_view::npos ? std::string_view::npos : end - offset);
}

int64_t parse_int(std::string_view s, int base, const std::string& where) {
  if (s.empty()) fail("wordnet: {}: empty number", where);
  int64_t v = 0;
  for (char c : s) {
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
    if (d < 0 || d >= base || v > (int64_t{1} << 40)) fail("wordnet: {}: '{}' is not a base-{} number", where, s, base);
    v = v * base + d;
  }
  return v;
}

// _synset_from_pos_and_line's lemma names: re.match(r"(.*?)(\(.*\))?$") drops a trailing
// syntactic marker such as "(a)", "(p)" or "(ip)": from the first "(" when the name ends in ")".
std::string strip_marker(std::string_view name) {
  if (name.size() >= 2 && name.back() == ')') {
    const size_t open = name.find('(');
    if (open != std::string_view::npos && open + 1 < name.size()) return std::string(name.substr(0, open));
  }
  return std::string(name);
}

struct Rule {
  std::string_view old_suffix, new_suffix;
};

// WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS, per POS_LIST entry.
const std::vector<Rule>& substitutions(int pos) {
  static const std::array<std::vector<Rule>, 4> rules = {{
      {{"s", ""}, {"ses", "s"}, {"ves", "f"}, {"xes", "x"}, {"zes", "z"}, {"ches", "ch"}, {"shes", "sh"}, {"men", "man"}, {"ies", "y"}},
      {{"s", ""}, {"ies", "y"}, {"es", "e"}, {"es", ""}, {"ed", "e"}, {"ed", ""}, {"ing", "e"}, {"ing", ""}},
      {{"er", ""}, {"est", ""}, {"er", "e"}, {"est", "e"}},
      {},
  }};
  return rules[pos];
}

}  // namespace

struct WordNet::Impl {
  std::string dir;
  std::array<std::shared_ptr<const io::MappedFile>, 4> index_file, data_file;
  std::array<std::string_view, 4> index_text, data_text;
  // lemma -> per part of speech, 1 + the offset of its line in index_text (0: not listed).
  std::unordered_map<std::string_view, std::array<uint32_t, 4>> index;
  std::array<std::unordered_map<std::string, std::vector<std::string>>, 4> exceptions;
  std::unordered_map<uint64_t, std::vector<std::string>> synset_names;  // (pos, offset) -> lemma names
  std::unordered_map<std::string, std::unordered_set<std::string>> synonym_cache;

  // Synset offsets of `lemma` for a part of speech (the index line parsed as nltk does).
  std::vector<int64_t> offsets(std::string_view lemma, int pos) const {
    auto it = index.find(lemma);
    if (it == index.end() || it->second[pos] == 0) return {};
    const std::string where = fmt::format("{}/index.{}: line of '{}'", dir, kPosNames[pos], lemma);
    const auto f = fields(line_at(index_text[pos], it->second[pos] - 1));
    size_t k = 2;
    auto next = [&]() {
      if (k >= f.size()) fail("wordnet: {}: the line ends early", where);
      return f[k++];
    };
    const int64_t n_synsets = parse_int(next(), 10, where);
    const int64_t n_pointers = parse_int(next(), 10, where);
    for (int64_t i = 0; i < n_pointers; ++i) next();
    const int64_t n_senses = parse_int(next(), 10, where);
    if (n_synsets <= 0 || n_senses != n_synsets) fail("wordnet: {}: {} synsets but {} senses", where, n_synsets, n_senses);
    next();  // senses ranked by frequency
    std::vector<int64_t> out;
    for (int64_t i = 0; i < n_synsets; ++i) out.push_back(parse_int(next(), 10, where));
    return out;
  }

  const std::vector<std::string>& lemma_names(int pos, int64_t offset) {
    const uint64_t key = (static_cast<uint64_t>(pos) << 40) | static_cast<uint64_t>(offset);
    if (auto it = synset_names.find(key); it != synset_names.end()) return it->second;
    const std::string_view text = data_text[pos];
    const std::string where = fmt::format("{} at offset {}", data_file[pos]->path(), offset);
    if (static_cast<size_t>(offset) >= text.size()) fail("wordnet: {}: past the end of the file ({} bytes)", where, text.size());
    const std::string_view line = line_at(text, static_cast<size_t>(offset));
    // synset_from_pos_and_offset: the line must start with the 8-digit offset.
    if (line.substr(0, 8) != fmt::format("{:08d}", offset)) fail("wordnet: {}: no synset starts there", where);
    const auto f = fields(line.substr(0, line.find('|')));
    if (f.size() < 4) fail("wordnet: {}: the synset line ends early", where);
    const int64_t n_lemmas = parse_int(f[3], 16, where);
    if (f.size() < 4 + 2 * static_cast<size_t>(n_lemmas)) fail("wordnet: {}: {} lemmas announced, fewer present", where, n_lemmas);
    std::vector<std::string> names;
    for (int64_t i = 0; i < n_lemmas; ++i) names.push_back(strip_marker(f[4 + 2 * i]));
    return synset_names.emplace(key, std::move(names)).first->second;
  }

  // _morphy's filter_forms: the forms listed for `pos`, first occurrences only.
  std::vector<std::string> listed(const std::vector<std::string>& forms, int pos) const {
    std::vector<std::string> out;
    for (const auto& form : forms) {
      auto it = index.find(form);
      if (it == index.end() || it->second[pos] == 0) continue;
      bool seen = false;
      for (const auto& o : out) seen = seen || o == form;
      if (!seen) out.push_back(form);
    }
    return out;
  }
};

WordNet::WordNet(const std::string& dir) : impl_(std::make_unique<Impl>()) {
  impl_->dir = dir;
  impl_->index.reserve(160000);
  for (int pos = 0; pos < 4; ++pos) {
    const std::string path = fmt::format("{}/index.{}", dir, kPosNames[pos]);
    impl_->index_file[pos] = open_file(path);
    impl_->data_file[pos] = open_file(fmt::format("{}/data.{}", dir, kPosNames[pos]));  // mapped: pages load when read
    impl_->data_text[pos] = view(*impl_->data_file[pos]);
    const std::string_view text = impl_->index_text[pos] = view(*impl_->index_file[pos]);
    if (text.size() >= (size_t{1} << 32)) fail("wordnet: {} is larger than 4 GiB", path);
    for (size_t start = 0; start < text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string_view::npos) end = text.size();
      const std::string_view line = text.substr(start, end - start);
      if (!line.empty() && line[0] != ' ') {  // the license header lines start with a space
        const auto f = fields(line);
        if (f.size() < 2) fail("wordnet: {}: line '{}' has no part of speech", path, line);
        // nltk files a lemma under the part of speech its line names; index.<pos> names <pos>.
        if (f[1].size() != 1 || pos_index(f[1][0]) != pos) fail("wordnet: {}: line '{}' names part of speech '{}'", path, line, f[1]);
        impl_->index[f[0]][pos] = static_cast<uint32_t>(start + 1);
      }
      start = end + 1;
    }
    const std::string exc_path = fmt::format("{}/{}.exc", dir, kPosNames[pos]);
    const auto exc_file = open_file(exc_path);
    const std::string_view exc = view(*exc_file);
    for (size_t start = 0; start < exc.size();) {
      size_t end = exc.find('\n', start);
      if (end == std::string_view::npos) end = exc.size();
      const auto f = fields(exc.substr(start, end - start));
      if (f.empty()) fail("wordnet: {}: empty line at byte {}", exc_path, start);
      std::vector<std::string> bases(f.begin() + 1, f.end());
      impl_->exceptions[pos][std::string(f[0])] = std::move(bases);
      start = end + 1;
    }
  }
}

WordNet::~WordNet() = default;
WordNet::WordNet(WordNet&&) noexcept = default;
WordNet& WordNet::operator=(WordNet&&) noexcept = default;

std::vector<std::string> WordNet::morphy(const std::string& form, char pos_char) const {
  const int pos = pos_index(pos_char);
  const auto& rules = substitutions(pos);
  // apply_rules, keeping the first of repeated forms (filter_forms would drop the others).
  auto apply_rules = [&](const std::vector<std::string>& forms) {
    std::vector<std::string> out;
    std::unordered_set<std::string> seen;
    for (const auto& f : forms) {
      for (const Rule& r : rules) {
        if (!ends_with(f, r.old_suffix)) continue;
        std::string base = f.substr(0, f.size() - r.old_suffix.size()) + std::string(r.new_suffix);
        if (seen.insert(base).second) out.push_back(std::move(base));
      }
    }
    return out;
  };
  const auto& exceptions = impl_->exceptions[pos];
  if (auto it = exceptions.find(form); it != exceptions.end()) {  // 0. the exception list
    std::vector<std::string> forms{form};
    forms.insert(forms.end(), it->second.begin(), it->second.end());
    return impl_->listed(forms, pos);
  }
  std::vector<std::string> forms = apply_rules({form});  // 1. the rules once
  std::vector<std::string> with_original{form};
  with_original.insert(with_original.end(), forms.begin(), forms.end());
  if (auto results = impl_->listed(with_original, pos); !results.empty()) return results;  // 2. listed ones
  while (!forms.empty()) {  // 3. the rules again until some form is listed
    forms = apply_rules(forms);
    if (auto results = impl_->listed(forms, pos); !results.empty()) return results;
  }
  return {};
}

std::vector<std::string> WordNet::synset_lemma_names(const std::string& word) const {
  const std::string lemma = python_lower(word);
  std::vector<std::string> names;
  for (int pos = 0; pos < 4; ++pos) {
    for (const auto& form : morphy(lemma, "nvar"[pos])) {
      for (int64_t offset : impl_->offsets(form, pos)) {
        const auto& synset = impl_->lemma_names(pos, offset);
        names.insert(names.end(), synset.begin(), synset.end());
      }
    }
  }
  return names;
}

const std::unordered_set<std::string>& WordNet::synonyms(const std::string& word) const {
  auto& cache = impl_->synonym_cache;
  if (auto it = cache.find(word); it != cache.end()) return it->second;
  std::unordered_set<std::string> set;
  for (auto& name : synset_lemma_names(word)) {
    if (name.find('_') == std::string::npos) set.insert(std::move(name));
  }
  set.insert(word);
  return cache.emplace(word, std::move(set)).first->second;
}

}  // namespace m3d::eval
