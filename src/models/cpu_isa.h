// Run-time choice among a kernel family's scalar, AVX2 and AVX-512 implementations (the
// quantized GGUF kernels, the bf16 GEMV): the best the CPU has unless a test or benchmark
// forces one. Torch-free.
#pragma once

#include <atomic>

namespace m3d::models {

enum class QuantIsa { kAuto, kScalar, kAvx2, kAvx512 };

const char* isa_name(QuantIsa isa);  // "scalar", "avx2", "avx512", "auto"

// AVX2 with FMA, the floor of both families' SIMD kernels.
bool cpu_has_avx2_fma();

class IsaChoice {
 public:
  // `family` names the kernels in errors; `avx512` says whether this CPU has the AVX-512
  // extensions the family's AVX-512 kernels use (on top of AVX2 + FMA).
  IsaChoice(const char* family, bool (*avx512)());
  bool available(QuantIsa isa) const;
  void force(QuantIsa isa);  // kAuto = the best again; one the CPU lacks throws m3d::Error
  QuantIsa active() const;  // never kAuto

 private:
  const char* family_;
  bool (*avx512_)();
  QuantIsa best_;  // the CPU's best, found once
  std::atomic<QuantIsa> forced_{QuantIsa::kAuto};
};

}  // namespace m3d::models
