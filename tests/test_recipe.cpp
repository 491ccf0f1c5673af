// Recipes (imaging/recipe.h), torch-free: every op as the MONAI reference fixture and
// docs/preprocessing.md write it is accepted, the built-ins write back unchanged, and a
// typo, a missing parameter or a value of the wrong type or range is an error naming
// the file and the op (before, an unknown parameter was ignored and its default used).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "imaging/recipe.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::imaging {
namespace {

const std::string kSource = M3D_SOURCE_DIR;

TEST(Recipe, AcceptsTheOpsOfTheReferenceFixtureAndTheDocs) {
  // tools/reference/make_preprocess_fixtures.py: each case's ops as MONAI ran them.
  nlohmann::json ops = nlohmann::json::array();
  const auto fixture = test::read_json(kSource + "/tests/fixtures/volumes/preprocess.json");
  for (const auto& c : fixture["cases"]) {
    for (const auto& step : c["ops"]) {
      if (step["op"].contains("op")) ops.push_back(step["op"]);  // the rest name a built-in recipe
    }
  }
  ASSERT_GT(ops.size(), 10u);
  const Recipe all = recipe_parse(nlohmann::json{{"ops", ops}}.dump(), "fixture.json");
  EXPECT_EQ(all.name, "fixture");
  EXPECT_EQ(all.ops.size(), ops.size());
  // The example of docs/preprocessing.md's "Recipes" section.
  std::ifstream in(kSource + "/docs/preprocessing.md");
  const std::string doc((std::istreambuf_iterator<char>(in)), {});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(doc, m, std::regex("```json\\n([^`]*)```")));
  const Recipe example = recipe_parse(m[1], "docs.json");
  EXPECT_EQ(example.name, "ct-abdomen");
  EXPECT_EQ(example.ops.size(), 3u);
  for (const auto& name : recipe_builtin_names()) {
    const std::string text = recipe_to_json(recipe_builtin(name));
    EXPECT_EQ(recipe_to_json(recipe_parse(text, "x.json")), text) << name;
  }
}

TEST(Recipe, WrongOpsAndParametersAreErrorsNamingTheFile) {
  const auto error = [](const std::string& ops, const std::string& fragment) {
    test::expect_one_line_error([&] { recipe_parse(R"({"ops": [{"op": "minmax"}, )" + ops + "]}", "r.json"); }, "r.json", fragment);
  };
  error(R"({"op": "orient", "axcode": "LPS"})", "op 2 'orient': unknown parameter 'axcode' (takes: axcodes)");
  error(R"({"op": "zscore", "mode": "x"})", "op 2 'zscore': unknown parameter 'mode' (the op takes none)");
  error(R"({"op": "resize", "mode": "nearest"})", "op 2 'resize': needs \"size\"");
  error(R"({"op": "resize", "size": [0, 256, 256]})", "\"size\" must be [D, H, W] voxel counts from 1 to 100000, got [0,256,256]");
  error(R"({"op": "pad", "size": [32.5, 256, 256]})", "\"size\" must be [D, H, W] voxel counts");
  error(R"({"op": "center_crop", "size": [32, 256]})", "\"size\" must be [D, H, W] voxel counts");
  error(R"({"op": "spacing", "pixdim": [1, 0, 1]})", "op 2 'spacing': \"pixdim\" must be [D, H, W] positive millimetres");
  error(R"({"op": "window", "level": 40})", "op 2 'window': needs both \"level\" and \"width\"");
  error(R"({"op": "window"})", "op 2 'window': needs \"preset\" or \"level\" and \"width\", one of the two");
  error(R"({"op": "window", "preset": "lung", "width": 400})", "needs \"preset\" or \"level\" and \"width\", one of the two");
  error(R"({"op": "window", "preset": 3})", "\"preset\" must be a string, got 3");
  error(R"({"op": "scale_range", "a_min": -1000, "a_max": 1000, "clip": "yes"})", "\"clip\" must be true or false");
  error(R"({"op": "crop_foreground", "margin": -1})", "\"margin\" must be a whole number of voxels from 0 to 100000");
  error(R"({"op": "crop_foreground", "margin": 1e30})", "\"margin\" must be a whole number");
  error(R"({"op": "sharpen"})", "unknown op 'sharpen' (supported: orient, spacing, window");
  test::expect_one_line_error([] { recipe_parse(R"({"name": 5, "ops": []})", "r.json"); }, "r.json", "\"name\" must be a string, got 5");
  const std::string dir = test::temp_dir();
  test::expect_one_line_error([&] { recipe_load(dir); }, dir, "no m3d_recipe.json in this checkpoint directory");
}

}  // namespace
}  // namespace m3d::imaging
