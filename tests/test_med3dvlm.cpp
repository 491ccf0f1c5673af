// Med3DVLM against the official code (tools/reference/make_med3dvlm_fixtures.py): the
// VLMQwenForCausalLM's logits with its off-by-one image splice and 20 greedy tokens
// under the release's generation_config.json, and DCFormer_SigLIP's (DEC_CLIP)
// embeddings, sigmoid loss and gradients of one training step. Both are tiny models
// at the real 128x256x256 input; the volume is ../shared/fixtures/dcformer_mixer_tiny's.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "generate/generate.h"
#include "generate/session.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/npy.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/clip.h"
#include "models/med3dvlm.h"
#include "test_support.h"

namespace m3d::models {
namespace {
namespace fs = std::filesystem;

const char* kPrompt = "Describe the findings of this scan.";

// (1, 1, 128, 256, 256): stored as F16, the reference ran on it converted to f32.
at::Tensor fixture_image() {
  static const at::Tensor image = [] {
    const auto ckpt = io::checkpoint_open(test::shared_fixture("dcformer_mixer_tiny/expected.safetensors"));
    return io::tensor_from_record(ckpt.tensor("images")).to(at::kFloat).clone();
  }();
  return image;
}

double max_diff(const at::Tensor& got, const at::Tensor& want) {
  EXPECT_EQ(got.sizes(), want.sizes());
  const double diff = (got.to(at::kFloat) - want).abs().max().item<double>();
  std::printf("max abs diff %.3g (reference max |x| %.3g)\n", diff, want.abs().max().item<double>());
  return diff;
}

class VlmQwenParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::fixture("med3dvlm/vlm_qwen_tiny"));
    expected_ = new io::Checkpoint(io::checkpoint_open(*dir_ + "/expected.safetensors"));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete expected_;
  }
  static at::Tensor expected(const std::string& name) { return io::tensor_from_record(expected_->tensor(name)).clone(); }
  static at::Tensor logits_of(CausalLmImpl& lm, const at::Tensor& ids) {
    torch::NoGradGuard no_grad;
    return lm.logits(lm.model->forward(lm.embed(ids, fixture_image())));  // (1, L, V)
  }
  static std::string* dir_;
  static io::Checkpoint* expected_;
};
std::string* VlmQwenParity::dir_ = nullptr;
io::Checkpoint* VlmQwenParity::expected_ = nullptr;

TEST_F(VlmQwenParity, LogitsWithTheImageMatchOfficial) {
  LoadedModel loaded = model_load(*dir_);
  EXPECT_EQ(loaded.architecture, "VLMQwenForCausalLM");  // config.json gives it as a plain string
  auto* vlm = dynamic_cast<Med3dvlmModelImpl*>(loaded.lm->model.get());
  ASSERT_NE(vlm, nullptr);
  EXPECT_EQ(vlm->proj_out_num(), 64);
  EXPECT_EQ(loaded.lm->model->config().model_type, "qwen2");
  EXPECT_LE(max_diff(logits_of(*loaded.lm, expected("input_ids")), expected("logits")), 1e-4);
}

// vlm_arch.py keeps E(ids[0]) and E(ids[N+1:]): with no BOS the first text token
// (ids[N]) is never seen, while the token after it is.
TEST_F(VlmQwenParity, TheFirstTextTokenIsDropped) {
  LoadedModel loaded = model_load(*dir_);
  const at::Tensor ids = expected("input_ids");
  const int64_t N = 64, dropped = expected("dropped_token").item<int64_t>();
  ASSERT_EQ(ids[0][N].item<int64_t>(), dropped);
  const at::Tensor reference = logits_of(*loaded.lm, ids);
  at::Tensor other = ids.clone();
  other[0][N] = 7;
  EXPECT_TRUE(torch::equal(logits_of(*loaded.lm, other), reference));
  other = ids.clone();
  other[0][N + 1] = 7;
  EXPECT_GT((logits_of(*loaded.lm, other) - reference).abs().max().item<double>(), 1e-3);
}

TEST_F(VlmQwenParity, GreedyTokensUnderTheReleasedGenerationConfigMatchOfficial) {
  generate::Session session = generate::session_open(*dir_);
  // generation_config.json: Qwen2.5-Instruct's sampling values, which the release inherits.
  EXPECT_TRUE(session.defaults.do_sample);
  EXPECT_DOUBLE_EQ(session.defaults.temperature, 0.7);
  EXPECT_EQ(session.defaults.top_k, 20);
  EXPECT_DOUBLE_EQ(session.defaults.top_p, 0.8);
  EXPECT_DOUBLE_EQ(session.defaults.repetition_penalty, 1.05);
  EXPECT_EQ(session.defaults.eos_token_id, (std::vector<int64_t>{2, 0}));
  // The prompt: "<im_patch>" x 64 + text, no BOS, no chat template; <im_patch> is the last id.
  std::string prompt;
  for (int i = 0; i < 64; ++i) prompt += "<im_patch>";
  const std::vector<int64_t> ids = session.tokenizer.encode(prompt + kPrompt);
  const at::Tensor want_ids = expected("input_ids");
  ASSERT_EQ(static_cast<int64_t>(ids.size()), want_ids.size(1));
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], want_ids[0][static_cast<int64_t>(i)].item<int64_t>()) << i;
  EXPECT_EQ(ids[0], session.model.lm->model->config().vocab_size - 1);
  // generate(images, inputs, do_sample=False, max_new_tokens=20): greedy, the config's repetition penalty applies.
  generate::GenerationOptions options = session.defaults;
  options.do_sample = false;
  options.max_new_tokens = 20;
  torch::NoGradGuard no_grad;
  const auto embeds = session.model.lm->embed(want_ids, fixture_image());
  const auto result = generate::generate(*session.model.lm, embeds, options);
  const at::Tensor want = expected("greedy_tokens");
  ASSERT_EQ(static_cast<int64_t>(result.tokens[0].size()), want.size(1));
  for (int64_t i = 0; i < want.size(1); ++i) EXPECT_EQ(result.tokens[0][static_cast<size_t>(i)], want[0][i].item<int64_t>()) << i;
  // The same through session_answer, as `m3d generate` runs it.
  EXPECT_EQ(generate::session_answer(session, fixture_image(), kPrompt, options), session.tokenizer.decode(result.tokens[0], true));
}

TEST_F(VlmQwenParity, GenerateCommandRunsIt) {
  const std::string dir = test::temp_dir();
  const at::Tensor image = fixture_image().contiguous();
  io::npy_write(dir + "/image.npy", DType::F32, {1, 128, 256, 256}, image.data_ptr());  // M3D-Data's 1 x D x H x W
  const std::string m3d = std::string(M3D_BINARY_DIR) + "/m3d";
  const auto run = [&](const std::string& args, std::string* out, std::string* err) {
    return test::run_command(m3d + " generate --model " + *dir_ + " " + args, out, err);
  };
  std::string out, err;
  ASSERT_EQ(run("--image " + dir + "/image.npy --prompt '" + kPrompt + "' --greedy --max-new-tokens 20", &out, &err), 0) << err;
  generate::Session session = generate::session_open(*dir_);
  std::vector<int64_t> want;
  const at::Tensor tokens = expected("greedy_tokens");
  for (int64_t i = 0; i < tokens.size(1); ++i) want.push_back(tokens[0][i].item<int64_t>());
  EXPECT_EQ(out, session.tokenizer.decode(want, true) + "\n");
  // A scan goes through the med3dvlm recipe (128 x 256 x 256), picked for a DCFormer tower.
  ASSERT_EQ(run("--image " + test::fixture("volumes/m3d_cap_slices") + " --prompt 'What is shown?' --max-new-tokens 4 --seed 3", &out, &err), 0) << err;
  // m3d chat cannot cache an image prefix for BOS-less prompts: each question is
  // answered from scratch, as m3d generate answers it.
  std::string generated;
  ASSERT_EQ(run("--image " + dir + "/image.npy --prompt 'What is it?' --max-new-tokens 4 --greedy", &generated, &err), 0) << err;
  ASSERT_EQ(
      test::run_command("echo 'What is it?' | " + m3d + " chat --model " + *dir_ + " --image " + dir + "/image.npy --max-new-tokens 4 --greedy", &out, &err), 0)
      << err;
  EXPECT_EQ(out, generated);
}

// A volume on another grid (here M3D's 32 slices): `m3d encode` and `m3d generate` run the
// same vision side and refuse it with the same line, naming both grids and the recipe.
TEST_F(VlmQwenParity, EncodeAndGenerateRefuseAnImageOffTheModelGridAlike) {
  const std::string dir = test::temp_dir();
  const at::Tensor small = fixture_image().slice(2, 0, 32).contiguous();
  io::npy_write(dir + "/small.npy", DType::F32, {1, 32, 256, 256}, small.data_ptr());
  const std::string m3d = std::string(M3D_BINARY_DIR) + "/m3d", image = " --image " + dir + "/small.npy";
  std::string out, encode_err, generate_err;
  EXPECT_EQ(test::run_command(m3d + " encode --model " + *dir_ + image + " -o " + dir + "/out.safetensors", &out, &encode_err), 1);
  EXPECT_EQ(test::run_command(m3d + " generate --model " + *dir_ + image + " --prompt x --max-new-tokens 2", &out, &generate_err), 1);
  const std::string message =
      "image is 1x1x32x256x256 but this model's grid is 128x256x256 (D x H x W; expected an image of shape [B, 1, 128, 256, 256]): "
      "prepare the scan with --recipe (the checkpoint's m3d_recipe.json or the built-in med3dvlm) or give a .npy already on the model grid";
  EXPECT_NE(encode_err.find("m3d: error: " + message + "\n"), std::string::npos) << encode_err;
  EXPECT_NE(generate_err.find("m3d: error: " + message + "\n"), std::string::npos) << generate_err;
  // The model-level path (CausalLmImpl::embed) says the same.
  const LoadedModel loaded = model_load(*dir_);
  test::expect_one_line_error([&] { loaded.lm->multimodal()->encode_images(small); }, "", message);
}

TEST(VlmQwen, ConfigsThatDoNotFitAreClearErrors) {
  const std::string source = test::fixture("med3dvlm/vlm_qwen_tiny");
  const auto refused = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& fragment) {
    const std::string dir = test::temp_dir();
    nlohmann::json config = test::read_json(source + "/config.json");
    edit(config);
    std::ofstream(dir + "/config.json") << config.dump(2);
    fs::create_symlink(fs::absolute(source + "/model.safetensors"), dir + "/model.safetensors");
    test::expect_one_line_error([&] { model_load(dir); }, dir + "/config.json", fragment);
  };
  refused([](auto& c) { c["mm_projector_type"] = "mlp"; }, "mm_projector_type 'mlp' does not fit the DCFormer tower");
  refused([](auto& c) { c["vision_tower"] = "vit3d"; }, "vision_tower 'vit3d' is not supported for Med3DVLM");
  refused([](auto& c) { c["low_input_size"] = {256, 384}; }, "low_input_size [256, 384] does not fit the DCFormer");
}

// DCFormer_SigLIP: eval-mode embeddings, then one training step (BatchNorm on batch statistics).
TEST(DecClip, TrainingStepMatchesOfficial) {
  const std::string dir = test::fixture("med3dvlm/dec_clip_tiny");
  ClipModel model = clip_load(dir);
  EXPECT_EQ(model->config().model_type, "dec_clip");
  EXPECT_EQ(model->config().text.model_type, "distilbert");
  EXPECT_EQ(model->config().hidden_size, 40);
  const auto expected = io::checkpoint_open(dir + "/expected.safetensors");
  auto tensor = [&](const std::string& name) { return io::tensor_from_record(expected.tensor(name)).clone(); };
  const at::Tensor image = fixture_image();
  const at::Tensor images = torch::cat({image, image.flip(-1), 1 - image});  // (3, 1, 128, 256, 256), as the reference
  const at::Tensor ids = tensor("input_ids"), mask = tensor("attention_mask");
  ASSERT_LT(mask.sum().item<int64_t>(), mask.numel());  // some padding, so the mask matters
  {
    torch::NoGradGuard no_grad;
    EXPECT_LE(max_diff(model->encode_image(images), tensor("image_features")), 1e-5);
    EXPECT_LE(max_diff(model->encode_text(ids, mask), tensor("text_features")), 1e-5);
  }
  model->train();
  const auto loss = model->loss(model->encode_image(images), model->encode_text(ids, mask));
  std::printf("dec_clip: loss %.7f, reference %.7f\n", loss.item<double>(), tensor("loss").item<double>());
  EXPECT_LE(std::abs(loss.item<double>() - tensor("loss").item<double>()), 1e-5);
  loss.backward();
  size_t compared = 0;
  double worst = 0;
  for (const auto& item : model->named_parameters()) {
    const std::string key = "grad." + item.key();
    ASSERT_TRUE(expected.tensors.count(key)) << key;
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    const auto want = tensor(key);
    const std::string name = item.key();
    if (std::regex_search(name, std::regex(R"(\.c[123]\.0\.bias$)"))) {
      // A DecompConv3D branch's conv bias feeds a train-mode BatchNorm, which removes any
      // per-channel shift: its gradient is mathematically zero, a sum of ~1e5 float
      // terms on both sides. Both must be tiny next to the conv weight's gradient.
      const double weight_scale = tensor("grad." + name.substr(0, name.size() - 4) + "weight").abs().max().item<double>();
      EXPECT_LE(want.abs().max().item<double>(), 1e-3 * weight_scale) << name;
      EXPECT_LE(item.value().grad().abs().max().item<double>(), 1e-3 * weight_scale) << name;
      ++compared;
      continue;
    }
    // Relative to the tensor's largest gradient, with a floor (as test_clip.cpp: the key
    // biases' gradients are mathematically zero, float noise on both sides).
    const double scale = std::max(want.abs().max().item<double>(), 1e-3);
    const double relative = (item.value().grad() - want).abs().max().item<double>() / scale;
    worst = std::max(worst, relative);
    EXPECT_LE(relative, 1e-4) << item.key();
    ++compared;
  }
  std::printf("dec_clip: %zu parameter gradients, max relative diff %.3g\n", compared, worst);
  EXPECT_GE(compared, 100u);
  // Train-mode BatchNorm updated its running statistics as PyTorch's did.
  size_t statistics = 0;
  for (const auto& item : model->named_buffers()) {
    if (item.key().find("running_") == std::string::npos) continue;
    EXPECT_LE((item.value() - tensor("after." + item.key())).abs().max().item<double>(), 1e-5) << item.key();
    ++statistics;
  }
  EXPECT_GE(statistics, 50u);
}

TEST(DecClip, EmbedCommandMatchesOfficial) {
  const std::string dir = test::temp_dir(), model = test::fixture("med3dvlm/dec_clip_tiny");
  const at::Tensor image = fixture_image().contiguous();
  io::npy_write(dir + "/image.npy", DType::F32, {1, 128, 256, 256}, image.data_ptr());
  std::string out, err;
  const std::string m3d = std::string(M3D_BINARY_DIR) + "/m3d";
  ASSERT_EQ(test::run_command(m3d + " embed --model " + model + " --image " + dir + "/image.npy --text 'The lungs are clear.'", &out, &err), 0) << err;
  const auto result = nlohmann::json::parse(out);
  const auto expected = io::checkpoint_open(model + "/expected.safetensors");
  auto row = [&](const std::string& name, int64_t i) { return io::tensor_from_record(expected.tensor(name))[i].clone(); };
  // One text alone (no padding) gives what the padded batch gave for it.
  EXPECT_LE(max_diff(torch::tensor(result["image"][0].get<std::vector<float>>()), row("image_features", 0)), 1e-5);
  EXPECT_LE(max_diff(torch::tensor(result["text"][0].get<std::vector<float>>()), row("text_features", 2)), 1e-5);
}

TEST(DecClip, ConfigKeysAndShapes) {
  const auto ckpt = io::checkpoint_open(test::fixture("med3dvlm/dec_clip_tiny"));
  const ClipConfig config = clip_config_from_checkpoint(ckpt);
  EXPECT_EQ(config.dcformer.channels, (std::array<int64_t, 5>{8, 12, 16, 24, 32}));
  EXPECT_EQ(config.text.num_hidden_layers, 2);
  EXPECT_EQ(config.text.intermediate_size, 37);
  EXPECT_EQ(config.loss_type, "sigmoid");
  // The released config.json has no text_config: ClinicalBERT's DistilBERT.
  auto released = io::json_read_file(test::fixture("med3dvlm/dec_clip_tiny/config.json"));
  released.erase("text_config");
  const ClipConfig defaults = ClipConfig::from_json(released, "config.json");
  EXPECT_EQ(defaults.text.model_type, "distilbert");
  EXPECT_EQ(defaults.text.vocab_size, 119547);
  EXPECT_EQ(defaults.text.num_attention_heads, 12);
  EXPECT_EQ(defaults.text.layer_norm_eps, 1e-12);
  auto bad = released;
  bad["loss_type"] = "nce";
  test::expect_one_line_error([&] { ClipConfig::from_json(bad, "config.json"); }, "config.json", "DEC_CLIP loss_type 'nce' is not supported");
  bad = released;
  bad["vision_encoder"] = "vit3d";
  test::expect_one_line_error([&] { ClipConfig::from_json(bad, "config.json"); }, "config.json", "vision_encoder 'vit3d' is not supported");
}

}  // namespace
}  // namespace m3d::models
