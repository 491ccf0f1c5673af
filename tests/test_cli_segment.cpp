// `m3d segment` end to end on the official SegVol fixture (../shared/fixtures/segvol_small):
// the logits file matches the official seg_logits, the mask file is logits > 0, and bad
// inputs fail with a message and leave no output behind.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/tensor.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";

at::Tensor npy_tensor(const std::string& path) { return io::tensor_from_record(io::npy_read(path).array).clone(); }

class CliSegment : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = shared_fixture("segvol_small");
    expected_ = model_ + "/expected.safetensors";
    dir_ = temp_dir();
    const io::Checkpoint expected = io::checkpoint_open(expected_);
    const at::Tensor hidden = io::tensor_from_record(expected.tensor("seg_hidden_state")).contiguous();  // (1, 48) float32
    hidden_ = dir_ + "/hidden.npy";
    io::npy_write(hidden_, DType::F32, hidden.sizes().vec(), hidden.data_ptr<float>());
    reference_ = io::tensor_from_record(expected.tensor("seg_logits")).clone();
  }
  std::string command(const std::string& hidden, const std::string& image) const {
    return kM3d + " segment --model " + model_ + " --image " + image + " --seg-hidden " + hidden + " --logits " + dir_ + "/logits.npy -o " + dir_ + "/mask.npy";
  }
  std::string model_, expected_, dir_, hidden_;
  at::Tensor reference_;
};

TEST_F(CliSegment, LogitsAndMaskMatchOfficial) {
  std::string out, err;
  ASSERT_EQ(run_command(command(hidden_, expected_ + " --image-key images"), &out, &err), 0) << err;
  const at::Tensor logits = npy_tensor(dir_ + "/logits.npy");
  ASSERT_EQ(logits.scalar_type(), torch::kFloat);
  ASSERT_EQ(logits.sizes(), reference_.sizes());
  const double diff = (logits - reference_).abs().max().item<double>();
  std::printf("max abs diff %.3g\n", diff);
  EXPECT_LE(diff, 1e-4);
  const at::Tensor mask = npy_tensor(dir_ + "/mask.npy");
  ASSERT_EQ(mask.scalar_type(), torch::kByte);
  EXPECT_TRUE(torch::equal(mask, (logits > 0).to(torch::kByte)));
  EXPECT_GT(mask.sum().item<int64_t>(), 0);
}

TEST_F(CliSegment, BadInputsAreClearErrors) {
  std::string out, err;
  const std::string image = expected_ + " --image-key images";
  // A hidden state of the wrong width.
  const std::string wrong = dir_ + "/wrong.npy";
  const std::vector<float> zeros(47, 0.0f);
  io::npy_write(wrong, DType::F32, {1, 47}, zeros.data());
  EXPECT_EQ(run_command(command(wrong, image), &out, &err), 1);
  EXPECT_NE(err.find(wrong + ": expected the [SEG] hidden state as a float array of shape (1, 48)"), std::string::npos) << err;
  // An image of the wrong size.
  const std::string small = dir_ + "/small.npy";
  const std::vector<float> voxels(16 * 64 * 64, 0.5f);
  io::npy_write(small, DType::F32, {1, 16, 64, 64}, voxels.data());
  EXPECT_EQ(run_command(command(hidden_, small), &out, &err), 1);
  EXPECT_NE(err.find("expected an image of shape [B, 1, 32, 256, 256]"), std::string::npos) << err;
  // A checkpoint without a seg module.
  const std::string no_seg = shared_fixture("vit3d_spp_tiny");
  EXPECT_EQ(
      run_command(kM3d + " segment --model " + no_seg + " --image " + image + " --seg-hidden " + hidden_ + " --logits " + dir_ + "/logits.npy", &out, &err), 1);
  EXPECT_NE(err.find("'segmentation_module' is not set"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ + "/logits.npy"));
  EXPECT_FALSE(fs::exists(dir_ + "/mask.npy"));
}

}  // namespace
}  // namespace m3d::test
