// m3d export --merge-lora: a LoRA-tuned LaMed as one plain HF-layout checkpoint.
#include <cstdio>

#include "commands.h"
#include "m3d/error.h"
#include "train/lamed_train.h"

namespace m3d::cli {

void add_export(CLI::App& app) {
  struct Args {
    std::string checkpoint, adapter, output;
    bool merge_lora = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("export", "Write a checkpoint in the HF layout: LoRA adapters merged into the weights");
  cmd->add_option("checkpoint", a->checkpoint, "An m3d training checkpoint (checkpoint-N) or a base model folder (with --adapter)")->required();
  cmd->add_flag("--merge-lora", a->merge_lora, "Merge the LoRA adapters (peft merge_and_unload)");
  cmd->add_option("--adapter", a->adapter, "A peft adapter folder (adapter_config.json, adapter_model.safetensors/.bin) for a base model");
  cmd->add_option("-o,--output", a->output, "Output folder")->required();
  cmd->callback([a] {
    if (!a->merge_lora) fail("m3d export: give --merge-lora (the only export so far)");
    const size_t merged = train::lamed_export_merged(a->checkpoint, a->adapter, a->output);
    std::printf("%s: %zu LoRA layers merged; loads with m3d and with transformers (config.json, model.safetensors)\n", a->output.c_str(), merged);
  });
}

}  // namespace m3d::cli
