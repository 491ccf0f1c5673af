// m3d quickstart: the whole system on a fresh machine, nothing downloaded. Generates
// a synthetic CT set, trains a tiny M3D-CLIP and a tiny LaMed on it (its ViT from
// the CLIP), scores M3D-Bench on the test split against the constant-answer
// baseline, and writes worked examples (a report, a VQA answer, a box mapped back
// onto the original scan, preview PNGs) into one folder with an index.html.
// Every stage is cached in the output folder: a rerun reuses what is done.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <torch/torch.h>

#include "commands.h"
#include "data/synth.h"
#include "eval/bench.h"
#include "imaging/preprocess.h"
#include "imaging/volume_io.h"
#include "io/atomic_file.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "m3d/session.h"
#include "text/box.h"
#include "train/clip_train.h"
#include "train/lamed_train.h"

namespace m3d::cli {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct QuickstartOptions {
  std::string output = "m3d-quickstart";
  std::string family = "lamed";  // lamed | med3dvlm
  bool quick = false;  // a smoke run: a few studies and steps (tests)
  bool progress = true;
};

// What differs between the two families' runs. Both share the data folder, so one
// output folder can hold both; each has its own training folders, bench outputs and page.
struct Family {
  std::string name, clip_preset, vlm_preset, tokenizer;
  std::string clip_dir, vlm_dir, prefix;  // training folders; prefix of the bench folders and the page
  std::string clip_label, vlm_label, model_label;  // for the stage lines and the page
  bool positioning;  // REC rows and the box example (LaMed); Med3DVLM has no positioning task
};

Family family_of(const std::string& name) {
  if (name == "lamed") {
    return {"lamed",
            "tiny",
            "tiny",
            "third_party/tokenizers/llama2",
            "clip",
            "lamed",
            "",
            "a tiny M3D-CLIP: contrastive image-report pre-training (m3d train clip --preset tiny)",
            "a tiny LaMed: ViT from the CLIP, Llama-style LLM from scratch, on Cap + VQA + REC + REG (m3d train lamed --preset tiny)",
            "m3d tiny LaMed",
            true};
  }
  if (name == "med3dvlm") {
    return {"med3dvlm",
            "med3dvlm-tiny",
            "med3dvlm-tiny",
            "third_party/tokenizers/qwen2_5",
            "siglip",
            "med3dvlm",
            "med3dvlm-",
            "a tiny DCFormer_SigLIP: sigmoid-loss image-report pre-training (m3d train clip --preset med3dvlm-tiny)",
            "a tiny Med3DVLM: DCFormer from the SigLIP, mixer projector, Qwen2-style LLM from scratch, on Cap + VQA (m3d train lamed --preset "
            "med3dvlm-tiny)",
            "m3d tiny Med3DVLM",
            false};
  }
  fail("quickstart: unknown family '{}' (supported: lamed, med3dvlm)", name);
}

// Sizes of the run: the full quickstart, or the smoke run.
struct Plan {
  int64_t studies, clip_steps, clip_batch, lamed_steps, lamed_batch, report_limit, vqa_limit, rec_limit;
};

Plan plan_for(bool quick) {
  if (quick) return {24, 2, 8, 2, 4, 2, 4, 4};
  return {200, 120, 32, 650, 16, 20, -1, 60};
}

// A file shipped beside the sources (third_party/...): from the working directory,
// else relative to the executable (build/m3d -> the checkout).
std::string find_data(const std::string& relative) {
  if (fs::exists(relative)) return relative;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (fs::path dir = exe.parent_path(); !ec && !dir.empty() && dir != dir.root_path(); dir = dir.parent_path()) {
    if (fs::exists(dir / relative)) return (dir / relative).string();
  }
  fail("{} not found (run scripts/setup.sh, which fetches it, and start m3d from the checkout)", relative);
}

void stage(int n, const char* what) { std::fprintf(stderr, "\n[m3d quickstart %d/5] %s\n", n, what); }

// The newest complete checkpoint-N of a training folder.
std::string newest_checkpoint(const std::string& dir) {
  const auto all = train::list_checkpoints(dir);
  if (all.empty()) fail("{}: training left no checkpoint", dir);
  return all.back().second;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

// A (D, H, W) unit-range volume's slice `d` as 8-bit grey, `scale` times larger, with a box outline.
void preview_png(const std::string& path, const at::Tensor& volume, int64_t d, const std::optional<ScanBox>& box, int64_t scale) {
  const int64_t D = volume.size(0), H = volume.size(1), W = volume.size(2);
  auto slice = volume[std::clamp<int64_t>(d, 0, D - 1)].clamp(0, 1).mul(255).to(torch::kUInt8).contiguous();
  if (scale > 1) slice = slice.repeat_interleave(scale, 0).repeat_interleave(scale, 1).contiguous();
  const int64_t h = H * scale, w = W * scale;
  std::vector<uint8_t> grey(slice.data_ptr<uint8_t>(), slice.data_ptr<uint8_t>() + h * w);
  if (box) {
    const auto& b = box->normalized;
    const int64_t y0 = std::clamp<int64_t>(static_cast<int64_t>(b[1] * H * scale), 0, h - 1),
                  y1 = std::clamp<int64_t>(static_cast<int64_t>((b[4] * H + 1) * scale), 0, h - 1);
    const int64_t x0 = std::clamp<int64_t>(static_cast<int64_t>(b[2] * W * scale), 0, w - 1),
                  x1 = std::clamp<int64_t>(static_cast<int64_t>((b[5] * W + 1) * scale), 0, w - 1);
    for (int64_t x = x0; x <= x1; ++x) grey[static_cast<size_t>(y0 * w + x)] = grey[static_cast<size_t>(y1 * w + x)] = 255;
    for (int64_t y = y0; y <= y1; ++y) grey[static_cast<size_t>(y * w + x0)] = grey[static_cast<size_t>(y * w + x1)] = 255;
  }
  imaging::png_write(path, w, h, grey);
}

json run_bench(const std::string& data, const std::string& task, const std::string& out, const std::string& model, int64_t limit, bool progress) {
  eval::BenchOptions o;
  o.data_dir = data;
  o.task = task;
  o.output_dir = out;
  o.limit = limit;
  o.seg_dataset = "synth";
  o.progress = progress;
  o.max_new_tokens = task == "report" ? 160 : task == "rec" ? 96 : 48;
  o.punkt_dir = find_data("third_party/nltk/tokenizers/punkt_tab/english");
  if (model.empty()) o.predictor = "constant";
  else o.model_dir = model;
  return json::parse(eval::bench_run(o));
}

// Stage 5: one test study as a hospital scan, asked through the public API, and the page.
void write_examples(const Family& f, const std::string& out, const std::string& data, const std::string& model, const json& summary, int64_t studies,
                    std::chrono::steady_clock::time_point start) {
  const std::string examples_name = f.prefix + "examples", examples = out + "/" + examples_name;
  fs::create_directories(examples);
  const json cap = io::json_read_file(data + "/M3D_Cap_npy/M3D_Cap.json");
  const std::string image_rel = cap["test"][0]["image"];
  const std::string study_dir = fs::path(data + "/" + image_rel).parent_path().string();
  const json truth = io::json_read_file(study_dir + "/truth.json");
  // The "original scan": the study's HU volume as a NIfTI with its spacing, prepared
  // like any hospital scan.
  const int64_t index = std::stoll(fs::path(study_dir).filename().string());  // studies are named by index
  const data::Study study = data::synth_study(0, index);
  imaging::Volume ct;
  ct.geometry.spacing = {study.spacing_dhw[2], study.spacing_dhw[1], study.spacing_dhw[0]};
  ct.voxels = study.hu.round().to(at::kShort);
  const std::string ct_path = examples + "/ct.nii.gz";
  imaging::volume_write(ct_path, imaging::volume_to_raw(ct));
  // As any program would (m3d generate, examples/simple.cpp): the public API, the scan
  // prepared by the model's own recipe (final/m3d_recipe.json: m3d-lamed, then the
  // resize to the tiny model's grid that its training volumes had).
  Session session(Model::open(model));
  session.set_scan(PreparedScan::prepare(ct_path, {"auto", model, ""}));
  AskOptions ask;
  ask.sample = false;
  ask.max_new_tokens = 160;
  const std::string report = session.ask("Describe the findings of the medical image you see.", ask).text;
  ask.max_new_tokens = 48;
  std::string vqa_question, vqa_truth;
  for (const auto& item : truth["vqa"]) {
    if (item.value("type", 0) == 1) {  // plane
      vqa_question = fmt::format("{} Choices: A. {} B. {} C. {} D. {}", item["question"].get<std::string>(), item["choices"][0].get<std::string>(),
                                 item["choices"][1].get<std::string>(), item["choices"][2].get<std::string>(), item["choices"][3].get<std::string>());
      vqa_truth = item["answer_choice"].get<std::string>() + ". " + item["answer"].get<std::string>();
      break;
    }
  }
  const std::string vqa_answer = vqa_question.empty() ? "" : session.ask(" " + vqa_question, ask).text;
  json example = {{"study", truth["id"]},         {"scan", "ct.nii.gz"},      {"report", report},          {"reference_report", truth["report"]},
                  {"vqa_question", vqa_question}, {"vqa_answer", vqa_answer}, {"vqa_reference", vqa_truth}};
  std::optional<ScanBox> box;
  std::string rec_html;
  if (f.positioning) {
    const std::string organ = truth["organs"].empty() ? "liver" : truth["organs"][0].get<std::string>();
    const std::string rec_question = fmt::format("Can you find the {} in this image? Give coordinates.", organ);
    const Answer rec = session.ask(" " + rec_question, ask);
    box = rec.box;
    example["rec_question"] = rec_question;
    example["rec_answer"] = rec.text;
    std::string box_html = "the model gave no box";
    if (box) {
      example["box_model"] = box->normalized;
      example["box_original_voxels"] = {box->scan_min, box->scan_max};
      example["box_original_mm"] = {box->mm_min, box->mm_max};
      box_html = fmt::format(
          "model box {} &rarr; on the original scan voxels (i, j, k) [{:.0f}, {:.0f}, {:.0f}] to [{:.0f}, {:.0f}, {:.0f}], "
          "LPS mm [{:.1f}, {:.1f}, {:.1f}] to [{:.1f}, {:.1f}, {:.1f}]",
          text::box_text(box->normalized), box->scan_min[0], box->scan_min[1], box->scan_min[2], box->scan_max[0], box->scan_max[1], box->scan_max[2],
          box->mm_min[0], box->mm_min[1], box->mm_min[2], box->mm_max[0], box->mm_max[1], box->mm_max[2]);
    }
    rec_html = "<h3>Positioning (REC)</h3><p>" + html_escape(rec_question) + "</p><pre>" + html_escape(rec.text) + "</pre><p>" + box_html +
               "</p><img src=" + examples_name + "/rec_box.png>";
  }
  // The previews show what the model sees: its grid, scaled up 4x.
  const auto dhw = session.scan()->model_size();
  const at::Tensor shown = at::from_blob(const_cast<float*>(session.scan()->model_voxels().data()), {dhw[0], dhw[1], dhw[2]}, at::kFloat);
  preview_png(examples + "/preview.png", shown, dhw[0] / 2, std::nullopt, 4);
  if (f.positioning) {
    const int64_t middle = box ? static_cast<int64_t>((box->normalized[0] + box->normalized[3]) / 2 * static_cast<double>(dhw[0])) : dhw[0] / 2;
    preview_png(examples + "/rec_box.png", shown, middle, box, 4);
  }
  io::write_file_atomic(examples + "/example.json", example.dump(2) + "\n");

  const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60;
  std::ostringstream html;
  html << "<!doctype html><meta charset=utf-8><title>m3d quickstart</title>"
       << "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
       << "pre{white-space:pre-wrap;background:#f4f4f4;padding:8px}</style>"
       << "<h1>m3d quickstart: " << f.model_label << "</h1><p>Synthetic CT studies (" << studies << "), the tiny contrastive model and the " << f.model_label
       << " trained on them on this machine, scored on the test split. Everything here was made by <code>m3d quickstart --family " << f.name
       << "</code>.</p><h2>M3D-Bench (test split)</h2><table>"
       << "<tr><th>task</th><th>metric</th><th>" << f.model_label << "</th><th>constant answer</th><th>samples</th></tr>";
  for (const auto& r : summary) {
    html << fmt::format("<tr><td>{}</td><td>{}</td><td>{:.3f}</td><td>{:.3f}</td><td>{}</td></tr>", r["task"].get<std::string>(),
                        r["metric"].get<std::string>(), r["model"].get<double>(), r["constant"].get<double>(), r["samples"].get<int64_t>());
  }
  html << "</table><h2>Study " << html_escape(truth["id"].get<std::string>()) << "</h2>"
       << "<p>The original scan <a href=" << examples_name << "/ct.nii.gz>ct.nii.gz</a>, prepared by the model's recipe (<code>" << f.vlm_dir
       << "/final/m3d_recipe.json</code>: m3d-lamed, then resized to the model grid; its middle slice):</p>"
       << "<img src=" << examples_name << "/preview.png>"
       << "<h3>Report</h3><pre>" << html_escape(report) << "</pre><p>Reference:</p><pre>" << html_escape(truth["report"].get<std::string>()) << "</pre>"
       << "<h3>Visual question answering</h3><p>" << html_escape(vqa_question) << "</p><pre>" << html_escape(vqa_answer)
       << "</pre><p>Reference: " << html_escape(vqa_truth) << "</p>" << rec_html
       << fmt::format("<p>Made in {:.1f} minutes. Bench outputs: <code>bench/</code>; models: <code>{}/</code>, <code>{}/final</code>.</p>", minutes,
                      f.clip_dir, f.vlm_dir);
  io::write_file_atomic(out + "/" + f.prefix + "index.html", html.str());
}

int run(const QuickstartOptions& q) {
  const auto start = std::chrono::steady_clock::now();
  const Plan p = plan_for(q.quick);
  const Family f = family_of(q.family);
  const std::string out = q.output, data = out + "/data";
  fs::create_directories(out);

  stage(1, "synthetic CT studies with known truth (m3d synth)");
  if (!fs::exists(data + "/M3D_Cap_npy/M3D_Cap.json")) {
    data::SynthOptions s;
    s.count = p.studies;
    s.output = data + ".partial";
    s.progress = q.progress;
    fs::remove_all(s.output);
    data::synth_write(s);
    fs::rename(s.output, data);
  } else {
    std::fprintf(stderr, "reusing %s\n", data.c_str());
  }

  train::TrainRunOptions run;
  run.resume = true;  // a finished run resumes at its end: nothing to do
  run.progress = q.progress;

  stage(2, f.clip_label.c_str());
  json clip = train::clip_train_preset(f.clip_preset);
  clip["text_init"] = find_data("third_party/models/all-MiniLM-L6-v2");
  clip["data"] = data;
  clip["output_dir"] = out + "/" + f.clip_dir;
  clip["max_steps"] = p.clip_steps;
  clip["batch_size"] = p.clip_batch;
  clip["save_steps"] = p.clip_steps;
  clip["eval_fraction"] = 0.0;
  clip["save_total_limit"] = 1;
  train::clip_train(train::ClipTrainConfig::from_json(clip, "the quickstart CLIP config"), run);
  const std::string clip_dir = newest_checkpoint(out + "/" + f.clip_dir);

  stage(3, f.vlm_label.c_str());
  json lamed = train::lamed_train_preset(f.vlm_preset);
  lamed["tokenizer"] = find_data(f.tokenizer);
  lamed["vision_init"] = clip_dir;
  lamed["data"] = data;
  lamed["output_dir"] = out + "/" + f.vlm_dir;
  lamed["max_steps"] = p.lamed_steps;
  lamed["batch_size"] = p.lamed_batch;
  lamed["save_steps"] = std::max<int64_t>(p.lamed_steps / 2, 1);
  lamed["save_total_limit"] = 1;
  const std::string model = out + "/" + f.vlm_dir + "/final";
  if (!fs::exists(model + "/model.safetensors")) {
    train::lamed_train(train::LamedTrainConfig::from_json(lamed, "the quickstart " + f.name + " config"), run);
  } else {
    std::fprintf(stderr, "reusing %s\n", model.c_str());
  }

  stage(4, "M3D-Bench on the test split: the model against the constant-answer baseline (m3d bench)");
  struct Row {
    std::string task, metric, label;
    int64_t limit;
  };
  std::vector<Row> rows = {{"vqa-closed", "m3d_correct", "closed VQA accuracy (chance 0.25)", p.vqa_limit},
                           {"report", "m3d_meteor", "report METEOR", p.report_limit},
                           {"report", "m3d_rouge1", "report ROUGE-1", p.report_limit}};
  if (f.positioning) {
    rows.push_back({"rec", "m3d_acc_iou0.5", "REC accuracy@0.5", p.rec_limit});
    rows.push_back({"rec", "m3d_iou", "REC mean IoU", p.rec_limit});
  }
  std::map<std::string, std::pair<json, json>> results;
  for (const auto& row : rows) {
    if (results.count(row.task)) continue;
    results[row.task] = {run_bench(data, row.task, out + "/bench/" + f.prefix + row.task, model, row.limit, q.progress),
                         run_bench(data, row.task, out + "/bench/" + row.task + "-constant", "", row.limit, false)};
  }
  std::ostringstream table;
  table << "| task | metric | " << f.model_label << " | constant answer | samples |\n|---|---|---|---|---|\n";
  json summary = json::array();
  for (const auto& row : rows) {
    const auto& [model_result, constant] = results[row.task];
    const double m = model_result["metrics"].value(row.metric, 0.0), c = constant["metrics"].value(row.metric, 0.0);
    table << fmt::format("| {} | {} | {:.3f} | {:.3f} | {} |\n", row.task, row.label, m, c, model_result.value("samples", 0));
    summary.push_back({{"task", row.task}, {"metric", row.metric}, {"model", m}, {"constant", c}, {"samples", model_result.value("samples", 0)}});
  }
  io::write_file_atomic(out + "/" + f.prefix + "bench.md", table.str());
  io::write_file_atomic(out + "/" + f.prefix + "bench.json", summary.dump(2) + "\n");

  stage(5,
        f.positioning ? "worked examples: a report, a VQA answer, a box on the original scan, previews" : "worked examples: a report, a VQA answer, previews");
  write_examples(f, out, data, model, summary, p.studies, start);
  std::printf("\n%s\nexamples: %s/%sindex.html\n", table.str().c_str(), out.c_str(), f.prefix.c_str());
  return 0;
}

}  // namespace

void add_quickstart(CLI::App& app) {
  auto q = std::make_shared<QuickstartOptions>();
  CLI::App* cmd =
      app.add_subcommand("quickstart", "Synthetic data, a tiny CLIP + LaMed (or Med3DVLM) trained here, M3D-Bench and worked examples, in one folder");
  cmd->add_option("-o,--output", q->output, "Output folder (reused by a rerun)")->capture_default_str();
  cmd->add_option("--family", q->family, "Which system: lamed (M3D: M3D-CLIP + LaMed) or med3dvlm (DCFormer_SigLIP + Med3DVLM)")
      ->check(CLI::IsMember({"lamed", "med3dvlm"}))
      ->capture_default_str();
  cmd->add_flag("--quick", q->quick, "A smoke run: a few studies and training steps (minutes less, results meaningless)");
  cmd->add_flag(
      "--no-progress", [q](int64_t) { q->progress = false; }, "No progress bars");
  cmd->callback([q] { run(*q); });
}

}  // namespace m3d::cli
