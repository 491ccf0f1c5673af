// libFuzzer target: the PNG / JPEG structure checks that run before libpng or ITK see a
// slice file (the first byte picks the kind asked for, the rest is the file).
#include <cstdint>

#include "imaging/image_check.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto kind = static_cast<m3d::imaging::ImageKind>(data[0] % 3);
  try {
    m3d::imaging::slice_image_check(data + 1, size - 1, "fuzz", kind);
  } catch (const m3d::Error&) {}
  return 0;
}
