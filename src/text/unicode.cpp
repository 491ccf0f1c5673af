// See unicode.h.
#include "text/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <cctype>
#include <cstdlib>

#include "m3d/error.h"
#include "text/utf8.h"

namespace m3d::text {

namespace {
std::string unicode_map(const std::string& text, int options, const char* name) {
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
std::string nfkc(const std::string& text) { return unicode_map(text, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, "NFKC"); }
std::string nfkd(const std::string& text) { return unicode_map(text, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, "NFKD"); }

std::string lowercase(const std::string& text) {
  if (!utf8::valid(text)) fail("tokenizer: the text is not valid UTF-8");
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const uint32_t cp = utf8::code_point(std::string_view(text).substr(i));
    i += utf8::sequence_length(static_cast<unsigned char>(text[i]));
    // U+0130 is the one character whose full lower-case mapping (SpecialCasing.txt,
    // unconditional) is not its simple one, which utf8proc gives.
    out += cp == 0x130 ? "i\xCC\x87" : utf8::encode(static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
  }
  return out;
}

namespace {
utf8proc_category_t category(uint32_t cp) { return utf8proc_category(static_cast<utf8proc_int32_t>(cp)); }
}  // namespace

bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_numeric(uint32_t cp) {
  const auto c = category(cp);
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool is_mark(uint32_t cp) {
  const auto c = category(cp);
  return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
}

bool is_punctuation(uint32_t cp) {
  if (cp < 0x80) return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) || (cp >= 0x7B && cp <= 0x7E);
  const auto c = category(cp);
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

bool is_word(uint32_t cp) {
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      break;
  }
  // Join_Control, and the Other_Alphabetic characters that are not marks (circled and squared letters).
  return cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
         (cp >= 0x1F170 && cp <= 0x1F189);
}

namespace {
// Oniguruma's Unicode \w in PCRE2 terms: Alphabetic, marks, Nd, Pc, and below U+0100 its
// Latin-1 table, which also has ² ³ ¹ ¼ ½ ¾ (unicode.c). PCRE2's UCP \w is \p{L}, \p{N}
// and '_': it takes ① and leaves out combining accents. \d (Nd) and \s (white space)
// already agree; \W inside a class stays PCRE2's.
std::string onig_word_classes(const std::string& pattern) {
  static const std::string word = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{B2}\x{B3}\x{B9}\x{BC}-\x{BE})";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 'w') out += in_class ? word : "[" + word + "]";
      else if (next == 'W' && !in_class) out += "[^" + word + "]";
      else out += {c, next};
      continue;
    }
    out += c;
    if (in_class && pattern.compare(i, 2, "[:") == 0) {  // a POSIX class [:alpha:] inside a class
      const size_t end = pattern.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(pattern, i + 1, end + 1 - i);
        i = end + 1;
      }
    } else if (!in_class && c == '[') {
      in_class = true;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a literal ']' first in the class
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}
}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& where) : code_(std::make_unique<Code>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  const std::string translated = onig_word_classes(pattern);
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail("{}: cannot compile the regex '{}' at offset {}: {}", where, pattern, offset, reinterpret_cast<const char*>(message));
  }
}

Regex::~Regex() = default;

std::string Regex::escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x80 && !std::isalnum(b)) out += '\\';  // PCRE2: a backslash makes any ASCII non-alphanumeric literal
    out += c;
  }
  return out;
}

std::vector<Match> Regex::find_matches(const std::string& text) const {
  if (text.empty()) return {{0, 0, false}};
  pcre2_code* code = code_->code;
  std::vector<Match> out;
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(code, nullptr);
  size_t search = 0, prev = 0;
  bool matched = false;  // a match ended at `prev`
  while (search <= text.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), search, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* range = pcre2_get_ovector_pointer(match);
    if (range[0] == range[1] && matched && range[1] == prev) {  // empty, right after a match: move on one character
      if (search >= text.size()) break;
      search += utf8::sequence_length(static_cast<unsigned char>(text[search]));
      continue;
    }
    if (range[0] > prev) out.push_back({prev, range[0], false});
    out.push_back({range[0], range[1], true});
    prev = search = range[1];
    matched = true;
  }
  pcre2_match_data_free(match);
  if (prev < text.size()) out.push_back({prev, text.size(), false});
  return out;
}

}  // namespace m3d::text
