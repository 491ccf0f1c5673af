// `m3d score`: recompute M3D-Bench metrics on a predictions CSV with the official
// columns (from m3d or from the official Python evaluation), so both score alike.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "eval/meteor.h"
#include "io/csv.h"

namespace m3d::eval {

// report, vqa-open, reg, vqa-closed, rec.
std::vector<std::string> score_task_names();
// report, vqa-open, reg: BLEU-1, ROUGE, METEOR and BERTScore F1 per sample.
bool score_task_is_text(const std::string& task);

// BERTScore F1 of each (prediction, reference) pair, both already strip()ped.
using BertF1Function = std::function<std::vector<double>(const std::vector<std::string>& predictions, const std::vector<std::string>& references)>;

// What the text tasks (report, vqa-open, reg) need beyond the CSV.
struct ScoreOptions {
  const MeteorData* meteor = nullptr;  // required by the text tasks (score_meteor_data_load)
  // Unset: no m3d_bert_f1 column, and the summary says why ("not_computed"). BERTScore needs
  // libtorch, which this torch-free part of m3d does not link: the m3d library fills it.
  BertF1Function bert_f1;
  std::string bert_f1_setting;  // the model and options behind bert_f1, recorded in the summary
};

// METEOR's data for m3d score and m3d bench. punkt_dir empty: kPunktEnglishDir under the working
// directory, else under the folder above the m3d program (a build folder of the repository);
// wordnet_dir empty: kWordNetDir. The error names every place tried and how to get the files.
MeteorData score_meteor_data_load(const std::string& punkt_dir, const std::string& wordnet_dir);

struct ScoreResult {
  io::CsvTable scored;  // the input with m3d_* metric columns appended
  nlohmann::json summary;  // task, source, samples, metrics, groups; not_computed: metric -> why
  std::string markdown;  // a table of the summary
};

ScoreResult score_predictions(const std::string& task, const io::CsvTable& table, const std::string& source, const ScoreOptions& options = {});

}  // namespace m3d::eval
