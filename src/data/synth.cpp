// See synth.h. Anatomy lives in patient millimetres (x: right to left, y: anterior
// to posterior, z: inferior to superior, 0 at the diaphragm dome); the model grid is
// laid over it by region and plane. Random draws come from one splitmix64 stream per
// study, so the output depends only on (seed, index).
// synth_check is in synth_check.cpp.
#include "data/synth.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "core/progress.h"
#include "core/strings.h"
#include "imaging/preprocess.h"
#include "io/atomic_file.h"
#include "io/csv.h"
#include "io/npy.h"
#include "m3d/error.h"
#include "text/box.h"

namespace m3d::data {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int64_t D = kSynthDepth, H = kSynthHeight, W = kSynthWidth;

class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform(double lo = 0, double hi = 1) { return lo + (hi - lo) * static_cast<double>(next() >> 11) * 0x1.0p-53; }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(below(static_cast<int64_t>(v.size())))];
  }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(below(static_cast<int64_t>(i)))]);
  }

 private:
  uint64_t state_;
};

struct Ellipsoid {
  std::string organ, side;
  double c[3], r[3];  // centre and radii (x, y, z) in mm
};

// Patient coordinates of the grid: tensors broadcastable to (D, H, W).
struct Grid {
  at::Tensor x, y, z;
  std::array<double, 3> spacing_dhw;
};

Grid make_grid(const std::string& region, const std::string& plane, Random& rng, double body_rx, double body_ry) {
  const std::map<std::string, std::pair<double, double>> z_range = {{"chest", {-60, 260}}, {"abdomen", {-260, 40}}, {"chest-abdomen-pelvis", {-420, 240}}};
  const auto [z0, z1] = z_range.at(region);
  const double fov = rng.uniform(0.85, 1.05) * 2 * body_rx * 1.15;  // in-plane field of view
  auto axis = [](double lo, double hi, int64_t n) {
    return at::linspace(lo + (hi - lo) / (2.0 * static_cast<double>(n)), hi - (hi - lo) / (2.0 * static_cast<double>(n)), n, at::kFloat);
  };
  Grid g;
  const at::Tensor xs = axis(-fov / 2, fov / 2, W), ys_inplane = axis(-fov / 2 * 0.85, fov / 2 * 0.85, H);
  if (plane == "axial") {
    g.z = axis(z1, z0, D).view({D, 1, 1});  // slice 0 superior
    g.y = ys_inplane.view({1, H, 1});
    g.x = xs.view({1, 1, W});
    g.spacing_dhw = {(z1 - z0) / D, fov * 0.85 / H, fov / W};
  } else if (plane == "coronal") {
    g.y = axis(-body_ry, body_ry, D).view({D, 1, 1});
    g.z = axis(z1, z0, H).view({1, H, 1});
    g.x = xs.view({1, 1, W});
    g.spacing_dhw = {2 * body_ry / D, (z1 - z0) / H, fov / W};
  } else {  // sagittal
    g.x = axis(-body_rx * 0.9, body_rx * 0.9, D).view({D, 1, 1});
    g.z = axis(z1, z0, H).view({1, H, 1});
    g.y = axis(-fov / 2 * 0.85, fov / 2 * 0.85, W).view({1, 1, W});
    g.spacing_dhw = {1.8 * body_rx / D, (z1 - z0) / H, fov * 0.85 / W};
  }
  return g;
}

at::Tensor inside(const Grid& g, const Ellipsoid& e, double wobble, double phase) {
  const at::Tensor dx = (g.x - e.c[0]) / e.r[0], dy = (g.y - e.c[1]) / e.r[1], dz = (g.z - e.c[2]) / e.r[2];
  const at::Tensor deform = 1.0 + wobble * at::sin(dx * 2.1 + dz * 1.7 + phase) * at::cos(dy * 1.3 - phase);
  return (dx * dx + dy * dy + dz * dz) <= deform * deform;
}

// HU of each organ by phase: non-contrast, arterial, portal venous, delayed.
const std::map<std::string, std::array<double, 4>>& organ_hu() {
  static const std::map<std::string, std::array<double, 4>> hu = {
      {"lung", {-850, -850, -850, -850}}, {"heart", {40, 260, 150, 90}},  {"aorta", {40, 300, 160, 100}},  {"spine", {420, 420, 420, 420}},
      {"liver", {55, 70, 110, 80}},       {"spleen", {45, 120, 110, 80}}, {"kidney", {30, 160, 170, 120}}, {"gallbladder", {5, 5, 5, 5}},
      {"bladder", {5, 5, 5, 260}},        {"pancreas", {40, 100, 90, 70}}};
  return hu;
}

const std::vector<std::string> kPlanes = {"axial", "coronal", "sagittal"};
const std::vector<std::string> kPhases = {"non-contrast", "arterial", "portal venous", "delayed"};
const std::vector<std::string> kRegions = {"chest", "abdomen", "chest-abdomen-pelvis"};
const std::vector<std::string> kFindingTypes = {"cyst",        "hypodense mass",      "hyperdense mass",  "calcification",
                                                "lung nodule", "ground-glass nodule", "pleural effusion", "kidney stone"};

std::string capital(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

std::string where(const Finding& f) { return (f.side.empty() ? "" : f.side + " ") + f.organ; }

std::string finding_phrase(const Finding& f) { return fmt::format("a {} mm {} in the {}", static_cast<int64_t>(std::lround(f.size_mm)), f.type, where(f)); }

// Largest extent of a mask in mm.
double extent_mm(const at::Tensor& mask, const std::array<double, 3>& spacing) {
  const at::Tensor idx = mask.nonzero();
  double best = 0;
  for (int a = 0; a < 3; ++a) {
    const auto col = idx.select(1, a);
    best = std::max(best, static_cast<double>(col.max().item<int64_t>() - col.min().item<int64_t>() + 1) * spacing[a]);
  }
  return best;
}

std::array<double, 6> box_of(const at::Tensor& mask) {
  const at::Tensor bytes = mask.to(at::kByte).contiguous();
  std::vector<uint8_t> v(bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel());
  return *text::mask_to_box(v, D, H, W);
}

VqaItem closed(int type, const std::string& question, const std::string& answer, std::vector<std::string> distractors, Random& rng) {
  VqaItem q;
  q.question_type = type;
  q.question = question;
  rng.shuffle(distractors);
  std::vector<std::string> choices = {answer};
  for (const auto& d : distractors) {
    if (choices.size() < 4 && d != answer) choices.push_back(d);
  }
  while (choices.size() < 4) choices.push_back("NA");
  // The answer's letter is drawn uniformly, the distractors fill the rest in order.
  const int64_t slot = rng.below(4);
  std::swap(choices[0], choices[static_cast<size_t>(slot)]);
  for (int i = 0; i < 4; ++i) q.choices[i] = choices[static_cast<size_t>(i)];
  q.answer = answer;
  q.answer_choice = static_cast<char>('A' + slot);
  return q;
}

}  // namespace

const std::vector<std::string>& organ_names() {
  static const std::vector<std::string> names = {"lung", "heart", "aorta", "spine", "liver", "spleen", "kidney", "gallbladder", "bladder", "pancreas"};
  return names;
}

json Study::truth() const {
  json f = json::array();
  for (const auto& x : findings) {
    f.push_back({{"type", x.type}, {"organ", x.organ}, {"side", x.side}, {"size_mm", x.size_mm}, {"label", x.label}, {"box", x.box}});
  }
  json q = json::array();
  for (const auto& v : vqa) {
    q.push_back({{"type", v.question_type},
                 {"question", v.question},
                 {"choices", {v.choices[0], v.choices[1], v.choices[2], v.choices[3]}},
                 {"answer", v.answer},
                 {"answer_choice", std::string(1, v.answer_choice)}});
  }
  return {{"id", id},      {"region", region}, {"plane", plane}, {"phase", phase}, {"spacing_dhw_mm", spacing_dhw}, {"organs", organs_present},
          {"findings", f}, {"report", report}, {"vqa", q}};
}

namespace {

// An organ smaller than this is not in view; a finding needs as many free voxels to be placed.
constexpr int64_t kMinVoxels = 200;

int64_t organ_label(const std::string& organ) {
  const auto& names = organ_names();
  return static_cast<int64_t>(std::find(names.begin(), names.end(), organ) - names.begin()) + 1;
}

// Body, spine, aorta and the organs (jittered ellipsoids) on grid `g`, in HU and as
// organ labels; sets s.organs_present.
void synth_anatomy(Study& s, const Grid& g, Random& rng, int phase_index, double body_rx, double body_ry, at::Tensor& hu, at::Tensor& organs) {
  auto jitter = [&](double v, double amount) { return v + rng.uniform(-amount, amount); };
  auto grow = [&](double v) { return v * rng.uniform(0.85, 1.15); };
  std::vector<Ellipsoid> anatomy = {
      {"lung", "right", {jitter(-75, 8), jitter(-5, 6), jitter(110, 10)}, {grow(62), grow(85), grow(125)}},
      {"lung", "left", {jitter(75, 8), jitter(-5, 6), jitter(105, 10)}, {grow(58), grow(85), grow(120)}},
      {"heart", "", {jitter(15, 8), jitter(-30, 6), jitter(40, 8)}, {grow(55), grow(48), grow(50)}},
      {"liver", "", {jitter(-60, 8), jitter(0, 6), jitter(-60, 8)}, {grow(95), grow(85), grow(80)}},
      {"spleen", "", {jitter(90, 6), jitter(35, 6), jitter(-50, 8)}, {grow(35), grow(45), grow(55)}},
      {"kidney", "right", {jitter(-65, 5), jitter(55, 5), jitter(-140, 8)}, {grow(28), grow(30), grow(55)}},
      {"kidney", "left", {jitter(65, 5), jitter(55, 5), jitter(-125, 8)}, {grow(28), grow(30), grow(55)}},
      {"gallbladder", "", {jitter(-45, 5), jitter(-40, 5), jitter(-95, 6)}, {grow(16), grow(16), grow(35)}},
      {"pancreas", "", {jitter(10, 5), jitter(20, 5), jitter(-100, 6)}, {grow(60), grow(14), grow(16)}},
      {"bladder", "", {jitter(0, 5), jitter(-40, 5), jitter(-370, 8)}, {grow(45), grow(40), grow(40)}},
  };
  const double wobble = rng.uniform(0.03, 0.08), wobble_phase = rng.uniform(0, 6.28);
  hu = at::full({D, H, W}, -1000.0f);
  organs = at::zeros({D, H, W}, at::kByte);
  const at::Tensor body = (g.x / body_rx).pow(2) + (g.y / body_ry).pow(2) <= 1.0;
  const at::Tensor inner = (g.x / (body_rx - 12)).pow(2) + (g.y / (body_ry - 12)).pow(2) <= 1.0;
  hu = at::where(body.expand({D, H, W}), at::full({}, -100.0f), hu);  // fat
  hu = at::where(inner.expand({D, H, W}), at::full({}, 40.0f), hu);  // muscle and soft tissue
  auto paint = [&](const at::Tensor& mask, double value, int64_t label) {
    hu.masked_fill_(mask.expand({D, H, W}), value);
    if (label > 0) organs.masked_fill_(mask.expand({D, H, W}), static_cast<uint8_t>(label));
  };
  // Spine and aorta: cylinders along z.
  const double spine_y = body_ry - 35, spine_r = rng.uniform(16, 20);
  paint(((g.x).pow(2) + (g.y - spine_y).pow(2) <= spine_r * spine_r) & inner, organ_hu().at("spine")[phase_index], organ_label("spine"));
  const double aorta_x = jitter(12, 3), aorta_y = spine_y - spine_r - 14, aorta_r = rng.uniform(10, 14);
  paint(((g.x - aorta_x).pow(2) + (g.y - aorta_y).pow(2) <= aorta_r * aorta_r) & (g.z < 150) & (g.z > -300), organ_hu().at("aorta")[phase_index],
        organ_label("aorta"));
  for (const auto& e : anatomy) {
    const at::Tensor mask = inside(g, e, wobble, wobble_phase) & inner;
    paint(mask, organ_hu().at(e.organ)[phase_index] + rng.uniform(-5, 5), organ_label(e.organ));
  }
  for (const auto& name : organ_names()) {
    if ((organs == organ_label(name)).sum().item<int64_t>() >= kMinVoxels) s.organs_present.push_back(name);
  }
}

// Up to three findings inside organs that are in view, painted into `hu` and `lesions`.
void synth_findings(Study& s, const Grid& g, Random& rng, int phase_index, double body_ry, at::Tensor& hu, const at::Tensor& organs, at::Tensor& lesions) {
  lesions = at::zeros({D, H, W}, at::kByte);
  const int64_t wanted = rng.below(4);
  const std::map<std::string, std::vector<std::string>> where_found = {{"cyst", {"liver", "kidney", "spleen"}},
                                                                       {"hypodense mass", {"liver", "kidney", "pancreas", "spleen"}},
                                                                       {"hyperdense mass", {"liver", "kidney"}},
                                                                       {"calcification", {"liver", "spleen", "pancreas"}},
                                                                       {"lung nodule", {"lung"}},
                                                                       {"ground-glass nodule", {"lung"}},
                                                                       {"pleural effusion", {"lung"}},
                                                                       {"kidney stone", {"kidney"}}};
  for (int attempt = 0; attempt < 12 && static_cast<int64_t>(s.findings.size()) < wanted; ++attempt) {
    const std::string type = rng.pick(kFindingTypes);
    const std::string organ = rng.pick(where_found.at(type));
    if (std::find(s.organs_present.begin(), s.organs_present.end(), organ) == s.organs_present.end()) continue;
    std::string side;
    at::Tensor region_mask = organs == organ_label(organ);
    if (organ == "lung" || organ == "kidney") {
      side = rng.uniform() < 0.5 ? "right" : "left";
      region_mask = region_mask & (side == "right" ? g.x < 0 : g.x > 0);
    }
    bool duplicate = false;
    for (const auto& f : s.findings) duplicate |= f.type == type && f.organ == organ && f.side == side;
    if (duplicate) continue;
    at::Tensor mask;
    if (type == "pleural effusion") {
      const double level = rng.uniform(0.35, 0.7);  // dependent fluid: the posterior part of the lung
      mask = region_mask & (g.y > body_ry * level - 40);
    } else {
      const at::Tensor candidates = (region_mask & (lesions == 0)).nonzero();
      if (candidates.size(0) < kMinVoxels) continue;
      const at::Tensor centre = candidates[rng.below(candidates.size(0))];
      const int64_t cd = centre[0].item<int64_t>(), ch = centre[1].item<int64_t>(), cw = centre[2].item<int64_t>();
      const double cx = g.x.expand({D, H, W})[cd][ch][cw].item<double>();
      const double cy = g.y.expand({D, H, W})[cd][ch][cw].item<double>(), cz = g.z.expand({D, H, W})[cd][ch][cw].item<double>();
      const double diameter = type == "calcification" || type == "kidney stone" ? rng.uniform(4, 9) : rng.uniform(10, 40);
      const double r = diameter / 2;
      mask = ((g.x - cx).pow(2) + (g.y - cy).pow(2) + (g.z - cz).pow(2) <= r * r) & region_mask;
    }
    mask = mask & (lesions == 0);
    if (mask.sum().item<int64_t>() < 2) continue;
    const std::map<std::string, double> lesion_hu = {{"cyst", 5},
                                                     {"hypodense mass", organ_hu().at(organ)[phase_index] - 35},
                                                     {"hyperdense mass", organ_hu().at(organ)[phase_index] + 70},
                                                     {"calcification", 650},
                                                     {"lung nodule", 30},
                                                     {"ground-glass nodule", -520},
                                                     {"pleural effusion", 12},
                                                     {"kidney stone", 900}};
    Finding f;
    f.type = type;
    f.organ = organ;
    f.side = side;
    f.label = static_cast<int64_t>(s.findings.size()) + 1;
    hu.masked_fill_(mask, lesion_hu.at(type));
    lesions.masked_fill_(mask, static_cast<uint8_t>(f.label));
    f.size_mm = std::round(extent_mm(mask, s.spacing_dhw));
    f.box = box_of(mask);
    s.findings.push_back(f);
  }
}

// The report, from the truth: a sentence per finding, normal organs, then the impression.
std::string synth_report(const Study& s, Random& rng) {
  std::vector<std::string> sentences;
  for (const auto& f : s.findings) {
    sentences.push_back(rng.uniform() < 0.5 ? "There is " + finding_phrase(f) + "." : capital(finding_phrase(f)) + " is noted.");
  }
  for (const auto& organ : s.organs_present) {
    bool abnormal = false;
    for (const auto& f : s.findings) abnormal |= f.organ == organ;
    if (abnormal || organ == "aorta" || organ == "spine" || organ == "heart") continue;
    sentences.push_back(rng.uniform() < 0.5 ? fmt::format("The {} is unremarkable.", organ) : fmt::format("No focal lesion in the {}.", organ));
  }
  bool effusion = false;
  for (const auto& f : s.findings) effusion |= f.type == "pleural effusion";
  if (!effusion && std::find(s.organs_present.begin(), s.organs_present.end(), "lung") != s.organs_present.end()) {
    sentences.push_back("No pleural effusion.");
  }
  rng.shuffle(sentences);
  std::string findings_text;
  for (const auto& x : sentences) findings_text += (findings_text.empty() ? "" : " ") + x;
  std::string impression = "No acute abnormality.";
  if (!s.findings.empty()) {
    impression.clear();
    for (const auto& f : s.findings) impression += (impression.empty() ? "" : "; ") + capital(f.type) + " of the " + where(f);
    impression += ".";
  }
  return fmt::format("{} {} CT, {} phase. Findings: {} Impression: {}", capital(s.plane), s.region, s.phase, findings_text, impression);
}

// VQA from the truth (question types as M3D-VQA).
void synth_vqa(Study& s, Random& rng) {
  s.vqa.push_back(closed(1, "In which plane is this CT image taken?", capital(s.plane), {"Axial", "Coronal", "Sagittal", "Oblique"}, rng));
  std::vector<std::string> phase_choices;
  for (const auto& p : kPhases) phase_choices.push_back(capital(p));
  s.vqa.push_back(closed(2, "In which contrast phase is this CT scan acquired?", capital(s.phase), phase_choices, rng));
  if (!s.findings.empty()) {
    const Finding& f = s.findings[static_cast<size_t>(rng.below(static_cast<int64_t>(s.findings.size())))];
    std::vector<std::string> others;
    for (const auto& n : organ_names()) {
      if (n != f.organ) others.push_back(capital(n));
    }
    s.vqa.push_back(closed(3, fmt::format("Which organ contains the {}?", f.type), capital(f.organ), others, rng));
    std::vector<std::string> types;
    for (const auto& t : kFindingTypes) types.push_back(capital(t));
    s.vqa.push_back(closed(4, fmt::format("What abnormality is seen in the {}?", where(f)), capital(f.type), types, rng));
    if (!f.side.empty()) {
      s.vqa.push_back(closed(5, fmt::format("On which side is the {} located?", f.type), capital(f.side), {"Left", "Right", "Bilateral", "Midline"}, rng));
    }
  }
}

}  // namespace

Study synth_study(uint64_t seed, int64_t index, const std::vector<std::string>& regions) {
  Random rng(seed * 0x100000001B3ull + static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ull + 1);
  for (const auto& r : regions) {
    if (std::find(kRegions.begin(), kRegions.end(), r) == kRegions.end()) fail("m3d synth: unknown region '{}' (chest, abdomen, chest-abdomen-pelvis)", r);
  }
  Study s;
  s.id = fmt::format("{:06d}", index);
  s.region = rng.pick(regions.empty() ? kRegions : regions);
  s.plane = rng.pick(kPlanes);
  const int phase_index = static_cast<int>(rng.below(4));
  s.phase = kPhases[static_cast<size_t>(phase_index)];
  const double body_rx = rng.uniform(150, 185), body_ry = rng.uniform(105, 135);
  const Grid g = make_grid(s.region, s.plane, rng, body_rx, body_ry);
  s.spacing_dhw = g.spacing_dhw;
  at::Tensor hu, organs, lesions;
  synth_anatomy(s, g, rng, phase_index, body_rx, body_ry, hu, organs);
  synth_findings(s, g, rng, phase_index, body_ry, hu, organs, lesions);
  // Scanner: correlated noise, a slight in-plane blur (partial volume).
  at::Generator generator = at::detail::createCPUGenerator(seed ^ (static_cast<uint64_t>(index) << 20));
  at::Tensor noise = at::normal(0.0, 1.0, {1, 1, D, H, W}, generator);
  noise = at::avg_pool3d(noise, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}).squeeze(0).squeeze(0) * 18.0;
  hu = at::avg_pool3d(hu.unsqueeze(0).unsqueeze(0), {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, false, false).squeeze(0).squeeze(0) + noise;
  s.hu = hu.clamp(-1024, 3071).contiguous();
  s.organs = organs;
  s.lesions = lesions;
  s.report = synth_report(s, rng);
  synth_vqa(s, rng);
  return s;
}

namespace {

// What one study adds to the index files (M3D_Cap.json, the VQA, RefSeg and Seg lists).
struct StudyRows {
  json cap_entry;
  std::vector<std::vector<std::string>> vqa, refseg;
  std::vector<json> seg;
};

// Writes study i's files (image, masks, report, truth; NIfTI and M3D-Seg masks when
// asked) and returns its index rows.
StudyRows synth_write_study(const SynthOptions& o, int64_t i) {
  StudyRows out;
  const Study s = synth_study(o.seed, i, o.regions);
  const std::string rel = fmt::format("M3D_Cap_npy/synth/{}", s.id);
  fs::create_directories(o.output + "/" + rel);
  const std::string image = fmt::format("{}/{}_{}.npy", rel, s.plane,
                                        s.phase == "non-contrast"    ? "non_contrast"
                                        : s.phase == "portal venous" ? "portal_venous"
                                                                     : s.phase);
  at::Tensor unit = s.hu - s.hu.min();
  unit = (unit / std::max(unit.max().item<double>(), 1e-8)).contiguous();
  io::npy_write(o.output + "/" + image, DType::F32, {1, D, H, W}, unit.data_ptr<float>());
  const at::Tensor lesions = s.lesions.contiguous(), organs = s.organs.contiguous();
  io::npy_write(o.output + "/" + rel + "/lesions.npy", DType::U8, {1, D, H, W}, lesions.data_ptr<uint8_t>());
  io::npy_write(o.output + "/" + rel + "/organs.npy", DType::U8, {1, D, H, W}, organs.data_ptr<uint8_t>());
  io::write_file_atomic(o.output + "/" + rel + "/text.txt", s.report);
  if (o.nifti) {  // the HU volume and label maps with their spacing (LPS axes as the grid's D, H, W)
    imaging::Volume v;
    v.geometry.spacing = {s.spacing_dhw[2], s.spacing_dhw[1], s.spacing_dhw[0]};
    v.voxels = s.hu.round().to(at::kShort);
    imaging::volume_write(o.output + "/" + rel + "/ct.nii.gz", imaging::volume_to_raw(v));
    v.voxels = s.lesions;
    imaging::volume_write(o.output + "/" + rel + "/lesions.nii.gz", imaging::volume_to_raw(v));
    v.voxels = s.organs;
    imaging::volume_write(o.output + "/" + rel + "/organs.nii.gz", imaging::volume_to_raw(v));
  }
  for (const auto& f : s.findings) {  // M3D-RefSeg style: region id = the finding's label in lesions.npy
    out.refseg.push_back({image, rel + "/lesions.npy", std::to_string(f.label), "0", fmt::format("Please segment the {} in the {}.", f.type, where(f)),
                          fmt::format("Sure, it is [SEG] in the {}.", where(f))});
    out.refseg.push_back({image, rel + "/lesions.npy", std::to_string(f.label), "1",
                          fmt::format("Where is the abnormality of the {}? Please segment it.", where(f)), fmt::format("The {} is [SEG].", f.type)});
  }
  io::write_file_atomic(o.output + "/" + rel + "/truth.json", s.truth().dump(1) + "\n");
  out.cap_entry = {{"image", image}, {"text", rel + "/text.txt"}};
  if (i % 10 == 9) {  // the test split also in the M3D-Seg layout: one mask per organ class, absent ones as (1,1,1,1) zeros
    const std::string seg = fmt::format("M3D_Seg_npy/synth/{}/masks", s.id);
    fs::create_directories(o.output + "/" + seg);
    const auto& names = organ_names();
    for (size_t c = 0; c < names.size(); ++c) {
      const at::Tensor mask = (s.organs == static_cast<int64_t>(c + 1)).to(at::kByte).contiguous();
      const std::string path = fmt::format("{}/{}/mask_{}.npy", o.output, seg, c);
      if (std::find(s.organs_present.begin(), s.organs_present.end(), names[c]) != s.organs_present.end()) {
        io::npy_write(path, DType::U8, {1, D, H, W}, mask.data_ptr<uint8_t>());
      } else {
        const int64_t zero = 0;
        io::npy_write(path, DType::I64, {1, 1, 1, 1}, &zero);
      }
      out.seg.push_back({{"image", image}, {"label", fmt::format("{}/mask_{}.npy", seg, c)}});
    }
  }
  for (const auto& q : s.vqa) {
    out.vqa.push_back({image, s.report, std::to_string(q.question_type), q.question, q.choices[0], q.choices[1], q.choices[2], q.choices[3], q.answer,
                       std::string(1, q.answer_choice)});
  }
  return out;
}

// M3D_Cap.json, the M3D-VQA and M3D-RefSeg csv files and the M3D-Seg json; splits 80/10/10 by index.
void synth_write_indexes(const SynthOptions& o, const std::vector<StudyRows>& studies) {
  const std::string cap_dir = o.output + "/M3D_Cap_npy", vqa_dir = o.output + "/M3D-VQA";
  json cap = {{"train", json::array()}, {"validation", json::array()}, {"test", json::array()}};
  const std::vector<std::string> header = {"Image Path", "Text",     "Question Type", "Question", "Choice A",
                                           "Choice B",   "Choice C", "Choice D",      "Answer",   "Answer Choice"};
  std::map<std::string, std::string> csv = {{"train", io::csv_line(header)}, {"validation", io::csv_line(header)}, {"test", io::csv_line(header)}};
  for (int64_t i = 0; i < o.count; ++i) {
    const std::string split = i % 10 == 8 ? "validation" : i % 10 == 9 ? "test" : "train";
    cap[split].push_back(studies[static_cast<size_t>(i)].cap_entry);
    for (const auto& row : studies[static_cast<size_t>(i)].vqa) csv[split] += io::csv_line(row);
  }
  io::write_file_atomic(cap_dir + "/M3D_Cap.json", cap.dump(1) + "\n");
  json labels = {{"0", "background"}};
  for (size_t c = 0; c < organ_names().size(); ++c) labels[std::to_string(c + 1)] = organ_names()[c];
  json seg = {{"name", "synth"}, {"description", "m3d synth organ masks, test split"}, {"labels", labels}, {"train", json::array()}, {"test", json::array()}};
  for (const auto& study : studies) {
    for (const auto& e : study.seg) seg["test"].push_back(e);
  }
  const std::vector<std::string> refseg_header = {"Image", "Mask", "Mask_ID", "Question_Type", "Question", "Answer"};
  std::string refseg_train = io::csv_line(refseg_header), refseg_test = io::csv_line(refseg_header);
  for (int64_t i = 0; i < o.count; ++i) {
    for (const auto& row : studies[static_cast<size_t>(i)].refseg) (i % 10 == 9 ? refseg_test : refseg_train) += io::csv_line(row);
  }
  fs::create_directories(o.output + "/M3D_RefSeg_npy");
  io::write_file_atomic(o.output + "/M3D_RefSeg_npy/M3D_RefSeg_train.csv", refseg_train);
  io::write_file_atomic(o.output + "/M3D_RefSeg_npy/M3D_RefSeg_test.csv", refseg_test);
  fs::create_directories(o.output + "/M3D_Seg_npy/synth");
  io::write_file_atomic(o.output + "/M3D_Seg_npy/synth/synth.json", seg.dump(1) + "\n");
  io::write_file_atomic(vqa_dir + "/M3D_VQA_train.csv", csv["train"]);
  io::write_file_atomic(vqa_dir + "/M3D_VQA_val.csv", csv["validation"]);
  io::write_file_atomic(vqa_dir + "/M3D_VQA_test.csv", csv["test"]);
}

// Generates the set into o.output (the studies on all cores, then the indexes).
void synth_write_into(const SynthOptions& o) {
  fs::create_directories(o.output + "/M3D_Cap_npy");
  fs::create_directories(o.output + "/M3D-VQA");
  std::vector<StudyRows> studies(static_cast<size_t>(o.count));
  std::atomic<int64_t> next{0}, finished{0};
  Progress progress("m3d synth", o.count, o.progress);
  std::mutex error_mutex;
  std::string error;
  auto work = [&] {
    while (true) {
      const int64_t i = next++;
      if (i >= o.count) return;
      try {
        studies[static_cast<size_t>(i)] = synth_write_study(o, i);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mutex);
        error = e.what();
        next = o.count;
        return;
      }
      progress.update(++finished, "studies");
    }
  };
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int intra_op = at::get_num_threads();
  at::set_num_threads(1);  // one study per core instead
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  at::set_num_threads(intra_op);
  progress.finish();
  if (!error.empty()) fail("m3d synth: {}", error);
  synth_write_indexes(o, studies);
}

}  // namespace

// The set is written into a sibling OUT.partial and renamed to OUT when complete, so a run
// that fails midway (a full disk, a kill) leaves no folder that looks like a set. A previous
// set in OUT is replaced whole; a folder holding anything else is refused, not mixed into.
void synth_write(const SynthOptions& o) {
  if (o.output.empty()) fail("m3d synth: give an output folder");
  if (o.count <= 0 || o.count > 1000000) fail("m3d synth: --n must be between 1 and 1000000, got {}", o.count);
  std::string out = o.output;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec) && !fs::exists(out + "/M3D_Cap_npy/M3D_Cap.json", ec)) {
    fail("{}: the folder holds files that are not an m3d synth set; write the set into a new or empty folder", out);
  }
  SynthOptions partial = o;
  partial.output = out + ".partial";
  fs::remove_all(partial.output);  // a killed run's
  struct Remove {
    const std::string& dir;
    ~Remove() {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  } remove{partial.output};
  // Errors name the files as they would be in OUT.
  try {
    synth_write_into(partial);
  } catch (const std::exception& e) { fail("{}", replace_all(e.what(), partial.output, out)); }
  const std::string old = out + ".old";
  fs::remove_all(old);
  if (fs::exists(out)) fs::rename(out, old);
  fs::rename(partial.output, out);
  fs::remove_all(old);
}

}  // namespace m3d::data
