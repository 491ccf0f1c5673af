// Visual instruction tuning of M3D-LaMed (LaMed/src/train/train.py with HF Trainer):
// stage 1 ("pretrain": the projector and input embeddings train, on captions and VQA)
// and stage 2 ("finetune": LoRA on the LLM, vision tower, projector, embeddings and
// lm_head in full, on the multi-task mixture). Samples are built as M3D's
// multi_dataset.py builds them (prompt templates, question + ' ' + answer, EOS in the
// first padding slot, loss on the answer only).
#pragma once

#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <map>
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
LamedSample lamed_build_sample(const text::Tokenizer& tokenizer, const std::string& question, const std::string& answer, int64_t max_length, int64_t pad_id,
                               int64_t eos_id);

// The causal-LM loss of LaMed's forward: image embeddings spliced into rows
// 1..256, logits in f32, mean cross-entropy of logits[:, :-1] against labels[:, 1:]
// over labels != -100.
torch::Tensor lamed_lm_loss(models::CausalLmImpl& lm, const torch::Tensor& images, const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                            const torch::Tensor& labels);

enum class LamedStage { Pretrain, Finetune };
// train.py's requires_grad setup. Pretrain: only mm_projector and embed_tokens.
// Finetune: LoRA weights, and every parameter whose name contains one of
// models::lora_excluded_keywords() (vision tower, projector, embeddings, lm_head,
// seg modules) in full. Returns the number of trainable tensors.
size_t lamed_set_trainable(models::CausalLmImpl& lm, LamedStage stage);

// Prompt templates (M3D's prompt_templates.py keys). The built-in lists are the
// phrasings quoted in m3d_lamed_spec.md §12 (a subset of the official lists); a json
// file with these keys replaces them.
struct LamedTemplates {
  std::vector<std::string> caption;  // Caption_templates
  std::vector<std::string> rec_questions, rec_answers, rec_no_answers;  // PosREC_templates cls_*
  std::vector<std::string> reg_questions, reg_answers;  // PosREG_templates cls_*
  static LamedTemplates builtin();
  static LamedTemplates from_json(const nlohmann::json& root, const std::string& where);
};

struct LamedTrainConfig : TrainSchedule {
  // Model: a LaMed checkpoint (`init`), or `model` (a LaMed config.json) built from
  // scratch (LLM weights normal(0, 0.02), norms 1), its ViT optionally from an
  // M3D-CLIP checkpoint's vision encoder (`vision_init`, as train.py's
  // pretrain_vision_model). `tokenizer`: a directory with tokenizer.json (default: init).
  // The LaMed tokens <im_patch>, <bx_start>, <bx_end> and [SEG] are added when missing.
  std::string init, vision_init, tokenizer;
  nlohmann::json model;
  // "pretrain" (stage 1), "finetune" (stage 2, LoRA) or "full" (every parameter:
  // for a small LLM trained from scratch, as the quickstart does).
  std::string stage = "finetune";
  models::LoraConfig lora;
  // Parameters whose names start with one of these are frozen on top of the stage's
  // choice (e.g. "model.vision_tower." to keep a CLIP-trained ViT as it is).
  std::vector<std::string> freeze;
  // Data: an M3D-Data directory (M3D_Cap_npy/M3D_Cap.json, M3D-VQA/M3D_VQA_train.csv;
  // positioning from the m3d synth label maps). `mixture`: task -> weight, each
  // task contributing weight x its size samples per epoch (1: natural proportions, as
  // the official ConcatDataset; 0: off). Tasks (data::task_names): cap, vqa-closed, vqa-open,
  // rec, reg, and refseg (M3D-RefSeg's questions and [SEG] answers as text: the mask loss needs
  // the segmentation module, not in m3d yet); vqa_closed / vqa_open name the same tasks. Keys
  // are kept as written, so that a run resumes with the config it saved.
  std::string data;
  std::map<std::string, double> mixture;
  std::string train_split = "train", eval_split = "validation";
  int64_t eval_limit = 64;  // caption samples for the validation loss
  std::string templates;  // json file; empty: LamedTemplates::builtin()
  int64_t max_length = 512;
  bool augment = true, cache_images = false;
  // m3d's own augmentation, off in the official recipe: closed-VQA choices in a random
  // order each time (the letter follows its answer), so a small model learns to point
  // at the choice rather than memorise letters.
  bool shuffle_choices = false;
  // Each global batch from one task (less padding: a VQA batch is not padded to a
  // report's length); off in the official recipe.
  bool group_by_task = false;

  // Stage 2's schedule by default: 5 epochs, batch 8, lr 5e-5, no weight decay.
  LamedTrainConfig() {
    epochs = 5;
    batch_size = 8;
    lr = 5e-5;
    weight_decay = 0.0;
    eval_fraction = 0.0;
  }

  static LamedTrainConfig from_json(const nlohmann::json& config, const std::string& where);
  nlohmann::json to_json() const;
};

// "stage1" / "stage2" (the official Phi-3 runs' settings), "tiny" (a small LaMed from
// scratch on one CPU, for the quickstart).
nlohmann::json lamed_train_preset(const std::string& name);
std::vector<std::string> lamed_train_presets();

// Runs on this process's rank; rank 0 writes checkpoints that `m3d generate`/`bench`
// load (config.json, model.safetensors with any adapters merged in `final/`, the
// tokenizer with added_tokens.json, the adapter in peft's layout, and m3d_recipe.json
// when the model grid is not m3d-lamed's or `init` has one).
TrainResult lamed_train(const LamedTrainConfig& config, const TrainRunOptions& options);

// `m3d export --merge-lora`: a model with LoRA adapters as one plain checkpoint in
// the HF layout (peft's merge_and_unload + save_pretrained), which m3d and the
// official code load. `checkpoint`: an m3d training checkpoint (weights with adapter
// keys, adapter/adapter_config.json), or a plain model with `adapter` a peft adapter
// folder. Writes config.json, model.safetensors and the tokenizer files into `out`;
// returns the number of merged layers.
size_t lamed_export_merged(const std::string& checkpoint, const std::string& adapter, const std::string& out);

}  // namespace m3d::train
