// m3d: the one command-line program. Options are parsed here and in the
// per-subcommand files; all work happens in the m3d library.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "commands.h"
#include "m3d/error.h"
#include "m3d/runtime.h"
#include "models/bf16_gemv.h"
#include "models/layers.h"
#include "models/quant_matmul.h"

int main(int argc, char** argv) {
  CLI::App app{"m3d: native engine for 3D medical vision-language models (M3D-LaMed, M3D-CLIP, Med3DVLM)"};
  // The version and the CPU kernels this machine gets (docs/models.md, Precision).
  const std::string version =
      fmt::format("{}\nquantized kernels: {}\nbf16 decode kernel (GEMV): {}\nbf16 weights on the CPU: {} activations ({})", M3D_VERSION,
                  m3d::models::quant_kernels_description(), m3d::models::bf16_gemv_description(), m3d::models::cpu_half_activations() ? "bf16" : "f32",
                  m3d::models::cpu_has_bf16_arithmetic() ? "the CPU has AVX512-BF16/AMX" : "the CPU has no bf16 arithmetic");
  app.set_version_flag("--version", version);
  app.require_subcommand(1);
  spdlog::set_default_logger(spdlog::stderr_color_mt("m3d"));  // logs on stderr; stdout carries only results
  m3d::runtime_set_threads();
  app.add_option_function<int>(
      "-t,--threads", [](int threads) { m3d::runtime_set_threads(threads); }, "CPU threads (default: OMP_NUM_THREADS, else all CPUs)");
  app.add_flag_callback(
      "-v,--verbose", [] { spdlog::set_level(spdlog::level::debug); }, "Log debug messages");
  m3d::cli::add_inspect(app);
  m3d::cli::add_encode(app);
  m3d::cli::add_generate(app);
  m3d::cli::add_chat(app);
  m3d::cli::add_init_random(app);
  m3d::cli::add_volume(app);
  m3d::cli::add_score(app);
  m3d::cli::add_bench(app);
  m3d::cli::add_synth(app);
  m3d::cli::add_train(app);
  m3d::cli::add_embed(app);
  m3d::cli::add_quickstart(app);
  m3d::cli::add_export(app);
  m3d::cli::add_segment(app);
  m3d::cli::add_serve(app);
  m3d::cli::add_quantize(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // usage errors exit 1 like every other error
    std::fprintf(stderr, "m3d: error: %s (see m3d --help)\n", e.what());
    return 1;
  } catch (const m3d::Error& e) {
    std::fprintf(stderr, "m3d: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "m3d: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
