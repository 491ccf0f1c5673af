// NIfTI-1 and NIfTI-2 (.nii, .nii.gz) read as nibabel reads them: the sform when
// sform_code > 0, else the qform when qform_code > 0, else the Analyze base affine;
// scl_slope / scl_inter applied (voxels become float); 4D files give their first
// volume. Our own reader, not ITK's: Debian's ITK 5.2 cannot open NIfTI-2 and drops
// the orientation of 4D files (tests/test_volume_io.cpp shows both against nibabel).
#pragma once

#include <cstdint>
#include <string>

#include "imaging/volume_io.h"

namespace m3d::imaging {

struct NiftiHeader {
  int version = 1;  // 1 or 2
  bool swap = false;  // big-endian file
  int64_t dims[8] = {0};
  double pixdim[8] = {0};
  int datatype = 0;
  int64_t vox_offset = 0;
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  double quatern[3] = {0}, qoffset[3] = {0};
  double srow[3][4] = {{0}};
};

// Parses the first 348 (NIfTI-1) or 540 (NIfTI-2) bytes; `name` names the file in errors.
NiftiHeader nifti_parse_header(const uint8_t* bytes, size_t size, const std::string& name);
// The voxel-to-RAS affine nibabel's get_best_affine gives (row-major 4x4).
std::array<double, 16> nifti_affine(const NiftiHeader& header);
// Geometry, dtype and the first volume from `data` (the bytes after vox_offset).
RawVolume nifti_decode(const NiftiHeader& header, const uint8_t* data, size_t size, const std::string& name, const ReadOptions& options);
RawVolume nifti_read(const std::string& path, const ReadOptions& options);

}  // namespace m3d::imaging
