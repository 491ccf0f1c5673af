// libFuzzer target: the recipe parser (recipe.h) on arbitrary bytes. Anything it accepts
// must write back (recipe_to_json) as a recipe it accepts again, unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "imaging/recipe.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto recipe = m3d::imaging::recipe_parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
    const std::string written = m3d::imaging::recipe_to_json(recipe);
    if (m3d::imaging::recipe_to_json(m3d::imaging::recipe_parse(written, "fuzz.json")) != written) std::abort();
  } catch (const m3d::Error&) {}
  return 0;
}
