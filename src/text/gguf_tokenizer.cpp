// A GGUF file's tokenizer (tokenizer.ggml.*, as llama.cpp's converter stores it) as
// the tokenizer.json it was converted from: model "gpt2" is byte-level BPE with the
// merges; `pre` names the pre-tokenizer (llama-vocab.cpp's LLAMA_VOCAB_PRE_TYPE_*
// regexes, written here as the Hugging Face components they come from); token_type
// 3 (control) tokens are special added tokens, 4 (user defined) plain added tokens;
// add_bos_token / add_eos_token are the post-processor. Model "llama" (SentencePiece BPE
// with scores) has a backend of its own, gguf_spm.cpp.
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "m3d/error.h"
#include "text/backend.h"
#include "text/tokenizer.h"

namespace m3d::text {
namespace {

using json = nlohmann::json;

// tokenizer.json Split(regex, Isolated) step.
json split_step(const std::string& regex) { return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}}; }

json byte_level_step(bool use_regex) { return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", use_regex}}; }

// Llama-3's and Qwen2's split regex; the only difference is how many digits a number piece takes.
std::string llama3_regex(const std::string& digits) {
  return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|)" + digits + R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}

// The pre-tokenizer a llama.cpp `pre` name stands for, as tokenizer.json steps; whether
// merges are skipped for words already in the vocabulary (tokenizers' ignore_merges).
struct PreSteps {
  json steps;
  bool ignore_merges = false;
};

PreSteps pre_steps(const std::string& pre, const std::string& name) {
  if (pre.empty() || pre == "default" || pre == "gpt-2") return {json::array({byte_level_step(true)})};
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "codeshell") {  // Digits(individual) + GPT-2's regex
    return {json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level_step(true)})};
  }
  if (pre == "llama-bpe" || pre == "llama3") return {json::array({split_step(llama3_regex(R"(\p{N}{1,3})")), byte_level_step(false)}), true};
  if (pre == "qwen2") return {json::array({split_step(llama3_regex(R"(\p{N})")), byte_level_step(false)})};
  fail("{}: tokenizer.ggml.pre '{}' is not supported (supported: default, gpt-2, smollm, starcoder, refact, codeshell, llama-bpe, qwen2)", name, pre);
}

json added_tokens(const io::GgufTokenizer& gguf) {
  json added = json::array();
  for (size_t id = 0; id < gguf.token_types.size(); ++id) {
    const int32_t type = gguf.token_types[id];
    if (type != 3 && type != 4) continue;  // control, user defined
    const bool special = type == 3;
    added.push_back({{"id", id}, {"content", gguf.tokens[id]}, {"special", special}, {"normalized", !special}});
  }
  return added;
}

json post_processor(const io::GgufTokenizer& gguf) {
  json single = json::array(), specials = json::object();
  auto special = [&](const std::optional<int64_t>& id) {
    const std::string& token = gguf.tokens.at(static_cast<size_t>(*id));
    specials[token] = {{"id", token}, {"ids", {*id}}, {"tokens", {token}}};
    single.push_back({{"SpecialToken", {{"id", token}, {"type_id", 0}}}});
  };
  if (gguf.add_bos_token.value_or(false) && gguf.bos_token_id) special(gguf.bos_token_id);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (gguf.add_eos_token.value_or(false) && gguf.eos_token_id) special(gguf.eos_token_id);
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", json::array()}, {"special_tokens", specials}};
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const io::GgufTokenizer& gguf, const std::string& name) {
  if (gguf.model == "llama") return Tokenizer(load_gguf_spm(gguf, name));
  if (gguf.model != "gpt2") {
    fail("{}: tokenizer.ggml.model '{}' is not supported from GGUF metadata (supported: gpt2, byte-level BPE; llama, SentencePiece BPE)", name, gguf.model);
  }
  const PreSteps pre = pre_steps(gguf.pre, name);
  json vocab = json::object();
  for (size_t id = 0; id < gguf.tokens.size(); ++id) vocab[gguf.tokens[id]] = id;
  json model = {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", gguf.merges}, {"ignore_merges", pre.ignore_merges}, {"byte_fallback", false}};
  const json root = {{"model", std::move(model)},
                     {"normalizer", nullptr},
                     {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", pre.steps}}},
                     {"post_processor", post_processor(gguf)},
                     {"decoder", byte_level_step(true)},
                     {"added_tokens", added_tokens(gguf)}};
  return from_json(root, name);
}

}  // namespace m3d::text
