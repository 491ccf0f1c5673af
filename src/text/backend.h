// The interface behind m3d::text::Tokenizer: one implementation per tokenizer
// family (tokenizer.json BPE in bpe.cpp, WordPiece in wordpiece.cpp, the slow
// SentencePiece LlamaTokenizer in slow_llama.cpp, GGUF's SentencePiece vocabulary
// in gguf_spm.cpp). Internal to src/text.
#pragma once

#include <cstdint>
#include <memory>

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace m3d::io {
struct GgufTokenizer;
}

namespace m3d::text {

class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;
  virtual std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const = 0;
  virtual int64_t token_to_id(const std::string& token) const = 0;  // -1 when unknown
  virtual std::string id_to_token(int64_t id) const = 0;  // "" when out of range
  virtual int64_t vocab_size() const = 0;
  virtual bool is_byte_token(int64_t id) const = 0;  // a byte-fallback piece <0xXX>
  // transformers' add_special_tokens / add_tokens for one token.
  virtual void add(const std::string& content, bool special) = 0;
};

// transformers' clean_up_tokenization: " ." -> "." and the like (tokenizer.cpp).
std::string clean_up_tokenization(std::string text);

// bpe.cpp: a tokenizer.json whose model is BPE (json errors propagate to the caller).
std::unique_ptr<TokenizerBackend> load_fast_bpe(const nlohmann::json& root, const std::string& path);
// wordpiece.cpp: transformers' slow BertTokenizer from a directory with vocab.txt
// (+ tokenizer_config.json, special_tokens_map.json).
std::unique_ptr<TokenizerBackend> load_slow_wordpiece(const std::string& dir);
// wordpiece.cpp: a tokenizer.json whose model is WordPiece (BertTokenizerFast).
std::unique_ptr<TokenizerBackend> load_fast_wordpiece(const nlohmann::json& root, const std::string& path);

// gguf_spm.cpp: a GGUF file's SentencePiece-BPE vocabulary (tokenizer.ggml.model "llama")
// as llama.cpp tokenizes it; `name` names the file in errors.
std::unique_ptr<TokenizerBackend> load_gguf_spm(const io::GgufTokenizer& gguf, const std::string& name);

// slow_llama.cpp: transformers' LlamaTokenizer (use_fast=False) from a directory
// with tokenizer.model, tokenizer_config.json, special_tokens_map.json, added_tokens.json.
std::unique_ptr<TokenizerBackend> load_slow_llama(const std::string& dir);

}  // namespace m3d::text
