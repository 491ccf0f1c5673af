// One LaMed stage-2 training step (LoRA on the LLM; ViT, projector, embeddings and
// lm_head in full), as m3d train lamed runs it: forward of image + sequence, the
// causal-LM loss on the answer tokens, backward, clip_grad_norm, AdamW. The model is
// M3D-LaMed-Phi-3-4B-shaped (Phi-3-mini width 3072 / 32 heads / MLP 8192, vocab 32015,
// ViT-B/3D 768 wide on 32x256x256) with random weights and, on a CPU, fewer layers.
// bench/lamed_train_reference.py times transformers + peft + MONAI on the same step.
// Prints one JSON line.
//   bench_lamed_train [--llm-layers N] [--vit-layers N] [--batch B] [--seq L] [--answer A]
//                     [--lora-r R] [--repeat K] [--device cpu|cuda] [--dtype f32|bf16]
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "io/hf_config.h"
#include "m3d/runtime.h"
#include "models/causal_lm.h"
#include "models/layers.h"
#include "models/lora.h"
#include "models/presets.h"
#include "train/lamed_train.h"
#include "train/optim.h"

int main(int argc, char** argv) {
  int64_t llm_layers = 2, vit_layers = 2, batch = 1, seq = 512, answer = 128, lora_r = 8, repeat = 3;
  std::string device_name = "cpu", dtype_name = "f32";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--llm-layers") llm_layers = std::stoll(value);
    else if (flag == "--vit-layers") vit_layers = std::stoll(value);
    else if (flag == "--batch") batch = std::stoll(value);
    else if (flag == "--seq") seq = std::stoll(value);
    else if (flag == "--answer") answer = std::stoll(value);
    else if (flag == "--lora-r") lora_r = std::stoll(value);
    else if (flag == "--repeat") repeat = std::stoll(value);
    else if (flag == "--device") device_name = value;
    else if (flag == "--dtype") dtype_name = value;
    else return std::fprintf(stderr, "unknown option %s\n", flag.c_str()), 2;
  }
  m3d::runtime_set_threads();
  const c10::Device device(device_name);
  const auto dtype = dtype_name == "bf16" ? torch::kBFloat16 : torch::kFloat;
  nlohmann::json config = m3d::models::preset_config("lamed-phi3-4b");
  config["num_hidden_layers"] = llm_layers;
  config["vision_num_layers"] = vit_layers;
  const std::string dir = (std::filesystem::temp_directory_path() / "m3d_bench_lamed_train").string();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << config.dump();
  torch::manual_seed(0);
  auto lm = m3d::models::model_build(m3d::io::hf_config_read(dir + "/config.json"), "bench config");
  {  // random weights at a trained model's scale, norms at identity
    torch::NoGradGuard no_grad;
    for (const auto& item : lm->named_parameters()) {
      auto t = item.value();
      if (item.key().find("norm") != std::string::npos && item.key().find("weight") != std::string::npos) t.fill_(1);
      else t.normal_(0, 0.02);
    }
  }
  m3d::models::LoraConfig lora;
  lora.r = lora_r;
  lora.alpha = 2.0 * static_cast<double>(lora_r);
  lora.dropout = 0.05;
  m3d::models::lora_apply(*lm, lora);
  lm->to(device, dtype);
  lm->train();
  m3d::train::lamed_set_trainable(*lm, m3d::train::LamedStage::Finetune);
  auto parameters = m3d::train::trainable_parameters(*lm);
  int64_t trainable = 0;
  for (const auto& p : parameters) trainable += p.tensor.numel();
  m3d::train::AdamW optimizer(parameters, {});
  const auto images = torch::rand({batch, 1, 32, 256, 256}).to(device, dtype);
  auto ids = torch::randint(3, 32000, {batch, seq}, torch::kLong);
  ids.slice(1, 1, 257).fill_(32011);  // <im_patch>
  ids.select(1, 0).fill_(1);
  auto labels = torch::full({batch, seq}, -100, torch::kLong);
  labels.slice(1, seq - answer).copy_(ids.slice(1, seq - answer));
  const auto mask = torch::ones({batch, seq}, torch::kLong);
  ids = ids.to(device), labels = labels.to(device);
  std::vector<double> step_s;
  double loss_value = 0;
  for (int64_t r = 0; r < repeat + 1; ++r) {  // the first is a warm-up
    if (device.is_cuda()) torch::cuda::synchronize();
    const auto start = std::chrono::steady_clock::now();
    const auto loss = m3d::train::lamed_lm_loss(*lm, images, ids, mask, labels);
    loss.backward();
    m3d::train::clip_grad_norm(parameters, 1.0);
    optimizer.step(5e-5);
    optimizer.zero_grad();
    loss_value = loss.item<double>();
    if (device.is_cuda()) torch::cuda::synchronize();
    if (r > 0) step_s.push_back(m3d::bench::seconds_since(start));
  }
  const double median = m3d::bench::median(step_s);
  std::printf("%s\n", nlohmann::json{{"impl", "m3d"},
                                     {"llm_layers", llm_layers},
                                     {"vit_layers", vit_layers},
                                     {"batch", batch},
                                     {"seq", seq},
                                     {"answer_tokens", answer},
                                     {"lora_r", lora_r},
                                     {"trainable_params", trainable},
                                     {"device", device_name},
                                     {"dtype", dtype_name},
                                     {"loss", loss_value},
                                     {"step_s", step_s},
                                     {"median_step_s", median},
                                     {"samples_per_s", static_cast<double>(batch) / median},
                                     {"threads", at::get_num_threads()}}
                          .dump()
                          .c_str());
  return 0;
}
