// m3d generate: answer a question about a volume (or a text prompt) with a LaMed or
// Med3DVLM model, through the public Session API: the answer, and the box it gives
// on the scan (model voxels, scan voxels, LPS mm); the [SEG] mask with --seg-out.
#include <cstdio>
#include <filesystem>

#include "answer.h"
#include "commands.h"
#include "io/npy.h"
#include "m3d/error.h"
#include "options.h"

namespace m3d::cli {

void add_generate(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", prompt, dtype = "f32", seg_out, system;
    bool stream = false, json = false, chat = false;
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Answer a prompt about a volume (report, VQA, positioning) with a LaMed or Med3DVLM model");
  add_model_option(cmd, o->model, "LaMed, Med3DVLM or text-only LLM");
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/false);
  cmd->add_option("--prompt", o->prompt, "The question, e.g. \"Please describe this CT scan.\"")->required();
  add_generation_options(cmd, o->flags);
  cmd->add_flag("--chat", o->chat, "Text models: wrap the prompt in the model's chat template as a user turn (with --system, a system turn first)");
  cmd->add_option("--system", o->system, "With --chat: a system message")->needs("--chat");
  cmd->add_flag("--stream", o->stream, "Print the answer as it is generated");
  cmd->add_flag("--json", o->json, "Print one JSON object: text, box (model voxels, scan voxels, LPS mm), usage, finish_reason")->excludes("--stream");
  cmd->add_option("--seg-out", o->seg_out,
                  "Write the [SEG] mask (a checkpoint with a segmentation_module): .npy in model space, .nii.gz / .nrrd on "
                  "the scan's grid (empty when the answer has no [SEG])");
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    const Model model = Model::open(o->model, model_options(o->flags, o->dtype));
    if (!o->seg_out.empty() && (!model.info().segments || o->image.empty())) {
      fail("--seg-out needs --image and a checkpoint with a [SEG] head ({}/config.json has {})", o->model,
           model.info().segments ? "one" : "no segmentation_module");
    }
    Session session(model);
    if (!o->image.empty()) session.set_scan(PreparedScan::prepare(o->image, {o->recipe, o->model, o->image_key}));
    AskOptions ask = ask_options(o->flags);
    ask.mask = !o->seg_out.empty();
    TextCallback on_text;
    if (o->stream) {
      on_text = [](const std::string& piece) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
        return true;
      };
    }
    std::string prompt = o->prompt;
    if (o->chat) {
      if (!o->image.empty()) fail("--chat is for text prompts: LaMed and Med3DVLM prompts use no chat template (as the official code)");
      std::vector<std::pair<std::string, std::string>> turns;
      if (!o->system.empty()) turns.emplace_back("system", o->system);
      turns.emplace_back("user", o->prompt);
      prompt = model.chat_prompt(turns);
    }
    const Answer answer = session.ask(prompt, ask, on_text);
    if (o->json) {
      std::printf("%s\n", answer_json(answer).dump(2).c_str());
    } else {
      std::printf("%s\n", o->stream ? "" : answer.text.c_str());
      if (answer.box) std::printf("%s\n", box_line(*answer.box).c_str());
    }
    if (o->seg_out.empty()) return;
    const auto dhw = session.scan()->model_size();
    std::vector<uint8_t> model_mask = answer.model_mask;
    if (model_mask.empty()) model_mask.assign(static_cast<size_t>(dhw[0] * dhw[1] * dhw[2]), 0);  // no [SEG]: an empty mask
    if (std::filesystem::path(o->seg_out).extension() == ".npy") {
      io::npy_write(o->seg_out, DType::U8, {1, 1, dhw[0], dhw[1], dhw[2]}, model_mask.data());
    } else {
      volume_write(o->seg_out, answer.mask ? *answer.mask : session.scan()->mask_to_scan(model_mask));
    }
    std::fprintf(stderr, "wrote %s: %lld [SEG] token(s), %lld foreground voxels in model space\n", o->seg_out.c_str(),
                 static_cast<long long>(answer.seg_tokens), static_cast<long long>(answer.mask_voxels));
  });
}

}  // namespace m3d::cli
