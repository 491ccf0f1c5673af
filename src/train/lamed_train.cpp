// LaMed instruction tuning (see lamed_train.h).
#include "train/lamed_train.h"

#include <torch/torch.h>

#include <algorithm>

#include "m3d/error.h"
#include "models/causal_lm.h"
#include "text/tokenizer.h"

namespace m3d::train {

LamedSample lamed_build_sample(const text::Tokenizer& tokenizer, const std::string& question, const std::string& answer,
                               int64_t max_length, int64_t pad_id, int64_t eos_id) {
  if (max_length < 2) fail("max_length must be at least 2, not {}", max_length);
  const auto n = static_cast<size_t>(max_length);
  // Truncation keeps the first max_length ids: the Llama/Phi-3/Qwen2 post-processors
  // add at most a leading BOS, so HF's truncate-then-add-specials gives the same.
  auto ids = tokenizer.encode(question + " " + answer);
  if (ids.size() > n) ids.resize(n);
  const size_t valid = ids.size();
  const size_t question_len = std::min(tokenizer.encode(question).size(), n);

  LamedSample s;
  s.input_ids = ids;
  s.input_ids.resize(n, pad_id);
  s.attention_mask.assign(n, 0);
  std::fill(s.attention_mask.begin(), s.attention_mask.begin() + static_cast<std::ptrdiff_t>(valid), 1);
  if (valid < n) s.input_ids[valid] = eos_id;
  s.labels = s.input_ids;
  std::fill(s.labels.begin(), s.labels.begin() + static_cast<std::ptrdiff_t>(question_len), -100);
  for (auto& label : s.labels) {
    if (label == pad_id) label = -100;
  }
  if (pad_id == eos_id && valid < n) s.labels[valid] = eos_id;
  return s;
}

torch::Tensor lamed_lm_loss(models::CausalLmImpl& lm, const torch::Tensor& images, const torch::Tensor& input_ids,
                            const torch::Tensor& attention_mask, const torch::Tensor& labels) {
  const auto embeds = lm.embed(input_ids, images);
  const auto device = embeds.device();
  const auto hidden = lm.model->forward(embeds, nullptr, {}, attention_mask.to(device));
  const auto logits = lm.logits(hidden).to(torch::kFloat);
  const int64_t V = logits.size(-1);
  const auto shifted = logits.slice(1, 0, -1).reshape({-1, V});
  const auto targets = labels.to(device).slice(1, 1).reshape({-1});
  return torch::nn::functional::cross_entropy(shifted, targets, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
}

size_t lamed_set_trainable(models::CausalLmImpl& lm, LamedStage stage) {
  size_t trainable = 0;
  const auto& keywords = models::lora_excluded_keywords();
  for (auto& item : lm.named_parameters()) {
    const std::string& name = item.key();
    bool train;
    if (stage == LamedStage::Pretrain) {
      train = name.find("mm_projector") != std::string::npos || name.find("embed_tokens") != std::string::npos;
    } else {
      train = name.find(".lora_") != std::string::npos ||
              std::any_of(keywords.begin(), keywords.end(), [&](const std::string& k) { return name.find(k) != std::string::npos; });
    }
    item.value().requires_grad_(train);
    trainable += train ? 1 : 0;
  }
  return trainable;
}

}  // namespace m3d::train
