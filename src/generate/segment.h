// `m3d segment`'s pipeline: a LaMed [SEG] mask for a volume from a question (the LLM answers;
// the hidden states before its [SEG] tokens drive SegVol), from a given [SEG] hidden state,
// and/or from SegVol's own point and box prompts in model voxels; written as model-space
// logits, a mask on the scan's grid (NIfTI / NRRD) and a DICOM-SEG of a DICOM series input.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "m3d/session.h"
#include "models/segvol.h"
#include "text/tokenizer.h"

namespace m3d::generate {

// Point and box prompts in model voxels (include/m3d/session.h): a point (d, h, w) with
// SegVol's label (1 positive, 0 negative); a box's min corner (d1, h1, w1) and max corner
// (d2, h2, w2), both inside (SegVol's generate_box: the extreme foreground indices).
using m3d::SegBox;
using m3d::SegPoint;

// "d,h,w[,label]" and "d1,h1,w1,d2,h2,w2": finite numbers, label 0 or 1; errors name the text.
SegPoint seg_point_parse(const std::string& text);
SegBox seg_box_parse(const std::string& text);

// How errors name a prompt: as `m3d segment`'s options (--point 1,2,3) or as a request's
// fields ('points'[0] [1, 2, 3]; Session::segment, POST /v1/segment).
enum class SegPromptNames { Options, Fields };

// The prompts as SegVol takes them (batch 1: points (1, P, 3) with labels (1, P), box (1, 6)),
// each coordinate checked to lie on the model grid (D, H, W), i.e. in [0, size - 1], each
// label 0 or 1, and the box not inverted (min <= max on every axis).
models::SegPrompts seg_spatial_prompts(const std::vector<SegPoint>& points, const std::optional<SegBox>& box, const std::array<int64_t, 3>& grid,
                                       SegPromptNames names = SegPromptNames::Options);

// A DICOM-SEG's segment label: the prompt, else what made the mask.
std::string segment_label(const std::string& prompt, bool spatial);

struct SegmentRequest {
  std::string model, image, image_key, recipe = "auto";
  c10::ScalarType dtype = c10::kFloat;
  text::Tokenizer::Kind tokenizer = text::Tokenizer::Kind::Auto;
  std::string prompt;  // a question for the LLM, whose [SEG] states drive the mask
  AskOptions ask;  // its decoding (unset: the model's generation_config.json)
  std::string seg_hidden;  // instead of `prompt`: .npy float (1, hidden_size), the LLM state before [SEG]
  std::vector<SegPoint> points;  // SegVol prompts, beside the text (or alone)
  std::optional<SegBox> box;
  // Outputs, each optional: float32 logits .npy (1, 1, D, H, W); the mask (.npy in model
  // space, an image file on the scan's grid); a DICOM-SEG (needs a DICOM series folder).
  std::string logits_path, mask_path, dicom_seg_path;
};

struct SegmentResult {
  std::string text;  // the LLM's answer (with a prompt)
  int64_t seg_count = 0;  // [SEG] states behind the mask (with a prompt)
  bool spatial = false;  // points or a box took part
  at::Tensor logits;  // (1, 1, D, H, W) float32 in model space
  int64_t foreground = 0;  // mask voxels in model space
};

// Checks the request and every output folder, runs the model, then writes the outputs
// (the DICOM-SEG first: it is the one that can still refuse). `on_text` receives the answer
// as it grows.
SegmentResult segment_run(const SegmentRequest& request, const std::function<void(const std::string&)>& on_text = {});

}  // namespace m3d::generate
