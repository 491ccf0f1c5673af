// POST /v1/embeddings, OpenAI-compatible, for a contrastive model (M3D-CLIP,
// DCFormer_SigLIP): "input" is a report or a list of them, where an entry
// m3d://studies/<id> (the chat endpoint's image URL) stands for an uploaded study.
// Every vector equals `m3d embed`'s for the same scan and text (the study prepared
// with the checkpoint's recipe "auto"); one request computes at a time, as chat does.
#include "m3d/error.h"
#include "serve_api.h"

namespace m3d::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::string kStudyPrefix = "m3d://studies/";

// One entry of "input": a report, or the study an m3d://studies/<id> names.
struct EmbedInput {
  std::string text, study;
};

std::vector<EmbedInput> parse_inputs(const json& body, const ServeContext& ctx) {
  const std::optional<json> input = field(body, "input");
  if (!input || !(input->is_string() || input->is_array())) {
    throw ApiError(400, "'input' must be a string or an array of strings (reports, or m3d://studies/<id> for an uploaded study)");
  }
  const json entries = input->is_string() ? json::array({*input}) : *input;
  if (entries.empty()) throw ApiError(400, "'input' is an empty array: give at least one report or study");
  if (static_cast<int64_t>(entries.size()) > ctx.options.max_inputs) {
    throw ApiError(413, fmt::format("'input' has {} entries; the server's --max-inputs is {}: split the request", entries.size(), ctx.options.max_inputs));
  }
  std::vector<EmbedInput> out;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!entries[i].is_string()) throw ApiError(400, fmt::format("input[{}]: expected a string (token-id arrays are not accepted)", i));
    const std::string entry = entries[i].get<std::string>();
    if (entry.empty()) throw ApiError(400, fmt::format("input[{}]: empty string", i));
    if (entry.rfind(kStudyPrefix, 0) != 0) {
      out.push_back({entry, ""});
      continue;
    }
    const std::string id = entry.substr(kStudyPrefix.size());
    if (!study_id_valid(id)) throw ApiError(400, fmt::format("input[{}]: expected m3d://studies/<id> with the id POST /v1/studies returned", i));
    if (!ctx.store.get(id)) throw ApiError(404, fmt::format("input[{}]: no study '{}'", i, id));
    out.push_back({"", id});
  }
  return out;
}

void check_options(const json& body, const EmbedderInfo& info) {
  if (const auto format = field(body, "encoding_format"); format && *format != "float") {
    throw ApiError(400, "'encoding_format' must be \"float\" (base64 is not supported)");
  }
  if (const auto dimensions = field(body, "dimensions"); dimensions && *dimensions != info.dim) {
    throw ApiError(400, fmt::format("'dimensions' must be {} (this model's embedding length) or absent", info.dim));
  }
}

void embeddings(ServeContext& ctx, const httplib::Request& req, httplib::Response& res) {
  const auto start = Clock::now();
  if (!ctx.embedder) {
    throw ApiError(501, fmt::format("model '{}' ({}) is generative: POST /v1/embeddings needs a contrastive model (M3D-CLIP, DCFormer_SigLIP); start "
                                    "`m3d serve --model` with one",
                                    ctx.model_id, ctx.model->info().architecture));
  }
  const Embedder& embedder = *ctx.embedder;
  const json body = request_body(req.body, ctx);
  check_options(body, embedder.info());
  const std::vector<EmbedInput> inputs = parse_inputs(body, ctx);
  const auto slot = ctx.slot.acquire(start + std::chrono::seconds(ctx.options.timeout_s));
  json data = json::array();
  int64_t tokens = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Embedding embedding;
    try {
      if (inputs[i].study.empty()) {
        embedding = embedder.embed_text(inputs[i].text);
      } else {
        const std::optional<PreparedScan> scan = ctx.store.scan(inputs[i].study);
        if (!scan) throw ApiError(404, fmt::format("input[{}]: no study '{}'", i, inputs[i].study));  // deleted meanwhile
        embedding = embedder.embed_scan(*scan);
      }
    } catch (const Error& e) { throw ApiError(400, fmt::format("input[{}]: {}", i, e.what())); }
    tokens += embedding.tokens;
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding.values)}});
  }
  ctx.metrics.add_embeddings(static_cast<int64_t>(inputs.size()));
  send_json(res, 200,
            {{"object", "list"}, {"data", std::move(data)}, {"model", ctx.model_id}, {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
}

}  // namespace

void serve_add_embeddings(httplib::Server& server, ServeContext& ctx) {
  server.Post("/v1/embeddings", guarded([&ctx](const httplib::Request& req, httplib::Response& res) { embeddings(ctx, req, res); }));
}

}  // namespace m3d::cli
