// libFuzzer target: the structure checks that run before libpng or ITK see a file: PNG /
// JPEG slices and MetaImage / NRRD voxel payloads (the first byte picks the kind asked
// for, the rest is the file).
#include <cstdint>

#include "imaging/image_check.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  try {
    if (data[0] % 5 < 3) {
      m3d::imaging::slice_image_check(data + 1, size - 1, "fuzz", static_cast<m3d::imaging::ImageKind>(data[0] % 5));
    } else {
      const auto kind = data[0] % 5 == 3 ? m3d::imaging::PayloadKind::kMetaImage : m3d::imaging::PayloadKind::kNrrd;
      m3d::imaging::volume_payload_check(data + 1, size - 1, "fuzz", kind);
    }
  } catch (const m3d::Error&) {}
  return 0;
}
