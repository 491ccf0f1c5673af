#include "generate/session.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <limits>

#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "models/gguf_model.h"
#include "text/box.h"
#include "text/chat_template.h"

namespace m3d::generate {
namespace fs = std::filesystem;

namespace {

// Parses the chat template once; a template m3d cannot read leaves the model usable
// for plain prompts, and chat prompts fail with the parse error.
void chat_template_parse(Session& session) {
  if (session.chat_template.empty()) return;
  try {
    session.chat_template_parsed = text::JinjaTemplate::parse(session.chat_template, "chat_template");
  } catch (const Error& e) { session.chat_template_error = e.what(); }
}

// A GGUF file: the model, its tokenizer and stop ids (llama.cpp's end-of-generation set) from
// the metadata; the chat template kept.
Session session_open_gguf(const std::string& path, c10::ScalarType dtype) {
  const io::GgufTokenizer t = io::gguf_tokenizer(io::gguf_read(path));
  Session session{models::model_load_gguf(path, {dtype}), text::Tokenizer::from_gguf(t, path), {}};
  if (auto stop = text::gguf_end_of_generation_ids(t); !stop.empty()) session.defaults.eos_token_id = stop;
  session.chat_template = t.chat_template;
  chat_template_parse(session);
  if (t.bos_token_id) session.bos_token = t.tokens.at(static_cast<size_t>(*t.bos_token_id));
  if (t.eos_token_id) session.eos_token = t.tokens.at(static_cast<size_t>(*t.eos_token_id));
  return session;
}

// tokenizer_config.json's chat_template (a string, or a list of {name, template}: "default")
// and the bos/eos token strings the template sees.
void read_chat_template(const std::string& dir, Session& session) {
  const std::string path = dir + "/tokenizer_config.json";
  if (!fs::exists(path)) return;
  const nlohmann::json config = io::json_read_file(path);
  auto token = [&](const char* key) -> std::string {
    if (!config.contains(key)) return "";
    const nlohmann::json& v = config[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return "";
  };
  session.bos_token = token("bos_token");
  session.eos_token = token("eos_token");
  if (!config.contains("chat_template")) return;
  const nlohmann::json& t = config["chat_template"];
  if (t.is_string()) session.chat_template = t.get<std::string>();
  if (t.is_array()) {
    for (const auto& named : t) {
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") && named["template"].is_string()) {
        session.chat_template = named["template"].get<std::string>();
      }
    }
  }
}

}  // namespace

std::string session_chat_prompt(const Session& session, const std::vector<std::pair<std::string, std::string>>& turns) {
  if (session.chat_template.empty()) {
    fail(
        "{}: the model has no chat template (tokenizer_config.json chat_template, GGUF tokenizer.chat_template), so chat turns cannot be "
        "rendered; a plain prompt needs none (m3d generate --prompt without --chat)",
        session.model.architecture);
  }
  if (!session.chat_template_parsed) fail("{}: the model's chat template does not parse: {}", session.model.architecture, session.chat_template_error);
  text::ChatTemplateInputs inputs;
  inputs.messages = text::chat_messages(turns);
  inputs.bos_token = session.bos_token;
  inputs.eos_token = session.eos_token;
  return text::apply_chat_template(*session.chat_template_parsed, inputs);
}

Session session_open(const std::string& dir, c10::ScalarType dtype, text::Tokenizer::Kind tokenizer) {
  if (models::is_gguf_model(dir)) return session_open_gguf(dir, dtype);
  Session session{models::model_load(dir, dtype), text::Tokenizer::load(dir, tokenizer), {}};
  // A fast tokenizer.json may lack tokens that only the slow tokenizer files list
  // (added_tokens.json), with the specials of special_tokens_map.json; their ids
  // must come out as recorded. The slow tokenizer reads those files itself.
  if (!session.tokenizer.is_slow() && fs::exists(dir + "/added_tokens.json")) {
    std::vector<std::string> specials;
    if (fs::exists(dir + "/special_tokens_map.json")) { specials = io::special_tokens_map_read(dir + "/special_tokens_map.json").additional_special_tokens; }
    std::vector<std::pair<int64_t, std::string>> by_id;
    for (const auto& [token, id] : io::added_tokens_read(dir + "/added_tokens.json")) by_id.emplace_back(id, token);
    std::sort(by_id.begin(), by_id.end());
    for (const auto& [id, token] : by_id) {
      if (session.tokenizer.token_to_id(token) >= 0) continue;
      if (std::find(specials.begin(), specials.end(), token) != specials.end()) {
        session.tokenizer.add_special_tokens({token});
      } else {
        session.tokenizer.add_tokens({token});
      }
      if (session.tokenizer.token_to_id(token) != id) {
        fail("{}/added_tokens.json: '{}' should have id {} but gets {}", dir, token, id, session.tokenizer.token_to_id(token));
      }
    }
  }
  read_chat_template(dir, session);
  chat_template_parse(session);
  const auto& raw = session.model.config.raw;
  const std::string generation_path = dir + "/generation_config.json";
  if (fs::exists(generation_path)) {
    const io::GenerationConfig g = io::generation_config_read(generation_path);
    session.defaults.eos_token_id = g.eos_token_id;
    if (g.max_new_tokens) session.defaults.max_new_tokens = *g.max_new_tokens;
    // Decoding settings HF generate() takes from this file when not passed (Med3DVLM's
    // release inherits Qwen2.5's sampling values, med3dvlm_spec.md §4.7).
    if (g.do_sample) session.defaults.do_sample = *g.do_sample;
    if (g.temperature) session.defaults.temperature = *g.temperature;
    if (g.top_k) session.defaults.top_k = *g.top_k;
    if (g.top_p) session.defaults.top_p = *g.top_p;
    if (g.repetition_penalty) session.defaults.repetition_penalty = *g.repetition_penalty;
  }
  if (session.defaults.eos_token_id.empty() && raw.contains("eos_token_id") && raw["eos_token_id"].is_number_integer()) {
    session.defaults.eos_token_id = {raw["eos_token_id"].get<int64_t>()};
  }
  if (session.model.seg) {
    session.seg_token_id = io::json_int(raw, "seg_token_id", dir + "/config.json").value_or(session.tokenizer.token_to_id("[SEG]"));
    if (session.seg_token_id < 0) {
      fail("{}/config.json: the model has a segmentation_module but no seg_token_id, and the tokenizer has no [SEG] token", dir);
    }
  }
  return session;
}

namespace {

std::string image_placeholders(const Session& session) { return text::image_placeholders(session.model.lm->multimodal()->proj_out_num()); }

// Generates from `embeds` after what `cache` holds: the decoded answer, its token
// count and why it ended; with `seg_hidden`, the final hidden states before each
// [SEG] (GenerationResult::seg_hidden). `keep_going` is asked before each new token.
SessionAnswer answer_from(Session& session, models::KvCache& cache, const at::Tensor& embeds, const GenerationOptions& options, const AnswerHooks& hooks,
                          std::vector<at::Tensor>* seg_hidden = nullptr) {
  std::vector<int64_t> answer;
  std::string shown;
  bool cancelled = false;
  auto emit_growth = [&](const std::string& text) {
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
      hooks.on_text(text.substr(shown.size()));
      shown = text;
    }
  };
  auto stream = [&](int64_t, int64_t token) {
    answer.push_back(token);
    if (hooks.keep_going && !hooks.keep_going()) {
      cancelled = true;
      return false;
    }
    if (hooks.on_text) {
      // Emit only growth of the text. A run of byte-fallback tokens decodes as a
      // whole (valid UTF-8, else U+FFFD per byte), so it waits until the run ends;
      // a trailing U+FFFD may be an incomplete sequence (byte-level BPE) and waits too.
      if (session.tokenizer.is_byte_token(token)) return true;
      std::string text = session.tokenizer.decode(answer, true);
      while (text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0) text.resize(text.size() - 3);
      emit_growth(text);
    }
    return true;
  };
  const int64_t prompt_tokens = cache.length + embeds.size(1);  // the cached prefix and the new prompt, image tokens included
  GenerationOptions o = options;
  if (seg_hidden) o.seg_token_id = session.seg_token_id;
  GenerationResult result = generate_continue(*session.model.lm, cache, embeds, o, {}, {}, stream);
  if (seg_hidden) *seg_hidden = std::move(result.seg_hidden[0]);
  SessionAnswer out;
  out.text = session.tokenizer.decode(answer, true);
  out.token_ids = answer;
  out.cached_tokens = prompt_tokens - embeds.size(1);
  if (options.output_logits) {
    const int64_t vocab = result.last_logits.defined() ? result.last_logits.size(1) : session.model.lm->model->config().vocab_size;
    out.logits = result.logits.empty() ? at::empty({0, vocab}, at::kFloat) : at::stack(result.logits).select(1, 0);  // (steps, V)
  }
  if (hooks.on_text) emit_growth(out.text);
  out.prompt_tokens = prompt_tokens;
  out.completion_tokens = static_cast<int64_t>(answer.size());
  const auto& eos = options.eos_token_id;
  if (cancelled) {
    out.finish_reason = "cancelled";
  } else if (!answer.empty() && std::find(eos.begin(), eos.end(), answer.back()) != eos.end()) {
    out.finish_reason = "stop";
  } else {
    out.finish_reason = "length";
  }
  return out;
}

at::Tensor ids_tensor(const std::vector<int64_t>& ids) { return torch::tensor(ids, torch::kLong).unsqueeze(0); }

// The answer after `embeds`, and with `with_mask` (a model with a [SEG] head and an
// image) its mask logits from the hidden states before each generated [SEG].
// `spatial` (point / box prompts) joins the [SEG] state, or drives the mask alone when the
// answer has none.
SessionAnswer answer_with_mask(Session& session, models::KvCache& cache, const at::Tensor& embeds, const at::Tensor& image, const GenerationOptions& options,
                               const AnswerHooks& hooks, bool with_mask, const models::SegPrompts& spatial = {}) {
  const bool mask = with_mask && session.model.seg && image.defined();
  std::vector<at::Tensor> seg_hidden;
  SessionAnswer out = answer_from(session, cache, embeds, options, hooks, mask ? &seg_hidden : nullptr);
  if (!mask) return out;
  auto& seg = *session.model.seg;
  const auto& weight = seg.seg_projector->fc1->weight;
  const auto input = image.to(weight.device(), torch::kFloat);
  out.seg_count = static_cast<int64_t>(seg_hidden.size());
  const bool has_spatial = spatial.points.defined() || spatial.boxes.defined();
  if (seg_hidden.empty() && has_spatial) {
    out.seg_logits = seg.forward(input, at::Tensor(), spatial).to(torch::kFloat);  // (1, 1, D, H, W)
    return out;
  }
  if (seg_hidden.empty()) {
    // No [SEG]: lamed_phi3.py sets the logits to -inf (an empty mask).
    out.seg_logits = at::full(input.sizes(), -std::numeric_limits<float>::infinity(), input.options());  // (1, 1, D, H, W)
    return out;
  }
  const auto hidden = at::stack(seg_hidden).mean(0, true);  // (1, D_llm): several [SEG] states are averaged before projecting
  out.seg_logits = seg.forward(input, hidden, spatial).to(torch::kFloat);  // (1, 1, D, H, W)
  return out;
}

SessionAnswer answer(Session& session, const at::Tensor& image, const std::string& question, const GenerationOptions& options, const AnswerHooks& hooks,
                     bool with_mask, const models::SegPrompts& spatial = {}) {
  torch::NoGradGuard no_grad;
  auto& lm = *session.model.lm;
  if (image.defined() && lm.multimodal() == nullptr) fail("{}: this model takes no image", session.model.architecture);
  const std::string prompt = image.defined() ? image_placeholders(session) + question : question;
  const std::vector<int64_t> ids = session.tokenizer.encode(prompt);
  const auto embeds = lm.embed(ids_tensor(ids), image);  // (1, L, D)
  const int64_t capacity = std::min(embeds.size(1) + std::max<int64_t>(options.max_new_tokens, 0), lm.model->config().max_position_embeddings);
  auto cache = lm.model->make_cache(1, capacity, embeds.options());
  SessionAnswer out = answer_with_mask(session, cache, embeds, image, options, hooks, with_mask, spatial);
  out.prompt_ids = ids;
  return out;
}

// `cache` with room for `capacity` positions (at most the context), its filled ones kept.
void cache_reserve(models::DecoderModelImpl& model, models::KvCache& cache, int64_t capacity, const at::TensorOptions& options) {
  capacity = std::min(capacity, model.config().max_position_embeddings);
  if (cache.capacity >= capacity) return;
  models::KvCache grown = model.make_cache(1, std::max(capacity, std::min(2 * cache.capacity, model.config().max_position_embeddings)), options);
  for (size_t i = 0; i < cache.k.size(); ++i) {
    grown.k[i].narrow(2, 0, cache.length).copy_(cache.k[i].narrow(2, 0, cache.length));  // (1, kv_heads, length, head_dim)
    grown.v[i].narrow(2, 0, cache.length).copy_(cache.v[i].narrow(2, 0, cache.length));
  }
  grown.length = cache.length;
  cache = std::move(grown);
}

}  // namespace

std::string session_answer(Session& session, const at::Tensor& image, const std::string& question, const GenerationOptions& options,
                           const std::function<void(const std::string&)>& on_text) {
  return answer(session, image, question, options, {on_text, {}}, false).text;
}

SessionAnswer session_answer_seg(Session& session, const at::Tensor& image, const std::string& question, const GenerationOptions& options,
                                 const std::function<void(const std::string&)>& on_text, const models::SegPrompts& spatial) {
  return answer(session, image, question, options, {on_text, {}}, true, spatial);
}

SessionAnswer session_answer_full(Session& session, const at::Tensor& image, const std::string& question, const GenerationOptions& options,
                                  const AnswerHooks& hooks, bool with_mask, const models::SegPrompts& spatial) {
  return answer(session, image, question, options, hooks, with_mask, spatial);
}

SessionAnswer session_segment_prompts(Session& session, const at::Tensor& image, const models::SegPrompts& spatial) {
  torch::NoGradGuard no_grad;
  if (!session.model.seg) fail("{}: the model has no [SEG] segmentation head (config.json segmentation_module)", session.model.architecture);
  auto& seg = *session.model.seg;
  SessionAnswer out;
  out.seg_logits = seg.forward(image.to(seg.seg_projector->fc1->weight.device(), torch::kFloat), at::Tensor(), spatial).to(torch::kFloat);  // (1, 1, D, H, W)
  return out;
}

bool session_can_chat(const Session& session) {
  auto* multimodal = session.model.lm->multimodal();
  if (multimodal == nullptr) return false;
  // Med3DVLM's prompts have no BOS, so the splice replaces the question's first token (med3dvlm_spec.md §4.5).
  return static_cast<int64_t>(session.tokenizer.encode(image_placeholders(session)).size()) > multimodal->proj_out_num();
}

ChatState session_chat_start(Session& session, const at::Tensor& image, int64_t capacity) {
  torch::NoGradGuard no_grad;
  auto& lm = *session.model.lm;
  if (lm.multimodal() == nullptr) fail("{}: this model takes no image", session.model.architecture);
  if (!session_can_chat(session)) {
    fail(
        "{}: chat needs a token before the image tokens to cache the image prefix; this model's prompts have none "
        "(its image splice drops the question's first token): use m3d generate",
        session.model.architecture);
  }
  ChatState chat;
  chat.prefix_ids = session.tokenizer.encode(image_placeholders(session));  // BOS + image tokens
  const auto embeds = lm.embed(ids_tensor(chat.prefix_ids), image);
  chat.cache = lm.model->make_cache(1, std::min(capacity, lm.model->config().max_position_embeddings), embeds.options());
  lm.model->forward(embeds, &chat.cache);
  return chat;
}

SessionAnswer session_chat_answer_full(Session& session, ChatState& chat, const at::Tensor& image, const std::string& question,
                                       const GenerationOptions& options, const AnswerHooks& hooks, bool with_mask) {
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> ids = session.tokenizer.encode(image_placeholders(session) + question);
  const size_t n = chat.prefix_ids.size();
  if (ids.size() <= n || !std::equal(chat.prefix_ids.begin(), chat.prefix_ids.end(), ids.begin())) {
    fail("chat: the question must add tokens after the image prompt");
  }
  chat.cache.length = static_cast<int64_t>(n);  // forget the previous question and answer
  const auto embeds = session.model.lm->embed(ids_tensor({ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end()}));
  SessionAnswer out = answer_with_mask(session, chat.cache, embeds, image, options, hooks, with_mask);
  out.prompt_ids = ids;
  return out;
}

SessionAnswer session_text_chat(Session& session, TextChatState& chat, const std::vector<std::pair<std::string, std::string>>& turns,
                                const GenerationOptions& options, const AnswerHooks& hooks) {
  torch::NoGradGuard no_grad;
  auto& lm = *session.model.lm;
  const std::vector<int64_t> ids = session.tokenizer.encode(session_chat_prompt(session, turns));
  if (ids.empty()) fail("{}: the chat template rendered an empty prompt", session.model.architecture);
  // Reuse the cached positions up to the first id that differs; at least one is fed anew.
  const size_t limit = std::min({chat.ids.size(), ids.size() - 1, static_cast<size_t>(chat.cache.length)});
  const size_t common = static_cast<size_t>(std::mismatch(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(limit), chat.ids.begin()).first - ids.begin());
  const auto embeds = lm.embed(ids_tensor({ids.begin() + static_cast<std::ptrdiff_t>(common), ids.end()}));  // (1, L, D)
  chat.cache.length = static_cast<int64_t>(common);
  chat.ids.clear();  // (a failure below leaves an empty, consistent state)
  cache_reserve(*lm.model, chat.cache, static_cast<int64_t>(ids.size()) + std::max<int64_t>(options.max_new_tokens, 0), embeds.options());
  SessionAnswer out = answer_from(session, chat.cache, embeds, options, hooks);
  out.prompt_ids = ids;
  chat.ids = ids;
  chat.ids.insert(chat.ids.end(), out.token_ids.begin(), out.token_ids.end());
  chat.ids.resize(static_cast<size_t>(chat.cache.length));  // the last token chosen was never fed
  return out;
}

std::string session_chat_answer(Session& session, ChatState& chat, const std::string& question, const GenerationOptions& options,
                                const std::function<void(const std::string&)>& on_text) {
  return session_chat_answer_full(session, chat, {}, question, options, {on_text, {}}, false).text;
}

}  // namespace m3d::generate
