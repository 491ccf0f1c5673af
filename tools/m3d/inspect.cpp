// m3d inspect PATH: what a checkpoint directory or weights file contains.
#include <cstdio>

#include "commands.h"
#include "io/checkpoint.h"
#include "io/inspect.h"

namespace m3d::cli {

void add_inspect(CLI::App& app) {
  struct Options {
    std::string path;
    bool json = false;
    bool tensors = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show a checkpoint's architecture, modules, parameter counts and dtypes");
  cmd->add_option("path", options->path, "Checkpoint directory or weights file (.safetensors, .bin, .pt)")->required();
  cmd->add_flag("--json", options->json, "Print JSON for machines");
  cmd->add_flag("--tensors", options->tensors, "Also list every tensor with dtype and shape");
  cmd->callback([options] {
    const io::Checkpoint checkpoint = io::checkpoint_open(options->path);
    const io::CheckpointSummary summary = io::checkpoint_summarize(checkpoint);
    if (options->json) {
      std::printf("%s\n", io::summary_json(summary, options->tensors).dump(2).c_str());
    } else {
      std::fputs(io::summary_text(summary, options->tensors).c_str(), stdout);
    }
  });
}

}  // namespace m3d::cli
