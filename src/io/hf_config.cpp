#include "io/hf_config.h"

#include "io/json_util.h"
#include "m3d/error.h"

namespace m3d::io {

using json = nlohmann::json;

namespace {

json read_object(const std::string& path) {
  json j = json_read_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object, found {}", path, j.type_name());
  return j;
}

}  // namespace

std::string HfConfig::architecture() const { return architectures.empty() ? model_type : architectures.front(); }

HfConfig hf_config_read(const std::string& path) { return hf_config_from_json(read_object(path), path); }

HfConfig hf_config_from_json(const json& config, const std::string& path) {
  if (!config.is_object()) fail("{}: expected a JSON object, found {}", path, config.type_name());
  HfConfig c;
  c.raw = config;
  const json& j = c.raw;
  // Med3DVLM's merge script writes a plain string ("architectures": "VLMQwenForCausalLM").
  const auto arch = j.find("architectures");
  c.architectures = arch != j.end() && arch->is_string() ? std::vector<std::string>{arch->get<std::string>()} : json_string_list(j, "architectures", path);
  c.model_type = json_string(j, "model_type", path).value_or("");
  c.torch_dtype = json_string(j, "torch_dtype", path).value_or("");
  c.hidden_size = json_int(j, "hidden_size", path);
  c.intermediate_size = json_int(j, "intermediate_size", path);
  c.num_hidden_layers = json_int(j, "num_hidden_layers", path);
  c.num_attention_heads = json_int(j, "num_attention_heads", path);
  c.num_key_value_heads = json_int(j, "num_key_value_heads", path);
  c.vocab_size = json_int(j, "vocab_size", path);
  c.max_position_embeddings = json_int(j, "max_position_embeddings", path);
  c.rms_norm_eps = json_number(j, "rms_norm_eps", path);
  c.rope_theta = json_number(j, "rope_theta", path);
  c.tie_word_embeddings = json_bool(j, "tie_word_embeddings", path);
  return c;
}

GenerationConfig generation_config_read(const std::string& path) {
  const json j = read_object(path);
  GenerationConfig g;
  g.bos_token_id = json_int(j, "bos_token_id", path);
  g.eos_token_id = json_int_list(j, "eos_token_id", path);
  g.pad_token_id = json_int(j, "pad_token_id", path);
  g.max_length = json_int(j, "max_length", path);
  g.max_new_tokens = json_int(j, "max_new_tokens", path);
  g.do_sample = json_bool(j, "do_sample", path);
  g.temperature = json_number(j, "temperature", path);
  g.top_k = json_int(j, "top_k", path);
  g.top_p = json_number(j, "top_p", path);
  g.repetition_penalty = json_number(j, "repetition_penalty", path);
  return g;
}

TokenizerConfig tokenizer_config_read(const std::string& path) {
  const json j = read_object(path);
  TokenizerConfig t;
  t.tokenizer_class = json_string(j, "tokenizer_class", path).value_or("");
  t.add_bos_token = json_bool(j, "add_bos_token", path);
  t.add_eos_token = json_bool(j, "add_eos_token", path);
  t.legacy = json_bool(j, "legacy", path);
  t.clean_up_tokenization_spaces = json_bool(j, "clean_up_tokenization_spaces", path);
  t.model_max_length = json_int(j, "model_max_length", path);
  t.padding_side = json_string(j, "padding_side", path).value_or("right");
  t.bos_token = json_token(j, "bos_token", path);
  t.eos_token = json_token(j, "eos_token", path);
  t.unk_token = json_token(j, "unk_token", path);
  t.pad_token = json_token(j, "pad_token", path);
  t.additional_special_tokens = json_string_list(j, "additional_special_tokens", path);
  t.chat_template = json_string(j, "chat_template", path).value_or("");
  if (auto it = j.find("added_tokens_decoder"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail("{}: key 'added_tokens_decoder': expected an object", path);
    for (const auto& [id_text, entry] : it->items()) {
      const std::string where = fmt::format("{}: added_tokens_decoder['{}']", path, id_text);
      int64_t id = 0;
      try {
        size_t used = 0;
        id = std::stoll(id_text, &used);
        if (used != id_text.size() || id < 0) throw std::invalid_argument(id_text);
      } catch (const std::exception&) { fail("{}: the key is not a token id", where); }
      AddedToken token;
      token.content = json_string(entry, "content", where).value_or("");
      if (token.content.empty()) fail("{}: no 'content'", where);
      token.special = json_bool(entry, "special", where).value_or(false);
      token.lstrip = json_bool(entry, "lstrip", where).value_or(false);
      token.rstrip = json_bool(entry, "rstrip", where).value_or(false);
      token.normalized = json_bool(entry, "normalized", where).value_or(true);
      token.single_word = json_bool(entry, "single_word", where).value_or(false);
      t.added_tokens_decoder[id] = token;
    }
  }
  return t;
}

std::map<std::string, int64_t> added_tokens_read(const std::string& path) {
  const json j = read_object(path);
  std::map<std::string, int64_t> out;
  for (const auto& [text, id] : j.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) fail("{}: token '{}': id is not a non-negative integer", path, text);
    out[text] = id.get<int64_t>();
  }
  return out;
}

SpecialTokensMap special_tokens_map_read(const std::string& path) {
  const json j = read_object(path);
  SpecialTokensMap s;
  s.bos_token = json_token(j, "bos_token", path);
  s.eos_token = json_token(j, "eos_token", path);
  s.unk_token = json_token(j, "unk_token", path);
  s.pad_token = json_token(j, "pad_token", path);
  s.additional_special_tokens = json_string_list(j, "additional_special_tokens", path);
  return s;
}

}  // namespace m3d::io
