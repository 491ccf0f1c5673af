// `m3d segment` end to end on the official SegVol fixture (../shared/fixtures/segvol_small):
// the logits file matches the official seg_logits, the mask file is logits > 0, and bad
// inputs fail with a message and leave no output behind. Box and point prompts
// (--box / --point) against the official prompt-encoder cases of tests/fixtures/lamed_seg_tiny
// and the library call; --dicom-seg of the synthetic CT series of tests/fixtures/dicom_seg
// decodes to the NIfTI mask voxel for voxel.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "imaging/dicom_seg.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/tensor.h"
#include "models/segvol.h"
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

// The official prompt-encoder cases (make_lamed_seg_fixtures.py: points, box + the [SEG]
// prompt, points + box) through the command line, on the same image and seg module.
class CliSegmentPrompts : public CliSegment {
 protected:
  void SetUp() override {
    CliSegment::SetUp();
    official_ = fixture("lamed_seg_tiny") + "/expected.safetensors";
    const io::Checkpoint official = io::checkpoint_open(official_);
    auto get = [&](const char* name) { return io::tensor_from_record(official.tensor(name)).clone(); };
    const at::Tensor points = get("points"), labels = get("point_labels"), box = get("box");
    for (int64_t i = 0; i < points.size(1); ++i) {
      points_ += fmt::format(" --point {},{},{},{}", points[0][i][0].item<float>(), points[0][i][1].item<float>(), points[0][i][2].item<float>(),
                             labels[0][i].item<int64_t>());
    }
    box_ = " --box " + fmt::format("{}", box[0][0].item<float>());
    for (int64_t i = 1; i < 6; ++i) box_ += fmt::format(",{}", box[0][i].item<float>());
    const at::Tensor hidden = get("seg_hidden_state").contiguous();  // (1, 48): the official LLM's [SEG] state
    seg_hidden_ = dir_ + "/lamed_hidden.npy";
    io::npy_write(seg_hidden_, DType::F32, hidden.sizes().vec(), hidden.data_ptr<float>());
    image_ = shared_fixture("vit3d_spp_tiny") + "/expected.safetensors --image-key images";
  }
  at::Tensor official(const std::string& name) const { return io::tensor_from_record(io::checkpoint_open(official_).tensor(name)).clone(); }
  at::Tensor run(const std::string& prompts) {
    std::string out, err;
    EXPECT_EQ(run_command(kM3d + " segment --model " + model_ + " --image " + image_ + prompts + " --logits " + dir_ + "/l.npy", &out, &err), 0) << err;
    return npy_tensor(dir_ + "/l.npy");
  }
  // The script's record of full logits: a strided subsample, the means over each pair of axes, the positive count.
  void expect_official(const at::Tensor& logits, const std::string& name) const {
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, 1, 32, 256, 256}));
    const at::Tensor x = logits[0][0];
    const at::Tensor sub = x.slice(0, 1, 32, 3).slice(1, 2, 256, 7).slice(2, 3, 256, 5);
    const double diff = (sub - official(name + "_logits_sub")).abs().max().item<double>();
    std::printf("%s: max abs diff %.3g\n", name.c_str(), diff);
    EXPECT_LE(diff, 1e-4) << name;
    EXPECT_LE((x.mean(std::vector<int64_t>{1, 2}) - official(name + "_mean_d")).abs().max().item<double>(), 1e-5) << name;
    EXPECT_LE((x.mean(std::vector<int64_t>{0, 1}) - official(name + "_mean_w")).abs().max().item<double>(), 1e-5) << name;
    const int64_t positive = (x > 0).sum().item<int64_t>(), want = official(name + "_positive").item<int64_t>();
    EXPECT_LE(std::abs(positive - want), (x.abs() < 1e-4).sum().item<int64_t>()) << name;
  }
  std::string official_, points_, box_, seg_hidden_, image_;
};

TEST_F(CliSegmentPrompts, BoxAndPointsMatchOfficial) {
  expect_official(run(points_), "points");
  expect_official(run(" --seg-hidden " + seg_hidden_ + box_), "box_text");
  expect_official(run(points_ + box_), "points_box");
}

TEST_F(CliSegmentPrompts, AllPromptsTogetherMatchTheLibrary) {
  // The [SEG] state, both points and the box in one sparse sequence (SegVol's forward_decoder).
  const at::Tensor logits = run(" --seg-hidden " + seg_hidden_ + points_ + box_);
  models::LamedSeg seg = models::lamed_seg_load(io::checkpoint_open(model_));
  models::SegPrompts prompts;
  prompts.points = official("points");
  prompts.point_labels = official("point_labels");
  prompts.boxes = official("box");
  torch::NoGradGuard no_grad;
  const at::Tensor image = io::tensor_from_record(io::checkpoint_open(shared_fixture("vit3d_spp_tiny") + "/expected.safetensors").tensor("images"));
  const at::Tensor want = seg->forward(image.to(torch::kFloat), official("seg_hidden_state"), prompts);
  const double diff = (logits - want).abs().max().item<double>();
  std::printf("max abs diff from the library %.3g\n", diff);
  EXPECT_LE(diff, 1e-5);
  // Not the same as fewer prompts.
  EXPECT_GT((logits - run(" --seg-hidden " + seg_hidden_ + box_)).abs().max().item<double>(), 1e-3);
}

TEST_F(CliSegmentPrompts, BadPromptsAreClearErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {" --box 4,40,60,2,200,220", "--box 4,40,60,2,200,220: inverted on d (4 > 2)"},
      {" --box 4,40,60,24,200,256", "w = 256 is outside the model grid 32x256x256"},
      {" --box -1,40,60,24,200,220", "d = -1 is outside the model grid"},
      {" --box 1,2,3", "--box '1,2,3': expected 6 numbers d1,h1,w1,d2,h2,w2"},
      {" --box 1,2,3,4,5,6 --box 1,2,3,4,5,6", "give one --box"},
      {" --point 10,100,1x", "--point '10,100,1x': '1x' is not a number"},
      {" --point 10,,100", "--point '10,,100': '' is not a number"},
      {" --point 10,100,nan", "'nan' is not a number"},
      {" --point 10,100,120,2", "--point '10,100,120,2': label 2 is not 1 (positive) or 0 (negative)"},
      {" --point 10,100,120,-1", "label -1 is not 1"},
      {" --point 32,100,120", "d = 32 is outside the model grid 32x256x256 (D x H x W voxels, d in [0, 31])"},
      {" --point 1,2", "expected d,h,w or d,h,w,label"},
  };
  for (const auto& [prompts, message] : cases) {
    std::string out, err;
    EXPECT_EQ(
        run_command(kM3d + " segment --model " + model_ + " --image " + image_ + prompts + " --logits " + dir_ + "/l.npy -o " + dir_ + "/m.npy", &out, &err), 1)
        << prompts;
    EXPECT_EQ(err.rfind("m3d: error: ", 0), 0u) << err;
    EXPECT_NE(err.find(message), std::string::npos) << prompts << ": " << err;
    EXPECT_FALSE(fs::exists(dir_ + "/l.npy")) << prompts;
    EXPECT_FALSE(fs::exists(dir_ + "/m.npy")) << prompts;
  }
}

TEST_F(CliSegment, DicomSegOfASeriesIsTheNiftiMask) {
  // The synthetic CT series (tools/reference/make_dicom_seg_fixtures.py) prepared by the
  // m3d-lamed recipe; the SEG, decoded onto the series, equals the NIfTI mask voxel for voxel.
  const std::string series = fixture("dicom_seg/series");
  std::string out, err;
  const std::string base = kM3d + " segment --model " + model_ + " --image " + series + " --seg-hidden " + hidden_;
  for (const std::string& box : {std::string(), std::string(" --box 8,60,60,24,200,200")}) {
    ASSERT_EQ(run_command(base + box + " -o " + dir_ + "/mask.nii.gz --dicom-seg " + dir_ + "/seg.dcm", &out, &err), 0) << err;
    const RawVolume scan = volume_read(series);
    const RawVolume nifti = volume_read(dir_ + "/mask.nii.gz");
    const RawVolume decoded = imaging::dicom_seg_read(dir_ + "/seg.dcm", series, scan);
    ASSERT_EQ(nifti.size, scan.size);
    EXPECT_EQ(decoded.data, nifti.data) << box;
    EXPECT_GT(std::count(nifti.data.begin(), nifti.data.end(), 1), 0) << box;
  }
  // A model-space input has no series to reference: refused before anything is written.
  EXPECT_EQ(run_command(kM3d + " segment --model " + model_ + " --image " + expected_ + " --image-key images --seg-hidden " + hidden_ + " -o " + dir_ +
                            "/m2.nii.gz --dicom-seg " + dir_ + "/seg2.dcm",
                        &out, &err),
            1);
  EXPECT_NE(err.find("--dicom-seg needs a DICOM series input"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ + "/m2.nii.gz"));
  EXPECT_FALSE(fs::exists(dir_ + "/seg2.dcm"));
}

}  // namespace
}  // namespace m3d::test
