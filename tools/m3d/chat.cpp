// m3d chat: questions about one volume, one per line on stdin; the volume is
// encoded once and its prompt prefix stays in the KV cache.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "generate/session.h"
#include "imaging/model_input.h"
#include "options.h"

namespace m3d::cli {

void add_chat(CLI::App& app) {
  struct Options {
    std::string model, image, image_key, recipe = "auto", dtype = "f32";
    GenerationFlags flags;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("chat", "Ask several questions about one volume (one per line on stdin)");
  cmd->add_option("--model", o->model, "LaMed checkpoint directory")->required();
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/true);
  add_generation_options(cmd, o->flags);
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] {
    generate::Session session = generate::session_open(o->model, parse_dtype(o->dtype), parse_tokenizer_kind(o->flags.tokenizer));
    const generate::GenerationOptions options = generation_options(o->flags, session.defaults);
    const int64_t context = session.model.lm->model->config().max_position_embeddings;
    generate::ChatState chat =
        generate::session_chat_start(session, imaging::model_input_from_path(o->image, o->image_key, o->recipe, o->model), context);
    const bool interactive = ::isatty(STDIN_FILENO);
    std::string question;
    while (true) {
      if (interactive) std::fputs("> ", stdout), std::fflush(stdout);
      if (!std::getline(std::cin, question)) break;
      if (question.empty()) continue;
      generate::session_chat_answer(session, chat, question, options, [](const std::string& piece) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      });
      std::fputs("\n", stdout);
    }
  });
}

}  // namespace m3d::cli
