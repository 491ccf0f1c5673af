// See bench.h. Protocol: m3d_bench_spec.md §1-2 (eval_caption.py, eval_vqa.py):
// report prompt = 256 image tokens + a caption template (no space); VQA prompt = 256
// image tokens + " " + question [+ " Choices: A. .. B. .. C. .. D. .."]; pandas'
// NA strings in the CSV read as "nan"; greedy decoding, special tokens skipped.
#include "eval/bench.h"

#include <ATen/ATen.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "core/progress.h"
#include "data/m3d_data.h"
#include "data/retrieval.h"
#include "data/sample.h"
#include "eval/score.h"
#include "eval/task_metrics.h"
#include "generate/session.h"
#include "imaging/model_input.h"
#include "io/atomic_file.h"
#include "io/csv.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "models/clip.h"
#include "text/box.h"
#include "text/tokenizer.h"

namespace m3d::eval {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Sample {
  std::string image;  // absolute path
  std::string question;  // what follows the image tokens
  std::vector<std::string> fields;  // the official CSV columns, prediction-independent part
  std::string reference;  // report text / answer / answer choice
  std::string mask;  // seg: the reference mask file
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// pandas read_csv's default NA strings become NaN, printed "nan".
std::string pandas(const std::string& value) {
  static const std::set<std::string> na = {"",     "#N/A", "#N/A N/A", "#NA",  "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                                           "<NA>", "N/A",  "NA",       "NULL", "NaN",     "None",     "n/a",  "nan",  "null"};
  return na.count(value) ? "nan" : value;
}

// REC / REG over M3D-Seg (m3d_bench_spec.md §2.5-2.6, §4.4): one sample per image x class mask; the box is
// mask2box of the model-space mask. One template each, from M3D's prompt_templates.py (the official
// scripts draw one of many at random): REC "Can you find the {} in this image? Give coordinates." /
// "Coordinates are {}." / "Sorry, there is no {}."; REG "What target is present within the coordinates {} ?" /
// "The target is {}." (REG keeps the classes present in the image).
void load_positioning(const BenchOptions& o, std::vector<Sample>& samples, std::vector<std::string>* header) {
  const std::string code = o.seg_dataset;
  const data::SegList list = data::seg_read(data::seg_json_find(o.data_dir, code, o.seg_json), o.data_dir, code, o.labels);
  for (const auto& item : list.items) {
    const std::string& name = list.labels[item.class_index];
    std::vector<int64_t> shape;
    const std::vector<uint8_t> bits = data::seg_mask_read(item.mask, &shape);
    std::optional<Box> box;
    if (shape.size() >= 3 && bits.size() > 1) box = text::mask_to_box(bits, shape[shape.size() - 3], shape[shape.size() - 2], shape[shape.size() - 1]);
    Sample s;
    s.image = item.image;
    s.mask = item.mask;
    if (o.task == "seg") {
      const std::string question = fmt::format("Can you segment the {} in this image?", name);
      s.question = " " + question;
      s.reference = box ? "It is [SEG]." : fmt::format("Sorry, there is no {}.", name);
      s.fields = {"cls", code, question, s.reference};
    } else if (o.task == "rec") {
      const std::string question = fmt::format("Can you find the {} in this image? Give coordinates.", name);
      s.question = " " + question;
      s.reference = box ? fmt::format("Coordinates are {}.", text::box_tagged(*box)) : fmt::format("Sorry, there is no {}.", name);
      s.fields = {"cls", question, s.reference};
    } else {
      if (!box) continue;
      const std::string question = fmt::format("What target is present within the coordinates {} ?", text::box_tagged(*box));
      s.question = " " + question;
      s.reference = fmt::format("The target is {}.", name);
      s.fields = {question, s.reference};
    }
    samples.push_back(s);
  }
  if (o.task == "seg") {
    *header = {"idx", "Question Type", "Dataset Tag", "Question", "Answer", "Pred", "Dice", "m3d_dice_hard"};
  } else if (o.task == "rec") {
    *header = {"idx", "Question Type", "Question", "Answer", "pred", "IOU"};
  } else {
    *header = {"idx", "Question", "Answer", "Pred", "bleu", "rouge1", "meteor", "bert_f1"};
  }
}

// The report prompt of sample `index`: the fixed one (m3d), or one drawn per sample (med3dvlm).
std::string report_prompt_of(const BenchOptions& o, int64_t index) {
  if (o.protocol != "med3dvlm") return o.report_prompt;
  const std::vector<std::string>& prompts = o.report_prompts.empty() ? data::caption_templates() : o.report_prompts;
  auto rng = data::sample_rng(42, 4, 0, static_cast<uint64_t>(index));
  return prompts[std::uniform_int_distribution<size_t>(0, prompts.size() - 1)(rng)];
}

std::vector<Sample> load_samples(const BenchOptions& o, std::vector<std::string>* header) {
  std::vector<Sample> samples;
  if (o.task == "report" || o.task == "itr") {
    for (const auto& pair : data::cap_read(data::cap_find(o.data_dir, o.cap_json), o.split, o.task == "itr" ? o.limit : -1)) {
      Sample s;
      s.image = pair.image;
      s.reference = read_text(pair.text);
      s.question = report_prompt_of(o, static_cast<int64_t>(samples.size()));
      s.fields = {s.question, s.reference};
      if (o.task == "itr") s.fields = {pair.image_entry, pair.text_entry};
      samples.push_back(s);
    }
    *header = {"idx", "Question", "Ground Truth", "pred", "bleu", "rouge1", "meteor", "bert_f1"};
    if (o.task == "itr") *header = {"idx", "image", "text", "image_to_text_rank", "text_to_image_rank", "image_to_text_top1", "text_to_image_top1"};
  } else if (o.task == "vqa-closed" || o.task == "vqa-open") {
    const bool closed = o.task == "vqa-closed";
    for (const auto& row : data::vqa_read(data::vqa_csv_find(o.data_dir, "test", o.vqa_csv), o.data_dir, closed, true)) {
      Sample s;
      s.image = row.image;
      const std::string question = pandas(row.question);
      s.question = " " + question;
      if (closed) {
        s.question +=
            fmt::format(" Choices: A. {} B. {} C. {} D. {}", pandas(row.choices[0]), pandas(row.choices[1]), pandas(row.choices[2]), pandas(row.choices[3]));
        s.reference = row.answer_choice;
        s.fields = {row.question_type, question, pandas(row.answer), s.reference};
      } else {
        s.reference = pandas(row.answer);
        s.fields = {row.question_type, question, s.reference};
      }
      samples.push_back(s);
    }
    *header = closed ? std::vector<std::string>{"idx", "Question Type", "Question", "Answer", "Answer Choice", "Pred", "Correct"}
                     : std::vector<std::string>{"idx", "Question Type", "Question", "Answer", "Pred", "bleu", "rouge1", "meteor", "bert_f1"};
  } else if (o.task == "rec" || o.task == "reg" || o.task == "seg") {
    if (o.task == "seg" && o.predictor == "model")
      fail("m3d bench: task seg with a model needs the SegVol mask decoder (not built yet); --predictor oracle|constant scores the references");
    load_positioning(o, samples, header);
  } else {
    for (const auto& u : bench_unsupported_tasks()) {
      if (u.rfind(o.task + ":", 0) == 0) fail("m3d bench: task {}", u);
    }
    std::string names;
    for (const auto& n : bench_task_names()) names += (names.empty() ? "" : ", ") + n;
    fail("m3d bench: unknown task '{}' (supported: {})", o.task, names);
  }
  if (o.limit >= 0 && static_cast<int64_t>(samples.size()) > o.limit) samples.resize(static_cast<size_t>(o.limit));
  if (samples.empty()) fail("m3d bench: no samples for task {}", o.task);
  return samples;
}

// Finished samples: idx -> {"pred", and for seg "dice", "dice_hard"}. A last line without its newline (a kill mid-write) is dropped.
std::map<int64_t, json> read_journal(const std::string& path, const std::string& task) {
  std::map<int64_t, json> done;
  if (!fs::exists(path)) return done;
  const std::string text = read_text(path);
  size_t start = 0;
  while (true) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) break;  // incomplete last record
    try {
      const json j = json::parse(text.substr(start, end - start));
      if (j.at("task") != task) fail("{}: holds task {}, not {}; use another --output", path, j.at("task").get<std::string>(), task);
      j.at("pred").get<std::string>();
      done[j.at("idx").get<int64_t>()] = j;
    } catch (const json::exception&) {
      break;  // a damaged record: redo from here
    }
    start = end + 1;
  }
  return done;
}

}  // namespace

TextScorers text_scorers_load(const std::string& punkt_dir, const std::string& wordnet_dir, const BertScoreOptions& bertscore) {
  TextScorers out;
  out.meteor = std::make_unique<MeteorData>(score_meteor_data_load(punkt_dir, wordnet_dir));
  if (!bertscore.model_dir.empty()) {
    auto scorer = std::make_shared<const BertScorer>(bertscore);
    out.bertscore_setting = fmt::format("{}, {} layers, idf {}, {}", bertscore.model_dir, scorer->num_layers(), bertscore.idf ? "on" : "off",
                                        bertscore.baseline_path.empty() ? "not rescaled" : "rescaled by " + bertscore.baseline_path);
    out.bertscore = std::move(scorer);
  }
  return out;
}

ScoreOptions TextScorers::score_options() const {
  ScoreOptions options;
  options.meteor = meteor.get();
  if (bertscore) {
    options.bert_f1 = [scorer = bertscore](const std::vector<std::string>& predictions, const std::vector<std::string>& references) {
      Progress progress("m3d BERTScore", static_cast<int64_t>(predictions.size()), isatty(STDERR_FILENO) == 1);  // no option reaches here
      std::vector<double> f1;
      for (size_t i = 0; i < predictions.size(); ++i) {
        f1.push_back(scorer->score({predictions[i]}, {{references[i]}}).at(0).fmeasure);
        progress.update(static_cast<int64_t>(i + 1));
      }
      return f1;
    };
    options.bert_f1_setting = bertscore_setting;
  }
  return options;
}

std::vector<std::string> bench_task_names() { return data::task_names(data::TaskUser::Bench); }

std::vector<std::string> bench_unsupported_tasks() { return {"refseg: needs the SegVol mask decoder (not built yet)"}; }

namespace {

// What defines a run's predictions: the model (its folder, config and weight sizes),
// the data files, the task and the generation settings. --limit may grow between runs.
json run_identity(const BenchOptions& o) {
  json model = nullptr;
  if (o.predictor == "model") {
    std::error_code ec;
    const fs::path dir = fs::weakly_canonical(o.model_dir, ec);
    uintmax_t weight_bytes = 0;
    for (const auto& entry : fs::directory_iterator(o.model_dir, ec)) {
      const std::string ext = entry.path().extension().string();
      if (ext == ".safetensors" || ext == ".bin" || ext == ".pt") weight_bytes += entry.file_size(ec);
    }
    const std::string config_path = o.model_dir + "/config.json";
    model = {{"dir", dir.string()}, {"weight_bytes", weight_bytes}, {"config", fs::exists(config_path) ? io::json_read_file(config_path) : json(nullptr)}};
  }
  std::error_code ec;
  return {{"task", o.task},
          {"predictor", o.predictor},
          {"model", model},
          {"data", fs::weakly_canonical(o.data_dir, ec).string()},
          {"split", o.split},
          {"cap_json", o.cap_json},
          {"vqa_csv", o.vqa_csv},
          {"seg_json", o.seg_json},
          {"seg_dataset", o.seg_dataset},
          {"labels", o.labels},
          {"prompt", o.report_prompt},
          {"protocol", o.protocol},
          {"report_prompts", o.report_prompts},
          {"max_new_tokens", o.max_new_tokens},
          {"dtype", c10::toString(o.dtype)}};
}

// The finished samples of a previous run of the same identity; the journal is
// rewritten without a damaged tail, ready for appending.
std::map<int64_t, json> open_journal(const BenchOptions& o) {
  fs::create_directories(o.output_dir);
  const std::string journal_path = o.output_dir + "/predictions.jsonl", identity_path = o.output_dir + "/run.json";
  const json identity = run_identity(o);
  if (o.overwrite) {
    for (const char* file : {"/predictions.jsonl", "/predictions.csv", "/summary.json", "/summary.md", "/run.json"}) fs::remove(o.output_dir + file);
  }
  if (fs::exists(identity_path)) {
    json saved = io::json_read_file(identity_path);
    if (saved.is_object() && !saved.contains("protocol")) {  // a folder made before protocols: M3D's
      saved["protocol"] = "m3d";
      saved["report_prompts"] = json::array();
    }
    if (saved != identity) {
      std::string changed;
      for (const auto& [key, value] : identity.items()) {
        if (!saved.contains(key) || saved[key] != value) changed += (changed.empty() ? "" : ", ") + key;
      }
      fail("{}: this folder holds predictions of another run (different {}); use another -o folder, or --overwrite to start it afresh", o.output_dir, changed);
    }
  } else if (fs::exists(journal_path)) {
    fail("{}: predictions of an unidentified run (no run.json); use another -o folder, or --overwrite to start it afresh", o.output_dir);
  }
  io::write_file_atomic(identity_path, identity.dump(1) + "\n");
  std::map<int64_t, json> done = read_journal(journal_path, o.task);
  std::string clean;
  for (const auto& [idx, record] : done) clean += record.dump() + "\n";
  io::write_file_atomic(journal_path, clean);
  return done;
}

// Image-text retrieval (Bench/eval/eval_itr.py) with an M3D-CLIP checkpoint: every
// image and report embedded (journaled, so a rerun resumes), S = I T^T, recall@1/5/10
// with the code's names: IR = rows are images ranking texts, TR = S^T.
std::string run_itr(const BenchOptions& o, const std::vector<Sample>& samples, const std::vector<std::string>& header) {
  const std::string journal_path = o.output_dir + "/predictions.jsonl";
  std::map<int64_t, json> done = open_journal(o);
  if (done.size() < samples.size()) {
    if (o.predictor != "model") fail("m3d bench: task itr has no baseline predictors; give --model with an M3D-CLIP checkpoint");
    torch::NoGradGuard no_grad;
    models::ClipModel model = models::clip_load(o.model_dir, torch::kFloat);
    const text::Tokenizer tokenizer = text::Tokenizer::load(o.model_dir);
    io::AppendFile journal(journal_path, "the journal");
    Progress progress("m3d bench itr", static_cast<int64_t>(samples.size()), o.progress, static_cast<int64_t>(done.size()));
    for (size_t i = 0; i < samples.size(); ++i) {
      if (done.count(static_cast<int64_t>(i))) continue;
      at::Tensor image = imaging::model_input_from_path(samples[i].image, "", "auto", o.model_dir);
      const auto size = model->config().image_size();  // the ViT's or the DCFormer's grid
      if (image.sizes().slice(2).vec() != std::vector<int64_t>(size.begin(), size.end())) {  // as m3d train clip feeds a smaller model
        image = at::upsample_trilinear3d(image, {size[0], size[1], size[2]}, false);
      }
      // Reports over 512 tokens: the official truncate_text, seeded as eval_itr.py seeds it (42).
      // (A smaller text tower's position table caps the budget.)
      const int64_t budget = std::min<int64_t>(512, model->config().text.max_position_embeddings);
      const std::string report = data::report_truncate_seeded(samples[i].reference, tokenizer, budget, 42, static_cast<int64_t>(i));
      auto ids = tokenizer.encode(report);
      text::truncate_keeping_last(ids, budget);
      const auto input = torch::tensor(ids, torch::kLong).unsqueeze(0);
      const auto image_features = model->encode_image(image)[0].contiguous();
      const auto text_features = model->encode_text(input, torch::ones_like(input))[0].contiguous();
      auto values = [](const at::Tensor& t) { return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel()); };
      const json record = {{"task", o.task}, {"idx", i}, {"pred", ""}, {"image", values(image_features)}, {"text", values(text_features)}};
      journal.append_line(record.dump());
      journal.sync();  // on disk before the next starts: a kill loses at most the one in progress
      done[static_cast<int64_t>(i)] = record;
      const auto n = static_cast<int64_t>(done.size());
      progress.update(n, fmt::format("{:.2f} s/pair", progress.seconds_per_item(n)));
    }
    progress.finish();
  }
  const auto n = static_cast<int64_t>(samples.size());
  std::vector<std::vector<float>> images, texts;
  for (int64_t i = 0; i < n; ++i) {
    images.push_back(done.at(i).at("image").get<std::vector<float>>());
    texts.push_back(done.at(i).at("text").get<std::vector<float>>());
  }
  std::vector<float> similarity(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float dot = 0;
      for (size_t k = 0; k < images[static_cast<size_t>(i)].size(); ++k) dot += images[static_cast<size_t>(i)][k] * texts[static_cast<size_t>(j)][k];
      similarity[static_cast<size_t>(i * n + j)] = dot;
    }
  }
  // Per pair: the rank of the true match (1 = first) and the top-1 choice, both ways.
  io::CsvTable table;
  table.header = header;
  for (int64_t i = 0; i < n; ++i) {
    int64_t i2t_rank = 1, t2i_rank = 1, i2t_top = 0, t2i_top = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (similarity[static_cast<size_t>(i * n + j)] > similarity[static_cast<size_t>(i * n + i)]) ++i2t_rank;
      if (similarity[static_cast<size_t>(j * n + i)] > similarity[static_cast<size_t>(i * n + i)]) ++t2i_rank;
      if (similarity[static_cast<size_t>(i * n + j)] > similarity[static_cast<size_t>(i * n + i2t_top)]) i2t_top = j;
      if (similarity[static_cast<size_t>(j * n + i)] > similarity[static_cast<size_t>(t2i_top * n + i)]) t2i_top = j;
    }
    table.rows.push_back({std::to_string(i), samples[static_cast<size_t>(i)].fields[0], samples[static_cast<size_t>(i)].fields[1], std::to_string(i2t_rank),
                          std::to_string(t2i_rank), std::to_string(i2t_top), std::to_string(t2i_top)});
  }
  std::string csv = io::csv_line(table.header);
  for (const auto& row : table.rows) csv += io::csv_line(row);
  io::write_file_atomic(o.output_dir + "/predictions.csv", csv);
  json metrics;
  for (int64_t k : {1, 5, 10}) {
    metrics[fmt::format("IR_R{}", k)] = data::recall_at_k(similarity, n, k);
    metrics[fmt::format("TR_R{}", k)] = data::recall_at_k_transposed(similarity, n, k);
  }
  json summary = {{"task", "itr"},
                  {"samples", n},
                  {"metrics", metrics},
                  {"model", o.model_dir},
                  {"data", o.data_dir},
                  {"split", o.split},
                  {"naming", "as eval_itr.py: IR = image->text (rows are images), TR = text->image"}};
  std::string md = "| metric | value |\n|---|---|\n";
  for (const auto& [name, value] : metrics.items()) md += fmt::format("| {} | {:.4f} |\n", name, value.get<double>());
  io::write_file_atomic(o.output_dir + "/summary.json", summary.dump(2) + "\n");
  io::write_file_atomic(o.output_dir + "/summary.md", md);
  return summary.dump(2);
}

// The baselines (--predictor oracle|constant) on the samples not yet in the journal.
void predict_baseline(const BenchOptions& o, const std::vector<Sample>& samples, std::map<int64_t, json>& done) {
  const std::string journal_path = o.output_dir + "/predictions.jsonl";
  if (o.predictor != "oracle" && o.predictor != "constant") fail("m3d bench: --predictor must be model, oracle or constant, got '{}'", o.predictor);
  io::AppendFile journal(journal_path, "the journal");
  for (size_t i = 0; i < samples.size(); ++i) {
    if (done.count(static_cast<int64_t>(i))) continue;
    std::string pred;
    json record = {{"task", o.task}, {"idx", i}};
    if (o.task == "seg") {
      // The mask is the reference (oracle) or empty (constant); Dice as eval_seg.py on the model grid.
      const std::vector<uint8_t> bits = data::seg_mask_read(samples[i].mask, nullptr);
      const std::vector<float> g(bits.begin(), bits.end());
      const std::vector<float> p = o.predictor == "oracle" ? g : std::vector<float>(g.size(), 0.0f);
      pred = o.predictor == "oracle" ? samples[i].reference : "It is [SEG].";
      record["dice"] = g.size() == 1 ? 0.0 : dice_soft(p, g);  // a negative's (1,1,1,1) mask: Dice 0, as the official broadcast
      record["dice_hard"] = dice_hard(p, g);
    } else if (o.predictor == "oracle") {
      pred = o.task == "vqa-closed" ? samples[i].reference + ". " + samples[i].fields[2] : samples[i].reference;
    } else {
      pred = o.task == "vqa-closed" ? "A." : o.task == "rec" ? "Coordinates are [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]." : "No acute abnormality.";
    }
    record["pred"] = pred;
    journal.append_line(record.dump());
    done[static_cast<int64_t>(i)] = record;
  }
}

// The model's answers (greedy) on the samples not yet in the journal.
void predict_model(const BenchOptions& o, const std::vector<Sample>& samples, std::map<int64_t, json>& done) {
  const std::string journal_path = o.output_dir + "/predictions.jsonl";
  generate::Session session = generate::session_open(o.model_dir, o.dtype);
  generate::GenerationOptions g = session.defaults;
  g.max_new_tokens = o.max_new_tokens;
  g.do_sample = o.protocol == "med3dvlm";
  if (g.do_sample) {  // eval_*.py: do_sample=True, temperature=1.0, top_p=None; the rest from generation_config.json
    g.temperature = 1.0;
    g.top_p = 1.0;
  }
  io::AppendFile journal(journal_path, "the journal");
  Progress progress("m3d bench " + o.task, static_cast<int64_t>(samples.size()), o.progress, static_cast<int64_t>(done.size()));
  // M3D-Data's .npy are on 32 x 256 x 256; a model trained on another grid (m3d train lamed
  // --preset tiny: 16 x 64 x 64) gets them resized here, as its training loader resized them
  // (load_model_volume): the model itself refuses an image off its grid.
  const models::MultimodalModelImpl* vlm = session.model.lm->multimodal();
  for (size_t i = 0; i < samples.size(); ++i) {
    if (done.count(static_cast<int64_t>(i))) continue;
    at::Tensor image = imaging::model_input_from_path(samples[i].image, "", "auto", o.model_dir);
    if (vlm != nullptr && image.sizes().slice(2) != at::IntArrayRef(vlm->image_grid())) {
      image = at::upsample_trilinear3d(image, vlm->image_grid(), false);  // (1, C, D, H, W) on the model grid
    }
    g.seed = 42 + i;
    const std::string pred = generate::session_answer(session, image, samples[i].question, g);
    const json record = {{"task", o.task}, {"idx", i}, {"pred", pred}};
    journal.append_line(record.dump());
    journal.sync();  // on disk before the next starts: a kill loses at most the one in progress
    done[static_cast<int64_t>(i)] = record;
    const auto n = static_cast<int64_t>(done.size());
    progress.update(n, fmt::format("{:.1f} s/sample", progress.seconds_per_item(n)));
  }
  progress.finish();
}

}  // namespace

std::string bench_run(const BenchOptions& options) {
  BenchOptions o = options;
  if (o.protocol != "m3d" && o.protocol != "med3dvlm") fail("m3d bench: unknown protocol '{}' (supported: m3d, med3dvlm)", o.protocol);
  if (const std::string canonical = data::task_canonical(o.task); !canonical.empty()) o.task = canonical;  // vqa_closed: vqa-closed
  std::vector<std::string> header;
  const std::vector<Sample> samples = load_samples(o, &header);
  if (o.task == "itr") return run_itr(o, samples, header);
  // Before any generation, so that missing metric data stops the run at once.
  const TextScorers scorers = score_task_is_text(o.task) ? text_scorers_load(o.punkt_dir, o.wordnet_dir, o.bertscore) : TextScorers{};
  std::map<int64_t, json> done = open_journal(o);
  size_t todo = 0;
  for (size_t i = 0; i < samples.size(); ++i) todo += !done.count(static_cast<int64_t>(i));
  if (todo > 0 && o.predictor != "model") {
    predict_baseline(o, samples, done);
  } else if (todo > 0) {
    predict_model(o, samples, done);
  }
  // The predictions CSV with the official columns, then the scores.
  io::CsvTable table;
  table.header = header;
  for (size_t i = 0; i < samples.size(); ++i) {
    std::vector<std::string> row = {std::to_string(i)};
    row.insert(row.end(), samples[i].fields.begin(), samples[i].fields.end());
    const json& record = done.at(static_cast<int64_t>(i));
    row.push_back(record.at("pred").get<std::string>());
    if (o.task == "seg") {
      row.push_back(fmt::format("{:.6f}", record.at("dice").get<double>()));
      row.push_back(fmt::format("{:.6f}", record.at("dice_hard").get<double>()));
    }
    while (row.size() < header.size()) row.push_back("");  // metric columns: filled by m3d score's m3d_* columns
    table.rows.push_back(row);
  }
  if (o.task == "vqa-closed") {
    for (auto& row : table.rows) row.back() = row[5].find(row[4] + ".") != std::string::npos ? "1" : "0";
  }
  ScoreResult result = score_predictions(o.task, table, o.output_dir + "/predictions.csv", scorers.score_options());
  if (o.task == "rec") {  // the official IOU column: the enclosing-box IoU, -1 without two boxes
    for (auto& row : result.scored.rows) row[result.scored.column("IOU")] = row[result.scored.column("m3d_iou")];
  }
  // The official metric columns hold the same metrics (BLEU-1, ROUGE-1 F, METEOR, BERTScore F1); bert_f1 stays
  // empty without a BERTScore model.
  for (const auto& [official, ours] :
       {std::pair<const char*, const char*>{"bleu", "m3d_bleu"}, {"rouge1", "m3d_rouge1"}, {"meteor", "m3d_meteor"}, {"bert_f1", "m3d_bert_f1"}}) {
    const int to = result.scored.column(official), from = result.scored.column(ours);
    if (to < 0 || from < 0) continue;
    for (auto& row : result.scored.rows) row[to] = row[from];
  }
  std::string csv = io::csv_line(result.scored.header);
  for (const auto& row : result.scored.rows) csv += io::csv_line(row);
  io::write_file_atomic(o.output_dir + "/predictions.csv", csv);
  json summary = result.summary;
  summary["model"] = o.predictor == "model" ? o.model_dir : o.predictor + " baseline";
  summary["data"] = o.data_dir;
  summary["max_new_tokens"] = o.max_new_tokens;
  if (o.task == "report") summary["prompt"] = o.protocol == "med3dvlm" ? json("one drawn per sample (protocol med3dvlm)") : json(o.report_prompt);
  summary["protocol"] = o.protocol;
  io::write_file_atomic(o.output_dir + "/summary.json", summary.dump(2) + "\n");
  io::write_file_atomic(o.output_dir + "/summary.md", result.markdown);
  return summary.dump(2);
}

}  // namespace m3d::eval
