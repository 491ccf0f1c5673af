// See unicode.h.
#include "text/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <cstdlib>

#include "m3d/error.h"
#include "text/utf8.h"

namespace m3d::text {

namespace {
std::string unicode_map(const std::string& text, utf8proc_option_t options, const char* name) {
  if (!utf8::valid(text)) fail("tokenizer: the text is not valid UTF-8");
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()), &out,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | options));
  if (n < 0) fail("tokenizer: {} normalization failed: {}", name, utf8proc_errmsg(n));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}
}  // namespace

std::string nfc(const std::string& text) { return unicode_map(text, UTF8PROC_COMPOSE, "NFC"); }
std::string nfd(const std::string& text) { return unicode_map(text, UTF8PROC_DECOMPOSE, "NFD"); }

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& where) : code_(std::make_unique<Code>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail("{}: cannot compile the regex '{}' at offset {}: {}", where, pattern, offset, reinterpret_cast<const char*>(message));
  }
}

Regex::~Regex() = default;

std::vector<std::string> Regex::isolate(const std::string& text) const {
  pcre2_code* code = code_->code;
  std::vector<std::string> out;
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(code, nullptr);
  size_t start = 0, gap = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* range = pcre2_get_ovector_pointer(match);
    if (range[0] == range[1]) {  // empty match: move on one character
      if (range[0] >= text.size()) break;
      start = range[0] + utf8::sequence_length(static_cast<unsigned char>(text[range[0]]));
      continue;
    }
    if (range[0] > gap) out.push_back(text.substr(gap, range[0] - gap));
    out.push_back(text.substr(range[0], range[1] - range[0]));
    gap = start = range[1];
  }
  pcre2_match_data_free(match);
  if (gap < text.size()) out.push_back(text.substr(gap));
  return out;
}

}  // namespace m3d::text
