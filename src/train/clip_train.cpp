// The CLIP training loop (see clip_train.h). Every random choice -- epoch order,
// augmentation, report truncation -- is drawn from (seed, epoch, sample index), so a
// run is the same whatever the number of ranks and loader threads, and a resumed run
// continues exactly: the checkpoint holds weights, AdamW moments and the step.
// Letters: W ranks, B per-rank batch, A accumulation steps, G = B W A global batch.
#include "train/clip_train.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "data/m3d_data.h"
#include "data/retrieval.h"
#include "imaging/model_input.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/clip.h"
#include "text/report.h"
#include "text/tokenizer.h"
#include "train/distributed.h"
#include "train/optim.h"

namespace m3d::train {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The `split` pairs of the M3D-Cap json of `source` (a data root or the json itself), at most `limit`.
std::vector<data::CapPair> cap_pairs(const std::string& source, const std::string& split, int64_t limit) {
  const data::CapFile file = data::cap_find(source);
  std::vector<data::CapPair> pairs = data::cap_read(file, split, limit);
  if (pairs.empty()) fail("{}: the \"{}\" split is empty", file.json, split);
  return pairs;
}

// Loads, resizes, augments and tokenizes; keeps resized volumes when asked.
class Loader {
 public:
  Loader(std::vector<data::CapPair> samples, const text::Tokenizer& tokenizer, const models::Vit3dConfig& vision, const ClipTrainConfig& config, bool train)
      : samples_(std::move(samples)), tokenizer_(tokenizer), vision_(vision), config_(config), train_(train) {}

  size_t size() const { return samples_.size(); }

  Batch batch(const std::vector<int64_t>& indices, int64_t epoch) {
    std::vector<torch::Tensor> images;
    std::vector<std::vector<int64_t>> ids;
    size_t longest = 0;
    for (int64_t index : indices) {
      torch::Tensor image = volume(index);
      std::string report = read_text_file(samples_[static_cast<size_t>(index)].text);
      if (train_) {
        auto rng = sample_rng(config_.seed, 1, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
        if (config_.augment) image = augment(image, rng);
        report = text::report_truncate(report, tokenizer_, config_.max_length, rng);
      }
      images.push_back(image);
      auto tokens = tokenizer_.encode(report);
      text::truncate_keeping_last(tokens, config_.max_length);
      longest = std::max(longest, tokens.size());
      ids.push_back(std::move(tokens));
    }
    // Padded to the longest report of the batch (the official pads to max_length;
    // the attention mask makes the [CLS] output the same).
    auto input_ids = torch::zeros({static_cast<int64_t>(ids.size()), static_cast<int64_t>(longest)}, torch::kLong);
    auto mask = torch::zeros_like(input_ids);
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto n = static_cast<int64_t>(ids[i].size());
      input_ids[static_cast<int64_t>(i)].slice(0, 0, n).copy_(torch::tensor(ids[i], torch::kLong));
      mask[static_cast<int64_t>(i)].slice(0, 0, n).fill_(1);
    }
    return {torch::stack(images), input_ids, mask, {}};
  }

 private:
  torch::Tensor volume(int64_t index) {
    if (config_.cache_images) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (auto it = cache_.find(index); it != cache_.end()) return it->second;
    }
    torch::Tensor image = load_model_volume(samples_[static_cast<size_t>(index)].image, vision_.in_channels,
                                            std::vector<int64_t>(vision_.img_size.begin(), vision_.img_size.end()));
    if (config_.cache_images) {
      std::lock_guard<std::mutex> lock(mutex_);
      cache_[index] = image;
    }
    return image;
  }

  std::vector<data::CapPair> samples_;
  const text::Tokenizer& tokenizer_;
  models::Vit3dConfig vision_;
  const ClipTrainConfig& config_;
  bool train_;
  std::mutex mutex_;
  std::map<int64_t, torch::Tensor> cache_;
};

// MONAI ViT's initialisation for a ViT trained from scratch: truncated normal (0.02)
// for the patch projection and positions, zero cls token and biases there, PyTorch's
// default Linear init in the blocks, LayerNorms at identity; default Linear init for
// the projections.
void init_from_scratch(models::ClipModelImpl& model) {
  torch::NoGradGuard no_grad;
  auto linear_default = [](models::LinearImpl& linear) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(linear.weight.size(1)));
    linear.weight.uniform_(-bound, bound);
    if (linear.bias.defined()) linear.bias.uniform_(-bound, bound);
  };
  for (const auto& item : model.vision_encoder->named_modules()) {
    if (auto* linear = dynamic_cast<models::LinearImpl*>(item.value().get())) linear_default(*linear);
    if (auto* norm = dynamic_cast<models::LayerNormImpl*>(item.value().get())) {
      norm->weight.fill_(1);
      norm->bias.fill_(0);
    }
  }
  auto& patch = *model.vision_encoder->patch_embedding;
  patch.linear->weight.normal_(0, 0.02).clamp_(-2, 2);
  patch.linear->bias.zero_();
  patch.position_embeddings.normal_(0, 0.02).clamp_(-2, 2);
  model.vision_encoder->cls_token.zero_();
  linear_default(*model.mm_vision_proj);
  linear_default(*model.mm_language_proj);
}

json evaluate(models::ClipModelImpl& model, Loader& loader, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  std::vector<torch::Tensor> images, texts;
  for (size_t start = 0; start < loader.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<int64_t> indices;
    for (size_t i = start; i < std::min(loader.size(), start + static_cast<size_t>(batch_size)); ++i) indices.push_back(static_cast<int64_t>(i));
    const Batch b = loader.batch(indices, 0);
    images.push_back(model.encode_image(b.images));
    texts.push_back(model.encode_text(b.input_ids, b.attention_mask));
  }
  model.train(was_training);
  const auto similarity = torch::matmul(torch::cat(images), torch::cat(texts).t()).to(torch::kFloat).contiguous();
  const int64_t n = similarity.size(0);
  const std::vector<float> values(similarity.data_ptr<float>(), similarity.data_ptr<float>() + similarity.numel());
  json out = {{"samples", n}};
  for (int64_t k : {1, 5, 10}) {
    out[fmt::format("image_to_text_R@{}", k)] = data::recall_at_k(values, n, k);
    out[fmt::format("text_to_image_R@{}", k)] = data::recall_at_k_transposed(values, n, k);
  }
  return out;
}

}  // namespace

ClipTrainConfig ClipTrainConfig::from_json(const json& c, const std::string& where) {
  ClipTrainConfig t;
  static const std::set<std::string> known = {"init",       "text_init",  "model",      "tokenizer", "freeze",       "data",       "train_split",
                                              "eval_split", "eval_limit", "max_length", "augment",   "cache_images", "description"};
  for (const auto& [key, value] : c.items()) {
    const auto& schedule = schedule_keys();
    if (!known.count(key) && std::find(schedule.begin(), schedule.end(), key) == schedule.end()) fail("{}: unknown training option '{}'", where, key);
  }
  try {
    t.init = c.value("init", t.init);
    t.text_init = c.value("text_init", t.text_init);
    t.model = c.value("model", json());
    t.tokenizer = c.value("tokenizer", t.tokenizer);
    t.freeze = c.value("freeze", t.freeze);
    t.data = c.value("data", t.data);
    t.train_split = c.value("train_split", t.train_split);
    t.eval_split = c.value("eval_split", t.eval_split);
    t.eval_limit = c.value("eval_limit", t.eval_limit);
    t.max_length = c.value("max_length", t.max_length);
    t.augment = c.value("augment", t.augment);
    t.cache_images = c.value("cache_images", t.cache_images);
    t.read_schedule(c, where);
  } catch (const json::exception& e) { fail("{}: malformed training config: {}", where, e.what()); }
  if (t.init.empty() && t.model.is_null()) fail("{}: give \"init\" (an M3D-CLIP checkpoint) or \"model\" (a CLIP config)", where);
  if (t.max_length < 3) fail("{}: max_length must be at least 3", where);
  return t;
}

json ClipTrainConfig::to_json() const {
  json out = {{"init", init},       {"text_init", text_init},      {"model", model},           {"tokenizer", tokenizer},   {"freeze", freeze},
              {"data", data},       {"train_split", train_split},  {"eval_split", eval_split}, {"eval_limit", eval_limit}, {"max_length", max_length},
              {"augment", augment}, {"cache_images", cache_images}};
  out.update(schedule_json());
  return out;
}

std::vector<std::string> clip_train_presets() { return {"m3d-clip", "siglip", "tiny"}; }

json clip_train_preset(const std::string& name) {
  const json m3d_model = {{"model_type", "m3d_clip"},  {"in_channels", 1},   {"img_size", {32, 256, 256}}, {"patch_size", {4, 16, 16}},
                          {"hidden_size", 768},        {"mlp_dim", 3072},    {"num_layers", 12},           {"num_heads", 12},
                          {"pos_embed", "perceptron"}, {"loss_type", "nce"}, {"gather_loss", true},        {"local_loss", false}};
  if (name == "m3d-clip") {  // LaMed/script/train_clip.sh
    return {{"description", "M3D-CLIP as released: ViT-B/3D from scratch, bert-base-uncased, 100 epochs, batch 32 per GPU, lr 1e-4, wd 0.1"},
            {"model", m3d_model},
            {"text_init", "bert-base-uncased"},
            {"epochs", 100},
            {"batch_size", 32},
            {"lr", 1e-4},
            {"weight_decay", 0.1},
            {"warmup_ratio", 0.03},
            {"max_length", 512},
            {"save_steps", 1000},
            {"eval_fraction", 0.04}};
  }
  if (name == "siglip") {  // Med3DVLM scripts/train_clip.sh's settings, on the M3D-CLIP towers
    json model = m3d_model;
    model["loss_type"] = "sigmoid";
    return {{"description", "the sigmoid (SigLIP) loss with Med3DVLM's settings (batch 64, 100 epochs, lr 1e-4, wd 0.1) on the M3D-CLIP towers"},
            {"model", model},
            {"text_init", "bert-base-uncased"},
            {"epochs", 100},
            {"batch_size", 64},
            {"lr", 1e-4},
            {"weight_decay", 0.1},
            {"warmup_ratio", 0.03},
            {"max_length", 512},
            {"save_steps", 1000},
            {"eval_fraction", 0.04}};
  }
  if (name == "tiny") {
    json model = m3d_model;
    model["img_size"] = {16, 64, 64};
    model["patch_size"] = {4, 16, 16};
    model["hidden_size"] = 192;
    model["mlp_dim"] = 384;
    model["num_layers"] = 4;
    model["num_heads"] = 4;
    // M3D's scale (2.66, not exponentiated) barely moves in a short run and keeps the
    // softmax too soft for R@1; the tiny run starts it at 10 (temperature 0.1).
    model["logit_scale_init"] = 10.0;
    return {{"description",
             "one CPU: a 4-layer ViT (192 wide) on 16x64x64 volumes from scratch; the 6-layer MiniLM text tower with its "
             "embeddings and first 4 layers frozen; reports truncated to 64 tokens the official way; logit scale from 10"},
            {"model", model},
            {"text_init", "third_party/models/all-MiniLM-L6-v2"},
            {"freeze",
             {"language_encoder.embeddings", "language_encoder.encoder.layer.0.", "language_encoder.encoder.layer.1.", "language_encoder.encoder.layer.2.",
              "language_encoder.encoder.layer.3."}},
            {"epochs", 20},
            {"batch_size", 32},
            {"lr", 3e-4},
            {"weight_decay", 0.1},
            {"warmup_ratio", 0.05},
            {"max_length", 64},
            {"cache_images", true},
            {"save_steps", 50},
            {"eval_fraction", 0.25},
            {"eval_limit", 100},
            {"eval_split", "test"}};
  }
  std::string names;
  for (const auto& n : clip_train_presets()) names += (names.empty() ? "" : ", ") + n;
  fail("unknown training preset '{}' (presets: {})", name, names);
}

TrainResult clip_train(const ClipTrainConfig& config, const TrainRunOptions& options) {
  const DistEnv env = DistEnv::from_environment();
  std::unique_ptr<Communicator> comm;
  if (env.world_size > 1) comm = std::make_unique<Communicator>(env);
  const bool main_rank = env.is_main();
  if (config.output_dir.empty()) fail("training: no output_dir");
  if (main_rank) fs::create_directories(config.output_dir);

  // The model.
  torch::manual_seed(config.seed);
  models::ClipModel model{nullptr};
  std::string tokenizer_dir = config.tokenizer;
  if (!config.init.empty()) {
    model = models::clip_load(config.init);
    if (model->config().model_type == "dec_clip") fail("{}: training DCFormer_SigLIP (dec_clip) is not supported yet", config.init);
    if (tokenizer_dir.empty()) tokenizer_dir = config.init;
  } else {
    models::ClipConfig clip = models::ClipConfig::from_json(config.model, "training config \"model\"");
    if (clip.model_type == "dec_clip") fail("training config \"model\": training DCFormer_SigLIP (dec_clip) is not supported yet");
    std::unique_ptr<io::Checkpoint> text_ckpt;
    if (!config.text_init.empty()) {
      if (!fs::exists(config.text_init + "/config.json")) {
        fail("text_init '{}': no BERT checkpoint there (config.json missing); the official run uses bert-base-uncased", config.text_init);
      }
      clip.text = models::BertConfig::from_json(io::json_read_file(config.text_init + "/config.json"), config.text_init + "/config.json");
      text_ckpt = std::make_unique<io::Checkpoint>(io::checkpoint_open(config.text_init));
      if (tokenizer_dir.empty()) tokenizer_dir = config.text_init;
    }
    model = models::ClipModel(clip);
    init_from_scratch(*model);
    if (text_ckpt) {
      io::LoadOptions load;
      load.prefix = models::bert_checkpoint_prefix(*text_ckpt);
      load.whole_checkpoint = false;
      load.ignore = {"embeddings.position_ids"};
      io::state_dict_load(*model->language_encoder, *text_ckpt, load);
    } else {
      torch::NoGradGuard no_grad;  // a text tower from scratch: BERT's init
      for (auto& p : model->language_encoder->parameters()) p.normal_(0, 0.02);
      for (const auto& item : model->language_encoder->named_modules()) {
        if (auto* norm = dynamic_cast<models::LayerNormImpl*>(item.value().get())) norm->weight.fill_(1), norm->bias.fill_(0);
      }
    }
  }
  if (tokenizer_dir.empty()) fail("training: no tokenizer (give \"tokenizer\", \"text_init\" or \"init\")");
  const text::Tokenizer tokenizer = text::Tokenizer::load(tokenizer_dir);
  model->train();
  model->vision_encoder->set_gradient_checkpointing(config.gradient_checkpointing);
  for (const auto& prefix : config.freeze) {
    size_t matched = 0;
    for (auto& item : model->named_parameters()) {
      if (item.key().rfind(prefix, 0) == 0) item.value().requires_grad_(false), ++matched;
    }
    if (matched == 0) fail("training: \"freeze\" prefix '{}' matches no parameter", prefix);
  }
  if (comm) {  // every rank starts from rank 0's weights
    for (auto& p : model->parameters()) comm->broadcast(p, 0);
  }
  auto parameters = trainable_parameters(*model);
  AdamWOptions adam;
  adam.lr = config.lr;
  adam.weight_decay = config.weight_decay;
  AdamW optimizer(parameters, adam);

  // The data and the schedule.
  Loader train_data(cap_pairs(config.data, config.train_split, -1), tokenizer, model->config().vision, config, true);
  const LoopSettings settings = config.loop_settings(train_data.size(), env.world_size, config.to_json());
  const int64_t B = config.batch_size;
  std::unique_ptr<Loader> eval_data;
  if (main_rank && !config.eval_split.empty()) {
    eval_data = std::make_unique<Loader>(cap_pairs(config.data, config.eval_split, config.eval_limit), tokenizer, model->config().vision, config, false);
  }

  LoopHooks hooks;
  hooks.load = [&train_data](const std::vector<int64_t>& indices, int64_t epoch) { return train_data.batch(indices, epoch); };
  hooks.loss = [&](const Batch& batch) {
    auto image_features = model->encode_image(batch.images);
    auto text_features = model->encode_text(batch.input_ids, batch.attention_mask);
    if (comm) {  // the loss over the whole micro-batch of all ranks; gradients flow through this rank's rows
      auto splice = [&](const torch::Tensor& local) {
        const auto all = comm->all_gather(local);
        return torch::cat({all.slice(0, 0, env.rank * B), local, all.slice(0, (env.rank + 1) * B)});
      };
      image_features = splice(image_features);
      text_features = splice(text_features);
    }
    return model->loss(image_features, text_features);
  };
  if (eval_data) hooks.evaluate = [&] { return evaluate(*model, *eval_data, B); };
  hooks.save_files = [&](const std::string& dir) {
    io::write_file_atomic(dir + "/config.json", model->config().to_json().dump(2) + "\n");
    copy_tokenizer_files(tokenizer_dir, dir);
  };
  return training_loop(settings, *model, optimizer, comm.get(), env, hooks, options);
}

json clip_evaluate(const std::string& checkpoint_dir, const std::string& data, const std::string& split, int64_t limit) {
  models::ClipModel model = models::clip_load(checkpoint_dir);
  const text::Tokenizer tokenizer = text::Tokenizer::load(checkpoint_dir);
  ClipTrainConfig config;
  config.init = checkpoint_dir;
  Loader loader(cap_pairs(data, split, limit), tokenizer, model->config().vision, config, false);
  return evaluate(*model, loader, 8);
}

}  // namespace m3d::train
