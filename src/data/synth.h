// Synthetic CT studies with known ground truth, written in the M3D-Data layouts
// (M3D-Cap json + per-study model-space .npy and text.txt, M3D-VQA csv), so every
// part of m3d (bench, training, the demo) has data whose truth is known.
//
// A study is generated directly on the model grid (32 x 256 x 256, D x H x W) in HU:
// body and fat, lungs, heart, aorta, spine, liver, spleen, kidneys, gallbladder and
// bladder as smoothly deformed ellipsoids placed by region (chest, abdomen,
// chest-abdomen-pelvis), contrast phase changing vessel and organ enhancement, scanner
// noise and blur; findings (cysts, hypo-/hyperdense masses, calcifications, solid and
// ground-glass lung nodules, pleural effusion, kidney stones) with organ, side and size. The report and
// the VQA items are written from that truth. Deterministic from (seed, index).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace m3d::data {

struct Finding {
  std::string type;  // cyst, hypodense mass, hyperdense mass, calcification, lung nodule, ground-glass nodule, pleural effusion, kidney stone
  std::string organ, side;  // side: left, right or "" (midline organs)
  double size_mm = 0;  // largest diameter
  int64_t label = 0;  // value in the finding label map
  std::array<double, 6> box{};  // M3D box of its mask (mask2box)
};

struct VqaItem {
  int question_type = 1;  // 1 plane, 2 phase, 3 organ, 4 abnormality, 5 location
  std::string question, choices[4], answer;
  char answer_choice = 'A';
};

struct Study {
  std::string id, region, plane, phase;
  std::array<double, 3> spacing_dhw{};  // mm between slices, rows, columns
  at::Tensor hu;  // (32, 256, 256) float32
  at::Tensor organs;  // (32, 256, 256) uint8 organ labels (organ_names() index + 1)
  at::Tensor lesions;  // (32, 256, 256) uint8 finding labels (Finding::label)
  std::vector<std::string> organs_present;
  std::vector<Finding> findings;
  std::string report;
  std::vector<VqaItem> vqa;
  nlohmann::json truth() const;  // everything above but the voxels
};

// The model grid every study is generated on (D x H x W).
inline constexpr int64_t kSynthDepth = 32, kSynthHeight = 256, kSynthWidth = 256;

const std::vector<std::string>& organ_names();
// `regions`: the scan regions to draw from (chest, abdomen, chest-abdomen-pelvis; empty: all).
Study synth_study(uint64_t seed, int64_t index, const std::vector<std::string>& regions = {});

struct SynthOptions {
  int64_t count = 100;
  uint64_t seed = 0;
  std::string output;
  int threads = 0;  // 0: all cores
  bool progress = true;
  std::vector<std::string> regions;  // empty: all
  bool nifti = false;  // also the HU volume and label maps as NIfTI with their geometry
};
// Writes M3D_Cap_npy/{synth/<id>/<plane>_<phase>.npy, text.txt, truth.json, M3D_Cap.json},
// M3D-VQA/M3D_VQA_{train,val,test}.csv, M3D_RefSeg_npy/M3D_RefSeg_{train,test}.csv (referring
// expressions with [SEG] answers for every finding) and the test split as M3D-Seg; splits 80/10/10 by index.
void synth_write(const SynthOptions& options);

// The consistency checker: every finding the report names exists in the lesion masks
// with its organ, side and size (within one voxel), every VQA answer agrees with the
// truth, every box equals its mask's box, every image is a complete .npy on the masks' grid,
// and closed-VQA letters pass a chi-square test for uniform letters (p < 0.001 fails).
// Returns the problems found (empty: consistent).
std::vector<std::string> synth_check(const std::string& dir);

}  // namespace m3d::data
