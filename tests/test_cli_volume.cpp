// `m3d volume info | prep | back` and scans as `m3d generate` input, end to end.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "imaging/model_input.h"
#include "imaging/volume_io.h"
#include "io/csv.h"
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
  ASSERT_EQ(run_command(kM3d + " volume prep " + scan + " --recipe m3d-lamed -o " + dir + "/x.npy --preview " + dir + "/p.png --map " + dir + "/map.json", &out,
                        &err),
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
  ASSERT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --mask " + dir + "/mask.npy -o " + dir + "/mask.nii.gz", &out, &err), 0) << err;
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
  EXPECT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --box '[0.1, 0.2]'", &out, &err), 1);
  EXPECT_NE(err.find("--box: expected six numbers"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --box '[0.5, 0.2, 0.3, 0.1, 0.6, 0.7]'", &out, &err), 1);
  EXPECT_NE(err.find("the first corner may not exceed the second (0.5 > 0.1 on axis 0)"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " volume back --map " + dir + "/map.json --box '[0.1, 0.2, 0.3, 0.5, 0.6, 1.7]'", &out, &err), 1);
  EXPECT_NE(err.find("must lie in [0, 1]"), std::string::npos) << err;
  std::ofstream(dir + "/bad_map.json") << R"({"original": {"size_ijk": [1, 2, 3]}})";
  EXPECT_EQ(run_command(kM3d + " volume back --map " + dir + "/bad_map.json --box '[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]'", &out, &err), 1);
  EXPECT_NE(err.find("bad_map.json: not an m3d preprocessing map"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " volume prep " + scan + " --recipe sharpest -o " + dir + "/y.npy", &out, &err), 1);
  EXPECT_NE(err.find("unknown recipe 'sharpest'"), std::string::npos) << err;
}

// A full disk (a 64 KiB tmpfs mounted by the test, as root in CI): every output of
// `volume prep` / `volume back` fails with one line naming its file, and nothing —
// no partial file, no temporary — is left in the folder.
TEST(CliVolume, FullDiskIsAnErrorAndLeavesNothing) {
  const std::string root = temp_dir(), dir = root + "/full";
  fs::create_directories(dir);
  std::string out, err;
  if (run_command("mount -t tmpfs -o size=64k tmpfs " + dir, &out, &err) != 0) GTEST_SKIP() << "cannot mount a tmpfs here: " << err;
  struct Unmount {
    std::string dir;
    ~Unmount() {
      std::string o, e;
      run_command("umount " + dir, &o, &e);
    }
  } unmount{dir};
  const std::string scan = kNibabel + "/anatomical.nii";
  const std::string small = root + "/small";  // a map to map back with, written outside the full disk
  ASSERT_EQ(run_command(kM3d + " volume prep " + scan + " -o " + small + ".npy --map " + small + ".json", &out, &err), 0) << err;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {kM3d + " volume prep " + scan + " -o " + dir + "/x.nii.gz", dir + "/x.nii.gz"},
      {kM3d + " volume prep " + scan + " -o " + dir + "/x.npy", dir + "/x.npy"},
      {kM3d + " volume back --map " + small + ".json --mask " + small + ".npy --linear -o " + dir + "/back.nii", dir + "/back.nii"},
  };
  for (const auto& [command, file] : cases) {
    EXPECT_EQ(run_command(command, &out, &err), 1) << command;
    EXPECT_NE(err.find(file), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_TRUE(fs::is_empty(dir)) << command << " left files behind";
  }
  // A synthetic set does not fit either: an error naming a file of the set, and no
  // temporary or half-written file anywhere in what was written before it.
  EXPECT_EQ(run_command(kM3d + " synth --n 2 -o " + dir + "/set", &out, &err), 1);
  const size_t error_at = err.find("m3d: error: ");  // after the progress line, if a study was done
  ASSERT_NE(error_at, std::string::npos) << err;
  EXPECT_NE(err.find(dir + "/set/", error_at), std::string::npos) << err;
  EXPECT_EQ(err.find('\n', error_at), err.size() - 1) << err;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
    if (entry.path().extension() == ".npy") EXPECT_NO_THROW(io::npy_read(entry.path().string())) << entry.path();
  }
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
  EXPECT_NE(out.find("| m3d_meteor |"), std::string::npos) << out;  // the data found next to the program (build folder in the repository)
  EXPECT_NE(out.find("| m3d_bert_f1 | not computed: needs a BERTScore model"), std::string::npos) << out;
  const auto summary = read_json(dir + "/summary.json");
  EXPECT_EQ(summary["task"], "report");
  EXPECT_EQ(summary["samples"], 92);
  EXPECT_TRUE(fs::exists(dir + "/scored.csv"));
  EXPECT_EQ(run_command(kM3d + " score --task report --pred " + fixture("metrics/vqa_closed_predictions.csv") + " -o " + dir, &out, &err), 0);
  EXPECT_EQ(run_command(kM3d + " score --task rec --pred /nonexistent.csv", &out, &err), 1);
  EXPECT_NE(err.find("/nonexistent.csv: cannot open"), std::string::npos) << err;
  EXPECT_EQ(
      run_command("M3D_PUNKT_DIR=/nonexistent " + kM3d + " score --task report --pred " + fixture("metrics/report_predictions.csv") + " -o " + dir, &out, &err),
      1);
  EXPECT_NE(err.find("/nonexistent/abbrev_types.txt is missing"), std::string::npos) << err;
  EXPECT_NE(err.find("scripts/fetch_vocab.sh"), std::string::npos) << err;
}

// The fixture's meteor and bert_f1 columns: nltk 3.8.1's METEOR and bert_score 0.3.13's F1 with
// all-MiniLM-L6-v2 at 4 layers, one sample per call (tools/reference/make_metric_fixtures.py).
TEST(CliScore, MeteorAndBertScoreColumnsMatchNltkAndBertScore) {
  const std::string dir = temp_dir();
  const std::string minilm = std::string(M3D_SOURCE_DIR) + "/third_party/models/all-MiniLM-L6-v2";
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " score --task report --pred " + fixture("metrics/report_predictions.csv") + " -o " + dir + " --bertscore-model " + minilm +
                            " --bertscore-layers 4",
                        &out, &err),
            0)
      << err;
  const auto scored = io::csv_read(dir + "/scored.csv");
  ASSERT_EQ(scored.rows.size(), 92u);
  double sum = 0;
  for (size_t i = 0; i < scored.rows.size(); ++i) {
    const auto& row = scored.rows[i];
    EXPECT_NEAR(std::stod(row[scored.column("m3d_bert_f1")]), std::stod(row[scored.column("bert_f1")]), 1e-6) << i;
    EXPECT_NEAR(std::stod(row[scored.column("m3d_meteor")]), std::stod(row[scored.column("meteor")]), 1e-6) << i;
    sum += std::stod(row[scored.column("bert_f1")]);
  }
  const auto summary = read_json(dir + "/summary.json");
  EXPECT_NEAR(summary["metrics"]["m3d_bert_f1"].get<double>(), sum / 92.0, 1e-6);
  EXPECT_FALSE(summary.contains("not_computed"));
  EXPECT_NE(summary["bert_f1_setting"].get<std::string>().find("4 layers, idf off, not rescaled"), std::string::npos);
  EXPECT_EQ(run_command(kM3d + " score --task report --pred " + fixture("metrics/report_predictions.csv") + " -o " + dir + " --bertscore-model " + minilm +
                            " --bertscore-layers 9",
                        &out, &err),
            1);
  EXPECT_NE(err.find("9 layers asked, the model has 6"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d::test

namespace m3d::test {
namespace {

// A small M3D-Data folder: three model-space images, an M3D-Cap json with reports,
// and an M3D-VQA csv (one question with "NA" choices, as the generator writes them).
std::string tiny_m3d_data(const std::string& root) {
  const std::string dir = root + "/data";
  fs::create_directories(dir + "/M3D_Cap_npy/ct_case/000001");
  fs::create_directories(dir + "/M3D-VQA");
  nlohmann::json cap = {{"train", nlohmann::json::array()}, {"test", nlohmann::json::array()}};
  for (int n = 0; n < 3; ++n) {
    const at::Tensor image = at::rand({1, 32, 256, 256}, at::TensorOptions(at::kFloat)).mul_(0.2 * (n + 1));
    const std::string rel = "M3D_Cap_npy/ct_case/000001/series" + std::to_string(n);
    io::npy_write(dir + "/" + rel + ".npy", DType::F32, {1, 32, 256, 256}, image.contiguous().data_ptr<float>());
    std::ofstream(dir + "/" + rel + ".txt") << "The liver is normal. No pleural effusion, case " << n << ".";
    cap["test"].push_back({{"image", rel + ".npy"}, {"text", rel + ".txt"}});
  }
  std::ofstream(dir + "/M3D_Cap_npy/M3D_Cap.json") << cap.dump();
  // M3D-Seg 0003: two images x classes 0 (liver, present) and 2 (spleen, absent: the (1,1,1,1) zero array).
  const std::string seg = dir + "/M3D_Seg_npy/0003";
  nlohmann::json seg_json = {{"train", nlohmann::json::array()}, {"test", nlohmann::json::array()}};
  for (int n = 0; n < 2; ++n) {
    const std::string case_dir = seg + "/case" + std::to_string(n);
    fs::create_directories(case_dir + "/masks");
    const at::Tensor image = at::rand({1, 32, 256, 256}, at::TensorOptions(at::kFloat));
    io::npy_write(case_dir + "/image.npy", DType::F32, {1, 32, 256, 256}, image.contiguous().data_ptr<float>());
    at::Tensor mask = at::zeros({1, 32, 256, 256}, at::TensorOptions(at::kByte));
    mask.slice(1, 4, 10).slice(2, 64, 128).slice(3, 32 + n, 96).fill_(1);
    io::npy_write(case_dir + "/masks/mask_0.npy", DType::U8, {1, 32, 256, 256}, mask.contiguous().data_ptr<uint8_t>());
    const int64_t empty[1] = {0};
    io::npy_write(case_dir + "/masks/mask_2.npy", DType::I64, {1, 1, 1, 1}, empty);
    for (const char* m : {"mask_0.npy", "mask_2.npy"}) {
      seg_json["test"].push_back(
          {{"image", "M3D_Seg_npy/0003/case" + std::to_string(n) + "/image.npy"}, {"label", "M3D_Seg_npy/0003/case" + std::to_string(n) + "/masks/" + m}});
    }
  }
  std::ofstream(seg + "/0003.json") << seg_json.dump();
  std::ofstream(dir + "/M3D-VQA/M3D_VQA_test.csv")
      << "Image Path,Text,Question Type,Question,Choice A,Choice B,Choice C,Choice D,Answer,Answer Choice\n"
      << "M3D_Cap_npy/ct_case/000001/series0.npy,report,1,In which plane is this image taken?,Axial,Coronal,Sagittal,Oblique,Axial,A\n"
      << "M3D_Cap_npy/ct_case/000001/series1.npy,report,3,\"Which organ is shown, mostly?\",Liver,Spleen,Kidney,Heart,Liver,A\n"
      << "M3D_Cap_npy/ct_case/000001/series2.npy,report,4,Is there an effusion?,Yes,No,NA,NA,No,B\n"
      << "M3D_Cap_npy/ct_case/000001/series0.npy,report,5,Where is the lesion?,Left,Right,Both,None,Left,A\n";
  return dir;
}

TEST(CliBench, RunsScoresAndResumesToTheSameNumbers) {
  const std::string root = temp_dir();
  const std::string data = tiny_m3d_data(root);
  const std::string out1 = root + "/run1", out2 = root + "/run2";
  const std::string base = kM3d + " bench --model " + fixture("lamed_llama_tiny") + " --data " + data + " --max-new-tokens 4";
  std::string out, err;
  ASSERT_EQ(run_command(base + " --task vqa-closed -o " + out1, &out, &err), 0) << err;
  const auto csv = read_bytes(out1 + "/predictions.csv");
  const auto summary = read_json(out1 + "/summary.json");
  EXPECT_EQ(summary["samples"], 4);
  EXPECT_EQ(summary["groups"].size(), 4u);
  EXPECT_NE(out.find("| m3d_correct |"), std::string::npos) << out;
  // Interrupted after one sample, with a second record cut short: the rerun redoes the rest.
  fs::create_directories(out2);
  std::ifstream journal(out1 + "/predictions.jsonl");
  std::string first, second;
  std::getline(journal, first);
  std::getline(journal, second);
  std::ofstream(out2 + "/predictions.jsonl") << first << "\n" << second.substr(0, second.size() / 2);
  fs::copy_file(out1 + "/run.json", out2 + "/run.json");  // the interrupted run was this one
  ASSERT_EQ(run_command(base + " --task vqa-closed -o " + out2, &out, &err), 0) << err;
  EXPECT_EQ(read_bytes(out2 + "/predictions.csv"), csv);
  EXPECT_EQ(read_json(out2 + "/summary.json")["metrics"], summary["metrics"]);
  // A finished run is not recomputed: the model is not even loaded (its weights are
  // damaged here, same size, so the run's identity is unchanged).
  const std::string model_copy = root + "/model_copy", out3 = root + "/run3";
  fs::copy(fixture("lamed_llama_tiny"), model_copy);
  const std::string copied = kM3d + " bench --model " + model_copy + " --data " + data + " --max-new-tokens 4 --task vqa-closed -o " + out3;
  ASSERT_EQ(run_command(copied, &out, &err), 0) << err;
  {
    std::fstream weights(model_copy + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    weights.write("\xff\xff\xff\xff\xff\xff\xff\xff", 8);  // the header length
  }
  ASSERT_EQ(run_command(copied, &out, &err), 0) << err;
  EXPECT_EQ(read_bytes(out3 + "/predictions.csv"), csv);
  // Another model or setting into a used folder is refused (it would mix two runs), unless --overwrite.
  EXPECT_EQ(
      run_command(kM3d + " bench --model " + fixture("lamed_phi3_tiny") + " --data " + data + " --max-new-tokens 4 --task vqa-closed -o " + out2, &out, &err),
      1);
  EXPECT_NE(err.find("holds predictions of another run (different model)"), std::string::npos) << err;
  EXPECT_EQ(
      run_command(kM3d + " bench --model " + fixture("lamed_llama_tiny") + " --data " + data + " --max-new-tokens 5 --task vqa-closed -o " + out2, &out, &err),
      1);
  EXPECT_NE(err.find("(different max_new_tokens)"), std::string::npos) << err;
  ASSERT_EQ(run_command(base + " --task vqa-closed --overwrite -o " + out2, &out, &err), 0) << err;
  EXPECT_EQ(read_bytes(out2 + "/predictions.csv"), csv);

  ASSERT_EQ(run_command(base + " --task report --limit 2 -o " + out1 + "_report", &out, &err), 0) << err;
  EXPECT_EQ(read_json(out1 + "_report/summary.json")["samples"], 2);
  ASSERT_EQ(run_command(base + " --task vqa-open -o " + out1 + "_open", &out, &err), 0) << err;
  // Positioning over M3D-Seg: the reference box is M3D's mask2box of the mask.
  ASSERT_EQ(run_command(base + " --task rec -o " + out1 + "_rec", &out, &err), 0) << err;
  const auto rec = io::csv_read(out1 + "_rec/predictions.csv");
  ASSERT_EQ(rec.rows.size(), 4u);
  EXPECT_EQ(rec.rows[0][rec.column("Answer")], "Coordinates are <bx_start>[0.125, 0.25, 0.125, 0.281, 0.496, 0.371]<bx_end>.");
  EXPECT_EQ(rec.rows[1][rec.column("Answer")], "Sorry, there is no spleen.");
  EXPECT_EQ(rec.rows[1][rec.column("IOU")], "-1.000000");
  EXPECT_GE(read_json(out1 + "_rec/summary.json")["rows_without_a_box"].get<int64_t>(), 2);
  ASSERT_EQ(run_command(base + " --task reg -o " + out1 + "_reg", &out, &err), 0) << err;
  const auto reg = io::csv_read(out1 + "_reg/predictions.csv");
  ASSERT_EQ(reg.rows.size(), 2u);  // the classes present
  EXPECT_EQ(reg.rows[0][reg.column("Answer")], "The target is liver.");
  // Baselines without a model: the oracle scores 1, the constant answer chance.
  const std::string baseline = kM3d + " bench --data " + data + " --predictor ";
  ASSERT_EQ(run_command(baseline + "oracle --task vqa-closed -o " + out1 + "_oracle", &out, &err), 0) << err;
  EXPECT_EQ(read_json(out1 + "_oracle/summary.json")["metrics"]["m3d_correct"], 1.0);
  ASSERT_EQ(run_command(baseline + "constant --task vqa-closed -o " + out1 + "_constant", &out, &err), 0) << err;
  EXPECT_EQ(read_json(out1 + "_constant/summary.json")["metrics"]["m3d_correct"], 0.75);  // three of the four answers are A
  ASSERT_EQ(run_command(baseline + "oracle --task report -o " + out1 + "_oracle_report --bertscore-model " + std::string(M3D_SOURCE_DIR) +
                            "/third_party/models/all-MiniLM-L6-v2 --bertscore-layers 4",
                        &out, &err),
            0)
      << err;
  const auto oracle_report = read_json(out1 + "_oracle_report/summary.json");
  EXPECT_EQ(oracle_report["metrics"]["m3d_bleu"], 1.0);
  EXPECT_NEAR(oracle_report["metrics"]["m3d_bert_f1"].get<double>(), 1.0, 1e-6);  // a text matches itself
  EXPECT_GT(oracle_report["metrics"]["m3d_meteor"].get<double>(), 0.99);  // METEOR's fragmentation penalty keeps it below 1
  const auto oracle_csv = io::csv_read(out1 + "_oracle_report/predictions.csv");
  for (const auto& row : oracle_csv.rows) {  // the official columns hold the same values
    EXPECT_EQ(row[oracle_csv.column("meteor")], row[oracle_csv.column("m3d_meteor")]);
    EXPECT_EQ(row[oracle_csv.column("bert_f1")], row[oracle_csv.column("m3d_bert_f1")]);
  }
  ASSERT_EQ(run_command(baseline + "oracle --task rec -o " + out1 + "_oracle_rec", &out, &err), 0) << err;
  EXPECT_NEAR(read_json(out1 + "_oracle_rec/summary.json")["metrics"]["m3d_iou_true"].get<double>(), 1.0, 1e-12);
  EXPECT_EQ(run_command(kM3d + " bench --data " + data + " --task rec", &out, &err), 1);
  EXPECT_NE(err.find("--model is required"), std::string::npos) << err;
  EXPECT_EQ(run_command(base + " --task seg -o " + out1 + "_seg", &out, &err), 1);
  EXPECT_NE(err.find("task seg with a model needs the SegVol mask decoder"), std::string::npos) << err;
  EXPECT_EQ(run_command(base + " --task refseg -o " + out1 + "_refseg", &out, &err), 1);
  EXPECT_NE(err.find("refseg: needs the SegVol mask decoder"), std::string::npos) << err;
  EXPECT_EQ(run_command(base + " --task vqa-closed --vqa-csv /nonexistent.csv -o " + out1 + "_x", &out, &err), 1);
  EXPECT_NE(err.find("/nonexistent.csv: no such file (the M3D-VQA test csv)"), std::string::npos) << err;
  std::ofstream(root + "/no_answer.csv") << "Image Path,Question Type,Question\nx.npy,1,q\n";
  EXPECT_EQ(run_command(base + " --task vqa-open --vqa-csv " + root + "/no_answer.csv -o " + out1 + "_z", &out, &err), 1);
  EXPECT_NE(err.find("no_answer.csv: missing column 'Answer'"), std::string::npos) << err;
  std::ofstream(root + "/bad_seg.json") << R"({"test": [{"image": "x.npy", "label": "masks/tumour.npy"}]})";
  EXPECT_EQ(run_command(base + " --task rec --seg-json " + root + "/bad_seg.json -o " + out1 + "_w", &out, &err), 1);
  EXPECT_NE(err.find("does not name a known class (mask_<index>.npy)"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " bench --model " + fixture("lamed_llama_tiny") + " --data " + root + "/empty --task vqa-closed -o " + out1 + "_y", &out, &err),
            1);
  EXPECT_NE(err.find("no M3D-VQA test csv found"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d::test
