// The Tokenizer facade of tokenizer.h: picks the backend for a checkpoint directory
// (tokenizer.json BPE in bpe.cpp, WordPiece in wordpiece.cpp, the slow SentencePiece
// LlamaTokenizer in slow_llama.cpp) and converts a slow Qwen2Tokenizer's vocab.json +
// merges.txt to the tokenizer.json that transformers would build from them.
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "io/json_util.h"
#include "core/strings.h"
#include "m3d/error.h"
#include "text/backend.h"

namespace m3d::text {

std::string clean_up_tokenization(std::string text) {
  for (const auto& [from, to] : std::initializer_list<std::pair<const char*, const char*>>{
           {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}}) {
    text = replace_all(text, from, to);
  }
  return text;
}

namespace {

using json = nlohmann::json;

// transformers' slow Qwen2Tokenizer files as the tokenizer.json it converts to:
// NFC, the Qwen2 pre-tokenizer regex, byte-level BPE from vocab.json + merges.txt,
// and the added tokens of tokenizer_config.json (added_tokens_decoder) or added_tokens.json.
json qwen2_tokenizer_json(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string config_path = dir + "/tokenizer_config.json";
  json config = fs::exists(config_path) ? io::json_read_file(config_path) : json::object();
  const std::string cls = config.value("tokenizer_class", "Qwen2Tokenizer");
  if (cls != "Qwen2Tokenizer" && cls != "Qwen2TokenizerFast") {
    fail("{}: vocab.json + merges.txt of tokenizer_class '{}' are not supported (supported: Qwen2Tokenizer)", dir, cls);
  }
  json merges = json::array();
  std::ifstream in(dir + "/merges.txt");
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(line);
  }
  json added = json::array();
  if (config.contains("added_tokens_decoder")) {
    for (const auto& [id, token] : config["added_tokens_decoder"].items()) {
      json a = token;
      if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) fail("{}: added_tokens_decoder key '{}' is not a token id", config_path, id);
      a["id"] = std::stoll(id);
      a["normalized"] = token.value("normalized", false);
      added.push_back(a);
    }
  } else if (fs::exists(dir + "/added_tokens.json")) {
    const json listed = io::json_read_file(dir + "/added_tokens.json");
    for (const auto& [content, id] : listed.items()) { added.push_back({{"id", id}, {"content", content}, {"special", true}, {"normalized", false}}); }
  }
  static const char* kQwen2Pattern = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  return {{"model", {{"type", "BPE"}, {"vocab", io::json_read_file(dir + "/vocab.json")}, {"merges", merges}}},
          {"normalizer", {{"type", "NFC"}}},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", kQwen2Pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", added}};
}

}  // namespace

Tokenizer Tokenizer::qwen2_from_files(const std::string& dir) { return from_json(qwen2_tokenizer_json(dir), dir + "/vocab.json"); }

Tokenizer::Tokenizer(std::unique_ptr<TokenizerBackend> backend, bool slow) : impl_(std::move(backend)), slow_(slow) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& dir, Kind kind) {
  namespace fs = std::filesystem;
  const bool has_model = fs::exists(dir + "/tokenizer.model"), has_json = fs::exists(dir + "/tokenizer.json");
  // vocab.txt: BERT's WordPiece, slow by default as M3D-CLIP and bert_score load it.
  const bool has_vocab_txt = fs::exists(dir + "/vocab.txt");
  if (kind == Kind::Auto) kind = has_model || has_vocab_txt ? Kind::Slow : Kind::Fast;
  if (kind == Kind::Slow) {
    if (!has_model && has_vocab_txt) return Tokenizer(load_slow_wordpiece(dir), true);
    if (!has_model) fail("{}: no tokenizer.model or vocab.txt for a slow tokenizer{}", dir, has_json ? " (tokenizer.json is there: use the fast one)" : "");
    return Tokenizer(load_slow_llama(dir), true);
  }
  if (!has_json && !has_model && fs::exists(dir + "/vocab.json") && fs::exists(dir + "/merges.txt")) return qwen2_from_files(dir);
  if (!has_json) fail("{}: no tokenizer.json for the fast tokenizer{}", dir, has_model ? " (tokenizer.model is there: use the slow one)" : "");
  return from_file(dir + "/tokenizer.json");
}

Tokenizer Tokenizer::from_file(const std::string& path) { return from_json(io::json_read_file(path), path); }

Tokenizer Tokenizer::from_json(const json& root, const std::string& path) {
  try {
    const json& model = root.at("model");
    const std::string type = model.value("type", "BPE");
    if (type == "WordPiece") return Tokenizer(load_fast_wordpiece(root, path));
    if (type != "BPE") fail("{}: model type '{}' is not supported (supported: BPE, WordPiece)", path, type);
    return Tokenizer(load_fast_bpe(root, path));
  } catch (const json::exception& e) { fail("{}: malformed tokenizer.json: {}", path, e.what()); }
}

void Tokenizer::add_special_tokens(const std::vector<std::string>& tokens) {
  for (const auto& token : tokens) impl_->add(token, true);
}

void Tokenizer::add_tokens(const std::vector<std::string>& tokens) {
  for (const auto& token : tokens) impl_->add(token, false);
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const { return impl_->encode(text, add_special_tokens); }

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const { return impl_->decode(ids, skip_special_tokens); }

int64_t Tokenizer::token_to_id(const std::string& token) const { return impl_->token_to_id(token); }
std::string Tokenizer::id_to_token(int64_t id) const { return impl_->id_to_token(id); }
int64_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }
bool Tokenizer::is_byte_token(int64_t id) const { return id >= 0 && impl_->is_byte_token(id); }

}  // namespace m3d::text
