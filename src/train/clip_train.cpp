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
  // Volumes are resized to the model's grid (the ViT's img_size or the DCFormer's input_size).
  Loader(std::vector<data::CapPair> samples, const text::Tokenizer& tokenizer, const models::ClipConfig& model, const ClipTrainConfig& config, bool train)
      : samples_(std::move(samples)),
        tokenizer_(tokenizer),
        channels_(model.image_channels()),
        grid_(std::vector<int64_t>{model.image_size()[0], model.image_size()[1], model.image_size()[2]}),
        config_(config),
        train_(train) {}

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
    torch::Tensor image = load_model_volume(samples_[static_cast<size_t>(index)].image, channels_, grid_);
    if (config_.cache_images) {
      std::lock_guard<std::mutex> lock(mutex_);
      cache_[index] = image;
    }
    return image;
  }

  std::vector<data::CapPair> samples_;
  const text::Tokenizer& tokenizer_;
  int64_t channels_;
  std::vector<int64_t> grid_;
  const ClipTrainConfig& config_;
  bool train_;
  std::mutex mutex_;
  std::map<int64_t, torch::Tensor> cache_;
};

// PyTorch's default initialisation of nn.Linear and nn.Conv3d (kaiming_uniform with
// a = sqrt(5), and the bias bound it implies): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void init_uniform_fan_in(torch::Tensor weight, torch::Tensor bias) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(weight[0].numel()));
  weight.uniform_(-bound, bound);
  if (bias.defined()) bias.uniform_(-bound, bound);
}

// MONAI ViT's initialisation for a ViT trained from scratch: truncated normal (0.02)
// for the patch projection and positions, zero cls token and biases there, PyTorch's
// default Linear init in the blocks, LayerNorms at identity.
void init_vit_from_scratch(models::Vit3dImpl& vit) {
  for (const auto& item : vit.named_modules()) {
    if (auto* linear = dynamic_cast<models::LinearImpl*>(item.value().get())) init_uniform_fan_in(linear->weight, linear->bias);
    if (auto* norm = dynamic_cast<models::LayerNormImpl*>(item.value().get())) {
      norm->weight.fill_(1);
      norm->bias.fill_(0);
    }
  }
  auto& patch = *vit.patch_embedding;
  patch.linear->weight.normal_(0, 0.02).clamp_(-2, 2);
  patch.linear->bias.zero_();
  patch.position_embeddings.normal_(0, 0.02).clamp_(-2, 2);
  vit.cls_token.zero_();
}

// DCFormer from scratch as the official DEC_CLIP(config) gets it: dcformer.py sets no
// initialisation and DEC_CLIP never calls post_init, so PyTorch's defaults: Conv3d and
// Linear as above, BatchNorm at identity with running statistics (0, 1), and the
// layer scales at ConvBlock's layer_scale_init_value 1e-6.
void init_dcformer_from_scratch(models::DcformerImpl& dcformer) {
  for (const auto& item : dcformer.named_modules()) {
    torch::nn::Module* m = item.value().get();
    if (auto* linear = dynamic_cast<models::LinearImpl*>(m)) init_uniform_fan_in(linear->weight, linear->bias);
    if (auto* branch = dynamic_cast<models::DecompBranchImpl*>(m)) init_uniform_fan_in(branch->weight, branch->bias);
    if (auto* block = dynamic_cast<models::ConvBlockImpl*>(m)) {
      if (block->proj.defined()) init_uniform_fan_in(block->proj, {});
      block->scale.fill_(1e-6);
    }
    if (auto* norm = dynamic_cast<models::BatchNorm3dImpl*>(m)) {
      norm->weight.fill_(1);
      norm->bias.fill_(0);
      norm->running_mean.fill_(0);
      norm->running_var.fill_(1);
      if (norm->num_batches_tracked.defined()) norm->num_batches_tracked.zero_();
    }
  }
}

// The vision tower and the projections from scratch (default Linear init for those).
void init_from_scratch(models::ClipModelImpl& model) {
  torch::NoGradGuard no_grad;
  if (model.dcformer_encoder) {
    init_dcformer_from_scratch(*model.dcformer_encoder);
  } else {
    init_vit_from_scratch(*model.vision_encoder);
  }
  init_uniform_fan_in(model.mm_vision_proj->weight, model.mm_vision_proj->bias);
  init_uniform_fan_in(model.mm_language_proj->weight, model.mm_language_proj->bias);
}

// The text tower: `text_init`'s weights (strict within the encoder; a *ForMaskedLM
// head and, for a tower built without one, the pooler are not loaded), else BERT's
// initialisation.
void init_text_tower(models::ClipModelImpl& model, const io::Checkpoint* text_checkpoint) {
  if (text_checkpoint) {
    io::LoadOptions load;
    load.prefix = models::bert_checkpoint_prefix(*text_checkpoint);
    load.whole_checkpoint = false;
    load.ignore = {"embeddings.position_ids"};
    if (!model.language_encoder->has_pooler()) load.ignore.push_back("pooler.");
    io::state_dict_load(*model.language_encoder, *text_checkpoint, load);
    return;
  }
  torch::NoGradGuard no_grad;
  for (auto& p : model.language_encoder->parameters()) p.normal_(0, 0.02);
  for (const auto& item : model.language_encoder->named_modules()) {
    if (auto* norm = dynamic_cast<models::LayerNormImpl*>(item.value().get())) norm->weight.fill_(1), norm->bias.fill_(0);
  }
}

// The model a run starts from: `init` (M3D-CLIP or DCFormer_SigLIP, to fine-tune), or
// `model` from scratch with the text tower from `text_init`. Fills `tokenizer_dir`
// when the config leaves it empty.
models::ClipModel clip_model_start(const ClipTrainConfig& config, std::string& tokenizer_dir) {
  if (!config.init.empty()) {
    if (tokenizer_dir.empty()) tokenizer_dir = config.init;
    return models::clip_load(config.init);
  }
  models::ClipConfig clip = models::ClipConfig::from_json(config.model, "training config \"model\"");
  const bool dec_clip = clip.model_type == "dec_clip";
  std::unique_ptr<io::Checkpoint> text_checkpoint;
  if (!config.text_init.empty()) {
    if (!fs::exists(config.text_init + "/config.json")) {
      fail("text_init '{}': no BERT-family checkpoint there (config.json missing); download one (the official run uses {}) and give its folder",
           config.text_init, dec_clip ? "medicalai/ClinicalBERT" : "bert-base-uncased");
    }
    clip.text = models::BertConfig::from_json(io::json_read_file(config.text_init + "/config.json"), config.text_init + "/config.json");
    if (dec_clip) clip.language_model_name_or_path = config.text_init;
    text_checkpoint = std::make_unique<io::Checkpoint>(io::checkpoint_open(config.text_init));
    if (tokenizer_dir.empty()) tokenizer_dir = config.text_init;
  }
  models::ClipModel model(clip);
  init_from_scratch(*model);
  init_text_tower(*model, text_checkpoint.get());
  return model;
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
  if (t.init.empty() && t.model.is_null()) fail("{}: give \"init\" (an M3D-CLIP or DCFormer_SigLIP checkpoint) or \"model\" (a CLIP config)", where);
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

namespace {

// Med3DVLM's DCFormer_SigLIP run (scripts/train_clip.sh, med3dvlm_spec.md §2.4) and a
// small DCFormer for one CPU; null for other names.
json med3dvlm_preset(const std::string& name) {
  const json released = {{"model_type", "dec_clip"}, {"vision_encoder", "dcformer"}, {"input_size", {256, 256, 128}},  // (H, W, D): 128x256x256
                         {"hidden_size", 768},       {"loss_type", "sigmoid"},       {"t_prime", std::log(1 / 0.07)}, {"bias", 0.0},
                         {"gather_loss", true},      {"local_loss", false}};
  if (name == "med3dvlm-siglip") {
    return {{"description",
             "DCFormer_SigLIP as released: decomp_small from scratch on 128x256x256, medicalai/ClinicalBERT (a local folder), sigmoid loss, "
             "100 epochs, batch 64 per GPU, lr 1e-4, wd 0.1, no evaluation (the official run used DeepSpeed bf16; here f32)"},
            {"model", released},
            {"text_init", "medicalai/ClinicalBERT"},
            {"epochs", 100},
            {"batch_size", 64},
            {"lr", 1e-4},
            {"weight_decay", 0.1},
            {"warmup_ratio", 0.03},
            {"max_length", 512},
            {"save_steps", 1000},
            {"save_total_limit", 1},
            {"eval_fraction", 0},
            {"workers", 4}};
  }
  if (name == "med3dvlm-tiny") {  // the tiny run's text tower, freeze list and schedule, with a DCFormer
    json model = released;
    model["input_size"] = {128, 128, 16};  // (H, W, D): 16x128x128
    model["dcformer_num_blocks"] = {1, 1, 1, 1, 1};
    model["dcformer_channels"] = {8, 16, 32, 64, 128};
    model["hidden_size"] = 256;
    // The released init (t' = ln(1/0.07), b = 0) starts every off-diagonal logit near
    // +14 once the untrained features agree; AdamW moves b by about lr a step, far too
    // slowly for a short run. SigLIP's own init (Zhai et al. 2023: t' = ln 10, b = -10).
    model["t_prime"] = std::log(10.0);
    model["bias"] = -10.0;
    json preset = clip_train_preset("tiny");
    preset["description"] =
        "one CPU: a 5-stage DCFormer (8..128 channels, one block each) on 16x128x128 volumes from scratch; the 6-layer MiniLM text tower "
        "with its embeddings and first 4 layers frozen; sigmoid loss from SigLIP's init (t' = ln 10, b = -10); reports truncated to 64 tokens the official way";
    preset["model"] = model;
    preset["epochs"] = 40;
    preset["lr"] = 1e-3;
    return preset;
  }
  return nullptr;
}

}  // namespace

std::vector<std::string> clip_train_presets() { return {"m3d-clip", "siglip", "tiny", "med3dvlm-siglip", "med3dvlm-tiny"}; }

json clip_train_preset(const std::string& name) {
  if (json preset = med3dvlm_preset(name); !preset.is_null()) return preset;
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
  std::string tokenizer_dir = config.tokenizer;
  models::ClipModel model = clip_model_start(config, tokenizer_dir);
  const bool dcformer = model->config().model_type == "dec_clip";
  if (tokenizer_dir.empty()) fail("training: no tokenizer (give \"tokenizer\", \"text_init\" or \"init\")");
  const text::Tokenizer tokenizer = text::Tokenizer::load(tokenizer_dir);
  model->train();  // the DCFormer's BatchNorm on batch statistics, updating its running ones, as HF Trainer's
  if (dcformer && config.gradient_checkpointing) fail("training: gradient_checkpointing is available for the ViT only, not for a DCFormer; set it false");
  if (dcformer && config.bf16) {
    fail("training: bf16 autocast is not supported for a DCFormer (its train-mode BatchNorm keeps f32 running statistics of f32 activations); set it false");
  }
  if (!dcformer) model->vision_encoder->set_gradient_checkpointing(config.gradient_checkpointing);
  for (const auto& prefix : config.freeze) {
    size_t matched = 0;
    for (auto& item : model->named_parameters()) {
      if (item.key().rfind(prefix, 0) == 0) item.value().requires_grad_(false), ++matched;
    }
    if (matched == 0) fail("training: \"freeze\" prefix '{}' matches no parameter", prefix);
  }
  if (comm) {  // every rank starts from rank 0's weights and BatchNorm statistics
    for (auto& p : model->parameters()) comm->broadcast(p, 0);
    for (auto& b : model->buffers()) comm->broadcast(b, 0);
  }
  auto parameters = trainable_parameters(*model);
  AdamWOptions adam;
  adam.lr = config.lr;
  adam.weight_decay = config.weight_decay;
  AdamW optimizer(parameters, adam);

  // The data and the schedule.
  Loader train_data(cap_pairs(config.data, config.train_split, -1), tokenizer, model->config(), config, true);
  const LoopSettings settings = config.loop_settings(train_data.size(), env.world_size, config.to_json());
  const int64_t B = config.batch_size;
  std::unique_ptr<Loader> eval_data;
  if (main_rank && !config.eval_split.empty()) {
    eval_data = std::make_unique<Loader>(cap_pairs(config.data, config.eval_split, config.eval_limit), tokenizer, model->config(), config, false);
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
  const std::string recipe = training_recipe_text(config.init, model->config().image_size());
  hooks.save_files = [&](const std::string& dir) {
    io::write_file_atomic(dir + "/config.json", model->config().to_json().dump(2) + "\n");
    copy_tokenizer_files(tokenizer_dir, dir);
    if (!recipe.empty()) io::write_file_atomic(dir + "/m3d_recipe.json", recipe);
  };
  return training_loop(settings, *model, optimizer, comm.get(), env, hooks, options);
}

json clip_evaluate(const std::string& checkpoint_dir, const std::string& data, const std::string& split, int64_t limit) {
  models::ClipModel model = models::clip_load(checkpoint_dir);
  const text::Tokenizer tokenizer = text::Tokenizer::load(checkpoint_dir);
  ClipTrainConfig config;
  config.init = checkpoint_dir;
  Loader loader(cap_pairs(data, split, limit), tokenizer, model->config(), config, false);
  return evaluate(*model, loader, 8);
}

}  // namespace m3d::train
