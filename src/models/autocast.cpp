// See autocast.h.
#include "models/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "m3d/error.h"

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define M3D_AUTOCAST_PER_DEVICE 1
#else
#define M3D_AUTOCAST_PER_DEVICE 0
#endif

namespace m3d::models {
namespace {

void check_device(c10::DeviceType device) {
  if (device != c10::DeviceType::CPU && device != c10::DeviceType::CUDA) fail("autocast: only CPU and CUDA are supported, not {}", c10::DeviceTypeName(device));
}

void set_state(c10::DeviceType device, bool enabled, c10::ScalarType dtype) {
#if M3D_AUTOCAST_PER_DEVICE
  at::autocast::set_autocast_dtype(device, dtype);
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CPU) {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  } else {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  }
#endif
}

}  // namespace

bool autocast_enabled(c10::DeviceType device) {
#if M3D_AUTOCAST_PER_DEVICE
  return at::autocast::is_autocast_enabled(device);
#else
  if (device == c10::DeviceType::CPU) return at::autocast::is_cpu_enabled();
  if (device == c10::DeviceType::CUDA) return at::autocast::is_enabled();
  return false;
#endif
}

c10::ScalarType autocast_dtype(c10::DeviceType device) {
#if M3D_AUTOCAST_PER_DEVICE
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
}

AutocastGuard::AutocastGuard(bool enabled, c10::DeviceType device, c10::ScalarType dtype) : device_(device) {
  if (!enabled) return;
  check_device(device);
  previous_enabled_ = autocast_enabled(device);
  previous_dtype_ = autocast_dtype(device);
  set_state(device, true, dtype);
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();  // cached bf16 copies of the weights
  set_state(device_, previous_enabled_, previous_dtype_);
}

}  // namespace m3d::models
