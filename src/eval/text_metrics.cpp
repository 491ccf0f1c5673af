// See text_metrics.h. Sources: sacrebleu tokenizers/tokenizer_13a.py (the copy
// `evaluate` ships), tensorflow/nmt nmt/scripts/bleu.py compute_bleu,
// rouge_score 0.1.2 rouge_scorer.py + tokenize.py + scoring.py, rouge 1.0.1 rouge_score.py.
#include "eval/text_metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/strings.h"

namespace m3d::eval {
namespace {

std::vector<std::string> split_whitespace(const std::string& text) {
  std::vector<std::string> out;
  std::string current;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      if (!current.empty()) out.push_back(std::move(current)), current.clear();
    } else {
      current += c;
    }
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// 13a's first class: U+0020-0026, 0028-002B, 002F, 003A-0040, 005B-0060, 007B-007E.
bool punct_13a(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 0x20 && u <= 0x26) || (u >= 0x28 && u <= 0x2B) || u == 0x2F || (u >= 0x3A && u <= 0x40) || (u >= 0x5B && u <= 0x60) || (u >= 0x7B && u <= 0x7E);
}

using Ngram = std::vector<std::string>;

std::map<Ngram, int64_t> ngram_counts(const std::vector<std::string>& tokens, int n) {
  std::map<Ngram, int64_t> counts;
  for (size_t i = 0; i + n <= tokens.size(); ++i) ++counts[Ngram(tokens.begin() + i, tokens.begin() + i + n)];
  return counts;
}

double fmeasure(double p, double r) { return p + r > 0 ? 2 * p * r / (p + r) : 0.0; }

Prf score_ngrams(const std::vector<std::string>& target, const std::vector<std::string>& prediction, int n) {
  const auto t = ngram_counts(target, n), p = ngram_counts(prediction, n);
  int64_t overlap = 0, t_count = 0, p_count = 0;
  for (const auto& [g, c] : t) {
    t_count += c;
    auto it = p.find(g);
    if (it != p.end()) overlap += std::min(c, it->second);
  }
  for (const auto& [g, c] : p) p_count += c;
  Prf s;
  s.precision = static_cast<double>(overlap) / static_cast<double>(std::max<int64_t>(p_count, 1));
  s.recall = static_cast<double>(overlap) / static_cast<double>(std::max<int64_t>(t_count, 1));
  s.fmeasure = fmeasure(s.precision, s.recall);
  return s;
}

std::vector<std::vector<int>> lcs_table(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::vector<int>> t(a.size() + 1, std::vector<int>(b.size() + 1, 0));
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) t[i][j] = a[i - 1] == b[j - 1] ? t[i - 1][j - 1] + 1 : std::max(t[i - 1][j], t[i][j - 1]);
  }
  return t;
}

Prf score_lcs(const std::vector<std::string>& target, const std::vector<std::string>& prediction) {
  Prf s;
  if (target.empty() || prediction.empty()) return s;
  const int lcs = lcs_table(target, prediction)[target.size()][prediction.size()];
  s.precision = static_cast<double>(lcs) / static_cast<double>(prediction.size());
  s.recall = static_cast<double>(lcs) / static_cast<double>(target.size());
  s.fmeasure = fmeasure(s.precision, s.recall);
  return s;
}

// rouge_score _backtrack_norec: indices into `ref` of one LCS.
std::vector<size_t> lcs_indices(const std::vector<std::string>& ref, const std::vector<std::string>& can) {
  const auto t = lcs_table(ref, can);
  std::vector<size_t> out;
  size_t i = ref.size(), j = can.size();
  while (i > 0 && j > 0) {
    if (ref[i - 1] == can[j - 1]) {
      out.push_back(i - 1);
      --i, --j;
    } else if (t[i][j - 1] > t[i - 1][j]) {
      --j;
    } else {
      --i;
    }
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Prf summary_level_lcs(const std::vector<std::vector<std::string>>& ref_sents, const std::vector<std::vector<std::string>>& can_sents) {
  Prf s;
  if (ref_sents.empty() || can_sents.empty()) return s;
  int64_t m = 0, n = 0;
  std::map<std::string, int64_t> ref_counts, can_counts;
  for (const auto& sent : ref_sents) {
    m += static_cast<int64_t>(sent.size());
    for (const auto& t : sent) ++ref_counts[t];
  }
  for (const auto& sent : can_sents) {
    n += static_cast<int64_t>(sent.size());
    for (const auto& t : sent) ++can_counts[t];
  }
  if (m == 0 || n == 0) return s;
  int64_t hits = 0;
  for (const auto& ref : ref_sents) {
    std::set<size_t> union_indices;
    for (const auto& can : can_sents) {
      for (size_t index : lcs_indices(ref, can)) union_indices.insert(index);
    }
    for (size_t index : union_indices) {
      const std::string& token = ref[index];
      if (can_counts[token] > 0 && ref_counts[token] > 0) {
        ++hits;
        --can_counts[token];
        --ref_counts[token];
      }
    }
  }
  s.recall = static_cast<double>(hits) / static_cast<double>(m);
  s.precision = static_cast<double>(hits) / static_cast<double>(n);
  s.fmeasure = fmeasure(s.precision, s.recall);
  return s;
}

// Python's text.split(separator) (every piece, empty ones included).
std::vector<std::string> split_on(const std::string& text, char separator) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    out.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

// rouge_score's rougeLsum sentences: lines, empty ones dropped.
std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  for (auto& line : split_on(text, '\n')) {
    if (!line.empty()) out.push_back(std::move(line));
  }
  return out;
}

// --- the `rouge` package ---

// Sentences: text.split("."), non-empty pieces, whitespace runs collapsed.
std::vector<std::string> package_sentences(const std::string& text) {
  std::vector<std::string> out;
  for (const auto& piece : split_on(text, '.')) {
    if (piece.empty()) continue;
    std::string joined;
    for (const auto& w : split_whitespace(piece)) joined += (joined.empty() ? "" : " ") + w;
    out.push_back(joined);
  }
  return out;
}

std::vector<std::string> split_space(const std::string& sentence) { return split_on(sentence, ' '); }  // str.split(" ")
Prf package_prf(double overlap, double evaluated, double reference) {
  Prf s;
  s.precision = evaluated == 0 ? 0.0 : overlap / evaluated;
  s.recall = reference == 0 ? 0.0 : overlap / reference;
  s.fmeasure = 2.0 * ((s.precision * s.recall) / (s.precision + s.recall + 1e-8));
  return s;
}

Prf package_rouge_n(const std::vector<std::string>& hyp, const std::vector<std::string>& ref, int n) {
  std::vector<std::string> hw, rw;
  for (const auto& s : hyp) {
    for (auto& w : split_space(s)) hw.push_back(w);
  }
  for (const auto& s : ref) {
    for (auto& w : split_space(s)) rw.push_back(w);
  }
  std::set<Ngram> h, r;
  for (size_t i = 0; i + n <= hw.size(); ++i) h.insert(Ngram(hw.begin() + i, hw.begin() + i + n));
  for (size_t i = 0; i + n <= rw.size(); ++i) r.insert(Ngram(rw.begin() + i, rw.begin() + i + n));
  int64_t overlap = 0;
  for (const auto& g : h) overlap += r.count(g);
  return package_prf(static_cast<double>(overlap), static_cast<double>(h.size()), static_cast<double>(r.size()));
}

// _recon_lcs: the words of one LCS, backtracking up on strict >, else left.
void recon_lcs(const std::vector<std::string>& x, const std::vector<std::string>& y, std::set<std::string>& into) {
  const auto t = lcs_table(x, y);
  size_t i = x.size(), j = y.size();
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      into.insert(x[i - 1]);
      --i, --j;
    } else if (t[i - 1][j] > t[i][j - 1]) {
      --i;
    } else {
      --j;
    }
  }
}

Prf package_rouge_l(const std::vector<std::string>& hyp, const std::vector<std::string>& ref) {
  std::set<std::string> ref_words, hyp_words, lcs_union;
  for (const auto& s : ref) {
    for (auto& w : split_space(s)) ref_words.insert(w);
  }
  for (const auto& s : hyp) {
    for (auto& w : split_space(s)) hyp_words.insert(w);
  }
  for (const auto& r : ref) {
    const auto rw = split_space(r);
    for (const auto& h : hyp) recon_lcs(rw, split_space(h), lcs_union);
  }
  const double m = static_cast<double>(ref_words.size()), n = static_cast<double>(hyp_words.size()), llcs = static_cast<double>(lcs_union.size());
  Prf s;
  s.recall = llcs / m;
  s.precision = llcs / n;
  s.fmeasure = 2.0 * ((s.precision * s.recall) / (s.precision + s.recall + 1e-8));
  return s;
}

}  // namespace

std::vector<std::string> tokenize_13a(const std::string& input) {
  std::string line = replace_all(input, "<skipped>", "");
  line = replace_all(line, "-\n", "");
  line = replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    line = replace_all(line, "&quot;", "\"");
    line = replace_all(line, "&amp;", "&");
    line = replace_all(line, "&lt;", "<");
    line = replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";
  // (i) pad the punctuation class.
  std::string a;
  for (char c : line) {
    if (punct_13a(c)) a += ' ', a += c, a += ' ';
    else a += c;
  }
  // (ii) ([^0-9])([\.,]) -> "\1 \2 ", left to right without overlap.
  std::string b;
  for (size_t i = 0; i < a.size(); ++i) {
    if (i + 1 < a.size() && !is_digit(a[i]) && (a[i + 1] == '.' || a[i + 1] == ',')) {
      b += a[i], b += ' ', b += a[i + 1], b += ' ';
      ++i;
    } else {
      b += a[i];
    }
  }
  // (iii) ([\.,])([^0-9]) -> " \1 \2".
  std::string c;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i + 1 < b.size() && (b[i] == '.' || b[i] == ',') && !is_digit(b[i + 1])) {
      c += ' ', c += b[i], c += ' ', c += b[i + 1];
      ++i;
    } else {
      c += b[i];
    }
  }
  // (iv) ([0-9])(-) -> "\1 \2 ".
  std::string d;
  for (size_t i = 0; i < c.size(); ++i) {
    if (i + 1 < c.size() && is_digit(c[i]) && c[i + 1] == '-') {
      d += c[i], d += ' ', d += '-', d += ' ';
      ++i;
    } else {
      d += c[i];
    }
  }
  return split_whitespace(d);
}

void BleuStats::add(const BleuStats& other) {
  if (matches.size() < other.matches.size()) matches.resize(other.matches.size()), possible.resize(other.possible.size());
  for (size_t i = 0; i < other.matches.size(); ++i) matches[i] += other.matches[i], possible[i] += other.possible[i];
  prediction_length += other.prediction_length;
  reference_length += other.reference_length;
}

BleuStats bleu_stats(const std::string& prediction, const std::vector<std::string>& references, int max_order) {
  BleuStats s;
  s.matches.assign(static_cast<size_t>(max_order), 0);
  s.possible.assign(static_cast<size_t>(max_order), 0);
  const auto hyp = tokenize_13a(prediction);
  std::vector<std::vector<std::string>> refs;
  size_t shortest = SIZE_MAX;
  for (const auto& r : references) {
    refs.push_back(tokenize_13a(r));
    shortest = std::min(shortest, refs.back().size());
  }
  s.prediction_length = static_cast<int64_t>(hyp.size());
  s.reference_length = refs.empty() ? 0 : static_cast<int64_t>(shortest);
  for (int n = 1; n <= max_order; ++n) {
    std::map<Ngram, int64_t> merged;  // max count over the references
    for (const auto& r : refs) {
      for (const auto& [g, count] : ngram_counts(r, n)) merged[g] = std::max(merged[g], count);
    }
    for (const auto& [g, count] : ngram_counts(hyp, n)) {
      auto it = merged.find(g);
      if (it != merged.end()) s.matches[n - 1] += std::min(count, it->second);
    }
    s.possible[n - 1] = std::max<int64_t>(static_cast<int64_t>(hyp.size()) - n + 1, 0);
  }
  return s;
}

double bleu_score(const BleuStats& s) {
  const size_t order = s.matches.size();
  if (s.prediction_length == 0 || s.reference_length == 0 || order == 0) return 0.0;
  double log_sum = 0;
  for (size_t i = 0; i < order; ++i) {
    const double p = s.possible[i] > 0 ? static_cast<double>(s.matches[i]) / static_cast<double>(s.possible[i]) : 0.0;
    if (p <= 0) return 0.0;
    log_sum += std::log(p) / static_cast<double>(order);
  }
  const double geo = std::exp(log_sum);
  const double ratio = static_cast<double>(s.prediction_length) / static_cast<double>(s.reference_length);
  const double bp = ratio > 1.0 ? 1.0 : std::exp(1.0 - 1.0 / ratio);
  return geo * bp;
}

double bleu(const std::string& prediction, const std::vector<std::string>& references, int max_order) {
  return bleu_score(bleu_stats(prediction, references, max_order));
}

std::vector<std::string> rouge_tokenize(const std::string& text) {
  std::string spaced;
  bool in_gap = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    // Python's lower() maps the Kelvin sign (U+212A) to 'k'; every other non-ASCII character is a separator.
    if (static_cast<unsigned char>(c) == 0xE2 && i + 2 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0x84 &&
        static_cast<unsigned char>(text[i + 2]) == 0xAA) {
      c = 'k';
      i += 2;
    }
    const bool keep = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (keep) {
      spaced += c;
      in_gap = false;
    } else if (!in_gap) {
      spaced += ' ';
      in_gap = true;
    }
  }
  return split_whitespace(spaced);
}

RougeScores rouge(const std::string& prediction, const std::vector<std::string>& references) {
  const auto p_tokens = rouge_tokenize(prediction);
  std::vector<std::vector<std::string>> p_sents;
  for (const auto& line : split_lines(prediction)) p_sents.push_back(rouge_tokenize(line));
  RougeScores best;
  bool first = true;
  for (const auto& reference : references) {
    const auto t_tokens = rouge_tokenize(reference);
    std::vector<std::vector<std::string>> t_sents;
    for (const auto& line : split_lines(reference)) t_sents.push_back(rouge_tokenize(line));
    RougeScores s;
    s.rouge1 = score_ngrams(t_tokens, p_tokens, 1);
    s.rouge2 = score_ngrams(t_tokens, p_tokens, 2);
    s.rougeL = score_lcs(t_tokens, p_tokens);
    s.rougeLsum = summary_level_lcs(t_sents, p_sents);
    // Per type, the first reference with the highest F (np.argmax).
    if (first || s.rouge1.fmeasure > best.rouge1.fmeasure) best.rouge1 = s.rouge1;
    if (first || s.rouge2.fmeasure > best.rouge2.fmeasure) best.rouge2 = s.rouge2;
    if (first || s.rougeL.fmeasure > best.rougeL.fmeasure) best.rougeL = s.rougeL;
    if (first || s.rougeLsum.fmeasure > best.rougeLsum.fmeasure) best.rougeLsum = s.rougeLsum;
    first = false;
  }
  return best;
}

RougePackageScores rouge_package(const std::string& prediction, const std::string& reference) {
  RougePackageScores out;
  const auto hyp = package_sentences(prediction), ref = package_sentences(reference);
  if (hyp.empty() || ref.empty()) {
    out.valid = false;
    return out;
  }
  out.rouge1 = package_rouge_n(hyp, ref, 1);
  out.rouge2 = package_rouge_n(hyp, ref, 2);
  out.rougeL = package_rouge_l(hyp, ref);
  return out;
}

}  // namespace m3d::eval
