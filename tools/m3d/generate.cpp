// m3d generate: answer a question about a volume (or a text prompt) with a LaMed model.
#include <cstdio>

#include "commands.h"
#include "generate/session.h"
#include "imaging/model_input.h"
#include "options.h"

namespace m3d::cli {

void add_generate(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", prompt, dtype = "f32";
    bool stream = false;
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Answer a prompt about a volume (report, VQA, positioning) with a LaMed model");
  cmd->add_option("--model", o->model, "Checkpoint directory (config.json, weights, tokenizer.model or tokenizer.json)")->required();
  cmd->add_option("--image", o->image, "A scan (NIfTI, DICOM file or directory, NRRD, MHA) or a model-space volume (M3D .npy 1xDxHxW, .safetensors tensor)");
  cmd->add_option("--image-key", o->image_key, "Tensor name when --image is a safetensors file with several");
  cmd->add_option("--recipe", o->recipe,
                  "How a scan (NIfTI, DICOM, NRRD, ...) becomes model input: auto (the checkpoint's m3d_recipe.json, else m3d-lamed), "
                  "a built-in name or a recipe .json; .npy / .safetensors inputs are used as they are")
      ->capture_default_str();
  cmd->add_option("--prompt", o->prompt, "The question, e.g. \"Please describe this CT scan.\"")->required();
  add_generation_options(cmd, o->flags);
  cmd->add_flag("--stream", o->stream, "Print the answer as it is generated");
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    generate::Session session = generate::session_open(o->model, parse_dtype(o->dtype), parse_tokenizer_kind(o->flags.tokenizer));
    const generate::GenerationOptions options = generation_options(o->flags, session.defaults);
    const at::Tensor image = o->image.empty() ? at::Tensor() : imaging::model_input_from_path(o->image, o->image_key, o->recipe, o->model);
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
