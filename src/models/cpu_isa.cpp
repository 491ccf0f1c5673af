#include "models/cpu_isa.h"

#include "m3d/error.h"

namespace m3d::models {

const char* isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kScalar:
      return "scalar";
    case QuantIsa::kAvx2:
      return "avx2";
    case QuantIsa::kAvx512:
      return "avx512";
    case QuantIsa::kAuto:
      break;
  }
  return "auto";
}

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();  // needed when called before libgcc's constructor has run (static initializers)
  // F16C is not asked: clang 14's __builtin_cpu_supports has no "f16c", and every AVX2 CPU has it.
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

IsaChoice::IsaChoice(const char* family, bool (*avx512)()) : family_(family), avx512_(avx512) {
  best_ = available(QuantIsa::kAvx512) ? QuantIsa::kAvx512 : available(QuantIsa::kAvx2) ? QuantIsa::kAvx2 : QuantIsa::kScalar;
}

bool IsaChoice::available(QuantIsa isa) const {
  switch (isa) {
    case QuantIsa::kAuto:
    case QuantIsa::kScalar:
      return true;
    case QuantIsa::kAvx2:
      return cpu_has_avx2_fma();
    case QuantIsa::kAvx512:
      return cpu_has_avx2_fma() && avx512_();
  }
  return false;
}

void IsaChoice::force(QuantIsa isa) {
  if (!available(isa)) fail("{}: this CPU lacks the instructions of the {} kernels", family_, isa_name(isa));
  forced_ = isa;
}

QuantIsa IsaChoice::active() const {
  const QuantIsa isa = forced_;
  return isa == QuantIsa::kAuto ? best_ : isa;
}

}  // namespace m3d::models
