// BERT-family encoders and BERTScore against transformers 4.41.2 and bert_score
// 0.3.13 (tools/reference/make_bert_fixtures.py): tiny random BERT and RoBERTa
// checkpoints, the real all-MiniLM-L6-v2 (scripts/fetch_vocab.sh), and BERTScore
// with MiniLM on the 500 pairs of the metrics corpus.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "eval/bertscore.h"
#include "io/checkpoint.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/bert.h"
#include "test_support.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace m3d {
namespace {

namespace fs = std::filesystem;

std::string minilm_dir() {
  const std::string dir = std::string(M3D_SOURCE_DIR) + "/third_party/models/all-MiniLM-L6-v2";
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors")) << dir << " missing: run scripts/fetch_vocab.sh (setup.sh does)";
  return dir;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// Every hidden state stored in `expected` (hidden_state_<i>), the last one and the pooler.
void expect_encoder_parity(models::BertModel& model, const io::Checkpoint& expected, const at::Tensor& input_ids, double tolerance) {
  torch::NoGradGuard no_grad;
  auto tensor = [&](const std::string& name) { return io::tensor_from_record(expected.tensor(name)); };
  const auto mask = tensor("attention_mask");
  const auto types = expected.tensors.count("token_type_ids") ? tensor("token_type_ids") : at::Tensor();
  const auto out = model->forward(input_ids, mask, types, true);
  ASSERT_EQ(static_cast<int64_t>(out.hidden_states.size()), model->config().num_hidden_layers + 1);
  int compared = 0;
  for (size_t i = 0; i < out.hidden_states.size(); ++i) {
    const std::string name = "hidden_state_" + std::to_string(i);
    if (!expected.tensors.count(name)) continue;
    // Padded rows carry values too (attention over the real tokens only): compare them all.
    const double diff = max_diff(out.hidden_states[i], tensor(name));
    std::printf("%s: max abs diff %.3g\n", name.c_str(), diff);
    EXPECT_LE(diff, tolerance) << name;
    ++compared;
  }
  EXPECT_GE(compared, 2);
  if (expected.tensors.count("last_hidden_state")) { EXPECT_LE(max_diff(out.last_hidden_state, tensor("last_hidden_state")), tolerance); }
  if (expected.tensors.count("pooler_output")) {
    ASSERT_TRUE(out.pooler_output.defined());
    EXPECT_LE(max_diff(out.pooler_output, tensor("pooler_output")), tolerance);
  } else {
    EXPECT_FALSE(model->has_pooler());
  }
}

TEST(Bert, TinyRandomBertMatchesTransformers) {
  const std::string dir = test::fixture("bert/tiny_bert");
  auto model = models::bert_load(dir);
  EXPECT_TRUE(model->has_pooler());
  EXPECT_EQ(model->config().hidden_act, "gelu");
  const auto expected = io::checkpoint_open(dir + "/expected.safetensors");
  expect_encoder_parity(model, expected, io::tensor_from_record(expected.tensor("input_ids")), 1e-5);
}

TEST(Bert, TinyRandomRobertaFromAMaskedLmCheckpointMatchesTransformers) {
  const std::string dir = test::fixture("bert/tiny_roberta");
  auto model = models::bert_load(dir);  // keys roberta.*, lm_head.* ignored
  EXPECT_TRUE(model->config().roberta_positions());
  EXPECT_EQ(model->config().hidden_act, "gelu_new");
  const auto expected = io::checkpoint_open(dir + "/expected.safetensors");
  expect_encoder_parity(model, expected, io::tensor_from_record(expected.tensor("input_ids")), 1e-5);
}

TEST(Bert, RealMiniLmWithItsTokenizerMatchesTransformers) {
  auto model = models::bert_load(minilm_dir());
  const auto expected = io::checkpoint_open(test::fixture("bert/minilm_expected.safetensors"));
  const auto texts = test::read_json(test::fixture("bert/minilm_texts.json")).get<std::vector<std::string>>();
  const auto reference_ids = io::tensor_from_record(expected.tensor("input_ids"));
  const text::Tokenizer tokenizer = text::Tokenizer::load(minilm_dir());
  auto ids = torch::zeros_like(reference_ids);
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto row = tokenizer.encode(texts[i]);
    ids[static_cast<int64_t>(i)].slice(0, 0, static_cast<int64_t>(row.size())).copy_(torch::tensor(row, torch::kLong));
  }
  EXPECT_TRUE(ids.equal(reference_ids));
  expect_encoder_parity(model, expected, ids, 1e-4);
}

TEST(Bert, NumLayersRunsOnlyTheFirstLayers) {
  torch::NoGradGuard no_grad;
  const std::string dir = test::fixture("bert/tiny_roberta");
  auto model = models::bert_load(dir);
  const auto expected = io::checkpoint_open(dir + "/expected.safetensors");
  const auto ids = io::tensor_from_record(expected.tensor("input_ids"));
  const auto mask = io::tensor_from_record(expected.tensor("attention_mask"));
  const auto out = model->forward(ids, mask, {}, false, 2);
  EXPECT_LE(max_diff(out.last_hidden_state, io::tensor_from_record(expected.tensor("hidden_state_2"))), 1e-5);
}

TEST(Bert, BadConfigsAndInputsAreClearErrors) {
  const std::string dir = test::temp_dir();
  auto config = test::read_json(test::fixture("bert/tiny_bert/config.json"));
  auto with = [&](const char* key, const nlohmann::json& value, const std::string& fragment) {
    auto c = config;
    c[key] = value;
    test::expect_one_line_error([&] { models::BertConfig::from_json(c, "config.json"); }, "config.json", fragment);
  };
  with("model_type", "deberta-v2", "not a BERT-family encoder");
  with("hidden_act", "swish", "hidden_act 'swish' is not supported");
  with("num_attention_heads", 5, "not divisible by 5 attention heads");
  with("hidden_size", -3, "hidden_size = -3 is out of range");
  with("position_embedding_type", "relative_key", "position_embedding_type 'relative_key' is not supported");
  auto model = models::bert_load(test::fixture("bert/tiny_bert"));
  test::expect_one_line_error([&] { model->forward(torch::full({1, 3}, 500, torch::kLong)); }, "", "token ids must lie in [0, 99)");
  test::expect_one_line_error([&] { model->forward(torch::zeros({1, 41}, torch::kLong)); }, "", "41 tokens exceed the 40 position embeddings");
  test::expect_one_line_error([&] { model->forward(torch::zeros({3}, torch::kLong)); }, "", "must be (batch, tokens)");
  test::expect_one_line_error([&] { model->forward(torch::zeros({1, 3}, torch::kLong), torch::ones({1, 4})); }, "", "attention_mask");
  fs::create_directories(dir + "/no_weights");
  fs::copy_file(test::fixture("bert/tiny_bert/config.json"), dir + "/no_weights/config.json");
  EXPECT_THROW(models::bert_load(dir + "/no_weights"), Error);
}

// The (prediction, references) pairs of the metrics corpus (tests/fixtures/metrics/text_metrics.json).
std::pair<std::vector<std::string>, std::vector<std::vector<std::string>>> corpus_pairs() {
  std::pair<std::vector<std::string>, std::vector<std::vector<std::string>>> out;
  const auto corpus = test::read_json(test::fixture("metrics/text_metrics.json"));  // kept alive for the loop
  for (const auto& pair : corpus["pairs"]) {
    out.first.push_back(pair["prediction"]);
    out.second.push_back(pair["references"].get<std::vector<std::string>>());
  }
  return out;
}

// BERTScore per pair against bert_score; `run` names the options in the fixture.
void expect_bertscore_parity(const std::string& run, eval::BertScoreOptions options) {
  const auto reference = test::read_json(test::fixture("metrics/bertscore.json"));
  const auto [candidates, references] = corpus_pairs();
  ASSERT_GE(candidates.size(), 500u);
  options.model_dir = minilm_dir();
  const eval::BertScorer scorer(options);
  const auto got = scorer.score(candidates, references);
  const auto& want = reference["runs"][run];
  // Rescaling (x - b) / (1 - b) multiplies float32 rounding by 1 / (1 - b) (~4 here):
  // the 1e-6 bound holds for the score before that linear map. (bert_score itself
  // moves in the 1e-7 range between runs: its embedding batches group sentences in
  // hash order among equal lengths.)
  std::array<double, 3> scale = {1, 1, 1};
  if (!options.baseline_path.empty()) {
    std::ifstream in(options.baseline_path);
    std::string line;
    for (int64_t row = -1; row < options.num_layers && std::getline(in, line);) ++row;
    std::stringstream fields(line);
    std::string field;
    std::getline(fields, field, ',');
    for (double& s : scale) {
      std::getline(fields, field, ',');
      s = 1.0 - std::stod(field);
    }
  }
  double worst = 0;
  size_t within = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff =
        std::max({std::abs(got[i].precision - want["P"][i].get<double>()) * scale[0], std::abs(got[i].recall - want["R"][i].get<double>()) * scale[1],
                  std::abs(got[i].fmeasure - want["F"][i].get<double>()) * scale[2]});
    worst = std::max(worst, diff);
    within += diff <= 1e-6;
    EXPECT_LE(diff, 1e-6) << "pair " << i << ": " << candidates[i];
  }
  std::printf("%s: %zu of %zu pairs within 1e-6 (P, R and F, before rescaling); max abs diff %.3g\n", run.c_str(), within, got.size(), worst);
}

TEST(BertScore, MiniLmFourLayersMatchesBertScore) {
  eval::BertScoreOptions options;
  options.num_layers = 4;
  expect_bertscore_parity("layer4", options);
}

TEST(BertScore, IdfWeightsMatchBertScore) {
  eval::BertScoreOptions options;
  options.num_layers = 4;
  options.idf = true;
  expect_bertscore_parity("layer4_idf", options);
}

TEST(BertScore, BaselineRescalingMatchesBertScore) {
  eval::BertScoreOptions options;
  options.num_layers = 6;
  options.baseline_path = test::fixture("metrics/bertscore_baseline.tsv");
  expect_bertscore_parity("layer6_rescaled", options);
}

// The path roberta-large takes (M3D's setting): RoBERTa's byte-level tokenizer with the
// prefix space bert_score adds, <s> ... </s>, and a RoBERTa encoder -- on a 600-token BPE
// and a tiny random RobertaModel (tools/reference/make_bert_fixtures.py).
TEST(BertScore, RobertaTokenizerAndEncoderMatchBertScore) {
  const std::string dir = test::fixture("bert/roberta_bertscore");
  const auto reference = test::read_json(test::fixture("metrics/bertscore_roberta.json"));
  const text::Tokenizer tokenizer = text::Tokenizer::load(dir);  // tokenizer.json (RobertaProcessing)
  const auto& texts = reference["texts"];
  size_t same = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    // bert_score's sent_encode: strip; "" -> <s></s>; else encode with add_prefix_space=True, truncated to 512.
    const std::string stripped = text::utf8::python_rstrip(text::utf8::python_lstrip(texts[i].get<std::string>()));
    std::vector<int64_t> ids = stripped.empty() ? std::vector<int64_t>{0, 2} : tokenizer.encode(" " + stripped);
    if (ids.size() > 512) ids.resize(512), ids.back() = 2;
    same += ids == reference["ids"][i].get<std::vector<int64_t>>();
    EXPECT_EQ(ids, reference["ids"][i].get<std::vector<int64_t>>()) << texts[i];
  }
  std::printf("RoBERTa tokenizer: %zu of %zu texts give bert_score's ids\n", same, texts.size());
  const auto [candidates, references] = corpus_pairs();
  eval::BertScoreOptions options;
  options.model_dir = dir;
  options.num_layers = 2;
  const auto got = eval::BertScorer(options).score(candidates, references);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::max({std::abs(got[i].precision - reference["P"][i].get<double>()), std::abs(got[i].recall - reference["R"][i].get<double>()),
                                  std::abs(got[i].fmeasure - reference["F"][i].get<double>())});
    worst = std::max(worst, diff);
    EXPECT_LE(diff, 1e-6) << "pair " << i;
  }
  std::printf("RoBERTa BERTScore: %zu pairs, max abs diff %.3g\n", got.size(), worst);
}

TEST(BertScore, DefaultLayersAndBadInputs) {
  EXPECT_EQ(eval::bertscore_default_layers("roberta-large"), 17);
  EXPECT_EQ(eval::bertscore_default_layers("bert-base-uncased"), 9);
  EXPECT_EQ(eval::bertscore_default_layers("all-MiniLM-L6-v2"), -1);
  eval::BertScoreOptions options;
  options.model_dir = minilm_dir();
  test::expect_one_line_error([&] { eval::BertScorer scorer(options); }, "", "no default BERTScore layer");
  options.num_layers = 7;
  test::expect_one_line_error([&] { eval::BertScorer scorer(options); }, "", "7 layers asked, the model has 6");
  options.num_layers = 2;
  options.baseline_path = test::fixture("metrics/bertscore_baseline.tsv") + ".missing";
  test::expect_one_line_error([&] { eval::BertScorer scorer(options); }, "", "cannot open the BERTScore baseline");
  const std::string dir = test::temp_dir();
  { std::ofstream(dir + "/short.tsv") << "LAYER,P,R,F\n0,0.5,0.5,0.5\n"; }
  options.baseline_path = dir + "/short.tsv";
  test::expect_one_line_error([&] { eval::BertScorer scorer(options); }, "", "no row for layer 2");
  options.baseline_path.clear();
  const eval::BertScorer scorer(options);
  test::expect_one_line_error([&] { scorer.score({"a"}, {}); }, "", "1 candidates but 0 reference groups");
  test::expect_one_line_error([&] { scorer.score({"a"}, {{}}); }, "", "candidate 0 has no reference");
  const auto same = scorer.score({"The liver is normal.", ""}, {{"The liver is normal."}, {"x"}});
  EXPECT_NEAR(same[0].fmeasure, 1.0, 1e-6);
  EXPECT_EQ(same[1].precision, 0.0);  // an empty candidate scores 0, as in bert_score
  EXPECT_EQ(same[1].fmeasure, 0.0);
}

}  // namespace
}  // namespace m3d
