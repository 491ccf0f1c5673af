// m3d serve's HTTP API on cpp-httplib: what the routes share (options, the model,
// the study store, the one generation slot and its wait queue, metrics) and the
// functions that register them. Everything model-related goes through the public
// API (include/m3d/); errors are JSON as OpenAI's: {"error": {"message", "type", "code"}}.
#pragma once

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "m3d/embedder.h"
#include "m3d/session.h"
#include "serve_store.h"

namespace m3d::cli {

struct ServeOptions {
  std::string model_dir, host = "127.0.0.1", api_key, data_dir = "m3d-data", dtype = "f32";
  int port = 8080;
  int64_t max_body_mb = 512, max_voxels = int64_t{1} << 30, max_new_tokens_limit = 1024, max_inputs = 256;
  int64_t max_zip_entries = 10000, max_unzipped_mb = 2048;  // a zipped DICOM series
  int queue = 16, timeout_s = 300;
};

// A request answered with an error status and an OpenAI-style JSON body.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

// Prometheus counters and gauges (GET /metrics).
class Metrics {
 public:
  void count_request(const std::string& route, int status, double seconds);
  void add_tokens(int64_t tokens) { generated_tokens_ += tokens; }
  void add_embeddings(int64_t count) { embeddings_ += count; }
  std::string text(int queue_depth, size_t studies) const;
  std::atomic<int> active_generations{0};

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  std::vector<int64_t> buckets_ = std::vector<int64_t>(16, 0);  // per kBuckets bound, not cumulative
  double seconds_sum_ = 0;
  int64_t seconds_count_ = 0;
  std::atomic<int64_t> generated_tokens_{0};
  std::atomic<int64_t> embeddings_{0};
};

// One generation at a time (a Session is single-threaded, and one decode already
// uses every core); up to `queue` requests wait for it, more are refused.
class GenerationSlot {
 public:
  using Clock = std::chrono::steady_clock;
  explicit GenerationSlot(int queue) : queue_(queue) {}
  // The slot, held until the lock is released. ApiError 429 when the queue is full,
  // 408 when `deadline` passes while waiting.
  std::unique_lock<std::timed_mutex> acquire(Clock::time_point deadline);
  int waiting() const { return waiting_; }

 private:
  std::timed_mutex mutex_;
  std::atomic<int> waiting_{0};
  int queue_;
};

// The served model: a generative one (chat, segment) or a contrastive one (embeddings).
struct ServeContext {
  ServeOptions options;
  std::optional<Model> model;
  std::optional<Embedder> embedder;
  std::string model_id;  // the model directory's name
  int64_t started = 0;  // unix seconds
  StudyStore store;
  Metrics metrics;
  GenerationSlot slot;
  Lru<std::shared_ptr<Session>> sessions{4};  // per study ("" for text-only), encoded scan prefix kept; used under `slot`

  ServeContext(ServeOptions o, std::optional<Model> m, std::optional<Embedder> e, StoreOptions store_options)
      : options(std::move(o)), model(std::move(m)), embedder(std::move(e)), store(std::move(store_options)), slot(options.queue) {}
};

// The generative model; ApiError 501 when the server holds a contrastive one.
const Model& generative_model(const ServeContext& ctx);
// The member `name` of a JSON object; std::nullopt when absent or null.
std::optional<nlohmann::json> field(const nlohmann::json& body, const char* name);
// The request's JSON object; its "model", when given, must be the one served (else 404).
nlohmann::json request_body(const std::string& text, const ServeContext& ctx);

// {"error": {"message", "type", "code"}} with `status`.
void send_error(httplib::Response& res, int status, const std::string& message);
void send_json(httplib::Response& res, int status, const nlohmann::json& body);
std::string json_text(const nlohmann::json& body);  // invalid UTF-8 from a client replaced, never thrown on
// Inside a catch block: answers ApiError and StudyRejected with their status, anything
// else with 500.
void send_current_exception(httplib::Response& res);
// Runs `handler`, answering what it throws with send_current_exception.
httplib::Server::Handler guarded(httplib::Server::Handler handler);

// Auth, logging, errors, /health, /metrics, /v1/models, the not-yet route.
void serve_add_common(httplib::Server& server, ServeContext& ctx);
// /v1/studies (upload, get, list, delete).
void serve_add_studies(httplib::Server& server, ServeContext& ctx);
// /v1/chat/completions and /v1/segment (serve_chat.cpp).
void serve_add_chat(httplib::Server& server, ServeContext& ctx);
// /v1/embeddings (serve_embed.cpp).
void serve_add_embeddings(httplib::Server& server, ServeContext& ctx);

}  // namespace m3d::cli
