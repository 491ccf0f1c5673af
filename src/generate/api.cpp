// m3d::Model and m3d::Session (include/m3d/model.h, session.h) over generate::Session:
// one scan encoded once (its prompt prefix cached where the model's prompts allow),
// answers with their box on the scan and their [SEG] mask.
#include "generate/api.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "generate/segment.h"
#include "imaging/dicom_seg.h"
#include "imaging/scan.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "m3d/session.h"
#include "models/lamed.h"
#include "models/registry.h"
#include "text/box.h"

namespace m3d {
namespace {

c10::ScalarType dtype_named(const std::string& name) {
  if (name == "f32") return c10::kFloat;
  if (name == "bf16") return c10::kBFloat16;
  if (name == "f16") fail("dtype f16 runs on a GPU only, and this m3d computes on the CPU: use bf16 or f32");
  fail("unknown dtype '{}' (supported: f32, bf16, f16)", name);
}

text::Tokenizer::Kind tokenizer_named(const std::string& name) {
  if (name == "slow") return text::Tokenizer::Kind::Slow;
  if (name == "fast") return text::Tokenizer::Kind::Fast;
  if (name == "auto" || name.empty()) return text::Tokenizer::Kind::Auto;
  fail("unknown tokenizer kind '{}' (supported: auto, slow, fast)", name);
}

ModelInfo info_of(const std::string& dir, const generate::Session& session) {
  ModelInfo info;
  info.dir = dir;
  info.architecture = session.model.architecture;
  const auto& lm = *session.model.lm;
  info.context_length = lm.model->config().max_position_embeddings;
  auto* multimodal = lm.multimodal();
  info.family = models::model_kind_name(models::architecture_of(session.model.config, dir + "/config.json").kind);
  info.takes_images = multimodal != nullptr;
  info.segments = static_cast<bool>(session.model.seg);
  info.chat_template = !session.chat_template.empty();
  if (multimodal != nullptr) {
    info.image_tokens = multimodal->proj_out_num();
    info.image_grid = multimodal->image_grid();
  }
  return info;
}

}  // namespace

generate::GenerationOptions generation_options_from(const AskOptions& ask, generate::GenerationOptions options) {
  if (ask.max_new_tokens) options.max_new_tokens = *ask.max_new_tokens;
  if (ask.sample) options.do_sample = *ask.sample;
  if (ask.temperature) options.temperature = *ask.temperature;
  if (ask.top_p) options.top_p = *ask.top_p;
  if (ask.top_k) options.top_k = *ask.top_k;
  if (ask.repetition_penalty) options.repetition_penalty = *ask.repetition_penalty;
  options.seed = ask.seed;
  return options;
}

Model Model::open(const std::string& dir, const ModelOptions& options) {
  // Fails on an unknown architecture with the supported list; a contrastive model is
  // known but answers nothing.
  const models::Architecture& arch = models::architecture_of_dir(dir);
  if (arch.kind == models::ModelKind::Clip) {
    fail("{}: {} is {}; it embeds scans and reports but answers no questions: use `m3d embed --model {}`", dir, arch.name, arch.description, dir);
  }
  Model model;
  generate::Session session = generate::session_open(dir, dtype_named(options.dtype), tokenizer_named(options.tokenizer));
  ModelInfo info = info_of(dir, session);
  model.impl_ = std::make_shared<Impl>(Impl{std::move(session), std::move(info)});
  return model;
}

const ModelInfo& Model::info() const { return impl_->info; }

std::string Model::chat_prompt(const std::vector<ChatTurn>& turns) const { return generate::session_chat_prompt(impl_->session, turns); }

std::string Model::token_text(int64_t id) const { return impl_->session.tokenizer.id_to_token(id); }

std::vector<ChatTurn> chat_turns_read(const std::string& path) {
  const nlohmann::json messages = io::json_read_file(path);
  if (!messages.is_array()) fail("{}: expected a JSON array of messages [{{\"role\": ..., \"content\": ...}}, ...]", path);
  std::vector<ChatTurn> turns;
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string()) {
      fail("{}: message {} is not {{\"role\": string, \"content\": string}}: {}", path, i, m.dump().substr(0, 200));
    }
    turns.emplace_back(m["role"].get<std::string>(), m["content"].get<std::string>());
  }
  if (turns.empty()) fail("{}: no messages", path);
  return turns;
}

std::vector<std::string> model_architectures() { return models::model_architectures(); }

struct Session::State {
  Model model;
  std::optional<PreparedScan> scan;
  std::optional<generate::ChatState> chat;  // the scan's cached prefix (models whose prompts allow it)
  generate::TextChatState text_chat;  // a text conversation's cache (Session::chat)
};

Session::Session(Model model) : state_(std::make_unique<State>(State{std::move(model), {}, {}, {}})) {}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const Model& Session::model() const { return state_->model; }
const std::optional<PreparedScan>& Session::scan() const { return state_->scan; }

void Session::set_scan(PreparedScan scan) {
  generate::Session& session = state_->model.impl()->session;
  if (session.model.lm->multimodal() == nullptr) fail("{}: this model takes no image", session.model.architecture);
  state_->chat.reset();
  state_->scan.reset();
  state_->text_chat = {};
  const at::Tensor& input = scan.impl()->input;
  if (generate::session_can_chat(session)) {
    state_->chat = generate::session_chat_start(session, input, session.model.lm->model->config().max_position_embeddings);
  } else {
    session.model.lm->multimodal()->check_image(input);  // the same error now as at the first question
  }
  state_->scan = std::move(scan);
}

void Session::clear_scan() {
  state_->chat.reset();
  state_->scan.reset();
}

namespace {

// The text callback and AskOptions' stop condition as the library's hooks; `stopped`
// records the callback asking to stop.
generate::AnswerHooks hooks_of(const AskOptions& ask, const TextCallback& on_text, bool& stopped) {
  generate::AnswerHooks hooks;
  if (on_text) {
    hooks.on_text = [&](const std::string& piece) {
      if (!stopped && !on_text(piece)) stopped = true;
    };
  }
  hooks.keep_going = [&] { return !stopped && !(ask.should_stop && ask.should_stop()); };
  return hooks;
}

// What every answer carries: text, usage, ids and (asked for) the logits.
Answer answer_of(const generate::SessionAnswer& raw) {
  Answer answer;
  answer.text = raw.text;
  answer.prompt_tokens = raw.prompt_tokens;
  answer.completion_tokens = raw.completion_tokens;
  answer.cached_tokens = raw.cached_tokens;
  answer.finish_reason = raw.finish_reason;
  answer.seg_tokens = raw.seg_count;
  answer.prompt_ids = raw.prompt_ids;
  answer.token_ids = raw.token_ids;
  if (raw.logits.defined()) {
    const at::Tensor logits = raw.logits.to(at::kFloat).contiguous();  // (steps, V)
    answer.vocab_size = logits.size(1);
    answer.logits.assign(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  }
  return answer;
}

}  // namespace

namespace {

// `raw` with its box and mask on `scan`: the mask when the answer has [SEG] states or
// point / box prompts took part (without either, the logits are M3D's empty -inf mask).
Answer answer_on_scan(const generate::SessionAnswer& raw, const PreparedScan& scan, bool spatial) {
  Answer answer = answer_of(raw);
  if (const auto box = text::parse_box(raw.text); box && std::all_of(box->begin(), box->end(), [](double v) { return v >= 0 && v <= 1; })) {
    answer.box = scan.box(*box);
  }
  if (raw.seg_logits.defined() && (raw.seg_count > 0 || spatial)) {
    const at::Tensor mask = (raw.seg_logits > 0).to(at::kByte).reshape({-1}).contiguous();
    answer.mask_voxels = mask.sum().item<int64_t>();
    answer.model_mask.assign(mask.data_ptr<uint8_t>(), mask.data_ptr<uint8_t>() + mask.numel());
    answer.mask = scan.mask_to_scan(answer.model_mask);
  }
  return answer;
}

}  // namespace

Answer Session::ask(const std::string& question, const AskOptions& ask, const TextCallback& on_text) {
  generate::Session& session = state_->model.impl()->session;
  generate::GenerationOptions options = generation_options_from(ask, session.defaults);
  options.output_logits = ask.logits;
  bool stopped = false;  // the text callback said stop
  const generate::AnswerHooks hooks = hooks_of(ask, on_text, stopped);
  const at::Tensor image = state_->scan ? state_->scan->impl()->input : at::Tensor();
  // A mask answer goes through the whole prompt at once, as the official generate
  // (seg_enable) does; a cached prefix serves text answers.
  const bool mask = ask.mask && state_->model.info().segments;
  const generate::SessionAnswer raw = state_->chat && !mask
                                          ? generate::session_chat_answer_full(session, *state_->chat, image, question, options, hooks, ask.mask)
                                          : generate::session_answer_full(session, image, question, options, hooks, ask.mask);
  return state_->scan ? answer_on_scan(raw, *state_->scan, false) : answer_of(raw);
}

Answer Session::segment(const std::string& question, const SpatialPrompts& prompts, const AskOptions& ask, const TextCallback& on_text) {
  generate::Session& session = state_->model.impl()->session;
  const ModelInfo& info = state_->model.info();
  if (!info.segments) fail("{}: {} has no [SEG] segmentation head (config.json segmentation_module): it cannot segment", info.dir, info.architecture);
  if (!state_->scan) fail("{}: Session::segment needs a scan: set_scan first", info.dir);
  const bool spatial = !prompts.points.empty() || prompts.box.has_value();
  if (question.empty() && !spatial) fail("{}: Session::segment needs a question, point / box prompts or both", info.dir);
  const PreparedScan& scan = *state_->scan;
  const models::SegPrompts seg = generate::seg_spatial_prompts(prompts.points, prompts.box, scan.model_size(), generate::SegPromptNames::Fields);
  if (question.empty()) return answer_on_scan(generate::session_segment_prompts(session, scan.impl()->input, seg), scan, true);
  generate::GenerationOptions options = generation_options_from(ask, session.defaults);
  options.output_logits = ask.logits;
  bool stopped = false;
  const generate::AnswerHooks hooks = hooks_of(ask, on_text, stopped);
  // The whole prompt at once, as a mask answer of `ask`.
  return answer_on_scan(generate::session_answer_full(session, scan.impl()->input, question, options, hooks, true, seg), scan, spatial);
}

void mask_write_dicom_seg(const std::string& path, const std::string& series_dir, const RawVolume& mask, const std::string& question,
                          const SpatialPrompts& prompts) {
  imaging::DicomSegOptions options;
  options.label = generate::segment_label(question, !prompts.points.empty() || prompts.box.has_value());
  imaging::dicom_seg_write(path, series_dir, mask, options);
}

Answer Session::chat(const std::vector<ChatTurn>& turns, const AskOptions& ask, const TextCallback& on_text) {
  generate::Session& session = state_->model.impl()->session;
  if (state_->scan) {
    fail("{}: chat turns are for text conversations; with a scan set, ask questions (the model's image prompts use no chat template)",
         session.model.architecture);
  }
  generate::GenerationOptions options = generation_options_from(ask, session.defaults);
  options.output_logits = ask.logits;
  bool stopped = false;
  const generate::AnswerHooks hooks = hooks_of(ask, on_text, stopped);
  return answer_of(generate::session_text_chat(session, state_->text_chat, turns, options, hooks));
}

}  // namespace m3d
