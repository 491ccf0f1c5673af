// BERTScore as bert_score 0.3.13 computes it (bert_score/score.py, utils.py; what
// HF evaluate "bertscore" calls, m3d_bench_spec.md §3.4): token embeddings from
// the first `num_layers` layers of a BERT-family encoder, L2-normalised; greedy
// matching by cosine similarity over all tokens ([CLS]/[SEP] included in the max);
// token weights 1 (or idf from the references), 0 for [CLS]/[SEP], normalised per
// sentence; F = 2PR/(P+R); several references: the element-wise max of P, R and F;
// optional baseline rescaling (x - b) / (1 - b) with a LAYER,P,R,F table.
#pragma once

#include <c10/core/Device.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "eval/text_metrics.h"

namespace m3d::eval {

struct BertScoreOptions {
  std::string model_dir;  // a BERT / RoBERTa checkpoint directory with its tokenizer files
  // Layers to run; -1: bert_score's default for the model's name (roberta-large 17,
  // bert-base-uncased 9, ...), an error for an unknown name.
  int64_t num_layers = -1;
  bool idf = false;  // idf weights from the references (log((M+1)/(df+1)))
  std::string baseline_path;  // a LAYER,P,R,F table: rescale when set
  int64_t batch_size = 64;
  c10::Device device = c10::kCPU;
};

// bert_score's model2layers for the BERT-family names; -1 when unknown.
int64_t bertscore_default_layers(const std::string& model_name);

class BertScorer {
 public:
  explicit BertScorer(const BertScoreOptions& options);
  ~BertScorer();
  BertScorer(BertScorer&&) noexcept;

  // One (P, R, F) per candidate; references[i] are the references of candidates[i].
  std::vector<Prf> score(const std::vector<std::string>& candidates, const std::vector<std::vector<std::string>>& references) const;
  int64_t num_layers() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace m3d::eval
