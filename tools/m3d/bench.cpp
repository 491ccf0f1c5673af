// m3d bench: an M3D-Bench task end to end (model on M3D-Data, then the metrics).
#include <cstdio>
#include <fstream>
#include <iterator>

#include "commands.h"
#include "eval/bench.h"
#include "m3d/error.h"
#include "options.h"

namespace m3d::cli {

void add_bench(CLI::App& app) {
  auto o = std::make_shared<eval::BenchOptions>();
  auto dtype = std::make_shared<std::string>("f32");
  CLI::App* cmd = app.add_subcommand("bench", "Run an M3D-Bench task (itr, report, vqa-closed, vqa-open, rec, reg) and score it; resumable");
  add_model_option(cmd, o->model_dir, "LaMed or Med3DVLM (not needed with --predictor oracle|constant)", /*required=*/false);
  cmd->add_option("--predictor", o->predictor, "model, or a baseline: oracle (the references) or constant (one fixed answer)")
      ->check(CLI::IsMember({"model", "oracle", "constant"}))
      ->capture_default_str();
  cmd->add_option("--data", o->data_dir, "M3D-Data root (M3D_Cap_npy/M3D_Cap.json, M3D-VQA/M3D_VQA_test.csv, images)")->required();
  cmd->add_option("--task", o->task, "itr (an M3D-CLIP --model), report, vqa-closed, vqa-open, rec, reg, seg (baselines only) or all (refseg: not yet)")
      ->required();
  cmd->add_option("-o,--output", o->output_dir,
                  "Output folder (default bench_<task>; with --task all, one subfolder per task under it, default bench/); rerun to resume");
  cmd->add_option("--split", o->split, "M3D-Cap json split for report")->capture_default_str();
  cmd->add_option("--cap-json", o->cap_json, "The M3D-Cap json, when not in the usual place");
  cmd->add_option("--vqa-csv", o->vqa_csv, "The M3D-VQA csv, when not in the usual place");
  cmd->add_option("--seg-dataset", o->seg_dataset, "M3D-Seg dataset code for rec / reg")->capture_default_str();
  cmd->add_option("--seg-json", o->seg_json, "The M3D-Seg <code>.json, when not in the usual place");
  cmd->add_option("--labels", o->labels, "Class names by mask index (rec / reg; built in for 0003 and 0012)")->delimiter(',');
  cmd->add_option("--prompt", o->report_prompt, "Report prompt (one of M3D's caption templates)")->capture_default_str();
  cmd->add_option("--protocol", o->protocol,
                  "m3d: greedy, as M3D's Bench scripts; med3dvlm: as Med3DVLM's eval scripts (sampling at temperature 1 seeded per sample, "
                  "top_k and repetition penalty from generation_config.json, a report prompt drawn per sample)")
      ->check(CLI::IsMember({"m3d", "med3dvlm"}))
      ->capture_default_str();
  cmd->add_option("--limit", o->limit, "Only the first N samples");
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "As the official scripts")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--overwrite", o->overwrite,
                "Discard predictions already in the output folder (a rerun otherwise resumes them, and refuses another model's or setting's)");
  add_dtype_option(cmd, *dtype);
  // The same metric options as m3d score.
  add_text_metric_options(cmd, o->punkt_dir, o->wordnet_dir, o->bertscore);
  cmd->callback([o, dtype] {
    if (o->predictor == "model" && o->model_dir.empty()) fail("m3d bench: --model is required (or --predictor oracle|constant)");
    o->dtype = parse_dtype(*dtype);
    std::vector<std::string> tasks = {o->task};
    if (o->task == "all") tasks = eval::bench_task_names();
    const std::string base = o->output_dir.empty() ? "bench" : o->output_dir;
    for (const auto& task : tasks) {
      eval::BenchOptions run = *o;
      run.task = task;
      run.output_dir = o->task == "all" ? base + "/" + task : (o->output_dir.empty() ? "bench_" + task : o->output_dir);
      try {
        eval::bench_run(run);
      } catch (const Error& e) {
        if (o->task != "all") throw;
        std::printf("%s: skipped: %s\n\n", task.c_str(), e.what());  // e.g. no data for it, or seg without a baseline predictor
        continue;
      }
      std::ifstream table(run.output_dir + "/summary.md");
      std::printf("%s\n%s\n", run.output_dir.c_str(), std::string(std::istreambuf_iterator<char>(table), {}).c_str());
    }
    if (o->task == "all") {
      for (const auto& u : eval::bench_unsupported_tasks()) std::printf("%s\n", u.c_str());
    }
  });
}

}  // namespace m3d::cli
