// libFuzzer target: the NIfTI-1/2 header parser and voxel decoding (bytes after the header as voxel data).
#include <cstdint>

#include "imaging/nifti.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto header = m3d::imaging::nifti_parse_header(data, size, "fuzz.nii");
    m3d::imaging::nifti_affine(header);
    const size_t offset = header.version == 1 ? 348 : 540;
    m3d::imaging::ReadOptions options;
    options.max_voxels = 1 << 20;
    if (size >= offset) m3d::imaging::nifti_decode(header, data + offset, size - offset, "fuzz.nii", options);
  } catch (const m3d::Error&) {}
  return 0;
}
