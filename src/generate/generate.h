// Autoregressive generation over a CausalLm with a KV cache: greedy or sampled
// (HF order: repetition penalty, then temperature, top-k, top-p), stop ids,
// streaming callback, batches with left padding.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "models/causal_lm.h"

namespace m3d::generate {

// Field names follow HF generate() / generation_config.json.
struct GenerationOptions {
  int64_t max_new_tokens = 256;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;  // 0: off (HF's generate defaults to 50 when sampling; the CLI sets that)
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  uint64_t seed = 0;
  std::vector<int64_t> eos_token_id;  // stop when one is produced (it is kept in the output)
  // LaMed's [SEG] (config.json seg_token_id; -1: none): the final hidden states that
  // chose it are kept in GenerationResult::seg_hidden.
  int64_t seg_token_id = -1;
  // Keep each step's logits (HF output_logits): GenerationResult::logits.
  bool output_logits = false;
};

// Clear errors for settings outside their ranges (negative counts; when sampling,
// top_p outside (0, 1] or a non-positive temperature; a non-positive repetition
// penalty); generate() calls it.
void generation_options_check(const GenerationOptions& options);

// Called with (batch row, token) as each token is chosen; return false to stop early.
using TokenCallback = std::function<bool(int64_t row, int64_t token)>;

struct GenerationResult {
  std::vector<std::vector<int64_t>> tokens;  // new tokens per row, stop token included
  torch::Tensor last_logits;  // (B, V) logits of the final step, in fp32
  // With output_logits: every step's (B, V) fp32 logits on the CPU, as the model gave
  // them, before the repetition penalty and the sampling warpers.
  std::vector<torch::Tensor> logits;
  // Per row, for each generated [SEG] but one chosen first: the hidden state after the
  // final norm whose logits chose it (the position before [SEG]), (D) each. LaMed's
  // generate (lamed_phi3.py, lamed_llama.py) reads these from hidden_states[1:], so a
  // [SEG] at step 0, chosen from the prompt's last position, has none.
  std::vector<std::vector<torch::Tensor>> seg_hidden;
};

// embeds (B, L, D): the prompt embeddings (from CausalLm::embed). attention_mask
// (B, L) of 1/0 marks left padding (undefined: no padding). prompt_ids (B, L) are
// penalised by repetition_penalty as HF does when generating from ids (undefined:
// only generated tokens are, as when generating from inputs_embeds).
GenerationResult generate(models::CausalLmImpl& lm, const torch::Tensor& embeds, const GenerationOptions& options, const torch::Tensor& attention_mask = {},
                          const torch::Tensor& prompt_ids = {}, const TokenCallback& on_token = {});

// The same, continuing after the cache->length positions already in `cache`
// (e.g. a prompt prefix shared by several questions); new positions follow them.
GenerationResult generate_continue(models::CausalLmImpl& lm, models::KvCache& cache, const torch::Tensor& embeds, const GenerationOptions& options,
                                   const torch::Tensor& attention_mask = {}, const torch::Tensor& prompt_ids = {}, const TokenCallback& on_token = {});

// One step's choice from logits (B, V); `seen` (B, S) ids for the repetition penalty.
torch::Tensor next_tokens(const torch::Tensor& logits, const GenerationOptions& options, const torch::Tensor& seen, torch::Generator& generator);

}  // namespace m3d::generate
