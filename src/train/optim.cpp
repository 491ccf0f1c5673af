// See optim.h. The AdamW arithmetic follows torch/optim/adamw.py _single_tensor_adamw
// operation by operation, so that the same inputs give the same bits.
#include "train/optim.h"

#include <cmath>
#include <set>

#include "m3d/error.h"
#include "models/layers.h"

namespace m3d::train {

std::vector<NamedParameter> trainable_parameters(torch::nn::Module& module) {
  std::set<const void*> layer_norm;
  for (const auto& item : module.named_modules()) {
    if (dynamic_cast<const models::LayerNormImpl*>(item.value().get()) == nullptr) continue;
    for (const auto& p : item.value()->parameters()) layer_norm.insert(p.unsafeGetTensorImpl());
  }
  std::vector<NamedParameter> out;
  for (const auto& item : module.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    const bool no_decay = layer_norm.count(item.value().unsafeGetTensorImpl()) || item.key().find("bias") != std::string::npos;
    out.push_back({item.key(), item.value(), !no_decay});
  }
  return out;
}

AdamW::AdamW(std::vector<NamedParameter> parameters, AdamWOptions options) : parameters_(std::move(parameters)), options_(options) {
  torch::NoGradGuard no_grad;
  for (const auto& p : parameters_) {
    exp_avg_.push_back(torch::zeros_like(p.tensor, torch::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p.tensor, torch::MemoryFormat::Preserve));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bias_correction1 = 1 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias_correction2 = 1 - std::pow(options_.beta2, static_cast<double>(step_));
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto& param = parameters_[i].tensor;
    const auto& grad = param.grad();
    if (!grad.defined()) continue;  // torch skips parameters without a gradient
    const double decay = parameters_[i].decay ? options_.weight_decay : 0.0;
    param.mul_(1 - lr * decay);
    exp_avg_[i].mul_(options_.beta1).add_(grad, 1 - options_.beta1);
    exp_avg_sq_[i].mul_(options_.beta2).addcmul_(grad, grad, 1 - options_.beta2);
    const auto denom = (exp_avg_sq_[i].sqrt() / bias_correction2_sqrt).add_(options_.eps);
    param.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (auto& p : parameters_) {
    if (p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::Tensor();  // set_to_none, as HF's zero_grad
  }
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    out.emplace_back("exp_avg." + parameters_[i].name, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + parameters_[i].name, exp_avg_sq_[i]);
  }
  out.emplace_back("step", torch::tensor({step_}, torch::kLong));
  return out;
}

void AdamW::load_state(const std::map<std::string, torch::Tensor>& state, const std::string& where) {
  torch::NoGradGuard no_grad;
  auto find = [&](const std::string& key, const torch::Tensor& like) -> const torch::Tensor& {
    auto it = state.find(key);
    if (it == state.end()) fail("{}: optimizer state has no '{}'", where, key);
    if (it->second.sizes() != like.sizes()) fail("{}: optimizer state '{}' has another shape than its parameter", where, key);
    return it->second;
  };
  for (size_t i = 0; i < parameters_.size(); ++i) {
    exp_avg_[i].copy_(find("exp_avg." + parameters_[i].name, exp_avg_[i]));
    exp_avg_sq_[i].copy_(find("exp_avg_sq." + parameters_[i].name, exp_avg_sq_[i]));
  }
  auto it = state.find("step");
  if (it == state.end() || it->second.numel() != 1) fail("{}: optimizer state has no step count", where);
  step_ = it->second.item<int64_t>();
}

double cosine_with_warmup(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
}

int64_t warmup_steps(int64_t total, double ratio) { return static_cast<int64_t>(std::ceil(static_cast<double>(total) * ratio)); }

double clip_grad_norm(const std::vector<NamedParameter>& parameters, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : parameters) {
    if (p.tensor.grad().defined()) norms.push_back(p.tensor.grad().norm(2));
  }
  if (norms.empty()) return 0.0;
  const auto total = torch::stack(norms).norm(2);
  const auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (const auto& p : parameters) {
    if (p.tensor.grad().defined()) p.tensor.grad().mul_(coef);
  }
  return total.item<double>();
}

}  // namespace m3d::train
