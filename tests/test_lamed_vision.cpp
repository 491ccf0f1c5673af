// Parity of the LaMed vision side (ViT3D tower + spatial pooling projector) with
// the official M3D code: ../shared/fixtures/vit3d_spp_tiny (see its README).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/checkpoint.h"
#include "io/tensor.h"
#include "m3d/error.h"
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
  try {
    vision->forward(torch::zeros({1, 1, 32, 128, 128}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected an image of shape [B, 1, 32, 256, 256], got 1x1x32x128x128"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace m3d::models
