// Preprocessing recipes without libtorch (preprocess.h runs them): a named op list,
// JSON {"name", "source", "ops": [{"op": ..., params}]}, the built-in M3D / Med3DVLM
// lists, and the parser that checks every op and parameter against the op table of
// docs/preprocessing.md before anything runs. Torch-free, so the parser is fuzzed.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace m3d::imaging {

// One preprocessing step: {"op": name, parameters...} as in a recipe file (see
// docs/preprocessing.md). Intensity ops leave the index map at identity.
struct Op {
  std::string name;
  nlohmann::json params;
};

// A recipe: a named op list; JSON {"name", "source", "ops": [{"op": ..., params}]}.
struct Recipe {
  std::string name, source;
  std::vector<Op> ops;
};
Recipe recipe_builtin(const std::string& name);  // m3d-lamed, med3dvlm
std::vector<std::string> recipe_builtin_names();
// Throws m3d::Error naming `where` for invalid JSON, an unknown op or parameter, a
// missing required parameter, or a value of the wrong type or out of range.
Recipe recipe_parse(const std::string& json_text, const std::string& where);
Recipe recipe_load(const std::string& name_or_path);  // built-in name, a .json file, or a checkpoint dir's m3d_recipe.json
std::string recipe_to_json(const Recipe& recipe);
// The ops the parser takes, in the order of docs/preprocessing.md; equal to op_names(),
// which lists the ops preprocess.h runs (tested).
std::vector<std::string> recipe_op_names();

}  // namespace m3d::imaging
