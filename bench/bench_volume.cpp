// Scan to model input: read a NIfTI CT and run the m3d-lamed recipe (min-max,
// CropForeground, Resize to 32 x 256 x 256), median of R runs each for the read,
// the recipe, and both. bench/volume_reference.py does the same with nibabel +
// MONAI. Prints one JSON line.
//   bench_volume FILE.nii.gz [--repeat R] [--recipe NAME]
//   bench_volume --make FILE.nii.gz   writes a 512 x 512 x 300 int16 CT-like phantom
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "imaging/preprocess.h"
#include "m3d/runtime.h"

namespace {

using m3d::bench::median;
using m3d::bench::seconds_since;

// Air around an elliptic body of soft tissue with a brighter spine and noise, in HU.
void make_phantom(const std::string& path) {
  const int64_t X = 512, Y = 512, Z = 300;
  at::manual_seed(0);
  const at::Tensor z = at::arange(Z, at::kFloat).view({Z, 1, 1}), y = at::arange(Y, at::kFloat).view({1, Y, 1}), x = at::arange(X, at::kFloat).view({1, 1, X});
  const at::Tensor body = ((x - 256) / 200).pow(2) + ((y - 270) / 150).pow(2) < 1;
  const at::Tensor spine = ((x - 256) / 25).pow(2) + ((y - 360) / 25).pow(2) < 1;
  at::Tensor hu = at::full({Z, Y, X}, -1000.0f);
  hu = at::where(body.expand({Z, Y, X}), at::full({}, 40.0f) + 0 * z, hu);
  hu = at::where(spine.expand({Z, Y, X}), at::full({}, 700.0f), hu);
  hu = hu + at::randn({Z, Y, X}) * 20;
  m3d::imaging::Volume v;
  v.voxels = hu.round().clamp(-1024, 3071).to(at::kShort);
  v.geometry.spacing = {0.7, 0.7, 1.5};
  m3d::imaging::volume_write(path, m3d::imaging::volume_to_raw(v));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--make") {
    make_phantom(argv[2]);
    return 0;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_volume FILE.nii.gz [--repeat R] [--recipe NAME] | --make FILE.nii.gz\n");
    return 2;
  }
  const std::string path = argv[1];
  std::string recipe_name = "m3d-lamed";
  int repeat = 5;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--repeat") repeat = std::stoi(argv[i + 1]);
    if (flag == "--recipe") recipe_name = argv[i + 1];
  }
  m3d::runtime_set_threads(0);
  const auto recipe = m3d::imaging::recipe_load(recipe_name);
  std::vector<double> reads, preps, totals;
  for (int r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    const auto volume = m3d::imaging::volume_from_raw(m3d::imaging::volume_read(path));
    const double read = seconds_since(start);
    const auto mid = std::chrono::steady_clock::now();
    const auto prepared = m3d::imaging::prepare(volume, recipe.ops);
    const double prep = seconds_since(mid);
    reads.push_back(read), preps.push_back(prep), totals.push_back(read + prep);
    if (r == 0) std::fprintf(stderr, "output %s\n", prepared.volume.voxels.sizes().vec().size() == 3 ? "ok" : "?");
  }
  std::printf("{\"impl\": \"m3d\", \"threads\": %d, \"read_s\": %.3f, \"recipe_s\": %.3f, \"total_s\": %.3f, \"repeat\": %d}\n", at::get_num_threads(),
              median(reads), median(preps), median(totals), repeat);
  return 0;
}
