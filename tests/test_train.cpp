// The training core against HF Trainer's arithmetic (tools/reference/make_train_fixtures.py):
// AdamW with Trainer's parameter groups, cosine schedule with warmup, gradient clipping
// and accumulation, over 4 steps of the tiny M3D-CLIP.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/clip.h"
#include "test_support.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/trainer.h"

namespace m3d::train {
namespace {

void expect_steps_match(const std::string& loss_type) {
  models::ClipModel model = models::clip_load(test::fixture("clip/tiny_" + loss_type));
  model->train();
  const auto expected = io::checkpoint_open(test::fixture("train/steps_" + loss_type + ".safetensors"));
  auto tensor = [&](const std::string& name) { return io::tensor_from_record(expected.tensor(name)).clone(); };
  auto parameters = trainable_parameters(*model);
  AdamWOptions options;
  options.lr = 1e-3;
  options.weight_decay = 0.1;
  AdamW optimizer(parameters, options);
  const int64_t total = 4, warmup = warmup_steps(total, 0.3);
  EXPECT_EQ(warmup, tensor("warmup").item<int64_t>());
  for (int64_t step = 0; step < total; ++step) {
    const std::string b = "batch" + std::to_string(step) + ".";
    const auto images = tensor(b + "images"), ids = tensor(b + "input_ids"), mask = tensor(b + "attention_mask");
    double loss_value = 0;
    if (step == 1) {  // accumulated over two micro-batches
      for (int64_t half = 0; half < 2; ++half) {
        const auto rows = torch::indexing::Slice(2 * half, 2 * half + 2);
        const auto loss = model->loss(model->encode_image(images.index({rows})), model->encode_text(ids.index({rows}), mask.index({rows})));
        (loss / 2).backward();
        loss_value += loss.item<double>() / 2;
      }
    } else {
      const auto loss = model->loss(model->encode_image(images), model->encode_text(ids, mask));
      loss.backward();
      loss_value = loss.item<double>();
    }
    EXPECT_NEAR(loss_value, tensor("losses")[step].item<double>(), 1e-5) << "step " << step;
    const double norm = clip_grad_norm(optimizer.parameters(), 1.0);
    EXPECT_NEAR(norm, tensor("grad_norms")[step].item<double>(), 1e-4 * std::max(1.0, norm)) << "step " << step;
    const double lr = options.lr * cosine_with_warmup(step, warmup, total);
    EXPECT_NEAR(lr, tensor("lrs")[step].item<double>(), 1e-15) << "step " << step;
    optimizer.step(lr);
    optimizer.zero_grad();
  }
  double worst = 0;
  size_t compared = 0;
  for (const auto& item : model->named_parameters()) {
    const auto want = tensor("param." + item.key());
    const double diff = (item.value() - want).abs().max().item<double>();
    if (item.key().find("attention.self.key.bias") != std::string::npos) {
      // Its exact gradient is 0 (softmax ignores a shift shared by all keys); Adam
      // divides float noise of ~1e-9 by its own root mean square, so on either side
      // these move by up to lr per step in a direction set by rounding.
      EXPECT_LE(diff, 4 * 2 * options.lr) << item.key();
      continue;
    }
    worst = std::max(worst, diff);
    EXPECT_LE(diff, 1e-5) << item.key();
    ++compared;
  }
  std::printf("%s: %zu parameters after 4 steps (attention key biases aside), max abs diff %.3g\n", loss_type.c_str(), compared, worst);
}

TEST(Train, AdamWScheduleClippingAccumulationMatchHfTrainerNce) { expect_steps_match("nce"); }
TEST(Train, AdamWScheduleClippingAccumulationMatchHfTrainerSigmoid) { expect_steps_match("sigmoid"); }

TEST(Train, ParameterGroupsFollowHfTrainer) {
  models::ClipModel model = models::clip_load(test::fixture("clip/tiny_nce"));
  std::map<std::string, bool> decay;
  for (const auto& p : trainable_parameters(*model)) decay[p.name] = p.decay;
  EXPECT_FALSE(decay.at("vision_encoder.norm.weight"));
  EXPECT_FALSE(decay.at("vision_encoder.blocks.0.norm1.weight"));
  EXPECT_FALSE(decay.at("language_encoder.embeddings.LayerNorm.weight"));
  EXPECT_FALSE(decay.at("mm_vision_proj.bias"));
  EXPECT_TRUE(decay.at("mm_vision_proj.weight"));
  EXPECT_TRUE(decay.at("logit_scale"));  // not a bias, not a LayerNorm: decayed, as in M3D's run
  EXPECT_TRUE(decay.at("vision_encoder.cls_token"));
}

TEST(Train, EpochOrderGroupsBatchesByTaskAndKeepsEverySample) {
  std::vector<int64_t> groups;
  for (int64_t i = 0; i < 103; ++i) groups.push_back(i % 7 == 0 ? 2 : i % 3);  // uneven group sizes
  const auto order = epoch_order(groups.size(), 42, 1, groups, 8);
  EXPECT_EQ(order, epoch_order(groups.size(), 42, 1, groups, 8)) << "a function of (seed, epoch)";
  EXPECT_NE(order, epoch_order(groups.size(), 42, 2, groups, 8)) << "a new order each epoch";
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) ASSERT_EQ(sorted[i], static_cast<int64_t>(i)) << "a permutation";
  size_t full = 0;
  for (const auto& [group, count] : std::map<int64_t, size_t>{{0, 0}, {1, 0}, {2, 0}}) {
    full += static_cast<size_t>(std::count(groups.begin(), groups.end(), group)) / 8;
  }
  for (size_t b = 0; b < full; ++b) {
    for (size_t k = 1; k < 8; ++k) { EXPECT_EQ(groups[static_cast<size_t>(order[b * 8 + k])], groups[static_cast<size_t>(order[b * 8])]) << "batch " << b; }
  }
  // Without groups: the plain shuffle.
  EXPECT_EQ(epoch_order(50, 42, 1), epoch_order(50, 42, 1, {}, 8));
}

TEST(Train, ScheduleShape) {
  EXPECT_EQ(warmup_steps(1000, 0.03), 30);
  EXPECT_DOUBLE_EQ(cosine_with_warmup(0, 30, 1000), 0.0);
  EXPECT_DOUBLE_EQ(cosine_with_warmup(15, 30, 1000), 0.5);
  EXPECT_DOUBLE_EQ(cosine_with_warmup(30, 30, 1000), 1.0);
  EXPECT_NEAR(cosine_with_warmup(515, 30, 1000), 0.5, 1e-12);
  EXPECT_NEAR(cosine_with_warmup(1000, 30, 1000), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(cosine_with_warmup(5, 0, 10), 0.5 * (1 + std::cos(M_PI * 0.5)));
}

}  // namespace
}  // namespace m3d::train

namespace m3d::train {
namespace {

// A linear model on fixed random inputs, trained by training_loop into `dir` for `total` steps
// (checkpoints every 2), resuming when asked; `lr` goes into the run's config.
TrainResult train_tiny(const std::string& dir, int64_t total, bool resume, double lr = 0.1) {
  torch::manual_seed(0);
  torch::nn::Linear model(4, 1);
  AdamWOptions adam;
  adam.lr = lr;
  AdamW optimizer(trainable_parameters(*model), adam);
  const torch::Tensor inputs = torch::randn({8, 4}), targets = torch::randn({8, 1});
  LoopSettings s;
  s.output_dir = dir;
  s.dataset_size = 8;
  s.total_steps = total;
  s.steps_per_epoch = 4;
  s.batch_size = 2;
  s.lr = lr;
  s.warmup_ratio = 0.25;
  s.save_steps = 2;
  s.log_steps = 1;
  s.workers = 1;
  s.config = {{"lr", lr}, {"max_steps", total}, {"batch_size", 2}};
  LoopHooks hooks;
  hooks.load = [&](const std::vector<int64_t>& indices, int64_t) {
    Batch batch;
    batch.images = inputs.index_select(0, torch::tensor(indices));
    batch.labels = targets.index_select(0, torch::tensor(indices));
    return batch;
  };
  hooks.loss = [&](const Batch& batch) { return (model(batch.images) - batch.labels).pow(2).mean(); };
  TrainRunOptions options;
  options.resume = resume;
  options.progress = false;
  std::filesystem::create_directories(dir);
  return training_loop(s, *model, optimizer, nullptr, DistEnv{}, hooks, options);
}

// --resume with a larger max_steps extends the run: it continues from its checkpoint, logs
// each step once, and from there the learning rate follows warmup and cosine over the new
// total (HF Trainer resumed with a new max_steps); settings that change what was trained
// are still refused, and so is a total below the saved step.
TEST(Train, ResumeExtendsTheScheduleButRefusesOtherChanges) {
  const std::string dir = test::temp_dir() + "/run";
  EXPECT_EQ(train_tiny(dir, 2, false).steps, 2);
  const TrainResult extended = train_tiny(dir, 6, true);
  EXPECT_EQ(extended.steps, 6);
  EXPECT_EQ(extended.checkpoint, dir + "/checkpoint-6");
  std::ifstream log(dir + "/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    steps.push_back(j.at("step"));
    const int64_t step = steps.back();
    const int64_t total = step <= 2 ? 2 : 6;  // steps 1-2 ran under the old schedule
    EXPECT_NEAR(j.at("lr").get<double>(), 0.1 * cosine_with_warmup(step - 1, warmup_steps(total, 0.25), total), 1e-15) << "step " << step;
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  try {
    train_tiny(dir, 8, true, 0.5);
    ADD_FAILURE() << "a changed lr was accepted";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("changed: lr"), std::string::npos) << e.what(); }
  try {
    train_tiny(dir, 4, true);
    ADD_FAILURE() << "max_steps below the saved step was accepted";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("at step 6, past the 4 steps"), std::string::npos) << e.what(); }
}

}  // namespace
}  // namespace m3d::train
