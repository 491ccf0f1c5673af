// synth_check (synth.h): reads a folder that synth_write wrote and checks that the
// report, the masks, the boxes, the VQA answers and the referring expressions agree
// with each study's truth.json.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "data/synth.h"
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

// One M3D_Cap.json item: its image is complete, and its report names exactly the
// findings of its truth, as they are in the masks.
void check_study(const std::string& dir, const json& item, std::map<std::string, json>& truth_by_image, std::vector<std::string>& problems) {
  static const std::regex sentence(
      R"((\d+) mm (cyst|hypodense mass|hyperdense mass|calcification|lung nodule|ground-glass nodule|pleural effusion|kidney stone) in the ((left|right) )?(\w+))");
  const std::string image = item.at("image");
  const std::string folder = dir + "/" + fs::path(image).parent_path().string();
  const json truth = io::json_read_file(folder + "/truth.json");
  truth_by_image[image] = truth;
  const std::string id = truth.at("id");
  try {  // the image itself: complete, and on the grid of its masks
    const io::NpyFile volume = io::npy_read(dir + "/" + image);
    if (volume.array.shape != std::vector<int64_t>{1, D, H, W}) {
      problems.push_back(fmt::format("{}: {} has shape [{}], expected [1, {}, {}, {}]", id, image, fmt::join(volume.array.shape, ", "), D, H, W));
    }
  } catch (const Error& e) {
    problems.push_back(fmt::format("{}: {}", id, e.what()));
    return;
  }
  std::ifstream in(dir + "/" + item.at("text").get<std::string>());
  const std::string report((std::istreambuf_iterator<char>(in)), {});
  const io::NpyFile lesions = io::npy_read(folder + "/lesions.npy"), organs = io::npy_read(folder + "/organs.npy");
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
  check_letters(letters, questions, problems);
  return problems;
}

}  // namespace m3d::data
