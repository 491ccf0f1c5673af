// m3d inspect PATH: what a checkpoint directory or weights file contains.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/inspect.h"

namespace m3d::cli {

void add_inspect(CLI::App& app) {
  struct Options {
    std::string path;
    bool json = false;
    bool tensors = false;
    bool verify = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show a checkpoint's architecture, modules, parameter counts and dtypes");
  cmd->add_option("path", options->path, "Checkpoint directory or weights file (.safetensors, .bin, .pt, .gguf)")->required();
  cmd->add_flag("--json", options->json, "Print JSON for machines");
  cmd->add_flag("--tensors", options->tensors, "Also list every tensor with dtype and shape");
  cmd->add_flag("--verify", options->verify,
                "Report the checks made: the CRC-32 of every .bin zip entry (checked by every inspect), the headers and byte ranges of formats that "
                "record no checksum");
  cmd->callback([options] {
    // A GGUF file (llama.cpp) carries its config in its metadata and records no checksums.
    const bool gguf = io::gguf_has_magic(options->path);
    const io::Checkpoint checkpoint = gguf ? io::Checkpoint{} : io::checkpoint_open(options->path);
    // torch zip files record a CRC-32 per entry: every inspect checks them all (one read of
    // the file), so a flipped bit in a tensor is reported before the summary is printed.
    const bool zip = !gguf && checkpoint.format == io::WeightFormat::TorchBin;
    const std::vector<std::string> verified = options->verify || zip ? io::checkpoint_verify(checkpoint) : std::vector<std::string>{};
    const io::CheckpointSummary summary = gguf ? io::gguf_summarize(io::gguf_read(options->path)) : io::checkpoint_summarize(checkpoint);
    if (options->json) {
      // Metadata strings of a GGUF file need not be valid UTF-8.
      const auto replace = nlohmann::ordered_json::error_handler_t::replace;
      std::printf("%s\n", io::summary_json(summary, options->tensors).dump(2, ' ', false, replace).c_str());
    } else {
      std::fputs(io::summary_text(summary, options->tensors).c_str(), stdout);
    }
    if (options->verify && gguf) std::fprintf(stderr, "%s: GGUF records no checksums; header, offsets and sizes checked\n", options->path.c_str());
    if (options->verify) {
      for (const auto& line : verified) std::fprintf(stderr, "verified %s\n", line.c_str());
    }
  });
}

}  // namespace m3d::cli
