// Hugging Face `tokenizer.json` tokenizers (the format transformers' fast
// tokenizers load), for the SentencePiece-BPE family of Llama-2, Phi-3 and
// Mistral: BPE with merges and byte fallback, Prepend/Replace normalizers,
// Metaspace, the matching decoders, TemplateProcessing, and added tokens split
// out before the model runs. Components outside this set are refused by name.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace m3d::text {

struct AddedTokenSpec {
  std::string content;
  int64_t id = -1;
  bool special = false;
  bool normalized = true;  // matched in normalized text (false: in the raw text)
  std::string pattern;  // what is matched: `content`, or its normalized form when `normalized`
  bool lstrip = false, rstrip = false, single_word = false;
};

class Tokenizer {
 public:
  // Parses tokenizer.json; throws m3d::Error naming the file and the unsupported part.
  static Tokenizer from_file(const std::string& path);

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

  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace m3d::text
