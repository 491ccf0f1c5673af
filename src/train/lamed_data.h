// LaMed training's data side (M3D's multi_dataset.py): the items of each task of the
// mixture, read through data/m3d_data.h, and the loader that turns them into the
// sequences of a micro-batch (prompt templates, image tokens, closed-VQA choices,
// REC / REG boxes from the organ masks). Internal to train/lamed_*.cpp.
#pragma once

#include <torch/types.h>

#include <map>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "train/lamed_train.h"
#include "train/trainer.h"

namespace m3d::train {

// One training item: the task and what its question and answer are made from.
struct LamedItem {
  std::string task;  // canonical (data::task_canonical): cap, vqa-closed, vqa-open, rec, reg, refseg
  std::string image;
  std::string text;  // cap: the report file; vqa, refseg: the question
  std::string answer;  // vqa, refseg
  std::vector<std::string> choices;  // closed vqa: A-D
  int answer_choice = 0;  // closed vqa: index of the right choice
  std::string labels;  // rec/reg: the organ label map (.npy)
  int64_t label = 0;  // rec/reg: its value for the organ
  std::string name;  // rec/reg: the class name
};

// The items of one task (canonical name) on the `split` of the M3D-Data root, at most
// `limit` (-1: all). rec / reg: one per organ of each M3D-Cap image (m3d synth's label maps).
std::vector<LamedItem> lamed_items_read(const std::string& root, const std::string& task, const std::string& split, int64_t limit);

// The training mixture: each task with weight w > 0 contributes round(w x its size) items,
// spread evenly over (and repeating) its own, tasks in the order of config.mixture.
std::vector<LamedItem> lamed_mixture_items(const LamedTrainConfig& config);

// The ids a training sequence is padded with and ends with (the EOS written into the
// first padding slot), as each family's training script sets up its tokenizer.
struct SequenceTokens {
  int64_t pad = 0, eos = 2;
};
// M3D's train.py: EOS </s> (<|endoftext|> without one), pad = <unk> when there is one, else EOS.
SequenceTokens lamed_sequence_tokens(const text::Tokenizer& tokenizer);
// Med3DVLM's train_vlm.py: the tokenizer's own eos_token and pad_token (tokenizer_config.json
// in `dir`; Qwen2.5: <|im_end|> and <|endoftext|>), pad = unk_token when pad_token is unset.
SequenceTokens med3dvlm_sequence_tokens(const text::Tokenizer& tokenizer, const std::string& dir);

// Loads, augments and builds the sequences of a micro-batch.
class LamedLoader {
 public:
  LamedLoader(std::vector<LamedItem> items, const text::Tokenizer& tokenizer, const LamedTemplates& templates, const LamedTrainConfig& config,
              SequenceTokens tokens, int64_t image_tokens, int64_t channels, std::vector<int64_t> size, bool train);

  size_t size() const { return items_.size(); }
  const LamedItem& item(size_t i) const { return items_[i]; }
  Batch batch(const std::vector<int64_t>& indices, int64_t epoch);

 private:
  std::pair<std::string, std::string> text_of(const LamedItem& item, const torch::Tensor& mask, std::mt19937_64& rng) const;
  torch::Tensor organ_mask(const LamedItem& item) const;
  torch::Tensor volume(const std::string& path);

  std::vector<LamedItem> items_;
  const text::Tokenizer& tokenizer_;
  const LamedTemplates& templates_;
  const LamedTrainConfig& config_;
  std::string image_tokens_;
  int64_t channels_;
  std::vector<int64_t> size_;
  bool train_;
  SequenceTokens tokens_;
  std::mutex mutex_;
  std::map<std::string, torch::Tensor> cache_;
};

}  // namespace m3d::train
