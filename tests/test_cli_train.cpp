// `m3d train clip` end to end on a small synthetic set with a tiny model: an
// interrupted (kill -9) and resumed run ends where an uninterrupted one does (BERT
// dropout on: its generator state is part of the checkpoint); a kill
// during a save never leaves a half-written checkpoint; two Gloo ranks over loopback
// give the parameters of one rank with the same global batch.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "data/sample.h"
#include "data/synth.h"
#include "io/checkpoint.h"
#include "eval/task_metrics.h"
#include "imaging/model_input.h"
#include "io/npy.h"
#include "models/clip.h"
#include "text/tokenizer.h"
#include "train/clip_train.h"
#include "io/tensor.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";

// One synthetic set for the whole suite (24 studies: 20 train pairs).
class CliTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(fs::temp_directory_path() / ("m3d_cli_train_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    data::SynthOptions o;
    o.count = 24;
    o.output = *root_ + "/data";
    o.seed = 5;
    data::synth_write(o);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  // A training config of a tiny model; `extra` fields override.
  static std::string config(const std::string& name, const nlohmann::json& extra) {
    nlohmann::json c = {{"model",
                         {{"model_type", "m3d_clip"},
                          {"img_size", {8, 16, 16}},
                          {"patch_size", {4, 8, 8}},
                          {"hidden_size", 32},
                          {"mlp_dim", 48},
                          {"num_layers", 2},
                          {"num_heads", 4},
                          {"loss_type", "nce"},
                          {"text_config",
                           {{"vocab_size", 30522},
                            {"hidden_size", 32},
                            {"num_hidden_layers", 2},
                            {"num_attention_heads", 4},
                            {"intermediate_size", 37},
                            {"max_position_embeddings", 64}}}}},
                        {"tokenizer", std::string(M3D_SOURCE_DIR) + "/third_party/models/all-MiniLM-L6-v2"},
                        {"data", *root_ + "/data"},
                        {"max_length", 32},
                        {"batch_size", 4},
                        {"max_steps", 12},
                        {"lr", 1e-3},
                        {"warmup_ratio", 0.2},
                        {"eval_split", ""},
                        {"eval_fraction", 0},
                        {"save_steps", 3},
                        {"save_total_limit", 2},
                        {"cache_images", true},
                        {"workers", 1},
                        {"log_steps", 1}};
    for (const auto& [key, value] : extra.items()) {
      if (key == "text_dropout") {  // BERT's dropouts (default 0.1, as HF's)
        c["model"]["text_config"]["hidden_dropout_prob"] = value;
        c["model"]["text_config"]["attention_probs_dropout_prob"] = value;
      } else {
        c[key] = value;
      }
    }
    const std::string path = *root_ + "/" + name + ".json";
    std::ofstream(path) << c.dump(2);
    return path;
  }
  static std::map<std::string, at::Tensor> weights(const std::string& checkpoint) {
    const auto ckpt = io::checkpoint_open(checkpoint + "/model.safetensors");
    std::map<std::string, at::Tensor> out;
    for (const auto& [name, record] : ckpt.tensors) out[name] = io::tensor_from_record(record).clone();
    return out;
  }
  // Largest difference over the parameters, the attention key biases aside (their exact
  // gradient is 0: Adam turns float noise into lr-sized steps that change no output).
  static double max_difference(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
    EXPECT_EQ(a.size(), b.size());
    double worst = 0;
    for (const auto& [name, tensor] : a) {
      if (name.find("attention.self.key.bias") != std::string::npos) continue;
      worst = std::max(worst, (tensor - b.at(name)).abs().max().item<double>());
    }
    return worst;
  }
  // `m3d ARGS` (space-separated, no quoting) as a child process, output discarded.
  static pid_t start(const std::string& args, const char* slow_save_ms = nullptr) {
    std::vector<std::string> words = {kM3d};
    std::istringstream in(args);
    for (std::string w; in >> w;) words.push_back(w);
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (slow_save_ms != nullptr) ::setenv("M3D_TEST_SLOW_SAVE_MS", slow_save_ms, 1);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::vector<char*> argv;
      for (auto& w : words) argv.push_back(w.data());
      argv.push_back(nullptr);
      ::execv(kM3d.c_str(), argv.data());
      ::_exit(127);
    }
    return pid;
  }
  static std::string* root_;
};
std::string* CliTrain::root_ = nullptr;

TEST_F(CliTrain, KilledAndResumedRunEndsWhereAnUninterruptedOneDoes) {
  std::string out, err;
  const std::string full = *root_ + "/full", cut = *root_ + "/cut";
  ASSERT_EQ(run_command(kM3d + " train clip -q --config " + config("base", {}) + " -o " + full, &out, &err), 0) << err;
  ASSERT_TRUE(fs::exists(full + "/checkpoint-12/model.safetensors"));
  EXPECT_FALSE(fs::exists(full + "/checkpoint-3")) << "save_total_limit 2 keeps the newest two";
  // Same run, killed with SIGKILL once checkpoint-6 exists, then resumed.
  const pid_t pid = start("train clip -q --config " + config("base", {}) + " -o " + cut);
  for (int i = 0; i < 30000 && !fs::exists(cut + "/checkpoint-6"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(fs::exists(cut + "/checkpoint-6")) << "the run ended before its sixth step";
  ASSERT_FALSE(fs::exists(cut + "/checkpoint-12")) << "killed too late to test resuming";
  ASSERT_EQ(run_command(kM3d + " train clip -q --resume --config " + config("base", {}) + " -o " + cut, &out, &err), 0) << err;
  const double diff = max_difference(weights(full + "/checkpoint-12"), weights(cut + "/checkpoint-12"));
  std::printf("resumed vs uninterrupted: max abs parameter difference %.3g\n", diff);
  EXPECT_LE(diff, 1e-6);
  // The log holds each step once.
  std::ifstream log(cut + "/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(log, line);) steps.push_back(nlohmann::json::parse(line).at("step"));
  ASSERT_EQ(steps.size(), 12u);
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], static_cast<int64_t>(i + 1));
}

TEST_F(CliTrain, AKillDuringASaveLeavesNoHalfWrittenCheckpoint) {
  const std::string dir = *root_ + "/saves";
  const std::string cfg = config("saves", {{"save_steps", 1}, {"save_total_limit", 0}, {"max_steps", 40}});
  // Saves are slowed down (M3D_TEST_SLOW_SAVE_MS) between writing the files and
  // renaming the folder, so the kill lands inside one.
  fs::remove_all(dir);
  const pid_t pid = start("train clip -q --config " + cfg + " -o " + dir, "400");
  bool caught = false;
  for (int i = 0; i < 30000 && !caught; ++i) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      // A save in progress after two complete ones.
      if (it->path().extension() == ".partial" && fs::exists(it->path() / "trainer_state.json") && fs::exists(dir + "/checkpoint-2")) caught = true;
    }
    if (!caught) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(caught) << "never saw a save in progress";
  // Every checkpoint under its final name is complete and loads.
  size_t complete = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".partial") continue;
    if (entry.path().filename().string().rfind("checkpoint-", 0) != 0) continue;
    for (const char* file : {"model.safetensors", "optimizer.safetensors", "config.json", "trainer_state.json", "vocab.txt"}) {
      EXPECT_TRUE(fs::exists(entry.path() / file)) << entry.path() << " lacks " << file;
    }
    EXPECT_NO_THROW(io::checkpoint_open((entry.path() / "model.safetensors").string()));
    ++complete;
  }
  std::printf("%zu complete checkpoints beside the interrupted save\n", complete);
  EXPECT_GE(complete, 2u);
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " train clip -q --resume --config " + cfg + " -o " + dir, &out, &err), 0) << err;
  EXPECT_TRUE(fs::exists(dir + "/checkpoint-40/model.safetensors"));
  for (const auto& entry : fs::directory_iterator(dir)) EXPECT_NE(entry.path().extension(), ".partial") << "left behind";
}

TEST_F(CliTrain, TwoGlooRanksEqualOneRankWithTheSameGlobalBatch) {
  std::string out, err;
  const std::string one = *root_ + "/one", two = *root_ + "/two";
  // Without dropout: each rank draws its own masks (as with PyTorch DDP), so only the
  // deterministic part can be equal.
  const nlohmann::json steps = {{"max_steps", 20}, {"save_steps", 20}, {"text_dropout", 0.0}};
  ASSERT_EQ(run_command(kM3d + " train clip -q --config " + config("one", steps) + " -o " + one, &out, &err), 0) << err;
  nlohmann::json half = steps;
  half["batch_size"] = 2;
  half["ddp_bucket_cap_mb"] = 0.01;  // many buckets, sent while the backward runs
  ASSERT_EQ(run_command(kM3d + " train clip -q --nproc 2 --config " + config("two", half) + " -o " + two, &out, &err), 0) << err;
  const double diff = max_difference(weights(one + "/checkpoint-20"), weights(two + "/checkpoint-20"));
  std::printf("2 ranks x batch 2 vs 1 rank x batch 4, 20 steps: max abs parameter difference %.3g\n", diff);
  EXPECT_LE(diff, 1e-5);
}

// First-step losses of a run's metrics.jsonl.
std::vector<double> logged_losses(const std::string& dir) {
  std::vector<double> out;
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

TEST_F(CliTrain, GradientCheckpointingChangesNothingAndBf16AutocastTrains) {
  std::string out, err;
  const std::string plain = *root_ + "/plain", ckpt = *root_ + "/ckpt", bf16 = *root_ + "/bf16";
  const nlohmann::json steps = {{"max_steps", 6}, {"save_steps", 6}, {"text_dropout", 0.0}};
  ASSERT_EQ(run_command(kM3d + " train clip -q --config " + config("plain", steps) + " -o " + plain, &out, &err), 0) << err;
  nlohmann::json with = steps;
  with["gradient_checkpointing"] = true;
  ASSERT_EQ(run_command(kM3d + " train clip -q --config " + config("ckpt", with) + " -o " + ckpt, &out, &err), 0) << err;
  const double diff = max_difference(weights(plain + "/checkpoint-6"), weights(ckpt + "/checkpoint-6"));
  std::printf("gradient checkpointing vs none, 6 steps: max abs parameter difference %.3g\n", diff);
  EXPECT_LE(diff, 1e-6);

  with = steps;
  with["bf16"] = true;
  ASSERT_EQ(run_command(kM3d + " train clip -q --config " + config("bf16", with) + " -o " + bf16, &out, &err), 0) << err;
  const auto ckpt_file = io::checkpoint_open(bf16 + "/checkpoint-6/model.safetensors");
  for (const auto& [name, record] : ckpt_file.tensors) EXPECT_EQ(record.dtype, DType::F32) << name << ": weights stay f32";
  const auto f32_losses = logged_losses(plain), bf16_losses = logged_losses(bf16);
  ASSERT_EQ(f32_losses.size(), 6u);
  ASSERT_EQ(bf16_losses.size(), 6u);
  std::printf("first-step loss: f32 %.5f, bf16 autocast %.5f\n", f32_losses[0], bf16_losses[0]);
  // Same weights and batch at step 1: only bf16 rounding in the forward separates them.
  EXPECT_NEAR(bf16_losses[0], f32_losses[0], 0.02 * std::abs(f32_losses[0]));
  EXPECT_LT((weights(bf16 + "/checkpoint-6").at("logit_scale") - weights(plain + "/checkpoint-6").at("logit_scale")).abs().item<double>(), 1e-2);
}

TEST_F(CliTrain, EmbedWritesTheModelsNormalisedFeatures) {
  std::string out, err;
  const std::string run = *root_ + "/embed_run";
  ASSERT_EQ(run_command(kM3d + " train clip -q --config " + config("embed", {{"max_steps", 2}}) + " -o " + run, &out, &err), 0) << err;
  const std::string checkpoint = run + "/checkpoint-2";
  const auto volume = torch::rand({1, 8, 16, 16});
  io::npy_write(*root_ + "/v.npy", DType::F32, {1, 8, 16, 16}, volume.data_ptr<float>());
  ASSERT_EQ(
      run_command(kM3d + " embed --model " + checkpoint + " --image " + *root_ + "/v.npy --text 'The liver is normal.' --text 'Axial chest CT.'", &out, &err),
      0)
      << err;
  const auto result = nlohmann::json::parse(out);
  ASSERT_EQ(result["image"].size(), 1u);
  ASSERT_EQ(result["text"].size(), 2u);
  torch::NoGradGuard no_grad;
  models::ClipModel model = models::clip_load(checkpoint);
  const auto image = model->encode_image(volume.unsqueeze(0))[0];
  const auto got = torch::tensor(result["image"][0].get<std::vector<float>>());
  EXPECT_LE((image - got).abs().max().item<double>(), 1e-6);
  EXPECT_NEAR(got.norm().item<double>(), 1.0, 1e-5);
  const auto text0 = torch::tensor(result["text"][0].get<std::vector<float>>());
  EXPECT_NEAR(result["cosine"][0][0].get<double>(), (got * text0).sum().item<double>(), 1e-5);
  EXPECT_EQ(run_command(kM3d + " embed --model " + checkpoint, &out, &err), 1);
  EXPECT_NE(err.find("give --image and/or --text"), std::string::npos) << err;
}

// m3d bench --task itr (eval_itr.py's recall, IR = image->text) on a trained checkpoint
// equals the recall of the model's embeddings computed here; a rerun resumes from the journal.
TEST_F(CliTrain, BenchItrRecallEqualsTheModelsEmbeddings) {
  std::string out, err;
  const std::string run = *root_ + "/itr_run";
  ASSERT_EQ(run_command(kM3d + " train clip -q --config " + config("itr", {{"max_steps", 4}}) + " -o " + run, &out, &err), 0) << err;
  const std::string checkpoint = run + "/checkpoint-4", bench = *root_ + "/itr_bench";
  const std::string command = kM3d + " bench --model " + checkpoint + " --data " + *root_ + "/data --task itr --split train --limit 12 -o " + bench;
  ASSERT_EQ(run_command(command, &out, &err), 0) << err;
  const auto summary = nlohmann::json::parse(std::ifstream(bench + "/summary.json"));
  ASSERT_EQ(summary["samples"], 12);
  // The reference: every train pair embedded in-process, images resized to the model's grid.
  torch::NoGradGuard no_grad;
  models::ClipModel model = models::clip_load(checkpoint);
  const auto tokenizer = text::Tokenizer::load(checkpoint);
  const auto cap = nlohmann::json::parse(std::ifstream(*root_ + "/data/M3D_Cap_npy/M3D_Cap.json"));
  std::vector<at::Tensor> images, texts;
  for (int i = 0; i < 12; ++i) {
    const auto& item = cap["train"][i];
    auto image = imaging::model_input_load(*root_ + "/data/" + item["image"].get<std::string>());
    image = at::upsample_trilinear3d(image, {8, 16, 16}, false);
    images.push_back(model->encode_image(image));
    std::ifstream in(*root_ + "/data/" + item["text"].get<std::string>());
    const std::string report((std::istreambuf_iterator<char>(in)), {});
    auto tokens = tokenizer.encode(data::report_truncate_seeded(report, tokenizer, 64, 42, i));  // the 64 positions of the tiny BERT
    if (tokens.size() > 64) tokens.resize(64), tokens.back() = tokenizer.token_to_id("[SEP]");
    const auto ids = torch::tensor(tokens, torch::kLong).unsqueeze(0);
    texts.push_back(model->encode_text(ids, torch::ones_like(ids)));
  }
  const auto similarity = torch::matmul(torch::cat(images), torch::cat(texts).t()).contiguous();
  const std::vector<float> values(similarity.data_ptr<float>(), similarity.data_ptr<float>() + similarity.numel());
  for (int k : {1, 5, 10}) {
    EXPECT_NEAR(summary["metrics"]["IR_R" + std::to_string(k)].get<double>(), eval::recall_at_k(values, 12, k), 1e-12) << k;
    EXPECT_NEAR(summary["metrics"]["TR_R" + std::to_string(k)].get<double>(), eval::recall_at_k_transposed(values, 12, k), 1e-12) << k;
  }
  const std::string first = out;
  ASSERT_EQ(run_command(command, &out, &err), 0) << err;  // everything journaled: same summary, nothing recomputed
  EXPECT_EQ(out, first);
  EXPECT_EQ(run_command(kM3d + " bench --predictor oracle --data " + *root_ + "/data --task itr -o " + *root_ + "/itr_oracle", &out, &err), 1);
  EXPECT_NE(err.find("task itr has no baseline predictors"), std::string::npos) << err;
}

TEST_F(CliTrain, BadConfigsAreClearErrors) {
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " train clip --preset nope --data x -o y", &out, &err), 1);
  EXPECT_NE(err.find("unknown training preset 'nope' (presets: m3d-clip, siglip, tiny, med3dvlm-siglip, med3dvlm-tiny)"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " train clip -q --config " + config("bad", {{"batch_sise", 3}}) + " -o " + *root_ + "/bad", &out, &err), 1);
  EXPECT_NE(err.find("unknown training option 'batch_sise'"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " train clip -q --config " + config("big", {{"batch_size", 64}}) + " -o " + *root_ + "/big", &out, &err), 1);
  EXPECT_NE(err.find("exceeds the 20 training samples"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " train clip -q --config " + config("nodata", {{"data", "/nonexistent"}}) + " -o " + *root_ + "/nd", &out, &err), 1);
  EXPECT_NE(err.find("no M3D_Cap_npy/M3D_Cap.json"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " train clip -q --config " + config("bucket", {{"ddp_bucket_cap_mb", 0}}) + " -o " + *root_ + "/bk", &out, &err), 1);
  EXPECT_NE(err.find("ddp_bucket_cap_mb must be positive"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " train clip -q --config " + config("bf16type", {{"bf16", "yes"}}) + " -o " + *root_ + "/bt", &out, &err), 1);
  EXPECT_NE(err.find("bf16"), std::string::npos) << err;
  // Step counts where 0 is meaningless (save_steps=0 used to die with SIGFPE, max_steps=0 to run the epochs).
  const std::vector<std::pair<nlohmann::json, std::string>> counts = {
      {{{"save_steps", 0}}, "save_steps and log_steps must be at least 1"},
      {{{"log_steps", 0}}, "save_steps and log_steps must be at least 1"},
      {{{"max_steps", 0}}, "max_steps must be at least 1"},
      {{{"eval_fraction", -1}}, "eval_fraction must be in [0, 1]"},
  };
  for (const auto& [setting, message] : counts) {
    const std::string name = "count_" + setting.begin().key();
    EXPECT_EQ(run_command(kM3d + " train clip -q --config " + config(name, setting) + " -o " + *root_ + "/" + name, &out, &err), 1);
    EXPECT_NE(err.find(message), std::string::npos) << err;
    EXPECT_FALSE(std::filesystem::exists(*root_ + "/" + name)) << name;
  }
  // CLI usage errors exit 1 with the one error prefix.
  EXPECT_EQ(run_command(kM3d + " train clip --no-such-flag", &out, &err), 1);
  EXPECT_EQ(err.rfind("m3d: error: ", 0), 0u) << err;
}

}  // namespace
}  // namespace m3d::test
