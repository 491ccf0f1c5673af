// m3d generate: answer a question about a volume (or a text prompt) with a LaMed or
// Med3DVLM model, through the public Session API: the answer, and the box it gives
// on the scan (model voxels, scan voxels, LPS mm); the [SEG] mask with --seg-out.
// Text models: --chat / --messages render the model's chat template (Session::chat);
// --show-ids and --dump-logits show the ids and logits behind the answer.
#include <cstdio>
#include <filesystem>

#include "answer.h"
#include "commands.h"
#include "io/npy.h"
#include "m3d/error.h"
#include "options.h"

namespace m3d::cli {

namespace {

// --seg-out: the answer's [SEG] mask, .npy in model space or a volume on the scan's grid.
void write_seg_mask(const Session& session, const Answer& answer, const std::string& path) {
  const auto dhw = session.scan()->model_size();
  std::vector<uint8_t> model_mask = answer.model_mask;
  if (model_mask.empty()) model_mask.assign(static_cast<size_t>(dhw[0] * dhw[1] * dhw[2]), 0);  // no [SEG]: an empty mask
  if (std::filesystem::path(path).extension() == ".npy") {
    io::npy_write(path, DType::U8, {1, 1, dhw[0], dhw[1], dhw[2]}, model_mask.data());
  } else {
    volume_write(path, answer.mask ? *answer.mask : session.scan()->mask_to_scan(model_mask));
  }
  std::fprintf(stderr, "wrote %s: %lld [SEG] token(s), %lld foreground voxels in model space\n", path.c_str(), static_cast<long long>(answer.seg_tokens),
               static_cast<long long>(answer.mask_voxels));
}

}  // namespace

void add_generate(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", prompt, dtype = "f32", seg_out, system, messages, dump_logits;
    bool stream = false, json = false, chat = false, show_ids = false;
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Answer a prompt about a volume (report, VQA, positioning) with a LaMed or Med3DVLM model");
  add_model_option(cmd, o->model, "LaMed, Med3DVLM or text-only LLM");
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/false);
  auto* prompt = cmd->add_option("--prompt", o->prompt, "The question, e.g. \"Please describe this CT scan.\"");
  add_generation_options(cmd, o->flags);
  cmd->add_flag("--chat", o->chat, "Text models: wrap the prompt in the model's chat template as a user turn (with --system, a system turn first)");
  cmd->add_option("--system", o->system, "With --chat: a system message")->needs("--chat");
  cmd->add_option("--messages", o->messages,
                  "Text models: a conversation to answer, an OpenAI-style JSON file [{\"role\": ..., \"content\": ...}, ...], rendered with the "
                  "model's chat template (as --chat)")
      ->excludes(prompt);
  cmd->add_flag("--stream", o->stream, "Print the answer as it is generated");
  cmd->add_flag("--json", o->json, "Print one JSON object: text, box (model voxels, scan voxels, LPS mm), usage, finish_reason")->excludes("--stream");
  add_show_ids_option(cmd, o->show_ids);
  cmd->add_option("--dump-logits", o->dump_logits,
                  "Write the logits of every generated step as float32 .npy (steps, vocab): the model's scores each token was chosen from, before "
                  "repetition penalty and sampling");
  cmd->add_option("--seg-out", o->seg_out,
                  "Write the [SEG] mask (a checkpoint with a segmentation_module): .npy in model space, .nii.gz / .nrrd on "
                  "the scan's grid (empty when the answer has no [SEG])");
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    if (o->prompt.empty() && o->messages.empty()) fail("generate needs --prompt TEXT (or, for a text model, --messages FILE.json)");
    const bool chat = o->chat || !o->messages.empty();
    if (chat && !o->image.empty()) fail("--chat and --messages are for text prompts: LaMed and Med3DVLM prompts use no chat template (as the official code)");
    const std::vector<ChatTurn> turns = o->messages.empty() ? std::vector<ChatTurn>{} : chat_turns_read(o->messages);
    const Model model = Model::open(o->model, model_options(o->flags, o->dtype));
    if (!o->seg_out.empty() && (!model.info().segments || o->image.empty())) {
      fail("--seg-out needs --image and a checkpoint with a [SEG] head ({}/config.json has {})", o->model,
           model.info().segments ? "one" : "no segmentation_module");
    }
    Session session(model);
    if (!o->image.empty()) session.set_scan(PreparedScan::prepare(o->image, {o->recipe, o->model, o->image_key}));
    AskOptions ask = ask_options(o->flags);
    ask.mask = !o->seg_out.empty();
    ask.logits = !o->dump_logits.empty();
    TextCallback on_text;
    if (o->stream) on_text = print_piece;
    Answer answer;
    if (chat) {
      std::vector<ChatTurn> conversation = turns;
      if (o->messages.empty()) {
        if (!o->system.empty()) conversation.emplace_back("system", o->system);
        conversation.emplace_back("user", o->prompt);
      }
      answer = session.chat(conversation, ask, on_text);
    } else {
      answer = session.ask(o->prompt, ask, on_text);
    }
    if (!o->dump_logits.empty()) io::npy_write(o->dump_logits, DType::F32, {answer.completion_tokens, answer.vocab_size}, answer.logits.data());
    if (o->show_ids) print_ids(model, answer);
    if (o->json) {
      std::printf("%s\n", answer_json(answer).dump(2).c_str());
    } else {
      std::printf("%s\n", o->stream ? "" : answer.text.c_str());
      if (answer.box) std::printf("%s\n", box_line(*answer.box).c_str());
    }
    if (!o->seg_out.empty()) write_seg_mask(session, answer, o->seg_out);
  });
}

}  // namespace m3d::cli
