// Hugging Face checkpoint metadata files as typed structs whose field names are
// the HF keys: config.json, generation_config.json, tokenizer_config.json,
// added_tokens.json, special_tokens_map.json. Architecture-specific configs
// (models issue) read further keys from `raw`.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace m3d::io {

// config.json: the keys shared by the decoder families; the rest stay in `raw`.
struct HfConfig {
  std::vector<std::string> architectures;
  std::string model_type;
  std::string torch_dtype;
  std::optional<int64_t> hidden_size;
  std::optional<int64_t> intermediate_size;
  std::optional<int64_t> num_hidden_layers;
  std::optional<int64_t> num_attention_heads;
  std::optional<int64_t> num_key_value_heads;
  std::optional<int64_t> vocab_size;
  std::optional<int64_t> max_position_embeddings;
  std::optional<double> rms_norm_eps;
  std::optional<double> rope_theta;
  std::optional<bool> tie_word_embeddings;
  nlohmann::json raw;

  // architectures[0], or model_type when there is none.
  std::string architecture() const;
};

// generation_config.json
struct GenerationConfig {
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_id;  // HF allows an int or a list
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> max_length;
  std::optional<int64_t> max_new_tokens;
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> repetition_penalty;
};

struct AddedToken {
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool single_word = false;
};

// tokenizer_config.json
struct TokenizerConfig {
  std::string tokenizer_class;
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  std::optional<bool> legacy;
  std::optional<bool> clean_up_tokenization_spaces;
  std::optional<int64_t> model_max_length;
  std::string padding_side = "right";
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> unk_token;
  std::optional<std::string> pad_token;
  std::vector<std::string> additional_special_tokens;
  std::map<int64_t, AddedToken> added_tokens_decoder;
  std::string chat_template;
};

// special_tokens_map.json
struct SpecialTokensMap {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> unk_token;
  std::optional<std::string> pad_token;
  std::vector<std::string> additional_special_tokens;
};

HfConfig hf_config_read(const std::string& path);
// The same from a parsed config.json (`where` names it in errors).
HfConfig hf_config_from_json(const nlohmann::json& config, const std::string& where);
GenerationConfig generation_config_read(const std::string& path);
TokenizerConfig tokenizer_config_read(const std::string& path);
// added_tokens.json: {token text: id}
std::map<std::string, int64_t> added_tokens_read(const std::string& path);
SpecialTokensMap special_tokens_map_read(const std::string& path);

}  // namespace m3d::io
