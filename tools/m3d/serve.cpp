// m3d serve: an HTTP API (OpenAI-compatible chat about uploaded studies, or embeddings
// of studies and reports) for one model; docs/serving.md. This file parses the options,
// opens the model and the study store, and runs the server until SIGINT or SIGTERM; the
// routes live in serve_api.cpp, serve_chat.cpp and serve_embed.cpp, the studies in
// serve_store.cpp.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <optional>
#include <thread>

#include "commands.h"
#include "m3d/error.h"
#include "options.h"
#include "serve_api.h"

namespace m3d::cli {
namespace {

void add_serve_options(CLI::App* cmd, ServeOptions& o) {
  add_model_option(cmd, o.model_dir, "LaMed or Med3DVLM (chat, segment), or M3D-CLIP or DCFormer_SigLIP (embeddings); opened once at start");
  cmd->add_option("--host", o.host, "Address to listen on (0.0.0.0: every interface; set --api-key then)")->capture_default_str();
  cmd->add_option("--port", o.port, "TCP port")->capture_default_str()->check(CLI::Range(1, 65535));
  cmd->add_option("--api-key", o.api_key, "Require 'Authorization: Bearer KEY' on every /v1/ request")->envname("M3D_API_KEY");
  cmd->add_option("--data-dir", o.data_dir, "Where uploaded studies are kept (they survive a restart)")->capture_default_str();
  cmd->add_option("--max-body-mb", o.max_body_mb, "Largest request body (an upload) in MiB; larger: 413")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-voxels", o.max_voxels, "Largest scan an upload may hold (voxels of the original grid); larger: 400")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-zip-entries", o.max_zip_entries, "Most files a zipped DICOM series may hold; more: 413")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-unzipped-mb", o.max_unzipped_mb, "Most MiB a zipped DICOM series may inflate to (decompression bombs); more: 413")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-new-tokens-limit", o.max_new_tokens_limit, "Largest max_tokens a request may ask for; larger: 400")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-inputs", o.max_inputs, "Most entries one /v1/embeddings request may embed; more: 413")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--queue", o.queue, "Requests that may wait for the generation slot; more: 429")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--timeout-s", o.timeout_s, "Longest a chat request may wait and generate; longer: 408")->capture_default_str()->check(CLI::PositiveNumber);
  add_dtype_option(cmd, o.dtype);
}

// SIGINT and SIGTERM are taken by a thread of their own that stops the server (a
// signal handler may not take httplib's locks); blocked before the model starts its
// threads, so they all inherit the mask.
sigset_t block_stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

std::string model_id_of(const std::string& dir) {
  std::filesystem::path path(dir);
  if (!path.has_filename()) path = path.parent_path();  // "dir/"
  return path.filename().string();
}

void serve(const ServeOptions& options) {
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not the end of the server
  const sigset_t signals = block_stop_signals();
  if (options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1" && options.api_key.empty()) {
    spdlog::warn("listening on {} without --api-key: anyone who reaches this port can upload studies and run the model", options.host);
  }
  parse_dtype(options.dtype);  // the CLI's message for f16
  std::optional<Model> model;
  std::optional<Embedder> embedder;
  if (model_is_contrastive(options.model_dir)) {
    embedder = Embedder::open(options.model_dir, EmbedderOptions{options.dtype});
  } else {
    model = Model::open(options.model_dir, ModelOptions{options.dtype, "auto"});
  }
  const auto grid = embedder ? embedder->info().image_grid : model->info().image_grid;
  StoreOptions store{options.data_dir, options.model_dir, grid, options.max_voxels, options.max_zip_entries, options.max_unzipped_mb << 20, 4};
  ServeContext ctx(options, std::move(model), std::move(embedder), std::move(store));
  ctx.model_id = model_id_of(options.model_dir);
  ctx.started = static_cast<int64_t>(std::time(nullptr));
  httplib::Server server;
  // One thread per connection: the generation, `queue` waiting, and room for uploads and probes.
  const size_t threads = static_cast<size_t>(options.queue) + 8;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_payload_max_length(static_cast<size_t>(options.max_body_mb) << 20);
  server.set_write_timeout(std::chrono::seconds(options.timeout_s));
  // One request per connection: an idle keep-alive connection would hold a pool thread,
  // and a refused upload's unread body would be parsed as the next request.
  server.set_keep_alive_max_count(1);
  serve_add_common(server, ctx);
  serve_add_studies(server, ctx);
  serve_add_chat(server, ctx);
  serve_add_embeddings(server, ctx);
  if (!server.bind_to_port(options.host, options.port)) {
    fail("m3d serve: cannot listen on {}:{} (in use, or not an address of this machine)", options.host, options.port);
  }
  std::thread stopper([&server, signals] {
    int signal = 0;
    sigwait(&signals, &signal);
    spdlog::info("signal {}: stopping", signal);
    server.stop();
  });
  spdlog::info("m3d serve: model '{}' ({}), {} stored studies in {}, listening on http://{}:{}", ctx.model_id,
               ctx.embedder ? ctx.embedder->info().architecture : ctx.model->info().architecture, ctx.store.size(), options.data_dir, options.host,
               options.port);
  server.listen_after_bind();
  pthread_kill(stopper.native_handle(), SIGTERM);  // wakes it when the server stopped for another reason
  stopper.join();
}

}  // namespace

void add_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over HTTP: study upload, OpenAI-compatible chat or embeddings (docs/serving.md)");
  add_serve_options(cmd, *o);
  cmd->callback([o] { serve(*o); });
}

}  // namespace m3d::cli
