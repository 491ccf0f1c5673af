// Parity of the whole LaMed forward pass and greedy generation with transformers'
// Phi3ForCausalLM / LlamaForCausalLM + MONAI ViT, on tiny random checkpoints in
// the released layout (tools/reference/make_lamed_fixtures.py; the image is the
// official fixture's real MRI in ../shared).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <set>

#include "generate/generate.h"
#include "io/checkpoint.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/layers.h"
#include "test_support.h"

namespace m3d::models {
namespace {

struct Case {
  const char* dir;
  const char* architecture;
};

class LamedParity : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    dir_ = test::fixture(GetParam().dir);
    expected_ = std::make_unique<io::Checkpoint>(io::checkpoint_open(dir_ + "/expected.safetensors"));
    shared_ = std::make_unique<io::Checkpoint>(
        io::checkpoint_open(test::shared_fixture("vit3d_spp_tiny/expected.safetensors")));
  }
  at::Tensor expected(const std::string& name) const { return io::tensor_from_record(expected_->tensor(name)); }
  at::Tensor image() const { return io::tensor_from_record(shared_->tensor("images")); }
  static double max_diff(const at::Tensor& a, const at::Tensor& b) {
    EXPECT_EQ(a.sizes(), b.sizes());
    return (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>();
  }
  std::string dir_;
  std::unique_ptr<io::Checkpoint> expected_, shared_;
};

TEST_P(LamedParity, LogitsMatchInFp32) {
  torch::NoGradGuard no_grad;
  LoadedModel loaded = model_load(dir_);
  EXPECT_EQ(loaded.architecture, GetParam().architecture);
  ASSERT_NE(loaded.lm->lamed(), nullptr);
  const at::Tensor ids = expected("input_ids");
  const at::Tensor images = image();
  EXPECT_LE(max_diff(loaded.lm->lamed()->encode_images(images), expected("projector_output")), 1e-4);
  const at::Tensor embeds = loaded.lm->embed(ids, images);
  EXPECT_LE(max_diff(embeds, expected("inputs_embeds")), 1e-4);
  const at::Tensor logits = loaded.lm->logits(loaded.lm->model->forward(embeds));
  const double diff = max_diff(logits, expected("logits"));
  std::printf("%s fp32 logits max abs diff %.3g\n", GetParam().dir, diff);
  EXPECT_LE(diff, 1e-4);
}

TEST_P(LamedParity, GreedyTokensMatchWithKvCache) {
  LoadedModel loaded = model_load(dir_);
  const at::Tensor embeds = loaded.lm->embed(expected("input_ids"), image());
  generate::GenerationOptions options;
  options.max_new_tokens = 20;
  const auto result = generate::generate(*loaded.lm, embeds, options);
  const at::Tensor want = expected("greedy_ids").flatten();
  ASSERT_EQ(result.tokens.size(), 1u);
  EXPECT_EQ(result.tokens[0], std::vector<int64_t>(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + want.numel()));
  EXPECT_LE(max_diff(result.last_logits, expected("logits_last_step")), 1e-4);
}

// bf16 weights: every logit within 10% of the reference's logit standard deviation
// (measured: see docs/models.md), and the first 10 greedy tokens unchanged (the
// fixture's seeds are chosen so each step's top-2 gap is >= 0.05 std).
TEST_P(LamedParity, Bf16StaysCloseAndKeepsTheFirstGreedyTokens) {
  torch::NoGradGuard no_grad;
  LoadedModel loaded = model_load(dir_, torch::kBFloat16);
  const at::Tensor embeds = loaded.lm->embed(expected("input_ids"), image());
  EXPECT_EQ(embeds.scalar_type(), compute_dtype(torch::kBFloat16, torch::kCPU));  // f32 on CPUs without bf16 units
  const at::Tensor reference = expected("logits");
  const at::Tensor logits = loaded.lm->logits(loaded.lm->model->forward(embeds)).to(torch::kFloat);
  const double relative = max_diff(logits, reference) / reference.std().item<double>();
  std::printf("%s bf16 logits max abs diff / std = %.4f\n", GetParam().dir, relative);
  EXPECT_LE(relative, 0.10);
  generate::GenerationOptions options;
  options.max_new_tokens = 10;
  const auto result = generate::generate(*loaded.lm, embeds, options);
  const at::Tensor want = expected("greedy_ids").flatten().slice(0, 0, 10);
  EXPECT_EQ(result.tokens[0], std::vector<int64_t>(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + 10));
}

// A left-padded batch gives each row what it gives alone (positions count real
// tokens only, padding is masked), as HF generate does with left padding.
TEST_P(LamedParity, LeftPaddedBatchEqualsSeparateRuns) {
  LoadedModel loaded = model_load(dir_);
  const at::Tensor ids = expected("input_ids");
  const at::Tensor images = torch::cat({image(), image().flip(-1)}, 0);
  const at::Tensor long_embeds = loaded.lm->embed(ids, images.slice(0, 0, 1));
  const at::Tensor short_ids = ids.slice(1, 0, ids.size(1) - 5);
  const at::Tensor short_embeds = loaded.lm->embed(short_ids, images.slice(0, 1, 2));
  generate::GenerationOptions options;
  options.max_new_tokens = 8;
  const auto alone_long = generate::generate(*loaded.lm, long_embeds, options).tokens[0];
  const auto alone_short = generate::generate(*loaded.lm, short_embeds, options).tokens[0];
  const int64_t pad = 5;
  const at::Tensor padded_short = torch::cat({torch::zeros({1, pad, short_embeds.size(2)}), short_embeds}, 1);
  const at::Tensor batch = torch::cat({long_embeds, padded_short}, 0);
  at::Tensor mask = torch::ones({2, ids.size(1)}, torch::kLong);
  mask.index_put_({1, torch::indexing::Slice(0, pad)}, 0);
  const auto together = generate::generate(*loaded.lm, batch, options, mask).tokens;
  EXPECT_EQ(together[0], alone_long);
  EXPECT_EQ(together[1], alone_short);
}

TEST_P(LamedParity, StopTokenEndsGeneration) {
  LoadedModel loaded = model_load(dir_);
  const at::Tensor embeds = loaded.lm->embed(expected("input_ids"), image());
  const at::Tensor want = expected("greedy_ids").flatten();
  generate::GenerationOptions options;
  options.max_new_tokens = 20;
  options.eos_token_id = {want[3].item<int64_t>()};
  const auto tokens = generate::generate(*loaded.lm, embeds, options).tokens[0];
  std::vector<int64_t> prefix(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + want.numel());
  const auto stop = std::find(prefix.begin(), prefix.end(), want[3].item<int64_t>());
  prefix.erase(stop + 1, prefix.end());
  EXPECT_EQ(tokens, prefix);  // up to and including the first stop token
}

INSTANTIATE_TEST_SUITE_P(Tiny, LamedParity,
                         ::testing::Values(Case{"lamed_phi3_tiny", "LamedPhi3ForCausalLM"},
                                           Case{"lamed_llama_tiny", "LamedLlamaForCausalLM"}),
                         [](const auto& info) { return std::string(info.param.architecture); });

TEST(LamedErrors, UnknownArchitectureListsSupportedOnes) {
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/config.json") << R"({"architectures": ["GPT2LMHeadModel"], "hidden_size": 8})";
  try {
    model_load(dir);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("architecture 'GPT2LMHeadModel' is not supported (supported: "), std::string::npos) << m;
    EXPECT_NE(m.find("LamedPhi3ForCausalLM"), std::string::npos) << m;
  }
}

TEST(LamedErrors, PromptLongerThanContextIsRefused) {
  LoadedModel loaded = model_load(test::fixture("lamed_llama_tiny"));
  const int64_t context = loaded.lm->model->config().max_position_embeddings;
  const at::Tensor embeds = torch::zeros({1, context, loaded.lm->model->config().hidden_size});
  generate::GenerationOptions options;
  options.max_new_tokens = 1;
  try {
    generate::generate(*loaded.lm, embeds, options);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the model's context"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace m3d::models

namespace m3d::models {
namespace {

// A plain Qwen2ForCausalLM (q/k/v bias, tied embeddings, GQA) from transformers
// (tools/reference/make_lamed_fixtures.py): text-only logits and greedy tokens.
TEST(Qwen2Parity, LogitsAndGreedyTokensMatch) {
  torch::NoGradGuard no_grad;
  const std::string dir = test::fixture("qwen2_tiny");
  const io::Checkpoint expected = io::checkpoint_open(dir + "/expected.safetensors");
  LoadedModel loaded = model_load(dir);
  EXPECT_EQ(loaded.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(loaded.lm->lamed(), nullptr);
  EXPECT_FALSE(loaded.lm->lm_head) << "tied embeddings: no lm_head module";
  const at::Tensor ids = io::tensor_from_record(expected.tensor("input_ids"));
  const at::Tensor embeds = loaded.lm->embed(ids);
  const at::Tensor logits = loaded.lm->logits(loaded.lm->model->forward(embeds));
  const double diff = (logits - io::tensor_from_record(expected.tensor("logits"))).abs().max().item<double>();
  std::printf("qwen2_tiny fp32 logits max abs diff %.3g\n", diff);
  EXPECT_LE(diff, 1e-4);
  generate::GenerationOptions options;
  options.max_new_tokens = 20;
  const auto tokens = generate::generate(*loaded.lm, embeds, options).tokens[0];
  const at::Tensor want = io::tensor_from_record(expected.tensor("greedy_ids")).flatten();
  EXPECT_EQ(tokens, std::vector<int64_t>(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + want.numel()));
  EXPECT_THROW(loaded.lm->embed(ids, torch::zeros({1, 1, 32, 256, 256})), Error) << "no vision tower";
}

}  // namespace
}  // namespace m3d::models

namespace m3d::generate {
namespace {

// The sampler's processors on hand-checkable logits (HF semantics).
TEST(Sampler, ProcessorsFollowHuggingFace) {
  auto generator = at::detail::createCPUGenerator(0);
  const auto logits = torch::tensor({{1.0f, 3.0f, 2.0f, -1.0f}});
  GenerationOptions greedy;
  EXPECT_EQ(next_tokens(logits, greedy, {}, generator).item<int64_t>(), 1);
  // Repetition penalty 4 on token 1: 3 / 4 = 0.75 < 2, so token 2 wins.
  GenerationOptions penalty;
  penalty.repetition_penalty = 4.0;
  EXPECT_EQ(next_tokens(logits, penalty, torch::tensor({{1}}, torch::kLong), generator).item<int64_t>(), 2);
  // Negative scores are multiplied: -1 * 4 = -4 falls below -2.
  EXPECT_EQ(next_tokens(torch::tensor({{-1.0f, -2.0f}}), penalty, torch::tensor({{0}}, torch::kLong), generator).item<int64_t>(), 1);
  // top_k = 1 and a tiny top_p leave only the best token, whatever the seed.
  GenerationOptions top_k;
  top_k.do_sample = true;
  top_k.top_k = 1;
  GenerationOptions top_p;
  top_p.do_sample = true;
  top_p.top_p = 0.01;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto g = at::detail::createCPUGenerator(seed);
    EXPECT_EQ(next_tokens(logits, top_k, {}, g).item<int64_t>(), 1);
    EXPECT_EQ(next_tokens(logits, top_p, {}, g).item<int64_t>(), 1);
  }
  // Probabilities 0.089, 0.657, 0.242, 0.012; ascending cumulative 0.012 (3), 0.101 (0),
  // 0.343 (2): top_p = 0.8 removes what stays <= 0.2, tokens 3 and 0.
  GenerationOptions nucleus;
  nucleus.do_sample = true;
  nucleus.top_p = 0.8;
  std::set<int64_t> drawn;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    auto g = at::detail::createCPUGenerator(seed);
    drawn.insert(next_tokens(logits, nucleus, {}, g).item<int64_t>());
  }
  EXPECT_EQ(drawn, (std::set<int64_t>{1, 2}));
  // The same seed draws the same tokens.
  GenerationOptions sample;
  sample.do_sample = true;
  auto g1 = at::detail::createCPUGenerator(7), g2 = at::detail::createCPUGenerator(7);
  const auto wide = torch::randn({1, 50});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(next_tokens(wide, sample, {}, g1).item<int64_t>(), next_tokens(wide, sample, {}, g2).item<int64_t>());
  GenerationOptions bad;
  bad.do_sample = true;
  bad.temperature = 0;
  EXPECT_THROW(next_tokens(logits, bad, {}, generator), Error);
}

}  // namespace
}  // namespace m3d::generate
