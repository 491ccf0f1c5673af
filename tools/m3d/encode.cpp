// m3d encode: a prepared volume -> the image embeddings a LaMed or Med3DVLM model feeds its LLM.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "imaging/model_input.h"
#include "io/checkpoint.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "models/vision.h"
#include "options.h"

namespace m3d::cli {

void add_encode(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", output, dtype = "f32";
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("encode", "Encode a volume into the LLM's image tokens (vision tower + projector)");
  add_model_option(cmd, o->model, "LaMed or Med3DVLM");
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/true);
  cmd->add_option("-o,--output", o->output,
                  "Output .safetensors: image_embeddings and the tower's features (vision_features, or low_features and high_features)")
      ->required();
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    at::NoGradGuard no_grad;
    const auto dtype = parse_dtype(o->dtype);
    const io::Checkpoint ckpt = io::checkpoint_open(o->model);
    models::VisionSide vision = models::vision_load(ckpt);
    io::module_cast_floating(*vision, dtype);
    const at::Tensor image = imaging::model_input_from_path(o->image, o->image_key, o->recipe, o->model).to(models::compute_dtype(dtype, at::kCPU));
    const std::vector<at::Tensor> features = vision->features(image);  // each (1, N_i, E_i)
    const at::Tensor embeddings = vision->project(features);  // (1, N', H)
    std::vector<std::pair<std::string, at::Tensor>> tensors = {{"image_embeddings", embeddings.to(at::kFloat)}};
    const auto names = vision->feature_names();
    for (size_t i = 0; i < features.size(); ++i) tensors.emplace_back(names.at(i), features[i].to(at::kFloat));
    io::safetensors_save(o->output, tensors, {{"model", o->model}, {"image", o->image}, {"dtype", o->dtype}});
    spdlog::info("wrote {}: image_embeddings [{}]", o->output, fmt::join(embeddings.sizes(), ", "));
  });
}

}  // namespace m3d::cli
