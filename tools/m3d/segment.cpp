// m3d segment: a LaMed checkpoint's [SEG] mask (seg_projector + SegVol) for a volume, from a
// prompt (the LLM answers; the hidden states before its [SEG] tokens drive the mask) or from a
// given LLM hidden state (--seg-hidden, skipping the LLM).
#include <ATen/ATen.h>

#include <cstdio>
#include <optional>

#include <fmt/ranges.h>

#include "commands.h"
#include "generate/session.h"
#include "imaging/model_input.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "models/segvol.h"
#include "options.h"

namespace m3d::cli {

void add_segment(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", prompt, seg_hidden, logits, mask, dtype = "f32";
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("segment", "Segment a volume with a LaMed [SEG] head: from a prompt, or from a given [SEG] hidden state");
  add_model_option(cmd, o->model, "LaMed with a SegVol head (config.json segmentation_module)");
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/true);
  auto* prompt = cmd->add_option("--prompt", o->prompt,
                                 "The request, e.g. \"Can you segment the liver?\": the LLM answers (printed) and the hidden states before "
                                 "its [SEG] tokens make the mask (none: an empty mask)");
  auto* hidden = cmd->add_option("--seg-hidden", o->seg_hidden,
                                 ".npy (1, hidden_size) instead of --prompt: the LLM's final-norm hidden state at the position before [SEG] "
                                 "(the mean when there are several)");
  prompt->excludes(hidden);
  cmd->add_option("--logits", o->logits, "Output .npy: float32 logits (1, 1, D, H, W) in model space (-inf without [SEG])");
  cmd->add_option("-o,--mask", o->mask,
                  "Output mask, logits > 0 (M3D's sigmoid > 0.5), uint8: .npy (1, 1, D, H, W) in model space, or .nii.gz / .nrrd "
                  "on the scan's own grid (the recipe's way back; a model-space input gives the model grid)");
  add_generation_options(cmd, o->flags);
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    at::NoGradGuard no_grad;
    if (o->prompt.empty() == o->seg_hidden.empty()) fail("m3d segment: give --prompt or --seg-hidden");
    if (o->logits.empty() && o->mask.empty()) fail("m3d segment: give -o/--mask and/or --logits");
    const auto dtype = parse_dtype(o->dtype);
    std::optional<imaging::Prepared> prepared;
    at::Tensor logits;
    if (!o->prompt.empty()) {
      generate::Session session = generate::session_open(o->model, dtype, parse_tokenizer_kind(o->flags.tokenizer));
      if (!session.model.seg) { fail("{}/config.json: 'segmentation_module' is not set: this checkpoint has no [SEG] segmentation head", o->model); }
      const at::Tensor image = imaging::model_input_from_path(o->image, o->image_key, o->recipe, o->model, &prepared);
      const auto answer = generate::session_answer_seg(session, image, o->prompt, generation_options(o->flags, session.defaults));
      std::printf("%s\n", answer.text.c_str());
      if (answer.seg_count == 0) std::fputs("warning: the answer has no [SEG] token: the mask is empty (logits -inf, as M3D's generate)\n", stderr);
      logits = answer.seg_logits.cpu().contiguous();  // (1, 1, D, H, W)
    } else {
      const io::Checkpoint ckpt = io::checkpoint_open(o->model);
      models::LamedSeg seg = models::lamed_seg_load(ckpt);
      io::module_cast_floating(*seg, dtype);
      const int64_t hidden_size = seg->seg_module->config().hidden_size;
      const at::Tensor state = io::tensor_from_record(io::npy_read(o->seg_hidden).array);
      if (state.dim() != 2 || state.size(0) != 1 || state.size(1) != hidden_size || !state.is_floating_point()) {
        fail("{}: expected the [SEG] hidden state as a float array of shape (1, {}) (the model's hidden_size), got {} {}", o->seg_hidden, hidden_size,
             c10::toString(state.scalar_type()), fmt::join(state.sizes(), "x"));
      }
      const at::Tensor image = imaging::model_input_from_path(o->image, o->image_key, o->recipe, o->model, &prepared);  // (1, 1, D, H, W)
      logits = seg->forward(image, state).to(at::kFloat).contiguous();  // (1, 1, D, H, W)
    }
    if (!o->logits.empty()) io::npy_write(o->logits, DType::F32, logits.sizes().vec(), logits.data_ptr<float>());
    const at::Tensor mask = (logits > 0).to(at::kByte).contiguous();
    if (!o->mask.empty()) imaging::model_mask_write(o->mask, mask, prepared);
    std::fprintf(stderr, "logits [%s], %lld foreground voxels in model space\n", fmt::format("{}", fmt::join(logits.sizes(), ", ")).c_str(),
                 static_cast<long long>(mask.sum().item<int64_t>()));
  });
}

}  // namespace m3d::cli
