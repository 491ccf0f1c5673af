// transformers 4.41's slow LlamaTokenizer (models/llama/tokenization_llama.py on
// top of tokenization_utils.py's PreTrainedTokenizer), which M3D-LaMed loads with
// use_fast=False for both Phi-3 and Llama-2: added tokens split out of the raw
// text with their lstrip / rstrip / single_word rules, SentencePiece on the rest
// (`legacy` True: a dummy prefix on every piece; False: only where the text
// starts with a space, through the "<unk>" prefix trick), and the decode path
// with its joins and special-token spacing. The files are read as
// from_pretrained reads them.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <set>
#include <unordered_map>

#include "io/json_util.h"
#include "core/strings.h"
#include "m3d/error.h"
#include "text/backend.h"
#include "text/sentencepiece.h"
#include "text/utf8.h"

namespace m3d::text {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr std::string_view kSpace = "\xE2\x96\x81";

struct Added {
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false;
};

// A special token in tokenizer_config.json / special_tokens_map.json: a string or an AddedToken dict.
std::string token_content(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object()) return value.at("content").get<std::string>();
  return "";
}

class SlowLlamaTokenizer final : public TokenizerBackend {
 public:
  explicit SlowLlamaTokenizer(const std::string& dir);

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  int64_t token_to_id(const std::string& token) const override {
    if (auto it = encoder_.find(token); it != encoder_.end()) return it->second;
    const int64_t id = sp_.piece_to_id(token);
    return id == sp_.unk_id() && token != sp_.id_to_piece(id) ? -1 : id;
  }
  std::string id_to_token(int64_t id) const override {
    if (auto it = decoder_.find(id); it != decoder_.end()) return it->second.content;
    return id >= 0 && id < sp_.size() ? sp_.id_to_piece(id) : "";
  }
  int64_t vocab_size() const override {
    int64_t size = sp_.size();
    for (const auto& [id, token] : decoder_) size = std::max(size, id + 1);
    return size;
  }
  bool is_byte_token(int64_t id) const override { return id < sp_.size() && !decoder_.count(id) && sp_.type(id) == SentencePieceModel::Type::Byte; }
  void add(const std::string& content, bool special) override;

 private:
  // One token of PreTrainedTokenizer.tokenize: an added token or a SentencePiece piece.
  struct Token {
    int64_t id;
    bool added;
  };
  std::vector<Token> tokenize(std::string text) const;
  void sentencepiece(const std::string& text, std::vector<Token>& out) const;  // LlamaTokenizer._tokenize
  std::vector<std::string> trie_split(const std::string& text) const;
  std::string tokens_to_string(std::vector<std::string> tokens) const;  // convert_tokens_to_string
  bool is_special_token(const std::string& token) const { return all_special_.count(token) > 0; }
  void refresh_special();

  std::string dir_;
  SentencePieceModel sp_;
  bool legacy_ = true, add_bos_ = true, add_eos_ = false, add_prefix_space_ = true, clean_up_spaces_ = false;
  std::string bos_ = "<s>", eos_ = "</s>", unk_ = "<unk>", pad_;
  std::vector<std::string> additional_special_;
  std::map<int64_t, Added> decoder_;  // _added_tokens_decoder
  std::unordered_map<std::string, int64_t> encoder_;  // _added_tokens_encoder
  std::set<std::string> all_special_;  // all_special_tokens
  std::set<int64_t> all_special_ids_;
  size_t unk_length_ = 0;  // len(sp.encode(unk_token))
};

SlowLlamaTokenizer::SlowLlamaTokenizer(const std::string& dir) : dir_(dir), sp_(SentencePieceModel::from_file(dir + "/tokenizer.model")) {
  json config = json::object();
  const std::string config_path = dir + "/tokenizer_config.json";
  if (fs::exists(config_path)) config = io::json_read_file(config_path);
  try {
    if (config.contains("tokenizer_class") && config["tokenizer_class"].is_string()) {
      const std::string name = config["tokenizer_class"];
      if (name.rfind("Llama", 0) != 0) {
        fail("{}: tokenizer_class '{}' is not supported by the slow tokenizer (supported: LlamaTokenizer)", config_path, name);
      }
    }
    if (config.contains("legacy") && !config["legacy"].is_null()) legacy_ = config["legacy"].get<bool>();
    add_bos_ = config.value("add_bos_token", true);
    add_eos_ = config.value("add_eos_token", false);
    add_prefix_space_ = config.value("add_prefix_space", true);
    if (config.contains("clean_up_tokenization_spaces") && !config["clean_up_tokenization_spaces"].is_null()) {
      clean_up_spaces_ = config["clean_up_tokenization_spaces"].get<bool>();
    }
    json specials = config;
    const bool has_decoder = config.contains("added_tokens_decoder");
    if (!has_decoder) {
      // Older layout: special_tokens_map.json overrides, then added_tokens.json.
      const std::string map_path = dir + "/special_tokens_map.json";
      if (fs::exists(map_path)) {
        const json map = io::json_read_file(map_path);
        for (const auto& [key, value] : map.items()) {
          if (key == "additional_special_tokens" && value.is_array()) {
            json merged = specials.value("additional_special_tokens", json::array());
            if (merged.is_null()) merged = json::array();
            for (const auto& token : value) {
              if (std::none_of(merged.begin(), merged.end(), [&](const json& t) { return token_content(t) == token_content(token); })) {
                merged.push_back(token);
              }
            }
            specials[key] = merged;
          } else {
            specials[key] = value;
          }
        }
      }
    }
    for (const auto& [key, field] : {std::pair{"bos_token", &bos_}, {"eos_token", &eos_}, {"unk_token", &unk_}, {"pad_token", &pad_}}) {
      if (specials.contains(key)) *field = token_content(specials[key]);
    }
    if (specials.contains("additional_special_tokens") && specials["additional_special_tokens"].is_array()) {
      for (const auto& token : specials["additional_special_tokens"]) additional_special_.push_back(token_content(token));
    }
    if (has_decoder) {
      for (const auto& [key, value] : config["added_tokens_decoder"].items()) {
        int64_t id = -1;
        try {
          id = std::stoll(key);
        } catch (const std::exception&) { fail("{}: added_tokens_decoder key '{}' is not a token id", config_path, key); }
        if (id < 0 || id > sp_.size() + 1'000'000) fail("{}: added token id {} is implausible", config_path, id);
        Added token;
        token.content = value.at("content").get<std::string>();
        token.special = value.value("special", false);
        token.lstrip = value.value("lstrip", false);
        token.rstrip = value.value("rstrip", false);
        token.single_word = value.value("single_word", false);
        decoder_[id] = token;
      }
    } else if (const std::string added_path = dir + "/added_tokens.json"; fs::exists(added_path)) {
      std::set<std::string> special_strings(additional_special_.begin(), additional_special_.end());
      for (const auto* s : {&bos_, &eos_, &unk_, &pad_}) {
        if (!s->empty()) special_strings.insert(*s);
      }
      const json added = io::json_read_file(added_path);
      for (const auto& [content, id] : added.items()) {
        const int64_t i = id.get<int64_t>();
        if (i < 0 || i > sp_.size() + 1'000'000) fail("{}: added token id {} is implausible", added_path, i);
        decoder_[i] = Added{content, special_strings.count(content) > 0};
      }
    }
  } catch (const json::exception& e) { fail("{}: malformed tokenizer files: {}", dir, e.what()); }
  for (const auto& [id, token] : decoder_) encoder_[token.content] = id;
  // PreTrainedTokenizer.__init__: special tokens not yet added are added as special.
  for (const auto* s : {&bos_, &eos_, &unk_, &pad_}) {
    if (!s->empty()) add(*s, true);
  }
  for (const auto& token : std::vector<std::string>(additional_special_)) add(token, true);
  refresh_special();
  if (!legacy_) sp_.set_add_dummy_prefix(false);
  unk_length_ = sp_.encode(unk_).size();
}

void SlowLlamaTokenizer::refresh_special() {
  all_special_.clear();
  all_special_ids_.clear();
  for (const auto* s : {&bos_, &eos_, &unk_, &pad_}) {
    if (!s->empty()) all_special_.insert(*s);
  }
  all_special_.insert(additional_special_.begin(), additional_special_.end());
  for (const auto& token : all_special_) all_special_ids_.insert(token_to_id(token) >= 0 ? token_to_id(token) : sp_.unk_id());
}

void SlowLlamaTokenizer::add(const std::string& content, bool special) {
  if (content.empty() || encoder_.count(content)) return;
  if (special && std::find(additional_special_.begin(), additional_special_.end(), content) == additional_special_.end() && content != bos_ &&
      content != eos_ && content != unk_ && content != pad_) {
    additional_special_.push_back(content);
  }
  // The id: the token's own when it is already in the vocabulary, else the next free one.
  int64_t id = token_to_id(content);
  if (id < 0) id = vocab_size();
  decoder_[id] = Added{content, special || all_special_.count(content) > 0};
  encoder_[content] = id;
  refresh_special();
}

// Trie.split: leftmost-longest matches of the added tokens, the text between kept.
std::vector<std::string> SlowLlamaTokenizer::trie_split(const std::string& text) const {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    size_t best = 0;
    for (const auto& [content, id] : encoder_) {
      if (content.size() > best && text.compare(i, content.size(), content) == 0) best = content.size();
    }
    if (best == 0) {
      i += utf8::sequence_length(static_cast<unsigned char>(text[i]));
      continue;
    }
    out.push_back(text.substr(start, i - start));
    out.push_back(text.substr(i, best));
    start = i = i + best;
  }
  out.push_back(text.substr(std::min(start, text.size())));
  std::vector<std::string> kept;
  for (auto& piece : out) {
    if (!piece.empty()) kept.push_back(std::move(piece));
  }
  if (kept.empty()) kept.push_back("");
  return kept;
}

void SlowLlamaTokenizer::sentencepiece(const std::string& text, std::vector<Token>& out) const {
  std::vector<int64_t> ids;
  if (legacy_ || !(text.rfind(kSpace, 0) == 0 || text.rfind(' ', 0) == 0)) {
    ids = sp_.encode(text);
  } else {
    ids = sp_.encode(unk_ + text);
    if (ids.size() >= unk_length_) ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(unk_length_));
  }
  for (int64_t id : ids) out.push_back({id, false});
}

std::vector<SlowLlamaTokenizer::Token> SlowLlamaTokenizer::tokenize(std::string text) const {
  const bool non_legacy = !legacy_ && !text.empty();
  if (non_legacy) {
    text = replace_all(text, kSpace, " ");
    if (add_prefix_space_) text.insert(0, kSpace);
  }
  std::vector<std::string> pieces = trie_split(text);
  for (size_t i = 0; i < pieces.size(); ++i) {
    auto it = encoder_.find(pieces[i]);
    if (it == encoder_.end()) continue;
    const Added& token = decoder_.at(it->second);
    const std::string content = pieces[i];
    const bool has_left = i > 0 && !pieces[i - 1].empty(), has_right = i + 1 < pieces.size() && !pieces[i + 1].empty();
    if (token.rstrip && has_right) pieces[i + 1] = utf8::python_lstrip(pieces[i + 1]);
    if (token.lstrip && has_left) pieces[i - 1] = utf8::python_rstrip(pieces[i - 1]);
    if (token.single_word && has_left && pieces[i - 1].back() != ' ') {
      pieces[i - 1] += content;
      pieces[i].clear();
    } else if (token.single_word && has_right && pieces[i + 1].front() != ' ') {
      pieces[i + 1] = content + pieces[i + 1];
      pieces[i].clear();
    }
  }
  std::vector<Token> tokens;
  for (const auto& piece : pieces) {
    if (piece.empty()) continue;
    if (auto it = encoder_.find(piece); it != encoder_.end()) {
      tokens.push_back({it->second, true});
    } else {
      sentencepiece(piece, tokens);
    }
  }
  if (non_legacy && tokens.size() > 1 && !tokens[0].added && sp_.id_to_piece(tokens[0].id) == kSpace && tokens[1].added &&
      is_special_token(decoder_.at(tokens[1].id).content)) {
    tokens.erase(tokens.begin());
  }
  return tokens;
}

std::vector<int64_t> SlowLlamaTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int64_t> ids;
  if (add_special_tokens && add_bos_) ids.push_back(token_to_id(bos_));
  for (const auto& token : tokenize(text)) ids.push_back(token.id);
  if (add_special_tokens && add_eos_) ids.push_back(token_to_id(eos_));
  return ids;
}

std::string SlowLlamaTokenizer::tokens_to_string(std::vector<std::string> tokens) const {
  if (!tokens.empty() && tokens[0].rfind(kSpace, 0) == 0 && add_prefix_space_) tokens[0].erase(0, kSpace.size());
  std::string out;
  std::vector<std::string> current;
  bool previous_special = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    if (is_special_token(token)) {
      if (!previous_special && i != 0 && legacy_) out += ' ';
      out += sp_.decode_pieces(current) + token;
      previous_special = true;
      current.clear();
    } else {
      if (previous_special && i == 1 && add_prefix_space_ && token.rfind(kSpace, 0) != 0) out += ' ';
      current.push_back(token);
      previous_special = false;
    }
  }
  return out + sp_.decode_pieces(current);
}

std::string SlowLlamaTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    if (skip_special_tokens && all_special_ids_.count(id)) continue;
    if (auto it = decoder_.find(id); it != decoder_.end()) {
      tokens.push_back(it->second.content);
    } else {
      tokens.push_back(sp_.id_to_piece(id));  // throws for ids out of range
    }
  }
  // Added tokens that are not special, and additional special ones beyond the
  // SentencePiece vocabulary, are joined as they are ("legacy_added_tokens").
  auto joined_as_is = [&](const std::string& token) {
    auto it = encoder_.find(token);
    if (it == encoder_.end()) return false;
    if (!all_special_.count(token)) return true;
    return std::find(additional_special_.begin(), additional_special_.end(), token) != additional_special_.end() && it->second >= sp_.size();
  };
  std::vector<std::string> parts, current;
  for (const auto& token : tokens) {
    if (joined_as_is(token)) {
      if (!current.empty()) {
        std::string text = tokens_to_string(current);
        if (!text.empty()) parts.push_back(std::move(text));
        current.clear();
      }
      parts.push_back(token);
    } else {
      current.push_back(token);
    }
  }
  if (!current.empty()) parts.push_back(tokens_to_string(current));
  std::string text;
  for (size_t i = 0; i < parts.size(); ++i) text += (i ? " " : "") + parts[i];  // spaces_between_special_tokens=True
  return clean_up_spaces_ ? clean_up_tokenization(text) : text;
}

}  // namespace

std::unique_ptr<TokenizerBackend> load_slow_llama(const std::string& dir) { return std::make_unique<SlowLlamaTokenizer>(dir); }

}  // namespace m3d::text
