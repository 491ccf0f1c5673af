// tokenizer.json as huggingface/tokenizers runs it (tokenizer/added_vocabulary.rs,
// models/bpe/model.rs, normalizers, decoders/byte_fallback.rs, processors/template.rs),
// for the SentencePiece-BPE layout of Llama-2 / Phi-3 / Mistral. Byte-level BPE
// (GPT-2, Qwen) and other components are refused by name until implemented.
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>

#include "io/json_util.h"
#include "m3d/error.h"

namespace m3d::text {
namespace {

using json = nlohmann::json;

struct Replace {
  std::string pattern, content;
};

std::string replace_all(std::string text, const std::string& pattern, const std::string& content) {
  if (pattern.empty()) return text;
  size_t pos = 0;
  while ((pos = text.find(pattern, pos)) != std::string::npos) {
    text.replace(pos, pattern.size(), content);
    pos += content.size();
  }
  return text;
}

// Length in bytes of the UTF-8 sequence starting with `lead` (1 for invalid bytes).
size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

bool utf8_valid(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_length(lead);
    if (n == 1 && lead >= 0x80) return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

struct Decoder {
  enum class Kind { Replace, ByteFallback, Fuse, Strip } kind;
  Replace replace;
  std::string strip_content;
  int64_t strip_start = 0, strip_stop = 0;
};

std::string pattern_string(const json& step, const std::string& where) {
  const auto& pattern = step.at("pattern");
  if (!pattern.contains("String")) fail("{}: only String patterns are supported in Replace, got {}", where, pattern.dump());
  return pattern.at("String").get<std::string>();
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> id_to_token;  // model vocabulary and added tokens
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> merges;  // pair -> (rank, merged id)
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  int64_t unk_id = -1;
  int64_t byte_ids[256];
  std::vector<Replace> normalizer;  // applied in order; a Prepend is a Replace with an empty pattern
  std::vector<Decoder> decoders;
  std::vector<int64_t> prefix_ids, suffix_ids;  // TemplateProcessing "single"
  std::vector<AddedTokenSpec> added;  // in the order they were added
  std::unordered_map<int64_t, bool> special;  // ids of special added tokens

  std::string normalize(const std::string& piece) const {
    std::string out = piece;
    for (const auto& step : normalizer) {
      if (step.pattern.empty()) {
        if (!out.empty()) out = step.content + out;  // Prepend
      } else {
        out = replace_all(out, step.pattern, step.content);
      }
    }
    return out;
  }

  // BPE over one word (models/bpe/model.rs: merge_word + the priority merge loop).
  void bpe(const std::string& word, std::vector<int64_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges) {
      if (auto it = vocab.find(word); it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<int64_t> symbols;
    for (size_t i = 0; i < word.size();) {
      const size_t n = std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
      const std::string ch = word.substr(i, n);
      i += n;
      if (auto it = vocab.find(ch); it != vocab.end()) {
        symbols.push_back(it->second);
      } else if (byte_fallback && std::all_of(ch.begin(), ch.end(), [&](char b) { return byte_ids[static_cast<unsigned char>(b)] >= 0; })) {
        for (char b : ch) symbols.push_back(byte_ids[static_cast<unsigned char>(b)]);
      } else {
        if (unk_id < 0) fail("{}: character '{}' is not in the vocabulary and there is no unk token", path, ch);
        if (!(fuse_unk && !symbols.empty() && symbols.back() == unk_id)) symbols.push_back(unk_id);
      }
    }
    while (symbols.size() > 1) {
      int64_t best_rank = std::numeric_limits<int64_t>::max(), best_id = -1;
      size_t best_pos = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        auto it = merges.find({symbols[i], symbols[i + 1]});
        if (it != merges.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          best_id = it->second.second;
          best_pos = i;
        }
      }
      if (best_id < 0) break;
      symbols[best_pos] = best_id;
      symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
  }

  // A piece of text, or an added token's id.
  struct Piece {
    std::string text;
    int64_t id = -1;
  };

  // Splits `text` on the added tokens with normalized == `normalized`, leftmost-longest.
  std::vector<Piece> split_added(const std::string& text, bool normalized) const {
    std::vector<Piece> out;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      const AddedTokenSpec* best = nullptr;
      for (const auto& token : added) {
        if (token.normalized != normalized || token.pattern.empty()) continue;
        if (text.compare(i, token.pattern.size(), token.pattern) != 0) continue;
        if (token.single_word) {
          const bool left_ok = i == 0 || is_space(text[i - 1]);
          const size_t end = i + token.pattern.size();
          const bool right_ok = end == text.size() || is_space(text[end]);
          if (!left_ok || !right_ok) continue;
        }
        if (best == nullptr || token.pattern.size() > best->pattern.size()) best = &token;
      }
      if (best == nullptr) {
        i += utf8_length(static_cast<unsigned char>(text[i]));
        continue;
      }
      size_t piece_end = i, next = i + best->pattern.size();
      if (best->lstrip) {
        while (piece_end > start && is_space(text[piece_end - 1])) --piece_end;
      }
      if (best->rstrip) {
        while (next < text.size() && is_space(text[next])) ++next;
      }
      if (piece_end > start) out.push_back({text.substr(start, piece_end - start), -1});
      out.push_back({"", best->id});
      start = i = next;
    }
    if (start < text.size()) out.push_back({text.substr(start), -1});
    return out;
  }

  void add(const std::string& content, bool is_special) {
    if (content.empty()) fail("tokenizer: cannot add an empty token");
    for (auto& token : added) {
      if (token.content == content) {
        token.special = token.special || is_special;
        if (is_special) special[token.id] = true;
        return;
      }
    }
    AddedTokenSpec token;
    token.content = content;
    token.special = is_special;
    token.normalized = !is_special;  // tokenizers' AddedToken default
    // Normalized tokens are matched by their normalized form (added_vocabulary.rs
    // refresh_added_tokens): with Llama's Prepend("▁"), "[SEG]" matches "▁[SEG]".
    token.pattern = token.normalized ? normalize(content) : content;
    if (auto it = vocab.find(content); it != vocab.end()) {
      token.id = it->second;
    } else {
      token.id = static_cast<int64_t>(id_to_token.size());
      id_to_token.push_back(content);
      vocab[content] = token.id;
    }
    if (is_special) special[token.id] = true;
    added.push_back(token);
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  const json root = io::json_read_file(path);
  Tokenizer tokenizer;
  Impl& t = *tokenizer.impl_;
  t.path = path;
  std::fill(std::begin(t.byte_ids), std::end(t.byte_ids), -1);
  try {
    const json& model = root.at("model");
    const std::string type = model.value("type", "BPE");
    if (type != "BPE") fail("{}: model type '{}' is not supported (supported: BPE)", path, type);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
      if (model.contains(key) && !model[key].is_null()) fail("{}: BPE option '{}' is not supported", path, key);
    }
    const json& vocab = model.at("vocab");
    t.id_to_token.resize(vocab.size());
    for (const auto& [token, id] : vocab.items()) {
      const int64_t i = id.get<int64_t>();
      if (i < 0 || i >= static_cast<int64_t>(vocab.size())) fail("{}: vocab id {} of '{}' out of range", path, i, token);
      t.vocab[token] = i;
      t.id_to_token[i] = token;
    }
    int64_t rank = 0;
    for (const auto& merge : model.at("merges")) {
      std::string a, b;
      if (merge.is_string()) {
        const std::string text = merge.get<std::string>();
        const size_t space = text.find(' ');
        if (space == std::string::npos) fail("{}: merge '{}' has no space", path, text);
        a = text.substr(0, space), b = text.substr(space + 1);
      } else {
        a = merge.at(0).get<std::string>(), b = merge.at(1).get<std::string>();
      }
      auto ia = t.vocab.find(a), ib = t.vocab.find(b), im = t.vocab.find(a + b);
      if (ia == t.vocab.end() || ib == t.vocab.end() || im == t.vocab.end()) {
        fail("{}: merge '{} {}' uses tokens missing from the vocabulary", path, a, b);
      }
      t.merges.emplace(std::make_pair(ia->second, ib->second), std::make_pair(rank++, im->second));
    }
    t.byte_fallback = model.value("byte_fallback", false);
    t.fuse_unk = model.value("fuse_unk", false);
    t.ignore_merges = model.value("ignore_merges", false);
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      auto it = t.vocab.find(model["unk_token"].get<std::string>());
      if (it != t.vocab.end()) t.unk_id = it->second;
    }
    for (int b = 0; b < 256; ++b) {
      auto it = t.vocab.find(fmt::format("<0x{:02X}>", b));
      if (it != t.vocab.end()) t.byte_ids[b] = it->second;
    }

    // Normalizer: Sequence of Prepend / Replace.
    std::vector<json> steps;
    if (root.contains("normalizer") && !root["normalizer"].is_null()) {
      const json& n = root["normalizer"];
      if (n.at("type") == "Sequence") {
        for (const auto& s : n.at("normalizers")) steps.push_back(s);
      } else {
        steps.push_back(n);
      }
    }
    for (const auto& s : steps) {
      const std::string kind = s.at("type");
      if (kind == "Prepend") {
        t.normalizer.push_back({"", s.at("prepend").get<std::string>()});
      } else if (kind == "Replace") {
        t.normalizer.push_back({pattern_string(s, path), s.at("content").get<std::string>()});
      } else {
        fail("{}: normalizer '{}' is not supported (supported: Prepend, Replace)", path, kind);
      }
    }
    if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null()) {
      fail("{}: pre_tokenizer '{}' is not supported yet (byte-level BPE such as Qwen's needs it)", path,
           root["pre_tokenizer"].value("type", "?"));
    }

    // Decoder: Sequence of Replace / ByteFallback / Fuse / Strip.
    std::vector<json> decoders;
    if (root.contains("decoder") && !root["decoder"].is_null()) {
      const json& d = root["decoder"];
      if (d.at("type") == "Sequence") {
        for (const auto& s : d.at("decoders")) decoders.push_back(s);
      } else {
        decoders.push_back(d);
      }
    }
    for (const auto& s : decoders) {
      const std::string kind = s.at("type");
      Decoder decoder{};
      if (kind == "Replace") {
        decoder.kind = Decoder::Kind::Replace;
        decoder.replace = {pattern_string(s, path), s.at("content").get<std::string>()};
      } else if (kind == "ByteFallback") {
        decoder.kind = Decoder::Kind::ByteFallback;
      } else if (kind == "Fuse") {
        decoder.kind = Decoder::Kind::Fuse;
      } else if (kind == "Strip") {
        decoder.kind = Decoder::Kind::Strip;
        decoder.strip_content = s.at("content").get<std::string>();
        decoder.strip_start = s.value("start", 0);
        decoder.strip_stop = s.value("stop", 0);
      } else {
        fail("{}: decoder '{}' is not supported (supported: Replace, ByteFallback, Fuse, Strip)", path, kind);
      }
      t.decoders.push_back(decoder);
    }

    // Added tokens (<unk>, <s>, </s>, ...), with their ids from the file.
    if (root.contains("added_tokens")) {
      for (const auto& a : root["added_tokens"]) {
        AddedTokenSpec token;
        token.content = a.at("content").get<std::string>();
        token.id = a.at("id").get<int64_t>();
        token.special = a.value("special", false);
        token.normalized = a.value("normalized", !token.special);
        token.lstrip = a.value("lstrip", false);
        token.rstrip = a.value("rstrip", false);
        token.single_word = a.value("single_word", false);
        token.pattern = token.normalized ? t.normalize(token.content) : token.content;
        if (token.id < 0 || token.id > static_cast<int64_t>(t.id_to_token.size()) + 100000) {
          fail("{}: added token '{}' has an implausible id {}", path, token.content, token.id);
        }
        if (token.id >= static_cast<int64_t>(t.id_to_token.size())) t.id_to_token.resize(token.id + 1);
        t.id_to_token[token.id] = token.content;
        t.vocab[token.content] = token.id;
        if (token.special) t.special[token.id] = true;
        t.added.push_back(token);
      }
    }

    // Post-processor: TemplateProcessing's "single" template.
    if (root.contains("post_processor") && !root["post_processor"].is_null()) {
      const json& p = root["post_processor"];
      if (p.at("type") != "TemplateProcessing") {
        fail("{}: post_processor '{}' is not supported (supported: TemplateProcessing)", path, p.at("type").get<std::string>());
      }
      bool seen_sequence = false;
      for (const auto& item : p.at("single")) {
        if (item.contains("Sequence")) {
          seen_sequence = true;
          continue;
        }
        const std::string name = item.at("SpecialToken").at("id");
        for (const auto& id : p.at("special_tokens").at(name).at("ids")) {
          (seen_sequence ? t.suffix_ids : t.prefix_ids).push_back(id.get<int64_t>());
        }
      }
    }
  } catch (const json::exception& e) {
    fail("{}: malformed tokenizer.json: {}", path, e.what());
  }
  return tokenizer;
}

void Tokenizer::add_special_tokens(const std::vector<std::string>& tokens) {
  for (const auto& token : tokens) impl_->add(token, true);
}

void Tokenizer::add_tokens(const std::vector<std::string>& tokens) {
  for (const auto& token : tokens) impl_->add(token, false);
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  const Impl& t = *impl_;
  std::vector<int64_t> ids;
  if (add_special_tokens) ids = t.prefix_ids;
  for (const auto& raw : t.split_added(text, false)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    for (const auto& piece : t.split_added(t.normalize(raw.text), true)) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
      } else {
        t.bpe(piece.text, ids);
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), t.suffix_ids.begin(), t.suffix_ids.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& t = *impl_;
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(t.id_to_token.size())) fail("{}: token id {} is out of range", t.path, id);
    if (skip_special_tokens && t.special.count(id)) continue;
    tokens.push_back(t.id_to_token[id]);
  }
  for (const auto& d : t.decoders) {
    switch (d.kind) {
      case Decoder::Kind::Replace:
        for (auto& token : tokens) token = replace_all(token, d.replace.pattern, d.replace.content);
        break;
      case Decoder::Kind::ByteFallback: {
        std::vector<std::string> out;
        std::string bytes;
        size_t pending = 0;  // byte tokens in `bytes`
        auto flush = [&] {
          if (pending == 0) return;
          if (utf8_valid(bytes)) {
            out.push_back(bytes);
          } else {
            for (size_t i = 0; i < pending; ++i) out.push_back("\xEF\xBF\xBD");  // U+FFFD per byte
          }
          bytes.clear();
          pending = 0;
        };
        for (const auto& token : tokens) {
          unsigned value = 0;
          if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' &&
              std::sscanf(token.c_str() + 3, "%2x", &value) == 1) {
            bytes.push_back(static_cast<char>(value));
            ++pending;
          } else {
            flush();
            out.push_back(token);
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case Decoder::Kind::Fuse: {
        std::string all;
        for (const auto& token : tokens) all += token;
        tokens = {all};
        break;
      }
      case Decoder::Kind::Strip:
        for (auto& token : tokens) {
          for (int64_t i = 0; i < d.strip_start && token.compare(0, d.strip_content.size(), d.strip_content) == 0; ++i) {
            token.erase(0, d.strip_content.size());
          }
          for (int64_t i = 0; i < d.strip_stop && token.size() >= d.strip_content.size() &&
                              token.compare(token.size() - d.strip_content.size(), d.strip_content.size(), d.strip_content) == 0;
               ++i) {
            token.erase(token.size() - d.strip_content.size());
          }
        }
        break;
    }
  }
  std::string text;
  for (const auto& token : tokens) text += token;
  return text;
}

int64_t Tokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->vocab.find(token);
  return it == impl_->vocab.end() ? -1 : it->second;
}

std::string Tokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(impl_->id_to_token.size())) return "";
  return impl_->id_to_token[id];
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }

}  // namespace m3d::text
