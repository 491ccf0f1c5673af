// `m3d segment`: see segment.h. How prompts combine is SegVol's forward_decoder (segvol_spec.md
// §1.3): points, then the two box corners, then the text token, one sparse sequence; M3D itself
// passes only the text (the projected [SEG] state).
#include "generate/segment.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "generate/api.h"
#include "generate/session.h"
#include "imaging/dicom_seg.h"
#include "imaging/model_input.h"
#include "imaging/preprocess.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "m3d/error.h"

namespace m3d::generate {
namespace {

// Comma-separated finite numbers; `what` says which option's value it is.
std::vector<double> numbers_parse(const std::string& text, const char* what, const char* form) {
  std::vector<double> out;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, ',')) {
    const char* begin = part.c_str();
    char* end = nullptr;
    const double v = std::strtod(begin, &end);
    while (end != nullptr && *end == ' ') ++end;
    if (part.empty() || end == begin || *end != '\0' || !std::isfinite(v)) { fail("{} '{}': '{}' is not a number (expected {})", what, text, part, form); }
    out.push_back(v);
  }
  if (!text.empty() && text.back() == ',') fail("{} '{}': a trailing comma (expected {})", what, text, form);
  return out;
}

// The [SEG] path alone (--seg-hidden or only points / a box): no LLM is loaded.
at::Tensor logits_without_llm(const SegmentRequest& r, const at::Tensor& image, const models::SegPrompts& spatial) {
  const io::Checkpoint checkpoint = io::checkpoint_open(r.model);
  models::LamedSeg seg = models::lamed_seg_load(checkpoint);
  io::module_cast_floating(*seg, r.dtype);
  at::Tensor state;
  if (!r.seg_hidden.empty()) {
    const int64_t hidden_size = seg->seg_module->config().hidden_size;
    state = io::tensor_from_record(io::npy_read(r.seg_hidden).array);
    if (state.dim() != 2 || state.size(0) != 1 || state.size(1) != hidden_size || !state.is_floating_point()) {
      fail("{}: expected the [SEG] hidden state as a float array of shape (1, {}) (the model's hidden_size), got {} {}", r.seg_hidden, hidden_size,
           c10::toString(state.scalar_type()), fmt::join(state.sizes(), "x"));
    }
  }
  return seg->forward(image, state, spatial).to(at::kFloat).contiguous();  // (1, 1, D, H, W)
}

// The model-space mask on the scan's grid, as imaging::model_mask_write puts it there.
RawVolume mask_on_scan(const at::Tensor& mask, const imaging::Prepared& prepared) {
  return imaging::volume_to_raw(imaging::model_mask_to_scan(mask[0][0], prepared));
}

void request_check(const SegmentRequest& r) {
  const bool spatial = r.box.has_value() || !r.points.empty();
  if (!r.prompt.empty() && !r.seg_hidden.empty()) fail("m3d segment: give --prompt or --seg-hidden, not both");
  if (r.prompt.empty() && r.seg_hidden.empty() && !spatial) fail("m3d segment: give --prompt, --seg-hidden or --box / --point");
  if (r.logits_path.empty() && r.mask_path.empty() && r.dicom_seg_path.empty()) fail("m3d segment: give -o/--mask, --logits and/or --dicom-seg");
  if (!r.dicom_seg_path.empty() && !imaging::is_dicom_series_dir(r.image)) {
    fail("{}: --dicom-seg needs a DICOM series input (a folder of slices); '{}' is not one", r.dicom_seg_path, r.image);
  }
  for (const auto* path : {&r.logits_path, &r.mask_path, &r.dicom_seg_path}) {
    if (!path->empty()) io::require_directory_of(*path);
  }
}

}  // namespace

std::string segment_label(const std::string& prompt, bool spatial) {
  if (!prompt.empty()) return prompt;
  return spatial ? "m3d segmentation (point / box prompts)" : "m3d segmentation";
}

SegPoint seg_point_parse(const std::string& text) {
  const auto v = numbers_parse(text, "--point", "d,h,w or d,h,w,label");
  if (v.size() != 3 && v.size() != 4) fail("--point '{}': expected d,h,w or d,h,w,label (label 1 positive, 0 negative), got {} numbers", text, v.size());
  SegPoint point;
  point.dhw = {v[0], v[1], v[2]};
  if (v.size() == 4) {
    if (v[3] != 0 && v[3] != 1) fail("--point '{}': label {} is not 1 (positive) or 0 (negative)", text, v[3]);
    point.label = static_cast<int64_t>(v[3]);
  }
  return point;
}

SegBox seg_box_parse(const std::string& text) {
  const auto v = numbers_parse(text, "--box", "d1,h1,w1,d2,h2,w2");
  if (v.size() != 6) fail("--box '{}': expected 6 numbers d1,h1,w1,d2,h2,w2 (min and max corner), got {}", text, v.size());
  SegBox box;
  std::copy(v.begin(), v.end(), box.corners.begin());
  return box;
}

models::SegPrompts seg_spatial_prompts(const std::vector<SegPoint>& points, const std::optional<SegBox>& box, const std::array<int64_t, 3>& grid,
                                       SegPromptNames names) {
  const char* axes[3] = {"d", "h", "w"};
  const bool fields = names == SegPromptNames::Fields;
  auto check = [&](const std::string& what, const double* dhw) {
    for (int a = 0; a < 3; ++a) {
      if (!std::isfinite(dhw[a]) || dhw[a] < 0 || dhw[a] > static_cast<double>(grid[a] - 1)) {
        fail("{}: {} = {} is outside the model grid {}x{}x{} (D x H x W voxels, {} in [0, {}])", what, axes[a], dhw[a], grid[0], grid[1], grid[2], axes[a],
             grid[a] - 1);
      }
    }
  };
  models::SegPrompts prompts;
  if (!points.empty()) {
    std::vector<float> coords;
    std::vector<int64_t> labels;
    for (size_t i = 0; i < points.size(); ++i) {
      const auto& p = points[i];
      const std::string what = fields ? fmt::format("'points'[{}] [{}]", i, fmt::join(p.dhw, ", ")) : fmt::format("--point {}", fmt::join(p.dhw, ","));
      check(what, p.dhw.data());
      if (p.label != 0 && p.label != 1) fail("{}: label {} is not 1 (positive) or 0 (negative)", what, p.label);
      coords.insert(coords.end(), p.dhw.begin(), p.dhw.end());
      labels.push_back(p.label);
    }
    const auto n = static_cast<int64_t>(points.size());
    prompts.points = at::tensor(coords).view({1, n, 3});  // (1, P, 3)
    prompts.point_labels = at::tensor(labels).view({1, n});  // (1, P)
  }
  if (box) {
    const auto& c = box->corners;
    const std::string what = fields ? fmt::format("'box' [{}]", fmt::join(c, ", ")) : fmt::format("--box {}", fmt::join(c, ","));
    check(what, c.data());
    check(what, c.data() + 3);
    for (int a = 0; a < 3; ++a) {
      if (c[a] > c[a + 3]) fail("{}: inverted on {} ({} > {}): give the min corner first, then the max corner", what, axes[a], c[a], c[a + 3]);
    }
    prompts.boxes = at::tensor(std::vector<float>(c.begin(), c.end())).view({1, 6});  // (1, 6)
  }
  return prompts;
}

SegmentResult segment_run(const SegmentRequest& r, const std::function<void(const std::string&)>& on_text) {
  at::NoGradGuard no_grad;
  request_check(r);
  SegmentResult out;
  out.spatial = r.box.has_value() || !r.points.empty();
  std::optional<imaging::Prepared> prepared;
  if (!r.prompt.empty()) {
    Session session = session_open(r.model, r.dtype, r.tokenizer);
    if (!session.model.seg) fail("{}/config.json: 'segmentation_module' is not set: this checkpoint has no [SEG] segmentation head", r.model);
    const at::Tensor image = imaging::model_input_from_path(r.image, r.image_key, r.recipe, r.model, &prepared);  // (1, 1, D, H, W)
    const auto spatial = seg_spatial_prompts(r.points, r.box, {image.size(2), image.size(3), image.size(4)});
    const auto answer = session_answer_seg(session, image, r.prompt, generation_options_from(r.ask, session.defaults), on_text, spatial);
    out.text = answer.text;
    out.seg_count = answer.seg_count;
    out.logits = answer.seg_logits.cpu().contiguous();  // (1, 1, D, H, W)
  } else {
    const at::Tensor image = imaging::model_input_from_path(r.image, r.image_key, r.recipe, r.model, &prepared);  // (1, 1, D, H, W)
    const auto spatial = seg_spatial_prompts(r.points, r.box, {image.size(2), image.size(3), image.size(4)});
    out.logits = logits_without_llm(r, image, spatial);
  }
  const at::Tensor mask = (out.logits > 0).to(at::kByte).contiguous();  // (1, 1, D, H, W)
  out.foreground = mask.sum().item<int64_t>();
  if (!r.dicom_seg_path.empty()) {
    if (!prepared) fail("{}: --dicom-seg needs a DICOM series input (a folder of slices)", r.dicom_seg_path);
    imaging::DicomSegOptions options;
    options.label = segment_label(r.prompt, r.box || !r.points.empty());
    imaging::dicom_seg_write(r.dicom_seg_path, r.image, mask_on_scan(mask, *prepared), options);
  }
  if (!r.mask_path.empty()) imaging::model_mask_write(r.mask_path, mask, prepared);
  if (!r.logits_path.empty()) io::npy_write(r.logits_path, DType::F32, out.logits.sizes().vec(), out.logits.data_ptr<float>());
  return out;
}

}  // namespace m3d::generate
