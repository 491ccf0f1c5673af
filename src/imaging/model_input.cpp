#include "imaging/model_input.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "imaging/preprocess.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/tensor.h"
#include "m3d/error.h"

namespace m3d::imaging {

at::Tensor model_input_load(const std::string& path, const std::string& key) {
  at::Tensor volume;
  if (std::filesystem::path(path).extension() == ".npy") {
    volume = io::tensor_from_record(io::npy_read(path).array);
  } else {
    const io::Checkpoint file = io::checkpoint_open(path);
    if (key.empty()) {
      if (file.tensors.size() != 1) {
        fail("{}: holds {} tensors; say which one is the image (e.g. --image-key images)", path, file.tensors.size());
      }
      volume = io::tensor_from_record(file.tensors.begin()->second);
    } else {
      volume = io::tensor_from_record(file.tensor(key));
    }
  }
  if (volume.scalar_type() == at::kBool) fail("{}: a boolean array is not an image", path);
  volume = volume.to(at::kFloat);
  while (volume.dim() > 3 && volume.size(0) == 1) volume = volume.squeeze(0);
  if (volume.dim() != 3) {
    fail("{}: expected a D x H x W volume (optionally with leading 1s), got shape [{}]", path,
         fmt::join(volume.sizes(), ", "));
  }
  if (!at::isfinite(volume).all().item<bool>()) fail("{}: the volume contains NaN or infinite voxels", path);
  return volume.view({1, 1, volume.size(0), volume.size(1), volume.size(2)}).contiguous();
}

at::Tensor model_input_from_path(const std::string& path, const std::string& key, const std::string& recipe,
                                 const std::string& checkpoint_dir) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".npy" || ext == ".safetensors") return model_input_load(path, key);
  std::string name = recipe;
  if (name.empty() || name == "auto") {
    name = std::filesystem::exists(checkpoint_dir + "/m3d_recipe.json") ? checkpoint_dir + "/m3d_recipe.json" : "m3d-lamed";
  }
  const Prepared p = prepare(volume_from_raw(volume_read(path)), recipe_load(name).ops);
  const at::Tensor& v = p.volume.voxels;
  return v.view({1, 1, v.size(0), v.size(1), v.size(2)}).contiguous();
}

}  // namespace m3d::imaging
