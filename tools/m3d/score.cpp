// m3d score: M3D-Bench metrics recomputed on a predictions CSV (official columns).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "commands.h"
#include "options.h"
#include "eval/bench.h"
#include "eval/score.h"
#include "io/atomic_file.h"
#include "io/csv.h"
#include "m3d/error.h"

namespace m3d::cli {

void add_score(CLI::App& app) {
  struct Options {
    std::string task, pred, output, punkt_dir, wordnet_dir;
    eval::BertScoreOptions bertscore;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("score", "Score a predictions CSV of M3D-Bench (from m3d or the official Python evaluation)");
  cmd->add_option("--task", o->task, "report, vqa-open, reg (BLEU-1, ROUGE, METEOR, BERTScore F1), vqa-closed (accuracy), rec (IoU)")->required();
  cmd->add_option("--pred", o->pred, "Predictions CSV with the official columns (e.g. Question, Ground Truth, pred)")->required();
  cmd->add_option("-o,--output", o->output, "Folder for scored.csv, summary.json and summary.md (default: next to the CSV)");
  // The same metric options as m3d bench.
  add_text_metric_options(cmd, o->punkt_dir, o->wordnet_dir, o->bertscore);
  cmd->callback([o] {
    namespace fs = std::filesystem;
    const io::CsvTable table = io::csv_read(o->pred);
    const eval::TextScorers scorers =
        eval::score_task_is_text(o->task) ? eval::text_scorers_load(o->punkt_dir, o->wordnet_dir, o->bertscore) : eval::TextScorers{};
    const eval::ScoreResult result = eval::score_predictions(o->task, table, o->pred, scorers.score_options());
    std::string dir = o->output;
    if (dir.empty()) dir = (fs::path(o->pred).parent_path() / (fs::path(o->pred).stem().string() + "_m3d_score")).string();
    fs::create_directories(dir);
    std::string csv = io::csv_line(result.scored.header);
    for (const auto& row : result.scored.rows) csv += io::csv_line(row);
    io::write_file_atomic(dir + "/scored.csv", csv);
    io::write_file_atomic(dir + "/summary.json", result.summary.dump(2) + "\n");
    io::write_file_atomic(dir + "/summary.md", result.markdown);
    std::fputs(result.markdown.c_str(), stdout);
    std::fprintf(stderr, "m3d score: %s/{scored.csv, summary.json, summary.md}\n", dir.c_str());
  });
}

}  // namespace m3d::cli
