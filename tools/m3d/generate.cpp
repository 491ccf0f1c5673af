// m3d generate: answer a question about a volume (or a text prompt) with a LaMed model.
#include <cstdio>

#include "commands.h"
#include "generate/session.h"
#include "imaging/model_input.h"
#include "options.h"

namespace m3d::cli {

void add_generate(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, prompt, dtype = "f32";
    int64_t max_new_tokens = -1, top_k = 0;
    bool do_sample = false, stream = false;
    double temperature = 1.0, top_p = 1.0, repetition_penalty = 1.0;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Answer a prompt about a volume (report, VQA, positioning) with a LaMed model");
  cmd->add_option("--model", o->model, "Checkpoint directory (config.json, weights, tokenizer.json)")->required();
  cmd->add_option("--image", o->image, "Model-space volume: M3D .npy (1xDxHxW) or a .safetensors tensor");
  cmd->add_option("--image-key", o->image_key, "Tensor name when --image is a safetensors file with several");
  cmd->add_option("--prompt", o->prompt, "The question, e.g. \"Please describe this CT scan.\"")->required();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Default: generation_config.json, else 256");
  cmd->add_flag("--do-sample", o->do_sample, "Sample instead of greedy decoding (the official Bench uses greedy)");
  cmd->add_option("--temperature", o->temperature, "Sampling temperature")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling (the official demo: 0.9)")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "Top-k sampling, 0 = off")->capture_default_str();
  cmd->add_option("--repetition-penalty", o->repetition_penalty, "HF repetition penalty")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("--stream", o->stream, "Print the answer as it is generated");
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    generate::Session session = generate::session_open(o->model, parse_dtype(o->dtype));
    generate::GenerationOptions options = session.defaults;
    if (o->max_new_tokens >= 0) options.max_new_tokens = o->max_new_tokens;
    options.do_sample = o->do_sample;
    options.temperature = o->temperature;
    options.top_p = o->top_p;
    options.top_k = o->top_k;
    options.repetition_penalty = o->repetition_penalty;
    options.seed = o->seed;
    const at::Tensor image = o->image.empty() ? at::Tensor() : imaging::model_input_load(o->image, o->image_key);
    std::function<void(const std::string&)> on_text;
    if (o->stream) {
      on_text = [](const std::string& piece) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      };
    }
    const std::string answer = generate::session_answer(session, image, o->prompt, options, on_text);
    if (o->stream) {
      std::fputs("\n", stdout);
    } else {
      std::printf("%s\n", answer.c_str());
    }
  });
}

}  // namespace m3d::cli
