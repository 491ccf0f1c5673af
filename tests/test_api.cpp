// The public API (include/m3d/) end to end: examples/simple.cpp on a real NIfTI
// (nibabel's anatomical.nii) with the tiny LaMed fixture maps a box to the same LPS
// millimetres as `m3d volume back --box`; a Session answers as `m3d generate` does,
// question after question on one cached scan; streaming, cancellation and the
// model-space case. An Embedder's vectors are models::ClipModel's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

#include "generate/api.h"
#include "imaging/scan.h"
#include "io/npy.h"
#include "m3d/embedder.h"
#include "m3d/error.h"
#include "m3d/session.h"
#include "models/causal_lm.h"
#include "models/clip.h"
#include "text/tokenizer.h"
#include "test_support.h"

namespace m3d::test {
namespace {

const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";
const std::string kSimple = std::string(M3D_BINARY_DIR) + "/m3d_example_simple";
const std::string kScan = "/usr/lib/python3/dist-packages/nibabel/tests/data/anatomical.nii";

std::string model_dir() { return fixture("lamed_phi3_tiny"); }

// The six numbers after `label` ... "[a, b, c] to [d, e, f]" on one line of `text`.
std::vector<double> numbers_after(const std::string& text, const std::string& label) {
  const auto at = text.find(label);
  EXPECT_NE(at, std::string::npos) << label << " not in:\n" << text;
  if (at == std::string::npos) return {};
  const std::string line = text.substr(at, text.find('\n', at) - at);
  std::vector<double> out;
  const std::regex number(R"([-+]?\d+\.\d+)");
  for (auto it = std::sregex_iterator(line.begin(), line.end(), number); it != std::sregex_iterator(); ++it) out.push_back(std::stod(it->str()));
  return out;
}

TEST(Example, BoxInMillimetresEqualsVolumeBack) {
  const std::string dir = temp_dir();
  const std::string box = "[0.1, 0.2, 0.3, 0.6, 0.7, 0.9]";
  std::string out, err;
  ASSERT_EQ(run_command(kSimple + " " + model_dir() + " " + kScan + " 'Where is the lesion?' --box '" + box + "'", &out, &err), 0) << err;
  EXPECT_NE(out.find("answer: "), std::string::npos) << out;
  const std::vector<double> mm = numbers_after(out, "given box: LPS mm");
  ASSERT_EQ(mm.size(), 6u) << out;

  ASSERT_EQ(run_command(kM3d + " volume prep " + kScan + " --recipe m3d-lamed -o " + dir + "/prep.npy --map " + dir + "/map.json", &out, &err), 0) << err;
  ASSERT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --box '" + box + "'", &out, &err), 0) << err;
  const nlohmann::json back = nlohmann::json::parse(out);
  for (int a = 0; a < 3; ++a) {
    EXPECT_NEAR(mm[a], back["mm_min_lps"][a].get<double>(), 5e-4) << "axis " << a;
    EXPECT_NEAR(mm[3 + a], back["mm_max_lps"][a].get<double>(), 5e-4) << "axis " << a;
  }
}

TEST(Example, UsageAndErrors) {
  std::string out, err;
  EXPECT_EQ(run_command(kSimple, &out, &err), 1);
  EXPECT_NE(err.find("usage: simple"), std::string::npos) << err;
  EXPECT_EQ(run_command(kSimple + " " + model_dir() + " /nonexistent/scan.nii.gz", &out, &err), 1);
  EXPECT_NE(err.find("/nonexistent/scan.nii.gz"), std::string::npos) << err;
}

class Api : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new Model(Model::open(model_dir()));
    PrepareOptions prepare;
    prepare.model_dir = model_dir();
    scan_ = new PreparedScan(PreparedScan::prepare(kScan, prepare));
  }
  static void TearDownTestSuite() {
    delete scan_;
    delete model_;
  }
  static AskOptions greedy(int64_t tokens) {
    AskOptions ask;
    ask.sample = false;
    ask.max_new_tokens = tokens;
    return ask;
  }
  static inline Model* model_ = nullptr;
  static inline PreparedScan* scan_ = nullptr;
};

TEST_F(Api, ModelInfo) {
  const ModelInfo& info = model_->info();
  EXPECT_EQ(info.architecture, "LamedPhi3ForCausalLM");
  EXPECT_EQ(info.family, "lamed");
  EXPECT_TRUE(info.takes_images);
  EXPECT_FALSE(info.segments);
  EXPECT_EQ(info.image_grid, (std::array<int64_t, 3>{32, 256, 256}));
  EXPECT_EQ(info.image_tokens, 256);
  EXPECT_EQ(scan_->model_size(), (std::array<int64_t, 3>{32, 256, 256}));
  EXPECT_TRUE(scan_->has_map());
  EXPECT_EQ(scan_->model_voxels().size(), 32u * 256 * 256);
}

TEST_F(Api, AnswersEqualGenerateQuestionAfterQuestion) {
  // The cached image prefix answers as the whole prompt at once does (the path the
  // official fixtures check, generate::session_answer), question after question;
  // m3d generate prints the same.
  Session session(*model_);
  session.set_scan(*scan_);
  generate::GenerationOptions reference = model_->impl()->session.defaults;
  reference.do_sample = false;
  reference.max_new_tokens = 12;
  for (const std::string question : {"What is shown?", "Is there a lesion?", "What is shown?"}) {
    const Answer answer = session.ask(question, greedy(12));
    EXPECT_EQ(answer.text, generate::session_answer(model_->impl()->session, scan_->impl()->input, question, reference));
    std::string out, err;
    ASSERT_EQ(
        run_command(kM3d + " generate --model " + model_dir() + " --image " + kScan + " --prompt '" + question + "' --greedy --max-new-tokens 12", &out, &err),
        0)
        << err;
    EXPECT_EQ(answer.text + "\n", out) << question;
    EXPECT_EQ(answer.completion_tokens, 12) << "the tiny model never stops early on these prompts";
    EXPECT_EQ(answer.finish_reason, "length");
    EXPECT_GT(answer.prompt_tokens, 256);
  }
}

TEST_F(Api, StreamingAndCancel) {
  Session session(*model_);
  session.set_scan(*scan_);
  std::string streamed;
  const Answer full = session.ask("What is shown?", greedy(10), [&](const std::string& piece) {
    streamed += piece;
    return true;
  });
  EXPECT_EQ(streamed, full.text);
  AskOptions ask = greedy(10);
  int asked = 0;
  ask.should_stop = [&] { return ++asked > 3; };
  const Answer cut = session.ask("What is shown?", ask);
  EXPECT_EQ(cut.finish_reason, "cancelled");
  EXPECT_EQ(cut.completion_tokens, 4) << "asked before each new token after the first";
  // The session goes on after a cancel, answering as before.
  EXPECT_EQ(session.ask("What is shown?", greedy(10)).text, full.text);
}

TEST_F(Api, SegmentWithoutASegHeadIsAClearError) {
  // Session::segment's masks are checked against `m3d segment` through the server
  // (tests/test_serve.cpp SegmentBoxAndPointsEqualCli); here the refusals.
  Session session(*model_);
  SpatialPrompts prompts;
  prompts.box = SegBox{{8, 60, 60, 24, 200, 200}};
  try {
    session.segment("", prompts);
    FAIL() << "a model without a [SEG] head segmented";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("has no [SEG] segmentation head"), std::string::npos) << e.what(); }
}

TEST_F(Api, ModelSpaceInputHasNoMap) {
  const std::string path = temp_dir() + "/model.npy";
  std::vector<float> zeros(32 * 256 * 256, 0.5f);
  io::npy_write(path, DType::F32, {1, 32, 256, 256}, zeros.data());
  const PreparedScan scan = PreparedScan::prepare(path);
  EXPECT_FALSE(scan.has_map());
  const ScanBox box = scan.box({0.25, 0.5, 0.5, 0.75, 1.0, 1.0});
  EXPECT_FALSE(box.on_scan);
  EXPECT_EQ(box.model_min, (std::array<double, 3>{128, 128, 8}));
  EXPECT_EQ(box.mm_max, box.model_max);
  EXPECT_THROW(scan.map_json(), Error);
  EXPECT_THROW(scan.box({0.5, 0, 0, 1.5, 1, 1}), Error);
}

TEST_F(Api, WrongGridIsAClearError) {
  const std::string path = temp_dir() + "/small.npy";
  std::vector<float> zeros(8 * 16 * 16, 0.0f);
  io::npy_write(path, DType::F32, {1, 8, 16, 16}, zeros.data());
  Session session(*model_);
  try {
    session.set_scan(PreparedScan::prepare(path));
    FAIL() << "a 8x16x16 volume was accepted by a 32x256x256 model";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("32x256x256"), std::string::npos) << e.what(); }
  EXPECT_FALSE(session.scan().has_value());
}

// Model::open answers questions; a contrastive checkpoint is named as such with the
// command that opens it, and the architecture list is every one the fixtures'
// config.json files (written by the official classes' save_pretrained) name.
TEST(ApiOpen, ClipCheckpointSaysWhatItIsAndWhatOpensIt) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {fixture("clip/tiny_nce"), "M3DCLIP is M3D-CLIP (ViT3D + BERT), a contrastive image-report model"},
      {fixture("med3dvlm/dec_clip_tiny"), "DEC_CLIP is Med3DVLM's DCFormer_SigLIP (DCFormer + DistilBERT), a contrastive image-report model"},
  };
  for (const auto& [dir, what] : cases) {
    try {
      Model::open(dir);
      FAIL() << dir << " opened as a generative model";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), dir + ": " + what + "; it embeds scans and reports but answers no questions: use `m3d embed --model " + dir + "`");
    }
    // The library's own loader refuses it too, before reading any weight.
    try {
      models::model_load(dir);
      FAIL() << dir << " loaded as a causal LM";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), dir + "/config.json: " + what + ", not a causal LM; clip_load opens it (m3d embed --model DIR)");
    }
  }
}

TEST(ApiOpen, ArchitecturesAreEveryKindAndUnknownOnesListThem) {
  const std::vector<std::string> names = model_architectures();
  for (const std::string dir : {"lamed_phi3_tiny", "lamed_llama_tiny", "qwen2_tiny", "med3dvlm/vlm_qwen_tiny", "clip/tiny_nce", "med3dvlm/dec_clip_tiny"}) {
    const nlohmann::json config = nlohmann::json::parse(std::ifstream(fixture(dir) + "/config.json"));
    const nlohmann::json& arch = config.at("architectures");
    const std::string name = arch.is_string() ? arch.get<std::string>() : arch.at(0).get<std::string>();
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name << " of " << dir;
  }
  EXPECT_EQ(names.size(), 8u);
  const std::string dir = temp_dir();
  std::ofstream(dir + "/config.json") << R"({"architectures": ["GPT2LMHeadModel"]})";
  try {
    Model::open(dir);
    FAIL() << "GPT2LMHeadModel opened";
  } catch (const Error& e) {
    std::string supported;
    for (const auto& name : names) supported += (supported.empty() ? "" : ", ") + name;
    EXPECT_EQ(std::string(e.what()), dir + "/config.json: architecture 'GPT2LMHeadModel' is not supported (supported: " + supported + ")");
  }
}

// A scan's vector is the checkpoint's encode_image of the prepared input; a report's
// its encode_text of the tokenizer's ids, the last max_length kept ([CLS] The liver is
// normal . [SEP]: 7 WordPiece tokens of the tiny DistilBERT's vocabulary).
TEST(ApiEmbedder, VectorsAreTheClipModelsOnPreparedScansAndTokenizedReports) {
  torch::NoGradGuard no_grad;
  const std::string nce = fixture("clip/tiny_nce"), path = temp_dir() + "/v.npy";
  const at::Tensor volume = torch::rand({1, 8, 16, 16});
  io::npy_write(path, DType::F32, {1, 8, 16, 16}, volume.data_ptr<float>());
  const Embedder images = Embedder::open(nce);
  EXPECT_EQ(images.info().architecture, "M3DCLIP");
  EXPECT_EQ(images.info().image_grid, (std::array<int64_t, 3>{8, 16, 16}));
  EXPECT_EQ(images.info().dim, 32);
  const Embedding image = images.embed_scan(PreparedScan::prepare(path, {"auto", nce, ""}));
  const at::Tensor expected = models::clip_load(nce)->encode_image(volume.unsqueeze(0))[0];
  const at::Tensor got = torch::tensor(image.values);
  EXPECT_LE((got - expected).abs().max().item<double>(), 1e-6);
  EXPECT_NEAR(got.norm().item<double>(), 1.0, 1e-5);
  EXPECT_EQ(image.tokens, 0);

  const std::string dec = fixture("med3dvlm/dec_clip_tiny");
  models::ClipModel model = models::clip_load(dec);
  const text::Tokenizer tokenizer = text::Tokenizer::load(dec);
  const std::string report = "The liver is normal.";
  for (const int64_t max_length : {512, 4}) {
    const Embedding embedding = Embedder::open(dec, {"f32", max_length}).embed_text(report);
    std::vector<int64_t> ids = tokenizer.encode(report);
    ASSERT_EQ(ids.size(), 7u);
    if (max_length == 4) ids = {ids[0], ids[1], ids[2], ids[6]};  // truncation keeps [SEP]
    const at::Tensor input = torch::tensor(ids, torch::kLong).unsqueeze(0);
    const at::Tensor want = model->encode_text(input, torch::ones_like(input))[0];
    EXPECT_LE((torch::tensor(embedding.values) - want).abs().max().item<double>(), 1e-6) << max_length;
    EXPECT_EQ(embedding.tokens, std::min<int64_t>(7, max_length));
  }
}

TEST(ApiEmbedder, ErrorsSayWhatToDo) {
  const std::string nce = fixture("clip/tiny_nce"), lamed = fixture("lamed_phi3_tiny");
  EXPECT_TRUE(model_is_contrastive(nce));
  EXPECT_FALSE(model_is_contrastive(lamed));
  try {
    Embedder::open(lamed);
    FAIL() << "a LaMed checkpoint opened as an embedder";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("open it with m3d::Model::open"), std::string::npos) << e.what(); }
  const Embedder embedder = Embedder::open(nce);
  EXPECT_FALSE(embedder.info().has_tokenizer);
  try {
    embedder.embed_text("The liver is normal.");
    FAIL() << "a checkpoint without tokenizer files embedded a report";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find(nce + ": no tokenizer"), std::string::npos) << e.what(); }
  const std::string path = temp_dir() + "/small.npy";
  const std::vector<float> zeros(8 * 8 * 8, 0.0f);
  io::npy_write(path, DType::F32, {1, 8, 8, 8}, zeros.data());
  try {
    embedder.embed_scan(PreparedScan::prepare(path));
    FAIL() << "an 8x8x8 volume was embedded by an 8x16x16 model";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("8x8x8, the model takes 8x16x16"), std::string::npos) << e.what(); }
}

}  // namespace
}  // namespace m3d::test
