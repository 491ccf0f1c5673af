// What HF Trainer runs around a training step, in libtorch: AdamW exactly as
// torch.optim.AdamW's single-tensor path computes it (torch 1.13/2.x,
// amsgrad off), HF's parameter groups (no weight decay for biases and LayerNorm
// weights), the cosine schedule with linear warmup, and clip_grad_norm_.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

namespace m3d::train {

struct AdamWOptions {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
};

struct NamedParameter {
  std::string name;
  torch::Tensor tensor;
  bool decay = true;
};

// Trainable parameters (requires_grad) of `module` in registration order, with HF
// Trainer's grouping: no decay for any parameter of a LayerNorm module or whose name
// contains "bias".
std::vector<NamedParameter> trainable_parameters(torch::nn::Module& module);

class AdamW {
 public:
  AdamW(std::vector<NamedParameter> parameters, AdamWOptions options);
  // One update with learning rate `lr` (the schedule's value for this step).
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return step_; }
  const std::vector<NamedParameter>& parameters() const { return parameters_; }

  // exp_avg.<name>, exp_avg_sq.<name> (+ "step"), for checkpoints.
  std::vector<std::pair<std::string, torch::Tensor>> state() const;
  // Restores state(); throws naming what is missing or mis-shaped.
  void load_state(const std::map<std::string, torch::Tensor>& state, const std::string& where);

 private:
  std::vector<NamedParameter> parameters_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// transformers' get_cosine_schedule_with_warmup as a function of the step (0-based):
// linear from 0 over `warmup` steps, then half a cosine down to 0 at `total`.
double cosine_with_warmup(int64_t step, int64_t warmup, int64_t total);
// HF TrainingArguments.get_warmup_steps: ceil(total * ratio).
int64_t warmup_steps(int64_t total, double ratio);

// torch.nn.utils.clip_grad_norm_(max_norm, p=2): returns the total norm before clipping.
double clip_grad_norm(const std::vector<NamedParameter>& parameters, double max_norm);

}  // namespace m3d::train
