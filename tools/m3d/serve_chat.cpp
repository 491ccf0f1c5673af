// POST /v1/chat/completions, OpenAI-compatible: the last user message's text is the
// question, an image part with url m3d://studies/<id> (in it or an earlier message)
// the study. Each question is answered as `m3d generate` answers it alone (M3D's
// models are single-turn: earlier turns are not context). One generation runs at a
// time; each study keeps a Session whose encoded scan prefix later questions reuse.
// "stream": true answers as server-sent events; a client that goes away cancels.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <iterator>
#include <optional>

#include "answer.h"
#include "m3d/error.h"
#include "serve_api.h"

namespace m3d::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct ChatRequest {
  std::string question, study;  // study empty: a text-only question
  AskOptions ask;
  bool stream = false;
  bool segment = false;  // POST /v1/segment: Session::segment with `prompts` (the question may be empty)
  SpatialPrompts prompts;
};

// One request's generation: what it asks, and the slot it holds while it runs.
struct Generation {
  Generation(ServeContext& c, ChatRequest r) : ctx(c), request(std::move(r)) {}
  ServeContext& ctx;
  ChatRequest request;
  std::string id = "chatcmpl-" + random_hex(24);
  int64_t created = static_cast<int64_t>(std::time(nullptr));
  Clock::time_point deadline;
  std::unique_lock<std::timed_mutex> slot;
  bool timed_out = false;
};

double number_in(const json& body, const char* name, double low, double high) {
  const json value = *field(body, name);
  if (!value.is_number() || value.get<double>() < low || value.get<double>() > high) {
    throw ApiError(400, fmt::format("'{}' must be a number from {} to {}", name, low, high));
  }
  return value.get<double>();
}

// The study an image part names: m3d://studies/<id>.
std::string study_of_part(const json& part, const std::string& where) {
  const json image = part.value("image_url", json());
  const json url = image.is_string() ? image : image.is_object() ? image.value("url", json()) : json();
  const std::string prefix = "m3d://studies/";
  if (!url.is_string() || url.get<std::string>().rfind(prefix, 0) != 0 || !study_id_valid(url.get<std::string>().substr(prefix.size()))) {
    throw ApiError(400, where +
                            ".image_url.url: expected m3d://studies/<id> with the id POST /v1/studies returned "
                            "(data: and http(s): images are not accepted)");
  }
  return url.get<std::string>().substr(prefix.size());
}

// A message's text (its text parts joined by newlines) and the study it shows, if any.
std::pair<std::string, std::string> message_content(const json& message, const std::string& where) {
  const json content = message.value("content", json());
  if (content.is_null()) return {};
  if (content.is_string()) return {content.get<std::string>(), ""};
  if (!content.is_array()) throw ApiError(400, where + ".content: expected a string or an array of parts");
  std::string text, study;
  for (size_t j = 0; j < content.size(); ++j) {
    const std::string part_where = fmt::format("{}.content[{}]", where, j);
    const json& part = content[j];
    const std::string type = part.is_object() && part.value("type", json()).is_string() ? part["type"].get<std::string>() : "";
    if (type == "text" && part.value("text", json()).is_string()) {
      text += (text.empty() ? "" : "\n") + part["text"].get<std::string>();
    } else if (type == "image_url") {
      const std::string id = study_of_part(part, part_where);
      if (!study.empty() && id != study) throw ApiError(400, where + ": one study per message (several image_url parts name different studies)");
      study = id;
    } else {
      throw ApiError(400, part_where + ": expected {\"type\": \"text\", \"text\": ...} or {\"type\": \"image_url\", \"image_url\": {\"url\": ...}}");
    }
  }
  return {text, study};
}

// The question and the study: the last user message's text, and the image of that
// message or, failing that, of the latest earlier message with one.
void parse_messages(const json& body, ChatRequest& request) {
  const std::optional<json> messages = field(body, "messages");
  if (!messages || !messages->is_array() || messages->empty()) throw ApiError(400, "'messages' must be a non-empty array");
  std::optional<size_t> last_user;
  std::vector<std::pair<std::string, std::string>> contents;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!message.is_object() || !message.value("role", json()).is_string()) throw ApiError(400, where + ": expected an object with a 'role'");
    contents.push_back(message_content(message, where));
    if (message["role"] == "user") last_user = i;
  }
  if (!last_user) throw ApiError(400, "'messages' has no message with role 'user'");
  request.question = contents[*last_user].first;
  if (request.question.empty()) throw ApiError(400, fmt::format("messages[{}]: the user message has no text (the question)", *last_user));
  for (size_t i = *last_user + 1; i-- > 0 && request.study.empty();) request.study = contents[i].second;
}

// Decoding settings, OpenAI's way: temperature 0 or absent (and no top_p) is greedy,
// what `m3d generate --greedy` does; temperature > 0 or top_p samples (an absent one
// keeps the model's generation_config.json value).
void parse_sampling(const json& body, const ServeContext& ctx, ChatRequest& request) {
  AskOptions& ask = request.ask;
  const char* tokens_name = field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (const auto tokens = field(body, tokens_name)) {
    const int64_t limit = ctx.options.max_new_tokens_limit;
    if (!tokens->is_number_integer() || tokens->get<int64_t>() < 1 || tokens->get<int64_t>() > limit) {
      throw ApiError(400, fmt::format("'{}' must be an integer from 1 to {} (the server's --max-new-tokens-limit)", tokens_name, limit));
    }
    ask.max_new_tokens = tokens->get<int64_t>();
  }
  const std::optional<double> temperature = field(body, "temperature") ? std::optional(number_in(body, "temperature", 0, 2)) : std::nullopt;
  const std::optional<double> top_p = field(body, "top_p") ? std::optional(number_in(body, "top_p", 0, 1)) : std::nullopt;
  ask.sample = temperature ? *temperature > 0 : top_p.has_value();
  if (*ask.sample) {
    if (temperature) ask.temperature = *temperature;
    if (top_p) ask.top_p = *top_p;
  }
  if (const auto seed = field(body, "seed")) {
    if (!seed->is_number_integer() || seed->get<int64_t>() < 0) throw ApiError(400, "'seed' must be a non-negative integer");
    ask.seed = seed->get<uint64_t>();
  }
  ask.mask = false;  // masks come with POST /v1/segment
}

ChatRequest parse_chat(const std::string& text, const ServeContext& ctx) {
  const Model& model = generative_model(ctx);
  const json body = request_body(text, ctx);
  ChatRequest request;
  if (const auto n = field(body, "n"); n && *n != 1) throw ApiError(400, "'n' must be 1 (one answer per request)");
  if (const auto stream = field(body, "stream")) {
    if (!stream->is_boolean()) throw ApiError(400, "'stream' must be true or false");
    request.stream = stream->get<bool>();
  }
  parse_messages(body, request);
  parse_sampling(body, ctx, request);
  if (!request.study.empty()) {
    if (!model.info().takes_images) throw ApiError(400, fmt::format("model '{}' takes no image: send text only", ctx.model_id));
    if (!ctx.store.get(request.study)) throw ApiError(404, "no study '" + request.study + "'");
  }
  return request;
}

// The study's Session, its scan encoded once; used only while holding the slot.
std::shared_ptr<Session> session_for(ServeContext& ctx, const std::string& study) {
  if (auto cached = ctx.sessions.get(study)) return *cached;
  auto session = std::make_shared<Session>(generative_model(ctx));
  if (!study.empty()) {
    const std::optional<PreparedScan> scan = ctx.store.scan(study);
    if (!scan) throw ApiError(404, "no study '" + study + "'");
    session->set_scan(*scan);
  }
  ctx.sessions.put(study, session);
  return session;
}

// Runs the generation (the slot held). `on_piece` gets the text as it grows;
// `stop_check`, asked before each new token, may stop it (a client gone); so does
// the deadline.
Answer generate(Generation& g, const TextCallback& on_piece, const std::function<bool()>& stop_check = {}) {
  struct Active {
    std::atomic<int>& count;
    explicit Active(std::atomic<int>& c) : count(c) { ++count; }
    ~Active() { --count; }
  } active(g.ctx.metrics.active_generations);
  try {
    const std::shared_ptr<Session> session = session_for(g.ctx, g.request.study);
    AskOptions ask = g.request.ask;
    ask.should_stop = [&] {
      g.timed_out = g.timed_out || Clock::now() > g.deadline;
      return g.timed_out || (stop_check && stop_check());
    };
    Answer answer =
        g.request.segment ? session->segment(g.request.question, g.request.prompts, ask, on_piece) : session->ask(g.request.question, ask, on_piece);
    g.ctx.metrics.add_tokens(answer.completion_tokens);
    return answer;
  } catch (const Error& e) {  // the library refusing this question (too long for the context, ...)
    throw ApiError(400, e.what());
  }
}

json extras(const Generation& g, const Answer& answer) {
  json out = answer_json(answer);
  out["study"] = g.request.study.empty() ? json(nullptr) : json(g.request.study);
  return out;
}

json usage(const Answer& answer) {
  return {{"prompt_tokens", answer.prompt_tokens},
          {"completion_tokens", answer.completion_tokens},
          {"total_tokens", answer.prompt_tokens + answer.completion_tokens}};
}

json completion(const Generation& g, const Answer& answer) {
  const json choice = {{"index", 0}, {"message", {{"role", "assistant"}, {"content", answer.text}}}, {"finish_reason", answer.finish_reason}};
  return {{"id", g.id},
          {"object", "chat.completion"},
          {"created", g.created},
          {"model", g.ctx.model_id},
          {"choices", json::array({choice})},
          {"usage", usage(answer)},
          {"m3d", extras(g, answer)}};
}

json chunk(const Generation& g, json delta, json finish_reason) {
  const json choice = {{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish_reason)}};
  return {{"id", g.id}, {"object", "chat.completion.chunk"}, {"created", g.created}, {"model", g.ctx.model_id}, {"choices", json::array({choice})}};
}

ApiError timeout_error(const ServeContext& ctx) {
  return ApiError(408, fmt::format("the answer took longer than the server's --timeout-s {}", ctx.options.timeout_s));
}

// The whole answer as server-sent events: a role chunk, one chunk per piece, a final
// chunk with finish_reason, usage and the m3d extras, then [DONE]; an error after the
// headers went out is an event {"error": ...}. A token that adds no text yet (a run
// of byte tokens decodes at its end) sends an SSE comment line instead, so a client
// that hung up is noticed within a few tokens. False when the client is gone.
bool stream_answer(Generation& g, httplib::DataSink& sink) {
  bool alive = true, wrote = true;
  const auto send = [&](const std::string& data) {
    wrote = true;
    return alive = alive && sink.write(data.data(), data.size());
  };
  const auto event = [&](const json& body) { return send("data: " + json_text(body) + "\n\n"); };
  const auto client_gone = [&] {
    if (!wrote) send(":\n\n");
    wrote = false;
    return !alive;
  };
  event(chunk(g, {{"role", "assistant"}, {"content", ""}}, nullptr));
  std::optional<Answer> answer;
  httplib::Response failed;
  try {
    answer = generate(
        g,
        [&](const std::string& piece) {
          return event(chunk(g, {{"content", piece}}, nullptr));
        },
        client_gone);
    if (g.timed_out) throw timeout_error(g.ctx);
  } catch (...) { send_current_exception(failed); }
  g.slot.unlock();
  if (!alive) {
    spdlog::info("chat {}: the client went away; generation stopped", g.id);
    return false;
  }
  if (!failed.body.empty()) {
    send("data: " + failed.body + "\n");  // the body ends with its own newline
  } else {
    json last = chunk(g, json::object(), answer->finish_reason);
    last["usage"] = usage(*answer);
    last["m3d"] = extras(g, *answer);
    event(last);
  }
  send("data: [DONE]\n\n");
  if (alive) sink.done();
  return alive;
}

void chat_completions(ServeContext& ctx, const httplib::Request& req, httplib::Response& res) {
  const auto start = Clock::now();
  auto g = std::make_shared<Generation>(ctx, parse_chat(req.body, ctx));
  g->deadline = start + std::chrono::seconds(ctx.options.timeout_s);
  g->slot = ctx.slot.acquire(g->deadline);
  if (!g->request.stream) {
    const Answer answer = generate(*g, {});
    if (g->timed_out) throw timeout_error(ctx);
    send_json(res, 200, completion(*g, answer));
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // proxies: pass events on as they come
  res.set_chunked_content_provider("text/event-stream", [g](size_t, httplib::DataSink& sink) { return stream_answer(*g, sink); });
}

// `value` as n numbers, low <= n <= high; ApiError 400 naming `what` and the `form` expected.
std::vector<double> numbers_of(const json& value, size_t low, size_t high, const std::string& what, const char* form) {
  if (!value.is_array() || value.size() < low || value.size() > high || !std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_number(); })) {
    throw ApiError(400, fmt::format("{} must be {} in model voxels, got {}", what, form, json_text(value).substr(0, 100)));
  }
  return value.get<std::vector<double>>();
}

// SegVol's "box" [d1, h1, w1, d2, h2, w2] and "points" [[d, h, w, label?], ...] (model voxels,
// as `m3d segment --box / --point`); the library checks them against the model grid.
SpatialPrompts parse_spatial(const json& body) {
  SpatialPrompts prompts;
  if (const auto box = field(body, "box")) {
    const auto v = numbers_of(*box, 6, 6, "'box'", "[d1, h1, w1, d2, h2, w2] (the min corner, then the max corner)");
    prompts.box.emplace();
    std::copy(v.begin(), v.end(), prompts.box->corners.begin());
  }
  if (const auto points = field(body, "points")) {
    if (!points->is_array() || points->empty()) throw ApiError(400, "'points' must be a non-empty array of points [d, h, w] or [d, h, w, label]");
    for (size_t i = 0; i < points->size(); ++i) {
      const std::string what = fmt::format("'points'[{}]", i);
      const auto v = numbers_of((*points)[i], 3, 4, what, "[d, h, w] or [d, h, w, label] (label 1 positive, 0 negative)");
      SegPoint& point = prompts.points.emplace_back();
      std::copy(v.begin(), v.begin() + 3, point.dhw.begin());
      if (v.size() == 4 && v[3] != 0 && v[3] != 1) throw ApiError(400, fmt::format("{}: label {} is not 1 (positive) or 0 (negative)", what, v[3]));
      if (v.size() == 4) point.label = static_cast<int64_t>(v[3]);
    }
  }
  return prompts;
}

// POST /v1/segment {"study": id, "prompt": "Can you segment the liver?", "box": [...],
// "points": [[...], ...], sampling as chat}: the model answers the prompt; the hidden states
// before its [SEG] tokens and the box / point prompts (either may be absent) make the mask,
// which is saved on the study's own grid (the recipe's way back) beside the study as a
// NIfTI or, with "format": "dicom-seg" on a DICOM study, a DICOM-SEG of its series. The
// reply is the answer's JSON (as chat's "m3d" extras) with the mask's URL, or "mask": null
// when the answer has no [SEG] and no box / point was given.
void segment(ServeContext& ctx, const httplib::Request& req, httplib::Response& res) {
  const auto start = Clock::now();
  const Model& model = generative_model(ctx);
  const json body = request_body(req.body, ctx);
  if (!model.info().segments) { throw ApiError(400, fmt::format("model '{}' has no [SEG] segmentation head (config.json segmentation_module)", ctx.model_id)); }
  ChatRequest request;
  const auto study = field(body, "study");
  if (!study || !study->is_string() || !study_id_valid(study->get<std::string>())) { throw ApiError(400, "'study' must be the id POST /v1/studies returned"); }
  request.study = study->get<std::string>();
  const std::optional<json> meta = ctx.store.get(request.study);
  if (!meta) throw ApiError(404, "no study '" + request.study + "'");
  const json format = field(body, "format").value_or(json("nifti"));
  if (format != "nifti" && format != "dicom-seg") throw ApiError(400, "'format' must be \"nifti\" (the default) or \"dicom-seg\"");
  const bool dicom_seg = format == "dicom-seg";
  if (dicom_seg && meta->value("format", "") != "dicom") {
    throw ApiError(400,
                   fmt::format("'format' \"dicom-seg\" needs a DICOM study (a zipped series); study '{}' is {}", request.study, meta->value("format", "")));
  }
  request.prompts = parse_spatial(body);
  const bool spatial = request.prompts.box || !request.prompts.points.empty();
  const auto prompt = field(body, "prompt");
  if ((prompt || !spatial) && (!prompt || !prompt->is_string() || prompt->get<std::string>().empty())) {
    throw ApiError(400, "'prompt' must be a non-empty string, e.g. \"Can you segment the liver?\" (or give only 'box' / 'points')");
  }
  if (prompt) request.question = prompt->get<std::string>();
  parse_sampling(body, ctx, request);
  request.ask.mask = true;
  request.segment = true;
  Generation g(ctx, std::move(request));
  g.id = "seg-" + random_hex(24);
  g.deadline = start + std::chrono::seconds(ctx.options.timeout_s);
  g.slot = ctx.slot.acquire(g.deadline);
  const Answer answer = generate(g, {});
  g.slot.unlock();
  if (g.timed_out) throw timeout_error(ctx);
  json out = {{"id", g.id},
              {"object", "segmentation"},
              {"created", g.created},
              {"model", ctx.model_id},
              {"study", g.request.study},
              {"usage", usage(answer)},
              {"m3d", extras(g, answer)},
              {"mask", nullptr}};
  if (answer.mask) {
    const std::string mask_id = ctx.store.mask_save(g.request.study, *answer.mask,
                                                    dicom_seg ? std::optional(StudyStore::DicomSegLabel{g.request.question, g.request.prompts}) : std::nullopt);
    const auto& size = answer.mask->size;
    const int64_t on_scan = std::count_if(answer.mask->data.begin(), answer.mask->data.end(), [](uint8_t v) { return v != 0; });
    out["mask"] = {{"id", mask_id},
                   {"url", "/v1/studies/" + g.request.study + "/masks/" + mask_id + (dicom_seg ? ".dcm" : ".nii.gz")},
                   {"format", format},
                   {"size_ijk", {size[0], size[1], size[2]}},
                   {"scan_voxels", on_scan},
                   {"seg_tokens", answer.seg_tokens},
                   {"model_voxels", answer.mask_voxels}};
  }
  send_json(res, 200, out);
}

}  // namespace

void serve_add_chat(httplib::Server& server, ServeContext& ctx) {
  server.Post("/v1/chat/completions", guarded([&ctx](const httplib::Request& req, httplib::Response& res) { chat_completions(ctx, req, res); }));
  server.Post("/v1/segment", guarded([&ctx](const httplib::Request& req, httplib::Response& res) { segment(ctx, req, res); }));
  server.Get(R"(/v1/studies/([^/]+)/masks/([^/.]+)(\.nii\.gz|\.dcm))", guarded([&ctx](const httplib::Request& req, httplib::Response& res) {
               const std::optional<std::string> path = ctx.store.mask_path(req.matches[1], req.matches[2], req.matches[3]);
               if (!path) throw ApiError(404, fmt::format("no mask '{}' of study '{}'", req.matches[2].str(), req.matches[1].str()));
               std::ifstream in(*path, std::ios::binary);
               std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
               if (!in.good() && !in.eof()) throw ApiError(500, "cannot read " + *path);
               res.set_content(bytes, req.matches[3] == ".dcm" ? "application/dicom" : "application/gzip");
             }));
}

}  // namespace m3d::cli
