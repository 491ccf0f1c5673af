// Preprocessing recipes (preprocess.h): the built-in M3D / Med3DVLM op lists, and
// recipe files as JSON {"name", "source", "ops": [{"op": ..., params}]}.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "imaging/preprocess.h"
#include "io/json_util.h"
#include "m3d/error.h"

namespace m3d::imaging {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<std::string> recipe_builtin_names() { return {"m3d-lamed", "med3dvlm"}; }

Recipe recipe_builtin(const std::string& name) {
  // M3D-Data preparation (m3d_lamed_spec.md §11.2; med3dvlm_spec.md §5.1): min-max over the
  // volume, CropForeground (voxels > 0, no margin), Resize with "bilinear" = trilinear in 3D.
  auto pipeline = [](int64_t depth) {
    return std::vector<Op>{
        {"minmax", json::object()}, {"crop_foreground", {{"threshold", 0}, {"margin", 0}}}, {"resize", {{"size", {depth, 256, 256}}, {"mode", "trilinear"}}}};
  };
  if (name == "m3d-lamed") return {name, "M3D Data/process/m3d_cap_data_prepare.py: min-max, CropForeground, Resize([32,256,256])", pipeline(32)};
  if (name == "med3dvlm") return {name, "Med3DVLM src/utils/m3d_cap_data_prepare_128.py: min-max, CropForeground, Resize([128,256,256])", pipeline(128)};
  fail("unknown recipe '{}' (built-in: {}; or a recipe .json file)", name, fmt::join(recipe_builtin_names(), ", "));
}

Recipe recipe_parse(const std::string& text, const std::string& where) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) { fail("{}: not valid JSON: {}", where, e.what()); }
  if (!root.is_object() || !root.contains("ops") || !root["ops"].is_array()) fail("{}: a recipe is {{\"name\": ..., \"ops\": [...]}}", where);
  Recipe recipe;
  recipe.name = root.value("name", fs::path(where).stem().string());
  recipe.source = root.value("source", "");
  const auto names = op_names();
  for (const auto& item : root["ops"]) {
    if (!item.is_object() || !item.contains("op") || !item["op"].is_string()) fail("{}: each op is an object with \"op\": name", where);
    Op op{item["op"].get<std::string>(), item};
    op.params.erase("op");
    if (std::find(names.begin(), names.end(), op.name) == names.end()) { fail("{}: unknown op '{}' (supported: {})", where, op.name, fmt::join(names, ", ")); }
    recipe.ops.push_back(op);
  }
  return recipe;
}

Recipe recipe_load(const std::string& name_or_path) {
  std::error_code ec;
  if (fs::is_directory(name_or_path, ec)) {
    const std::string path = name_or_path + "/m3d_recipe.json";
    if (!fs::exists(path))
      fail("{}: no m3d_recipe.json in this checkpoint directory; name a recipe ({})", name_or_path, fmt::join(recipe_builtin_names(), ", "));
    return recipe_load(path);
  }
  if (fs::exists(name_or_path, ec)) return recipe_parse(io::json_read_file(name_or_path).dump(), name_or_path);
  return recipe_builtin(name_or_path);
}

std::string recipe_to_json(const Recipe& recipe) {
  json ops = json::array();
  for (const auto& op : recipe.ops) {
    json item = op.params;
    item["op"] = op.name;
    ops.push_back(item);
  }
  return json{{"name", recipe.name}, {"source", recipe.source}, {"ops", ops}}.dump(2);
}

}  // namespace m3d::imaging
