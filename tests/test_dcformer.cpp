// Parity of the Med3DVLM vision side (DCFormer tower + dual-stream MLP-Mixer
// projector) with the official code: ../shared/fixtures/dcformer_mixer_tiny (see
// its README), in the library and through `m3d encode`. Parameter counts of the
// decomp_* variants against the counts measured on the official dcformer.py
// (med3dvlm_spec.md §1.1, §1.6, §1.9).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/med3dvlm.h"
#include "models/layers.h"
#include "test_support.h"

namespace m3d::models {
namespace {

namespace fs = std::filesystem;

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

class DcformerParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::shared_fixture("dcformer_mixer_tiny"));
    checkpoint_ = new io::Checkpoint(io::checkpoint_open(*dir_));
    expected_ = new io::Checkpoint(io::checkpoint_open(*dir_ + "/expected.safetensors"));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete checkpoint_;
    delete expected_;
  }
  // The fixture stores the images as f16; the reference ran on them converted to f32.
  static at::Tensor expected(const std::string& name) { return io::tensor_from_record(expected_->tensor(name)).to(at::kFloat); }
  static double max_diff(const at::Tensor& a, const at::Tensor& b) {
    EXPECT_EQ(a.sizes(), b.sizes());
    const double diff = (a.to(at::kFloat) - b).abs().max().item<double>();
    std::printf("max abs diff %.3g (reference max |x| %.3g)\n", diff, b.abs().max().item<double>());
    return diff;
  }
  // A copy of the fixture directory whose config.json is edited by `edit`.
  static std::string fixture_with_config(const std::function<void(nlohmann::json&)>& edit) {
    const std::string dir = test::temp_dir();
    nlohmann::json config = test::read_json(*dir_ + "/config.json");
    edit(config);
    std::ofstream(dir + "/config.json") << config.dump(2);
    fs::create_symlink(fs::absolute(*dir_ + "/model.safetensors"), dir + "/model.safetensors");
    return dir;
  }
  static std::string* dir_;
  static io::Checkpoint* checkpoint_;
  static io::Checkpoint* expected_;
};
std::string* DcformerParity::dir_ = nullptr;
io::Checkpoint* DcformerParity::checkpoint_ = nullptr;
io::Checkpoint* DcformerParity::expected_ = nullptr;

TEST(Dcformer, VariantParameterCountsMatchTheOfficialModel) {
  // Parameter counts of dcformer.py's factory functions, measured in PyTorch (med3dvlm_spec.md §1.1).
  const std::vector<std::pair<std::string, int64_t>> counts = {
      {"decomp_nano", 789216},    {"decomp_naive", 5851680}, {"decomp_tiny", 14657472},
      {"decomp_small", 18244800}, {"decomp_base", 33868864}, {"decomp_large", 185125440},
  };
  for (const auto& [name, count] : counts) {
    Dcformer model(dcformer_variant(name));
    EXPECT_EQ(parameter_count(*model), count) << name;
  }
  // decomp_small per stage (§1.6) and its state dict: 426 entries with 51 num_batches_tracked (§1.9).
  Dcformer small(dcformer_variant("decomp_small"));
  const std::vector<int64_t> stage_counts = {114240, 163968, 930816, 7248384, 9787392};
  for (size_t s = 0; s < 5; ++s) EXPECT_EQ(parameter_count(*small->stages[s]), stage_counts[s]) << "s" << s;
  const auto parameters = small->named_parameters(true);
  const auto buffers = small->named_buffers(true);
  EXPECT_EQ(parameters.size() + buffers.size(), 426u);
  size_t tracked = 0;
  for (const auto& b : buffers) tracked += b.key().find("num_batches_tracked") != std::string::npos;
  EXPECT_EQ(tracked, 51u);
  EXPECT_TRUE(parameters.contains("encoder.s0.0.3.c3.1.weight"));
  EXPECT_TRUE(parameters.contains("encoder.s3.5.mlp.mlp.3.bias"));
  EXPECT_EQ(parameters["encoder.s4.0.dwconv.c2.0.weight"].sizes().vec(), (std::vector<int64_t>{768, 1, 1, 7, 1}));
  test::expect_one_line_error([] { dcformer_variant("decomp_huge"); }, "", "unknown variant 'decomp_huge' (supported: decomp_nano");
}

TEST(Dcformer, StageGridsFollowThePoolingChain) {
  const DcformerConfig c = dcformer_variant("decomp_small");  // 128 x 256 x 256 (D, H, W)
  EXPECT_EQ(c.stage_grid(0), (std::array<int64_t, 3>{32, 64, 64}));
  EXPECT_EQ(c.stage_tokens(3), 256);  // 4 x 8 x 8: the mixer's low tokens
  EXPECT_EQ(c.stage_tokens(4), 32);  // 2 x 4 x 4: its high tokens
  DcformerConfig odd = c;
  odd.image_size = {97, 225, 255};  // the smallest D, H and a W below 256 still give the same grid (§1.7)
  EXPECT_EQ(odd.stage_tokens(3), 256);
  odd.image_size = {96, 256, 256};
  EXPECT_EQ(odd.stage_grid(3)[0], 3);
}

TEST_F(DcformerParity, DimsComeFromConfigAndShapes) {
  Med3dvlmVision vision = med3dvlm_vision_load(*checkpoint_);
  const DcformerConfig& c = vision->vision_tower->vision_tower->config();
  EXPECT_EQ(c.num_blocks, (std::array<int64_t, 5>{1, 1, 2, 2, 1}));
  EXPECT_EQ(c.channels, (std::array<int64_t, 5>{8, 12, 16, 24, 32}));
  EXPECT_EQ(c.kernel_sizes, (std::array<int64_t, 4>{13, 11, 9, 7}));
  EXPECT_FALSE(c.num_batches_tracked);  // the fixture has none
  const MixerConfig& p = vision->mm_projector->config();
  EXPECT_EQ(p.hidden_size, 64);
  EXPECT_EQ(p.proj_out_num(), 64);
}

TEST_F(DcformerParity, FeaturesAndProjectorMatchOfficial) {
  torch::NoGradGuard no_grad;
  VisionSide vision = vision_load(*checkpoint_);
  const at::Tensor images = expected("images");
  const auto features = vision->features(images);
  ASSERT_EQ(features.size(), 2u);
  EXPECT_LE(max_diff(features[0], expected("low_features")), 1e-4);
  EXPECT_LE(max_diff(features[1], expected("high_features")), 1e-4);
  EXPECT_LE(max_diff(vision->project(features), expected("projector_output")), 1e-4);
  // The projector alone, on the official features.
  EXPECT_LE(max_diff(vision->project({expected("low_features"), expected("high_features")}), expected("projector_output")), 1e-4);
}

TEST_F(DcformerParity, Bf16StaysClose) {
  // Bound: bf16 keeps 8 significant bits, so each rounding errs by at most u = 2^-9
  // relative. The longest path of the tiny model rounds k ~ 80 times in sequence
  // (input; 4 stem layers x conv, BatchNorm, 2 adds; 5 ConvBlocks x pool, proj, conv,
  // BatchNorm, 2 adds, 2 Linears, GELU, scale, residual; 2 mixer layers x 2 norms,
  // 4 Linears, 2 GELUs). Independent roundings give ~sqrt(k) u ~ 2% of the output's
  // scale, a worst case where all line up k u ~ 16%; we require 5% of the
  // reference's max |x|. Measured: 2.7% (bf16 activations), 1.1% (f32 activations).
  torch::NoGradGuard no_grad;
  const at::Tensor images = expected("images");
  const at::Tensor reference = expected("projector_output");
  const double bound = 0.05 * reference.abs().max().item<double>();
  Med3dvlmVision vision = med3dvlm_vision_load(*checkpoint_);
  io::module_cast_floating(*vision, at::kBFloat16);
  // bf16 activations (a GPU, or a CPU with bf16 arithmetic): max_pool3d runs in f32 on the CPU.
  if (cpu_has_bf16_arithmetic()) {
    const at::Tensor half = vision->forward(images.to(at::kBFloat16));
    EXPECT_EQ(half.scalar_type(), at::kBFloat16);
    EXPECT_LE(max_diff(half, reference), bound);
  }
  // f32 activations over bf16 weights (CPUs without bf16 arithmetic).
  const at::Tensor mixed = vision->forward(images);
  EXPECT_EQ(mixed.scalar_type(), at::kFloat);
  EXPECT_LE(max_diff(mixed, reference), bound);
}

TEST_F(DcformerParity, WrongGridIsAClearError) {
  Med3dvlmVision vision = med3dvlm_vision_load(*checkpoint_);
  test::expect_one_line_error(
      [&] {
        vision->forward(torch::zeros({1, 1, 32, 256, 256}));
      },
      "",
      "image is 1x1x32x256x256 but this model's grid is 128x256x256 (D x H x W; expected an image of shape "
      "[B, 1, 128, 256, 256]): prepare the scan with --recipe (the checkpoint's m3d_recipe.json or the built-in "
      "med3dvlm) or give a .npy already on the model grid");
}

TEST_F(DcformerParity, ArchitecturesAsAPlainStringLoads) {
  // Med3DVLM's merge script writes "architectures": "VLMQwenForCausalLM".
  const std::string dir = fixture_with_config([](nlohmann::json& c) { c["architectures"] = "VLMQwenForCausalLM"; });
  EXPECT_EQ(io::hf_config_read(dir + "/config.json").architecture(), "VLMQwenForCausalLM");
  torch::NoGradGuard no_grad;
  VisionSide vision = vision_load(io::checkpoint_open(dir));
  EXPECT_LE(max_diff(vision->forward(expected("images")), expected("projector_output")), 1e-4);
}

TEST_F(DcformerParity, StateDictWithNumBatchesTrackedLoads) {
  // PyTorch state dicts (the released checkpoints) carry BatchNorm's int64
  // num_batches_tracked; the fixture does not. Add them and load strictly.
  const std::string dir = test::temp_dir();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const std::string suffix = ".running_mean";
  for (const auto& [name, record] : checkpoint_->tensors) {
    tensors.emplace_back(name, io::tensor_from_record(record));
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      tensors.emplace_back(name.substr(0, name.size() - suffix.size()) + ".num_batches_tracked", torch::tensor(int64_t{7}));
    }
  }
  io::safetensors_save(dir + "/model.safetensors", tensors);
  fs::copy_file(*dir_ + "/config.json", dir + "/config.json");
  Med3dvlmVision vision = med3dvlm_vision_load(io::checkpoint_open(dir));
  EXPECT_TRUE(vision->vision_tower->vision_tower->config().num_batches_tracked);
  torch::NoGradGuard no_grad;
  EXPECT_LE(max_diff(vision->forward(expected("images")), expected("projector_output")), 1e-4);
}

TEST_F(DcformerParity, ConfigsThatDoNotFitAreClearErrors) {
  const auto refused = [](const std::function<void(nlohmann::json&)>& edit, const std::string& fragment) {
    const std::string dir = fixture_with_config(edit);
    test::expect_one_line_error([&] { vision_load(io::checkpoint_open(dir)); }, dir + "/config.json", fragment);
  };
  refused([](auto& c) { c["mm_projector_type"] = "spp"; }, "mm_projector_type 'spp' does not fit the DCFormer tower");
  refused([](auto& c) { c["vision_tower"] = "vit3d"; }, "vision_tower 'vit3d' is not supported for Med3DVLM");
  refused([](auto& c) { c["vision_select_layer"] = -1; }, "vision_select_layer -1 does not fit the mixer projector");
  refused([](auto& c) { c["vision_select_feature"] = "patch"; }, "vision_select_feature 'patch' is not supported");
  refused([](auto& c) { c["proj_out_num"] = 256; }, "proj_out_num 256 does not match the mixer projector, which makes 32 + 32 tokens");
  refused([](auto& c) { c["high_output_size"] = {16}; }, "must have the same length");
  // The released decomp_small widths against the tiny tower's weights.
  refused(
      [](auto& c) {
        c["low_input_size"] = {256, 384};
      },
      "low_input_size [256, 384] does not fit the DCFormer, whose stage s3 gives 256 tokens x 24 channels at 128x256x256");
}

TEST_F(DcformerParity, EncodeCommandMatchesOfficial) {
  const std::string dir = test::temp_dir();
  const at::Tensor images = expected("images").contiguous();  // (1, 1, 128, 256, 256) f32
  io::npy_write(dir + "/image.npy", DType::F32, {1, 128, 256, 256}, images.data_ptr());  // M3D-Data's 1 x D x H x W
  const auto encode = [&](const std::string& image, const std::string& output, std::string* err) {
    std::string out;
    const std::string m3d = std::string(M3D_BINARY_DIR) + "/m3d";
    return test::run_command(m3d + " encode --model " + *dir_ + " --image " + image + " -o " + output, &out, err);
  };
  std::string err;
  ASSERT_EQ(encode(dir + "/image.npy", dir + "/out.safetensors", &err), 0) << err;
  const io::Checkpoint got = io::checkpoint_open(dir + "/out.safetensors");
  EXPECT_LE(max_diff(io::tensor_from_record(got.tensor("image_embeddings")), expected("projector_output")), 1e-4);
  EXPECT_LE(max_diff(io::tensor_from_record(got.tensor("low_features")), expected("low_features")), 1e-4);
  EXPECT_LE(max_diff(io::tensor_from_record(got.tensor("high_features")), expected("high_features")), 1e-4);
  // Another grid fails with the expected shape in the message, and no output.
  io::npy_write(dir + "/small.npy", DType::F32, {1, 32, 256, 256}, images.data_ptr());
  EXPECT_NE(encode(dir + "/small.npy", dir + "/small.safetensors", &err), 0);
  EXPECT_NE(err.find("expected an image of shape [B, 1, 128, 256, 256]"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir + "/small.safetensors"));
}

TEST_F(DcformerParity, EncodePreparesAScanWithTheMed3dvlmRecipe) {
  // A slice folder (M3D-Cap's raw format): "auto" must pick the 128-slice med3dvlm recipe for a
  // DCFormer checkpoint, which gives what naming it does; LaMed's 32-slice recipe does not fit.
  const std::string dir = test::temp_dir();
  const std::string scan = test::fixture("volumes/m3d_cap_slices");
  const auto encode = [&](const std::string& recipe, const std::string& output, std::string* err) {
    std::string out;
    const std::string m3d = std::string(M3D_BINARY_DIR) + "/m3d";
    return test::run_command(m3d + " encode --model " + *dir_ + " --image " + scan + " --recipe " + recipe + " -o " + output, &out, err);
  };
  std::string err;
  ASSERT_EQ(encode("auto", dir + "/auto.safetensors", &err), 0) << err;
  ASSERT_EQ(encode("med3dvlm", dir + "/named.safetensors", &err), 0) << err;
  const auto embeddings = [](const std::string& file) { return io::tensor_from_record(io::checkpoint_open(file).tensor("image_embeddings")).clone(); };
  const at::Tensor automatic = embeddings(dir + "/auto.safetensors");
  EXPECT_EQ(automatic.sizes().vec(), (std::vector<int64_t>{1, 64, 64}));
  EXPECT_TRUE(torch::equal(automatic, embeddings(dir + "/named.safetensors")));
  EXPECT_NE(encode("m3d-lamed", dir + "/lamed.safetensors", &err), 0);
  EXPECT_NE(err.find("image is 1x1x32x256x256 but this model's grid is 128x256x256"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d::models
