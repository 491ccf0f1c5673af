// Visual instruction tuning of M3D-LaMed (LaMed/src/train/train.py with HF Trainer):
// stage 1 ("pretrain": the projector and input embeddings train, on captions and VQA)
// and stage 2 ("finetune": LoRA on the LLM, vision tower, projector, embeddings and
// lm_head in full, on the multi-task mixture). Samples are built as M3D's
// multi_dataset.py builds them (prompt templates, question + ' ' + answer, EOS in the
// first padding slot, loss on the answer only).
#pragma once

#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "models/lora.h"
#include "train/clip_train.h"  // TrainRunOptions, TrainResult

namespace m3d::text {
class Tokenizer;
}
namespace m3d::models {
class CausalLmImpl;
}

namespace m3d::train {

// One training sequence: `max_length` ids, labels (-100 where no loss) and mask.
struct LamedSample {
  std::vector<int64_t> input_ids, labels, attention_mask;
};

// multi_dataset.py's text part: tokenizer(question + ' ' + answer, max_length,
// truncation, padding="max_length"); EOS written into the first padding slot (its
// mask stays 0); labels -100 over the question's token count (BOS and image tokens
// included) and at every pad id, except that EOS slot when pad == EOS.
LamedSample lamed_build_sample(const text::Tokenizer& tokenizer, const std::string& question, const std::string& answer,
                               int64_t max_length, int64_t pad_id, int64_t eos_id);

// The causal-LM loss of LaMed's forward: image embeddings spliced into rows
// 1..256, logits in f32, mean cross-entropy of logits[:, :-1] against labels[:, 1:]
// over labels != -100.
torch::Tensor lamed_lm_loss(models::CausalLmImpl& lm, const torch::Tensor& images, const torch::Tensor& input_ids,
                            const torch::Tensor& attention_mask, const torch::Tensor& labels);

enum class LamedStage { Pretrain, Finetune };
// train.py's requires_grad setup. Pretrain: only mm_projector and embed_tokens.
// Finetune: LoRA weights, and every parameter whose name contains one of
// models::lora_excluded_keywords() (vision tower, projector, embeddings, lm_head,
// seg modules) in full. Returns the number of trainable tensors.
size_t lamed_set_trainable(models::CausalLmImpl& lm, LamedStage stage);

}  // namespace m3d::train
