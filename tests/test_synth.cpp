// Synthetic studies: the consistency checker passes on a generated set and catches
// each rule broken on purpose; same seed, same bytes; the M3D-Data readers of
// m3d bench take the set as it is (oracle 1, constant answer near chance).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "data/synth.h"
#include "imaging/volume_io.h"
#include "io/csv.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::data {
namespace {

namespace fs = std::filesystem;
const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";

std::string generate(const std::string& dir, int64_t n, uint64_t seed, int threads) {
  SynthOptions o;
  o.count = n;
  o.seed = seed;
  o.output = dir;
  o.threads = threads;
  o.progress = false;
  synth_write(o);
  return dir;
}

bool has(const std::vector<std::string>& problems, const std::string& fragment) {
  for (const auto& p : problems) {
    if (p.find(fragment) != std::string::npos) return true;
  }
  return false;
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

TEST(Synth, CheckerPassesAndCatchesEachBrokenRule) {
  const std::string root = test::temp_dir();
  const std::string dir = generate(root + "/set", 16, 7, 2);
  const auto problems = synth_check(dir);
  for (const auto& p : problems) ADD_FAILURE() << p;
  const auto cap = io::json_read_file(dir + "/M3D_Cap_npy/M3D_Cap.json");
  EXPECT_EQ(cap["train"].size() + cap["validation"].size() + cap["test"].size(), 16u);

  // A study with findings, to break.
  std::string folder;
  nlohmann::json truth;
  for (const auto& e : fs::directory_iterator(dir + "/M3D_Cap_npy/synth")) {
    truth = io::json_read_file(e.path().string() + "/truth.json");
    if (truth["findings"].size() >= 1) {
      folder = e.path().string();
      break;
    }
  }
  ASSERT_FALSE(folder.empty());
  const std::string report = read(folder + "/text.txt");
  auto restore = [&] { std::ofstream(folder + "/text.txt") << report; };
  // 1. A size the mask does not have.
  std::ofstream(folder + "/text.txt") << std::regex_replace(report, std::regex(R"((\d+) mm)"), "99$1 mm");
  EXPECT_TRUE(has(synth_check(dir), "the mask measures")) << "size";
  // 2. A finding the report leaves out.
  std::ofstream(folder + "/text.txt") << std::regex_replace(report, std::regex(R"(\d+ mm [a-z ]+ in the [a-z ]+)"), "nothing");
  EXPECT_TRUE(has(synth_check(dir), "the report does not name its")) << "missing finding";
  // 3. A finding the truth does not have.
  std::ofstream(folder + "/text.txt") << report << " There is a 12 mm kidney stone in the left bladder.";
  EXPECT_TRUE(has(synth_check(dir), "that the truth does not have")) << "invented finding";
  restore();
  // 4. A box that is not the mask's box.
  nlohmann::json broken = truth;
  broken["findings"][0]["box"][0] = broken["findings"][0]["box"][0].get<double>() + 0.1;
  std::ofstream(folder + "/truth.json") << broken.dump();
  EXPECT_TRUE(has(synth_check(dir), "is not its mask's box")) << "box";
  std::ofstream(folder + "/truth.json") << truth.dump();
  EXPECT_TRUE(synth_check(dir).empty());
  // 5. A VQA answer that disagrees with the truth, and 6. unbalanced letters.
  const std::string csv_path = dir + "/M3D-VQA/M3D_VQA_train.csv";
  const std::string csv = read(csv_path);
  io::CsvTable t = io::csv_parse(csv, csv_path);
  const auto col = [&](const char* name) { return static_cast<size_t>(t.column(name)); };
  for (auto& row : t.rows) {  // every answer moved to A
    const char letter = row[col("Answer Choice")][0];
    std::swap(row[col("Choice A")], row[static_cast<size_t>(t.column(std::string("Choice ") + letter))]);
    row[col("Answer Choice")] = "A";
  }
  t.rows[0][col("Answer")] = t.rows[0][col("Choice A")] = "Oblique";
  std::string text = io::csv_line(t.header);
  for (const auto& row : t.rows) text += io::csv_line(row);
  std::ofstream(csv_path) << text;
  const auto vqa_problems = synth_check(dir);
  EXPECT_TRUE(has(vqa_problems, "disagrees with the truth")) << "answer";
  EXPECT_TRUE(has(vqa_problems, "answer letter A is")) << "balance";
  std::ofstream(csv_path) << csv;
  EXPECT_TRUE(synth_check(dir).empty());
  // 7. A truncated image volume.
  const std::string image = dir + "/" + cap["train"][0]["image"].get<std::string>();
  const std::string bytes = read(image);
  std::ofstream(image, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_TRUE(has(synth_check(dir), "truncated")) << "truncated image";
  std::ofstream(image, std::ios::binary) << bytes;
  EXPECT_TRUE(synth_check(dir).empty());
}

// Small sets pass the balance test (a 15-35% rule failed `m3d synth --n 20 --seed 0`).
TEST(Synth, SmallPristineSetsPassTheChecker) {
  const std::string root = test::temp_dir();
  for (const uint64_t seed : {0, 1}) {
    const std::string dir = generate(root + "/n20_" + std::to_string(seed), 20, seed, 2);
    for (const auto& p : synth_check(dir)) ADD_FAILURE() << "seed " << seed << ": " << p;
  }
}

TEST(Synth, RegionsNiftiAndReferringExpressions) {
  const std::string root = test::temp_dir();
  SynthOptions o;
  o.count = 4;
  o.seed = 5;
  o.output = root + "/chest";
  o.regions = {"chest"};
  o.nifti = true;
  o.progress = false;
  synth_write(o);
  EXPECT_TRUE(synth_check(o.output).empty());
  for (int i = 0; i < 4; ++i) {
    const std::string folder = o.output + "/M3D_Cap_npy/synth/" + fmt::format("{:06d}", i);
    const auto truth = io::json_read_file(folder + "/truth.json");
    EXPECT_EQ(truth["region"], "chest");
    const auto ct = imaging::volume_read(folder + "/ct.nii.gz");
    EXPECT_EQ(ct.size, (std::array<int64_t, 3>{256, 256, 32}));
    EXPECT_NEAR(ct.geometry.spacing[2], truth["spacing_dhw_mm"][0].get<double>(), 1e-4);
  }
  const auto refseg = io::csv_read(o.output + "/M3D_RefSeg_npy/M3D_RefSeg_train.csv");
  EXPECT_EQ(refseg.header, (std::vector<std::string>{"Image", "Mask", "Mask_ID", "Question_Type", "Question", "Answer"}));
  o.regions = {"knee"};
  test::expect_one_line_error([&] { synth_study(1, 0, o.regions); }, "", "unknown region 'knee'");
}

// synth check reads back what the checks above do not look at: the M3D-Seg masks of the
// test split and the --nifti copies. A truncated mask, a mask voxel of another organ, a
// truncated NIfTI and a NIfTI label map of the wrong study part are each named.
TEST(Synth, CheckerReadsSegMasksAndNifti) {
  const std::string root = test::temp_dir();
  SynthOptions o;
  o.count = 10;  // study 9 is the test split, the one with M3D-Seg masks
  o.seed = 2;
  o.output = root + "/set";
  o.threads = 2;
  o.nifti = true;
  o.progress = false;
  synth_write(o);
  for (const auto& p : synth_check(o.output)) ADD_FAILURE() << p;
  const auto truth = io::json_read_file(o.output + "/M3D_Cap_npy/synth/000009/truth.json");
  std::string label;  // the mask of an organ in view
  const auto seg = io::json_read_file(o.output + "/M3D_Seg_npy/synth/synth.json");
  for (const auto& e : seg["test"]) {
    const std::string name = fs::path(e["label"].get<std::string>()).filename();
    const size_t c = std::stoul(name.substr(5));  // mask_<c>.npy
    if (std::find(truth["organs"].begin(), truth["organs"].end(), organ_names()[c]) != truth["organs"].end()) label = e["label"];
  }
  ASSERT_FALSE(label.empty());
  const auto rewritten = [&](const std::string& path, const std::string& bytes, const std::string& fragment) {
    const std::string good = read(path);
    std::ofstream(path, std::ios::binary) << bytes;
    const auto problems = synth_check(o.output);
    std::ofstream(path, std::ios::binary) << good;
    EXPECT_TRUE(has(problems, fragment)) << fragment << "\n" << fmt::format("{}", fmt::join(problems, "\n"));
  };
  const std::string mask = read(o.output + "/" + label);
  rewritten(o.output + "/" + label, mask.substr(0, mask.size() / 2), label);  // npy_read: truncated
  std::string flipped = mask;
  const size_t voxel = mask.find('\1', 128);  // past the header: a voxel of the organ
  flipped[voxel] = 0;
  rewritten(o.output + "/" + label, flipped, label + ": voxel");
  const std::string folder = o.output + "/M3D_Cap_npy/synth/000003";
  const std::string nifti = read(folder + "/organs.nii.gz");
  rewritten(folder + "/organs.nii.gz", nifti.substr(0, nifti.size() - 100), folder + "/organs.nii.gz");
  rewritten(folder + "/lesions.nii.gz", nifti, folder + "/lesions.nii.gz: voxel");
  rewritten(folder + "/ct.nii.gz", nifti, folder + "/ct.nii.gz: U8");
  EXPECT_TRUE(synth_check(o.output).empty());
  // The command fails with the file in its output.
  std::ofstream(folder + "/organs.nii.gz", std::ios::binary) << nifti.substr(0, nifti.size() / 2);
  std::string out, err;
  EXPECT_EQ(test::run_command(kM3d + " synth check " + o.output, &out, &err), 1);
  EXPECT_NE(out.find(folder + "/organs.nii.gz"), std::string::npos) << out << err;
}

TEST(Synth, SameSeedSameBytesWhateverTheThreads) {
  const std::string root = test::temp_dir();
  const std::string a = generate(root + "/a", 4, 11, 1), b = generate(root + "/b", 4, 11, 2);
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(a)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), a).string();
    EXPECT_EQ(read(e.path().string()), read(b + "/" + rel)) << rel;
    ++files;
  }
  EXPECT_GT(files, 20u);
  const std::string c = generate(root + "/c", 1, 12, 1);
  EXPECT_NE(read(a + "/M3D_Cap_npy/synth/000000/text.txt"), read(c + "/M3D_Cap_npy/synth/000000/text.txt"));
}

TEST(Synth, BenchReadsTheSetAsItIs) {
  const std::string root = test::temp_dir();
  const std::string dir = generate(root + "/set", 40, 3, 2);
  std::string out, err;
  ASSERT_EQ(test::run_command(
                kM3d + " bench --predictor oracle --data " + dir + " --task vqa-closed --vqa-csv " + dir + "/M3D-VQA/M3D_VQA_train.csv -o " + root + "/oracle",
                &out, &err),
            0)
      << err;
  EXPECT_EQ(test::read_json(root + "/oracle/summary.json")["metrics"]["m3d_correct"], 1.0);
  ASSERT_EQ(test::run_command(kM3d + " bench --predictor constant --data " + dir + " --task vqa-closed --vqa-csv " + dir + "/M3D-VQA/M3D_VQA_train.csv -o " +
                                  root + "/constant",
                              &out, &err),
            0)
      << err;
  const double chance = test::read_json(root + "/constant/summary.json")["metrics"]["m3d_correct"];
  EXPECT_GT(chance, 0.1);
  EXPECT_LT(chance, 0.4);  // "A." is right about a quarter of the time
  ASSERT_EQ(test::run_command(kM3d + " bench --predictor oracle --data " + dir + " --task report --split train -o " + root + "/report", &out, &err), 0) << err;
  EXPECT_EQ(test::read_json(root + "/report/summary.json")["metrics"]["m3d_bleu"], 1.0);
  // Positioning over the organ masks of the test split (M3D-Seg layout, labels from its json).
  ASSERT_EQ(test::run_command(kM3d + " bench --predictor oracle --data " + dir + " --task rec --seg-dataset synth -o " + root + "/rec", &out, &err), 0) << err;
  const auto rec = test::read_json(root + "/rec/summary.json");
  EXPECT_EQ(rec["samples"], 40);  // 4 test studies x 10 organ classes
  // Identical boxes everywhere; only a structure one slice thick has a zero-volume M3D box
  // (maxima inclusive), whose IoU is 0 under both definitions.
  EXPECT_GT(rec["metrics"]["m3d_iou_true"].get<double>(), 0.9);
  // Segmentation with the reference masks: hard Dice 1; the official soft Dice stays below 1 by its smoothing term.
  ASSERT_EQ(test::run_command(kM3d + " bench --predictor oracle --data " + dir + " --task seg --seg-dataset synth -o " + root + "/seg", &out, &err), 0) << err;
  const auto seg = test::read_json(root + "/seg/summary.json");
  EXPECT_EQ(seg["metrics"]["m3d_dice_hard"], 1.0);
  EXPECT_GT(seg["metrics"]["m3d_dice_positives"].get<double>(), 0.99);
  ASSERT_EQ(test::run_command(kM3d + " bench --predictor constant --data " + dir + " --task seg --seg-dataset synth -o " + root + "/seg0", &out, &err), 0)
      << err;
  EXPECT_EQ(test::read_json(root + "/seg0/summary.json")["metrics"]["m3d_dice_positives"], 0.0);
  // Every task at once: the ones with data run, the rest are named.
  ASSERT_EQ(test::run_command(kM3d + " bench --predictor oracle --data " + dir + " --task all --seg-dataset synth -o " + root + "/all", &out, &err), 0) << err;
  for (const char* task : {"report", "vqa-closed", "vqa-open", "rec", "reg", "seg"}) EXPECT_TRUE(fs::exists(root + "/all/" + task + "/summary.json")) << task;
  EXPECT_NE(out.find("itr: skipped: m3d bench: task itr has no baseline predictors"), std::string::npos) << out;
  EXPECT_NE(out.find("refseg: needs the SegVol mask decoder"), std::string::npos) << out;
  ASSERT_EQ(test::run_command(kM3d + " synth check " + dir, &out, &err), 0) << out << err;
  EXPECT_NE(out.find("consistent"), std::string::npos);
  EXPECT_EQ(test::run_command(kM3d + " synth --n 0 -o " + root + "/none", &out, &err), 1);
  EXPECT_NE(err.find("--n must be between 1 and 1000000"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d::data
