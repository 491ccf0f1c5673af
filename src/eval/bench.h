// `m3d bench`: run a LaMed model on an M3D-Bench task over M3D-Data files, the
// way the official Bench/eval scripts do (prompts, greedy decoding, 256 new tokens),
// and score it with eval/score.h. Resumable: every finished sample is appended to
// a journal (predictions.jsonl); a rerun skips what is there, and a last line cut
// short by a kill is dropped and redone.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "eval/bertscore.h"
#include "eval/score.h"

namespace m3d::eval {

// METEOR's data and, with a model folder, a BERTScore scorer: what score_predictions needs for
// the text tasks in m3d score and m3d bench.
struct TextScorers {
  std::unique_ptr<MeteorData> meteor;
  std::shared_ptr<const BertScorer> bertscore;  // null without a model
  std::string bertscore_setting;  // e.g. "roberta-large, 17 layers, idf off, not rescaled"
  // bert_f1 scores one sample per call, as the official scripts call bertscore.compute: bert_score
  // matches flattened pairs in padded batches whose composition changes the scores.
  ScoreOptions score_options() const;
};

// punkt_dir, wordnet_dir: score_meteor_data_load's; bertscore.model_dir empty: no BERTScore.
TextScorers text_scorers_load(const std::string& punkt_dir, const std::string& wordnet_dir, const BertScoreOptions& bertscore);

struct BenchOptions {
  std::string model_dir, data_dir, task, output_dir;
  std::string split = "test";  // the M3D-Cap json split (report)
  std::string cap_json, vqa_csv, seg_json;  // explicit data files (default: the M3D-Data layout under data_dir)
  std::string seg_dataset = "0003";  // M3D-Seg dataset code for rec / reg (0003 = AbdomenCT-1k)
  std::vector<std::string> labels;  // class names by mask index (built in for 0003 and 0012)
  std::string report_prompt = "Describe the findings of the medical image you see.";  // one of M3D's Caption_templates
  // How the model answers. "m3d" (M3D's Bench/eval scripts): greedy, report_prompt for
  // every report. "med3dvlm" (Med3DVLM's eval_caption.py / eval_vqa.py, med3dvlm_spec.md
  // §4.7, §6): sampling at temperature 1.0 without top-p, top_k and repetition_penalty
  // from the model's generation_config.json, each sample seeded from 42 and its index (so a
  // resumed run draws what an uninterrupted one would), and each report prompt drawn from
  // report_prompts (data::caption_templates() when empty) the same way.
  std::string protocol = "m3d";
  std::vector<std::string> report_prompts;
  int64_t limit = -1, max_new_tokens = 256;
  c10::ScalarType dtype = c10::kFloat;
  // "model" (default), or a baseline that needs no model: "oracle" answers with the
  // reference, "constant" always gives the same answer (closed VQA "A.", REC the whole
  // volume, text tasks one fixed sentence) — the ceiling and a chance-level floor.
  std::string predictor = "model";
  bool progress = true;
  // An output folder remembers what produced its journal (run.json: model, data, task,
  // generation settings); resuming it with anything else is an error unless
  // `overwrite`, which starts the folder afresh.
  bool overwrite = false;
  // Text tasks (report, vqa-open, reg): METEOR's data folders and BERTScore (text_scorers_load).
  std::string punkt_dir, wordnet_dir;
  BertScoreOptions bertscore;
};

// report, vqa-closed, vqa-open, rec, reg run here; the others need parts m3d does not have yet.
std::vector<std::string> bench_task_names();
std::vector<std::string> bench_unsupported_tasks();  // itr, rec, reg, seg, refseg with the reason

// Runs (or resumes) one task; writes predictions.csv (official columns plus idx),
// summary.json and summary.md into output_dir, returns the summary as JSON text.
std::string bench_run(const BenchOptions& options);

}  // namespace m3d::eval
