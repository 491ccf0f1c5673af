// Generation loop. Greedy is argmax; sampling applies HF's processors in its
// order (RepetitionPenaltyLogitsProcessor, then TemperatureLogitsWarper,
// TopKLogitsWarper, TopPLogitsWarper) and draws with torch's multinomial.
// Letters: B batch, L prompt tokens, V vocab, S seen tokens.
#include "generate/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "m3d/error.h"

namespace m3d::generate {

torch::Tensor next_tokens(const torch::Tensor& logits_in, const GenerationOptions& o, const torch::Tensor& seen, torch::Generator& generator) {
  auto logits = logits_in.to(torch::kFloat);  // (B, V)
  if (o.repetition_penalty != 1.0 && seen.defined() && seen.size(1) > 0) {
    // Seen tokens: divide positive scores, multiply negative ones.
    auto score = logits.gather(1, seen);
    score = torch::where(score < 0, score * o.repetition_penalty, score / o.repetition_penalty);
    logits = logits.scatter(1, seen, score);
  }
  if (!o.do_sample) return logits.argmax(-1);  // (B)
  if (o.temperature <= 0) fail("generate: temperature must be positive when sampling, got {}", o.temperature);
  const float lowest = -std::numeric_limits<float>::infinity();
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    auto kth = std::get<0>(logits.topk(o.top_k, -1)).slice(1, o.top_k - 1, o.top_k);  // (B, 1)
    logits = logits.masked_fill(logits < kth, lowest);
  }
  if (o.top_p < 1.0) {
    // Remove the tokens whose cumulative probability (ascending order) stays <= 1 - top_p; keep at least one.
    auto [sorted, order] = logits.sort(-1, false);
    auto cumulative = sorted.softmax(-1).cumsum(-1);
    auto remove_sorted = cumulative <= (1.0 - o.top_p);
    remove_sorted.select(1, remove_sorted.size(1) - 1).fill_(false);
    auto remove = remove_sorted.scatter(1, order, remove_sorted);
    logits = logits.masked_fill(remove, lowest);
  }
  return logits.softmax(-1).multinomial(1, false, generator).squeeze(1);  // (B)
}

void generation_options_check(const GenerationOptions& o) {
  if (o.max_new_tokens < 0) fail("generate: max_new_tokens must be >= 0, got {}", o.max_new_tokens);
  if (o.do_sample) {  // greedy ignores them (generation_config.json files may hold any value there)
    if (!(o.temperature > 0) || !std::isfinite(o.temperature)) fail("generate: temperature must be a positive number, got {}", o.temperature);
    if (!(o.top_p > 0 && o.top_p <= 1)) fail("generate: top_p must be in (0, 1], got {}", o.top_p);
    if (o.top_k < 0) fail("generate: top_k must be >= 0 (0: off), got {}", o.top_k);
  }
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty)) {
    fail("generate: repetition_penalty must be a positive number (1: off), got {}", o.repetition_penalty);
  }
}

GenerationResult generate(models::CausalLmImpl& lm, const torch::Tensor& embeds, const GenerationOptions& o, const torch::Tensor& attention_mask,
                          const torch::Tensor& prompt_ids, const TokenCallback& on_token) {
  if (embeds.dim() != 3) fail("generate: prompt embeddings must be (batch, tokens, hidden)");
  generation_options_check(o);
  const int64_t context = lm.model->config().max_position_embeddings;
  const int64_t capacity = std::min(embeds.size(1) + std::min(o.max_new_tokens, context), context);
  auto cache = lm.model->make_cache(embeds.size(0), capacity, embeds.options());
  return generate_continue(lm, cache, embeds, o, attention_mask, prompt_ids, on_token);
}

GenerationResult generate_continue(models::CausalLmImpl& lm, models::KvCache& cache, const torch::Tensor& embeds, const GenerationOptions& o,
                                   const torch::Tensor& attention_mask, const torch::Tensor& prompt_ids, const TokenCallback& on_token) {
  torch::NoGradGuard no_grad;
  if (embeds.dim() != 3 || embeds.size(1) == 0) fail("generate: prompt embeddings must be (batch, tokens >= 1, hidden)");
  generation_options_check(o);
  const int64_t B = embeds.size(0), L = embeds.size(1), past = cache.length;
  const int64_t context = lm.model->config().max_position_embeddings;
  if (o.max_new_tokens > context - past - L) {  // (written so a huge count cannot overflow)
    fail("generate: {} cached + {} prompt + {} new tokens exceeds the model's context of {} positions", past, L, o.max_new_tokens, context);
  }
  if (o.max_new_tokens > cache.capacity - past - L) {
    fail("generate: {} cached + {} prompt + {} new tokens exceed the KV cache capacity {}", past, L, o.max_new_tokens, cache.capacity);
  }
  const auto device = embeds.device();
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device);

  // Left padding: positions count only real tokens (HF: cumsum(mask) - 1, pads at 1).
  torch::Tensor mask = torch::cat({torch::ones({B, past}, long_opts), attention_mask.defined() ? attention_mask.to(long_opts) : torch::ones({B, L}, long_opts)},
                                  1);  // (B, past + L)
  torch::Tensor positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1).slice(1, past);  // (B, L)

  torch::Generator generator = at::detail::createCPUGenerator(o.seed);
  GenerationResult result;
  result.tokens.resize(B);
  result.seg_hidden.resize(B);
  torch::Tensor seen = prompt_ids.defined() ? prompt_ids.to(long_opts) : torch::empty({B, 0}, long_opts);
  std::vector<bool> done(B, false);
  auto hidden = lm.model->forward(embeds, &cache, positions, mask);  // (B, L, D)
  auto next_position = positions.select(1, L - 1).unsqueeze(1) + 1;  // (B, 1)
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    auto logits = lm.logits(hidden.select(1, hidden.size(1) - 1)).to(torch::kFloat);  // (B, V)
    result.last_logits = logits;
    if (o.output_logits) result.logits.push_back(logits.cpu());
    auto chosen = next_tokens(logits.cpu(), o, seen.cpu(), generator);  // (B)
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const int64_t token = chosen[b].item<int64_t>();
      result.tokens[b].push_back(token);
      if (token == o.seg_token_id && step > 0) result.seg_hidden[b].push_back(hidden[b][hidden.size(1) - 1].clone());  // (D)
      if (on_token && !on_token(b, token)) done[b] = true;
      for (int64_t eos : o.eos_token_id) done[b] = done[b] || token == eos;
      all_done = all_done && done[b];
    }
    if (all_done || step + 1 == o.max_new_tokens) break;
    auto token_ids = chosen.to(device).unsqueeze(1);  // (B, 1)
    seen = torch::cat({seen, token_ids.cpu()}, 1);
    mask = torch::cat({mask, torch::ones({B, 1}, long_opts)}, 1);
    hidden = lm.model->forward(lm.embed(token_ids), &cache, next_position, mask);  // (B, 1, D)
    next_position = next_position + 1;
  }
  return result;
}

}  // namespace m3d::generate
