// Parity of the LaMed vision side (ViT3D tower + spatial pooling projector) with
// the official M3D code: ../shared/fixtures/vit3d_spp_tiny (see its README); the
// decoder-side model (LamedPhi3Model) runs that same vision side.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <functional>
#include <vector>

#include "io/checkpoint.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/lamed.h"
#include "test_support.h"

namespace m3d::models {
namespace {

class LamedVisionParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = test::shared_fixture("vit3d_spp_tiny");
    checkpoint_ = new io::Checkpoint(io::checkpoint_open(dir));
    expected_ = new io::Checkpoint(io::checkpoint_open(dir + "/expected.safetensors"));
  }
  static void TearDownTestSuite() {
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
};
io::Checkpoint* LamedVisionParity::checkpoint_ = nullptr;
io::Checkpoint* LamedVisionParity::expected_ = nullptr;

TEST_F(LamedVisionParity, ConfigAndDimsComeFromConfigAndShapes) {
  LamedVision vision = lamed_vision_load(*checkpoint_);
  const Vit3dConfig& vit = vision->vision_tower->vision_tower->config();
  EXPECT_EQ(vit.hidden_size, 64);
  EXPECT_EQ(vit.mlp_dim, 128);
  EXPECT_EQ(vit.num_layers, 2);
  EXPECT_EQ(vit.num_heads, 4);
  EXPECT_TRUE(vit.classification);
}

TEST_F(LamedVisionParity, VitBlocksFeaturesAndProjectorMatchOfficial) {
  torch::NoGradGuard no_grad;
  LamedVision vision = lamed_vision_load(*checkpoint_);
  const at::Tensor images = expected("images");
  const Vit3dOutput out = vision->vision_tower->vision_tower->forward(images);
  EXPECT_LE(max_diff(out.hidden_states[0], expected("hidden_state_layer0")), 1e-4);
  EXPECT_LE(max_diff(out.last, expected("vision_features_cls")), 1e-4);
  const at::Tensor features = vision->vision_tower->forward(images);
  EXPECT_LE(max_diff(features, expected("vision_features")), 1e-4);
  EXPECT_LE(max_diff(vision->mm_projector->forward(features), expected("projector_output")), 1e-4);
  EXPECT_LE(max_diff(vision->forward(images), expected("projector_output")), 1e-4);
}

TEST_F(LamedVisionParity, WrongImageShapeIsAClearError) {
  LamedVision vision = lamed_vision_load(*checkpoint_);
  const std::string what_to_do =
      ": prepare the scan with --recipe (the checkpoint's m3d_recipe.json or the built-in m3d-lamed) or give a .npy already on the model grid";
  test::expect_one_line_error(
      [&] {
        vision->forward(torch::zeros({1, 1, 32, 128, 128}));
      },
      "",
      "image is 1x1x32x128x128 but this model's grid is 32x256x256 (D x H x W; expected an image of shape "
      "[B, 1, 32, 256, 256])" +
          what_to_do);
  test::expect_one_line_error(
      [&] {
        vision->forward(torch::zeros({1, 2, 32, 256, 256}));
      },
      "",
      "image is 1x2x32x256x256 with 2 channels but this model takes 1 (expected an image of shape "
      "[B, 1, 32, 256, 256])" +
          what_to_do);
  test::expect_one_line_error(
      [&] {
        vision->forward(torch::zeros({32, 256, 256}));
      },
      "",
      "image has shape [32, 256, 256] but this model takes B x C x D x H x W (expected an image of shape "
      "[B, 1, 32, 256, 256])" +
          what_to_do);
}

// LamedPhi3Model runs the same LamedVision as `m3d encode` (its checkpoint keys unchanged):
// the same embeddings on the grid, the same error off it, where it once resampled silently.
TEST(LamedModel, EncodeImagesIsTheVisionSide) {
  torch::NoGradGuard no_grad;
  const std::string dir = test::fixture("lamed_phi3_tiny");
  const LoadedModel loaded = model_load(dir);
  LamedModelImpl* lamed = loaded.lm->lamed();
  ASSERT_NE(lamed, nullptr);
  EXPECT_EQ(lamed->vision_tower.get(), lamed->vision->vision_tower.get());
  EXPECT_EQ(lamed->mm_projector.get(), lamed->vision->mm_projector.get());
  EXPECT_EQ(lamed->image_grid(), (std::array<int64_t, 3>{32, 256, 256}));
  LamedVision vision = lamed_vision_load(io::checkpoint_open(dir));
  torch::manual_seed(0);
  const at::Tensor image = torch::rand({1, 1, 32, 256, 256});
  EXPECT_TRUE(torch::equal(lamed->encode_images(image), vision->forward(image)));
  const auto message = [](const std::function<void()>& action) {
    try {
      action();
    } catch (const Error& e) { return std::string(e.what()); }
    return std::string("(no error)");
  };
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 1, 16, 16, 16}, {1, 1, 32, 256, 128}, {1, 3, 32, 256, 256}, {1, 32, 256, 256}}) {
    const at::Tensor off_grid = torch::zeros(shape);
    const std::string from_model = message([&] { lamed->encode_images(off_grid); });
    EXPECT_NE(from_model.find("expected an image of shape [B, 1, 32, 256, 256]"), std::string::npos) << from_model;
    EXPECT_EQ(from_model, message([&] { vision->forward(off_grid); }));
    EXPECT_EQ(from_model, message([&] { lamed->check_image(off_grid); }));
  }
}

}  // namespace
}  // namespace m3d::models
