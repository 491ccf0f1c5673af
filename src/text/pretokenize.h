// tokenizer.json's normalizers and pre-tokenizers as huggingface/tokenizers 0.19 runs
// them (normalizers/*.rs, pre_tokenizers/*.rs, and NormalizedString::split of
// tokenizer/normalizer.rs with the patterns of tokenizer/pattern.rs). Offsets are not
// tracked: a piece only remembers whether it starts the input, which Metaspace's
// prepend_scheme "first" asks. Internal to src/text.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/unicode.h"

namespace m3d::text {

// The component `key` of tokenizer.json as a list: the parts of a "Sequence" (its
// list under `list_key`, nested Sequences flattened), or the component itself; empty
// when absent or null.
std::vector<nlohmann::json> json_components(const nlohmann::json& root, const char* key, const char* list_key);

// A Replace normalizer's or decoder's "pattern" ({"String": s} or {"Regex": r}).
std::shared_ptr<Regex> json_pattern(const nlohmann::json& step, const std::string& where);
// Every match of `pattern` in `text` replaced by `content` (normalizers/replace.rs).
std::string regex_replace(const Regex& pattern, const std::string& text, const std::string& content);

// GPT-2's byte <-> printable character table (pre_tokenizers/byte_level.rs bytes_char).
struct ByteTable {
  std::string byte_to_char[256];
  std::unordered_map<uint32_t, unsigned char> char_to_byte;
  ByteTable();
};
const ByteTable& byte_table();

// Metaspace's options, shared by the pre-tokenizer and the decoder.
struct Metaspace {
  enum class Prepend { Always, First, Never } prepend = Prepend::Always;
  std::string replacement = "\xE2\x96\x81";  // U+2581
  bool split = true;
};
// Also reads the legacy add_prefix_space field as tokenizers 0.19 does.
Metaspace json_metaspace(const nlohmann::json& step, const std::string& where);

// tokenizer.json "normalizer": Sequence of Prepend, Replace, NFC, NFD, NFKC, NFKD,
// Lowercase, Strip, StripAccents.
class Normalizer {
 public:
  Normalizer() = default;
  Normalizer(const nlohmann::json& root, const std::string& where);
  std::string operator()(const std::string& text) const;

 private:
  struct Step {
    enum class Kind { Prepend, Replace, Nfc, Nfd, Nfkc, Nfkd, Lowercase, Strip, StripAccents } kind;
    std::string content;  // Prepend, Replace
    std::shared_ptr<Regex> pattern;  // Replace
    bool left = false, right = false;  // Strip
  };
  std::vector<Step> steps_;
};

// How a split keeps the delimiters (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// tokenizer.json "pre_tokenizer": Sequence of Split, Digits, ByteLevel, Metaspace,
// Whitespace, WhitespaceSplit, Punctuation, CharDelimiterSplit.
class PreTokenizer {
 public:
  PreTokenizer() = default;
  PreTokenizer(const nlohmann::json& root, const std::string& where);
  // The words of `text` (a ByteLevel step maps their bytes to its printable
  // characters); `at_start`: `text` starts the input.
  std::vector<std::string> operator()(const std::string& text, bool at_start) const;

 private:
  struct Piece {
    std::string text;
    bool at_start = false;
  };
  struct Step {
    enum class Kind { Split, Digits, ByteLevel, Metaspace, Whitespace, WhitespaceSplit, Punctuation, CharDelimiterSplit } kind;
    std::shared_ptr<Regex> regex;  // Split, or ByteLevel with use_regex
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;  // Split
    bool flag = false;  // Digits: individual_digits; ByteLevel: add_prefix_space
    uint32_t delimiter = 0;  // CharDelimiterSplit
    Metaspace metaspace;
  };
  static void apply(const Step& step, Piece& piece, std::vector<Piece>& out);
  std::vector<Step> steps_;
};

}  // namespace m3d::text
