// GGUF files of the llama family (gguf.h): llama.cpp's tensor names to and from the HF
// ones, the rotary row permutation of Q/K, and the HF config and tokenizer that the
// metadata holds.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <map>

#include "io/gguf.h"
#include "m3d/error.h"

namespace m3d::io {

namespace {

// llama.cpp's names (gguf-py tensor_mapping.py, MODEL_TENSOR for LLM_ARCH_LLAMA)
// beside the HF ones; per-layer entries omit the "blk.N." / "model.layers.N." prefix.
constexpr std::pair<const char*, const char*> kGlobalNames[] = {
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
};
constexpr std::pair<const char*, const char*> kLayerNames[] = {
    {"attn_norm", "input_layernorm"},   {"attn_q", "self_attn.q_proj"},      {"attn_k", "self_attn.k_proj"},           {"attn_v", "self_attn.v_proj"},
    {"attn_qkv", "self_attn.qkv_proj"}, {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"}, {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},          {"ffn_down", "mlp.down_proj"},
};

// Splits "stem.weight" / "stem.bias" into stem and suffix.
bool split_suffix(const std::string& name, std::string* stem, std::string* suffix) {
  for (const char* s : {".weight", ".bias"}) {
    const size_t n = std::strlen(s);
    if (name.size() > n && name.compare(name.size() - n, n, s) == 0) {
      *stem = name.substr(0, name.size() - n);
      *suffix = s;
      return true;
    }
  }
  return false;
}

// "<prefix><digits>.<rest>" -> digits and rest.
bool split_layer(const std::string& stem, const std::string& prefix, std::string* layer, std::string* rest) {
  if (stem.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t dot = stem.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return false;
  *layer = stem.substr(prefix.size(), dot - prefix.size());
  if (!std::all_of(layer->begin(), layer->end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  *rest = stem.substr(dot + 1);
  return true;
}

std::optional<std::string> rename(const std::string& name, bool to_hf) {
  std::string stem, suffix;
  if (!split_suffix(name, &stem, &suffix)) return std::nullopt;
  for (const auto& [gguf, hf] : kGlobalNames) {
    if (stem == (to_hf ? gguf : hf)) return std::string(to_hf ? hf : gguf) + suffix;
  }
  std::string layer, rest;
  if (!split_layer(stem, to_hf ? "blk." : "model.layers.", &layer, &rest)) return std::nullopt;
  for (const auto& [gguf, hf] : kLayerNames) {
    if (rest == (to_hf ? gguf : hf)) { return (to_hf ? "model.layers." : "blk.") + layer + "." + (to_hf ? hf : gguf) + suffix; }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> gguf_name_to_hf(const std::string& gguf_name) { return rename(gguf_name, true); }
std::optional<std::string> gguf_name_from_hf(const std::string& hf_name) { return rename(hf_name, false); }

std::vector<int64_t> gguf_rope_unpermute_rows(int64_t rows, int64_t heads) {
  if (heads <= 0 || rows <= 0 || rows % (2 * heads) != 0) {
    fail("gguf: cannot undo the rotary permutation of {} rows over {} heads: rows must be a multiple of 2 x heads", rows, heads);
  }
  const int64_t d = rows / heads, half = d / 2;
  std::vector<int64_t> source(static_cast<size_t>(rows));
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t j = 0; j < half; ++j) source[h * d + i * half + j] = h * d + 2 * j + i;
    }
  }
  return source;
}

bool gguf_arch_permutes_qk(const std::string& architecture) { return architecture == "llama"; }

HfConfig gguf_hf_config(const GgufFile& gguf) {
  const std::string& path = gguf.file->path();
  const std::string arch = gguf.architecture();
  static const std::map<std::string, std::string> kArchitectures = {{"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};
  auto hf_arch = kArchitectures.find(arch);
  if (hf_arch == kArchitectures.end()) { fail("gguf: {}: architecture '{}' has no config mapping (supported: llama, qwen2)", path, arch); }
  auto key = [&](const char* suffix) { return arch + "." + suffix; };
  auto require = [&](const char* suffix) {
    auto value = gguf.get_int(key(suffix));
    if (!value) fail("gguf: {}: metadata '{}' is required for a {} model", path, key(suffix), arch);
    return *value;
  };
  HfConfig c;
  c.architectures = {hf_arch->second};
  c.model_type = arch;
  c.hidden_size = require("embedding_length");
  c.intermediate_size = require("feed_forward_length");
  c.num_hidden_layers = require("block_count");
  c.num_attention_heads = require("attention.head_count");
  c.num_key_value_heads = gguf.get_int(key("attention.head_count_kv")).value_or(*c.num_attention_heads);
  c.max_position_embeddings = gguf.get_int(key("context_length"));
  c.rms_norm_eps = gguf.get_float(key("attention.layer_norm_rms_epsilon"));
  c.rope_theta = gguf.get_float(key("rope.freq_base"));
  c.vocab_size = gguf.get_int(key("vocab_size"));
  if (!c.vocab_size) {
    if (const GgufValue* tokens = gguf.find("tokenizer.ggml.tokens")) c.vocab_size = static_cast<int64_t>(tokens->count);
  }
  if (!c.vocab_size) fail("gguf: {}: neither '{}' nor 'tokenizer.ggml.tokens' gives the vocabulary size", path, key("vocab_size"));
  // The converter drops lm_head when it is tied to the embedding.
  c.tie_word_embeddings = gguf.find_tensor("output.weight") == nullptr;

  nlohmann::json& raw = c.raw;
  raw["architectures"] = c.architectures;
  raw["model_type"] = c.model_type;
  raw["hidden_size"] = *c.hidden_size;
  raw["intermediate_size"] = *c.intermediate_size;
  raw["num_hidden_layers"] = *c.num_hidden_layers;
  raw["num_attention_heads"] = *c.num_attention_heads;
  raw["num_key_value_heads"] = *c.num_key_value_heads;
  raw["vocab_size"] = *c.vocab_size;
  raw["tie_word_embeddings"] = *c.tie_word_embeddings;
  if (c.max_position_embeddings) raw["max_position_embeddings"] = *c.max_position_embeddings;
  if (c.rms_norm_eps) raw["rms_norm_eps"] = *c.rms_norm_eps;
  if (c.rope_theta) raw["rope_theta"] = *c.rope_theta;
  if (auto head_dim = gguf.get_int(key("attention.key_length"))) raw["head_dim"] = *head_dim;
  if (auto type = gguf.get_string(key("rope.scaling.type")); type && *type != "none") {
    raw["rope_scaling"] = {{"type", *type}};
    if (auto factor = gguf.get_float(key("rope.scaling.factor"))) raw["rope_scaling"]["factor"] = *factor;
  }
  if (gguf.find_tensor("rope_freqs.weight") != nullptr) {
    // Llama-3.1-style frequency factors are stored as a tensor, not a key.
    raw["rope_scaling"] = {{"rope_type", "llama3"}, {"source", "rope_freqs.weight"}};
  }
  return c;
}

GgufTokenizer gguf_tokenizer(const GgufFile& gguf) {
  const std::string& path = gguf.file->path();
  GgufTokenizer t;
  auto model = gguf.get_string("tokenizer.ggml.model");
  if (!model) fail("gguf: {}: metadata 'tokenizer.ggml.model' is missing: the file carries no tokenizer", path);
  t.model = *model;
  t.pre = gguf.get_string("tokenizer.ggml.pre").value_or("");
  t.tokens = gguf.get_strings("tokenizer.ggml.tokens");
  if (t.tokens.empty()) fail("gguf: {}: metadata 'tokenizer.ggml.tokens' is missing or empty", path);
  for (double s : gguf.get_floats("tokenizer.ggml.scores")) t.scores.push_back(static_cast<float>(s));
  for (int64_t type : gguf.get_ints("tokenizer.ggml.token_type")) t.token_types.push_back(static_cast<int32_t>(type));
  t.merges = gguf.get_strings("tokenizer.ggml.merges");
  const size_t n = t.tokens.size();
  if (!t.scores.empty() && t.scores.size() != n) { fail("gguf: {}: tokenizer.ggml.scores has {} entries for {} tokens", path, t.scores.size(), n); }
  if (!t.token_types.empty() && t.token_types.size() != n) {
    fail("gguf: {}: tokenizer.ggml.token_type has {} entries for {} tokens", path, t.token_types.size(), n);
  }
  auto special = [&](const char* name) {
    const std::string k = std::string("tokenizer.ggml.") + name;
    auto id = gguf.get_int(k);
    if (id && (*id < 0 || static_cast<size_t>(*id) >= n)) { fail("gguf: {}: metadata '{}' = {} is outside the {} tokens", path, k, *id, n); }
    return id;
  };
  t.bos_token_id = special("bos_token_id");
  t.eos_token_id = special("eos_token_id");
  t.unknown_token_id = special("unknown_token_id");
  t.padding_token_id = special("padding_token_id");
  t.add_bos_token = gguf.get_bool("tokenizer.ggml.add_bos_token");
  t.add_eos_token = gguf.get_bool("tokenizer.ggml.add_eos_token");
  t.add_space_prefix = gguf.get_bool("tokenizer.ggml.add_space_prefix");
  t.chat_template = gguf.get_string("tokenizer.chat_template").value_or("");
  t.model_name = gguf.get_string("general.name").value_or("");
  return t;
}

}  // namespace m3d::io
