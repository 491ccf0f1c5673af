// One real-size M3D-CLIP training step (ViT-B/3D on 32x256x256 + BERT-base, random
// weights, nce loss, backward, clip_grad_norm, AdamW), as m3d train clip runs it.
// Reports pairs per second; bench/clip_reference.py times the official PyTorch code on
// the same batch. Prints one JSON line.
//   bench_clip REPORTS.json [--batch B] [--repeat R] [--pad-to N] [--bf16] [--gradient-checkpointing]
// REPORTS.json: {"lengths": [token counts of the batch's reports]} (from the reference
// script, which tokenizes real reports); --pad-to 512 pads like the official collator,
// 0 (default) pads to the batch's longest report as m3d's loader does. --bf16: forward under bf16
// autocast; --gradient-checkpointing: ViT blocks recompute in the backward. Peak RSS is reported.
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "m3d/runtime.h"
#include "models/autocast.h"
#include "models/clip.h"
#include "train/optim.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_clip REPORTS.json [--batch B] [--repeat R] [--pad-to N]\n");
    return 2;
  }
  int64_t batch = 2, repeat = 3, pad_to = 0;
  bool bf16 = false, checkpointing = false;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--bf16") bf16 = true;
    else if (flag == "--gradient-checkpointing") checkpointing = true;
    else if (i + 1 >= argc) return std::fprintf(stderr, "%s needs a value\n", flag.c_str()), 2;
    else if (flag == "--batch") batch = std::stoll(argv[++i]);
    else if (flag == "--repeat") repeat = std::stoll(argv[++i]);
    else if (flag == "--pad-to") pad_to = std::stoll(argv[++i]);
    else return std::fprintf(stderr, "unknown flag %s\n", flag.c_str()), 2;
  }
  m3d::runtime_set_threads();
  const auto lengths = nlohmann::json::parse(std::ifstream(argv[1]))["lengths"].get<std::vector<int64_t>>();
  if (static_cast<int64_t>(lengths.size()) < batch) return std::fprintf(stderr, "need %lld report lengths\n", static_cast<long long>(batch)), 2;
  m3d::models::ClipConfig config;  // the released M3D-CLIP: ViT-B/3D 32x256x256, bert-base-uncased
  config.text.vocab_size = 30522;
  torch::manual_seed(0);
  m3d::models::ClipModel model(config);
  {  // random weights at a trained model's scale: LayerNorms at identity (near-zero norm weights would
    // shrink activations into denormal floats, which the CPU computes far more slowly)
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.02);
    for (const auto& item : model->named_modules()) {
      if (auto* norm = dynamic_cast<m3d::models::LayerNormImpl*>(item.value().get())) norm->weight.fill_(1), norm->bias.zero_();
    }
  }
  model->train();
  model->vision_encoder->set_gradient_checkpointing(checkpointing);
  auto parameters = m3d::train::trainable_parameters(*model);
  m3d::train::AdamWOptions adam;
  adam.weight_decay = 0.1;
  m3d::train::AdamW optimizer(parameters, adam);
  const auto images = torch::rand({batch, 1, 32, 256, 256});
  int64_t width = pad_to;
  for (int64_t i = 0; i < batch; ++i) width = std::max(width, lengths[static_cast<size_t>(i)]);
  auto ids = torch::zeros({batch, width}, torch::kLong), mask = torch::zeros({batch, width}, torch::kLong);
  for (int64_t i = 0; i < batch; ++i) {
    ids[i].slice(0, 0, lengths[static_cast<size_t>(i)]).random_(1000, 30000);
    mask[i].slice(0, 0, lengths[static_cast<size_t>(i)]).fill_(1);
  }
  std::vector<double> step_s;
  std::map<std::string, std::vector<double>> phase_s;  // where a step's time goes
  for (int64_t r = 0; r < repeat + 1; ++r) {  // the first is a warm-up
    const auto start = std::chrono::steady_clock::now();
    auto mark = start;
    auto phase = [&](const char* name) {
      if (r > 0) phase_s[name].push_back(m3d::bench::seconds_since(mark));
      mark = std::chrono::steady_clock::now();
    };
    torch::Tensor loss;
    {
      m3d::models::AutocastGuard autocast(bf16, torch::kCPU);
      const auto image_features = model->encode_image(images);
      phase("image_forward");
      const auto text_features = model->encode_text(ids, mask);
      phase("text_forward");
      loss = model->loss(image_features, text_features);
    }
    loss.backward();
    phase("backward");
    m3d::train::clip_grad_norm(parameters, 1.0);
    optimizer.step(1e-4);
    optimizer.zero_grad();
    phase("clip_and_adamw");
    if (r > 0) step_s.push_back(m3d::bench::seconds_since(start));
  }
  nlohmann::json phases;
  for (const auto& [name, seconds] : phase_s) phases[name] = m3d::bench::median(seconds);
  const double median = m3d::bench::median(step_s);
  std::printf("%s\n", nlohmann::json{{"impl", "m3d"},
                                     {"batch", batch},
                                     {"text_tokens", width},
                                     {"step_s", step_s},
                                     {"median_step_s", median},
                                     {"pairs_per_s", static_cast<double>(batch) / median},
                                     {"median_phase_s", phases},
                                     {"bf16", bf16},
                                     {"gradient_checkpointing", checkpointing},
                                     {"peak_rss_gb", m3d::bench::peak_rss_gb()},
                                     {"threads", at::get_num_threads()}}
                          .dump()
                          .c_str());
  return 0;
}
