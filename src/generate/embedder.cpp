// m3d::Embedder (include/m3d/embedder.h) over models::ClipModel: the checkpoint's
// encode_image on a PreparedScan's input, encode_text on its tokenizer's ids (the
// last max_length kept, as `m3d embed` always did).
#include "m3d/embedder.h"

#include <torch/torch.h>

#include <filesystem>
#include <optional>

#include "imaging/scan.h"
#include "m3d/error.h"
#include "models/clip.h"
#include "models/registry.h"
#include "text/tokenizer.h"

namespace m3d {

struct Embedder::Impl {
  mutable models::ClipModel model{nullptr};  // inference only: encode_* change no state
  std::optional<text::Tokenizer> tokenizer;
  c10::ScalarType dtype = c10::kFloat;
  int64_t max_length = 512;
  EmbedderInfo info;
};

namespace {

c10::ScalarType embed_dtype_named(const std::string& name) {
  if (name == "f32") return c10::kFloat;
  if (name == "bf16") return c10::kBFloat16;
  fail("unknown dtype '{}' for a contrastive model (supported: f32, bf16)", name);
}

bool has_tokenizer_files(const std::string& dir) {
  for (const char* name : {"tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json"}) {
    if (std::filesystem::exists(dir + "/" + name)) return true;
  }
  return false;
}

Embedding embedding_of(const torch::Tensor& row, int64_t tokens) {
  const torch::Tensor values = row.to(torch::kFloat).reshape({-1}).contiguous();  // (E)
  return {std::vector<float>(values.data_ptr<float>(), values.data_ptr<float>() + values.numel()), tokens};
}

}  // namespace

Embedder Embedder::open(const std::string& dir, const EmbedderOptions& options) {
  // Fails on an unknown architecture with the supported list.
  const models::Architecture& arch = models::architecture_of_dir(dir);
  if (arch.kind != models::ModelKind::Clip) {
    fail("{}: {} is {}; it answers questions and embeds nothing: open it with m3d::Model::open (`m3d generate`, `m3d serve`)", dir, arch.name,
         arch.description);
  }
  if (options.max_length < 2) fail("{}: max_length {} keeps no report token (at least 2: [CLS] and [SEP])", dir, options.max_length);
  auto impl = std::make_shared<Impl>();
  impl->dtype = embed_dtype_named(options.dtype);
  impl->max_length = options.max_length;
  impl->model = models::clip_load(dir, impl->dtype);
  if (has_tokenizer_files(dir)) impl->tokenizer = text::Tokenizer::load(dir);
  const models::ClipConfig& config = impl->model->config();
  impl->info = {dir, arch.name, config.image_size(), config.hidden_size, impl->tokenizer.has_value()};
  Embedder embedder;
  embedder.impl_ = std::move(impl);
  return embedder;
}

bool model_is_contrastive(const std::string& dir) { return models::architecture_of_dir(dir).kind == models::ModelKind::Clip; }

const EmbedderInfo& Embedder::info() const { return impl_->info; }

Embedding Embedder::embed_scan(const PreparedScan& scan) const {
  const auto grid = impl_->info.image_grid;
  if (scan.model_size() != grid) {
    const auto got = scan.model_size();
    fail(
        "{}: the scan was prepared to {}x{}x{}, the model takes {}x{}x{} (D x H x W): prepare it with recipe \"auto\" and this checkpoint's "
        "directory, or a recipe that resizes to that grid",
        impl_->info.architecture, got[0], got[1], got[2], grid[0], grid[1], grid[2]);
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor input = scan.impl()->input.to(impl_->dtype);  // (1, 1, D, H, W)
  return embedding_of(impl_->model->encode_image(input), 0);
}

Embedding Embedder::embed_text(const std::string& report) const {
  if (!impl_->tokenizer) {
    fail("{}: no tokenizer (tokenizer.json, tokenizer.model or vocab.txt) to embed reports with: copy the text tower's tokenizer files there", impl_->info.dir);
  }
  std::vector<int64_t> ids = impl_->tokenizer->encode(report);
  text::truncate_keeping_last(ids, impl_->max_length);
  torch::NoGradGuard no_grad;
  const torch::Tensor input = torch::tensor(ids, torch::kLong).unsqueeze(0);  // (1, L)
  return embedding_of(impl_->model->encode_text(input, torch::ones_like(input)), static_cast<int64_t>(ids.size()));
}

}  // namespace m3d
