// Parity of the [SEG] path (seg_projector + SegVol) with the official M3D code
// (segmentation_module/ + MONAI 1.3.0 ViT): ../shared/fixtures/segvol_small (see its
// README); weights are F16 in the file and run here in f32, as the reference did.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/segvol.h"
#include "models/layers.h"
#include "test_support.h"

namespace m3d::models {
namespace {

namespace fs = std::filesystem;

class SegvolParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = test::shared_fixture("segvol_small");
    checkpoint_ = new io::Checkpoint(io::checkpoint_open(dir));
    expected_ = new io::Checkpoint(io::checkpoint_open(dir + "/expected.safetensors"));
    seg_ = new LamedSeg(lamed_seg_load(*checkpoint_));
  }
  static void TearDownTestSuite() {
    delete seg_;
    delete checkpoint_;
    delete expected_;
  }
  static at::Tensor expected(const std::string& name) { return io::tensor_from_record(expected_->tensor(name)); }
  static double max_diff(const at::Tensor& a, const at::Tensor& b) {
    EXPECT_EQ(a.sizes(), b.sizes());
    const double diff = (a - b).abs().max().item<double>();
    std::printf("max abs diff %.3g\n", diff);
    return diff;
  }
  static io::Checkpoint* checkpoint_;
  static io::Checkpoint* expected_;
  static LamedSeg* seg_;
};
io::Checkpoint* SegvolParity::checkpoint_ = nullptr;
io::Checkpoint* SegvolParity::expected_ = nullptr;
LamedSeg* SegvolParity::seg_ = nullptr;

TEST_F(SegvolParity, DimsComeFromConfigAndShapes) {
  const SegvolConfig& c = (*seg_)->seg_module->config();
  EXPECT_EQ(c.embed_dim, 768);
  EXPECT_EQ(c.vit_mlp_dim, 64);
  EXPECT_EQ(c.vit_num_layers, 1);
  EXPECT_EQ(c.vit_num_heads, 12);
  EXPECT_EQ(c.twoway_depth, 2);
  EXPECT_EQ(c.twoway_num_heads, 8);
  EXPECT_EQ(c.twoway_mlp_dim, 64);
  EXPECT_EQ(c.iou_head_hidden_dim, 32);
  EXPECT_EQ(c.num_mask_tokens, 4);
  EXPECT_EQ(c.hidden_size, 48);
  EXPECT_EQ(c.mm_hidden_size, 768);
  EXPECT_FALSE((*seg_)->seg_module->image_encoder->config().classification);
  // The weights were F16 in the file; the model computes in f32.
  EXPECT_EQ((*seg_)->seg_module->mask_decoder->upscale_norm->weight.scalar_type(), torch::kFloat);
}

TEST_F(SegvolParity, ProjectorMatchesOfficial) {
  torch::NoGradGuard no_grad;
  const at::Tensor prompt = (*seg_)->seg_projector->forward(expected("seg_hidden_state"));
  EXPECT_LE(max_diff(prompt, expected("seg_prompt")), 1e-5);
}

TEST_F(SegvolParity, LogitsMatchOfficial) {
  torch::NoGradGuard no_grad;
  SegPrompts prompts;
  prompts.text = expected("seg_prompt");
  const at::Tensor logits = (*seg_)->seg_module->forward(expected("images"), prompts);
  const at::Tensor reference = expected("seg_logits");
  EXPECT_LE(max_diff(logits, reference), 1e-4);
  // The whole path from the hidden state, and the mask as M3D thresholds it (sigmoid > 0.5).
  const at::Tensor from_hidden = (*seg_)->forward(expected("images"), expected("seg_hidden_state"));
  EXPECT_LE(max_diff(from_hidden, reference), 1e-4);
  const auto mask = from_hidden > 0, reference_mask = reference > 0;
  const int64_t foreground = reference_mask.sum().item<int64_t>();
  EXPECT_GT(foreground, 1000) << "the fixture's mask should not be empty";
  EXPECT_LT(foreground, reference.numel() - 1000) << "nor full";
  // Voxels whose reference logit is within the tolerance of 0 may flip; no other may.
  const auto disagree = (mask != reference_mask) & (reference.abs() > 1e-4);
  EXPECT_EQ(disagree.sum().item<int64_t>(), 0);
}

TEST_F(SegvolParity, Bf16WeightsStayCloseToOfficial) {
  // M3D runs the seg module in bf16. Both CPU paths for bf16 weights, whatever this CPU has:
  // bf16 activations, and f32 activations over the bf16-rounded weights.
  torch::NoGradGuard no_grad;
  LamedSeg seg = lamed_seg_load(*checkpoint_);
  io::module_cast_floating(*seg, torch::kBFloat16);
  const at::Tensor reference = expected("seg_logits");
  for (const auto mode : {CpuHalfActivations::kHalf, CpuHalfActivations::kFloat}) {
    if (mode == CpuHalfActivations::kHalf && !cpu_has_bf16_arithmetic()) continue;  // not taken on this CPU (layers.h)
    cpu_half_activations_set(mode);
    struct Reset {
      ~Reset() { cpu_half_activations_set(CpuHalfActivations::kAuto); }
    } reset;
    const at::Tensor logits = seg->forward(expected("images"), expected("seg_hidden_state")).to(torch::kFloat);
    const double relative = ((logits - reference).abs().max() / reference.std()).item<double>();
    const double flipped = ((logits > 0) != (reference > 0)).to(torch::kDouble).mean().item<double>();
    std::printf("bf16 weights, %s activations: max abs diff / reference std %.3g, mask voxels flipped %.3g\n",
                mode == CpuHalfActivations::kHalf ? "bf16" : "f32", relative, flipped);
    EXPECT_LE(relative, 0.1);
    EXPECT_LE(flipped, 0.01);
  }
}

TEST_F(SegvolParity, SparsePromptsFollowTheOfficialLayout) {
  torch::NoGradGuard no_grad;
  const PromptEncoder& encoder = (*seg_)->seg_module->prompt_encoder;
  const at::Tensor not_a_point = encoder->not_a_point_embed->weight.to(torch::kFloat);
  SegPrompts prompts;
  prompts.points = torch::tensor({{{3.0f, 100.0f, 40.0f}}});
  prompts.point_labels = torch::tensor({{-1}});
  // Without boxes a padding point (label -1) is appended; -1 rows are not_a_point_embed exactly.
  auto [sparse, dense] = encoder->forward(prompts);
  ASSERT_EQ(sparse.sizes(), (std::vector<int64_t>{1, 2, 768}));
  EXPECT_TRUE(torch::equal(sparse[0][0], not_a_point[0]));
  EXPECT_TRUE(torch::equal(sparse[0][1], not_a_point[0]));
  EXPECT_EQ(dense.sizes(), (std::vector<int64_t>{1, 768, 8, 16, 16}));
  // Points, then the two box corners, then the text token: no padding point with a box.
  prompts.point_labels = torch::tensor({{1}});
  prompts.boxes = torch::tensor({{2.0f, 30.0f, 40.0f, 20.0f, 200.0f, 180.0f}});
  prompts.text = expected("seg_prompt");
  std::tie(sparse, dense) = encoder->forward(prompts);
  ASSERT_EQ(sparse.sizes(), (std::vector<int64_t>{1, 4, 768}));
  EXPECT_TRUE(torch::equal(sparse[0][3], prompts.text[0]));
  // A box corner is a point of its own with the corner embedding instead of the label's.
  SegPrompts corner;
  corner.points = torch::tensor({{{2.0f, 30.0f, 40.0f}}});
  corner.point_labels = torch::tensor({{1}});
  const at::Tensor as_point = encoder->forward(corner).first[0][0] - encoder->point_embeddings->at<EmbeddingImpl>(1).weight[0];
  const at::Tensor as_corner = sparse[0][1] - encoder->point_embeddings->at<EmbeddingImpl>(2).weight[0];
  EXPECT_LE((as_point - as_corner).abs().max().item<double>(), 1e-5);
  // Box and point prompts run through the decoder.
  prompts.text = at::Tensor();
  const at::Tensor logits = (*seg_)->seg_module->forward(expected("images"), prompts);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{1, 1, 32, 256, 256}));
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
}

TEST_F(SegvolParity, WrongShapesAreClearErrors) {
  torch::NoGradGuard no_grad;
  test::expect_one_line_error(
      [&] {
        (*seg_)->forward(torch::zeros({1, 1, 32, 128, 128}), torch::zeros({1, 48}));
      },
      "", "expected an image of shape [B, 1, 32, 256, 256] (the mask decoder takes this size only), got 1x1x32x128x128");
  test::expect_one_line_error(
      [&] {
        (*seg_)->forward(expected("images"), torch::zeros({1, 47}));
      },
      "", "expected the [SEG] hidden state as [1, 48] (batch, LLM hidden_size), got 1x47");
}

TEST(SegvolLoad, MissingTensorIsReportedByName) {
  const std::string source = test::shared_fixture("segvol_small");
  const std::string dir = test::temp_dir();
  fs::copy_file(source + "/config.json", dir + "/config.json");
  const io::Checkpoint full = io::checkpoint_open(source);
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (const auto& [name, record] : full.tensors) {
    if (name != "model.seg_module.prompt_encoder.mask_downscaling.6.bias") kept.emplace_back(name, io::tensor_from_record(record));
  }
  io::safetensors_save(dir + "/model.safetensors", kept);
  try {
    lamed_seg_load(io::checkpoint_open(dir));
    FAIL() << "a missing tensor must fail the load";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("1 problem(s)"), std::string::npos) << message;
    EXPECT_NE(message.find("missing key 'model.seg_module.prompt_encoder.mask_downscaling.6.bias' (Float [768])"), std::string::npos) << message;
  }
}

TEST(SegvolLoad, CheckpointWithoutSegModuleIsAClearError) {
  // A LaMed checkpoint whose config.json has no segmentation_module.
  const std::string dir = test::shared_fixture("vit3d_spp_tiny");
  test::expect_one_line_error([&] { lamed_seg_load(io::checkpoint_open(dir)); }, dir + "/config.json",
                              "'segmentation_module' is not set: this checkpoint has no [SEG] segmentation head");
  // A config that names SegVol over weights without it.
  const std::string bad = test::temp_dir();
  auto config = test::read_json(dir + "/config.json");
  config["segmentation_module"] = "segvol";
  std::ofstream(bad + "/config.json") << config.dump();
  fs::create_symlink(fs::absolute(dir + "/model.safetensors"), bad + "/model.safetensors");
  test::expect_one_line_error([&] { lamed_seg_load(io::checkpoint_open(bad)); }, bad,
                              "no tensors under 'model.seg_module.': this checkpoint has no SegVol [SEG] head");
}

}  // namespace
}  // namespace m3d::models
