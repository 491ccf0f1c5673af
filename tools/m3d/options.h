// Options shared by several subcommands, declared once.
#pragma once

#include <CLI/CLI.hpp>
#include <c10/core/ScalarType.h>

#include <string>

#include "eval/bertscore.h"
#include "generate/api.h"
#include "generate/generate.h"
#include "m3d/error.h"
#include "m3d/session.h"
#include "text/tokenizer.h"

namespace m3d::cli {

// --model: one help text; `kinds` names the checkpoints the command takes.
inline CLI::Option* add_model_option(CLI::App* cmd, std::string& dir, const std::string& kinds, bool required = true) {
  auto* option = cmd->add_option("--model", dir, kinds + " checkpoint directory (config.json, weights, tokenizer files)");
  if (required) option->required();
  return option;
}

// --recipe: how a scan becomes model input.
inline void add_recipe_option(CLI::App* cmd, std::string& recipe) {
  cmd->add_option("--recipe", recipe,
                  "How a scan (NIfTI, DICOM, NRRD, ...) becomes model input: auto (the checkpoint's m3d_recipe.json, else m3d-lamed, or "
                  "med3dvlm for a DCFormer checkpoint), a built-in name or a recipe .json; .npy / .safetensors inputs are used as they are")
      ->capture_default_str();
}

inline void add_dtype_option(CLI::App* cmd, std::string& dtype) {
  cmd->add_option("--dtype", dtype, "Compute precision: f32 (reference), bf16, f16 (GPU only)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
}

inline text::Tokenizer::Kind parse_tokenizer_kind(const std::string& name) {
  if (name == "slow") return text::Tokenizer::Kind::Slow;
  if (name == "fast") return text::Tokenizer::Kind::Fast;
  return text::Tokenizer::Kind::Auto;
}

inline c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "f32") return c10::kFloat;
  if (name == "bf16") return c10::kBFloat16;
  if (name == "f16") {
    // libtorch's CPU kernels lack f16 matrix products (a backtrace deep in addmm otherwise).
    fail("--dtype f16 runs on a GPU only, and this m3d computes on the CPU: use bf16 or f32");
  }
  fail("unknown dtype '{}' (supported: f32, bf16, f16)", name);
}

// --image / --image-key / --recipe, as generate, chat, encode and segment take them
// (required: whether a command cannot run without an image).
inline void add_image_options(CLI::App* cmd, std::string& image, std::string& image_key, std::string& recipe, bool required) {
  auto* option =
      cmd->add_option("--image", image, "A scan (NIfTI, DICOM file or directory, NRRD, MHA) or a model-space volume (M3D .npy 1xDxHxW, .safetensors tensor)");
  if (required) option->required();
  cmd->add_option("--image-key", image_key, "Tensor name when --image is a safetensors file with several");
  add_recipe_option(cmd, recipe);
}

// Decoding flags of generate and chat; unset ones keep the model's defaults
// (generation_config.json).
struct GenerationFlags {
  int64_t max_new_tokens = -1, top_k = 0;
  bool do_sample = false;
  double temperature = 1.0, top_p = 1.0, repetition_penalty = 1.0;
  uint64_t seed = 0;
  std::string tokenizer = "auto";
  bool greedy = false;
  const CLI::App* cmd = nullptr;  // to tell given flags from defaults
};

inline void add_generation_options(CLI::App* cmd, GenerationFlags& f) {
  cmd->add_option("--max-new-tokens", f.max_new_tokens, "Default: generation_config.json, else 256")->check(CLI::PositiveNumber);
  cmd->add_flag("--do-sample", f.do_sample, "Sample instead of greedy decoding (the official Bench uses greedy)");
  cmd->add_flag("--greedy", f.greedy, "Greedy decoding even where generation_config.json samples (Med3DVLM's does)")->excludes("--do-sample");
  f.cmd = cmd;
  cmd->add_option("--temperature", f.temperature, "Sampling temperature")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--top-p", f.top_p, "Nucleus sampling (the official demo: 0.9)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", f.top_k, "Top-k sampling, 0 = off")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--repetition-penalty", f.repetition_penalty, "HF repetition penalty")->capture_default_str();
  cmd->add_option("--seed", f.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--tokenizer", f.tokenizer,
                  "slow: tokenizer.model as transformers' use_fast=False (what M3D uses); fast: tokenizer.json; "
                  "auto: slow when tokenizer.model exists")
      ->check(CLI::IsMember({"auto", "slow", "fast"}))
      ->capture_default_str();
}

// --show-ids (generate, chat): the ids behind each answer on stderr (print_ids in answer.h).
inline void add_show_ids_option(CLI::App* cmd, bool& show_ids) {
  cmd->add_flag("--show-ids", show_ids, "Print the prompt's token ids and the generated ids with their vocabulary entries to stderr, one line each");
}

// Flags given, for the public Session API (include/m3d/session.h); unset ones keep the
// model's generation_config.json defaults.
inline AskOptions ask_options(const GenerationFlags& f) {
  auto given = [&](const char* name) { return f.cmd == nullptr || f.cmd->count(name) > 0; };
  AskOptions ask;
  if (f.max_new_tokens >= 0) ask.max_new_tokens = f.max_new_tokens;
  if (given("--do-sample") || f.greedy) ask.sample = f.do_sample;
  if (given("--temperature")) ask.temperature = f.temperature;
  if (given("--top-p")) ask.top_p = f.top_p;
  if (given("--top-k")) ask.top_k = f.top_k;
  if (given("--repetition-penalty")) ask.repetition_penalty = f.repetition_penalty;
  ask.seed = f.seed;
  return ask;
}

// The same flags over `options` (the model's generation_config.json defaults), for
// the commands that run the library's own generate (segment, bench).
inline generate::GenerationOptions generation_options(const GenerationFlags& f, generate::GenerationOptions options) {
  return generation_options_from(ask_options(f), std::move(options));
}

inline ModelOptions model_options(const GenerationFlags& f, const std::string& dtype) {
  parse_dtype(dtype);  // the CLI's message for f16
  ModelOptions options;
  options.dtype = dtype;
  options.tokenizer = f.tokenizer;
  return options;
}

// METEOR's data folders and the BERTScore model (m3d score, m3d bench).
inline void add_text_metric_options(CLI::App* cmd, std::string& punkt_dir, std::string& wordnet_dir, eval::BertScoreOptions& bertscore) {
  cmd->add_option("--punkt", punkt_dir,
                  "METEOR: nltk_data's English Punkt folder (default: third_party/nltk/tokenizers/punkt_tab/english, scripts/fetch_vocab.sh)")
      ->envname("M3D_PUNKT_DIR");
  cmd->add_option("--wordnet", wordnet_dir, "METEOR: the WordNet 3.0 dict folder (default: /usr/share/wordnet, Debian wordnet-base)")
      ->envname("M3D_WORDNET_DIR");
  cmd->add_option("--bertscore-model", bertscore.model_dir,
                  "BERTScore F1 with this BERT/RoBERTa folder (official: roberta-large); without it bert_f1 is not computed");
  cmd->add_option("--bertscore-layers", bertscore.num_layers, "BERTScore layers (default: bert_score's for the model name, roberta-large 17)");
  cmd->add_flag("--bertscore-idf", bertscore.idf, "BERTScore idf weights from the references (off in M3D)");
  cmd->add_option("--bertscore-baseline", bertscore.baseline_path, "BERTScore rescaling table LAYER,P,R,F (off in M3D)");
}

}  // namespace m3d::cli
