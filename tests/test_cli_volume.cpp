// `m3d volume info | prep | back` and scans as `m3d generate` input, end to end.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "imaging/model_input.h"
#include "imaging/volume_io.h"
#include "io/npy.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";
const std::string kNibabel = "/usr/lib/python3/dist-packages/nibabel/tests/data";
const std::string kPydicom = "/usr/lib/python3/dist-packages/pydicom/data/test_files";

TEST(CliVolume, InfoReportsGeometryAndSeries) {
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " volume info --json " + kNibabel + "/anatomical.nii", &out, &err), 0) << err;
  const auto info = nlohmann::json::parse(out);
  EXPECT_EQ(info["format"], "nifti");
  EXPECT_EQ(info["size_ijk"], nlohmann::json({33, 41, 25}));
  EXPECT_EQ(info["model_order_dhw"], nlohmann::json({25, 41, 33}));
  EXPECT_EQ(info["axcodes"], "LAS");
  ASSERT_EQ(run_command(kM3d + " volume info " + kPydicom + "/dicomdirtests/77654033/CT2", &out, &err), 0) << err;
  EXPECT_NE(out.find("modality    CT"), std::string::npos) << out;
  EXPECT_NE(out.find("slice spacing is not uniform"), std::string::npos) << out;
  EXPECT_NE(out.find("Routine Brain  4 files"), std::string::npos) << out;
  EXPECT_EQ(run_command(kM3d + " volume info /nonexistent/scan.nii.gz", &out, &err), 1);
  EXPECT_NE(err.find("/nonexistent/scan.nii.gz: no such file or directory"), std::string::npos) << err;
}

// prep writes what MONAI gives for the same recipe (the m3d-lamed entry of the
// preprocessing fixture), a preview PNG and the map; back puts a mask onto the scan's grid.
TEST(CliVolume, PrepMatchesMonaiAndBackLandsOnTheScanGrid) {
  const std::string dir = temp_dir();
  const std::string scan = kNibabel + "/anatomical.nii";
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " volume prep " + scan + " --recipe m3d-lamed -o " + dir + "/x.npy --preview " + dir + "/p.png --map " + dir +
                            "/map.json",
                        &out, &err),
            0)
      << err;
  const at::Tensor x = imaging::model_input_load(dir + "/x.npy");
  ASSERT_EQ(x.sizes().vec(), (std::vector<int64_t>{1, 1, 32, 256, 256}));
  nlohmann::json want;
  const auto reference = read_json(fixture("volumes/preprocess.json"));
  for (const auto& c : reference["cases"]) {
    if (c["file"] != "nibabel/anatomical.nii") continue;
    for (const auto& op : c["ops"]) {
      if (op["op"].contains("recipe")) want = op;
    }
  }
  ASSERT_FALSE(want.is_null());
  EXPECT_NEAR(x.sum().item<double>(), want["sum"].get<double>(), 1e-5 * x.numel());
  EXPECT_NEAR(x.max().item<double>(), want["max"].get<double>(), 1e-4);
  const auto png = read_bytes(dir + "/p.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(std::string(png.begin() + 1, png.begin() + 4), "PNG");

  // A model-space mask (upper half of the intensities) back onto the original 33 x 41 x 25 grid.
  const at::Tensor mask = (x.squeeze() > 0.5).to(at::kFloat).contiguous();
  io::npy_write(dir + "/mask.npy", DType::F32, {32, 256, 256}, mask.data_ptr<float>());
  ASSERT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --mask " + dir + "/mask.npy -o " + dir + "/mask.nii.gz", &out, &err), 0)
      << err;
  const imaging::RawVolume back = imaging::volume_read(dir + "/mask.nii.gz");
  const imaging::RawVolume original = imaging::volume_read(scan);
  EXPECT_EQ(back.size, original.size);
  EXPECT_EQ(back.dtype, DType::U8);
  const auto a = back.geometry.affine_ras(), b = original.geometry.affine_ras();
  for (int n = 0; n < 16; ++n) EXPECT_NEAR(a[n], b[n], 1e-4) << n;
  int64_t ones = 0;
  for (uint8_t v : back.data) ones += v == 1;
  // About as many voxels as the scan has above half its range (the resize blurs the edges).
  imaging::RawVolume raw = original;
  int64_t bright = 0;
  const auto* values = reinterpret_cast<const int16_t*>(raw.data.data());
  int16_t lo = values[0], hi = values[0];
  for (int64_t n = 0; n < raw.voxels(); ++n) lo = std::min(lo, values[n]), hi = std::max(hi, values[n]);
  for (int64_t n = 0; n < raw.voxels(); ++n) bright += (values[n] - lo) > 0.5 * (hi - lo);
  EXPECT_GT(ones, bright / 3);
  EXPECT_LT(ones, bright * 3);

  ASSERT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --box '[0.1, 0.2, 0.3, 0.5, 0.6, 0.7]'", &out, &err), 0) << err;
  const auto box = nlohmann::json::parse(out);
  for (int axis = 0; axis < 3; ++axis) {
    EXPECT_LE(box["index_min_ijk"][axis].get<double>(), box["index_max_ijk"][axis].get<double>());
    EXPECT_GE(box["index_min_ijk"][axis].get<double>(), -0.5);
    EXPECT_LE(box["index_max_ijk"][axis].get<double>(), original.size[axis] - 0.5);
  }
  EXPECT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json", &out, &err), 1);
  EXPECT_NE(err.find("give --mask (with -o) or --box"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " volume prep " + scan + " --recipe sharpest -o " + dir + "/y.npy", &out, &err), 1);
  EXPECT_NE(err.find("unknown recipe 'sharpest'"), std::string::npos) << err;
}

// A NIfTI scan given to m3d generate goes through the recipe: the same answer as the
// model-space .npy that m3d volume prep writes for it.
TEST(CliVolume, GenerateOnAScanEqualsGenerateOnItsPreparedVolume) {
  const std::string dir = temp_dir();
  const std::string scan = kNibabel + "/anatomical.nii";
  std::string out, err, direct, prepared;
  ASSERT_EQ(run_command(kM3d + " volume prep " + scan + " -o " + dir + "/x.npy", &out, &err), 0) << err;
  const std::string common = kM3d + " generate --model " + fixture("lamed_llama_tiny") + " --max-new-tokens 8 --prompt 'Describe the scan.'";
  ASSERT_EQ(run_command(common + " --image " + scan, &direct, &err), 0) << err;
  ASSERT_EQ(run_command(common + " --image " + dir + "/x.npy", &prepared, &err), 0) << err;
  EXPECT_EQ(direct, prepared);
  EXPECT_FALSE(direct.empty());
}

}  // namespace
}  // namespace m3d::test

namespace m3d::test {
namespace {

TEST(CliScore, WritesScoredCsvSummaryAndTable) {
  const std::string dir = temp_dir();
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " score --task report --pred " + fixture("metrics/report_predictions.csv") + " -o " + dir, &out, &err), 0) << err;
  EXPECT_NE(out.find("| m3d_bleu |"), std::string::npos) << out;
  EXPECT_NE(out.find("| meteor, bert_f1 | not implemented yet |"), std::string::npos) << out;
  const auto summary = read_json(dir + "/summary.json");
  EXPECT_EQ(summary["task"], "report");
  EXPECT_EQ(summary["samples"], 92);
  EXPECT_TRUE(fs::exists(dir + "/scored.csv"));
  EXPECT_EQ(run_command(kM3d + " score --task report --pred " + fixture("metrics/vqa_closed_predictions.csv") + " -o " + dir, &out, &err), 0);
  EXPECT_EQ(run_command(kM3d + " score --task rec --pred /nonexistent.csv", &out, &err), 1);
  EXPECT_NE(err.find("/nonexistent.csv: cannot open"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d::test
