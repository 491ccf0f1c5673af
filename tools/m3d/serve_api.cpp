// m3d serve's shared routes: API-key check, one log line per request, JSON errors,
// /health, /metrics, /v1/models, /v1/studies, and 501 for what is not built yet.
#include "serve_api.h"

#include <spdlog/spdlog.h>

#include <array>
#include <filesystem>
#include <set>

namespace m3d::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Upper bounds (seconds) of m3d_request_seconds' buckets; +Inf is implied.
constexpr std::array<double, 15> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

thread_local Clock::time_point request_start;  // httplib runs a request's routing and logger on one thread

const char* error_type(int status) {
  switch (status) {
    case 400:
    case 413:
    case 415:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 408:
      return "timeout_error";
    case 429:
      return "rate_limit_error";
    case 501:
      return "not_implemented_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

// The route a path belongs to, so metric labels stay few whatever clients send.
std::string route_label(const std::string& path) {
  static const std::set<std::string> routes = {"/health",     "/metrics",       "/v1/models",        "/v1/studies", "/v1/chat/completions",
                                               "/v1/segment", "/v1/embeddings", "/v1/studies/import"};
  if (routes.count(path)) return path;
  if (path.rfind("/v1/studies/", 0) == 0) return "/v1/studies/{id}";
  return "other";
}

// Compares in time that depends on the expected key's length only.
bool same_secret(const std::string& given, const std::string& expected) {
  volatile unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) { diff = diff | static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0)); }
  return diff == 0;
}

// Before routing: stamps the start, refuses compressed bodies (a gzip bomb would be
// inflated in memory before any limit applies) and requests without the API key.
httplib::Server::HandlerResponse before_routing(const ServeContext& ctx, const httplib::Request& req, httplib::Response& res) {
  request_start = Clock::now();
  const std::string encoding = req.get_header_value("Content-Encoding");
  if (!encoding.empty() && encoding != "identity") {
    send_error(res, 415, "Content-Encoding '" + encoding + "' is not accepted: send the body uncompressed (.nii.gz files as they are)");
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  }
  if (ctx.options.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  const std::string given = header.rfind(prefix, 0) == 0 ? header.substr(prefix.size()) : std::string();
  if (same_secret(given, ctx.options.api_key)) return httplib::Server::HandlerResponse::Unhandled;
  send_error(res, 401, header.empty() ? "missing API key: send the header 'Authorization: Bearer <key>'" : "invalid API key");
  res.set_header("WWW-Authenticate", "Bearer");
  res.set_header("Connection", "close");  // the body, if any, is left unread
  return httplib::Server::HandlerResponse::Handled;
}

json model_json(const ServeContext& ctx) {
  json out = {{"id", ctx.model_id}, {"object", "model"}, {"created", ctx.started}, {"owned_by", "m3d"}};
  if (ctx.embedder) {
    const EmbedderInfo& info = ctx.embedder->info();
    out["m3d"] = {{"architecture", info.architecture},
                  {"family", "clip"},
                  {"image_grid", info.image_grid},
                  {"embedding_dim", info.dim},
                  {"embeds_text", info.has_tokenizer}};
    return out;
  }
  const ModelInfo& info = ctx.model->info();
  out["m3d"] = {{"architecture", info.architecture},    {"family", info.family},
                {"takes_images", info.takes_images},    {"segments", info.segments},
                {"image_grid", info.image_grid},        {"image_tokens", info.image_tokens},
                {"context_length", info.context_length}};
  return out;
}

void not_yet(httplib::Server& server, const std::string& path, const std::string& message) {
  server.Post(path, [message](const httplib::Request&, httplib::Response& res) { send_error(res, 501, message); });
}

std::string study_id_of(const httplib::Request& req) {
  const std::string id = req.matches[1];
  if (!study_id_valid(id)) throw ApiError(404, "no study '" + id.substr(0, 64) + "' (ids are 16 hex digits from POST /v1/studies)");
  return id;
}

void upload_study(ServeContext& ctx, const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
  if (req.is_multipart_form_data()) {
    throw ApiError(400, "send the scan file itself as the request body, not multipart/form-data (curl --data-binary @scan.nii.gz)");
  }
  const int64_t limit = ctx.options.max_body_mb << 20;
  const auto too_large = [&] { return ApiError(413, fmt::format("the upload exceeds the server's --max-body-mb {}", ctx.options.max_body_mb)); };
  std::unique_ptr<StudyStore::Upload> upload = ctx.store.begin_upload();
  bool over = false;
  std::exception_ptr failure;
  const bool complete = reader([&](const char* data, size_t size) {
    if (upload->bytes() + static_cast<int64_t>(size) > limit) return !(over = true);  // a chunked body has no length to check first
    try {
      upload->write(data, size);
    } catch (...) {
      failure = std::current_exception();
      return false;
    }
    return true;
  });
  if (failure) std::rethrow_exception(failure);
  if (over || res.status == 413) throw too_large();
  if (!complete) throw ApiError(400, "the upload did not arrive whole (cut off, or too slow): send it with a Content-Length");
  const json meta = ctx.store.commit(*upload, req.get_param_value("filename"), req.get_header_value("Content-Type"));
  res.set_header("Location", "/v1/studies/" + meta.at("id").get<std::string>());
  send_json(res, 201, study_public(meta));
}

}  // namespace

void Metrics::count_request(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  ++buckets_[b];
  seconds_sum_ += seconds;
  ++seconds_count_;
}

std::string Metrics::text(int queue_depth, size_t studies) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out = "# HELP m3d_requests_total HTTP requests answered, by route and status.\n# TYPE m3d_requests_total counter\n";
  for (const auto& [key, count] : requests_) out += fmt::format("m3d_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, count);
  out += fmt::format("# HELP m3d_queue_depth Requests waiting for the generation slot.\n# TYPE m3d_queue_depth gauge\nm3d_queue_depth {}\n", queue_depth);
  out += fmt::format("# HELP m3d_active_generations Generations running now.\n# TYPE m3d_active_generations gauge\nm3d_active_generations {}\n",
                     active_generations.load());
  out += fmt::format("# HELP m3d_generated_tokens_total Tokens generated.\n# TYPE m3d_generated_tokens_total counter\nm3d_generated_tokens_total {}\n",
                     generated_tokens_.load());
  out += fmt::format("# HELP m3d_embeddings_total Inputs embedded (POST /v1/embeddings).\n# TYPE m3d_embeddings_total counter\nm3d_embeddings_total {}\n",
                     embeddings_.load());
  out += fmt::format("# HELP m3d_studies Studies stored.\n# TYPE m3d_studies gauge\nm3d_studies {}\n", studies);
  out += "# HELP m3d_request_seconds Time from request to the end of its response.\n# TYPE m3d_request_seconds histogram\n";
  int64_t cumulative = 0;
  for (size_t b = 0; b < kBuckets.size(); ++b) {
    cumulative += buckets_[b];
    out += fmt::format("m3d_request_seconds_bucket{{le=\"{}\"}} {}\n", kBuckets[b], cumulative);
  }
  out += fmt::format("m3d_request_seconds_bucket{{le=\"+Inf\"}} {}\n", seconds_count_);
  out += fmt::format("m3d_request_seconds_sum {}\nm3d_request_seconds_count {}\n", seconds_sum_, seconds_count_);
  return out;
}

std::unique_lock<std::timed_mutex> GenerationSlot::acquire(Clock::time_point deadline) {
  std::unique_lock<std::timed_mutex> lock(mutex_, std::try_to_lock);
  if (lock.owns_lock()) return lock;
  if (waiting_.fetch_add(1) >= queue_) {
    --waiting_;
    throw ApiError(429, fmt::format("the server is busy: {} request(s) already wait for the generation slot (--queue {}); retry later", queue_, queue_));
  }
  const bool got = lock.try_lock_until(deadline);
  --waiting_;
  if (!got) throw ApiError(408, "timed out waiting for the generation slot (--timeout-s); retry later");
  return lock;
}

const Model& generative_model(const ServeContext& ctx) {
  if (!ctx.model) {
    throw ApiError(501, fmt::format("model '{}' ({}) is a contrastive model: it answers POST /v1/embeddings only; start `m3d serve --model` with a "
                                    "LaMed or Med3DVLM checkpoint to chat or segment",
                                    ctx.model_id, ctx.embedder->info().architecture));
  }
  return *ctx.model;
}

std::optional<json> field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  return *it;
}

json request_body(const std::string& text, const ServeContext& ctx) {
  json body;
  try {
    body = json::parse(text);
  } catch (const json::parse_error& e) { throw ApiError(400, std::string("malformed JSON: ") + e.what()); }
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  if (const auto model = field(body, "model"); model && (!model->is_string() || *model != ctx.model_id)) {
    throw ApiError(404, fmt::format("model {} is not served here: this server has '{}' (GET /v1/models)", model->dump(), ctx.model_id));
  }
  return body;
}

std::string json_text(const json& body) { return body.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(json_text(body) + "\n", "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, {{"error", {{"message", message}, {"type", error_type(status)}, {"code", status}}}});
}

void send_current_exception(httplib::Response& res) {
  try {
    throw;
  } catch (const ApiError& e) { send_error(res, e.status, e.what()); } catch (const StudyRejected& e) {
    send_error(res, e.status, e.what());
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", e.what());
    send_error(res, 500, std::string("internal error: ") + e.what());
  }
}

httplib::Server::Handler guarded(httplib::Server::Handler handler) {
  return [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    try {
      handler(req, res);
    } catch (...) { send_current_exception(res); }
  };
}

void serve_add_common(httplib::Server& server, ServeContext& ctx) {
  server.set_pre_routing_handler([&ctx](const httplib::Request& req, httplib::Response& res) { return before_routing(ctx, req, res); });
  server.set_logger([&ctx](const httplib::Request& req, const httplib::Response& res) {
    const double seconds = std::chrono::duration<double>(Clock::now() - request_start).count();
    ctx.metrics.count_request(route_label(req.path), res.status, seconds);
    spdlog::info("{} {} {} {:.1f} ms", req.method, req.path, res.status, seconds * 1000);
  });
  // Statuses httplib sets itself (404 without a route, 413 over the body limit, 400 for
  // an unreadable request) get a JSON body too; the routes' own errors keep theirs.
  server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string message = res.status == 404   ? "no route " + req.method + " " + req.path
                                : res.status == 413 ? "the request body exceeds the server's --max-body-mb"
                                : res.status == 400 ? "malformed HTTP request"
                                                    : fmt::format("HTTP {}", res.status);
    send_error(res, res.status, message);
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr failure) {
    try {
      std::rethrow_exception(failure);
    } catch (...) { send_current_exception(res); }
  });
  server.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"status", "ok"}}); });
  server.Get("/metrics", [&ctx](const httplib::Request&, httplib::Response& res) {
    res.set_content(ctx.metrics.text(ctx.slot.waiting(), ctx.store.size()), "text/plain; version=0.0.4");
  });
  server.Get("/v1/models", [&ctx](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"object", "list"}, {"data", {model_json(ctx)}}}); });
  not_yet(server, "/v1/studies/import",
          "POST /v1/studies/import (DICOMweb) is not built yet: upload the series as one NIfTI/NRRD/MHA file with POST /v1/studies");
}

void serve_add_studies(httplib::Server& server, ServeContext& ctx) {
  server.Post("/v1/studies", [&ctx](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    try {
      upload_study(ctx, req, res, reader);
    } catch (...) {
      send_current_exception(res);
      res.set_header("Connection", "close");  // the rest of a refused body is left unread
    }
  });
  server.Get("/v1/studies", guarded([&ctx](const httplib::Request&, httplib::Response& res) {
               send_json(res, 200, {{"object", "list"}, {"data", ctx.store.list()}});
             }));
  server.Get(R"(/v1/studies/([^/]+))", guarded([&ctx](const httplib::Request& req, httplib::Response& res) {
               const std::string id = study_id_of(req);
               const auto meta = ctx.store.get(id);
               if (!meta) throw ApiError(404, "no study '" + id + "'");
               send_json(res, 200, study_public(*meta));
             }));
  server.Delete(R"(/v1/studies/([^/]+))", guarded([&ctx](const httplib::Request& req, httplib::Response& res) {
                  const std::string id = study_id_of(req);
                  if (!ctx.store.remove(id)) throw ApiError(404, "no study '" + id + "'");
                  ctx.sessions.erase(id);
                  res.status = 204;
                }));
}

}  // namespace m3d::cli
