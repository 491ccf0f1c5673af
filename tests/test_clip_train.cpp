// Training DCFormer_SigLIP (DEC_CLIP): its config.json against the official writer's
// (the fixture's config.json was written by DEC_CLIPConfig.save_pretrained), a tiny
// model trained on a small synthetic set (loss, BatchNorm statistics as PyTorch counts
// them, an interrupted and resumed run equal to an uninterrupted one), the checkpoint
// reloaded by clip_load giving the trained model's embeddings, the random model of the
// released shape (parameter counts from med3dvlm_spec.md §1.1 / §1.9), and clear errors.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "data/synth.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/clip.h"
#include "models/presets.h"
#include "test_support.h"
#include "train/clip_train.h"
#include "train/optim.h"
#include "train/trainer.h"

namespace m3d::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(DecClipConfig, WritesTheOfficialKeysAndRoundTrips) {
  const std::string dir = test::fixture("med3dvlm/dec_clip_tiny");
  const json official = io::json_read_file(dir + "/config.json");
  const models::ClipConfig config = models::clip_config_from_checkpoint(io::checkpoint_open(dir));
  // input_size is (H, W, D) in DEC_CLIPConfig (dcformer.py: `ih, iw, it = input_size`).
  EXPECT_EQ(config.dcformer.image_size, (std::array<int64_t, 3>{128, 256, 256}));
  const json written = config.to_json();
  for (const auto& [key, value] : official.items()) {
    if (key == "text_config" || key == "_test_only_note") continue;
    ASSERT_TRUE(written.contains(key)) << key;
    EXPECT_EQ(written[key], value) << key;
  }
  const models::ClipConfig back = models::ClipConfig::from_json(written, "written");
  EXPECT_EQ(back.model_type, "dec_clip");
  EXPECT_EQ(back.dcformer.channels, config.dcformer.channels);
  EXPECT_EQ(back.dcformer.num_blocks, config.dcformer.num_blocks);
  EXPECT_EQ(back.dcformer.image_size, config.dcformer.image_size);
  EXPECT_EQ(back.text.to_json(), config.text.to_json());
  EXPECT_EQ(back.hidden_size, 40);
  EXPECT_EQ(back.t_prime_init, config.t_prime_init);
  EXPECT_EQ(back.to_json(), written);
  // An anisotropic grid: [H, W, D] = [96, 80, 24] is the 24 x 96 x 80 (D, H, W) volume.
  json grid = written;
  grid["input_size"] = {96, 80, 24};
  EXPECT_EQ(models::ClipConfig::from_json(grid, "grid").image_size(), (std::array<int64_t, 3>{24, 96, 80}));
  EXPECT_EQ(models::ClipConfig::from_json(grid, "grid").to_json()["input_size"], grid["input_size"]);
}

TEST(DecClipConfig, BadInputSizesAreClearErrors) {
  json c = io::json_read_file(test::fixture("med3dvlm/dec_clip_tiny/config.json"));
  for (const json& bad : {json{256, 256}, json{256, 0, 128}, json{256, -4, 128}, json{256.5, 256, 128}, json("256x256x128")}) {
    c["input_size"] = bad;
    test::expect_one_line_error([&] { models::ClipConfig::from_json(c, "config.json"); }, "config.json", "input_size must be 3 positive integers (H, W, D");
  }
  // The shared parse the Med3DVLM VLM config uses.
  EXPECT_EQ(models::dcformer_image_size_from_input_size(json::object(), "x", {1, 2, 3}), (std::array<int64_t, 3>{1, 2, 3}));
}

// A random DCFormer_SigLIP of the released shape loads with clip_load: decomp_small's
// 18,244,800 parameters and 426 state-dict entries (51 num_batches_tracked), §1.1 / §1.9.
TEST(DecClipPreset, InitRandomHasTheReleasedShape) {
  const std::string dir = test::temp_dir() + "/dcformer_siglip";
  models::init_random_checkpoint(models::preset_config("dcformer-siglip"), dir, "bf16", 1);
  const models::ClipModel model = models::clip_load(dir);
  const auto& c = model->config();
  EXPECT_EQ(c.model_type, "dec_clip");
  EXPECT_EQ(c.image_size(), (std::array<int64_t, 3>{128, 256, 256}));
  EXPECT_EQ(c.text.model_type, "distilbert");
  EXPECT_EQ(c.text.vocab_size, 119547);
  EXPECT_EQ(c.hidden_size, 768);
  int64_t vision = 0, entries = 0, tracked = 0;
  for (const auto& p : model->dcformer_encoder->parameters()) vision += p.numel();
  for (const auto& item : model->dcformer_encoder->named_parameters()) entries += 1, (void)item;
  for (const auto& item : model->dcformer_encoder->named_buffers()) entries += 1, tracked += item.key().find("num_batches_tracked") != std::string::npos;
  EXPECT_EQ(vision, 18244800);
  EXPECT_EQ(entries, 426);
  EXPECT_EQ(tracked, 51);
}

// A tiny DEC_CLIP on 8 x 32 x 32 with a 2-layer BERT from scratch, SigLIP's init.
json tiny_model() {
  return {{"model_type", "dec_clip"},
          {"input_size", {32, 32, 8}},
          {"dcformer_num_blocks", {1, 1, 1, 1, 1}},
          {"dcformer_channels", {4, 8, 8, 16, 16}},
          {"hidden_size", 16},
          {"loss_type", "sigmoid"},
          {"t_prime", std::log(10.0)},
          {"bias", -10.0},
          {"text_config",
           {{"model_type", "bert"},
            {"vocab_size", 30522},
            {"hidden_size", 32},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"intermediate_size", 37},
            {"max_position_embeddings", 64}}}};
}

// Training tiny_model() on `data`; `extra` overrides.
json train_config(const std::string& data, const std::string& output, const json& extra) {
  json c = {{"model", tiny_model()},
            {"tokenizer", std::string(M3D_SOURCE_DIR) + "/third_party/models/all-MiniLM-L6-v2"},
            {"data", data},
            {"max_length", 32},
            {"batch_size", 4},
            {"max_steps", 12},
            {"lr", 3e-3},
            {"warmup_ratio", 0.1},
            {"eval_split", ""},
            {"eval_fraction", 0},
            {"save_steps", 6},
            {"cache_images", true},
            {"workers", 1},
            {"log_steps", 1},
            {"output_dir", output}};
  c.update(extra);
  return c;
}

// Trained in process (train-mode BatchNorm, AdamW), written as clip_train writes a
// checkpoint, reloaded by clip_load: the same eval-mode embeddings and BatchNorm statistics.
TEST(DecClipCheckpoint, ReloadedGivesTheTrainedModelsEmbeddings) {
  torch::manual_seed(0);
  models::ClipModel model(models::ClipConfig::from_json(tiny_model(), "model"));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.1);  // parameters are born uninitialised
  }
  model->train();
  auto parameters = trainable_parameters(*model);
  AdamW optimizer(parameters, AdamWOptions{});
  const auto images = torch::rand({4, 1, 8, 32, 32});
  const auto ids = torch::randint(1000, 2000, {4, 12}), mask = torch::ones({4, 12}, torch::kLong);
  for (int step = 0; step < 3; ++step) {
    model->loss(model->encode_image(images), model->encode_text(ids, mask)).backward();
    optimizer.step(1e-3);
    optimizer.zero_grad();
  }
  const std::string dir = test::temp_dir();
  save_model_weights(*model, dir + "/model.safetensors");
  std::ofstream(dir + "/config.json") << model->config().to_json().dump(2);
  models::ClipModel loaded = models::clip_load(dir);
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ((loaded->encode_image(images) - model->encode_image(images)).abs().max().item<double>(), 0.0);
  EXPECT_EQ((loaded->encode_text(ids, mask) - model->encode_text(ids, mask)).abs().max().item<double>(), 0.0);
  // The statistics training moved (3 train-mode batches) came back with the weights.
  const auto saved = loaded->named_buffers();
  size_t moved = 0;
  for (const auto& item : model->named_buffers()) {
    EXPECT_TRUE(torch::equal(saved[item.key()], item.value())) << item.key();
    if (item.key().find("num_batches_tracked") != std::string::npos) EXPECT_EQ(item.value().item<int64_t>(), 3) << item.key();
    if (item.key().find("running_var") != std::string::npos) moved += (item.value() - 1).abs().max().item<double>() > 1e-3;
  }
  EXPECT_EQ(moved, 24u);  // three branches in each of the 4 stem layers and the 4 blocks' dwconv
}

// One small synthetic set for the suite (16 studies: 12 train pairs).
class DecClipTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(fs::temp_directory_path() / ("m3d_clip_train_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    data::SynthOptions o;
    o.count = 16;
    o.output = *root_ + "/data";
    o.seed = 3;
    o.progress = false;
    data::synth_write(o);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  static json config(const std::string& output, const json& extra = json::object()) { return train_config(*root_ + "/data", output, extra); }
  static TrainResult run(const json& c, bool resume = false, const std::atomic<bool>* stop = nullptr) {
    TrainRunOptions options;
    options.progress = false;
    options.resume = resume;
    options.stop = stop;
    return clip_train(ClipTrainConfig::from_json(c, "test config"), options);
  }
  static std::map<std::string, at::Tensor> state(const std::string& checkpoint) {
    const auto ckpt = io::checkpoint_open(checkpoint + "/model.safetensors");
    std::map<std::string, at::Tensor> out;
    for (const auto& [name, record] : ckpt.tensors) out[name] = io::tensor_from_record(record).clone();
    return out;
  }
  static std::string* root_;
};
std::string* DecClipTrain::root_ = nullptr;

// 12 steps lower the loss; every BatchNorm counted 12 train-mode batches and moved its
// statistics off (0, 1); a run stopped after step 6 and resumed ends where the
// uninterrupted run does.
TEST_F(DecClipTrain, TrainsUpdatesBatchNormAndResumesExactly) {
  const std::string full = *root_ + "/full", cut = *root_ + "/cut";
  const TrainResult result = run(config(full));
  ASSERT_EQ(result.steps, 12);
  std::vector<double> losses;
  std::ifstream log(full + "/metrics.jsonl");
  for (std::string line; std::getline(log, line);) {
    const json j = json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 12u);
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[9] + losses[10] + losses[11]) / 3;
  std::printf("loss: first three %.4f, last three %.4f\n", first, last);
  EXPECT_LT(last, 0.8 * first);
  const auto trained = state(full + "/checkpoint-12");
  size_t norms = 0;
  for (const auto& [name, tensor] : trained) {
    if (name.find("num_batches_tracked") != std::string::npos) {
      EXPECT_EQ(tensor.item<int64_t>(), 12) << name;  // PyTorch adds 1 per train-mode batch: one a step
      ++norms;
    } else if (name.find("running_var") != std::string::npos) {
      EXPECT_GT((tensor - 1).abs().max().item<double>(), 1e-3) << name;
      EXPECT_GT(trained.at(name.substr(0, name.size() - 3) + "mean").abs().max().item<double>(), 1e-4) << name;
    }
  }
  EXPECT_EQ(norms, 24u);
  // Stopped once checkpoint-6 exists (the loop polls the flag between steps and saves), then resumed.
  std::atomic<bool> stop{false};
  std::thread watcher([&] {
    while (!fs::exists(cut + "/checkpoint-6")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stop = true;
  });
  const TrainResult partial = run(config(cut), false, &stop);
  watcher.join();
  ASSERT_TRUE(partial.stopped);
  ASSERT_LT(partial.steps, 12);
  ASSERT_EQ(run(config(cut), true).steps, 12);
  const auto resumed = state(cut + "/checkpoint-12");
  ASSERT_EQ(resumed.size(), trained.size());
  for (const auto& [name, tensor] : trained) {
    if (name.find("attention.self.key.bias") != std::string::npos) continue;  // exact gradient 0: Adam steps on float noise
    EXPECT_LE((resumed.at(name).to(torch::kDouble) - tensor.to(torch::kDouble)).abs().max().item<double>(), 1e-6) << name;
  }
}

TEST(DecClipTrainSettings, BadSettingsAreClearErrors) {
  const std::string dir = test::temp_dir();
  auto refused = [&](const json& extra, const std::string& fragment) {
    TrainRunOptions options;
    options.progress = false;
    test::expect_one_line_error([&] { clip_train(ClipTrainConfig::from_json(train_config(dir + "/no_data", dir + "/out", extra), "test config"), options); },
                                "", fragment);
  };
  refused({{"gradient_checkpointing", true}}, "gradient_checkpointing is available for the ViT only, not for a DCFormer");
  refused({{"bf16", true}}, "bf16 autocast is not supported for a DCFormer");
  json model = tiny_model();
  model["input_size"] = {32, 32};
  refused({{"model", model}}, "input_size must be 3 positive integers");
  // A text tower that is not BERT-family, and none at all.
  fs::create_directories(dir + "/gpt2");
  std::ofstream(dir + "/gpt2/config.json") << R"({"model_type": "gpt2", "n_embd": 32})";
  refused({{"text_init", dir + "/gpt2"}}, "model_type 'gpt2' is not a BERT-family encoder");
  refused({{"text_init", dir + "/nowhere"}}, "no BERT-family checkpoint there");
}

}  // namespace
}  // namespace m3d::train
