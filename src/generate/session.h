// A loaded model with its tokenizer and generation defaults, answering a prompt
// (optionally about a volume) the way the official demo does: LaMed prompts are
// "<im_patch>" x proj_out_num + question, no chat template (m3d_lamed_spec.md §5.2).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "generate/generate.h"
#include "models/causal_lm.h"
#include "text/jinja.h"
#include "text/tokenizer.h"

namespace m3d::generate {

struct Session {
  models::LoadedModel model;
  text::Tokenizer tokenizer;
  GenerationOptions defaults;  // from generation_config.json / config.json
  int64_t seg_token_id = -1;  // [SEG] (config.json seg_token_id, else the tokenizer's) when the model has a seg module
  std::string chat_template;  // the model's Jinja chat template ("" when it has none)
  std::string bos_token, eos_token;  // as the template sees them
  // The template parsed once at open (session_chat_template_parse); unset with its
  // parse error kept when it does not parse, so models with a template m3d cannot
  // read still answer plain prompts.
  std::optional<text::JinjaTemplate> chat_template_parsed;
  std::string chat_template_error;
};

// Loads DIR's weights (in `dtype`), its tokenizer (Tokenizer::load; a fast one also
// gets the added_tokens.json entries tokenizer.json lacks) and stop ids. Throws
// naming the missing file. DIR may be a .gguf file: weights, tokenizer, stop id and
// chat template come from it (models/gguf_model.h).
Session session_open(const std::string& dir, c10::ScalarType dtype = c10::kFloat, text::Tokenizer::Kind tokenizer = text::Tokenizer::Kind::Auto);

// The answer text (special tokens skipped). `image` is (1, 1, D, H, W) or undefined;
// `on_text` receives the answer as it grows, one piece per token.
std::string session_answer(Session& session, const at::Tensor& image, const std::string& question, const GenerationOptions& options,
                           const std::function<void(const std::string&)>& on_text = {});

// The answer and, when the model has a [SEG] head (model.seg) and an image is given,
// LaMed's mask logits for it: (1, 1, D, H, W) float32 in model space, from the mean of
// the hidden states before each generated [SEG] (seg_projector + SegVol); all -inf
// (an empty mask) when the answer has no [SEG] (lamed_phi3.py generate, seg_enable).
struct SessionAnswer {
  std::string text;
  std::vector<int64_t> prompt_ids;  // the prompt's token ids (image placeholders and a cached prefix included)
  std::vector<int64_t> token_ids;  // the generated ids, a stop token included
  int64_t cached_tokens = 0;  // prompt positions whose keys and values came from the cache
  at::Tensor logits;  // with GenerationOptions::output_logits: (steps, V) fp32, the logits each token was chosen from
  at::Tensor seg_logits;  // undefined without a seg module or an image
  int64_t seg_count = 0;  // [SEG] hidden states that went into the mask
  int64_t prompt_tokens = 0;  // positions before the answer (image tokens and a cached prefix included)
  int64_t completion_tokens = 0;  // tokens generated, a stop token included
  std::string finish_reason;  // "stop" (a stop token), "length" (max_new_tokens or the context) or "cancelled"
};

// Streaming and cancellation: `on_text` receives the answer as it grows; generation
// stops after the current token when `keep_going` returns false (a client gone).
struct AnswerHooks {
  std::function<void(const std::string&)> on_text;
  std::function<bool()> keep_going;
};
// `spatial`: SegVol point / box prompts in model voxels (models::SegPrompts, text unused), joined
// to the [SEG] state as SegVol's forward_decoder joins text, points and boxes; with no [SEG]
// in the answer they alone make the mask (instead of an empty one).
SessionAnswer session_answer_seg(Session& session, const at::Tensor& image, const std::string& question, const GenerationOptions& options,
                                 const std::function<void(const std::string&)>& on_text = {}, const models::SegPrompts& spatial = {});

// The same with usage counts, cancellation and, with `with_mask`, the [SEG] mask (joined by
// `spatial` as in session_answer_seg).
SessionAnswer session_answer_full(Session& session, const at::Tensor& image, const std::string& question, const GenerationOptions& options,
                                  const AnswerHooks& hooks, bool with_mask, const models::SegPrompts& spatial = {});

// The mask logits of SegVol's point / box prompts alone (no LLM, no text): (1, 1, D, H, W)
// float32 in seg_logits, nothing generated. Throws when the model has no [SEG] head.
SessionAnswer session_segment_prompts(Session& session, const at::Tensor& image, const models::SegPrompts& spatial);

// `m3d chat`: the volume is encoded once; its prompt prefix (BOS + image tokens)
// stays in the KV cache and each question continues from it, independently of
// earlier questions, exactly as if asked alone.
struct ChatState {
  models::KvCache cache;
  std::vector<int64_t> prefix_ids;
};

ChatState session_chat_start(Session& session, const at::Tensor& image, int64_t capacity);
std::string session_chat_answer(Session& session, ChatState& chat, const std::string& question, const GenerationOptions& options,
                                const std::function<void(const std::string&)>& on_text = {});
// The same with usage counts, cancellation and, with `with_mask` (and `image`, the
// volume the chat started from), the [SEG] mask.
SessionAnswer session_chat_answer_full(Session& session, ChatState& chat, const at::Tensor& image, const std::string& question,
                                       const GenerationOptions& options, const AnswerHooks& hooks, bool with_mask);
// The chat template rendered for (role, content) turns with the generation prompt
// (text/chat_template.h); throws when the model has no template.
std::string session_chat_prompt(const Session& session, const std::vector<std::pair<std::string, std::string>>& turns);

// A text conversation: its KV cache and the ids whose keys and values it holds (the
// last rendering and the answer to it, less the final token, which was never fed).
struct TextChatState {
  models::KvCache cache;
  std::vector<int64_t> ids;
};

// The conversation `turns` rendered with the chat template (session_chat_prompt) and
// answered. The cache's positions are reused as far as their ids agree with the new
// rendering's (a conversation that grows by turns re-reads only its new tokens:
// re-tokenized answer text may differ from the ids generated); the rest is fed anew, so
// the answer equals that of a fresh state. The cache grows as needed up to the context.
SessionAnswer session_text_chat(Session& session, TextChatState& chat, const std::vector<std::pair<std::string, std::string>>& turns,
                                const GenerationOptions& options, const AnswerHooks& hooks);

// Whether the model's prompts let the image prefix be cached (LaMed: BOS first;
// Med3DVLM: no BOS, each question is answered from scratch).
bool session_can_chat(const Session& session);

}  // namespace m3d::generate
