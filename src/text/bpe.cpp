// tokenizer.json's BPE model as huggingface/tokenizers 0.19 runs it (tokenizer/added_vocabulary.rs,
// models/bpe/model.rs, decoders/*.rs, processors/template.rs), with the normalizers and
// pre-tokenizers of pretokenize.cpp: the SentencePiece-BPE layouts of Llama-2 / Phi-3 /
// Mistral (Prepend + Replace, or Metaspace) and the byte-level BPE of Llama-3 / Qwen2.5 /
// SmolLM. Other components are refused by name.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "core/strings.h"
#include "m3d/error.h"
#include "text/backend.h"
#include "text/pretokenize.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace m3d::text {
namespace {

using json = nlohmann::json;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

struct Decoder {
  enum class Kind { Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace } kind;
  std::shared_ptr<Regex> pattern;  // Replace
  std::string content;  // Replace
  Metaspace metaspace;
  std::string strip_content;
  int64_t strip_start = 0, strip_stop = 0;
};

class FastTokenizer final : public TokenizerBackend {
 public:
  std::string path;
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> id_to_token_;  // model vocabulary and added tokens
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> merges;  // pair -> (rank, merged id)
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  int64_t unk_id = -1;
  int64_t byte_ids[256];
  Normalizer normalize;
  PreTokenizer pre_tokenize;
  std::vector<Decoder> decoders;
  bool has_decoder = false;  // tokenizer.json has a decoder, even an empty Sequence
  std::vector<int64_t> prefix_ids, suffix_ids;  // TemplateProcessing "single"
  std::vector<AddedTokenSpec> added;  // in the order they were added
  std::unordered_map<int64_t, bool> special;  // ids of special added tokens

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
      const size_t n = std::min(utf8::sequence_length(static_cast<unsigned char>(word[i])), word.size() - i);
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
    bool at_start = false;  // the piece starts the text that was split
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
        i += utf8::sequence_length(static_cast<unsigned char>(text[i]));
        continue;
      }
      size_t piece_end = i, next = i + best->pattern.size();
      if (best->lstrip) {
        while (piece_end > start && is_space(text[piece_end - 1])) --piece_end;
      }
      if (best->rstrip) {
        while (next < text.size() && is_space(text[next])) ++next;
      }
      if (piece_end > start) out.push_back({text.substr(start, piece_end - start), -1, start == 0});
      out.push_back({"", best->id});
      start = i = next;
    }
    if (start < text.size()) out.push_back({text.substr(start), -1, start == 0});
    return out;
  }

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  int64_t token_to_id(const std::string& token) const override {
    auto it = vocab.find(token);
    return it == vocab.end() ? -1 : it->second;
  }
  std::string id_to_token(int64_t id) const override {
    if (id < 0 || id >= static_cast<int64_t>(id_to_token_.size())) return "";
    return id_to_token_[id];
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  bool is_byte_token(int64_t id) const override { return std::find(std::begin(byte_ids), std::end(byte_ids), id) != std::end(byte_ids); }

  void add(const std::string& content, bool is_special) override {
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
      token.id = static_cast<int64_t>(id_to_token_.size());
      id_to_token_.push_back(content);
      vocab[content] = token.id;
    }
    if (is_special) special[token.id] = true;
    added.push_back(token);
  }
};

// model: vocab, merges, byte fallback, unk token (models/bpe/model.rs).
void parse_model(FastTokenizer& t, const json& model, const std::string& path) {
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    const bool unset = !model.contains(key) || model[key].is_null() || (model[key].is_string() && model[key].get<std::string>().empty());
    if (!unset) fail("{}: BPE option '{}' is not supported", path, key);
  }
  const json& vocab = model.at("vocab");
  t.id_to_token_.resize(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    const int64_t i = id.get<int64_t>();
    if (i < 0 || i >= static_cast<int64_t>(vocab.size())) fail("{}: vocab id {} of '{}' out of range", path, i, token);
    t.vocab[token] = i;
    t.id_to_token_[i] = token;
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
    if (ia == t.vocab.end() || ib == t.vocab.end() || im == t.vocab.end()) { fail("{}: merge '{} {}' uses tokens missing from the vocabulary", path, a, b); }
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
}

// Decoder: Sequence of Replace / ByteFallback / Fuse / Strip / ByteLevel / Metaspace.
void parse_decoders(FastTokenizer& t, const json& root, const std::string& path) {
  const std::vector<json> decoders = json_components(root, "decoder", "decoders");
  t.has_decoder = root.contains("decoder") && !root["decoder"].is_null();
  for (const auto& s : decoders) {
    const std::string kind = s.at("type");
    Decoder decoder{};
    if (kind == "Replace") {
      decoder.kind = Decoder::Kind::Replace;
      decoder.pattern = json_pattern(s, path);
      decoder.content = s.at("content").get<std::string>();
    } else if (kind == "ByteFallback") {
      decoder.kind = Decoder::Kind::ByteFallback;
    } else if (kind == "Fuse") {
      decoder.kind = Decoder::Kind::Fuse;
    } else if (kind == "Strip") {
      decoder.kind = Decoder::Kind::Strip;
      decoder.strip_content = s.at("content").get<std::string>();
      decoder.strip_start = s.value("start", 0);
      decoder.strip_stop = s.value("stop", 0);
    } else if (kind == "ByteLevel") {
      decoder.kind = Decoder::Kind::ByteLevel;
    } else if (kind == "Metaspace") {
      decoder.kind = Decoder::Kind::Metaspace;
      decoder.metaspace = json_metaspace(s, path);
    } else {
      fail("{}: decoder '{}' is not supported (supported: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace)", path, kind);
    }
    t.decoders.push_back(decoder);
  }
}

// Added tokens (<unk>, <s>, </s>, ...), with their ids from the file.
void parse_added_tokens(FastTokenizer& t, const json& root, const std::string& path) {
  if (!root.contains("added_tokens")) return;
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
    if (token.id < 0 || token.id > static_cast<int64_t>(t.id_to_token_.size()) + 100000) {
      fail("{}: added token '{}' has an implausible id {}", path, token.content, token.id);
    }
    if (token.id >= static_cast<int64_t>(t.id_to_token_.size())) t.id_to_token_.resize(token.id + 1);
    t.id_to_token_[token.id] = token.content;
    t.vocab[token.content] = token.id;
    if (token.special) t.special[token.id] = true;
    t.added.push_back(token);
  }
}

// Post-processor: TemplateProcessing's "single" template; ByteLevel only moves offsets.
void parse_post_processor(FastTokenizer& t, const json& root, const std::string& path) {
  for (const auto& p : json_components(root, "post_processor", "processors")) {
    if (p.at("type") == "ByteLevel") continue;
    if (p.at("type") == "RobertaProcessing" || p.at("type") == "BertProcessing") {  // <s> $A </s> / [CLS] $A [SEP]
      t.prefix_ids = {p.at("cls").at(1).get<int64_t>()};
      t.suffix_ids = {p.at("sep").at(1).get<int64_t>()};
      continue;
    }
    if (p.at("type") != "TemplateProcessing") {
      fail("{}: post_processor '{}' is not supported (supported: TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel)", path,
           p.at("type").get<std::string>());
    }
    bool seen_sequence = false;
    for (const auto& item : p.at("single")) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      const std::string name = item.at("SpecialToken").at("id");
      for (const auto& id : p.at("special_tokens").at(name).at("ids")) { (seen_sequence ? t.suffix_ids : t.prefix_ids).push_back(id.get<int64_t>()); }
    }
  }
}

std::vector<int64_t> FastTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  const FastTokenizer& t = *this;
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
        for (const auto& word : t.pre_tokenize(piece.text, raw.at_start && piece.at_start)) t.bpe(word, ids);
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), t.suffix_ids.begin(), t.suffix_ids.end());
  return ids;
}

// decoders/byte_fallback.rs: a run of <0xXX> tokens becomes its bytes when they are
// valid UTF-8, else one U+FFFD per byte.
std::vector<std::string> decode_byte_fallback(const std::vector<std::string>& tokens) {
  std::vector<std::string> out;
  std::string bytes;
  size_t pending = 0;  // byte tokens in `bytes`
  auto flush = [&] {
    if (pending == 0) return;
    if (utf8::valid(bytes)) {
      out.push_back(bytes);
    } else {
      for (size_t i = 0; i < pending; ++i) out.push_back("\xEF\xBF\xBD");  // U+FFFD per byte
    }
    bytes.clear();
    pending = 0;
  };
  for (const auto& token : tokens) {
    unsigned value = 0;
    if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' && std::sscanf(token.c_str() + 3, "%2x", &value) == 1) {
      bytes.push_back(static_cast<char>(value));
      ++pending;
    } else {
      flush();
      out.push_back(token);
    }
  }
  flush();
  return out;
}

// decoders/byte_level.rs: characters map back to bytes; a token with a character
// outside the table keeps its UTF-8.
std::vector<std::string> decode_byte_level(const std::vector<std::string>& tokens) {
  std::string bytes;
  const auto& table = byte_table().char_to_byte;
  for (const auto& token : tokens) {
    std::string mapped;
    bool ok = true;
    for (size_t i = 0; i < token.size() && ok;) {
      const size_t n = std::min(utf8::sequence_length(static_cast<unsigned char>(token[i])), token.size() - i);
      auto it = table.find(utf8::code_point(std::string_view(token).substr(i, n)));
      if (it == table.end()) ok = false;
      else mapped += static_cast<char>(it->second);
      i += n;
    }
    bytes += ok ? mapped : token;
  }
  return {utf8::lossy(bytes)};
}

void decode_strip(std::vector<std::string>& tokens, const Decoder& d) {
  for (auto& token : tokens) {
    for (int64_t i = 0; i < d.strip_start && token.compare(0, d.strip_content.size(), d.strip_content) == 0; ++i) { token.erase(0, d.strip_content.size()); }
    for (int64_t i = 0; i < d.strip_stop && token.size() >= d.strip_content.size() &&
                        token.compare(token.size() - d.strip_content.size(), d.strip_content.size(), d.strip_content) == 0;
         ++i) {
      token.erase(token.size() - d.strip_content.size());
    }
  }
}

// decoders of metaspace.rs: the replacement becomes a space, except in the first token
// when a space was prepended.
void decode_metaspace(std::vector<std::string>& tokens, const Metaspace& m) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    const bool drop = i == 0 && m.prepend != Metaspace::Prepend::Never;
    tokens[i] = replace_all(tokens[i], m.replacement, drop ? "" : " ");
  }
}

std::string FastTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const FastTokenizer& t = *this;
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(t.id_to_token_.size())) fail("{}: token id {} is out of range", t.path, id);
    if (skip_special_tokens && t.special.count(id)) continue;
    tokens.push_back(t.id_to_token_[id]);
  }
  for (const auto& d : t.decoders) {
    switch (d.kind) {
      case Decoder::Kind::Replace:
        for (auto& token : tokens) token = regex_replace(*d.pattern, token, d.content);
        break;
      case Decoder::Kind::ByteFallback:
        tokens = decode_byte_fallback(tokens);
        break;
      case Decoder::Kind::ByteLevel:
        tokens = decode_byte_level(tokens);
        break;
      case Decoder::Kind::Fuse: {
        std::string all;
        for (const auto& token : tokens) all += token;
        tokens = {all};
        break;
      }
      case Decoder::Kind::Strip:
        decode_strip(tokens, d);
        break;
      case Decoder::Kind::Metaspace:
        decode_metaspace(tokens, d.metaspace);
        break;
    }
  }
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0 && !t.has_decoder) text += ' ';  // tokenizer/mod.rs decode: without a decoder, tokens are joined with spaces
    text += tokens[i];
  }
  return text;
}

}  // namespace

std::unique_ptr<TokenizerBackend> load_fast_bpe(const json& root, const std::string& path) {
  auto backend = std::make_unique<FastTokenizer>();
  FastTokenizer& t = *backend;
  t.path = path;
  std::fill(std::begin(t.byte_ids), std::end(t.byte_ids), -1);
  parse_model(t, root.at("model"), path);
  t.normalize = Normalizer(root, path);
  t.pre_tokenize = PreTokenizer(root, path);
  parse_decoders(t, root, path);
  parse_added_tokens(t, root, path);
  parse_post_processor(t, root, path);
  return backend;
}

}  // namespace m3d::text
