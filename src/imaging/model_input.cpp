#include "imaging/model_input.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "imaging/preprocess.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
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
      if (file.tensors.size() != 1) { fail("{}: holds {} tensors; say which one is the image (e.g. --image-key images)", path, file.tensors.size()); }
      volume = io::tensor_from_record(file.tensors.begin()->second);
    } else {
      volume = io::tensor_from_record(file.tensor(key));
    }
  }
  if (volume.scalar_type() == at::kBool) fail("{}: a boolean array is not an image", path);
  volume = volume.to(at::kFloat);
  while (volume.dim() > 3 && volume.size(0) == 1) volume = volume.squeeze(0);
  if (volume.dim() != 3) { fail("{}: expected a D x H x W volume (optionally with leading 1s), got shape [{}]", path, fmt::join(volume.sizes(), ", ")); }
  if (volume.numel() == 0) fail("{}: empty volume (shape [{}])", path, fmt::join(volume.sizes(), ", "));
  if (!at::isfinite(volume).all().item<bool>()) fail("{}: the volume contains NaN or infinite voxels", path);
  return volume.view({1, 1, volume.size(0), volume.size(1), volume.size(2)}).contiguous();
}

at::Tensor model_input_from_path(const std::string& path, const std::string& key, const std::string& recipe, const std::string& checkpoint_dir,
                                 std::optional<Prepared>* prepared) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".npy" || ext == ".safetensors") return model_input_load(path, key);
  std::string name = recipe;
  if (name.empty() || name == "auto") {
    name = std::filesystem::exists(checkpoint_dir + "/m3d_recipe.json") ? checkpoint_dir + "/m3d_recipe.json" : "m3d-lamed";
    // A DCFormer tower is Med3DVLM's, trained on 128 x 256 x 256 (med3dvlm_spec.md §5.1): the
    // VLM names it in vision_tower, DCFormer_SigLIP (dec_clip) in vision_encoder.
    const std::string config = checkpoint_dir + "/config.json";
    if (name == "m3d-lamed" && std::filesystem::exists(config)) {
      const auto c = io::json_read_file(config);
      if (io::json_string(c, "vision_tower", config).value_or("") == "dcformer" || io::json_string(c, "model_type", config).value_or("") == "dec_clip") {
        name = "med3dvlm";
      }
    }
  }
  const Prepared p = prepare(volume_from_raw(volume_read(path)), recipe_load(name).ops);
  const at::Tensor& v = p.volume.voxels;
  const at::Tensor input = v.view({1, 1, v.size(0), v.size(1), v.size(2)}).contiguous();
  if (prepared) *prepared = p;
  return input;
}

Volume model_mask_to_scan(const at::Tensor& mask, const Prepared& prepared) {
  Volume out;
  out.voxels = to_original_grid(prepared, mask.to(at::kFloat), true).round().clamp(0, 255).to(at::kByte).contiguous();  // as m3d volume back --mask
  out.geometry = prepared.original_geometry;
  return out;
}

void model_mask_write(const std::string& path, const at::Tensor& mask_in, const std::optional<Prepared>& prepared) {
  if (mask_in.scalar_type() != at::kByte) fail("{}: a mask must be uint8, got {}", path, c10::toString(mask_in.scalar_type()));
  at::Tensor mask = mask_in.cpu();
  while (mask.dim() > 3 && mask.size(0) == 1) mask = mask.squeeze(0);
  if (mask.dim() != 3) fail("{}: expected a D x H x W mask, got shape [{}]", path, fmt::join(mask_in.sizes(), ", "));
  if (std::filesystem::path(path).extension() == ".npy") {
    const at::Tensor out = mask.view({1, 1, mask.size(0), mask.size(1), mask.size(2)}).contiguous();
    io::npy_write(path, DType::U8, out.sizes().vec(), out.data_ptr<uint8_t>());
    return;
  }
  Volume out;
  if (prepared) {
    out = model_mask_to_scan(mask, *prepared);
  } else {
    out.voxels = mask.contiguous();
  }
  volume_write(path, volume_to_raw(out));
}

}  // namespace m3d::imaging
