// Contrastive pre-training of M3D-CLIP (and its sigmoid-loss variant) and of
// Med3DVLM's DCFormer_SigLIP (DEC_CLIP) on image-report pairs in the M3D-Cap layout,
// as LaMed/src/train/train_CLIP.py and Med3DVLM src/train/train_clip.py with HF Trainer run them: AdamW, cosine schedule with warmup, gradient clipping and
// accumulation, the official augmentations and report truncation, features gathered
// across ranks for the loss; checkpoints that resume exactly, periodic retrieval
// evaluation, a JSONL log and a progress bar.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace m3d::text {
class Tokenizer;
}

namespace m3d::train {

struct ClipTrainConfig : TrainSchedule {
  // Model: start from an M3D-CLIP or DCFormer_SigLIP checkpoint (`init`), or build
  // `model` (a config.json of models::ClipConfig: model_type m3d_clip or dec_clip) with
  // the vision tower (ViT or DCFormer) from scratch and the text tower from a
  // BERT-family checkpoint (`text_init`: bert-base-uncased in M3D's run,
  // medicalai/ClinicalBERT in Med3DVLM's), or from scratch without one.
  std::string init, text_init;
  nlohmann::json model;
  std::string tokenizer;  // a directory with vocab.txt; default: text_init, else init
  // Parameters whose names start with one of these are frozen (e.g.
  // "language_encoder.embeddings", "language_encoder.encoder.layer.0.").
  std::vector<std::string> freeze;
  // Data: an M3D-Data directory with M3D_Cap_npy/M3D_Cap.json (or M3D_Cap.json), or that
  // json file (data::cap_find; the paths inside: data::data_path_resolve).
  std::string data;
  std::string train_split = "train", eval_split = "validation";
  int64_t eval_limit = 512;  // the official validation set is the first 512 pairs
  int64_t max_length = 512;  // text tokens ([CLS] and [SEP] included)
  bool augment = true;
  bool cache_images = false;  // keep the (resized) volumes in memory after the first epoch
  // The schedule (TrainSchedule's defaults are the official CLIP run's: 100 epochs,
  // batch 32, lr 1e-4, weight decay 0.1, evaluation every 4 %).

  static ClipTrainConfig from_json(const nlohmann::json& config, const std::string& where);
  nlohmann::json to_json() const;
};

// Named configs: "m3d-clip" (the official M3D-CLIP run), "siglip" (the sigmoid
// loss with Med3DVLM's batch and settings on the M3D-CLIP towers), "tiny" (a small
// ViT and the 6-layer MiniLM text tower, for one CPU), "med3dvlm-siglip" (the
// DCFormer_SigLIP run), "med3dvlm-tiny" (a small DCFormer and MiniLM, for one CPU).
nlohmann::json clip_train_preset(const std::string& name);
std::vector<std::string> clip_train_presets();

// Runs on this process's rank (DistEnv::from_environment()); rank 0 writes.
TrainResult clip_train(const ClipTrainConfig& config, const TrainRunOptions& options);

// Image-to-text and text-to-image recall@1/5/10 of a checkpoint on a split.
nlohmann::json clip_evaluate(const std::string& checkpoint_dir, const std::string& data, const std::string& split, int64_t limit);

}  // namespace m3d::train
