// m3d embed: M3D-CLIP / DCFormer_SigLIP image and report embeddings (L2-normalised, as encode_image /
// encode_text return them), and their cosine similarities.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <vector>

#include "commands.h"
#include "imaging/model_input.h"
#include "io/npy.h"
#include "m3d/error.h"
#include "options.h"
#include "models/clip.h"
#include "text/tokenizer.h"

namespace m3d::cli {

void add_embed(CLI::App& app) {
  struct Args {
    std::string model, recipe = "auto", image_key, output;
    std::vector<std::string> images, texts;
    int64_t max_length = 512;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("embed", "M3D-CLIP or DCFormer_SigLIP embeddings of scans and reports, and their cosine similarities");
  add_model_option(cmd, a->model, "M3D-CLIP or DCFormer_SigLIP");
  cmd->add_option("--image", a->images, "Scans or model-space volumes (repeatable)");
  cmd->add_option("--text", a->texts, "Reports (repeatable)");
  add_recipe_option(cmd, a->recipe);
  cmd->add_option("--image-key", a->image_key, "Tensor name inside a .safetensors image");
  cmd->add_option("--max-length", a->max_length, "Report tokens kept (M3D: 512)")->capture_default_str();
  cmd->add_option("-o,--output", a->output, "Write the embeddings as .npy (images first, then texts) instead of JSON on stdout");
  cmd->callback([a] {
    if (a->images.empty() && a->texts.empty()) fail("m3d embed: give --image and/or --text");
    torch::NoGradGuard no_grad;
    models::ClipModel model = models::clip_load(a->model);
    std::vector<torch::Tensor> image_rows, text_rows;
    for (const auto& path : a->images) { image_rows.push_back(model->encode_image(imaging::model_input_from_path(path, a->image_key, a->recipe, a->model))); }
    if (!a->texts.empty()) {
      const text::Tokenizer tokenizer = text::Tokenizer::load(a->model);
      for (const auto& report : a->texts) {
        auto ids = tokenizer.encode(report);
        text::truncate_keeping_last(ids, a->max_length);
        const auto input = torch::tensor(ids, torch::kLong).unsqueeze(0);
        text_rows.push_back(model->encode_text(input, torch::ones_like(input)));
      }
    }
    auto stack = [](const std::vector<torch::Tensor>& rows) { return rows.empty() ? torch::Tensor() : torch::cat(rows).to(torch::kFloat).contiguous(); };
    const auto images = stack(image_rows), texts = stack(text_rows);
    if (!a->output.empty()) {
      std::vector<torch::Tensor> all;
      if (images.defined()) all.push_back(images);
      if (texts.defined()) all.push_back(texts);
      const auto out = torch::cat(all).contiguous();
      io::npy_write(a->output, DType::F32, out.sizes().vec(), out.data_ptr<float>());
      std::printf("%s: %lld embeddings x %lld\n", a->output.c_str(), static_cast<long long>(out.size(0)), static_cast<long long>(out.size(1)));
      return;
    }
    auto rows = [](const torch::Tensor& t) {
      nlohmann::json out = nlohmann::json::array();
      for (int64_t i = 0; t.defined() && i < t.size(0); ++i) {
        const auto row = t[i].contiguous();
        out.push_back(std::vector<float>(row.data_ptr<float>(), row.data_ptr<float>() + row.numel()));
      }
      return out;
    };
    nlohmann::json result = {{"image", rows(images)}, {"text", rows(texts)}};
    if (images.defined() && texts.defined()) result["cosine"] = rows(torch::matmul(images, texts.t()).contiguous());
    std::printf("%s\n", result.dump().c_str());
  });
}

}  // namespace m3d::cli
