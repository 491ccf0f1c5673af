// m3d generate: answer a question about a volume (or a text prompt) with a LaMed or Med3DVLM model.
#include <ATen/ATen.h>

#include <cstdio>
#include <optional>

#include "commands.h"
#include "generate/session.h"
#include "imaging/model_input.h"
#include "m3d/error.h"
#include "options.h"

namespace m3d::cli {

void add_generate(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", prompt, dtype = "f32", seg_out;
    bool stream = false;
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Answer a prompt about a volume (report, VQA, positioning) with a LaMed or Med3DVLM model");
  cmd->add_option("--model", o->model, "Checkpoint directory (config.json, weights, tokenizer.model or tokenizer.json)")->required();
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/false);
  cmd->add_option("--prompt", o->prompt, "The question, e.g. \"Please describe this CT scan.\"")->required();
  add_generation_options(cmd, o->flags);
  cmd->add_flag("--stream", o->stream, "Print the answer as it is generated");
  cmd->add_option("--seg-out", o->seg_out,
                  "Write the [SEG] mask (a checkpoint with a segmentation_module): .npy in model space, .nii.gz / .nrrd on "
                  "the scan's grid (empty when the answer has no [SEG])");
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    generate::Session session = generate::session_open(o->model, parse_dtype(o->dtype), parse_tokenizer_kind(o->flags.tokenizer));
    const generate::GenerationOptions options = generation_options(o->flags, session.defaults);
    if (!o->seg_out.empty() && (!session.model.seg || o->image.empty())) {
      fail("--seg-out needs --image and a checkpoint with a [SEG] head ({}/config.json has {})", o->model,
           session.model.seg ? "one" : "no segmentation_module");
    }
    std::optional<imaging::Prepared> prepared;
    const at::Tensor image =
        o->image.empty() ? at::Tensor() : imaging::model_input_from_path(o->image, o->image_key, o->recipe, o->model, &prepared);
    std::function<void(const std::string&)> on_text;
    if (o->stream) {
      on_text = [](const std::string& piece) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      };
    }
    const generate::SessionAnswer answer = o->seg_out.empty()
                                               ? generate::SessionAnswer{generate::session_answer(session, image, o->prompt, options, on_text)}
                                               : generate::session_answer_seg(session, image, o->prompt, options, on_text);
    if (o->stream) {
      std::fputs("\n", stdout);
    } else {
      std::printf("%s\n", answer.text.c_str());
    }
    if (!o->seg_out.empty()) {
      imaging::model_mask_write(o->seg_out, (answer.seg_logits > 0).to(at::kByte), prepared);
      std::fprintf(stderr, "wrote %s: %lld [SEG] token(s), %lld foreground voxels in model space\n", o->seg_out.c_str(),
                   static_cast<long long>(answer.seg_count), static_cast<long long>((answer.seg_logits > 0).sum().item<int64_t>()));
    }
  });
}

}  // namespace m3d::cli
