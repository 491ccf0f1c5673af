// m3d embed: M3D-CLIP / DCFormer_SigLIP image and report embeddings (L2-normalised, as encode_image /
// encode_text return them), and their cosine similarities, through m3d::Embedder.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <vector>

#include "commands.h"
#include "io/npy.h"
#include "m3d/embedder.h"
#include "m3d/error.h"
#include "options.h"

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
    EmbedderOptions options;
    options.max_length = a->max_length;
    const Embedder embedder = Embedder::open(a->model, options);
    std::vector<std::vector<float>> images, texts;
    for (const auto& path : a->images) {
      images.push_back(embedder.embed_scan(PreparedScan::prepare(path, PrepareOptions{a->recipe, a->model, a->image_key})).values);
    }
    for (const auto& report : a->texts) texts.push_back(embedder.embed_text(report).values);
    if (!a->output.empty()) {
      std::vector<float> all;
      for (const auto* rows : {&images, &texts}) {
        for (const auto& row : *rows) all.insert(all.end(), row.begin(), row.end());
      }
      const int64_t count = static_cast<int64_t>(images.size() + texts.size()), dim = embedder.info().dim;
      io::npy_write(a->output, DType::F32, {count, dim}, all.data());
      std::printf("%s: %lld embeddings x %lld\n", a->output.c_str(), static_cast<long long>(count), static_cast<long long>(dim));
      return;
    }
    nlohmann::json result = {{"image", images}, {"text", texts}};
    if (!images.empty() && !texts.empty()) {
      nlohmann::json cosine = nlohmann::json::array();
      for (const auto& image : images) {
        std::vector<float> row;
        for (const auto& report : texts) {
          double dot = 0;
          for (size_t k = 0; k < image.size(); ++k) dot += static_cast<double>(image[k]) * report[k];
          row.push_back(static_cast<float>(dot));
        }
        cosine.push_back(row);
      }
      result["cosine"] = cosine;
    }
    std::printf("%s\n", result.dump().c_str());
  });
}

}  // namespace m3d::cli
