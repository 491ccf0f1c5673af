// LaMed instruction tuning and LoRA against M3D's training code run with transformers
// 4.41.2 + peft 0.11.1 (tools/reference/make_lora_fixtures.py, fixtures in
// tests/fixtures/lora): sample construction, the LoRA forward, one stage-1 and one
// stage-2 step's loss and gradients, the optimiser step, and merge_and_unload.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/lora.h"
#include "test_support.h"
#include "text/tokenizer.h"
#include "text/box.h"
#include "train/lamed_data.h"
#include "train/lamed_train.h"
#include "train/optim.h"

namespace m3d::train {
namespace {

namespace fs = std::filesystem;

struct Reference {
  io::Checkpoint expected = io::checkpoint_open(test::fixture("lora/expected.safetensors"));
  torch::Tensor operator()(const std::string& name) const { return io::tensor_from_record(expected.tensor(name)).clone(); }
  bool has(const std::string& name) const { return expected.tensors.count(name) > 0; }
};

torch::Tensor batch_images() {
  const auto shared = io::checkpoint_open(test::shared_fixture("vit3d_spp_tiny/expected.safetensors"));
  const auto image = io::tensor_from_record(shared.tensor("images")).to(torch::kFloat);
  return torch::cat({image, image.flip(-1)});
}

models::CausalLm tiny_lamed() {
  auto loaded = models::model_load(test::fixture("lamed_phi3_tiny"));
  loaded.lm->train();
  return loaded.lm;
}

torch::Tensor tail_logits(models::CausalLmImpl& lm, const torch::Tensor& images, const Reference& ref) {
  const auto hidden = lm.model->forward(lm.embed(ref("input_ids"), images), nullptr, {}, ref("attention_mask"));
  const auto logits = lm.logits(hidden);
  return logits.slice(1, logits.size(1) - ref("logits").size(1));
}

// Every trainable parameter's gradient within `relative` of the reference's largest entry.
void expect_gradients(models::CausalLmImpl& lm, const Reference& ref, const std::string& prefix, size_t expected_count) {
  size_t compared = 0;
  for (const auto& item : lm.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    ASSERT_TRUE(ref.has(prefix + item.key())) << item.key() << " trains here but not in the reference";
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    const auto want = ref(prefix + item.key());
    const double scale = std::max(want.abs().max().item<double>(), 1e-12);
    EXPECT_LE((item.value().grad() - want).abs().max().item<double>() / scale, 1e-4) << item.key();
    ++compared;
  }
  EXPECT_EQ(compared, expected_count);
}

TEST(LamedTrain, SamplesAreBuiltAsMultiDataset) {
  const auto samples = test::read_json(test::fixture("lora/samples.json"));
  const auto tokenizer = text::Tokenizer::from_file(test::fixture("lamed_phi3_tiny/tokenizer.json"));
  const int64_t max_length = samples["max_length"];
  for (const auto& [key, pad] : {std::pair<std::string, int64_t>{"pad_unk", 0}, {"pad_eos", 2}}) {
    const auto& want = samples[key];
    for (size_t i = 0; i < samples["samples"].size(); ++i) {
      const auto& s = samples["samples"][i];
      const auto got = lamed_build_sample(tokenizer, s["question"], s["answer"], max_length, pad, 2);
      EXPECT_EQ(got.input_ids, want["input_ids"][i].get<std::vector<int64_t>>()) << key << " sample " << i;
      EXPECT_EQ(got.labels, want["labels"][i].get<std::vector<int64_t>>()) << key << " sample " << i;
      EXPECT_EQ(got.attention_mask, want["attention_mask"][i].get<std::vector<int64_t>>()) << key << " sample " << i;
    }
  }
}

// Med3DVLM's train_vlm.py keeps Qwen2.5's own eos_token and pad_token (med3dvlm_spec.md
// §4.6: EOS 151645 <|im_end|> in the first padding slot and learnt, pads 151643 masked),
// where M3D's train.py pads with <unk> or EOS.
TEST(LamedTrain, Med3dvlmSequencesEndWithImEndAndMaskTheEndOfTextPads) {
  const std::string dir = std::string(M3D_SOURCE_DIR) + "/third_party/tokenizers/qwen2_5";
  auto tokenizer = text::Tokenizer::load(dir);
  tokenizer.add_special_tokens({"<im_patch>"});
  EXPECT_EQ(tokenizer.vocab_size(), 151666);
  const SequenceTokens tokens = med3dvlm_sequence_tokens(tokenizer, dir);
  EXPECT_EQ(tokens.eos, 151645);
  EXPECT_EQ(tokens.pad, 151643);
  const std::string question = text::image_placeholders(4) + " Which plane is this? Choices: A. axial B. sagittal C. coronal D. oblique";
  const LamedSample s = lamed_build_sample(tokenizer, question, "A. axial", 64, tokens.pad, tokens.eos);
  const auto valid = static_cast<size_t>(std::count(s.attention_mask.begin(), s.attention_mask.end(), 1));
  const auto question_len = tokenizer.encode(question).size();
  ASSERT_LT(valid, s.input_ids.size());
  EXPECT_EQ(s.input_ids[valid], 151645);
  EXPECT_EQ(s.labels[valid], 151645) << "the appended <|im_end|> is learnt";
  EXPECT_EQ(s.labels[valid + 1], -100);
  EXPECT_EQ(s.input_ids[valid + 1], 151643);
  EXPECT_EQ(s.labels[question_len - 1], -100);
  EXPECT_EQ(s.labels[question_len], s.input_ids[question_len]) << "the answer is learnt";
  EXPECT_EQ(s.input_ids[0], 151665) << "no BOS: the prompt starts with <im_patch>";
  // The LaMed rule on a Llama tokenizer is unchanged.
  const auto llama = text::Tokenizer::from_file(test::fixture("lamed_phi3_tiny/tokenizer.json"));
  const SequenceTokens lamed = lamed_sequence_tokens(llama);
  EXPECT_EQ(lamed.pad, llama.token_to_id("<unk>"));
  EXPECT_EQ(lamed.eos, llama.token_to_id("</s>"));
  // A tokenizer_config.json naming a token the vocabulary lacks is refused by name.
  const std::string bad = test::temp_dir();
  fs::copy_file(dir + "/tokenizer.json", bad + "/tokenizer.json");
  std::ofstream(bad + "/tokenizer_config.json") << R"({"eos_token": "<|nope|>", "pad_token": "<|endoftext|>"})";
  EXPECT_THROW(
      {
        try {
          med3dvlm_sequence_tokens(tokenizer, bad);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("eos_token '<|nope|>' is not in the vocabulary"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
}

TEST(LamedTrain, Stage1LossAndGradientsMatch) {
  const Reference ref;
  auto lm = tiny_lamed();
  EXPECT_EQ(lamed_set_trainable(*lm, LamedStage::Pretrain), 5u);  // projector (4) and embed_tokens
  const auto loss = lamed_lm_loss(*lm, batch_images(), ref("input_ids"), ref("attention_mask"), ref("labels"));
  EXPECT_NEAR(loss.item<double>(), ref("stage1.loss").item<double>(), 1e-5);
  loss.backward();
  expect_gradients(*lm, ref, "stage1.grad.", 5);
}

TEST(LamedTrain, LoraForwardStepAndMergeMatchPeft) {
  const Reference ref;
  const auto images = batch_images();
  auto lm = tiny_lamed();
  const auto config = models::lora_load_adapter(*lm, test::fixture("lora/adapter"));
  EXPECT_EQ(config.r, 4);
  EXPECT_DOUBLE_EQ(config.alpha, 8);
  const size_t trainable = lamed_set_trainable(*lm, LamedStage::Finetune);
  EXPECT_EQ(trainable, 50u);

  {  // forward
    torch::NoGradGuard no_grad;
    const auto logits = tail_logits(*lm, images, ref);
    EXPECT_LE((logits - ref("logits")).abs().max().item<double>(), 1e-5);
  }
  const auto loss = lamed_lm_loss(*lm, images, ref("input_ids"), ref("attention_mask"), ref("labels"));
  EXPECT_NEAR(loss.item<double>(), ref("loss").item<double>(), 1e-5);
  loss.backward();
  expect_gradients(*lm, ref, "grad.", trainable);

  // clip_grad_norm_(1.0) and torch.optim.AdamW(lr 1e-3, weight decay 0)
  AdamWOptions adam;
  adam.lr = 1e-3;
  AdamW optimizer(trainable_parameters(*lm), adam);
  clip_grad_norm(optimizer.parameters(), 1.0);
  optimizer.step(1e-3);
  optimizer.zero_grad();
  // Adam's first step moves an entry by lr * g / (|g| + eps): an entry whose gradient is
  // within a few eps of 0 moves by a float-noise-dependent fraction of lr (here up to
  // 1.3% in a handful of lora_A entries); everything else agrees to ~1e-7.
  size_t compared = 0;
  for (const auto& item : lm->named_parameters()) {
    if (!ref.has("after." + item.key())) continue;
    const auto diff = (item.value() - ref("after." + item.key())).abs();
    EXPECT_LE(diff.max().item<double>(), 0.02 * adam.lr) << item.key();
    EXPECT_LE(diff.gt(1e-6).sum().item<int64_t>(), 4) << item.key();
    ++compared;
  }
  EXPECT_EQ(compared, 16u + 4u);  // 8 adapters x (A, B), the projector's 4 tensors
  {
    torch::NoGradGuard no_grad;
    const auto after = lamed_lm_loss(*lm, images, ref("input_ids"), ref("attention_mask"), ref("labels"));
    EXPECT_NEAR(after.item<double>(), ref("loss_after").item<double>(), 1e-5);
  }
}

TEST(LamedTrain, MergedModelHasTheHfLayoutAndTheLogits) {
  const Reference ref;
  auto lm = tiny_lamed();
  models::lora_load_adapter(*lm, test::fixture("lora/adapter"));
  EXPECT_EQ(models::lora_merge(*lm), 8u);
  std::vector<std::string> keys;
  for (const auto& item : lm->named_parameters()) keys.push_back(item.key());
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, test::read_json(test::fixture("lora/merged_keys.json")).get<std::vector<std::string>>());
  const auto params = lm->named_parameters();
  for (const std::string key : {"model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.mlp.gate_up_proj.weight"}) {
    EXPECT_LE((params[key] - ref("merged." + key)).abs().max().item<double>(), 1e-6) << key;
  }
  torch::NoGradGuard no_grad;
  EXPECT_LE((tail_logits(*lm, batch_images(), ref) - ref("merged_logits")).abs().max().item<double>(), 1e-5);
}

TEST(LamedTrain, ExportOfBaseAndPeftAdapterLoadsWithTheMergedLogits) {
  const Reference ref;
  const std::string out = test::temp_dir() + "/merged";
  EXPECT_EQ(lamed_export_merged(test::fixture("lamed_phi3_tiny"), test::fixture("lora/adapter"), out), 8u);
  auto loaded = models::model_load(out);  // strict: exactly the HF keys
  torch::NoGradGuard no_grad;
  EXPECT_LE((tail_logits(*loaded.lm, batch_images(), ref) - ref("merged_logits")).abs().max().item<double>(), 1e-5);
}

TEST(LamedTrain, AdapterSaveLoadRoundTripsAndBadAdaptersFail) {
  auto lm = tiny_lamed();
  const auto config = models::lora_load_adapter(*lm, test::fixture("lora/adapter"));
  const std::string tmp = test::temp_dir();  // wiped by each call: once
  const std::string dir = tmp + "/adapter";
  models::lora_save_adapter(*lm, config, dir);
  auto again = tiny_lamed();
  models::lora_load_adapter(*again, dir);
  const auto a = lm->named_parameters(), b = again->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();

  auto fresh = tiny_lamed();
  test::expect_one_line_error([&] { models::lora_load_adapter(*fresh, tmp); }, "", "no adapter_config.json");
  // One adapter weight missing.
  const std::string broken = tmp + "/broken";
  fs::create_directories(broken);
  fs::copy_file(dir + "/adapter_config.json", broken + "/adapter_config.json");
  {
    const auto saved = io::checkpoint_open(dir + "/adapter_model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> kept;
    for (const auto& [name, record] : saved.tensors) {
      if (name.find("layers.1.mlp.down_proj.lora_B") == std::string::npos) kept.emplace_back(name, io::tensor_from_record(record).clone());
    }
    io::safetensors_save(broken + "/adapter_model.safetensors", kept);
  }
  auto other = tiny_lamed();
  test::expect_one_line_error([&] { models::lora_load_adapter(*other, broken); }, "", "layers.1.mlp.down_proj.lora_B.weight' is missing");
  // Not LoRA.
  auto json = test::read_json(dir + "/adapter_config.json");
  json["peft_type"] = "IA3";
  std::ofstream(broken + "/adapter_config.json") << json.dump();
  auto third = tiny_lamed();
  test::expect_one_line_error([&] { models::lora_load_adapter(*third, broken); }, "", "peft_type 'IA3' is not supported");
  // A value of the wrong type names the file and the key.
  json["peft_type"] = "LORA";
  json["r"] = "eight";
  std::ofstream(broken + "/adapter_config.json") << json.dump();
  auto typed = tiny_lamed();
  test::expect_one_line_error([&] { models::lora_load_adapter(*typed, broken); }, broken + "/adapter_config.json",
                              "key 'r': expected an integer, found string");
  // No matching module.
  models::LoraConfig nowhere;
  nowhere.target_modules = {"no_such_proj"};
  auto fourth = tiny_lamed();
  test::expect_one_line_error([&] { models::lora_apply(*fourth, nowhere); }, "", "no Linear layer matches");
}

}  // namespace
}  // namespace m3d::train
