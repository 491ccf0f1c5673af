// See nltk_tokenize.h. Sources: nltk 3.8.1 nltk/tokenize/punkt.py (PunktLanguageVars,
// PunktToken, PunktSentenceTokenizer), nltk/tokenize/destructive.py (NLTKWordTokenizer,
// MacIntyreContractions), nltk/tokenize/__init__.py (word_tokenize), nltk 3.9
// nltk/tabdata.py (the punkt_tab file format). Offsets are bytes where Python counts
// code points; every place Python slices by a count slices an ASCII character here.
#include "eval/nltk_tokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <filesystem>
#include <memory>

#include "io/mapped_file.h"
#include "m3d/error.h"
#include "text/utf8.h"

namespace m3d::eval {
namespace {

namespace utf8 = text::utf8;

// Python's \s for str patterns (str.isspace); PCRE2's \s lacks U+001C..U+001F.
constexpr std::string_view kSpaceClass = "\\x{9}-\\x{d}\\x{1c}-\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";

struct Span {
  size_t begin = std::string::npos, end = std::string::npos;
  bool set() const { return begin != std::string::npos; }
};

// A Python `re` pattern on str: PCRE2 in UTF mode with Unicode properties (\w \d \b),
// "\n" as the only newline (so $ also matches before a final "\n"), \s and \S as Python's
// (spelled out as classes, so they must not stand inside a [...] class).
class Pattern {
 public:
  explicit Pattern(std::string pattern, uint32_t options = 0) {
    for (size_t pos = 0; (pos = pattern.find('\\', pos)) != std::string::npos;) {
      const char next = pos + 1 < pattern.size() ? pattern[pos + 1] : '\0';
      if (next == 's' || next == 'S') {
        const std::string cls = std::string(next == 's' ? "[" : "[^") + std::string(kSpaceClass) + "]";
        pattern.replace(pos, 2, cls);
        pos += cls.size();
      } else {
        pos += 2;  // an escaped character, maybe a backslash
      }
    }
    pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
    pcre2_set_newline(context, PCRE2_NEWLINE_LF);
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP | options, &error, &offset, context);
    pcre2_compile_context_free(context);
    if (code_ == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      fail("nltk_tokenize: pattern '{}' at {}: {}", pattern, offset, reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // without JIT support PCRE2 interprets, with the same results
  }
  ~Pattern() { pcre2_code_free(code_); }
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;

  // re.sub(pattern, replacement, text); `replacement` in PCRE2's syntax ($1 for \1).
  std::string sub(const std::string& text, std::string_view replacement) const {
    std::string out(text.size() * 2 + 64, '\0');
    for (;;) {
      PCRE2_SIZE length = out.size();
      const int rc =
          pcre2_substitute(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                           PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_UNSET_EMPTY | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH | PCRE2_NO_UTF_CHECK, nullptr, nullptr,
                           reinterpret_cast<PCRE2_SPTR>(replacement.data()), replacement.size(), reinterpret_cast<PCRE2_UCHAR*>(out.data()), &length);
      if (rc == PCRE2_ERROR_NOMEMORY) {
        out.resize(length);
        continue;
      }
      if (rc < 0) fail("nltk_tokenize: substitution failed with PCRE2 error {}", rc);
      out.resize(length);
      return out;
    }
  }

  // The first match at or after `from` (re.search from a position); groups[0] is the whole match.
  bool search(std::string_view text, size_t from, std::vector<Span>* groups, bool anchored = false) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from, PCRE2_NO_UTF_CHECK | (anchored ? PCRE2_ANCHORED : 0),
                               data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0) fail("nltk_tokenize: match failed with PCRE2 error {}", rc);
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const uint32_t pairs = pcre2_get_ovector_count(data.get());
    groups->assign(pairs, Span{});
    for (uint32_t g = 0; g < pairs && g < static_cast<uint32_t>(rc); ++g) {
      if (ovector[2 * g] != PCRE2_UNSET) (*groups)[g] = {ovector[2 * g], ovector[2 * g + 1]};
    }
    return true;
  }

  bool match(std::string_view text) const {  // re.match: anchored at the start
    std::vector<Span> groups;
    return search(text, 0, &groups, true);
  }

 private:
  pcre2_code* code_ = nullptr;
};

uint32_t first_code_point(std::string_view s) { return s.empty() ? 0 : utf8::code_point(s); }

// str.isupper() / str.islower() of one character: the Uppercase / Lowercase properties
// (letters of category Lu / Ll, and cased symbols such as circled letters).
bool python_isupper(uint32_t cp) {
  const auto c = static_cast<utf8proc_int32_t>(cp);
  return utf8proc_category(c) == UTF8PROC_CATEGORY_LU || utf8proc_isupper(c);
}
bool python_islower(uint32_t cp) {
  const auto c = static_cast<utf8proc_int32_t>(cp);
  return utf8proc_category(c) == UTF8PROC_CATEGORY_LL || utf8proc_islower(c);
}

// Python's str.split() with no separator.
std::vector<std::string> python_split(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0, start = std::string::npos;
  while (i < s.size()) {
    const size_t n = utf8::sequence_length(static_cast<unsigned char>(s[i]));
    const bool space = utf8::python_space(utf8::code_point(s.substr(i)));
    if (space && start != std::string::npos) out.emplace_back(s.substr(start, i - start)), start = std::string::npos;
    if (!space && start == std::string::npos) start = i;
    i += n;
  }
  if (start != std::string::npos) out.emplace_back(s.substr(start));
  return out;
}

std::vector<std::string_view> split_char(std::string_view s, char separator) {  // str.split(sep)
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t end = s.find(separator, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::vector<std::string> read_lines(const std::string& path) {  // nltk.tabdata: each line without its "\n"
  if (!std::filesystem::exists(path)) {
    fail("punkt: {} is missing (nltk_data's English Punkt parameters: run scripts/fetch_vocab.sh in the repository root)", path);
  }
  const auto file = io::MappedFile::open(path);
  const std::string_view text(reinterpret_cast<const char*>(file->data()), file->size());
  if (!utf8::valid(text)) fail("punkt: {} is not valid UTF-8", path);
  std::vector<std::string> lines;
  for (auto line : split_char(text, '\n')) lines.emplace_back(line);
  if (!lines.empty() && lines.back().empty()) lines.pop_back();  // iterating a file yields no line after a final "\n"
  return lines;
}

std::pair<std::string, std::string> split_tab_pair(const std::string& line, const std::string& path) {
  const auto fields = split_char(line, '\t');
  if (fields.size() != 2) fail("punkt: {}: line '{}' has {} tab-separated fields, expected 2", path, line, fields.size());
  return {std::string(fields[0]), std::string(fields[1])};
}

// --- Punkt (PunktLanguageVars, PunktToken, PunktSentenceTokenizer) ---

constexpr int kOrthoBegUc = 1 << 1, kOrthoMidUc = 1 << 2, kOrthoUnkUc = 1 << 3;
constexpr int kOrthoBegLc = 1 << 4, kOrthoMidLc = 1 << 5, kOrthoUnkLc = 1 << 6;
constexpr int kOrthoUc = kOrthoBegUc + kOrthoMidUc + kOrthoUnkUc, kOrthoLc = kOrthoBegLc + kOrthoMidLc + kOrthoUnkLc;

// PunktLanguageVars' pieces, English defaults (sent_end_chars . ? !).
constexpr const char* kNonWord = R"re((?:[)";}\]\*:@\'\({\[\?!]))re";
constexpr const char* kMultiChar = R"re((?:\-{2,}|\.{2,}|(?:\.\s){2,}\.))re";
constexpr const char* kWordStart = R"re([^\(\"\`{\[:;&\#\*@\)}\]\-,])re";

const Pattern& word_tokenizer_re() {  // _word_tokenize_fmt without the verbose-mode white space
  static const Pattern p(std::string("(") + kMultiChar + "|(?=" + kWordStart + ")\\S+?(?=\\s|$|" + kNonWord + "|" + kMultiChar + "|,(?=$|\\s|" + kNonWord +
                         "|" + kMultiChar + "))|\\S)");
  return p;
}

const Pattern& period_context_re() {  // group 1: after_tok, group 2: next_tok
  static const Pattern p(std::string("[\\.\\?!](?=(") + kNonWord + "|\\s+(\\S+)))");
  return p;
}

struct Token {
  std::string tok, type;
  bool period_final = false, sentbreak = false, abbr = false, ellipsis = false;

  explicit Token(std::string t) : tok(std::move(t)) {
    static const Pattern numeric(R"re(^-?[\.,]?\d[\d,\.-]*\.?$)re");
    type = python_lower(tok);
    if (numeric.match(type)) type = "##number##";
    period_final = !tok.empty() && tok.back() == '.';
  }
  std::string type_no_period() const { return type.size() > 1 && type.back() == '.' ? type.substr(0, type.size() - 1) : type; }
  std::string type_no_sentperiod() const { return sentbreak ? type_no_period() : type; }
  bool first_upper() const { return python_isupper(first_code_point(tok)); }
  bool first_lower() const { return python_islower(first_code_point(tok)); }
  bool is_ellipsis() const { return tok.size() >= 2 && tok.find_first_not_of('.') == std::string::npos; }  // \.\.+$
  bool is_initial() const {
    static const Pattern initial(R"re([^\W\d]\.$)re");
    return initial.match(tok);
  }
};

// PunktBaseClass._tokenize_words (the line and paragraph flags only matter in training).
std::vector<Token> punkt_words(std::string_view text) {
  std::vector<Token> tokens;
  std::vector<Span> groups;
  for (auto line : split_char(text, '\n')) {
    if (utf8::python_lstrip(line).empty()) continue;
    for (size_t pos = 0; pos < line.size() && word_tokenizer_re().search(line, pos, &groups);) {
      tokens.emplace_back(std::string(line.substr(groups[1].begin, groups[1].end - groups[1].begin)));
      pos = groups[0].end;
    }
  }
  return tokens;
}

enum class Ortho { kFalse, kTrue, kUnknown };

struct PotentialEnd {
  Span match, after_tok, next_tok;
  std::string context;
};

// PunktSentenceTokenizer._match_potential_end_contexts.
std::vector<PotentialEnd> potential_end_contexts(std::string_view text) {
  std::vector<PotentialEnd> out;
  std::vector<Span> groups;
  Span previous_slice{0, 0};
  bool have_previous = false;
  PotentialEnd previous;
  auto emit = [&]() {
    previous.context = std::string(text.substr(previous_slice.begin, previous_slice.end - previous_slice.begin)) +
                       std::string(text.substr(previous.match.begin, previous.match.end - previous.match.begin)) +
                       std::string(text.substr(previous.after_tok.begin, previous.after_tok.end - previous.after_tok.begin));
    out.push_back(previous);
  };
  for (size_t pos = 0; pos < text.size() && period_context_re().search(text, pos, &groups);) {
    pos = groups[0].end;
    // _get_last_whitespace_index: string.whitespace is ASCII; index 0 counts as "none".
    const std::string_view before = text.substr(previous_slice.end, groups[0].begin - previous_slice.end);
    size_t last_space = 0;
    for (size_t i = before.size(); i-- > 0;) {
      if (std::string_view(" \t\n\r\x0b\x0c").find(before[i]) != std::string_view::npos) {
        last_space = i;
        break;
      }
    }
    const size_t word_begin = last_space ? last_space + previous_slice.end + 1 : previous_slice.begin;
    const Span word_slice{word_begin, groups[0].begin};
    if (have_previous && previous_slice.end <= word_slice.begin) emit();
    previous = PotentialEnd{groups[0], groups[1], groups[2], {}};
    have_previous = true;
    previous_slice = word_slice;
  }
  if (have_previous) emit();
  return out;
}

}  // namespace

std::string python_lower(std::string_view text) {
  auto cased = [](utf8proc_int32_t c) {
    const auto cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT || utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
  };
  auto case_ignorable = [](utf8proc_int32_t c) {
    const auto cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_LM ||
           cat == UTF8PROC_CATEGORY_SK || c == '\'' || c == '.' || c == ':' || c == 0xB7 || c == 0x2018 || c == 0x2019 || c == 0x2024 || c == 0x2027;
  };
  std::vector<utf8proc_int32_t> cps;
  for (size_t i = 0; i < text.size();) {
    const size_t n = std::max<size_t>(utf8::valid_char_length(text.substr(i)), 1);
    cps.push_back(static_cast<utf8proc_int32_t>(utf8::code_point(text.substr(i, n))));
    i += n;
  }
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    const utf8proc_int32_t c = cps[i];
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else if (c == 0x130) {  // SpecialCasing: LATIN CAPITAL LETTER I WITH DOT ABOVE
      out += "i\xCC\x87";
    } else if (c == 0x3A3) {  // GREEK CAPITAL SIGMA: final form after a cased letter, not before one
      size_t j = i;
      while (j > 0 && case_ignorable(cps[j - 1])) --j;
      bool final_sigma = j > 0 && cased(cps[j - 1]);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < cps.size() && case_ignorable(cps[k])) ++k;
        final_sigma = !(k < cps.size() && cased(cps[k]));
      }
      out += final_sigma ? "\xCF\x82" : "\xCF\x83";
    } else {
      out += utf8::encode(static_cast<uint32_t>(utf8proc_tolower(c)));
    }
  }
  return out;
}

PunktParameters punkt_parameters_load(const std::string& dir) {
  PunktParameters p;
  const std::string collocations = dir + "/collocations.tab", ortho = dir + "/ortho_context.tab";
  for (auto& line : read_lines(dir + "/abbrev_types.txt")) p.abbrev_types.insert(std::move(line));
  for (auto& line : read_lines(dir + "/sent_starters.txt")) p.sent_starters.insert(std::move(line));
  for (const auto& line : read_lines(collocations)) p.collocations.insert(split_tab_pair(line, collocations));
  for (const auto& line : read_lines(ortho)) {
    auto [type, flags] = split_tab_pair(line, ortho);
    size_t used = 0;
    int value = 0;
    try {
      value = std::stoi(flags, &used);
    } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != flags.size()) fail("punkt: {}: '{}' is not an integer", ortho, flags);
    p.ortho_context[type] = value;
  }
  if (p.abbrev_types.empty() || p.ortho_context.empty()) fail("punkt: {} has no abbreviations or orthographic contexts", dir);
  return p;
}

bool PunktSentenceTokenizer::text_contains_sentbreak(std::string_view context) const {
  std::vector<Token> tokens = punkt_words(context);
  // _first_pass_annotation
  for (Token& t : tokens) {
    if (t.tok == "." || t.tok == "?" || t.tok == "!") {
      t.sentbreak = true;
    } else if (t.is_ellipsis()) {
      t.ellipsis = true;
    } else if (t.period_final && !(t.tok.size() >= 2 && t.tok.compare(t.tok.size() - 2, 2, "..") == 0)) {
      const std::string base = python_lower(std::string_view(t.tok).substr(0, t.tok.size() - 1));
      const size_t dash = base.rfind('-');
      const std::string last_part = dash == std::string::npos ? base : base.substr(dash + 1);
      if (params_.abbrev_types.count(base) || params_.abbrev_types.count(last_part)) t.abbr = true;
      else t.sentbreak = true;
    }
  }
  auto ortho_of = [&](const std::string& type) {
    auto it = params_.ortho_context.find(type);
    return it == params_.ortho_context.end() ? 0 : it->second;
  };
  // _ortho_heuristic: does `t` start a sentence?
  auto ortho_heuristic = [&](const Token& t) {
    if (t.tok == ";" || t.tok == ":" || t.tok == "," || t.tok == "." || t.tok == "!" || t.tok == "?") return Ortho::kFalse;
    const int context = ortho_of(t.type_no_sentperiod());
    if (t.first_upper() && (context & kOrthoLc) && !(context & kOrthoMidUc)) return Ortho::kTrue;
    if (t.first_lower() && ((context & kOrthoUc) || !(context & kOrthoBegLc))) return Ortho::kFalse;
    return Ortho::kUnknown;
  };
  // _second_pass_annotation on each (token, next token), then the check of text_contains_sentbreak.
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    Token& t = tokens[i];
    const Token& next = tokens[i + 1];
    [&] {
      if (!t.period_final) return;
      const std::string typ = t.type_no_period(), next_typ = next.type_no_sentperiod();
      const bool initial = t.is_initial();
      if (params_.collocations.count({typ, next_typ})) {  // 4.1.2 collocation heuristic
        t.sentbreak = false;
        t.abbr = true;
        return;
      }
      if ((t.abbr || t.ellipsis) && !initial) {  // 4.2 abbreviations that also end a sentence
        if (ortho_heuristic(next) == Ortho::kTrue) {
          t.sentbreak = true;
          return;
        }
        if (next.first_upper() && params_.sent_starters.count(next_typ)) {
          t.sentbreak = true;
          return;
        }
      }
      if (initial || typ == "##number##") {  // 4.3 initials and ordinals
        const Ortho starter = ortho_heuristic(next);
        if (starter == Ortho::kFalse) {
          t.sentbreak = false;
          t.abbr = true;
          return;
        }
        if (starter == Ortho::kUnknown && initial && next.first_upper() && !(ortho_of(next_typ) & kOrthoLc)) {
          t.sentbreak = false;
          t.abbr = true;
        }
      }
    }();
    if (t.sentbreak) return true;  // a break with a token after it
  }
  return false;
}

std::vector<std::pair<size_t, size_t>> PunktSentenceTokenizer::span_tokenize(std::string_view text) const {
  if (!utf8::valid(text)) fail("punkt: the text is not valid UTF-8");
  // _slices_from_text
  std::vector<std::pair<size_t, size_t>> slices;
  size_t last_break = 0;
  for (const PotentialEnd& end : potential_end_contexts(text)) {
    if (!text_contains_sentbreak(end.context)) continue;
    slices.emplace_back(last_break, end.match.end);
    last_break = end.next_tok.set() ? end.next_tok.begin : end.match.end;  // the next sentence starts at the next token
  }
  slices.emplace_back(last_break, utf8::python_rstrip(text).size());
  // _realign_boundaries: closing quotes and brackets after a break belong to the sentence before it.
  static const Pattern realignment(R"re(["\')\]}]+?(?:\s+|(?=--)|$))re", PCRE2_MULTILINE);
  std::vector<std::pair<size_t, size_t>> out;
  std::vector<Span> groups;
  size_t realign = 0;
  for (size_t i = 0; i < slices.size(); ++i) {
    const std::pair<size_t, size_t> s1{slices[i].first + realign, slices[i].second};
    const bool s1_nonempty = s1.first < s1.second;
    if (i + 1 == slices.size()) {
      if (s1_nonempty) out.push_back(s1);
      continue;
    }
    const auto [b2, e2] = slices[i + 1];
    const std::string_view s2 = b2 < e2 ? text.substr(b2, e2 - b2) : std::string_view();
    if (realignment.search(s2, 0, &groups, true)) {
      const std::string_view matched = s2.substr(0, groups[0].end);
      out.emplace_back(s1.first, b2 + utf8::python_rstrip(matched).size());
      realign = groups[0].end;
    } else {
      realign = 0;
      if (s1_nonempty) out.push_back(s1);
    }
  }
  return out;
}

std::vector<std::string> PunktSentenceTokenizer::tokenize(std::string_view text) const {
  std::vector<std::string> out;
  for (const auto& [b, e] : span_tokenize(text)) out.emplace_back(b < e ? text.substr(b, e - b) : std::string_view());  // text[b:e]
  return out;
}

std::vector<std::string> nltk_tokenize_words(const std::string& sentence) {
  struct Rule {
    Pattern pattern;
    const char* replacement;
  };
  // NLTKWordTokenizer's rules in order (replacements in PCRE2 syntax: $1 for \1, $0 for \g<0>).
  static const Rule starting_quotes[] = {
      {Pattern("([«“‘„]|[`]+)"), " $1 "},
      {Pattern(R"re(^\")re"), "``"},
      {Pattern("(``)"), " $1 "},
      {Pattern(R"re(([ \(\[{<])(\"|\'{2}))re"), "$1 `` "},
      {Pattern(R"re((?i)(\')(?!re|ve|ll|m|t|s|d|n)(\w)\b)re"), "$1 $2"},
  };
  static const Rule punctuation[] = {
      {Pattern(R"re(([^\.])(\.)([\]\)}>"\'»”’ ]*)\s*$)re"), "$1 $2 $3 "},
      {Pattern(R"re(([:,])([^\d]))re"), " $1 $2"},
      {Pattern("([:,])$"), " $1 "},
      {Pattern(R"re(\.{2,})re"), " $0 "},
      {Pattern("[;@#$%&]"), " $0 "},
      {Pattern(R"re(([^\.])(\.)([\]\)}>"\']*)\s*$)re"), "$1 $2$3 "},  // the final period
      {Pattern("[?!]"), " $0 "},
      {Pattern("([^'])' "), "$1 ' "},
      {Pattern("[*]"), " $0 "},
      {Pattern(R"re([\]\[\(\)\{\}\<\>])re"), " $0 "},  // PARENS_BRACKETS
      {Pattern("--"), " -- "},  // DOUBLE_DASHES
  };
  static const Rule ending_quotes[] = {
      {Pattern("([»”’])"), " $1 "},
      {Pattern("''"), " '' "},
      {Pattern("\""), " '' "},
      {Pattern("([^' ])('[sS]|'[mM]|'[dD]|') "), "$1 $2 "},
      {Pattern("([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), "$1 $2 "},
      // MacIntyre's CONTRACTIONS2 and CONTRACTIONS3 (CONTRACTIONS4 is unused in nltk too).
      {Pattern(R"re((?i)\b(can)(?#X)(not)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i)\b(d)(?#X)('ye)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i)\b(gim)(?#X)(me)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i)\b(gon)(?#X)(na)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i)\b(got)(?#X)(ta)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i)\b(lem)(?#X)(me)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i)\b(more)(?#X)('n)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i)\b(wan)(?#X)(na)(?=\s))re"), " $1 $2 "},
      {Pattern(R"re((?i) ('t)(?#X)(is)\b)re"), " $1 $2 "},
      {Pattern(R"re((?i) ('t)(?#X)(was)\b)re"), " $1 $2 "},
  };
  std::string text = sentence;
  for (const Rule& r : starting_quotes) text = r.pattern.sub(text, r.replacement);
  for (const Rule& r : punctuation) text = r.pattern.sub(text, r.replacement);
  text = " " + text + " ";
  for (const Rule& r : ending_quotes) text = r.pattern.sub(text, r.replacement);
  return python_split(text);
}

std::vector<std::string> word_tokenize(const std::string& input, const PunktSentenceTokenizer& punkt) {
  const std::string text = utf8::valid(input) ? input : utf8::lossy(input);
  std::vector<std::string> tokens;
  for (const auto& sentence : punkt.tokenize(text)) {
    for (auto& t : nltk_tokenize_words(sentence)) tokens.push_back(std::move(t));
  }
  return tokens;
}

}  // namespace m3d::eval
