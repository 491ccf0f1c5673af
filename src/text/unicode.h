// Unicode helpers of the tokenizers: NFC / NFD normalization (utf8proc) and the
// PCRE2 regexes that stand in for the Oniguruma ones of tokenizers' Split and
// ByteLevel pre-tokenizers. Internal to src/text.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace m3d::text {

// Unicode NFC / NFD of valid UTF-8; fails on invalid UTF-8.
std::string nfc(const std::string& text);
std::string nfd(const std::string& text);

// A pattern compiled for UTF-8 with Unicode properties (\p{L}, \s).
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where);  // `where` names the file in errors
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Splits `text` into matches and the gaps between them (Split behaviour "Isolated").
  std::vector<std::string> isolate(const std::string& text) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
};

}  // namespace m3d::text
