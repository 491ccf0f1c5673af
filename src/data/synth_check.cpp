// synth_check (synth.h): reads a folder that synth_write wrote and checks that the
// report, the masks, the boxes, the VQA answers and the referring expressions agree
// with each study's truth.json, and that every array it wrote (image, label maps, the
// M3D-Seg masks, the --nifti copies) reads back whole with the shape and values written.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "data/synth.h"
#include "imaging/volume_io.h"
#include "io/csv.h"
#include "io/json_util.h"
#include "io/npy.h"
#include "m3d/error.h"
#include "text/box.h"

namespace m3d::data {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int64_t D = kSynthDepth, H = kSynthHeight, W = kSynthWidth;

// One finding the report names (`match`: the sentence's size, type, side and organ) is
// in the lesion masks, in its organ, at its size, with its box. Returns its label, or
// -1 when the truth has no such finding.
int64_t check_named_finding(const std::smatch& m, const std::string& id, const json& truth, const io::NpyFile& lesions, const io::NpyFile& organs,
                            std::vector<std::string>& problems) {
  const auto spacing = truth.at("spacing_dhw_mm").get<std::array<double, 3>>();
  const double size = std::stod(m[1]);
  const std::string type = m[2], side = m[4], organ = m[5];
  const json* match = nullptr;
  for (const auto& f : truth.at("findings")) {
    if (f.at("type") == type && f.at("organ") == organ && f.at("side") == side) match = &f;
  }
  if (match == nullptr) {
    problems.push_back(fmt::format("{}: the report names a {} in the {} that the truth does not have", id, type, (side.empty() ? "" : side + " ") + organ));
    return -1;
  }
  const int64_t label = match->at("label");
  std::vector<std::array<int64_t, 3>> voxels;
  int64_t in_organ = 0;
  const auto& names = organ_names();
  const uint8_t organ_label = static_cast<uint8_t>(std::find(names.begin(), names.end(), organ) - names.begin() + 1);
  std::array<int64_t, 3> lo{D, H, W}, hi{-1, -1, -1};
  for (int64_t n = 0; n < D * H * W; ++n) {
    if (lesions.array.data[n] != label) continue;
    const int64_t idx[3] = {n / (H * W), (n / W) % H, n % W};
    for (int a = 0; a < 3; ++a) lo[a] = std::min(lo[a], idx[a]), hi[a] = std::max(hi[a], idx[a]);
    in_organ += organs.array.data[n] == organ_label;
    voxels.push_back({idx[0], idx[1], idx[2]});
  }
  if (voxels.empty()) {
    problems.push_back(fmt::format("{}: the {} of the report has no voxels in lesions.npy", id, type));
    return label;
  }
  if (in_organ * 2 < static_cast<int64_t>(voxels.size())) problems.push_back(fmt::format("{}: the {} lies outside the {}", id, type, organ));
  double extent = 0, tolerance = 0;
  for (int a = 0; a < 3; ++a) {
    extent = std::max(extent, static_cast<double>(hi[a] - lo[a] + 1) * spacing[a]);
    tolerance = std::max(tolerance, spacing[a]);
  }
  if (std::abs(extent - size) > tolerance + 0.5) {
    problems.push_back(fmt::format("{}: the report says {} mm for the {}, the mask measures {:.1f} mm", id, size, type, extent));
  }
  // The box equals the mask's box.
  std::vector<uint8_t> mask(static_cast<size_t>(D * H * W), 0);
  for (const auto& v : voxels) mask[static_cast<size_t>((v[0] * H + v[1]) * W + v[2])] = 1;
  const auto box = text::mask_to_box(mask, D, H, W);
  const auto want = match->at("box").get<std::array<double, 6>>();
  if (!box || *box != want) problems.push_back(fmt::format("{}: the box of the {} is not its mask's box", id, type));
  return label;
}

// A label map as synth writes it (lesions.npy, organs.npy): uint8 (1, D, H, W) with labels
// 0..max_label. What is wrong goes to `problems`.
bool check_label_map(const io::NpyFile& f, const std::string& name, int64_t max_label, const std::string& id, std::vector<std::string>& problems) {
  if (f.array.dtype != DType::U8 || f.array.shape != std::vector<int64_t>{1, D, H, W}) {
    problems.push_back(
        fmt::format("{}: {} is {} {}, expected U8 [1, {}, {}, {}]", id, name, dtype_name(f.array.dtype), io::shape_string(f.array.shape), D, H, W));
    return false;
  }
  const uint8_t* v = f.array.data;
  const uint8_t* over = std::find_if(v, v + D * H * W, [&](uint8_t x) { return x > max_label; });
  if (over != v + D * H * W) {
    problems.push_back(fmt::format("{}: {} has label {} at voxel {}; the study's labels go up to {}", id, name, *over, over - v, max_label));
    return false;
  }
  return true;
}

// The --nifti copies of a study, when it has them: complete, on the study's grid with its
// spacing, the label maps equal to the .npy ones, and the HU volume equal to the image
// up to the image's min-max scaling (both come from the same HU; the NIfTI's are rounded).
void check_nifti(const std::string& folder, const std::string& id, const json& truth, const io::NpyFile* image, const io::NpyFile& lesions,
                 const io::NpyFile& organs, std::vector<std::string>& problems) {
  const std::array<const char*, 3> names = {"ct.nii.gz", "lesions.nii.gz", "organs.nii.gz"};
  std::error_code ec;
  if (std::none_of(names.begin(), names.end(), [&](const char* n) { return fs::exists(folder + "/" + n, ec); })) return;
  const auto spacing = truth.at("spacing_dhw_mm").get<std::array<double, 3>>();
  for (const std::string name : names) {
    const std::string path = folder + "/" + name;
    if (!fs::exists(path, ec)) {
      problems.push_back(fmt::format("{}: {}: missing (the study has the other NIfTI files)", id, path));
      continue;
    }
    RawVolume v;
    try {
      v = imaging::volume_read(path);
    } catch (const Error& e) {
      problems.push_back(fmt::format("{}: {}", id, e.what()));
      continue;
    }
    const DType want = name == "ct.nii.gz" ? DType::I16 : DType::U8;
    if (v.dtype != want || v.size != std::array<int64_t, 3>{W, H, D}) {
      problems.push_back(fmt::format("{}: {}: {} {} x {} x {}, expected {} {} x {} x {}", id, path, dtype_name(v.dtype), v.size[0], v.size[1], v.size[2],
                                     dtype_name(want), W, H, D));
      continue;
    }
    for (int a = 0; a < 3; ++a) {
      if (std::abs(v.geometry.spacing[a] - spacing[2 - a]) > 1e-3) {
        problems.push_back(fmt::format("{}: {}: spacing {} mm along axis {}, the truth says {} mm", id, path, v.geometry.spacing[a], a, spacing[2 - a]));
      }
    }
    const size_t n = static_cast<size_t>(D * H * W);
    if (want == DType::U8) {
      const uint8_t* npy = (name == "lesions.nii.gz" ? lesions : organs).array.data;
      const auto diff = std::mismatch(v.data.begin(), v.data.end(), npy);
      if (diff.first != v.data.end()) {
        problems.push_back(fmt::format("{}: {}: voxel {} is {}, {} has {}", id, path, diff.first - v.data.begin(), *diff.first,
                                       name == "lesions.nii.gz" ? "lesions.npy" : "organs.npy", *diff.second));
      }
      continue;
    }
    if (image == nullptr) continue;  // the image's own problem is reported
    std::vector<int16_t> hu(n);
    std::vector<float> unit(n);
    std::memcpy(hu.data(), v.data.data(), n * sizeof(int16_t));
    std::memcpy(unit.data(), image->array.data, n * sizeof(float));
    const auto [lo, hi] = std::minmax_element(hu.begin(), hu.end());
    for (size_t i = 0; i < n; ++i) {
      // Rounding moves each HU, the minimum and the maximum by at most 0.5: 1 HU in all.
      const double expected = *lo + static_cast<double>(unit[i]) * (*hi - *lo);
      if (std::abs(hu[i] - expected) > 1.5) {
        problems.push_back(fmt::format("{}: {}: voxel {} is {} HU, the image says {:.1f}", id, path, i, hu[i], expected));
        break;
      }
    }
  }
}

// One M3D_Cap.json item: its image and label maps are complete, its report names exactly
// the findings of its truth, as they are in the masks, and its NIfTI copies agree.
void check_study(const std::string& dir, const json& item, std::map<std::string, json>& truth_by_image, std::vector<std::string>& problems) {
  static const std::regex sentence(
      R"((\d+) mm (cyst|hypodense mass|hyperdense mass|calcification|lung nodule|ground-glass nodule|pleural effusion|kidney stone) in the ((left|right) )?(\w+))");
  const std::string image = item.at("image");
  const std::string rel = fs::path(image).parent_path().string(), folder = dir + "/" + rel;
  const json truth = io::json_read_file(folder + "/truth.json");
  truth_by_image[image] = truth;
  const std::string id = truth.at("id");
  io::NpyFile volume, lesions, organs;
  try {  // the image itself: complete, and on the grid of its masks
    volume = io::npy_read(dir + "/" + image);
    lesions = io::npy_read(folder + "/lesions.npy");
    organs = io::npy_read(folder + "/organs.npy");
  } catch (const Error& e) {
    problems.push_back(fmt::format("{}: {}", id, e.what()));
    return;
  }
  const bool image_ok = volume.array.dtype == DType::F32 && volume.array.shape == std::vector<int64_t>{1, D, H, W};
  if (!image_ok) {
    problems.push_back(
        fmt::format("{}: {} is {} {}, expected F32 [1, {}, {}, {}]", id, image, dtype_name(volume.array.dtype), io::shape_string(volume.array.shape), D, H, W));
  }
  const bool lesions_ok = check_label_map(lesions, rel + "/lesions.npy", static_cast<int64_t>(truth.at("findings").size()), id, problems);
  const bool organs_ok = check_label_map(organs, rel + "/organs.npy", static_cast<int64_t>(organ_names().size()), id, problems);
  if (!lesions_ok || !organs_ok) return;
  check_nifti(folder, id, truth, image_ok ? &volume : nullptr, lesions, organs, problems);
  std::ifstream in(dir + "/" + item.at("text").get<std::string>());
  const std::string report((std::istreambuf_iterator<char>(in)), {});
  // Every finding the report names is in the masks, in its organ and side, at its size.
  std::set<int64_t> named;
  for (auto it = std::sregex_iterator(report.begin(), report.end(), sentence); it != std::sregex_iterator(); ++it) {
    const int64_t label = check_named_finding(*it, id, truth, lesions, organs, problems);
    if (label >= 0) named.insert(label);
  }
  for (const auto& f : truth.at("findings")) {
    if (!named.count(f.at("label").get<int64_t>())) problems.push_back(fmt::format("{}: the report does not name its {}", id, f.at("type").get<std::string>()));
    if (f.at("type") == "pleural effusion" && report.find("No pleural effusion") != std::string::npos) {
      problems.push_back(fmt::format("{}: the report denies a pleural effusion the truth has", id));
    }
  }
}

// One M3D-Seg mask (mask_<c>.npy of organ class c): binary uint8 (1, D, H, W) equal to the
// organ in the study's organs.npy, or a (1, 1, 1, 1) zero when the organ is not in view.
void check_seg_mask(const std::string& dir, const std::string& image, const std::string& label, size_t c, const json& truth,
                    std::vector<std::string>& problems) {
  const std::string id = truth.at("id"), organ = organ_names()[c];
  io::NpyFile mask, organs;
  try {
    mask = io::npy_read(dir + "/" + label);
  } catch (const Error& e) {
    problems.push_back(fmt::format("{}: {}", id, e.what()));
    return;
  }
  try {
    organs = io::npy_read(dir + "/" + fs::path(image).parent_path().string() + "/organs.npy");
  } catch (const Error&) { return; }  // reported with its study
  if (organs.array.dtype != DType::U8 || organs.array.shape != std::vector<int64_t>{1, D, H, W}) return;
  const auto& present = truth.at("organs");
  if (std::find(present.begin(), present.end(), organ) == present.end()) {
    const uint8_t* bytes = mask.array.data;
    if (mask.array.shape != std::vector<int64_t>{1, 1, 1, 1} || std::any_of(bytes, bytes + mask.array.nbytes(), [](uint8_t b) { return b != 0; })) {
      problems.push_back(fmt::format("{}: {}: the {} is not in view, expected a (1, 1, 1, 1) zero, got {} {}", id, label, organ, dtype_name(mask.array.dtype),
                                     io::shape_string(mask.array.shape)));
    }
    return;
  }
  if (mask.array.dtype != DType::U8 || mask.array.shape != std::vector<int64_t>{1, D, H, W}) {
    problems.push_back(
        fmt::format("{}: {} is {} {}, expected U8 [1, {}, {}, {}]", id, label, dtype_name(mask.array.dtype), io::shape_string(mask.array.shape), D, H, W));
    return;
  }
  const uint8_t organ_label = static_cast<uint8_t>(c + 1);
  for (int64_t n = 0; n < D * H * W; ++n) {
    const uint8_t m = mask.array.data[n];
    if (m > 1 || (m == 1) != (organs.array.data[n] == organ_label)) {
      problems.push_back(
          fmt::format("{}: {}: voxel {} is {}, the {} of organs.npy says {}", id, label, n, m, organ, organs.array.data[n] == organ_label ? 1 : 0));
      return;
    }
  }
}

// The test split in the M3D-Seg layout (M3D_Seg_npy/synth/synth.json): one mask per organ
// class for every test study, each as check_seg_mask wants it.
void check_seg(const std::string& dir, const json& cap, const std::map<std::string, json>& truth_by_image, std::vector<std::string>& problems) {
  const std::string index = dir + "/M3D_Seg_npy/synth/synth.json";
  if (!fs::exists(index)) {
    problems.push_back(fmt::format("{}: missing", index));
    return;
  }
  const json seg = io::json_read_file(index);
  const auto& names = organ_names();
  std::map<std::string, size_t> masks;  // per image
  for (const char* split : {"train", "test"}) {
    for (const auto& entry : seg.at(split)) {
      const std::string image = entry.at("image"), label = entry.at("label");
      const auto found = truth_by_image.find(image);
      if (found == truth_by_image.end()) {
        problems.push_back(fmt::format("{}: {} is a mask of an image that is not in M3D_Cap.json", index, label));
        continue;
      }
      size_t c = 0;
      while (c < names.size() && fs::path(label).filename() != fmt::format("mask_{}.npy", c)) ++c;
      if (c == names.size()) {
        problems.push_back(fmt::format("{}: {} is not named mask_<organ class>.npy", found->second.at("id").get<std::string>(), label));
        continue;
      }
      ++masks[image];
      check_seg_mask(dir, image, label, c, found->second, problems);
    }
  }
  for (const auto& item : cap.at("test")) {
    const std::string image = item.at("image");
    const auto found = truth_by_image.find(image);
    if (found != truth_by_image.end() && masks[image] != names.size()) {
      problems.push_back(fmt::format("{}: {} lists {} masks for {}, expected one per organ class ({})", found->second.at("id").get<std::string>(), index,
                                     masks[image], image, names.size()));
    }
  }
}

// VQA answers agree with the truth; counts the answer letters.
void check_vqa(const std::string& dir, const std::map<std::string, json>& truth_by_image, std::map<char, int64_t>& letters, int64_t& questions,
               std::vector<std::string>& problems) {
  for (const char* name : {"M3D_VQA_train.csv", "M3D_VQA_val.csv", "M3D_VQA_test.csv"}) {
    const io::CsvTable t = io::csv_read(dir + "/M3D-VQA/" + name);
    for (const auto& row : t.rows) {
      const json& truth = truth_by_image.at(row[static_cast<size_t>(t.column("Image Path"))]);
      const int type = std::stoi(row[static_cast<size_t>(t.column("Question Type"))]);
      const std::string answer = row[static_cast<size_t>(t.column("Answer"))], choice = row[static_cast<size_t>(t.column("Answer Choice"))];
      const std::string question = row[static_cast<size_t>(t.column("Question"))];
      const int chosen = choice.empty() ? -1 : choice[0] - 'A';
      if (chosen < 0 || chosen > 3 || row[static_cast<size_t>(t.column(std::string("Choice ") + choice))] != answer) {
        problems.push_back(fmt::format("{}: answer choice {} is not the answer '{}'", truth.at("id").get<std::string>(), choice, answer));
      }
      auto lower = [](std::string s) {
        for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return s;
      };
      bool ok = true;
      if (type == 1) ok = lower(answer) == truth.at("plane").get<std::string>();
      if (type == 2) ok = lower(answer) == truth.at("phase").get<std::string>();
      if (type >= 3) {
        ok = false;
        for (const auto& f : truth.at("findings")) {
          const std::string t = f.at("type"), organ = f.at("organ"), side = f.at("side");
          if (type == 3) ok |= question.find(t) != std::string::npos && lower(answer) == organ;
          if (type == 4) ok |= question.find((side.empty() ? "" : side + " ") + organ + "?") != std::string::npos && lower(answer) == t;
          if (type == 5) ok |= question.find(t) != std::string::npos && lower(answer) == side;
        }
      }
      if (!ok) problems.push_back(fmt::format("{}: '{}' answered '{}' disagrees with the truth", truth.at("id").get<std::string>(), question, answer));
      ++letters[choice.empty() ? '?' : choice[0]];
      ++questions;
    }
  }
}

// Referring expressions point at a finding of their study.
void check_refseg(const std::string& dir, const std::map<std::string, json>& truth_by_image, std::vector<std::string>& problems) {
  for (const char* name : {"M3D_RefSeg_train.csv", "M3D_RefSeg_test.csv"}) {
    const std::string path = dir + "/M3D_RefSeg_npy/" + name;
    if (!fs::exists(path)) {
      problems.push_back(fmt::format("{}: missing", path));
      continue;
    }
    const io::CsvTable t = io::csv_read(path);
    for (const auto& row : t.rows) {
      const auto found = truth_by_image.find(row[static_cast<size_t>(t.column("Image"))]);
      if (found == truth_by_image.end()) {
        problems.push_back(fmt::format("{}: a row names an image that is not in M3D_Cap.json", name));
        continue;
      }
      const int64_t label = std::stoll(row[static_cast<size_t>(t.column("Mask_ID"))]);
      bool ok = false;
      for (const auto& f : found->second.at("findings")) {
        const std::string side = f.at("side"), organ = f.at("organ");
        ok |= f.at("label").get<int64_t>() == label &&
              row[static_cast<size_t>(t.column("Question"))].find((side.empty() ? "" : side + " ") + organ) != std::string::npos;
      }
      if (!ok)
        problems.push_back(
            fmt::format("{}: the referring expression for region {} does not match a finding", found->second.at("id").get<std::string>(), label));
    }
  }
}

// The answer letter is drawn uniformly: Pearson's chi-square against 1/4 each (3 degrees of
// freedom) rejects only at p < 0.001 (16.27), so a correct set of any size passes 999 times in 1000.
void check_letters(std::map<char, int64_t>& letters, int64_t questions, std::vector<std::string>& problems) {
  if (questions == 0) return;
  const double expected = static_cast<double>(questions) / 4;
  double chi2 = 0;
  char worst = 'A';
  for (char c : {'A', 'B', 'C', 'D'}) {
    chi2 += (letters[c] - expected) * (letters[c] - expected) / expected;
    if (std::abs(letters[c] - expected) > std::abs(letters[worst] - expected)) worst = c;
  }
  if (chi2 > 16.27) {
    problems.push_back(fmt::format("answer letter {} is {:.0f}% of {} questions: unlikely for letters drawn uniformly (chi-square {:.1f} > 16.27, p < 0.001)",
                                   worst, 100.0 * static_cast<double>(letters[worst]) / static_cast<double>(questions), questions, chi2));
  }
}

}  // namespace

std::vector<std::string> synth_check(const std::string& dir) {
  std::vector<std::string> problems;
  const json cap = io::json_read_file(dir + "/M3D_Cap_npy/M3D_Cap.json");
  std::map<std::string, json> truth_by_image;
  for (const auto& split : {"train", "validation", "test"}) {
    for (const auto& item : cap.at(split)) check_study(dir, item, truth_by_image, problems);
  }
  std::map<char, int64_t> letters;
  int64_t questions = 0;
  check_vqa(dir, truth_by_image, letters, questions, problems);
  check_refseg(dir, truth_by_image, problems);
  check_seg(dir, cap, truth_by_image, problems);
  check_letters(letters, questions, problems);
  return problems;
}

}  // namespace m3d::data
