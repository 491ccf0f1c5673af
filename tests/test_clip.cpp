// M3D-CLIP and the sigmoid (SigLIP) loss against a PyTorch reference built from the
// official parts (tools/reference/make_clip_fixtures.py): features, loss and every
// parameter's gradient for one training step of a tiny model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/clip.h"
#include "test_support.h"

namespace m3d::models {
namespace {

void expect_training_step_parity(const std::string& loss_type) {
  const std::string dir = test::fixture("clip/tiny_" + loss_type);
  ClipModel model = clip_load(dir);
  EXPECT_EQ(model->config().loss_type, loss_type);
  model->train();
  const auto expected = io::checkpoint_open(dir + "/expected.safetensors");
  auto tensor = [&](const std::string& name) { return io::tensor_from_record(expected.tensor(name)).clone(); };
  const auto image_features = model->encode_image(tensor("images"));
  const auto text_features = model->encode_text(tensor("input_ids"), tensor("attention_mask"));
  EXPECT_LE((image_features - tensor("image_features")).abs().max().item<double>(), 1e-5);
  EXPECT_LE((text_features - tensor("text_features")).abs().max().item<double>(), 1e-5);
  const auto loss = model->loss(image_features, text_features);
  const double loss_diff = std::abs(loss.item<double>() - tensor("loss").item<double>());
  std::printf("%s: loss %.7f, reference %.7f\n", loss_type.c_str(), loss.item<double>(), tensor("loss").item<double>());
  EXPECT_LE(loss_diff, 1e-5);
  loss.backward();
  size_t compared = 0;
  double worst = 0;
  for (const auto& item : model->named_parameters()) {
    const std::string key = "grad." + item.key();
    if (!expected.tensors.count(key)) {
      EXPECT_FALSE(item.value().grad().defined() && item.value().grad().abs().max().item<double>() > 0) << item.key() << " has a gradient";
      continue;
    }
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    const auto want = tensor(key);
    // Relative to the tensor's largest gradient, with a floor: the attention key
    // biases get a mathematically zero gradient (softmax ignores a shift shared by
    // all keys), where both sides hold float noise of ~1e-9.
    const double scale = std::max(want.abs().max().item<double>(), 1e-3);
    const double relative = (item.value().grad() - want).abs().max().item<double>() / scale;
    worst = std::max(worst, relative);
    EXPECT_LE(relative, 1e-4) << item.key();
    ++compared;
  }
  std::printf("%s: %zu parameter gradients, max relative diff %.3g\n", loss_type.c_str(), compared, worst);
  EXPECT_GE(compared, 60u);
}

TEST(Clip, NceTrainingStepMatchesReference) { expect_training_step_parity("nce"); }
TEST(Clip, SigmoidTrainingStepMatchesReference) { expect_training_step_parity("sigmoid"); }

// The features skip the last layer's work for tokens other than 0; they must equal token 0 of the
// full forward (which the parity test above does not run).
TEST(Clip, FirstTokenPathsEqualTheFullForward) {
  const std::string dir = test::fixture("clip/tiny_nce");
  ClipModel model = clip_load(dir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto expected = io::checkpoint_open(dir + "/expected.safetensors");
  auto tensor = [&](const std::string& name) { return io::tensor_from_record(expected.tensor(name)).clone(); };
  const auto images = tensor("images"), ids = tensor("input_ids"), mask = tensor("attention_mask");
  ASSERT_LT(mask.sum().item<int64_t>(), mask.numel());  // some padding, so the mask matters
  const auto full_image = model->vision_encoder->forward(images).last.select(1, 0);
  EXPECT_LE((model->vision_encoder->forward_cls(images) - full_image).abs().max().item<double>(), 1e-6);
  const auto full_text = model->language_encoder->forward(ids, mask).last_hidden_state.select(1, 0);
  EXPECT_LE((model->language_encoder->forward_first(ids, mask) - full_text).abs().max().item<double>(), 1e-6);
}

TEST(Clip, GradientCheckpointingGivesTheSameGradients) {
  const std::string dir = test::fixture("clip/tiny_nce");
  ClipModel model = clip_load(dir);
  model->train();
  const auto expected = io::checkpoint_open(dir + "/expected.safetensors");
  auto tensor = [&](const std::string& name) { return io::tensor_from_record(expected.tensor(name)).clone(); };
  auto gradients = [&] {
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
    model->loss(model->encode_image(tensor("images")), model->encode_text(tensor("input_ids"), tensor("attention_mask"))).backward();
    std::map<std::string, torch::Tensor> out;
    for (const auto& item : model->named_parameters()) {
      if (item.value().grad().defined()) out[item.key()] = item.value().grad().clone();
    }
    return out;
  };
  const auto plain = gradients();
  model->vision_encoder->set_gradient_checkpointing(true);
  const auto hidden = model->vision_encoder->forward(tensor("images")).hidden_states;
  ASSERT_NE(hidden[0].grad_fn(), nullptr);
  EXPECT_NE(hidden[0].grad_fn()->name().find("CheckpointedBlock"), std::string::npos) << hidden[0].grad_fn()->name();
  const auto checkpointed = gradients();
  ASSERT_EQ(plain.size(), checkpointed.size());
  for (const auto& [name, grad] : plain) {
    ASSERT_TRUE(checkpointed.count(name)) << name;
    EXPECT_LE((checkpointed.at(name) - grad).abs().max().item<double>(), 1e-7 * std::max(1.0, grad.abs().max().item<double>())) << name;
  }
}

TEST(Clip, ConfigAndShapesGiveTheTowers) {
  const auto ckpt = io::checkpoint_open(test::fixture("clip/tiny_nce"));
  const ClipConfig config = clip_config_from_checkpoint(ckpt);
  EXPECT_EQ(config.vision.hidden_size, 32);
  EXPECT_EQ(config.vision.num_layers, 2);
  EXPECT_EQ(config.vision.num_patches(), 8);
  EXPECT_EQ(config.text.num_hidden_layers, 2);
  EXPECT_EQ(config.text.vocab_size, 99);
  EXPECT_EQ(config.text.num_attention_heads, 4);
  // The released config.json has no text_config: bert-base-uncased's heads.
  const auto raw = io::json_read_file(test::fixture("clip/tiny_nce/config.json"));
  auto released = raw;
  released.erase("text_config");
  released.erase("loss_type");
  const ClipConfig defaults = ClipConfig::from_json(released, "config.json");
  EXPECT_EQ(defaults.text.num_attention_heads, 12);
  EXPECT_EQ(defaults.loss_type, "nce");
  EXPECT_EQ(defaults.text.vocab_size, 99);
}

TEST(Clip, LossesOnHandCheckableFeatures) {
  // Two orthonormal pairs: I = T = identity. nce: logits = s * eye.
  const auto eye = torch::eye(2);
  const double s = 2.0;
  const double want_nce = -std::log(std::exp(s) / (std::exp(s) + 1.0));
  EXPECT_NEAR(clip_loss(eye, eye, torch::tensor(s)).item<double>(), want_nce, 1e-6);
  // sigmoid: logits = e^t * eye + b; diagonal +1 labels, off-diagonal -1.
  const double t = 0.5, b = -1.0, e = std::exp(t);
  auto log_sigmoid = [](double x) { return -std::log1p(std::exp(-x)); };
  const double want_sigmoid = -(2 * log_sigmoid(e + b) + 2 * log_sigmoid(-b)) / 2;
  EXPECT_NEAR(siglip_loss(eye, eye, torch::tensor(t), torch::tensor(b)).item<double>(), want_sigmoid, 1e-6);
  EXPECT_THROW(clip_loss(torch::zeros({2, 3}), torch::zeros({3, 3}), torch::tensor(1.0)), Error);
}

TEST(Clip, BadConfigsAreClearErrors) {
  auto raw = io::json_read_file(test::fixture("clip/tiny_nce/config.json"));
  auto with = [&](const char* key, const nlohmann::json& value, const std::string& fragment) {
    auto c = raw;
    c[key] = value;
    test::expect_one_line_error([&] { ClipConfig::from_json(c, "config.json"); }, "config.json", fragment);
  };
  with("model_type", "dec_clip", "DEC_CLIP loss_type 'nce' is not supported");  // M3D-CLIP's keys read as a DEC_CLIP
  with("model_type", "clip", "model_type 'clip' is not a contrastive model");
  with("loss_type", "triplet", "loss_type 'triplet' is not supported");
  with("pos_embed", "conv", "pos_embed 'conv' is not supported");
  with("img_size", nlohmann::json::array({8, 16}), "img_size must have 3 values");
  with("local_loss", true, "local_loss=true is not supported");
}

}  // namespace
}  // namespace m3d::models
