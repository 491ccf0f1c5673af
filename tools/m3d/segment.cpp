// m3d segment: a LaMed checkpoint's [SEG] mask (seg_projector + SegVol) for a volume, from a
// prompt (the LLM answers; the hidden states before its [SEG] tokens drive the mask), from a
// given LLM hidden state (--seg-hidden, skipping the LLM) and/or from SegVol's point and box
// prompts. The pipeline is generate::segment_run.
#include <fmt/ranges.h>

#include <cstdio>

#include "commands.h"
#include "generate/segment.h"
#include "options.h"

namespace m3d::cli {

void add_segment(CLI::App& app) {
  struct Options {
    std::string dtype = "f32";
    std::vector<std::string> points, boxes;
    generate::SegmentRequest request;
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  auto& r = o->request;
  CLI::App* cmd =
      app.add_subcommand("segment", "Segment a volume with a LaMed [SEG] head: from a prompt, a given [SEG] hidden state and/or SegVol point and box prompts");
  add_model_option(cmd, r.model, "LaMed with a SegVol head (config.json segmentation_module)");
  add_image_options(cmd, r.image, r.image_key, r.recipe, /*required=*/true);
  auto* prompt = cmd->add_option("--prompt", r.prompt,
                                 "The request, e.g. \"Can you segment the liver?\": the LLM answers (printed) and the hidden states before "
                                 "its [SEG] tokens make the mask (none: an empty mask, or the --box / --point prompts alone)");
  auto* hidden = cmd->add_option("--seg-hidden", r.seg_hidden,
                                 ".npy (1, hidden_size) instead of --prompt: the LLM's final-norm hidden state at the position before [SEG] "
                                 "(the mean when there are several)");
  prompt->excludes(hidden);
  cmd->add_option("--box", o->boxes,
                  "SegVol box prompt d1,h1,w1,d2,h2,w2: min and max corner in model voxels (0-based indices of the D x H x W model input, "
                  "e.g. 32 x 256 x 256), with the text prompt or alone");
  cmd->add_option("--point", o->points,
                  "SegVol point prompt d,h,w[,label] in model voxels, label 1 positive (default) or 0 negative; repeatable, with the "
                  "text prompt and box or alone");
  cmd->add_option("--logits", r.logits_path, "Output .npy: float32 logits (1, 1, D, H, W) in model space (-inf without [SEG])");
  cmd->add_option("-o,--mask", r.mask_path,
                  "Output mask, logits > 0 (M3D's sigmoid > 0.5), uint8: .npy (1, 1, D, H, W) in model space, or .nii.gz / .nrrd "
                  "on the scan's own grid (the recipe's way back; a model-space input gives the model grid)");
  cmd->add_option("--dicom-seg", r.dicom_seg_path,
                  "Output DICOM Segmentation (binary, one segment labelled with the prompt) referencing the slices of the DICOM series "
                  "given as --image (a folder)");
  add_generation_options(cmd, o->flags);
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    auto& r = o->request;
    r.dtype = parse_dtype(o->dtype);
    r.tokenizer = parse_tokenizer_kind(o->flags.tokenizer);
    r.ask = ask_options(o->flags);
    for (const auto& point : o->points) r.points.push_back(generate::seg_point_parse(point));
    if (o->boxes.size() > 1) fail("m3d segment: give one --box (SegVol takes one box per mask), got {}", o->boxes.size());
    if (!o->boxes.empty()) r.box = generate::seg_box_parse(o->boxes[0]);
    const auto result = generate::segment_run(r);
    if (!r.prompt.empty()) {
      std::printf("%s\n", result.text.c_str());
      if (result.seg_count == 0 && result.spatial) {
        std::fputs("warning: the answer has no [SEG] token: the mask comes from the --box / --point prompts alone\n", stderr);
      } else if (result.seg_count == 0) {
        std::fputs("warning: the answer has no [SEG] token: the mask is empty (logits -inf, as M3D's generate)\n", stderr);
      }
    }
    std::fprintf(stderr, "logits [%s], %lld foreground voxels in model space\n", fmt::format("{}", fmt::join(result.logits.sizes(), ", ")).c_str(),
                 static_cast<long long>(result.foreground));
  });
}

}  // namespace m3d::cli
