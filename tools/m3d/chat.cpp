// m3d chat, through the public Session API, one line of stdin per turn.
// With --image: questions about one volume; the volume is encoded once and its prompt
// prefix stays in the KV cache (LaMed; Med3DVLM's BOS-less prompts answer each question
// from scratch); each question is answered alone. After an answer with a box, its line
// on the scan follows.
// Without --image: a conversation with a text model through its chat template
// (Session::chat): each answer sees the turns before it; the KV cache of the earlier
// turns is reused. /reset starts over, /quit (or end of input) ends.
// --json prints one JSON object per answer instead of streamed text.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "answer.h"
#include "commands.h"
#include "options.h"

namespace m3d::cli {

namespace {

struct Options {
  std::string model, image, image_key, recipe = "auto", dtype = "f32", system;
  bool json = false, show_ids = false;
  GenerationFlags flags;
};

// Calls `turn` with each non-empty line of stdin (after a prompt on a terminal);
// stops at end of input or when `turn` returns false.
void read_turns(const std::function<bool(const std::string&)>& turn) {
  const bool interactive = ::isatty(STDIN_FILENO);
  std::string line;
  while (true) {
    if (interactive) std::fputs("> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (!turn(line)) break;
  }
}

// Prints one answer: a JSON object, or the streamed text's end (and its box line).
void finish_answer(const Model& model, const Answer& answer, const Options& o) {
  if (o.show_ids) print_ids(model, answer);
  if (o.json) {
    std::printf("%s\n", answer_json(answer).dump().c_str());
  } else {
    std::fputs("\n", stdout);
    if (answer.box) std::printf("%s\n", box_line(*answer.box).c_str());
  }
  std::fflush(stdout);
}

void chat_about_scan(const Options& o) {
  Session session(Model::open(o.model, model_options(o.flags, o.dtype)));
  session.set_scan(PreparedScan::prepare(o.image, {o.recipe, o.model, o.image_key}));
  const AskOptions ask = ask_options(o.flags);
  read_turns([&](const std::string& question) {
    finish_answer(session.model(), session.ask(question, ask, o.json ? TextCallback() : print_piece), o);
    return true;
  });
}

void chat_text(const Options& o) {
  Session session(Model::open(o.model, model_options(o.flags, o.dtype)));
  if (!session.model().info().chat_template) {
    fail(
        "{}: the model has no chat template (tokenizer_config.json chat_template, GGUF tokenizer.chat_template), which m3d chat needs to "
        "build a conversation; `m3d generate --model {} --prompt TEXT` runs a plain prompt without one{}",
        o.model, o.model, session.model().info().takes_images ? ", and `m3d chat --image SCAN` asks about a scan" : "");
  }
  const AskOptions ask = ask_options(o.flags);
  std::vector<ChatTurn> turns;
  if (!o.system.empty()) turns.emplace_back("system", o.system);
  const size_t opening = turns.size();
  read_turns([&](const std::string& line) {
    if (line == "/quit") return false;
    if (line == "/reset") {
      turns.resize(opening);
      return true;
    }
    turns.emplace_back("user", line);
    const Answer answer = session.chat(turns, ask, o.json ? TextCallback() : print_piece);
    turns.emplace_back("assistant", answer.text);
    finish_answer(session.model(), answer, o);
    return true;
  });
}

}  // namespace

void add_chat(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "chat", "A conversation on stdin, one turn per line: with --image, questions about one volume; without, a text model through its chat template");
  add_model_option(cmd, o->model, "LaMed, Med3DVLM or (without --image) a text LLM with a chat template, e.g. a .gguf file,");
  add_image_options(cmd, o->image, o->image_key, o->recipe, /*required=*/false);
  add_generation_options(cmd, o->flags);
  cmd->add_option("--system", o->system, "Without --image: the system message that opens the conversation")->excludes("--image");
  cmd->add_flag("--json", o->json, "One JSON object per answer (text, box, usage) instead of streamed text");
  add_show_ids_option(cmd, o->show_ids);
  add_dtype_option(cmd, o->dtype);
  cmd->callback([o] { o->image.empty() ? chat_text(*o) : chat_about_scan(*o); });
}

}  // namespace m3d::cli
