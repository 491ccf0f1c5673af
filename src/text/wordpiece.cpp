// BERT's WordPiece tokenizer as transformers 4.41 runs it: the slow BertTokenizer
// (models/bert/tokenization_bert.py BasicTokenizer + WordpieceTokenizer, and
// PreTrainedTokenizer.tokenize around them), which M3D-CLIP and bert_score use, and
// the fast BertTokenizerFast's tokenizer.json (tokenizers 0.19 BertNormalizer,
// BertPreTokenizer, WordPiece model and decoder). The two differ only in that the
// slow one applies NFC after cleaning and lower-cases the raw text outside the
// special tokens before splitting on them.
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unordered_map>

#include "io/json_util.h"
#include "m3d/error.h"
#include "text/backend.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace m3d::text {
namespace {

using json = nlohmann::json;

struct WordPieceOptions {
  bool lowercase = true;
  bool strip_accents = true;  // BERT's default: follows lowercase
  bool chinese_chars = true;
  bool clean_text = true;
  bool nfc = false;  // the slow BasicTokenizer's NFC step
  bool slow = false;  // PreTrainedTokenizer.tokenize: lower-case around the added tokens
  bool clean_up_spaces = true;
  std::string prefix = "##";
  size_t max_chars_per_word = 100;
  std::string unk = "[UNK]", cls = "[CLS]", sep = "[SEP]";
};

std::vector<uint32_t> code_points(const std::string& text) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8::sequence_length(static_cast<unsigned char>(text[i]));
    out.push_back(utf8::code_point(std::string_view(text).substr(i, n)));
    i += n;
  }
  return out;
}

std::string to_utf8(const std::vector<uint32_t>& cps) {
  std::string out;
  for (uint32_t cp : cps) out += utf8::encode(cp);
  return out;
}

utf8proc_category_t category(uint32_t cp) { return utf8proc_category(static_cast<utf8proc_int32_t>(cp)); }

bool is_control(uint32_t cp) {  // _is_control: categories C* except \t \n \r
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  const auto c = category(cp);
  return c == UTF8PROC_CATEGORY_CN || c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CS || c == UTF8PROC_CATEGORY_CO;
}

bool is_whitespace(uint32_t cp) { return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || category(cp) == UTF8PROC_CATEGORY_ZS; }

bool is_punctuation(uint32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  const auto c = category(cp);
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

bool is_chinese_char(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Python's str.lower() of one character (no context: the slow path lowers one
// character at a time) and Rust's char::to_lowercase: the simple mapping, except
// U+0130, whose full lower case is two code points.
void append_lower(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp == 0x130) {
    out.push_back('i');
    out.push_back(0x307);
    return;
  }
  out.push_back(static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
}

std::string lower(const std::string& text) {
  std::vector<uint32_t> out;
  for (uint32_t cp : code_points(text)) append_lower(cp, out);
  return to_utf8(out);
}

std::string strip_accents(const std::string& text) {  // NFD, then drop Mn
  std::vector<uint32_t> out;
  for (uint32_t cp : code_points(nfd(text))) {
    if (category(cp) != UTF8PROC_CATEGORY_MN) out.push_back(cp);
  }
  return to_utf8(out);
}

// str.split() with no argument.
std::vector<std::string> python_split(const std::string& text) {
  std::vector<std::string> out;
  std::string current;
  for (uint32_t cp : code_points(text)) {
    if (utf8::python_space(cp)) {
      if (!current.empty()) out.push_back(std::move(current));
      current.clear();
    } else {
      current += utf8::encode(cp);
    }
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

class WordPieceTokenizer final : public TokenizerBackend {
 public:
  WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions options, const std::string& where);

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  int64_t token_to_id(const std::string& token) const override {
    if (auto it = added_.find(token); it != added_.end()) return it->second;
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
  }
  std::string id_to_token(int64_t id) const override {
    if (auto it = added_names_.find(id); it != added_names_.end()) return it->second;
    return id >= 0 && id < static_cast<int64_t>(tokens_.size()) ? tokens_[static_cast<size_t>(id)] : "";
  }
  int64_t vocab_size() const override {
    int64_t size = static_cast<int64_t>(tokens_.size());
    for (const auto& [id, name] : added_names_) size = std::max(size, id + 1);
    return size;
  }
  bool is_byte_token(int64_t) const override { return false; }
  void add(const std::string& content, bool special) override;

 private:
  std::vector<std::string> split_added(const std::string& text) const;
  std::vector<std::string> basic_tokenize(const std::string& text) const;
  void wordpiece(const std::string& word, std::vector<int64_t>& out) const;

  std::vector<std::string> tokens_;  // by id
  std::unordered_map<std::string, int64_t> vocab_;
  std::map<std::string, int64_t> added_;  // tokens matched in the raw text (special ones included)
  std::map<int64_t, std::string> added_names_;
  std::set<int64_t> special_ids_;
  WordPieceOptions options_;
  int64_t unk_id_ = -1;
};

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions options, const std::string& where)
    : tokens_(std::move(vocab)), options_(std::move(options)) {
  if (tokens_.empty()) fail("{}: the WordPiece vocabulary is empty", where);
  for (size_t i = 0; i < tokens_.size(); ++i) vocab_[tokens_[i]] = static_cast<int64_t>(i);  // a repeated token keeps its last id
  unk_id_ = token_to_id(options_.unk);
  if (unk_id_ < 0) fail("{}: the unknown token '{}' is not in the vocabulary", where, options_.unk);
  for (const auto& token : {options_.cls, options_.sep}) {
    if (token_to_id(token) < 0) fail("{}: the special token '{}' is not in the vocabulary", where, token);
  }
}

void WordPieceTokenizer::add(const std::string& content, bool special) {
  if (content.empty()) return;
  int64_t id = token_to_id(content);
  if (id < 0) id = vocab_size();
  added_[content] = id;
  added_names_[id] = content;
  if (special) special_ids_.insert(id);
}

// Trie.split (slow) / AddedVocabulary (fast, tokens with normalized=false): the
// leftmost-longest matches of the added tokens, the text between them kept.
std::vector<std::string> WordPieceTokenizer::split_added(const std::string& text) const {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    size_t best = 0;
    for (const auto& [content, id] : added_) {
      if (content.size() > best && text.compare(i, content.size(), content) == 0) best = content.size();
    }
    if (best == 0) {
      i += utf8::sequence_length(static_cast<unsigned char>(text[i]));
      continue;
    }
    if (i > start) out.push_back(text.substr(start, i - start));
    out.push_back(text.substr(i, best));
    start = i = i + best;
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

// BasicTokenizer.tokenize / BertNormalizer + BertPreTokenizer.
std::vector<std::string> WordPieceTokenizer::basic_tokenize(const std::string& text) const {
  std::vector<uint32_t> cleaned;
  for (uint32_t cp : code_points(text)) {
    if (options_.clean_text) {
      if (cp == 0 || cp == 0xFFFD || is_control(cp)) continue;
      if (is_whitespace(cp)) cp = ' ';
    }
    if (options_.chinese_chars && is_chinese_char(cp)) {
      cleaned.insert(cleaned.end(), {' ', cp, ' '});
    } else {
      cleaned.push_back(cp);
    }
  }
  std::string normalized = to_utf8(cleaned);
  if (options_.nfc) normalized = nfc(normalized);
  std::vector<std::string> words;
  for (std::string token : python_split(normalized)) {
    if (options_.lowercase) token = lower(token);
    if (options_.strip_accents) token = strip_accents(token);
    std::string current;
    for (uint32_t cp : code_points(token)) {
      if (is_punctuation(cp)) {
        if (!current.empty()) words.push_back(std::move(current));
        current.clear();
        words.push_back(utf8::encode(cp));
      } else {
        current += utf8::encode(cp);
      }
    }
    if (!current.empty()) words.push_back(std::move(current));
  }
  // Lower-casing and accent stripping can produce spaces (whitespace_tokenize again).
  std::vector<std::string> out;
  for (const auto& word : words) {
    for (auto& piece : python_split(word)) out.push_back(std::move(piece));
  }
  return out;
}

// WordpieceTokenizer.tokenize for one word: greedy longest match first; a word
// with an unmatched rest, or longer than max_chars_per_word, is [UNK].
void WordPieceTokenizer::wordpiece(const std::string& word, std::vector<int64_t>& out) const {
  const std::vector<uint32_t> cps = code_points(word);
  if (cps.size() > options_.max_chars_per_word) {
    out.push_back(unk_id_);
    return;
  }
  std::vector<size_t> offsets;  // byte offset of each code point, and the end
  for (size_t i = 0, pos = 0; i <= cps.size(); ++i) {
    offsets.push_back(pos);
    if (i < cps.size()) pos += utf8::encode(cps[i]).size();
  }
  std::vector<int64_t> pieces;
  for (size_t start = 0; start < cps.size();) {
    int64_t found = -1;
    size_t end = cps.size();
    for (; end > start; --end) {
      std::string piece = word.substr(offsets[start], offsets[end] - offsets[start]);
      if (start > 0) piece = options_.prefix + piece;
      if (auto it = vocab_.find(piece); it != vocab_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {
      out.push_back(unk_id_);
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

std::vector<int64_t> WordPieceTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  if (!utf8::valid(text)) fail("tokenizer: the text is not valid UTF-8");
  std::vector<int64_t> ids;
  if (add_special_tokens) ids.push_back(token_to_id(options_.cls));
  std::string input = text;
  if (options_.slow && options_.lowercase) {
    // PreTrainedTokenizer.tokenize: every character outside the special tokens is
    // lower-cased (one at a time) before the split on added tokens.
    std::string lowered;
    for (const auto& piece : split_added(text)) lowered += added_.count(piece) ? piece : lower(piece);
    input = std::move(lowered);
  }
  for (const auto& piece : split_added(input)) {
    if (auto it = added_.find(piece); it != added_.end()) {
      ids.push_back(it->second);
      continue;
    }
    for (const auto& word : basic_tokenize(piece)) wordpiece(word, ids);
  }
  if (add_special_tokens) ids.push_back(token_to_id(options_.sep));
  return ids;
}

// Slow: " ".join(tokens).replace(" ##", "").strip(), then clean_up_tokenization on
// the text. Fast (tokenizers' WordPiece decoder): each token after the first loses
// its prefix or gains a leading space, and the cleanup runs on each token alone.
std::string WordPieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string text;
  bool first = true;
  for (int64_t id : ids) {
    if (skip_special_tokens && special_ids_.count(id)) continue;
    const std::string token = id_to_token(id);
    if (token.empty() && (id < 0 || id >= vocab_size())) fail("tokenizer: token id {} is out of range (vocabulary {})", id, vocab_size());
    std::string piece = token;
    if (!first) piece = token.compare(0, options_.prefix.size(), options_.prefix) == 0 ? token.substr(options_.prefix.size()) : " " + token;
    if (!options_.slow && options_.clean_up_spaces) piece = clean_up_tokenization(piece);
    text += piece;
    first = false;
  }
  if (!options_.slow) return text;
  text = utf8::python_rstrip(utf8::python_lstrip(text));
  return options_.clean_up_spaces ? clean_up_tokenization(text) : text;
}

std::string token_content(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value.at("content").get<std::string>();
  return "";
}

}  // namespace

std::unique_ptr<TokenizerBackend> load_slow_wordpiece(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string vocab_path = dir + "/vocab.txt";
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) fail("{}: cannot open the WordPiece vocabulary", vocab_path);
  std::vector<std::string> vocab;
  for (std::string line; std::getline(in, line);) vocab.push_back(line);  // load_vocab: rstrip("\n") only
  WordPieceOptions options;
  options.slow = options.nfc = true;
  json config = json::object();
  if (fs::exists(dir + "/tokenizer_config.json")) config = io::json_read_file(dir + "/tokenizer_config.json");
  json special_map = json::object();
  if (fs::exists(dir + "/special_tokens_map.json")) special_map = io::json_read_file(dir + "/special_tokens_map.json");
  auto flag = [&](const char* key, bool fallback) { return config.contains(key) && config[key].is_boolean() ? config[key].get<bool>() : fallback; };
  if (config.contains("tokenizer_class") && config["tokenizer_class"].is_string()) {
    const std::string cls = config["tokenizer_class"];
    if (cls != "BertTokenizer" && cls != "BertTokenizerFast" && cls != "DistilBertTokenizer") {
      fail("{}/tokenizer_config.json: tokenizer_class '{}' is not a WordPiece BertTokenizer", dir, cls);
    }
  }
  if (!flag("do_basic_tokenize", true)) fail("{}: do_basic_tokenize=false is not supported", dir);
  options.lowercase = flag("do_lower_case", true);
  options.strip_accents = flag("strip_accents", options.lowercase);
  if (config.contains("strip_accents") && config["strip_accents"].is_boolean() && !options.lowercase) options.strip_accents = config["strip_accents"];
  options.chinese_chars = flag("tokenize_chinese_chars", true);
  options.clean_up_spaces = flag("clean_up_tokenization_spaces", true);
  std::map<std::string, std::string> special = {
      {"unk_token", "[UNK]"}, {"sep_token", "[SEP]"}, {"pad_token", "[PAD]"}, {"cls_token", "[CLS]"}, {"mask_token", "[MASK]"}};
  for (auto& [key, value] : special) {
    for (const json* source : {&special_map, &config}) {
      if (source->contains(key) && !token_content((*source)[key]).empty()) value = token_content((*source)[key]);
    }
  }
  options.unk = special["unk_token"];
  options.cls = special["cls_token"];
  options.sep = special["sep_token"];
  auto tokenizer = std::make_unique<WordPieceTokenizer>(std::move(vocab), options, vocab_path);
  for (const auto& [key, value] : special) tokenizer->add(value, true);
  if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
    for (const auto& [id, token] : config["added_tokens_decoder"].items()) { tokenizer->add(token_content(token), token.value("special", false)); }
  }
  return tokenizer;
}

std::unique_ptr<TokenizerBackend> load_fast_wordpiece(const json& root, const std::string& path) {
  const json& model = root.at("model");
  WordPieceOptions options;
  options.unk = model.value("unk_token", "[UNK]");
  options.prefix = model.value("continuing_subword_prefix", "##");
  options.max_chars_per_word = model.value("max_input_chars_per_word", size_t{100});
  const json& normalizer = root.value("normalizer", json());
  if (normalizer.is_null()) {
    options.lowercase = options.strip_accents = options.chinese_chars = options.clean_text = false;
  } else {
    if (normalizer.value("type", "") != "BertNormalizer") {
      fail("{}: normalizer '{}' is not supported with WordPiece (supported: BertNormalizer)", path, normalizer.value("type", ""));
    }
    options.lowercase = normalizer.value("lowercase", true);
    options.strip_accents =
        normalizer.contains("strip_accents") && normalizer["strip_accents"].is_boolean() ? normalizer["strip_accents"].get<bool>() : options.lowercase;
    options.chinese_chars = normalizer.value("handle_chinese_chars", true);
    options.clean_text = normalizer.value("clean_text", true);
  }
  const json& pre = root.value("pre_tokenizer", json());
  if (pre.is_null() || pre.value("type", "") != "BertPreTokenizer") {
    fail("{}: pre_tokenizer '{}' is not supported with WordPiece (supported: BertPreTokenizer)", path, pre.is_null() ? "none" : pre.value("type", ""));
  }
  const json& post = root.value("post_processor", json());
  if (!post.is_null()) {
    const std::string type = post.value("type", "");
    if (type == "BertProcessing") {
      options.cls = post.at("cls").at(0).get<std::string>();
      options.sep = post.at("sep").at(0).get<std::string>();
    } else if (type == "TemplateProcessing") {
      const json& single = post.at("single");
      if (single.size() != 3 || !single[0].contains("SpecialToken") || !single[2].contains("SpecialToken")) {
        fail("{}: only the '[CLS] $A [SEP]' template is supported with WordPiece", path);
      }
      options.cls = single[0]["SpecialToken"].at("id").get<std::string>();
      options.sep = single[2]["SpecialToken"].at("id").get<std::string>();
    } else {
      fail("{}: post_processor '{}' is not supported with WordPiece", path, type);
    }
  }
  const json& decoder = root.value("decoder", json());
  options.clean_up_spaces = decoder.is_null() ? true : decoder.value("cleanup", true);
  std::vector<std::string> vocab;
  for (const auto& [token, id] : model.at("vocab").items()) {
    const auto i = id.get<int64_t>();
    if (i < 0 || i > 10'000'000) fail("{}: vocabulary id {} out of range", path, i);
    if (static_cast<size_t>(i) >= vocab.size()) vocab.resize(static_cast<size_t>(i) + 1);
    vocab[static_cast<size_t>(i)] = token;
  }
  auto tokenizer = std::make_unique<WordPieceTokenizer>(std::move(vocab), options, path);
  if (root.contains("added_tokens")) {
    for (const auto& token : root["added_tokens"]) {
      if (token.value("normalized", false)) fail("{}: normalized added tokens are not supported with WordPiece", path);
      tokenizer->add(token.at("content").get<std::string>(), token.value("special", false));
    }
  }
  return tokenizer;
}

}  // namespace m3d::text
