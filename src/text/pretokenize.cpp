// See pretokenize.h.
#include "text/pretokenize.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/strings.h"
#include "m3d/error.h"
#include "text/utf8.h"

namespace m3d::text {

using json = nlohmann::json;

namespace {

void flatten(const json& component, const char* list_key, std::vector<json>& out) {
  if (component.at("type") != "Sequence") {
    out.push_back(component);
    return;
  }
  for (const auto& part : component.at(list_key)) flatten(part, list_key, out);
}

// Calls f(start, end, code point) for every character of valid UTF-8 `text`.
template <typename F>
void for_each_char(const std::string& text, F&& f) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = std::min(utf8::sequence_length(static_cast<unsigned char>(text[i])), text.size() - i);
    f(i, i + n, utf8::code_point(std::string_view(text).substr(i, n)));
    i += n;
  }
}

// pattern.rs for a `Fn(char) -> bool`: every character it accepts is a match of its own.
template <typename F>
std::vector<Match> char_matches(const std::string& text, F&& accept) {
  if (text.empty()) return {{0, 0, false}};
  std::vector<Match> out;
  size_t gap = 0;
  for_each_char(text, [&](size_t start, size_t end, uint32_t cp) {
    if (!accept(cp)) return;
    if (gap < start) out.push_back({gap, start, false});
    out.push_back({start, end, true});
    gap = end;
  });
  if (gap < text.size()) out.push_back({gap, text.size(), false});
  return out;
}

// NormalizedString::split (normalizer.rs): the byte ranges that remain of the text
// `matches` covers, delimiters dropped, isolated or merged as `behavior` says.
std::vector<std::pair<size_t, size_t>> split_ranges(const std::vector<Match>& matches, SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> out;
  bool previous = false;  // the previous part was a match
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const auto& m : matches) {
        if (!m.is_match) out.emplace_back(m.start, m.end);
      }
      break;
    case SplitBehavior::Isolated:
      for (const auto& m : matches) out.emplace_back(m.start, m.end);
      break;
    case SplitBehavior::Contiguous:
    case SplitBehavior::MergedWithPrevious:
      for (const auto& m : matches) {
        const bool merge = behavior == SplitBehavior::Contiguous ? m.is_match == previous : m.is_match && !previous;
        if (merge && !out.empty()) out.back().second = m.end;
        else out.emplace_back(m.start, m.end);
        previous = m.is_match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto m = matches.rbegin(); m != matches.rend(); ++m) {
        if (m->is_match && !previous && !out.empty()) out.back().first = m->start;
        else out.emplace_back(m->start, m->end);
        previous = m->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  return out;
}

SplitBehavior json_behavior(const json& step, const std::string& where) {
  static const std::pair<const char*, SplitBehavior> kNames[] = {{"Removed", SplitBehavior::Removed},
                                                                 {"Isolated", SplitBehavior::Isolated},
                                                                 {"MergedWithPrevious", SplitBehavior::MergedWithPrevious},
                                                                 {"MergedWithNext", SplitBehavior::MergedWithNext},
                                                                 {"Contiguous", SplitBehavior::Contiguous}};
  const std::string name = step.value("behavior", "Isolated");  // Punctuation's default; Split requires the field
  for (const auto& [n, behavior] : kNames) {
    if (name == n) return behavior;
  }
  fail("{}: {} pre-tokenizer: behavior '{}' is not supported (supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)", where,
       step.at("type").get<std::string>(), name);
}

// The one character of a Metaspace replacement or a CharDelimiterSplit delimiter (a Rust char).
uint32_t json_char(const json& step, const char* key, const std::string& where) {
  const std::string text = step.at(key).get<std::string>();
  if (text.empty() || utf8::valid_char_length(text) != text.size()) {
    fail("{}: {} pre-tokenizer: '{}' must be one character, got '{}'", where, step.at("type").get<std::string>(), key, text);
  }
  return utf8::code_point(text);
}

std::string strip_white_space(const std::string& text, bool left, bool right) {
  size_t begin = 0, end = text.size();
  if (left) {
    for_each_char(text, [&](size_t start, size_t stop, uint32_t cp) {
      if (begin == start && is_white_space(cp)) begin = stop;
    });
  }
  if (right) {
    size_t kept = begin;  // end of the last character that is not white space
    for_each_char(text, [&](size_t start, size_t stop, uint32_t cp) {
      if (start >= begin && !is_white_space(cp)) kept = stop;
    });
    end = kept;
  }
  return text.substr(begin, end - begin);
}

}  // namespace

std::vector<json> json_components(const json& root, const char* key, const char* list_key) {
  std::vector<json> out;
  if (root.contains(key) && !root[key].is_null()) flatten(root[key], list_key, out);
  return out;
}

std::shared_ptr<Regex> json_pattern(const json& step, const std::string& where) {
  const json& pattern = step.at("pattern");
  if (pattern.contains("String")) return std::make_shared<Regex>(Regex::escape(pattern.at("String").get<std::string>()), where);
  if (pattern.contains("Regex")) return std::make_shared<Regex>(pattern.at("Regex").get<std::string>(), where);
  fail("{}: {}: pattern {} is not supported (supported: {{\"String\": ...}}, {{\"Regex\": ...}})", where, step.at("type").get<std::string>(), pattern.dump());
}

std::string regex_replace(const Regex& pattern, const std::string& text, const std::string& content) {
  std::string out;
  for (const auto& m : pattern.find_matches(text)) out += m.is_match ? content : text.substr(m.start, m.end - m.start);
  return out;
}

ByteTable::ByteTable() {
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
    byte_to_char[b] = utf8::encode(cp);
    char_to_byte[cp] = static_cast<unsigned char>(b);
  }
}

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

Metaspace json_metaspace(const json& step, const std::string& where) {
  Metaspace m;
  m.replacement = utf8::encode(json_char(step, "replacement", where));
  const std::string scheme = step.contains("prepend_scheme") ? step["prepend_scheme"].get<std::string>() : "always";
  if (scheme == "always") m.prepend = Metaspace::Prepend::Always;
  else if (scheme == "first") m.prepend = Metaspace::Prepend::First;
  else if (scheme == "never") m.prepend = Metaspace::Prepend::Never;
  else fail("{}: Metaspace: prepend_scheme '{}' is not supported (supported: always, first, never)", where, scheme);
  // The legacy field: true is the default; false must come with "never" (metaspace.rs deserialize).
  if (step.contains("add_prefix_space") && step["add_prefix_space"] == false && m.prepend != Metaspace::Prepend::Never) {
    fail("{}: Metaspace: add_prefix_space false does not match prepend_scheme '{}' (tokenizers refuses this too: write \"prepend_scheme\": \"never\")", where,
         scheme);
  }
  if (step.contains("split") && !step["split"].is_null()) m.split = step["split"].get<bool>();
  return m;
}

Normalizer::Normalizer(const json& root, const std::string& where) {
  for (const auto& s : json_components(root, "normalizer", "normalizers")) {
    const std::string kind = s.at("type");
    Step step{};
    if (kind == "Prepend") {
      step = {Step::Kind::Prepend, s.at("prepend").get<std::string>()};
    } else if (kind == "Replace") {
      step = {Step::Kind::Replace, s.at("content").get<std::string>(), json_pattern(s, where)};
    } else if (kind == "NFC" || kind == "NFD" || kind == "NFKC" || kind == "NFKD") {
      step.kind = kind == "NFC" ? Step::Kind::Nfc : kind == "NFD" ? Step::Kind::Nfd : kind == "NFKC" ? Step::Kind::Nfkc : Step::Kind::Nfkd;
    } else if (kind == "Lowercase") {
      step.kind = Step::Kind::Lowercase;
    } else if (kind == "Strip") {
      step.kind = Step::Kind::Strip;
      step.left = s.at("strip_left").get<bool>();
      step.right = s.at("strip_right").get<bool>();
    } else if (kind == "StripAccents") {
      step.kind = Step::Kind::StripAccents;
    } else {
      fail("{}: normalizer '{}' is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents)", where, kind);
    }
    steps_.push_back(step);
  }
}

std::string Normalizer::operator()(const std::string& text) const {
  std::string out = text;
  for (const auto& step : steps_) {
    switch (step.kind) {
      case Step::Kind::Prepend:
        if (!out.empty()) out = step.content + out;
        break;
      case Step::Kind::Replace:
        out = regex_replace(*step.pattern, out, step.content);
        break;
      case Step::Kind::Nfc:
        out = nfc(out);
        break;
      case Step::Kind::Nfd:
        out = nfd(out);
        break;
      case Step::Kind::Nfkc:
        out = nfkc(out);
        break;
      case Step::Kind::Nfkd:
        out = nfkd(out);
        break;
      case Step::Kind::Lowercase:
        out = lowercase(out);
        break;
      case Step::Kind::Strip:
        out = strip_white_space(out, step.left, step.right);
        break;
      case Step::Kind::StripAccents: {
        std::string kept;
        for_each_char(out, [&](size_t start, size_t end, uint32_t cp) {
          if (!is_mark(cp)) kept.append(out, start, end - start);
        });
        out = std::move(kept);
        break;
      }
    }
  }
  return out;
}

PreTokenizer::PreTokenizer(const json& root, const std::string& where) {
  static const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  for (const auto& s : json_components(root, "pre_tokenizer", "pretokenizers")) {
    const std::string kind = s.at("type");
    Step step{};
    if (kind == "Split") {
      step.kind = Step::Kind::Split;
      step.regex = json_pattern(s, where);
      step.behavior = json_behavior(s, where);
      step.invert = s.at("invert").get<bool>();
    } else if (kind == "Digits") {
      step.kind = Step::Kind::Digits;
      step.flag = s.value("individual_digits", false);
    } else if (kind == "ByteLevel") {
      step.kind = Step::Kind::ByteLevel;
      step.flag = s.value("add_prefix_space", true);
      if (s.value("use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2Pattern, where);
    } else if (kind == "Metaspace") {
      step.kind = Step::Kind::Metaspace;
      step.metaspace = json_metaspace(s, where);
    } else if (kind == "Whitespace") {
      step.kind = Step::Kind::Whitespace;
    } else if (kind == "WhitespaceSplit") {
      step.kind = Step::Kind::WhitespaceSplit;
    } else if (kind == "Punctuation") {
      step.kind = Step::Kind::Punctuation;
      step.behavior = json_behavior(s, where);
    } else if (kind == "CharDelimiterSplit") {
      step.kind = Step::Kind::CharDelimiterSplit;
      step.delimiter = json_char(s, "delimiter", where);
    } else {
      fail(
          "{}: pre_tokenizer '{}' is not supported (supported: Sequence, Split, Digits, ByteLevel, Metaspace, Whitespace, WhitespaceSplit, "
          "Punctuation, CharDelimiterSplit)",
          where, kind);
    }
    steps_.push_back(step);
  }
}

std::vector<std::string> PreTokenizer::operator()(const std::string& text, bool at_start) const {
  std::vector<Piece> pieces{{text, at_start}};
  for (const auto& step : steps_) {
    std::vector<Piece> next;
    for (auto& piece : pieces) apply(step, piece, next);
    pieces = std::move(next);
  }
  std::vector<std::string> words;
  for (auto& piece : pieces) words.push_back(std::move(piece.text));
  return words;
}

void PreTokenizer::apply(const Step& step, Piece& piece, std::vector<Piece>& out) {
  std::string& text = piece.text;
  std::vector<std::pair<size_t, size_t>> ranges;  // what remains of `text`
  switch (step.kind) {
    case Step::Kind::Split: {
      std::vector<Match> matches = step.regex->find_matches(text);
      if (step.invert) {
        for (auto& m : matches) m.is_match = !m.is_match;
      }
      ranges = split_ranges(matches, step.behavior);
      break;
    }
    case Step::Kind::Digits:  // digits.rs: char::is_numeric
      ranges = split_ranges(char_matches(text, is_numeric), step.flag ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
      break;
    case Step::Kind::Punctuation:
      ranges = split_ranges(char_matches(text, is_punctuation), step.behavior);
      break;
    case Step::Kind::WhitespaceSplit:
      ranges = split_ranges(char_matches(text, is_white_space), SplitBehavior::Removed);
      break;
    case Step::Kind::CharDelimiterSplit:
      ranges = split_ranges(char_matches(text, [&](uint32_t cp) { return cp == step.delimiter; }), SplitBehavior::Removed);
      break;
    case Step::Kind::Whitespace: {  // whitespace.rs: the matches of \w+|[^\w\s]+, the rest removed
      int run = 0;  // 1: \w run, 2: [^\w\s] run, 0: white space
      for_each_char(text, [&](size_t start, size_t end, uint32_t cp) {
        const int kind = is_word(cp) ? 1 : is_white_space(cp) ? 0 : 2;
        if (kind != 0 && kind == run) ranges.back().second = end;
        else if (kind != 0) ranges.emplace_back(start, end);
        run = kind;
      });
      break;
    }
    case Step::Kind::Metaspace: {  // metaspace.rs
      const Metaspace& m = step.metaspace;
      text = replace_all(text, " ", m.replacement);
      const bool prepend = m.prepend == Metaspace::Prepend::Always || (m.prepend == Metaspace::Prepend::First && piece.at_start);
      if (prepend && !text.empty() && text.rfind(m.replacement, 0) != 0) text.insert(0, m.replacement);
      const uint32_t replacement = utf8::code_point(m.replacement);
      if (m.split) ranges = split_ranges(char_matches(text, [&](uint32_t cp) { return cp == replacement; }), SplitBehavior::MergedWithNext);
      else ranges = {{0, text.size()}};
      break;
    }
    case Step::Kind::ByteLevel: {  // byte_level.rs: optional prefix space, GPT-2's regex, bytes as characters
      if (step.flag && !text.empty() && text[0] != ' ') text.insert(0, " ");
      ranges = step.regex ? split_ranges(step.regex->find_matches(text), SplitBehavior::Isolated) : std::vector<std::pair<size_t, size_t>>{{0, text.size()}};
      for (const auto& [start, end] : ranges) {
        if (start == end) continue;
        std::string mapped;
        for (size_t i = start; i < end; ++i) mapped += byte_table().byte_to_char[static_cast<unsigned char>(text[i])];
        out.push_back({std::move(mapped), piece.at_start && start == 0});
      }
      return;
    }
  }
  for (const auto& [start, end] : ranges) {
    if (start < end) out.push_back({text.substr(start, end - start), piece.at_start && start == 0});  // pre_tokenizer.rs drops empty splits
  }
}

}  // namespace m3d::text
