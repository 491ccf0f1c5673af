// LaMed's [SEG] path end to end against the official M3D code: tests/fixtures/lamed_seg_tiny
// (tools/reference/make_lamed_seg_fixtures.py: LamedPhi3ForCausalLM.generate(seg_enable=True)
// over a tiny Phi-3 whose seg module and ViTs are ../shared/fixtures/segvol_small's).
// Greedy tokens, the [SEG] hidden state, seg_prompt and the mask logits; box and point
// prompts through the prompt encoder; the KV-cache generation, greedy and sampled.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "generate/generate.h"
#include "generate/session.h"
#include "imaging/model_input.h"
#include "imaging/volume_io.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "io/tensor.h"
#include "models/segvol.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";
const std::string kScan = "/usr/lib/python3/dist-packages/nibabel/tests/data/anatomical.nii";

// The fixture's checkpoint as the script builds it: its model.safetensors plus segvol_small's
// tensors, whose image encoder is also the vision tower's ViT (see the script's docstring).
std::string assemble_checkpoint() {
  const std::string source = fixture("lamed_seg_tiny");
  // Once per suite (no test is current), per process: ctest -j runs this suite's tests side by side.
  const std::string dir = std::string(M3D_BINARY_DIR) + "/test_tmp/LamedSeg.checkpoint." + std::to_string(::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(source + "/config.json", dir + "/config.json");
  fs::copy_file(source + "/tokenizer.json", dir + "/tokenizer.json");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, record] : io::checkpoint_open(source + "/model.safetensors").tensors) {
    tensors.emplace_back(name, io::tensor_from_record(record).clone());
  }
  const std::string encoder = "model.seg_module.image_encoder.";
  for (const auto& [name, record] : io::checkpoint_open(shared_fixture("segvol_small") + "/model.safetensors").tensors) {
    const at::Tensor t = io::tensor_from_record(record).clone();
    tensors.emplace_back(name, t);
    if (name.compare(0, encoder.size(), encoder) == 0) tensors.emplace_back("model.vision_tower.vision_tower." + name.substr(encoder.size()), t);
  }
  io::safetensors_save(dir + "/model.safetensors", tensors);
  return dir;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const double diff = (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>();
  std::printf("max abs diff %.3g\n", diff);
  return diff;
}

class LamedSeg : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(assemble_checkpoint());
    session_ = new generate::Session(generate::session_open(*dir_));
    expected_ = new io::Checkpoint(io::checkpoint_open(fixture("lamed_seg_tiny") + "/expected.safetensors"));
    images_ = new at::Tensor(
        io::tensor_from_record(io::checkpoint_open(shared_fixture("vit3d_spp_tiny") + "/expected.safetensors").tensor("images")).to(torch::kFloat).clone());
  }
  static void TearDownTestSuite() {
    delete session_;
    delete expected_;
    delete images_;
    std::error_code ignored;
    fs::remove_all(*dir_, ignored);
    delete dir_;
  }
  static at::Tensor expected(const std::string& name) { return io::tensor_from_record(expected_->tensor(name)).clone(); }
  static std::vector<int64_t> ids(const std::string& name) {
    const at::Tensor t = expected(name).flatten().contiguous();
    return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()};
  }
  static generate::GenerationOptions greedy() {
    generate::GenerationOptions o = session_->defaults;
    o.max_new_tokens = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json")["max_new_tokens"].get<int64_t>();
    o.seg_token_id = session_->seg_token_id;
    return o;
  }
  // The script's record of full logits (1, 1, 32, 256, 256): a strided subsample, the
  // means over each pair of axes and the count of positive voxels.
  static void expect_logits(const at::Tensor& logits, const std::string& name) {
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, 1, 32, 256, 256}));
    const at::Tensor x = logits[0][0].to(torch::kFloat);
    const at::Tensor sub = x.slice(0, 1, 32, 3).slice(1, 2, 256, 7).slice(2, 3, 256, 5);
    EXPECT_LE(max_diff(sub, expected(name + "_logits_sub")), 1e-4) << name;
    EXPECT_LE(max_diff(x.mean(std::vector<int64_t>{1, 2}), expected(name + "_mean_d")), 1e-5) << name;
    EXPECT_LE(max_diff(x.mean(std::vector<int64_t>{0, 2}), expected(name + "_mean_h")), 1e-5) << name;
    EXPECT_LE(max_diff(x.mean(std::vector<int64_t>{0, 1}), expected(name + "_mean_w")), 1e-5) << name;
    const int64_t positive = (x > 0).sum().item<int64_t>(), want = expected(name + "_positive").item<int64_t>();
    // Only voxels within the tolerance of 0 may flip.
    EXPECT_LE(std::abs(positive - want), (x.abs() < 1e-4).sum().item<int64_t>()) << name;
    EXPECT_GT(want, 1000) << name << ": the recorded mask should not be empty";
    EXPECT_LT(want, x.numel() - 1000) << name << ": nor full";
  }
  static std::string* dir_;
  static generate::Session* session_;
  static io::Checkpoint* expected_;
  static at::Tensor* images_;
};
std::string* LamedSeg::dir_ = nullptr;
generate::Session* LamedSeg::session_ = nullptr;
io::Checkpoint* LamedSeg::expected_ = nullptr;
at::Tensor* LamedSeg::images_ = nullptr;

TEST_F(LamedSeg, LoadsTheSegHeadStrictly) {
  ASSERT_TRUE(session_->model.seg);
  EXPECT_TRUE(session_->model.ignored.empty());
  EXPECT_EQ(session_->seg_token_id, 300);
  EXPECT_EQ(session_->tokenizer.token_to_id("[SEG]"), 300);
  const models::SegvolConfig& c = session_->model.seg->seg_module->config();
  EXPECT_EQ(c.hidden_size, 48);
  EXPECT_EQ(c.vit_num_layers, 1);
}

TEST_F(LamedSeg, GreedyTokensHiddenStateAndLogitsMatchOfficial) {
  torch::NoGradGuard no_grad;
  const auto json = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json");
  std::string placeholders;
  for (int i = 0; i < 256; ++i) placeholders += "<im_patch>";
  EXPECT_EQ(session_->tokenizer.encode(placeholders + json["prompt"].get<std::string>()), ids("input_ids"));
  auto& lm = *session_->model.lm;
  const at::Tensor input_ids = expected("input_ids");
  const auto result = generate::generate(lm, lm.embed(input_ids, *images_), greedy());
  const std::vector<int64_t> want = ids("greedy_ids");
  EXPECT_EQ(result.tokens[0], want);
  const int64_t segs = std::count(want.begin() + 1, want.end(), 300);
  ASSERT_GE(segs, 2) << "the fixture's answer should hold several [SEG]";
  ASSERT_EQ(static_cast<int64_t>(result.seg_hidden[0].size()), segs);
  const at::Tensor hidden = at::stack(result.seg_hidden[0]).mean(0, true);  // (1, 48)
  EXPECT_LE(max_diff(hidden, expected("seg_hidden_state")), 1e-4);
  auto& seg = *session_->model.seg;
  EXPECT_LE(max_diff(seg.seg_projector->forward(hidden), expected("seg_prompt")), 1e-4);
  expect_logits(seg.forward(*images_, hidden), "seg");

  // The session API: the same text and mask logits.
  const auto answer = generate::session_answer_seg(*session_, *images_, json["prompt"].get<std::string>(), greedy());
  EXPECT_EQ(answer.text, json["text"].get<std::string>());
  EXPECT_EQ(answer.seg_count, segs);
  expect_logits(answer.seg_logits, "seg");
}

TEST_F(LamedSeg, NoSegTokenGivesAnEmptyMask) {
  const auto json = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json");
  const auto answer = generate::session_answer_seg(*session_, *images_, json["no_seg_prompt"].get<std::string>(), greedy());
  EXPECT_EQ(answer.text, json["no_seg_text"].get<std::string>());
  EXPECT_EQ(answer.seg_count, 0);
  ASSERT_EQ(answer.seg_logits.sizes(), (std::vector<int64_t>{1, 1, 32, 256, 256}));
  EXPECT_TRUE(torch::isneginf(answer.seg_logits).all().item<bool>());  // lamed_phi3.py: logits[noseg_ids] = -inf
}

TEST_F(LamedSeg, SegChosenFirstHasNoHiddenState) {
  // generate reads hidden_states[1:]: a [SEG] chosen from the prompt's last position is not used.
  torch::NoGradGuard no_grad;
  auto& lm = *session_->model.lm;
  generate::GenerationOptions o = greedy();
  const std::vector<int64_t> want = ids("greedy_ids");
  o.seg_token_id = want[0];
  const auto result = generate::generate(lm, lm.embed(expected("input_ids"), *images_), o);
  EXPECT_EQ(static_cast<int64_t>(result.seg_hidden[0].size()), std::count(want.begin() + 1, want.end(), want[0]));
}

TEST_F(LamedSeg, SampledGenerationKeepsTheStateBeforeEachSeg) {
  // With sampling and the KV cache, each kept state is the full forward's final hidden
  // state at the position before that [SEG].
  torch::NoGradGuard no_grad;
  auto& lm = *session_->model.lm;
  generate::GenerationOptions o = greedy();
  o.do_sample = true;
  o.temperature = 0.7;
  o.top_k = 50;
  const at::Tensor prompt = lm.embed(expected("input_ids"), *images_);  // (1, L, 48)
  int64_t checked = 0;
  for (uint64_t seed = 0; seed < 20 && checked == 0; ++seed) {
    o.seed = seed;
    const auto result = generate::generate(lm, prompt, o);
    const auto& tokens = result.tokens[0];
    const at::Tensor generated = torch::tensor(tokens, torch::kLong).unsqueeze(0);
    const at::Tensor full = lm.model->forward(torch::cat({prompt, lm.embed(generated)}, 1));  // (1, L + N, 48), no cache
    size_t kept = 0;
    for (size_t j = 1; j < tokens.size(); ++j) {
      if (tokens[j] != 300) continue;
      ASSERT_LT(kept, result.seg_hidden[0].size());
      EXPECT_LE(max_diff(result.seg_hidden[0][kept++], full[0][prompt.size(1) + j - 1]), 1e-4);
      ++checked;
    }
    EXPECT_EQ(kept, result.seg_hidden[0].size());
  }
  EXPECT_GT(checked, 0) << "no sampled answer held a [SEG]";
}

TEST_F(LamedSeg, BoxAndPointPromptsMatchOfficial) {
  torch::NoGradGuard no_grad;
  auto& segvol = *session_->model.seg->seg_module;
  const at::Tensor points = expected("points"), labels = expected("point_labels"), box = expected("box");
  struct Case {
    std::string name;
    bool points, box, text;
  };
  for (const Case& c : {Case{"points", true, false, false}, Case{"box_text", false, true, true}, Case{"points_box", true, true, false}}) {
    models::SegPrompts prompts;
    if (c.points) prompts.points = points, prompts.point_labels = labels;
    if (c.box) prompts.boxes = box;
    if (c.text) prompts.text = expected("seg_prompt");
    EXPECT_LE(max_diff(segvol.prompt_encoder->forward(prompts).first, expected(c.name + "_sparse")), 1e-5) << c.name;
    expect_logits(segvol.forward(*images_, prompts), c.name);
  }
}

TEST_F(LamedSeg, CliSegmentAndGenerateWriteTheMask) {
  const std::string dir = temp_dir();
  const auto json = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json");
  const std::string image = shared_fixture("vit3d_spp_tiny") + "/expected.safetensors --image-key images";
  const std::string prompt = " --prompt '" + json["prompt"].get<std::string>() + "' --max-new-tokens 16";
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " segment --model " + *dir_ + " --image " + image + prompt + " --logits " + dir + "/l.npy -o " + dir + "/m.npy", &out, &err), 0)
      << err;
  EXPECT_EQ(out, json["text"].get<std::string>() + "\n");
  const at::Tensor logits = io::tensor_from_record(io::npy_read(dir + "/l.npy").array).clone();
  expect_logits(logits, "seg");
  const at::Tensor mask = io::tensor_from_record(io::npy_read(dir + "/m.npy").array).clone();
  EXPECT_TRUE(torch::equal(mask, (logits > 0).to(torch::kByte)));
  // m3d generate --seg-out: the same mask.
  ASSERT_EQ(run_command(kM3d + " generate --model " + *dir_ + " --image " + image + prompt + " --seg-out " + dir + "/g.npy", &out, &err), 0) << err;
  EXPECT_EQ(out, json["text"].get<std::string>() + "\n");
  EXPECT_TRUE(torch::equal(io::tensor_from_record(io::npy_read(dir + "/g.npy").array), mask));
}

TEST_F(LamedSeg, CliPromptWithABoxMatchesOfficial) {
  // m3d segment --prompt --box: the mean [SEG] state and the box in one prompt, the official box_text case.
  const std::string dir = temp_dir();
  const auto json = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json");
  const at::Tensor box = expected("box");
  std::string corners = fmt::format("{}", box[0][0].item<float>());
  for (int64_t i = 1; i < 6; ++i) corners += fmt::format(",{}", box[0][i].item<float>());
  std::string out, err;
  ASSERT_EQ(
      run_command(kM3d + " segment --model " + *dir_ + " --image " + shared_fixture("vit3d_spp_tiny") + "/expected.safetensors --image-key images --prompt '" +
                      json["prompt"].get<std::string>() + "' --max-new-tokens 16 --box " + corners + " --logits " + dir + "/l.npy",
                  &out, &err),
      0)
      << err;
  EXPECT_EQ(out, json["text"].get<std::string>() + "\n");
  expect_logits(io::tensor_from_record(io::npy_read(dir + "/l.npy").array).clone(), "box_text");
}

TEST_F(LamedSeg, MaskOfAScanLandsOnItsGrid) {
  // A scan prepared by a recipe: the .nii.gz mask is on the scan's grid, equal to what
  // m3d volume back makes of the model-space mask.
  const std::string dir = temp_dir();
  const auto json = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json");
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " segment --model " + *dir_ + " --image " + kScan + " --recipe m3d-lamed --prompt '" + json["prompt"].get<std::string>() +
                            "' --max-new-tokens 16 -o " + dir + "/mask.nii.gz --logits " + dir + "/l.npy",
                        &out, &err),
            0)
      << err;
  const at::Tensor logits = io::tensor_from_record(io::npy_read(dir + "/l.npy").array).clone();
  const at::Tensor model_mask = (logits > 0).to(torch::kFloat).contiguous();
  ASSERT_GT(model_mask.sum().item<double>(), 0);
  io::npy_write(dir + "/model_mask.npy", DType::F32, model_mask.sizes().vec(), model_mask.data_ptr<float>());
  ASSERT_EQ(run_command(kM3d + " volume prep " + kScan + " --recipe m3d-lamed -o " + dir + "/x.npy --map " + dir + "/map.json", &out, &err), 0) << err;
  ASSERT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --mask " + dir + "/model_mask.npy -o " + dir + "/back.nii.gz", &out, &err), 0) << err;
  const imaging::RawVolume mask = imaging::volume_read(dir + "/mask.nii.gz");
  const imaging::RawVolume back = imaging::volume_read(dir + "/back.nii.gz");
  const imaging::RawVolume scan = imaging::volume_read(kScan);
  EXPECT_EQ(mask.size, scan.size);
  EXPECT_EQ(mask.dtype, DType::U8);
  const auto a = mask.geometry.affine_ras(), b = scan.geometry.affine_ras();
  for (int n = 0; n < 16; ++n) EXPECT_NEAR(a[n], b[n], 1e-4) << n;
  EXPECT_EQ(mask.data, back.data);
  int64_t ones = 0;
  for (uint8_t v : mask.data) ones += v;
  EXPECT_GT(ones, 0);
}

TEST_F(LamedSeg, SegOutErrors) {
  std::string out, err;
  const std::string dir = temp_dir();
  // A checkpoint without a seg head.
  EXPECT_EQ(run_command(kM3d + " generate --model " + fixture("lamed_phi3_tiny") + " --image " + shared_fixture("vit3d_spp_tiny") +
                            "/expected.safetensors --image-key images --prompt hi --seg-out " + dir + "/m.npy",
                        &out, &err),
            1);
  EXPECT_NE(err.find("--seg-out needs --image and a checkpoint with a [SEG] head"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " segment --model " + fixture("lamed_phi3_tiny") + " --image " + shared_fixture("vit3d_spp_tiny") +
                            "/expected.safetensors --image-key images --prompt hi -o " + dir + "/m.npy",
                        &out, &err),
            1);
  EXPECT_NE(err.find("'segmentation_module' is not set"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir + "/m.npy"));
}

}  // namespace
}  // namespace m3d::test
