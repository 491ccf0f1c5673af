// The training loop every m3d trainer shares (what HF Trainer does around the model's
// loss): epoch order and micro-batches prefetched on worker threads, gradient
// accumulation, all-reduce across ranks, clipping, AdamW with the cosine schedule,
// a JSONL log and a progress bar, periodic evaluation, and atomic checkpoints that
// resume exactly (weights, AdamW moments, each rank's random state, the step).
// Every random choice of the data side comes from sample_rng(seed, purpose, epoch,
// index), so a run is the same whatever the number of ranks and loader threads.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <random>
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "data/sample.h"

namespace m3d::train {

class AdamW;
class Communicator;
struct DistEnv;

struct TrainRunOptions {
  bool resume = false;  // continue from the newest complete checkpoint in output_dir
  bool progress = true;
  const std::atomic<bool>* stop = nullptr;  // set (e.g. by SIGTERM): save and return
};

struct TrainResult {
  int64_t steps = 0, total_steps = 0;
  bool stopped = false;  // by `stop`, after saving
  nlohmann::json last_eval;
  std::string checkpoint;  // the last one written
};

// A micro-batch; trainers use the fields they need.
struct Batch {
  torch::Tensor images, input_ids, attention_mask, labels;
};

struct LoopSettings {
  std::string output_dir;
  size_t dataset_size = 0;
  uint64_t seed = 42;
  int64_t total_steps = 0, steps_per_epoch = 0;
  int64_t batch_size = 1, grad_accum = 1;  // per rank (B) and accumulation (A)
  double lr = 1e-4, warmup_ratio = 0, max_grad_norm = 1.0;
  int64_t save_steps = 1000, save_total_limit = 3, log_steps = 10;
  int64_t eval_every = 0;  // steps; 0: never
  int64_t workers = 2;
  bool bf16 = false;  // forward passes under bf16 autocast
  double bucket_mb = 25;  // gradient all-reduce buckets
  // Optional group of each sample (e.g. its task): each global batch then holds one
  // group only (bucketing: less padding), the batches of an epoch in random order.
  std::vector<int64_t> groups;
  nlohmann::json config;  // the run's configuration, into train_config.json and trainer_state.json
};

// The schedule and output fields every trainer's config has (HF TrainingArguments'
// names), with their JSON reading and the loop settings they give.
struct TrainSchedule {
  // Per-rank batch, as HF's per_device_train_batch_size; max_steps wins over epochs.
  int64_t epochs = 100, max_steps = -1, batch_size = 32, grad_accum = 1;
  double lr = 1e-4, weight_decay = 0.1, warmup_ratio = 0.03, max_grad_norm = 1.0;
  uint64_t seed = 42;
  std::string output_dir;
  int64_t save_steps = 1000, save_total_limit = 3, log_steps = 10;
  double eval_fraction = 0.04;  // evaluate every this fraction of the run; 0: never
  int64_t workers = 2;  // data loader threads
  bool bf16 = false;  // bf16 autocast in the forward pass (HF's --bf16); weights, gradients, optimizer stay f32
  bool gradient_checkpointing = false;  // ViT blocks recompute their forward in the backward (less memory)
  double ddp_bucket_cap_mb = 25;  // gradient all-reduce bucket size with several ranks (HF's name)

  static const std::vector<std::string>& schedule_keys();
  // Reads the keys present (json type errors propagate) and checks the ranges.
  void read_schedule(const nlohmann::json& config, const std::string& where);
  nlohmann::json schedule_json() const;
  // Settings for `dataset_size` samples on `world_size` ranks; fails when the global
  // batch exceeds the samples. `config`: the whole run's config, for the logs.
  LoopSettings loop_settings(size_t dataset_size, int world_size, nlohmann::json config) const;
};

struct LoopHooks {
  // Loads the micro-batch of these sample indices (on a worker thread).
  std::function<Batch(const std::vector<int64_t>& indices, int64_t epoch)> load;
  // The micro-batch's loss (the loop divides by the accumulation steps and runs backward).
  std::function<torch::Tensor(const Batch& batch)> loss;
  // Main rank only; may be empty.
  std::function<nlohmann::json()> evaluate;
  // Writes what a checkpoint holds beside the weights and optimizer (config.json,
  // tokenizer files, ...) into `dir`; may be empty.
  std::function<void(const std::string& dir)> save_files;
};

// Runs steps from the resumed one (or 0) to settings.total_steps on this rank.
// `model`'s named parameters are the checkpoint's model.safetensors.
TrainResult training_loop(const LoopSettings& settings, torch::nn::Module& model, AdamW& optimizer, Communicator* comm, const DistEnv& env,
                          const LoopHooks& hooks, const TrainRunOptions& options);

using data::sample_rng;  // data/sample.h
double uniform(std::mt19937_64& rng, double lo, double hi);
// The official train transforms of every M3D dataset (MONAI RandRotate90 on (H, W),
// RandFlip on D, H, W, RandScaleIntensity, RandShiftIntensity) on a (C, D, H, W) volume;
// with `mask` (C', D', H', W'), the same rotation and flips on it (the "d" variants).
torch::Tensor augment(torch::Tensor image, std::mt19937_64& rng, torch::Tensor* mask = nullptr);
// The epoch's sample order (a seeded shuffle). With `groups` (one per sample), every
// run of `batch` consecutive samples shares a group; each group's remainder that does
// not fill a batch goes at the end.
std::vector<int64_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, const std::vector<int64_t>& groups = {}, int64_t batch = 1);
// Complete checkpoint-N folders in `dir`, by step.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir);
// Before a run writes anything into `dir`: a new run (no `resume`) needs a missing or
// empty folder, so two runs never mix their logs and checkpoints; `resume` needs a
// complete checkpoint there to continue from (training_loop then requires the same
// config as the saved run's). Clear errors otherwise.
void output_dir_claim(const std::string& dir, bool resume);
// Exit status of a run stopped by SIGTERM/SIGINT after saving its checkpoint.
inline constexpr int kExitStopped = 3;
// Copies the tokenizer files found in `from` to `to`.
void copy_tokenizer_files(const std::string& from, const std::string& to);
// The m3d_recipe.json a run's checkpoints carry (empty: none, the built-in m3d-lamed
// serves): `init`'s own, else, for a model grid (D, H, W) that is not m3d-lamed's, M3D-Data's
// preparation (m3d-lamed, which made the .npy volumes it trains on) followed by the resize
// to the grid that load_model_volume applies to them, so a scan given to `m3d generate` /
// `m3d embed` reaches the model as its training volumes did.
std::string training_recipe_text(const std::string& init, const std::array<int64_t, 3>& grid);
std::string read_text_file(const std::string& path);
// The module's named parameters and buffers (its state dict) as a safetensors file
// (model.safetensors, HF layout).
void save_model_weights(torch::nn::Module& model, const std::string& path);
// Model-grid volume: (C, D, H, W) float from an .npy / NIfTI model input, resized to `size` when it differs.
torch::Tensor load_model_volume(const std::string& path, int64_t channels, const std::vector<int64_t>& size);

}  // namespace m3d::train
