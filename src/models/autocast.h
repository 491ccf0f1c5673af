// bf16 autocast (mixed precision) over libtorch's per-device autocast state, for the
// libtorch versions m3d builds against (1.13's CPU/GPU functions, 2.4+'s per-device ones).
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace m3d::models {

// Whether autocast is on for `device` (CPU or CUDA), and the dtype it casts to.
bool autocast_enabled(c10::DeviceType device);
c10::ScalarType autocast_dtype(c10::DeviceType device);

// While alive, autocast to `dtype` is on for `device` (when `enabled`); the previous state
// comes back after. Ops in the forward pass then run in bf16 where libtorch's autocast
// lists allow (matmuls, linear) and in f32 where precision matters (softmax, losses, norms);
// parameters and their gradients stay f32. Only CPU and CUDA are supported.
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, c10::DeviceType device, c10::ScalarType dtype = c10::kBFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false, previous_enabled_ = false;
  c10::DeviceType device_ = c10::DeviceType::CPU;
  c10::ScalarType previous_dtype_ = c10::kBFloat16;
};

}  // namespace m3d::models
