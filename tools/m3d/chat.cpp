// m3d chat: questions about one volume, one per line on stdin, through the public
// Session API: the volume is encoded once and its prompt prefix stays in the KV
// cache (LaMed; Med3DVLM's BOS-less prompts answer each question from scratch).
// After an answer with a box, its line on the scan follows; --json prints one JSON
// object per answer instead.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "answer.h"
#include "commands.h"
#include "options.h"

namespace m3d::cli {

void add_chat(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", dtype = "f32";
    bool json = false;
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("chat", "Ask several questions about one volume (one per line on stdin)");
  add_model_option(cmd, o->model, "LaMed or Med3DVLM");
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/true);
  add_generation_options(cmd, o->flags);
  cmd->add_flag("--json", o->json, "One JSON object per answer (text, box, usage) instead of streamed text");
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    Session session(Model::open(o->model, model_options(o->flags, o->dtype)));
    session.set_scan(PreparedScan::prepare(o->image, {o->recipe, o->model, o->image_key}));
    const AskOptions ask = ask_options(o->flags);
    const bool interactive = ::isatty(STDIN_FILENO);
    std::string question;
    while (true) {
      if (interactive) std::fputs("> ", stdout), std::fflush(stdout);
      if (!std::getline(std::cin, question)) break;
      if (question.empty()) continue;
      if (o->json) {
        std::printf("%s\n", answer_json(session.ask(question, ask)).dump().c_str());
        std::fflush(stdout);
        continue;
      }
      const Answer answer = session.ask(question, ask, [](const std::string& piece) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
        return true;
      });
      std::fputs("\n", stdout);
      if (answer.box) std::printf("%s\n", box_line(*answer.box).c_str());
    }
  });
}

}  // namespace m3d::cli
