// Tokenizers as transformers runs them, behind one interface:
//  - Hugging Face `tokenizer.json` (fast): BPE with merges, byte fallback or
//    byte-level; the Unicode-form, case, strip and replace normalizers; Split,
//    Metaspace, Whitespace, Punctuation, Digits and ByteLevel pre-tokenizers
//    (pretokenize.h); the matching decoders; TemplateProcessing; added tokens.
//    Covers Llama-2, Phi-3, Mistral, Llama-3, Qwen2.5 and SmolLM.
//  - SentencePiece `tokenizer.model` (slow LlamaTokenizer, `use_fast=False`,
//    which M3D-LaMed uses), with the `legacy` flag and added tokens from
//    tokenizer_config.json / added_tokens.json / special_tokens_map.json.
// Components outside this set are refused by name.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <vector>

namespace m3d::io {
struct GgufTokenizer;
}

namespace m3d::text {

struct AddedTokenSpec {
  std::string content;
  int64_t id = -1;
  bool special = false;
  bool normalized = true;  // matched in normalized text (false: in the raw text)
  std::string pattern;  // what is matched: `content`, or its normalized form when `normalized`
  bool lstrip = false, rstrip = false, single_word = false;
};

class TokenizerBackend;

class Tokenizer {
 public:
  // Parses tokenizer.json; throws m3d::Error naming the file and the unsupported part.
  // from_gguf: the tokenizer stored in a GGUF file's tokenizer.ggml.* metadata: byte-level
  // BPE ("gpt2") with the pre-tokenizer its `pre` name stands for in llama.cpp
  // (gguf_tokenizer.cpp lists them), or SentencePiece BPE with scores ("llama", gguf_spm.cpp)
  // as llama.cpp runs it; others are refused by name.
  static Tokenizer from_gguf(const io::GgufTokenizer& gguf, const std::string& name);
  static Tokenizer from_file(const std::string& path);
  // The same from a parsed tokenizer.json; `name` names it in errors.
  static Tokenizer from_json(const nlohmann::json& root, const std::string& name);

  enum class Kind { Auto, Fast, Slow };
  // A checkpoint directory. Slow: tokenizer.model (+ tokenizer_config.json etc.),
  // or a slow Qwen2Tokenizer's vocab.json + merges.txt (Med3DVLM's saved layout),
  // which is byte-level BPE as its tokenizer.json would be. Fast: tokenizer.json.
  // Auto: slow when tokenizer.model exists (M3D loads its tokenizer with
  // use_fast=False), else tokenizer.json, else vocab.json + merges.txt.
  static Tokenizer load(const std::string& dir, Kind kind = Kind::Auto);
  bool is_slow() const { return slow_; }

  // As transformers' add_special_tokens / add_tokens: new ids follow the vocabulary;
  // tokens already known keep their id. Special tokens match in raw text.
  void add_special_tokens(const std::vector<std::string>& tokens);
  void add_tokens(const std::vector<std::string>& tokens);

  // add_special_tokens: apply the post-processor (BOS for Llama).
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = true) const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  int64_t token_to_id(const std::string& token) const;  // -1 when unknown
  std::string id_to_token(int64_t id) const;  // "" when out of range
  int64_t vocab_size() const;  // including added tokens
  // A byte-fallback piece (<0xXX>): a run of them decodes as a whole, so text decoded
  // while such a run is open may still change.
  bool is_byte_token(int64_t id) const;

  explicit Tokenizer(std::unique_ptr<TokenizerBackend> backend, bool slow = false);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

 private:
  static Tokenizer qwen2_from_files(const std::string& dir);
  std::unique_ptr<TokenizerBackend> impl_;
  bool slow_ = false;
};

// The ids that end generation with a GGUF file's tokenizer, as llama.cpp's llama_vocab_is_eog:
// tokenizer.ggml.eos_token_id (SentencePiece default 2) and the end-of-turn tokens llama.cpp
// knows by text (<|end|>, <|im_end|>, <|eot_id|>, </s>, ...; gguf_spm.cpp lists them), ascending.
std::vector<int64_t> gguf_end_of_generation_ids(const io::GgufTokenizer& gguf);

// transformers' truncation of one sequence encoded with its special tokens: the first
// max_length - 1 ids, then the closing special token ([SEP], </s>) that was last.
inline void truncate_keeping_last(std::vector<int64_t>& ids, int64_t max_length) {
  if (max_length < 1 || static_cast<int64_t>(ids.size()) <= max_length) return;
  const int64_t last = ids.back();
  ids.resize(static_cast<size_t>(max_length));
  ids.back() = last;
}

}  // namespace m3d::text
