// End-to-end decoder timings on a model: a LaMed checkpoint directory (real size via
// `m3d init-random --preset lamed-phi3-4b`, or its `m3d quantize` output) or a text LLM
// (a GGUF file such as SmolLM2). Load; for a LaMed the ViT3D encode and a prefill of
// 1 + 256 image + 32 text tokens, for a text LLM a prefill of --prompt random tokens;
// then greedy decode tokens/s with the KV cache; the read-bandwidth roofline (weight
// bytes read per token against a plain read of a large buffer by this binary); peak RSS.
// One warm-up repeat, then --repeat timed ones, each printed; the summary JSON line has
// medians. bench/lamed_reference.py (transformers + MONAI) and
// bench/llamacpp_reference.py (llama.cpp) measure the same.
//   bench_lamed MODEL [--dtype f32|bf16] [--decode N] [--repeat R] [--prompt P]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "m3d/runtime.h"
#include "models/causal_lm.h"
#include "models/layers.h"
#include "models/quant_linear.h"

namespace {

using m3d::bench::median;
using m3d::bench::seconds_since;

// Bytes of weights one decode step reads: every decoder Linear (dense or GGUF blocks),
// the norms, and the output matrix (the embedding table when tied); of the input
// embedding only one row, and nothing of the vision side.
double decoder_bytes_per_token(m3d::models::CausalLmImpl& lm) {
  double bytes = 0;
  for (const auto& item : lm.named_modules()) {
    const std::string& name = item.key();
    if (name.find("vision_tower") != std::string::npos || name.find("mm_projector") != std::string::npos || name.find("seg_") != std::string::npos) {
      continue;
    }
    const auto* module = item.value().get();
    if (const auto* linear = dynamic_cast<const m3d::models::LinearImpl*>(module)) {
      bytes += linear->quantized() ? static_cast<double>(linear->quantized()->rows * linear->quantized()->row_bytes()) : linear->weight.nbytes();
      if (linear->bias.defined()) bytes += linear->bias.nbytes();
    } else if (const auto* embedding = dynamic_cast<const m3d::models::EmbeddingImpl*>(module)) {
      if (lm.lm_head.is_empty()) {  // tied: the output product reads the whole table
        bytes += embedding->quantized() ? static_cast<double>(embedding->quantized()->rows * embedding->quantized()->row_bytes()) : embedding->weight.nbytes();
      }
    } else if (name.find("norm") != std::string::npos) {
      for (const auto& p : item.value()->parameters(false)) bytes += p.nbytes();
    }
  }
  return bytes;
}

struct Options {
  std::string model, dtype = "bf16";
  int decode = 32, repeat = 3, prompt = 289;
};

Options parse(int argc, char** argv) {
  Options o;
  o.model = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dtype") o.dtype = argv[i + 1];
    else if (flag == "--decode") o.decode = std::stoi(argv[i + 1]);
    else if (flag == "--repeat") o.repeat = std::stoi(argv[i + 1]);
    else if (flag == "--prompt") o.prompt = std::stoi(argv[i + 1]);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_lamed MODEL [--dtype f32|bf16] [--decode N] [--repeat R] [--prompt P]\n");
    return 2;
  }
  const Options o = parse(argc, argv);
  m3d::runtime_set_threads();
  const auto dtype = o.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  torch::NoGradGuard no_grad;
  auto start = std::chrono::steady_clock::now();
  auto loaded = m3d::models::model_load(o.model, dtype);
  const double load_s = seconds_since(start);
  auto& lm = *loaded.lm;
  const bool lamed = lm.lamed() != nullptr;
  torch::manual_seed(0);
  const auto image = torch::rand({1, 1, 32, 256, 256}).to(dtype);
  const int64_t vocab = lm.model->config().vocab_size;
  const int64_t prompt = lamed ? 1 + 256 + 32 : o.prompt;
  auto ids = torch::randint(3, std::min<int64_t>(vocab, 32000), {1, prompt}, torch::kLong);
  std::vector<double> encode_s, prefill_tps, decode_tps;
  for (int r = 0; r <= o.repeat; ++r) {  // r == 0: warm-up
    auto embeds = lm.embed(ids);
    double encode = 0;
    if (lamed) {
      start = std::chrono::steady_clock::now();
      auto image_embeds = lm.lamed()->encode_images(image);
      encode = seconds_since(start);
      embeds = torch::cat({embeds.slice(1, 0, 1), image_embeds, embeds.slice(1, 257)}, 1);
    }
    auto cache = lm.model->make_cache(1, embeds.size(1) + o.decode + 1, embeds.options());
    start = std::chrono::steady_clock::now();
    auto hidden = lm.model->forward(embeds, &cache);
    auto token = lm.logits(hidden.select(1, hidden.size(1) - 1)).argmax(-1).view({1, 1});
    const double prefill = prompt / seconds_since(start);
    start = std::chrono::steady_clock::now();
    for (int t = 0; t < o.decode; ++t) {
      hidden = lm.model->forward(lm.embed(token), &cache);
      token = lm.logits(hidden.select(1, 0)).argmax(-1).view({1, 1});
    }
    const double decode = o.decode / seconds_since(start);
    std::fprintf(stderr, "%s encode %.3f s  prefill %.2f tok/s  decode %.3f tok/s\n", r == 0 ? "warm-up" : "repeat ", encode, prefill, decode);
    if (r == 0) continue;
    encode_s.push_back(encode);
    prefill_tps.push_back(prefill);
    decode_tps.push_back(decode);
  }
  const double read_gbs = median(m3d::bench::read_bandwidth_gbs(7));
  const double bytes = decoder_bytes_per_token(lm);
  const double roofline = read_gbs * 1e9 / bytes;
  std::printf(
      "{\"impl\": \"m3d\", \"model\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"load_s\": %.2f, \"encode_s\": %.3f, \"prompt_tokens\": %lld, "
      "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.3f, \"weight_gb_per_token\": %.3f, \"read_gb_s\": %.1f, \"roofline_tok_s\": %.3f, "
      "\"of_roofline\": %.2f, \"peak_rss_gb\": %.2f}\n",
      o.model.c_str(), o.dtype.c_str(), at::get_num_threads(), load_s, median(encode_s), static_cast<long long>(prompt), median(prefill_tps),
      median(decode_tps), bytes / 1e9, read_gbs, roofline, median(decode_tps) / roofline, m3d::bench::peak_rss_gb());
  return 0;
}
