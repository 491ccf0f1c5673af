// BERTScore (bert_score 0.3.13). Sentences are embedded once each (deduplicated),
// in batches of similar token length with padding masked out, as bert_score does;
// greedy matching then runs per pair on the unpadded embeddings.
#include "eval/bertscore.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/strings.h"
#include "io/json_util.h"
#include "m3d/error.h"
#include "models/bert.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace m3d::eval {

int64_t bertscore_default_layers(const std::string& model_name) {
  static const std::map<std::string, int64_t> layers = {{"bert-base-uncased", 9},
                                                        {"bert-large-uncased", 18},
                                                        {"bert-base-cased-finetuned-mrpc", 9},
                                                        {"bert-base-multilingual-cased", 9},
                                                        {"bert-base-chinese", 8},
                                                        {"roberta-base", 10},
                                                        {"roberta-large", 17},
                                                        {"roberta-large-mnli", 19},
                                                        {"roberta-base-openai-detector", 7},
                                                        {"roberta-large-openai-detector", 15},
                                                        {"distilroberta-base", 5},
                                                        {"xlm-roberta-base", 9},
                                                        {"xlm-roberta-large", 17}};
  auto it = layers.find(model_name);
  return it == layers.end() ? -1 : it->second;
}

namespace {

// bert_score reads the baseline with pandas and takes row `num_layers` (by position).
std::array<double, 3> read_baseline(const std::string& path, int64_t num_layers) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the BERTScore baseline file", path);
  std::string line;
  if (!std::getline(in, line)) fail("{}: the baseline file is empty", path);
  int64_t row = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (row++ != num_layers) continue;
    std::stringstream fields(line);
    std::string field;
    std::vector<double> values;
    while (std::getline(fields, field, ',')) {
      try {
        values.push_back(std::stod(field));
      } catch (const std::exception&) { fail("{}: row {} has a non-numeric field '{}'", path, num_layers, field); }
    }
    if (values.size() != 4) fail("{}: row {} has {} fields, expected LAYER,P,R,F", path, num_layers, values.size());
    return {values[1], values[2], values[3]};
  }
  fail("{}: no row for layer {} (the file has {} rows)", path, num_layers, row);
}

}  // namespace

struct BertScorer::State {
  BertScoreOptions options;
  text::Tokenizer tokenizer;
  mutable models::BertModel model{nullptr};
  bool roberta = false;
  int64_t cls_id = -1, sep_id = -1, max_length = 512;
  std::array<double, 3> baseline{};
  bool rescale = false;

  explicit State(const BertScoreOptions& o) : options(o), tokenizer(text::Tokenizer::load(o.model_dir)) {}

  // sent_encode: strip; "" -> [CLS][SEP]; else encode with special tokens, truncated.
  std::vector<int64_t> encode(const std::string& sentence) const {
    std::string text = text::utf8::python_rstrip(text::utf8::python_lstrip(sentence));
    if (text.empty()) return {cls_id, sep_id};
    if (roberta) text = " " + text;  // add_prefix_space=True
    std::vector<int64_t> ids = tokenizer.encode(text);
    text::truncate_keeping_last(ids, max_length);
    return ids;
  }

  // Each sentence's token embeddings (layer num_layers, L2-normalized), longest first
  // in padded batches of batch_size as bert_score runs them.
  std::vector<torch::Tensor> embed(const std::vector<std::vector<int64_t>>& ids) const {
    std::vector<size_t> order(ids.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ids[a].size() > ids[b].size(); });
    std::vector<torch::Tensor> embeddings(ids.size());
    const auto batch = static_cast<size_t>(std::max<int64_t>(1, options.batch_size));
    const int64_t pad = model->config().pad_token_id;
    for (size_t start = 0; start < order.size(); start += batch) {
      const size_t end = std::min(order.size(), start + batch);
      const auto L = static_cast<int64_t>(ids[order[start]].size());
      auto input = torch::full({static_cast<int64_t>(end - start), L}, pad, torch::kLong);
      auto mask = torch::zeros({static_cast<int64_t>(end - start), L}, torch::kLong);
      for (size_t row = start; row < end; ++row) {
        const auto& t = ids[order[row]];
        const auto n = static_cast<int64_t>(t.size());
        input[static_cast<int64_t>(row - start)].slice(0, 0, n).copy_(torch::tensor(t, torch::kLong));
        mask[static_cast<int64_t>(row - start)].slice(0, 0, n).fill_(1);
      }
      auto out = model->forward(input.to(options.device), mask.to(options.device), {}, false, options.num_layers).last_hidden_state;
      out = out.to(torch::kCPU);
      for (size_t row = start; row < end; ++row) {
        auto e = out[static_cast<int64_t>(row - start)].slice(0, 0, static_cast<int64_t>(ids[order[row]].size()));
        embeddings[order[row]] = e / e.norm(2, -1, true);
      }
    }
    return embeddings;
  }
};

BertScorer::BertScorer(const BertScoreOptions& options) : state_(std::make_unique<State>(options)) {
  State& s = *state_;
  const std::string config_path = options.model_dir + "/config.json";
  const auto config = io::json_read_file(config_path);
  s.roberta = config.value("model_type", std::string("bert")) != "bert";
  if (s.roberta && s.tokenizer.is_slow()) fail("{}: RoBERTa's tokenizer is read from tokenizer.json; none found", options.model_dir);
  s.model = models::bert_load(options.model_dir, torch::kFloat, options.device);
  const auto& bert = s.model->config();
  if (s.options.num_layers < 0) {
    std::string name = config.value("_name_or_path", std::string());
    if (name.empty()) name = std::filesystem::path(options.model_dir).filename().string();
    s.options.num_layers = bertscore_default_layers(std::filesystem::path(name).filename().string());
    if (s.options.num_layers < 0) fail("{}: no default BERTScore layer for '{}'; give the number of layers", options.model_dir, name);
  }
  if (s.options.num_layers > bert.num_hidden_layers) {
    fail("{}: {} layers asked, the model has {}", options.model_dir, s.options.num_layers, bert.num_hidden_layers);
  }
  for (auto [id, names] : {std::pair<int64_t*, std::vector<const char*>>{&s.cls_id, {"[CLS]", "<s>"}}, {&s.sep_id, {"[SEP]", "</s>"}}}) {
    for (const char* name : names) {
      if (*id < 0) *id = s.tokenizer.token_to_id(name);
    }
    if (*id < 0) fail("{}: the tokenizer has no [CLS]/<s> or [SEP]/</s> token", options.model_dir);
  }
  const std::string tokenizer_config = options.model_dir + "/tokenizer_config.json";
  if (std::filesystem::exists(tokenizer_config)) {
    const auto tc = io::json_read_file(tokenizer_config);
    if (tc.contains("model_max_length") && tc["model_max_length"].is_number_integer()) {
      s.max_length = std::min<int64_t>(tc["model_max_length"].get<int64_t>(), bert.max_position_embeddings - (s.roberta ? 2 : 0));
    }
  }
  if (!options.baseline_path.empty()) {
    s.baseline = read_baseline(options.baseline_path, s.options.num_layers);
    s.rescale = true;
  }
}

BertScorer::~BertScorer() = default;
BertScorer::BertScorer(BertScorer&&) noexcept = default;
int64_t BertScorer::num_layers() const { return state_->options.num_layers; }

std::vector<Prf> BertScorer::score(const std::vector<std::string>& candidates, const std::vector<std::vector<std::string>>& references) const {
  const State& s = *state_;
  if (candidates.size() != references.size()) { fail("bertscore: {} candidates but {} reference groups", candidates.size(), references.size()); }
  for (size_t i = 0; i < references.size(); ++i) {
    if (references[i].empty()) fail("bertscore: candidate {} has no reference", i);
  }
  torch::NoGradGuard no_grad;
  // Token ids of every distinct sentence.
  std::unordered_map<std::string, size_t> index;
  std::vector<std::vector<int64_t>> ids;
  auto add = [&](const std::string& sentence) {
    if (index.emplace(sentence, ids.size()).second) ids.push_back(s.encode(sentence));
  };
  for (const auto& c : candidates) add(c);
  for (const auto& group : references) {
    for (const auto& r : group) add(r);
  }
  // idf over the references (each reference a document, as bert_score flattens them).
  std::unordered_map<int64_t, int64_t> document_frequency;
  size_t documents = 0;
  if (s.options.idf) {
    for (const auto& group : references) {
      for (const auto& r : group) {
        const auto& tokens = ids[index.at(r)];
        for (int64_t id : std::set<int64_t>(tokens.begin(), tokens.end())) ++document_frequency[id];
        ++documents;
      }
    }
  }
  auto weight = [&](int64_t id) -> double {
    if (!s.options.idf) return id == s.cls_id || id == s.sep_id ? 0.0 : 1.0;
    auto it = document_frequency.find(id);
    return std::log((static_cast<double>(documents) + 1.0) / (static_cast<double>(it == document_frequency.end() ? 0 : it->second) + 1.0));
  };
  // Embeddings, longest first, in padded batches.
  const std::vector<torch::Tensor> embeddings = s.embed(ids);
  const auto batch = static_cast<size_t>(std::max<int64_t>(1, s.options.batch_size));
  // bert_score matches the flattened (candidate, reference) pairs in batches of
  // batch_size, padded to the batch's longest candidate and reference, with the
  // similarity to a padded position 0 -- inside the max: a token whose best cosine
  // is negative scores 0 when the other side is shorter than its batch's longest.
  std::vector<size_t> longest_hyp, longest_ref;
  size_t flat = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    for (const auto& reference : references[i]) {
      if (flat % batch == 0) longest_hyp.push_back(0), longest_ref.push_back(0);
      longest_hyp.back() = std::max(longest_hyp.back(), ids[index.at(candidates[i])].size());
      longest_ref.back() = std::max(longest_ref.back(), ids[index.at(reference)].size());
      ++flat;
    }
  }
  std::vector<Prf> out;
  out.reserve(candidates.size());
  flat = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const size_t h = index.at(candidates[i]);
    Prf best{-INFINITY, -INFINITY, -INFINITY};
    for (const auto& reference : references[i]) {
      const size_t r = index.at(reference), group = flat++ / batch;
      const auto sim = torch::matmul(embeddings[h], embeddings[r].t());  // (hyp tokens, ref tokens)
      auto word_precision = std::get<0>(sim.max(1)), word_recall = std::get<0>(sim.max(0));
      if (ids[r].size() < longest_ref[group]) word_precision = word_precision.clamp_min(0);
      if (ids[h].size() < longest_hyp[group]) word_recall = word_recall.clamp_min(0);
      auto weights = [&](const std::vector<int64_t>& tokens) {
        std::vector<float> w;
        double total = 0;
        for (int64_t id : tokens) total += weight(id);
        for (int64_t id : tokens) w.push_back(static_cast<float>(weight(id) / total));
        return torch::tensor(w);
      };
      Prf prf;
      const bool empty = ids[h].size() == 2 || ids[r].size() == 2;  // only [CLS][SEP]: bert_score sets 0
      if (!empty) {
        prf.precision = (word_precision * weights(ids[h])).sum().item<float>();
        prf.recall = (word_recall * weights(ids[r])).sum().item<float>();
      }
      const float p = static_cast<float>(prf.precision), rc = static_cast<float>(prf.recall);
      const float f = 2 * p * rc / (p + rc);
      prf.fmeasure = std::isnan(f) ? 0.0 : f;
      best.precision = std::max(best.precision, prf.precision);
      best.recall = std::max(best.recall, prf.recall);
      best.fmeasure = std::max(best.fmeasure, prf.fmeasure);
    }
    if (s.rescale) {  // in float32, as bert_score
      auto rescale = [](double x, double b) {
        const float bf = static_cast<float>(b);
        return static_cast<double>((static_cast<float>(x) - bf) / (1.0f - bf));
      };
      best.precision = rescale(best.precision, s.baseline[0]);
      best.recall = rescale(best.recall, s.baseline[1]);
      best.fmeasure = rescale(best.fmeasure, s.baseline[2]);
    }
    out.push_back(best);
  }
  return out;
}

}  // namespace m3d::eval
