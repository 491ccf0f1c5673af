// Preprocessing ops against MONAI 1.3.0 on three real volumes
// (tools/reference/make_preprocess_fixtures.py), recipes, and the way back:
// masks and boxes mapped from model space onto the original scan.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "imaging/preprocess.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::imaging {
namespace {

namespace fs = std::filesystem;

void expect_summary(const at::Tensor& t, const nlohmann::json& want, const std::string& what) {
  const auto shape = want["shape"].get<std::vector<int64_t>>();
  ASSERT_EQ(t.sizes().vec(), shape) << what;
  const at::Tensor d = t.to(at::kDouble).contiguous();
  const double scale = std::max({1.0, std::abs(want["min"].get<double>()), std::abs(want["max"].get<double>())});
  const double tolerance = 1e-4 * scale;  // the issue's bar: 1e-4 on [0, 1] data
  EXPECT_NEAR(d.min().item<double>(), want["min"].get<double>(), tolerance) << what;
  EXPECT_NEAR(d.max().item<double>(), want["max"].get<double>(), tolerance) << what;
  EXPECT_NEAR(d.sum().item<double>(), want["sum"].get<double>(), 1e-6 * scale * static_cast<double>(d.numel()) + 1e-6) << what;
  if (want.contains("sum_squares")) {
    EXPECT_NEAR((d * d).sum().item<double>(), want["sum_squares"].get<double>(), 1e-6 * scale * scale * static_cast<double>(d.numel()) + 1e-6) << what;
  }
  double worst = 0;
  const auto a = d.accessor<double, 3>();
  for (const auto& s : want["samples"]) {
    const auto i = s["index"].get<std::vector<int64_t>>();
    worst = std::max(worst, std::abs(a[i[0]][i[1]][i[2]] - s["value"].get<double>()));
  }
  EXPECT_LE(worst, tolerance) << what << ": largest difference at the 256 sampled voxels";
}

// The recipe parser (torch-free, fuzzed) keeps its own op table with each op's parameters;
// it must take exactly the ops the pipeline runs.
TEST(Preprocess, RecipeParserTakesTheOpsThePipelineRuns) { EXPECT_EQ(recipe_op_names(), op_names()); }

TEST(Preprocess, OpsMatchMonaiOnRealVolumes) {
  const auto reference = test::read_json(test::fixture("volumes/preprocess.json"));
  int checked = 0;
  for (const auto& c : reference["cases"]) {
    const std::string file = c["file"];
    const std::string path = reference["nibabel_data"].get<std::string>() + file.substr(file.find('/'));
    const Volume volume = volume_from_raw(volume_read(path));
    Volume floats = volume;
    floats.voxels = volume.voxels.to(at::kFloat);
    IndexMap ignored;
    const Volume unit = apply_op(floats, {"minmax", nlohmann::json::object()}, &ignored);
    for (const auto& item : c["ops"]) {
      const std::string what = file + " " + item["op"].dump();
      if (item["op"].contains("recipe")) {
        const Prepared p = prepare(volume, recipe_builtin(item["op"]["recipe"]).ops);
        expect_summary(p.volume.voxels, item, what);
        ++checked;
        continue;
      }
      Op op{item["op"]["op"], item["op"]};
      op.params.erase("op");
      const bool on_unit = op.name == "resize" || op.name == "pad" || op.name == "center_crop";
      IndexMap map;
      const bool on_raw = op.name == "orient" || op.name == "spacing";  // MONAI got the file's data with its affine
      const Volume out = apply_op(on_raw ? volume : on_unit ? unit : floats, op, &map);
      expect_summary(out.voxels, item, what);
      if (item.contains("affine_ras")) {
        const auto affine = out.geometry.affine_ras();
        const auto want = item["affine_ras"].get<std::vector<double>>();
        for (int n = 0; n < 16; ++n) EXPECT_NEAR(affine[n], want[n], 1e-4) << what << " affine[" << n << "]";
        if (op.name == "orient") { EXPECT_EQ(out.geometry.axcodes(), item["op"]["axcodes"].get<std::string>()) << what; }
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 92);
}

// A raw M3D-Cap case (numbered PNG slices: grey, RGB, palette, one stray size) read
// as a folder and prepared by the m3d-lamed recipe equals M3D's own preparation
// script (PIL + MONAI, tools/reference/make_volume_fixtures.py).
TEST(Preprocess, SliceFolderWithM3dLamedRecipeMatchesM3dCapPreparation) {
  const auto reference = test::read_json(test::fixture("volumes/readers.json"));
  const auto& want = reference["m3d_cap_slices"];
  const RawVolume raw = volume_read(test::fixture("volumes/m3d_cap_slices"));
  EXPECT_EQ(raw.info.format, "slices");
  EXPECT_EQ((std::vector<int64_t>{raw.size[2], raw.size[1], raw.size[0]}), want["stacked_shape"].get<std::vector<int64_t>>());
  const Prepared p = prepare(volume_from_raw(raw), recipe_builtin("m3d-lamed").ops);
  expect_summary(p.volume.voxels, want, "m3d_cap_slices");
}

// A synthetic scan with a known box-shaped object, through a recipe that crops,
// resizes and reorients, and back.
struct Phantom {
  Volume volume;
  int64_t lo[3], hi[3];  // object bounds (i, j, k), inclusive
};

Phantom phantom() {
  Phantom p;
  p.volume.voxels = at::full({40, 70, 90}, -1000.0, at::kFloat);  // (D, H, W) = (k, j, i), air
  p.volume.voxels.slice(0, 5, 35).slice(1, 10, 60).slice(2, 12, 80).fill_(40.0);  // body
  const int64_t lo[3] = {30, 20, 14}, hi[3] = {49, 35, 21};
  for (int a = 0; a < 3; ++a) p.lo[a] = lo[a], p.hi[a] = hi[a];
  p.volume.voxels.slice(0, lo[2], hi[2] + 1).slice(1, lo[1], hi[1] + 1).slice(2, lo[0], hi[0] + 1).fill_(300.0);  // lesion
  p.volume.geometry.spacing = {0.7, 0.8, 2.5};
  p.volume.geometry.origin = {-120.0, 35.0, -400.0};
  p.volume.geometry.direction = {-1, 0, 0, 0, 1, 0, 0, 0, 1};  // i runs to the right: axcodes RPS
  return p;
}

std::vector<Op> round_trip_ops() {
  return {{"orient", {{"axcodes", "RAS"}}},
          {"window", {{"preset", "abdomen"}}},
          {"crop_foreground", {{"threshold", 0.0}, {"margin", 3}}},
          {"resize", {{"size", {32, 96, 80}}, {"mode", "trilinear"}}},
          {"pad", {{"size", {36, 96, 96}}}}};
}

TEST(Preprocess, MaskComesBackOntoTheOriginalGridWithinOneVoxel) {
  const Phantom ph = phantom();
  const Prepared p = prepare(ph.volume, round_trip_ops());
  EXPECT_EQ(p.volume.voxels.sizes().vec(), (std::vector<int64_t>{36, 96, 96}));
  const at::Tensor mask = (p.volume.voxels > 0.9).to(at::kFloat);  // the lesion (300 HU -> 1 after the window)
  const at::Tensor back = to_original_grid(p, mask, /*nearest=*/true);
  ASSERT_EQ(back.sizes(), ph.volume.voxels.sizes());
  const at::Tensor truth = (ph.volume.voxels > 200).to(at::kFloat);
  // Every voxel that differs lies within one voxel of the object's boundary.
  const at::Tensor differ = (back != truth).nonzero();
  for (int64_t n = 0; n < differ.size(0); ++n) {
    const int64_t index[3] = {differ[n][2].item<int64_t>(), differ[n][1].item<int64_t>(), differ[n][0].item<int64_t>()};
    for (int a = 0; a < 3; ++a) { EXPECT_TRUE(index[a] >= ph.lo[a] - 1 && index[a] <= ph.hi[a] + 1) << "axis " << a << " index " << index[a]; }
    bool near_face = false;
    for (int a = 0; a < 3; ++a) near_face |= std::abs(index[a] - ph.lo[a]) <= 1 || std::abs(index[a] - ph.hi[a]) <= 1;
    EXPECT_TRUE(near_face);
  }
  EXPECT_GT(back.sum().item<double>(), 0.8 * truth.sum().item<double>());
  // Probabilities (linear) agree with the mask away from the edges.
  const at::Tensor soft = to_original_grid(p, mask, /*nearest=*/false);
  EXPECT_NEAR(soft[17][28][40].item<float>(), 1.0f, 1e-5);  // (k, j, i) inside the lesion
  EXPECT_NEAR(soft[2][2][2].item<float>(), 0.0f, 1e-5);
}

TEST(Preprocess, BoxComesBackWithinOneVoxelAndInMillimetres) {
  const Phantom ph = phantom();
  const Prepared p = prepare(ph.volume, round_trip_ops());
  // The lesion's box in model space, as M3D builds box text: inclusive max index / size.
  const at::Tensor mask = p.volume.voxels > 0.9;
  const at::Tensor where = mask.nonzero();
  const auto size = p.volume.voxels.sizes();
  std::array<double, 6> box{};
  for (int d = 0; d < 3; ++d) {
    box[d] = static_cast<double>(where.select(1, d).min().item<int64_t>()) / static_cast<double>(size[d]);
    box[3 + d] = static_cast<double>(where.select(1, d).max().item<int64_t>()) / static_cast<double>(size[d]);
  }
  const OriginalBox b = box_to_original(p, box);
  for (int a = 0; a < 3; ++a) {
    EXPECT_NEAR(b.index_min[a], static_cast<double>(ph.lo[a]), 1.0) << "axis " << a;
    EXPECT_NEAR(b.index_max[a], static_cast<double>(ph.hi[a]), 1.0) << "axis " << a;
  }
  // Millimetres are the original geometry's index-to-physical transform (ITK's) of those indices.
  const auto corner_a = ph.volume.geometry.index_to_physical(b.index_min);
  const auto corner_b = ph.volume.geometry.index_to_physical(b.index_max);
  for (int a = 0; a < 3; ++a) {
    EXPECT_NEAR(b.mm_min[a], std::min(corner_a[a], corner_b[a]), 1e-9);
    EXPECT_NEAR(b.mm_max[a], std::max(corner_a[a], corner_b[a]), 1e-9);
  }
  // LPS x of the object: i runs to the right (-x), so the lesion spans -120 - 0.7 * [30, 49].
  EXPECT_NEAR(b.mm_max[0], -120.0 - 0.7 * 30, 0.7 + 1e-9);
  EXPECT_NEAR(b.mm_min[0], -120.0 - 0.7 * 49, 0.7 + 1e-9);
  test::expect_one_line_error([&] { box_to_original(p, {0.1, 0.2, 0.3, 1.5, 0.5, 0.6}); }, "", "values must be in [0, 1]");
}

TEST(Preprocess, ModelGridGeometryPlacesVoxelsWhereTheOriginalHasThem) {
  const Phantom ph = phantom();
  const Prepared p = prepare(ph.volume, round_trip_ops());
  for (const std::array<double, 3> model : {std::array<double, 3>{0, 0, 0}, {10, 20, 30}, {95, 95, 35}}) {
    const auto via_map = ph.volume.geometry.index_to_physical(p.to_original.apply(model));
    const auto via_grid = p.volume.geometry.index_to_physical(model);
    for (int a = 0; a < 3; ++a) EXPECT_NEAR(via_map[a], via_grid[a], 1e-6);
  }
  const IndexMap inverse = p.to_original.inverse();
  const auto there = p.to_original.apply({5, 6, 7});
  const auto back = inverse.apply(there);
  EXPECT_NEAR(back[0], 5, 1e-9);
  EXPECT_NEAR(back[1], 6, 1e-9);
  EXPECT_NEAR(back[2], 7, 1e-9);
}

TEST(Recipe, BuiltinsFilesAndErrors) {
  const Recipe lamed = recipe_builtin("m3d-lamed");
  ASSERT_EQ(lamed.ops.size(), 3u);
  EXPECT_EQ(lamed.ops[2].params["size"], nlohmann::json({32, 256, 256}));
  EXPECT_EQ(recipe_builtin("med3dvlm").ops[2].params["size"], nlohmann::json({128, 256, 256}));
  const Recipe again = recipe_parse(recipe_to_json(lamed), "x.json");
  EXPECT_EQ(recipe_to_json(again), recipe_to_json(lamed));
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/m3d_recipe.json") << R"({"name": "ct", "ops": [{"op": "window", "preset": "lung"}, {"op": "resize", "size": [8, 16, 16]}]})";
  EXPECT_EQ(recipe_load(dir).name, "ct");
  EXPECT_EQ(recipe_load(dir + "/m3d_recipe.json").ops.size(), 2u);
  test::expect_one_line_error([&] { recipe_load("nonesuch"); }, "", "unknown recipe 'nonesuch' (built-in: m3d-lamed, med3dvlm");
  test::expect_one_line_error([&] { recipe_parse(R"({"ops": [{"op": "sharpen"}]})", "r.json"); }, "r.json", "unknown op 'sharpen'");
  test::expect_one_line_error([&] { recipe_parse("{", "r.json"); }, "r.json", "not valid JSON");
  test::expect_one_line_error([&] { recipe_parse(R"({"name": "x"})", "r.json"); }, "r.json", "a recipe is");
  const Phantom ph = phantom();
  IndexMap map;
  test::expect_one_line_error([&] { apply_op(ph.volume, {"resize", {{"size", {0, 4, 4}}}}, &map); }, "", "size 0 is not a positive voxel count");
  test::expect_one_line_error([&] { apply_op(ph.volume, {"resize", {{"size", {4, 4}}}}, &map); }, "", "\"size\" must be [D, H, W]");
  test::expect_one_line_error([&] { apply_op(ph.volume, {"window", {{"preset", "kidney"}}}, &map); }, "", "unknown window preset 'kidney'");
  test::expect_one_line_error([&] { apply_op(ph.volume, {"orient", {{"axcodes", "RRS"}}}, &map); }, "", "not a valid axcodes");
  test::expect_one_line_error([&] { apply_op(ph.volume, {"crop_foreground", {{"threshold", 5000}}}, &map); }, "", "no voxel is above 5000");
  test::expect_one_line_error([&] { apply_op(ph.volume, {"scale_range", {{"a_min", 1}}}, &map); }, "", "needs \"a_max\"");
}

}  // namespace
}  // namespace m3d::imaging
