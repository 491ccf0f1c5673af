// Preprocessing recipes (recipe.h): the built-in M3D / Med3DVLM op lists, and recipe
// files as JSON {"name", "source", "ops": [{"op": ..., params}]}, each op and parameter
// checked against the table of docs/preprocessing.md when the file is read, so a typo
// or a wrong type is an error naming the file rather than a default used in silence.
#include "imaging/recipe.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "io/json_util.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// What a parameter holds: a number, a true/false, a string (its values are checked by the
// op: mode, axcodes, preset), [D, H, W] voxel counts, [D, H, W] millimetres, a voxel count.
enum class Kind { kNumber, kFlag, kText, kSize, kLengths, kCount };

struct Param {
  const char* key;
  Kind kind;
  bool required;
};

struct OpSpec {
  const char* name;
  std::vector<Param> params;
};

// The ops of ops.cpp (op_names()) with the parameters each reads (docs/preprocessing.md).
// A window takes "preset" or both "level" and "width" (checked in check_op).
const std::vector<OpSpec>& op_specs() {
  static const std::vector<OpSpec> specs = {
      {"orient", {{"axcodes", Kind::kText, false}}},
      {"spacing", {{"pixdim", Kind::kLengths, true}, {"mode", Kind::kText, false}}},
      {"window", {{"preset", Kind::kText, false}, {"level", Kind::kNumber, false}, {"width", Kind::kNumber, false}}},
      {"scale_range",
       {{"a_min", Kind::kNumber, true},
        {"a_max", Kind::kNumber, true},
        {"b_min", Kind::kNumber, false},
        {"b_max", Kind::kNumber, false},
        {"clip", Kind::kFlag, false}}},
      {"percentile_range",
       {{"lower", Kind::kNumber, false},
        {"upper", Kind::kNumber, false},
        {"b_min", Kind::kNumber, false},
        {"b_max", Kind::kNumber, false},
        {"clip", Kind::kFlag, false}}},
      {"zscore", {}},
      {"minmax", {}},
      {"crop_foreground", {{"threshold", Kind::kNumber, false}, {"margin", Kind::kCount, false}}},
      {"resize", {{"size", Kind::kSize, true}, {"mode", Kind::kText, false}}},
      {"pad", {{"size", Kind::kSize, true}}},
      {"center_crop", {{"size", Kind::kSize, true}}},
  };
  return specs;
}

constexpr double kMaxVoxels = 100000;  // per axis: a size or margin beyond this is a typo, not a scan

// A name or value as an error shows it: one line, cut short.
std::string shown(std::string text) {
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}
std::string shown(const json& value) { return shown(value.dump()); }

// A whole number (32.0 too, as a float-minded writer may put it) of voxels.
bool count_ok(const json& v) {
  return v.is_number() && v.get<double>() == std::floor(v.get<double>()) && v.get<double>() >= 0 && v.get<double>() <= kMaxVoxels;
}

bool triple_ok(const json& v, Kind kind) {
  if (!v.is_array() || v.size() != 3) return false;
  return std::all_of(v.begin(), v.end(),
                     [&](const json& x) { return kind == Kind::kSize ? count_ok(x) && x.get<double>() >= 1 : x.is_number() && x.get<double>() > 0; });
}

void check_param(const Param& p, const json& v, const std::string& at) {
  bool ok = false;
  const char* want = "";
  switch (p.kind) {
    case Kind::kNumber:
      ok = v.is_number(), want = "a number";
      break;
    case Kind::kFlag:
      ok = v.is_boolean(), want = "true or false";
      break;
    case Kind::kText:
      ok = v.is_string(), want = "a string";
      break;
    case Kind::kSize:
      ok = triple_ok(v, p.kind), want = "[D, H, W] voxel counts from 1 to 100000";
      break;
    case Kind::kLengths:
      ok = triple_ok(v, p.kind), want = "[D, H, W] positive millimetres";
      break;
    case Kind::kCount:
      ok = count_ok(v), want = "a whole number of voxels from 0 to 100000";
      break;
  }
  if (!ok) fail("{}: \"{}\" must be {}, got {}", at, p.key, want, shown(v));
}

// One op's parameters against its spec; `at` names the file and the op.
void check_op(const OpSpec& spec, const json& params, const std::string& at) {
  std::vector<std::string> keys;
  for (const auto& p : spec.params) keys.emplace_back(p.key);
  for (const auto& item : params.items()) {
    const std::string& key = item.key();
    const auto it = std::find_if(spec.params.begin(), spec.params.end(), [&](const Param& p) { return key == p.key; });
    if (it == spec.params.end()) {
      if (keys.empty()) fail("{}: unknown parameter '{}' (the op takes none)", at, shown(key));
      fail("{}: unknown parameter '{}' (takes: {})", at, shown(key), fmt::join(keys, ", "));
    }
    check_param(*it, item.value(), at);
  }
  for (const auto& p : spec.params) {
    if (p.required && !params.contains(p.key)) fail("{}: needs \"{}\"", at, p.key);
  }
  if (spec.name == std::string("window") && params.contains("preset") == (params.contains("level") || params.contains("width"))) {
    fail("{}: needs \"preset\" or \"level\" and \"width\", one of the two", at);
  }
  if (spec.name == std::string("window") && !params.contains("preset") && !(params.contains("level") && params.contains("width"))) {
    fail("{}: needs both \"level\" and \"width\"", at);
  }
}

std::string text_field(const json& root, const char* key, const std::string& fallback, const std::string& where) {
  if (!root.contains(key)) return fallback;
  if (!root[key].is_string()) fail("{}: \"{}\" must be a string, got {}", where, key, shown(root[key]));
  return root[key].get<std::string>();
}

}  // namespace

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

std::vector<std::string> recipe_op_names() {
  std::vector<std::string> names;
  for (const OpSpec& spec : op_specs()) names.emplace_back(spec.name);
  return names;
}

Recipe recipe_parse(const std::string& text, const std::string& where) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) { fail("{}: not valid JSON: {}", where, e.what()); }
  if (!root.is_object() || !root.contains("ops") || !root["ops"].is_array()) fail("{}: a recipe is {{\"name\": ..., \"ops\": [...]}}", where);
  Recipe recipe;
  recipe.name = text_field(root, "name", fs::path(where).stem().string(), where);
  recipe.source = text_field(root, "source", "", where);
  const auto& specs = op_specs();
  for (const auto& item : root["ops"]) {
    if (!item.is_object() || !item.contains("op") || !item["op"].is_string()) fail("{}: each op is an object with \"op\": name", where);
    Op op{item["op"].get<std::string>(), item};
    op.params.erase("op");
    const auto spec = std::find_if(specs.begin(), specs.end(), [&](const OpSpec& s) { return op.name == s.name; });
    if (spec == specs.end()) {
      std::vector<std::string> names;
      for (const auto& s : specs) names.emplace_back(s.name);
      fail("{}: unknown op '{}' (supported: {})", where, shown(op.name), fmt::join(names, ", "));
    }
    check_op(*spec, op.params, fmt::format("{}: op {} '{}'", where, recipe.ops.size() + 1, spec->name));
    recipe.ops.push_back(op);
  }
  return recipe;
}

Recipe recipe_load(const std::string& name_or_path) {
  std::error_code ec;
  if (fs::is_directory(name_or_path, ec)) {
    const std::string path = name_or_path + "/m3d_recipe.json";
    if (!fs::exists(path, ec))
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
