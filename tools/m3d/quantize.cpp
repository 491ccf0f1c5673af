// m3d quantize: a checkpoint folder with its LLM's Linear weights in GGUF blocks
// (models/quantize.h); m3d generate / chat / bench / serve load the output folder.
#include <cstdio>

#include "commands.h"
#include "models/quantize.h"

namespace m3d::cli {

void add_quantize(CLI::App& app) {
  struct Args {
    std::string model, type = "q8_0", output;
    bool everything = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("quantize", "Write a checkpoint whose LLM weights are GGUF blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) for fast CPU decoding");
  cmd->add_option("--model", a->model, "Checkpoint folder (config.json + safetensors/bin): LaMed, Med3DVLM or a text LLM")->required();
  cmd->add_option(
         "--type", a->type,
         "Block type: q8_0 (8.5 bits/weight), q6_k (6.6), q4_k (4.5), q4_1 (5), q4_0 (4.5), or q4_k_m (llama.cpp's mixture: Q4_K, lm_head and some v_proj/down_proj Q6_K)")
      ->capture_default_str();
  cmd->add_flag("--everything", a->everything, "Also quantize the vision tower, projector and [SEG] module Linear weights");
  cmd->add_option("-o,--output", a->output, "Output folder (must not exist or be empty): config, tokenizer files and model.gguf")->required();
  cmd->callback([a] {
    models::QuantizeOptions options = models::quantize_options_named(a->type);
    options.everything = a->everything;
    const models::QuantizeReport r = models::quantize_checkpoint(a->model, a->output, options);
    for (const auto& line : r.fallbacks) std::fprintf(stderr, "note: %s\n", line.c_str());
    for (const auto& [type, count] : r.by_type) std::fprintf(stderr, "%s: %lld tensors\n", type.c_str(), static_cast<long long>(count));
    std::printf("%s: %lld tensors quantized, %lld kept; %.1f MiB -> %.1f MiB\n", a->output.c_str(), static_cast<long long>(r.quantized),
                static_cast<long long>(r.kept), static_cast<double>(r.bytes_in) / (1 << 20), static_cast<double>(r.bytes_out) / (1 << 20));
  });
}

}  // namespace m3d::cli
