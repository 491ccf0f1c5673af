// Unicode helpers of the tokenizers: normalization forms and case mapping (utf8proc),
// the character classes of huggingface/tokenizers' pre-tokenizers (Rust's char
// methods, the `regex` crate's \w), and the PCRE2 regexes that stand in for the
// Oniguruma ones of tokenizers' Split, Replace and ByteLevel. Internal to src/text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace m3d::text {

// Unicode NFC / NFD / NFKC / NFKD of valid UTF-8; fail on invalid UTF-8.
std::string nfc(const std::string& text);
std::string nfd(const std::string& text);
std::string nfkc(const std::string& text);
std::string nfkd(const std::string& text);
// Rust's char::to_lowercase on every character (full mappings: İ becomes i̇; no
// final-sigma rule, which only str::to_lowercase has).
std::string lowercase(const std::string& text);

// Character classes, each as the Rust function tokenizers calls.
bool is_white_space(uint32_t cp);  // char::is_whitespace: the White_Space property
bool is_numeric(uint32_t cp);  // char::is_numeric: categories Nd, Nl, No
bool is_mark(uint32_t cp);  // unicode_normalization's is_combining_mark: Mn, Mc, Me
bool is_punctuation(uint32_t cp);  // ASCII punctuation or a P* category (pre_tokenizers/punctuation.rs)
bool is_word(uint32_t cp);  // the `regex` crate's Unicode \w: Alphabetic, M, Nd, Pc, Join_Control

// One part of a text a pattern cut it into: a match or the gap before / after one.
struct Match {
  size_t start = 0, end = 0;  // bytes
  bool is_match = false;
};

// A pattern compiled for UTF-8 with Unicode properties (\p{L}, \s).
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where);  // `where` names the file in errors
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // A regex matching `text` literally (tokenizers' regex::escape of a String pattern).
  static std::string escape(const std::string& text);

  // The matches and the gaps between them, covering `text` in order
  // (tokenizer/pattern.rs for SysRegex, with Oniguruma's find_iter: an empty match
  // right after the previous match is skipped). Empty text: one empty gap.
  std::vector<Match> find_matches(const std::string& text) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
};

}  // namespace m3d::text
