// m3d encode: a prepared volume -> the image embeddings a LaMed model feeds its LLM.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "imaging/model_input.h"
#include "io/checkpoint.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "models/lamed.h"
#include "options.h"

namespace m3d::cli {

void add_encode(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", output, dtype = "f32";
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("encode", "Encode a volume into the LLM's image tokens (vision tower + projector)");
  cmd->add_option("--model", o->model, "LaMed checkpoint directory")->required();
  cmd->add_option("--image", o->image, "A scan (NIfTI, DICOM file or directory, NRRD, MHA) or a model-space volume (M3D .npy 1xDxHxW, .safetensors tensor)")->required();
  cmd->add_option("--image-key", o->image_key, "Tensor name when --image is a safetensors file with several");
  cmd->add_option("--recipe", o->recipe,
                  "How a scan (NIfTI, DICOM, NRRD, ...) becomes model input: auto (the checkpoint's m3d_recipe.json, else m3d-lamed), "
                  "a built-in name or a recipe .json; .npy / .safetensors inputs are used as they are")
      ->capture_default_str();
  cmd->add_option("-o,--output", o->output, "Output .safetensors (image_embeddings, vision_features)")->required();
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    at::NoGradGuard no_grad;
    const auto dtype = parse_dtype(o->dtype);
    const io::Checkpoint ckpt = io::checkpoint_open(o->model);
    models::LamedVision vision = models::lamed_vision_load(ckpt);
    io::module_cast_floating(*vision, dtype);
    const at::Tensor image = imaging::model_input_from_path(o->image, o->image_key, o->recipe, o->model).to(models::compute_dtype(dtype, at::kCPU));
    const at::Tensor features = vision->vision_tower->forward(image);  // (1, N, E)
    const at::Tensor embeddings = vision->mm_projector->forward(features);  // (1, N', H)
    io::safetensors_save(o->output, {{"image_embeddings", embeddings.to(at::kFloat)}, {"vision_features", features.to(at::kFloat)}},
                         {{"model", o->model}, {"image", o->image}, {"dtype", o->dtype}});
    spdlog::info("wrote {}: image_embeddings [{}]", o->output, fmt::join(embeddings.sizes(), ", "));
  });
}

}  // namespace m3d::cli
