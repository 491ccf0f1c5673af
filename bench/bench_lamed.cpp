// End-to-end LaMed timings on a checkpoint directory (real size via
// `m3d init-random --preset lamed-phi3-4b`): load, ViT3D encode, prefill of
// 256 image + 32 text tokens, greedy decode tokens/s, peak RSS. Prints one JSON
// line; bench/lamed_reference.py measures the same with transformers + MONAI.
//   bench_lamed DIR [--dtype f32|bf16] [--decode N] [--repeat R]
#include <ATen/ATen.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "generate/generate.h"
#include "m3d/runtime.h"
#include "models/causal_lm.h"

namespace {

using m3d::bench::median;
using m3d::bench::seconds_since;

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_lamed DIR [--dtype f32|bf16] [--decode N] [--repeat R]\n");
    return 2;
  }
  std::string dir = argv[1], dtype_name = "bf16";
  int decode = 32, repeat = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dtype") dtype_name = argv[i + 1];
    else if (flag == "--decode") decode = std::stoi(argv[i + 1]);
    else if (flag == "--repeat") repeat = std::stoi(argv[i + 1]);
  }
  m3d::runtime_set_threads();
  const auto dtype = dtype_name == "bf16" ? torch::kBFloat16 : torch::kFloat;
  torch::NoGradGuard no_grad;
  auto start = std::chrono::steady_clock::now();
  auto loaded = m3d::models::model_load(dir, dtype);
  const double load_s = seconds_since(start);
  auto& lm = *loaded.lm;
  torch::manual_seed(0);
  const auto image = torch::rand({1, 1, 32, 256, 256}).to(dtype);
  const int64_t vocab = lm.model->config().vocab_size;
  auto ids = torch::randint(3, std::min<int64_t>(vocab, 32000), {1, 1 + 256 + 32}, torch::kLong);
  std::vector<double> encode_s, prefill_s, decode_tps;
  for (int r = 0; r < repeat; ++r) {
    start = std::chrono::steady_clock::now();
    auto image_embeds = lm.lamed()->encode_images(image);
    encode_s.push_back(seconds_since(start));
    auto embeds = lm.embed(ids);
    embeds = torch::cat({embeds.slice(1, 0, 1), image_embeds, embeds.slice(1, 257)}, 1);
    auto cache = lm.model->make_cache(1, embeds.size(1) + decode + 1, embeds.options());
    start = std::chrono::steady_clock::now();
    auto hidden = lm.model->forward(embeds, &cache);
    auto token = lm.logits(hidden.select(1, hidden.size(1) - 1)).argmax(-1).view({1, 1});
    prefill_s.push_back(seconds_since(start));
    start = std::chrono::steady_clock::now();
    for (int t = 0; t < decode; ++t) {
      hidden = lm.model->forward(lm.embed(token), &cache);
      token = lm.logits(hidden.select(1, 0)).argmax(-1).view({1, 1});
    }
    decode_tps.push_back(decode / seconds_since(start));
  }
  // Memory roofline for decode: every weight byte is read once per token.
  const auto src = torch::ones({64 << 20}, torch::kFloat), dst = torch::empty_like(src);  // 256 MiB, past the caches
  std::vector<double> copy_gbs;
  for (int r = 0; r < 5; ++r) {
    start = std::chrono::steady_clock::now();
    dst.copy_(src);
    copy_gbs.push_back(2.0 * src.nbytes() / seconds_since(start) / 1e9);  // bytes read + written
  }
  double weight_bytes = 0;  // the decoder's weights; the vision side is not read while decoding
  for (const auto& p : lm.named_parameters()) {
    if (p.key().rfind("model.vision_tower.", 0) != 0 && p.key().rfind("model.mm_projector.", 0) != 0) { weight_bytes += p.value().nbytes(); }
  }
  const double roofline = median(copy_gbs) * 1e9 / weight_bytes;
  std::printf(
      "{\"impl\": \"m3d\", \"dtype\": \"%s\", \"threads\": %d, \"load_s\": %.2f, \"encode_s\": %.3f, \"prefill_s\": %.3f, "
      "\"decode_tok_s\": %.3f, \"copy_gb_s\": %.1f, \"roofline_tok_s\": %.3f, \"peak_rss_gb\": %.2f}\n",
      dtype_name.c_str(), at::get_num_threads(), load_s, median(encode_s), median(prefill_s), median(decode_tps), median(copy_gbs), roofline,
      m3d::bench::peak_rss_gb());
  return 0;
}
