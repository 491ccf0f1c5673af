// m3d volume info | prep | back: look at a scan, prepare it as a model expects
// (with a preview of what the model sees), and map model-space masks and boxes
// back onto the scan.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <fstream>

#include "commands.h"
#include "core/strings.h"
#include "imaging/model_input.h"
#include "imaging/preprocess.h"
#include "io/atomic_file.h"
#include "io/json_util.h"
#include "io/npy.h"
#include "m3d/error.h"

namespace m3d::cli {
namespace {

using imaging::Prepared;
using imaging::Volume;
using json = nlohmann::json;

imaging::ReadOptions read_options(const std::string& series, int64_t max_voxels) {
  imaging::ReadOptions o;
  o.series = series;
  if (max_voxels > 0) o.max_voxels = max_voxels;
  return o;
}

json info_json(const imaging::RawVolume& raw, const Volume& v) {
  const at::Tensor f = v.voxels.to(at::kDouble);
  json out = {{"path", raw.info.path},
              {"format", raw.info.format},
              {"size_ijk", raw.size},
              {"model_order_dhw", {raw.size[2], raw.size[1], raw.size[0]}},
              {"dtype", std::string(dtype_name(raw.dtype))},
              {"spacing_mm", raw.geometry.spacing},
              {"origin_lps_mm", raw.geometry.origin},
              {"direction", raw.geometry.direction},
              {"axcodes", raw.geometry.axcodes()},
              {"min", f.min().item<double>()},
              {"max", f.max().item<double>()},
              {"mean", f.mean().item<double>()}};
  if (!raw.info.modality.empty()) out["modality"] = raw.info.modality;
  if (!raw.info.series_uid.empty()) out["series_uid"] = raw.info.series_uid;
  if (!raw.info.series_description.empty()) out["series_description"] = raw.info.series_description;
  if (raw.info.rescale_slope != 1 || raw.info.rescale_intercept != 0) out["rescale"] = {raw.info.rescale_slope, raw.info.rescale_intercept};
  if (raw.info.frames > 1) out["frames"] = raw.info.frames;
  if (!raw.info.warnings.empty()) out["warnings"] = raw.info.warnings;
  return out;
}

// The three mid planes of a (D, H, W) volume side by side (axial H x W, coronal
// D x W, sagittal D x H), min-max scaled to 8 bits.
void write_preview(const std::string& path, const at::Tensor& volume) {
  const at::Tensor v = volume.to(at::kFloat);
  const float lo = v.min().item<float>(), hi = v.max().item<float>();
  const at::Tensor scaled = ((v - lo) / std::max(hi - lo, 1e-8f) * 255.0f).round().clamp(0, 255).to(at::kByte);
  const int64_t D = v.size(0), H = v.size(1), W = v.size(2);
  const std::vector<at::Tensor> planes = {scaled[D / 2], scaled.select(1, H / 2), scaled.select(2, W / 2)};
  int64_t height = 0, width = 0;
  for (const auto& p : planes) height = std::max(height, p.size(0)), width += p.size(1) + 4;
  std::vector<uint8_t> canvas(static_cast<size_t>(height * width), 0);
  int64_t x0 = 0;
  for (const auto& p : planes) {
    const at::Tensor c = p.contiguous();
    const uint8_t* data = c.data_ptr<uint8_t>();
    for (int64_t r = 0; r < c.size(0); ++r) std::copy(data + r * c.size(1), data + (r + 1) * c.size(1), canvas.begin() + r * width + x0);
    x0 += c.size(1) + 4;
  }
  imaging::png_write(path, width, height, canvas);
}

std::array<double, 6> parse_box(const std::string& text) {
  std::array<double, 6> box{};
  std::string s = text;
  for (char& c : s) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  std::istringstream in(s);
  for (double& v : box) {
    if (!(in >> v)) fail("--box: expected six numbers like \"[0.1, 0.2, 0.3, 0.5, 0.6, 0.7]\", got \"{}\"", text);
  }
  std::string rest;
  if (in >> rest) fail("--box: more than six numbers in \"{}\"", text);
  for (int axis = 0; axis < 3; ++axis) {
    if (!(box[axis] >= 0 && box[axis + 3] <= 1 && box[axis] <= box[axis + 3])) {
      fail("--box \"{}\": each corner must lie in [0, 1] and the first corner may not exceed the second ({} > {} on axis {})", text, box[axis], box[axis + 3],
           axis);
    }
  }
  return box;
}

}  // namespace

void add_volume(CLI::App& app) {
  CLI::App* volume = app.add_subcommand("volume", "Medical volumes: inspect, prepare for a model, map results back");
  volume->require_subcommand(1);

  struct Common {
    std::string path, series;
    int64_t max_voxels = 0;
    bool json = false;
  };
  auto add_common = [](CLI::App* cmd, Common& c) {
    cmd->add_option("path", c.path, "NIfTI / NRRD / MHA file, DICOM file or directory, M3D .npy, or a folder of slice PNGs")->required();
    cmd->add_option("--series", c.series, "DICOM directory: the SeriesInstanceUID to read (default: the series with most slices)");
    cmd->add_option("--max-voxels", c.max_voxels, "Refuse larger volumes (default 2^31)");
  };

  auto info = std::make_shared<Common>();
  CLI::App* info_cmd = volume->add_subcommand("info", "Size, spacing, orientation, value range, DICOM series");
  add_common(info_cmd, *info);
  info_cmd->add_flag("--json", info->json, "Print JSON");
  info_cmd->callback([info] {
    const imaging::RawVolume raw = imaging::volume_read(info->path, read_options(info->series, info->max_voxels));
    json out = info_json(raw, imaging::volume_from_raw(raw));
    if (raw.info.format == "dicom" && std::filesystem::is_directory(info->path)) {
      json list = json::array();
      for (const auto& s : imaging::dicom_series_list(info->path)) {
        list.push_back({{"uid", s.uid}, {"description", s.description}, {"modality", s.modality}, {"files", s.files}});
      }
      out["series"] = list;
    }
    if (info->json) {
      std::printf("%s\n", out.dump(2).c_str());
      return;
    }
    std::printf("%s (%s)\n", raw.info.path.c_str(), raw.info.format.c_str());
    std::printf("  voxels      %lld x %lld x %lld (i, j, k); model order D x H x W = %lld x %lld x %lld; %s\n", static_cast<long long>(raw.size[0]),
                static_cast<long long>(raw.size[1]), static_cast<long long>(raw.size[2]), static_cast<long long>(raw.size[2]),
                static_cast<long long>(raw.size[1]), static_cast<long long>(raw.size[0]), std::string(dtype_name(raw.dtype)).c_str());
    std::printf("  spacing     %s mm\n", fmt::format("{:.4g}", fmt::join(raw.geometry.spacing, " x ")).c_str());
    std::printf("  origin      %s mm (LPS)\n", fmt::format("{:.4g}", fmt::join(raw.geometry.origin, ", ")).c_str());
    std::printf("  orientation %s (nibabel axcodes of i, j, k)\n", raw.geometry.axcodes().c_str());
    std::printf("  values      %.6g to %.6g, mean %.6g%s\n", out["min"].get<double>(), out["max"].get<double>(), out["mean"].get<double>(),
                raw.info.modality == "CT" ? " (HU)" : "");
    if (out.contains("modality")) std::printf("  modality    %s\n", raw.info.modality.c_str());
    if (out.contains("frames")) std::printf("  frames      %lld (the first is read)\n", static_cast<long long>(raw.info.frames));
    for (const auto& w : raw.info.warnings) std::printf("  warning     %s\n", w.c_str());
    if (out.contains("series")) {
      std::printf("  series      (--series UID to choose)\n");
      for (const auto& s : out["series"]) {
        std::printf("    %s  %s  %s  %lld files\n", s["uid"].get<std::string>().c_str(), s["modality"].get<std::string>().c_str(),
                    s["description"].get<std::string>().c_str(), static_cast<long long>(s["files"].get<int64_t>()));
      }
    }
  });

  struct PrepOptions : Common {
    std::string recipe = "m3d-lamed", output, preview, map;
  };
  auto prep = std::make_shared<PrepOptions>();
  CLI::App* prep_cmd = volume->add_subcommand("prep", "Prepare a scan as a model expects it (a recipe), optionally with a preview PNG");
  add_common(prep_cmd, *prep);
  prep_cmd->add_option("--recipe", prep->recipe, "Built-in recipe (m3d-lamed, med3dvlm), a recipe .json, or a checkpoint directory with m3d_recipe.json")
      ->capture_default_str();
  prep_cmd->add_option("-o,--output", prep->output, "out.npy (1 x D x H x W float32, as M3D-Data) or out.nii.gz (with the model grid's geometry)")->required();
  prep_cmd->add_option("--preview", prep->preview, "PNG of the three mid planes of what the model will see");
  prep_cmd->add_option("--map", prep->map, "JSON of the way back to the scan (for m3d volume back)");
  prep_cmd->callback([prep] {
    for (const std::string* out : {&prep->output, &prep->preview, &prep->map}) {  // all or nothing: none written if one cannot be
      if (!out->empty()) io::require_directory_of(*out);
    }
    const imaging::Recipe recipe = imaging::recipe_load(prep->recipe);
    imaging::RawVolume raw = imaging::volume_read(prep->path, read_options(prep->series, prep->max_voxels));
    for (const auto& w : raw.info.warnings) std::fprintf(stderr, "warning: %s: %s\n", prep->path.c_str(), w.c_str());
    Prepared p = imaging::prepare(imaging::volume_from_raw(std::move(raw)), recipe.ops);
    const at::Tensor& v = p.volume.voxels;
    if (ends_with(prep->output, ".npy")) {
      const at::Tensor c = v.contiguous();
      io::npy_write(prep->output, DType::F32, {1, v.size(0), v.size(1), v.size(2)}, c.data_ptr<float>());
    } else {
      imaging::volume_write(prep->output, imaging::volume_to_raw(p.volume));
    }
    if (!prep->preview.empty()) write_preview(prep->preview, v);
    if (!prep->map.empty()) {
      json map = imaging::prepared_map_to_json(p);
      map["recipe"] = json::parse(imaging::recipe_to_json(recipe));
      io::write_file_atomic(prep->map, map.dump(2) + "\n");
    }
    std::printf("%s: %s -> %lld x %lld x %lld (D x H x W), values %.4g to %.4g\n", prep->output.c_str(), recipe.name.c_str(), static_cast<long long>(v.size(0)),
                static_cast<long long>(v.size(1)), static_cast<long long>(v.size(2)), v.min().item<double>(), v.max().item<double>());
  });

  struct BackOptions {
    std::string map, input, output, box;
    bool linear = false;
  };
  auto back = std::make_shared<BackOptions>();
  CLI::App* back_cmd = volume->add_subcommand("back", "Map a model-space mask / probabilities or a box back onto the original scan");
  back_cmd->add_option("--map", back->map, "The JSON written by m3d volume prep --map")->required();
  back_cmd->add_option("--mask", back->input, "Model-space volume (.npy 1 x D x H x W or D x H x W, or a safetensors tensor)");
  back_cmd->add_option("-o,--output", back->output, "Output .nii.gz / .nrrd on the original grid (uint8 mask, or float with --linear)");
  back_cmd->add_flag("--linear", back->linear, "Trilinear sampling (probabilities, logits) instead of nearest (labels)");
  back_cmd->add_option("--box", back->box, "A box as M3D prints it: [d1, h1, w1, d2, h2, w2] in [0, 1]");
  back_cmd->callback([back] {
    if (back->input.empty() == back->box.empty()) fail("m3d volume back: give --mask (with -o) or --box");
    const Prepared p = imaging::prepared_map_from_json(io::json_read_file(back->map), back->map);
    if (!back->box.empty()) {
      const auto b = imaging::box_to_original(p, parse_box(back->box));
      const json out = {{"index_min_ijk", b.index_min}, {"index_max_ijk", b.index_max}, {"mm_min_lps", b.mm_min}, {"mm_max_lps", b.mm_max}};
      std::printf("%s\n", out.dump(2).c_str());
      return;
    }
    if (back->output.empty()) fail("m3d volume back: --mask needs -o/--output");
    const at::Tensor model = imaging::model_input_load(back->input).squeeze(0).squeeze(0);
    at::Tensor original = imaging::to_original_grid(p, model, !back->linear);
    Volume out;
    out.voxels = back->linear ? original : original.round().clamp(0, 255).to(at::kByte);
    out.geometry = p.original_geometry;
    imaging::volume_write(back->output, imaging::volume_to_raw(out));
    std::printf("%s: %lld x %lld x %lld on the grid of %s\n", back->output.c_str(), static_cast<long long>(p.original_size[0]),
                static_cast<long long>(p.original_size[1]), static_cast<long long>(p.original_size[2]), p.volume.info.path.c_str());
  });
}

}  // namespace m3d::cli
