// See score.h. Columns and rules: m3d_bench_spec.md §2.2-2.6 (eval_caption.py,
// eval_vqa.py, eval_pos.py): predictions and labels are strip()ped before the text
// metrics; BLEU is sentence BLEU-1; ROUGE is rouge_score's F; METEOR is evaluate's
// (nltk 3.8.1); BERTScore F1 comes from the caller; closed VQA is the "<letter>."
// substring rule; REC uses the official enclosing-box IoU (-1 when a box is missing)
// and reports the true IoU beside it.
#include "eval/score.h"

#include <fmt/format.h>

#include <filesystem>
#include <map>

#include "eval/task_metrics.h"
#include "eval/text_metrics.h"
#include "m3d/error.h"
#include "text/box.h"
#include "text/utf8.h"

namespace m3d::eval {
namespace {

using json = nlohmann::json;

int require(const io::CsvTable& t, const std::vector<std::string>& names, const std::string& source, const std::string& task) {
  for (const auto& n : names) {
    const int c = t.column(n);
    if (c >= 0) return c;
  }
  std::string have;
  for (const auto& h : t.header) have += (have.empty() ? "" : ", ") + h;
  fail("{}: task '{}' needs a column '{}'; the file has: {}", source, task, names.front(), have);
}

std::string strip(const std::string& s) { return text::utf8::python_rstrip(text::utf8::python_lstrip(s)); }

std::string number(double v) { return fmt::format("{:.6f}", v); }

struct Mean {
  double sum = 0;
  int64_t count = 0;
  void add(double v) { sum += v, ++count; }
  double value() const { return count ? sum / static_cast<double>(count) : 0.0; }
};

}  // namespace

std::vector<std::string> score_task_names() { return {"report", "vqa-open", "reg", "vqa-closed", "rec", "seg"}; }

bool score_task_is_text(const std::string& task) { return task == "report" || task == "vqa-open" || task == "reg"; }

MeteorData score_meteor_data_load(const std::string& punkt_dir, const std::string& wordnet_dir) {
  namespace fs = std::filesystem;
  std::string punkt = punkt_dir;
  if (punkt.empty()) {
    std::vector<std::string> tried = {kPunktEnglishDir};
    std::error_code error;
    const fs::path program = fs::read_symlink("/proc/self/exe", error);
    if (!error) tried.push_back((program.parent_path().parent_path() / kPunktEnglishDir).string());
    std::string list;
    for (const auto& dir : tried) {
      if (punkt.empty() && fs::exists(dir + "/abbrev_types.txt")) punkt = dir;
      list += (list.empty() ? "" : ", ") + dir;
    }
    if (punkt.empty()) {
      fail(
          "METEOR needs nltk_data's English Punkt parameters, found in none of: {} (run scripts/fetch_vocab.sh in the m3d repository, "
          "or give the folder with --punkt or M3D_PUNKT_DIR)",
          list);
    }
  }
  return meteor_data_load(punkt, wordnet_dir.empty() ? kWordNetDir : wordnet_dir);
}

namespace {

// Per-sample metrics as they are added up: the columns added to the CSV, their means
// over all rows and per group (the question type).
struct Tally {
  std::map<std::string, std::map<std::string, Mean>> groups;  // group -> metric -> mean
  std::map<std::string, Mean> overall;
  std::vector<std::string> added;
};

// report, caption, vqa-open: BLEU, ROUGE, METEOR and (with a model) BERTScore F1.
void score_text(const std::string& task, const io::CsvTable& table, const std::string& source, const ScoreOptions& options, ScoreResult& out, Tally& t) {
  const int pred = require(table, {"pred", "Pred"}, source, task);
  const int ref = require(table, task == "report" ? std::vector<std::string>{"Ground Truth", "Answer"} : std::vector<std::string>{"Answer"}, source, task);
  const int group_column = task == "vqa-open" ? table.column("Question Type") : -1;
  if (options.meteor == nullptr) fail("{}: task '{}' computes METEOR: its data was not given (score_meteor_data_load)", source, task);
  std::vector<std::string> preds, refs;
  for (const auto& row : table.rows) preds.push_back(strip(row[pred])), refs.push_back(strip(row[ref]));
  t.added = {"m3d_bleu", "m3d_rouge1", "m3d_rouge2", "m3d_rougeL", "m3d_rougeLsum", "m3d_meteor"};
  std::vector<double> bert_f1;
  if (options.bert_f1) {
    bert_f1 = options.bert_f1(preds, refs);
    if (bert_f1.size() != preds.size()) fail("{}: BERTScore gave {} values for {} samples", source, bert_f1.size(), preds.size());
    t.added.push_back("m3d_bert_f1");
    out.summary["bert_f1_setting"] = options.bert_f1_setting;
  } else {
    out.summary["not_computed"] = {{"m3d_bert_f1", "needs a BERTScore model: --bertscore-model DIR (the official setting is roberta-large, 17 layers)"}};
  }
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const std::string& p = preds[r];
    const std::string& g = refs[r];
    const RougeScores rs = rouge(p, {g});
    std::vector<double> values = {bleu(p, {g}, 1),    rs.rouge1.fmeasure,    rs.rouge2.fmeasure,
                                  rs.rougeL.fmeasure, rs.rougeLsum.fmeasure, meteor(p, g, *options.meteor)};
    if (!bert_f1.empty()) values.push_back(bert_f1[r]);
    for (size_t m = 0; m < t.added.size(); ++m) {
      out.scored.rows[r].push_back(number(values[m]));
      t.overall[t.added[m]].add(values[m]);
      if (group_column >= 0) t.groups[table.rows[r][group_column]][t.added[m]].add(values[m]);
    }
  }
}

void score_vqa_closed(const std::string& task, const io::CsvTable& table, const std::string& source, ScoreResult& out, Tally& t) {
  const int pred = require(table, {"Pred", "pred"}, source, task);
  const int choice = require(table, {"Answer Choice"}, source, task);
  const int group_column = table.column("Question Type");
  t.added = {"m3d_correct"};
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const double correct = closed_vqa_correct(table.rows[r][pred], table.rows[r][choice]) ? 1.0 : 0.0;
    out.scored.rows[r].push_back(correct ? "1" : "0");
    t.overall["m3d_correct"].add(correct);
    if (group_column >= 0) t.groups[table.rows[r][group_column]]["m3d_correct"].add(correct);
  }
}

// rec: box IoU as the official code computes it and the true IoU, with accuracy at 0.5.
void score_rec(const std::string& task, const io::CsvTable& table, const std::string& source, ScoreResult& out, Tally& t) {
  const int pred = require(table, {"pred", "Pred"}, source, task);
  const int ref = require(table, {"Answer"}, source, task);
  t.added = {"m3d_iou", "m3d_iou_true"};
  Mean acc_official, acc_true, valid_official, valid_true;
  int64_t missing = 0;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto a = text::parse_box(table.rows[r][pred]), b = text::parse_box(table.rows[r][ref]);
    double official = -1, exact = -1;
    if (a && b) {
      official = iou_official(*a, *b);
      exact = iou_true(*a, *b);
      valid_official.add(official);
      valid_true.add(exact);
    } else {
      ++missing;
    }
    acc_official.add(official >= 0.5 ? 1.0 : 0.0);
    acc_true.add(exact >= 0.5 ? 1.0 : 0.0);
    out.scored.rows[r].push_back(number(official));
    out.scored.rows[r].push_back(number(exact));
  }
  t.overall["m3d_iou"] = valid_official;
  t.overall["m3d_iou_true"] = valid_true;
  t.overall["m3d_acc_iou0.5"] = acc_official;
  t.overall["m3d_acc_true_iou0.5"] = acc_true;
  out.summary["rows_without_a_box"] = missing;
}

void score_seg(const std::string& task, const io::CsvTable& table, const std::string& source, Tally& t) {
  const int dice = require(table, {"Dice"}, source, task);
  const int answer = require(table, {"Answer"}, source, task);
  const int hard = table.column("m3d_dice_hard");
  Mean positive;
  for (const auto& row : table.rows) {
    const double d = std::stod(row[dice]);
    t.overall["m3d_dice"].add(d);
    if (row[answer].find("[SEG]") != std::string::npos) positive.add(d);  // the class is in the image
    if (hard >= 0) t.overall["m3d_dice_hard"].add(std::stod(row[hard]));
  }
  t.overall["m3d_dice_positives"] = positive;
}

// The summary's metrics and groups, and the Markdown table of them.
void score_summarize(const std::string& task, const io::CsvTable& table, const std::string& source, const Tally& t, ScoreResult& out) {
  for (const auto& a : t.added) out.scored.header.push_back(a);
  out.summary["task"] = task;
  out.summary["source"] = source;
  out.summary["samples"] = table.rows.size();
  json metrics = json::object();
  for (const auto& [name, mean] : t.overall) metrics[name] = mean.value();
  out.summary["metrics"] = metrics;
  if (!t.groups.empty()) {
    json g = json::object();
    Mean macro;
    for (const auto& [group, ms] : t.groups) {
      json item = json::object();
      for (const auto& [name, mean] : ms) item[name] = mean.value();
      item["samples"] = ms.begin()->second.count;
      g[group] = item;
      if (task == "vqa-closed") macro.add(ms.at("m3d_correct").value());
    }
    out.summary["groups"] = g;
    if (task == "vqa-closed") out.summary["metrics"]["m3d_accuracy_mean_of_types"] = macro.value();
  }
  out.markdown = fmt::format("| {} ({} samples) | value |\n|---|---|\n", task, table.rows.size());
  for (const auto& [name, value] : out.summary["metrics"].items()) out.markdown += fmt::format("| {} | {:.4f} |\n", name, value.get<double>());
  if (out.summary.contains("groups")) {
    for (const auto& [group, item] : out.summary["groups"].items()) {
      for (const auto& [name, value] : item.items()) {
        if (name != "samples") out.markdown += fmt::format("| {} (type {}) | {:.4f} |\n", name, group, value.get<double>());
      }
    }
  }
  if (out.summary.contains("not_computed")) {
    for (const auto& [name, why] : out.summary["not_computed"].items())
      out.markdown += fmt::format("| {} | not computed: {} |\n", name, why.get<std::string>());
  }
}

}  // namespace

ScoreResult score_predictions(const std::string& task, const io::CsvTable& table, const std::string& source, const ScoreOptions& options) {
  ScoreResult out;
  out.scored = table;
  if (table.rows.empty()) fail("{}: no predictions (the CSV has a header and no rows)", source);
  Tally t;
  if (score_task_is_text(task)) {
    score_text(task, table, source, options, out, t);
  } else if (task == "vqa-closed") {
    score_vqa_closed(task, table, source, out, t);
  } else if (task == "rec") {
    score_rec(task, table, source, out, t);
  } else if (task == "seg") {
    score_seg(task, table, source, t);
  } else {
    std::string names;
    for (const auto& n : score_task_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown task '{}' (m3d score supports: {})", task, names);
  }
  score_summarize(task, table, source, t, out);
  return out;
}

}  // namespace m3d::eval
