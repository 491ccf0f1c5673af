// Each subcommand lives in its own file and registers itself on the CLI app.
#pragma once

#include <CLI/CLI.hpp>

namespace m3d::cli {

void add_inspect(CLI::App& app);
void add_encode(CLI::App& app);
void add_generate(CLI::App& app);
void add_chat(CLI::App& app);
void add_init_random(CLI::App& app);
void add_volume(CLI::App& app);
void add_score(CLI::App& app);
void add_bench(CLI::App& app);
void add_synth(CLI::App& app);
void add_train(CLI::App& app);
void add_embed(CLI::App& app);
void add_quickstart(CLI::App& app);
void add_export(CLI::App& app);
void add_segment(CLI::App& app);
void add_serve(CLI::App& app);
void add_quantize(CLI::App& app);

}  // namespace m3d::cli
