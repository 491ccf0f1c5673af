// m3d init-random: a checkpoint of real shape with random weights, for benchmarks.
#include <spdlog/spdlog.h>

#include <fstream>

#include "commands.h"
#include "io/json_util.h"
#include "models/presets.h"

namespace m3d::cli {

void add_init_random(CLI::App& app) {
  struct Options {
    std::string preset, like, output, dtype = "bf16";
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("init-random", "Write a random-weight checkpoint of a real model's shape (for benchmarks)");
  auto* preset = cmd->add_option("--preset", o->preset, "Shape preset: " + fmt::format("{}", fmt::join(models::preset_names(), ", ")));
  auto* like = cmd->add_option("--like", o->like, "Copy the config.json of this checkpoint directory");
  preset->excludes(like);
  cmd->add_option("-o,--output", o->output, "Output checkpoint directory")->required();
  cmd->add_option("--dtype", o->dtype, "Weight dtype")->check(CLI::IsMember({"f32", "bf16", "f16"}))->capture_default_str();
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->callback([o] {
    if (o->preset.empty() && o->like.empty()) throw CLI::ValidationError("init-random", "give --preset NAME or --like DIR");
    const nlohmann::json config = o->preset.empty() ? io::json_read_file(o->like + "/config.json") : models::preset_config(o->preset);
    models::init_random_checkpoint(config, o->output, o->dtype, o->seed);
    spdlog::info("wrote {}/config.json and model.safetensors", o->output);
  });
}

}  // namespace m3d::cli
