// `m3d score`: recompute M3D-Bench metrics on a predictions CSV with the official
// columns (from m3d or from the official Python evaluation), so both score alike.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "io/csv.h"

namespace m3d::eval {

// report, vqa-open, reg, vqa-closed, rec.
std::vector<std::string> score_task_names();

struct ScoreResult {
  io::CsvTable scored;  // the input with m3d_* metric columns appended
  nlohmann::json summary;  // task, samples, metrics, groups, not_implemented
  std::string markdown;  // a table of the summary
};

ScoreResult score_predictions(const std::string& task, const io::CsvTable& table, const std::string& source);

}  // namespace m3d::eval
