// See porter.h. Follows nltk/stem/porter.py (nltk 3.8-3.10, unchanged logic).
#include "eval/porter.h"

#include <functional>
#include <map>
#include <vector>

#include "text/utf8.h"

namespace m3d::eval {
namespace {

using Word = std::u32string;
using Condition = std::function<bool(const Word&)>;

bool is_vowel(char32_t c) { return c == U'a' || c == U'e' || c == U'i' || c == U'o' || c == U'u'; }

// _is_consonant: a 'y' is a consonant unless an odd run of y's ends on a consonant... as nltk counts it.
bool is_consonant(const Word& w, size_t i) {
  if (is_vowel(w[i])) return false;
  if (w[i] == U'y') {
    bool negate = false;
    while (i > 0 && w[i] == U'y') {
      negate = !negate;
      --i;
    }
    return (!is_vowel(w[i])) != negate;
  }
  return true;
}

// _consonant_flags: 'y' is a consonant at the start, else the opposite of the letter before.
std::vector<bool> consonant_flags(const Word& w) {
  std::vector<bool> flags;
  for (size_t i = 0; i < w.size(); ++i) {
    if (is_vowel(w[i])) flags.push_back(false);
    else if (w[i] == U'y') flags.push_back(i == 0 ? true : !flags[i - 1]);
    else flags.push_back(true);
  }
  return flags;
}

int measure(const Word& stem) {
  const auto flags = consonant_flags(stem);
  int count = 0;
  for (size_t i = 0; i + 1 < flags.size(); ++i) count += !flags[i] && flags[i + 1];
  return count;
}

bool positive_measure(const Word& stem) { return measure(stem) > 0; }

bool contains_vowel(const Word& stem) {
  for (bool consonant : consonant_flags(stem)) {
    if (!consonant) return true;
  }
  return false;
}

bool ends_double_consonant(const Word& w) { return w.size() >= 2 && w[w.size() - 1] == w[w.size() - 2] && is_consonant(w, w.size() - 1); }

bool ends_cvc(const Word& w) {
  const size_t n = w.size();
  if (n >= 3 && is_consonant(w, n - 3) && !is_consonant(w, n - 2) && is_consonant(w, n - 1) && w[n - 1] != U'w' && w[n - 1] != U'x' && w[n - 1] != U'y') {
    return true;
  }
  return n == 2 && !is_consonant(w, 0) && is_consonant(w, 1);  // NLTK_EXTENSIONS
}

bool ends_with(const Word& w, const Word& suffix) { return w.size() >= suffix.size() && w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0; }

Word cut(const Word& w, size_t n) { return w.substr(0, w.size() - n); }

struct Rule {
  Word suffix, replacement;  // suffix U"*d": a double consonant
  Condition condition;  // empty: always
};

// _apply_rule_list: the first rule whose suffix matches decides, whether its condition holds or not.
Word apply_rules(const Word& w, const std::vector<Rule>& rules) {
  for (const auto& r : rules) {
    if (r.suffix == U"*d" && ends_double_consonant(w)) {
      const Word stem = cut(w, 2);
      return !r.condition || r.condition(stem) ? stem + r.replacement : w;
    }
    if (ends_with(w, r.suffix)) {
      const Word stem = cut(w, r.suffix.size());
      return !r.condition || r.condition(stem) ? stem + r.replacement : w;
    }
  }
  return w;
}

Word step1a(const Word& w) {
  if (ends_with(w, U"ies") && w.size() == 4) return cut(w, 3) + U"ie";
  return apply_rules(w, {{U"sses", U"ss", {}}, {U"ies", U"i", {}}, {U"ss", U"ss", {}}, {U"s", U"", {}}});
}

Word step1b(const Word& w) {
  if (ends_with(w, U"ied")) return cut(w, 3) + (w.size() == 4 ? U"ie" : U"i");
  if (ends_with(w, U"eed")) {
    const Word stem = cut(w, 3);
    return measure(stem) > 0 ? stem + U"ee" : w;
  }
  Word stem;
  bool succeeded = false;
  for (const Word& suffix : {Word(U"ed"), Word(U"ing")}) {
    if (ends_with(w, suffix)) {
      stem = cut(w, suffix.size());
      if (contains_vowel(stem)) {
        succeeded = true;
        break;
      }
    }
  }
  if (!succeeded) return w;
  const char32_t last = stem.back();
  return apply_rules(stem, {{U"at", U"ate", {}},
                            {U"bl", U"ble", {}},
                            {U"iz", U"ize", {}},
                            {U"*d", Word(1, last), [last](const Word&) { return last != U'l' && last != U's' && last != U'z'; }},
                            {U"", U"e", [](const Word& s) { return measure(s) == 1 && ends_cvc(s); }}});
}

Word step1c(const Word& w) {
  return apply_rules(w, {{U"y", U"i", [](const Word& s) { return s.size() > 1 && is_consonant(s, s.size() - 1); }}});
}

Word step2(const Word& w) {
  if (ends_with(w, U"alli") && positive_measure(cut(w, 4))) return step2(cut(w, 4) + U"al");
  const Condition m = positive_measure;
  return apply_rules(w, {{U"ational", U"ate", m}, {U"tional", U"tion", m},
                         {U"enci", U"ence", m},   {U"anci", U"ance", m},
                         {U"izer", U"ize", m},    {U"bli", U"ble", m},
                         {U"alli", U"al", m},     {U"entli", U"ent", m},
                         {U"eli", U"e", m},       {U"ousli", U"ous", m},
                         {U"ization", U"ize", m}, {U"ation", U"ate", m},
                         {U"ator", U"ate", m},    {U"alism", U"al", m},
                         {U"iveness", U"ive", m}, {U"fulness", U"ful", m},
                         {U"ousness", U"ous", m}, {U"aliti", U"al", m},
                         {U"iviti", U"ive", m},   {U"biliti", U"ble", m},
                         {U"fulli", U"ful", m},   {U"logi", U"log", [w](const Word&) { return positive_measure(cut(w, 3)); }}});
}

Word step3(const Word& w) {
  const Condition m = positive_measure;
  return apply_rules(
      w, {{U"icate", U"ic", m}, {U"ative", U"", m}, {U"alize", U"al", m}, {U"iciti", U"ic", m}, {U"ical", U"ic", m}, {U"ful", U"", m}, {U"ness", U"", m}});
}

Word step4(const Word& w) {
  const Condition m = [](const Word& s) { return measure(s) > 1; };
  return apply_rules(w, {{U"al", U"", m},
                         {U"ance", U"", m},
                         {U"ence", U"", m},
                         {U"er", U"", m},
                         {U"ic", U"", m},
                         {U"able", U"", m},
                         {U"ible", U"", m},
                         {U"ant", U"", m},
                         {U"ement", U"", m},
                         {U"ment", U"", m},
                         {U"ent", U"", m},
                         {U"ion", U"", [](const Word& s) { return measure(s) > 1 && !s.empty() && (s.back() == U's' || s.back() == U't'); }},
                         {U"ou", U"", m},
                         {U"ism", U"", m},
                         {U"ate", U"", m},
                         {U"iti", U"", m},
                         {U"ous", U"", m},
                         {U"ive", U"", m},
                         {U"ize", U"", m}});
}

Word step5a(const Word& w) {
  if (!ends_with(w, U"e")) return w;
  const Word stem = cut(w, 1);
  if (measure(stem) > 1) return stem;
  if (measure(stem) == 1 && !ends_cvc(stem)) return stem;
  return w;
}

Word step5b(const Word& w) {
  return apply_rules(w, {{U"ll", U"l", [w](const Word&) { return measure(cut(w, 1)) > 1; }}});
}

Word to_u32(const std::string& s) {
  Word out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::max<size_t>(text::utf8::valid_char_length(std::string_view(s).substr(i)), 1);
    out.push_back(text::utf8::code_point(std::string_view(s).substr(i, n)));
    i += n;
  }
  return out;
}

std::string to_utf8(const Word& w) {
  std::string out;
  for (char32_t c : w) out += text::utf8::encode(static_cast<uint32_t>(c));
  return out;
}

}  // namespace

std::string porter_stem(const std::string& input) {
  static const std::map<Word, Word> pool = {{U"sky", U"sky"},        {U"skies", U"sky"},       {U"dying", U"die"},        {U"lying", U"lie"},
                                            {U"tying", U"tie"},      {U"news", U"news"},       {U"innings", U"inning"},   {U"inning", U"inning"},
                                            {U"outings", U"outing"}, {U"outing", U"outing"},   {U"cannings", U"canning"}, {U"canning", U"canning"},
                                            {U"howe", U"howe"},      {U"proceed", U"proceed"}, {U"exceed", U"exceed"},    {U"succeed", U"succeed"}};
  const Word original = to_u32(input);
  Word w = original;
  for (char32_t& c : w) {  // str.lower() for ASCII and Latin-1 capitals
    if ((c >= U'A' && c <= U'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7)) c += 0x20;
    if (c == 0x212A) c = U'k';  // the Kelvin sign lowers to k
  }
  if (auto it = pool.find(w); it != pool.end()) return to_utf8(it->second);
  if (original.size() <= 2) return to_utf8(w);
  w = step5b(step5a(step4(step3(step2(step1c(step1b(step1a(w))))))));
  return to_utf8(w);
}

}  // namespace m3d::eval
