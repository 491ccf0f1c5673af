// The Jinja lexer: jinja2 3.1's lexer.py rules with trim_blocks and lstrip_blocks on,
// as transformers sets them. Tags open at the first `{{`, `{%` or `{#`; `-` next to a
// delimiter strips all whitespace on that side, `+` keeps it; a block or comment tag
// alone on its line takes the line's indentation (lstrip) and its newline (trim) with it.
#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "m3d/error.h"
#include "text/jinja_ast.h"
#include "text/utf8.h"

namespace m3d::text::jinja {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// jinja2 reads a template with its line breaks made "\n" and one trailing newline
// dropped (keep_trailing_newline=False).
std::string normalize_newlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Python's unicode-escape decoding of a string literal's body, which jinja2 applies
// after replacing non-ASCII characters by their backslash escapes.
class StringDecoder {
 public:
  explicit StringDecoder(const std::string& body) : s_(body) {}

  // Returns false with `error` set when an escape is malformed.
  bool decode(std::string* out, std::string* error) {
    for (size_t i = 0; i < s_.size();) {
      if (s_[i] != '\\') {
        out->push_back(s_[i++]);
        continue;
      }
      const char c = s_[i + 1];  // a literal never ends with a lone backslash
      i += 2;
      if (!escape(c, &i, out, error)) return false;
    }
    return true;
  }

 private:
  bool escape(char c, size_t* i, std::string* out, std::string* error) {
    static const std::string simple = "\\'\"abfnrtv", simple_out = "\\'\"\a\b\f\n\r\t\v";
    if (c == '\n') return true;  // line continuation
    if (const size_t k = simple.find(c); k != std::string::npos) {
      out->push_back(simple_out[k]);
      return true;
    }
    if (c >= '0' && c <= '7') {
      uint32_t cp = c - '0';
      for (int n = 0; n < 2 && *i < s_.size() && s_[*i] >= '0' && s_[*i] <= '7'; ++n) cp = cp * 8 + (s_[(*i)++] - '0');
      *out += utf8::encode(cp);
      return true;
    }
    if (c == 'x' || c == 'u' || c == 'U') return hex(c == 'x' ? 2 : c == 'u' ? 4 : 8, i, out, error);
    if (c == 'N') {
      *error = "\\N{...} escapes are not supported";
      return false;
    }
    if (static_cast<unsigned char>(c) >= 0x80) {
      // A backslash before a non-ASCII character escapes the backslash of that
      // character's own \x / \u / \U form, leaving its digits as text.
      const size_t start = *i - 1;
      const size_t n = utf8::valid_char_length(std::string_view(s_).substr(start));
      const uint32_t cp = utf8::code_point(std::string_view(s_).substr(start));
      char buf[16];
      std::snprintf(buf, sizeof buf, cp < 0x100 ? "x%02x" : cp < 0x10000 ? "u%04x" : "U%08x", cp);
      *out += '\\';
      *out += buf;
      *i = start + std::max<size_t>(n, 1);
      return true;
    }
    *out += '\\';
    out->push_back(c);
    return true;
  }

  bool hex(int digits, size_t* i, std::string* out, std::string* error) {
    uint32_t cp = 0;
    for (int n = 0; n < digits; ++n, ++*i) {
      const char h = *i < s_.size() ? s_[*i] : '\0';
      int v = -1;
      if (h >= '0' && h <= '9') v = h - '0';
      if (h >= 'a' && h <= 'f') v = h - 'a' + 10;
      if (h >= 'A' && h <= 'F') v = h - 'A' + 10;
      if (v < 0) {
        *error = digits == 2 ? "truncated \\xXX escape" : digits == 4 ? "truncated \\uXXXX escape" : "truncated \\UXXXXXXXX escape";
        return false;
      }
      cp = cp * 16 + static_cast<uint32_t>(v);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      *error = "illegal Unicode character";
      return false;
    }
    *out += utf8::encode(cp);
    return true;
  }

  const std::string& s_;
};

class Lexer {
 public:
  Lexer(const std::string& source, const std::string& name) : src_(normalize_newlines(source)), name_(name) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) root();
    emit(Tok::Eof, src_.size());
    return std::move(tokens_);
  }

 private:
  Pos position(size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) - 1;
    Pos p;
    p.line = static_cast<int>(it - line_starts_.begin()) + 1;
    p.column = 1;
    for (size_t i = *it; i < offset && i < src_.size(); ++i)
      if ((static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80) ++p.column;
    return p;
  }

  [[noreturn]] void error(size_t offset, const std::string& message) const {
    const Pos p = position(offset);
    fail("{}:{}:{}: {}", name_, p.line, p.column, message);
  }

  Token& emit(Tok type, size_t offset, std::string text = {}) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    t.pos = position(offset);
    tokens_.push_back(std::move(t));
    return tokens_.back();
  }

  bool starts_with(size_t at, std::string_view s) const { return src_.compare(at, s.size(), s) == 0; }

  // Python's str.isspace of the character at `at`, and its length.
  size_t space_at(size_t at) const {
    if (at >= src_.size()) return 0;
    const std::string_view rest = std::string_view(src_).substr(at);
    const size_t n = utf8::valid_char_length(rest);
    return n > 0 && utf8::python_space(utf8::code_point(rest)) ? n : 0;
  }

  size_t skip_space(size_t at) const {
    while (const size_t n = space_at(at)) at += n;
    return at;
  }

  // The text before a tag: `-` strips its trailing whitespace; otherwise a block or
  // comment tag preceded on its line by whitespace only takes that whitespace away.
  std::string strip_before_tag(std::string text, char sign, bool variable) const {
    if (sign == '-') return utf8::python_rstrip(text);
    if (sign == '+' || variable) return text;
    const size_t newline = text.rfind('\n');
    const size_t line_start = newline == std::string::npos ? 0 : newline + 1;
    if ((line_start > 0 || line_starting_) && line_start < text.size()) {
      size_t i = line_start;
      while (i < text.size() && utf8::python_space(utf8::code_point(std::string_view(text).substr(i))))
        i += utf8::sequence_length(static_cast<unsigned char>(text[i]));
      if (i >= text.size()) text.resize(line_start);
    }
    return text;
  }

  void emit_data(size_t offset, std::string text) {
    if (!text.empty()) emit(Tok::Data, offset, std::move(text));
  }

  // `{%[-+]? raw %}` at `at`: the offset after it, or npos.
  size_t raw_begin(size_t at) const {
    size_t i = at + 2;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
    i = skip_space(i);
    if (!starts_with(i, "raw")) return std::string::npos;
    i = skip_space(i + 3);
    if (starts_with(i, "-%}")) return skip_space(i + 3);
    if (starts_with(i, "%}")) return i + 2;
    return std::string::npos;
  }

  void root() {
    size_t p = pos_;
    while ((p = src_.find('{', p)) != std::string::npos) {
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) break;
      ++p;
    }
    if (p == std::string::npos) {
      emit_data(pos_, src_.substr(pos_));
      pos_ = src_.size();
      return;
    }
    const char kind = src_[p + 1];
    size_t after = p + 2;
    const char sign = after < src_.size() && (src_[after] == '-' || src_[after] == '+') ? src_[after++] : '\0';
    const size_t raw_end = kind == '%' ? raw_begin(p) : std::string::npos;
    emit_data(pos_, strip_before_tag(src_.substr(pos_, p - pos_), sign, kind == '{'));
    if (raw_end != std::string::npos) {
      pos_ = raw_end;
      line_starting_ = src_[raw_end - 1] == '\n';
      raw();
      return;
    }
    pos_ = after;
    line_starting_ = false;
    if (kind == '#') {
      comment(p);
    } else {
      emit(kind == '{' ? Tok::VarBegin : Tok::BlockBegin, p);
      tag(kind == '{' ? Tok::VarEnd : Tok::BlockEnd);
    }
  }

  // After a block or comment end: `+` keeps what follows, `-` strips all whitespace,
  // a plain end takes one newline (trim_blocks). Returns the offset after the end.
  size_t end_suffix(size_t at, char sign, size_t delimiter_length) {
    size_t end = at + delimiter_length;
    if (sign == '-') end = skip_space(end);
    if (sign == '\0' && end < src_.size() && src_[end] == '\n') ++end;
    line_starting_ = end > 0 && src_[end - 1] == '\n';
    return end;
  }

  void comment(size_t open) {
    const size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) error(open, "Missing end of comment tag");
    const char sign = close > pos_ && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
    pos_ = end_suffix(close, sign, 2);
  }

  void raw() {
    for (size_t p = src_.find("{%", pos_); p != std::string::npos; p = src_.find("{%", p + 1)) {
      size_t i = p + 2;
      const char sign = i < src_.size() && (src_[i] == '-' || src_[i] == '+') ? src_[i++] : '\0';
      i = skip_space(i);
      if (!starts_with(i, "endraw")) continue;
      i = skip_space(i + 6);
      char end_sign = '\0';
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) end_sign = src_[i++];
      if (!starts_with(i, "%}")) continue;
      emit_data(pos_, strip_before_tag(src_.substr(pos_, p - pos_), sign, false));
      pos_ = end_suffix(i, end_sign, 2);
      return;
    }
    error(pos_, "Missing end of raw directive");
  }

  // The end delimiter of the current tag at pos_, with its whitespace handling.
  bool tag_end(Tok end) {
    const std::string_view delim = end == Tok::BlockEnd ? "%}" : "}}";
    char sign = '\0';
    size_t at = pos_;
    if (src_[at] == '-' || (src_[at] == '+' && end == Tok::BlockEnd)) sign = src_[at++];
    if (!starts_with(at, delim)) return false;
    emit(end, pos_);
    if (end == Tok::VarEnd && sign == '\0') {
      pos_ = at + 2;
      line_starting_ = false;
    } else {
      pos_ = end_suffix(at, sign, 2);
    }
    return true;
  }

  void tag(Tok end) {
    std::string brackets;  // closers expected, innermost last
    while (pos_ < src_.size()) {
      if (brackets.empty() && tag_end(end)) return;
      if (const size_t n = space_at(pos_)) {
        pos_ = skip_space(pos_ + n);
        continue;
      }
      if (number() || name() || string()) continue;
      op(&brackets);
    }
  }

  // (\d+_)*\d+ at `at`: its end, or npos.
  size_t digits(size_t at) const {
    if (at >= src_.size() || !is_digit(src_[at])) return std::string::npos;
    size_t i = at;
    while (true) {
      while (i < src_.size() && is_digit(src_[i])) ++i;
      if (i + 1 < src_.size() && src_[i] == '_' && is_digit(src_[i + 1])) {
        ++i;
        continue;
      }
      return i;
    }
  }

  size_t exponent(size_t at) const {
    if (at >= src_.size() || (src_[at] != 'e' && src_[at] != 'E')) return std::string::npos;
    size_t i = at + 1;
    if (i < src_.size() && (src_[i] == '+' || src_[i] == '-')) ++i;
    return digits(i);
  }

  static std::string without_underscores(std::string s) {
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    return s;
  }

  bool number() {
    if (!is_digit(src_[pos_])) return false;
    const size_t whole = digits(pos_);
    size_t end = std::string::npos;
    if (pos_ == 0 || src_[pos_ - 1] != '.') {  // float_re: (?<!\.)
      const size_t fraction = whole < src_.size() && src_[whole] == '.' ? digits(whole + 1) : std::string::npos;
      end = exponent(fraction != std::string::npos ? fraction : whole);
      if (end == std::string::npos) end = exponent(whole);
      if (end == std::string::npos) end = fraction;
    }
    if (end != std::string::npos) {
      emit(Tok::Float, pos_).real = std::strtod(without_underscores(src_.substr(pos_, end - pos_)).c_str(), nullptr);
      pos_ = end;
      return true;
    }
    integer();
    return true;
  }

  void integer() {
    int base = 10;
    size_t i = pos_;
    const char prefix = pos_ + 1 < src_.size() && src_[pos_] == '0' ? static_cast<char>(src_[pos_ + 1] | 0x20) : '\0';
    if (prefix == 'b' || prefix == 'o' || prefix == 'x') base = prefix == 'b' ? 2 : prefix == 'o' ? 8 : 16;
    auto digit_value = [&](char c) {
      const int v = is_digit(c) ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : 99;
      return v < base ? v : -1;
    };
    std::string text;
    if (base != 10) {
      i += 2;
      while (i < src_.size() && (digit_value(src_[i]) >= 0 || (src_[i] == '_' && i + 1 < src_.size() && digit_value(src_[i + 1]) >= 0))) {
        if (src_[i] != '_') text += src_[i];
        ++i;
      }
      if (text.empty()) base = 10, i = pos_;  // a lone 0 followed by a name
    }
    if (base == 10) {
      // [1-9](_?\d)* or 0(_?0)*
      const bool zero = src_[pos_] == '0';
      i = pos_ + 1;
      text = src_.substr(pos_, 1);
      while (i < src_.size()) {
        const size_t j = src_[i] == '_' ? i + 1 : i;
        if (j >= src_.size() || !is_digit(src_[j]) || (zero && src_[j] != '0')) break;
        text += src_[j];
        i = j + 1;
      }
    }
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, base);
    if (errno == ERANGE) error(pos_, "integer literal out of the 64-bit range");
    emit(Tok::Integer, pos_).integer = value;
    pos_ = i;
  }

  bool name() {
    if (!is_name_start(src_[pos_])) return false;
    size_t i = pos_ + 1;
    while (i < src_.size() && is_name_char(src_[i])) ++i;
    emit(Tok::Name, pos_, src_.substr(pos_, i - pos_));
    pos_ = i;
    return true;
  }

  bool string() {
    const char quote = src_[pos_];
    if (quote != '\'' && quote != '"') return false;
    size_t i = pos_ + 1;
    while (i < src_.size() && src_[i] != quote) i += src_[i] == '\\' ? 2 : 1;
    if (i >= src_.size()) error(pos_, fmt::format("unexpected char '{}' (a string that never ends)", quote));
    std::string value, problem;
    if (!StringDecoder(src_.substr(pos_ + 1, i - pos_ - 1)).decode(&value, &problem)) error(pos_, problem);
    emit(Tok::String, pos_, std::move(value));
    pos_ = i + 1;
    return true;
  }

  void op(std::string* brackets) {
    static const char* const two[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* t : two) {
      if (starts_with(pos_, t)) {
        emit(Tok::Op, pos_, t);
        pos_ += 2;
        return;
      }
    }
    const char c = src_[pos_];
    if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
      const size_t n = std::max<size_t>(utf8::valid_char_length(std::string_view(src_).substr(pos_)), 1);
      error(pos_, fmt::format("unexpected char '{}'", src_.substr(pos_, n)));
    }
    if (c == '(' || c == '[' || c == '{') brackets->push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    if (c == ')' || c == ']' || c == '}') {
      if (brackets->empty()) error(pos_, fmt::format("unexpected '{}'", c));
      if (brackets->back() != c) error(pos_, fmt::format("unexpected '{}', expected '{}'", c, brackets->back()));
      brackets->pop_back();
    }
    emit(Tok::Op, pos_, std::string(1, c));
    ++pos_;
  }

  const std::string src_;
  const std::string& name_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  bool line_starting_ = true;
};

}  // namespace

std::vector<Token> lex(const std::string& source, const std::string& name) { return Lexer(source, name).run(); }

}  // namespace m3d::text::jinja
