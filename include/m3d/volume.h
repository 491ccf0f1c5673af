// Public API: medical volumes on disk. NIfTI (.nii, .nii.gz), DICOM series (a
// directory, or one .dcm file), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd); M3D-style
// .npy (no geometry: unit spacing, identity direction); a folder of 2D slice images
// (.png/.jpg, the raw M3D-Cap layout). Torch-free.
//
// Conventions (as ITK): voxels are stored x fastest, then y, then z, so as a
// row-major array they are (z, y, x) = the model's (D, H, W); physical points are
// LPS millimetres: point = origin + direction * diag(spacing) * (i, j, k).
//
// The definitions live in m3d::imaging (the library's imaging layer) and are
// exported into m3d below.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "m3d/dtype.h"

namespace m3d {
namespace imaging {
struct Geometry {
  std::array<double, 3> spacing{1, 1, 1};  // mm per voxel along i, j, k
  std::array<double, 3> origin{0, 0, 0};  // LPS mm of voxel (0, 0, 0)
  std::array<double, 9> direction{1, 0, 0, 0, 1, 0, 0, 0, 1};  // row-major 3x3; column c: LPS direction of index axis c

  // LPS point of a (fractional) voxel index (i, j, k).
  std::array<double, 3> index_to_physical(const std::array<double, 3>& index) const;
  std::array<double, 3> physical_to_index(const std::array<double, 3>& point) const;
  // The 4x4 row-major voxel-to-RAS affine that nibabel reports for the same file.
  std::array<double, 16> affine_ras() const;
  // Three letters naming where each index axis points, in RAS terms as nibabel's
  // aff2axcodes ("RAS", "LPS", ...).
  std::string axcodes() const;
};

struct VolumeInfo {
  std::string path, format;  // format: nifti, dicom, nrrd, metaimage, npy, slices
  std::string modality, series_uid, series_description;
  double rescale_slope = 1, rescale_intercept = 0;  // already applied to the voxels (DICOM, NIfTI scl_*)
  int64_t frames = 1;  // time points in the file (4D NIfTI); frame 0 is read
  std::vector<std::string> warnings;  // e.g. non-uniform slice spacing
};

struct RawVolume {
  std::array<int64_t, 3> size{0, 0, 0};  // voxels along i (x), j (y), k (z)
  DType dtype = DType::F32;  // as stored (after rescaling; unsigned 16/32-bit widen to I32/I64)
  std::vector<uint8_t> data;  // size[0] * size[1] * size[2] values, x fastest
  Geometry geometry;
  VolumeInfo info;

  int64_t voxels() const { return size[0] * size[1] * size[2]; }
};

struct ReadOptions {
  std::string series;  // DICOM directory: SeriesInstanceUID to read (default: the series with most slices)
  int64_t max_voxels = int64_t{1} << 31;  // refuse larger volumes before allocating
};

struct SeriesInfo {
  std::string uid, description, modality;
  int64_t files = 0;
};

RawVolume volume_read(const std::string& path, const ReadOptions& options = {});
// The image series of a DICOM directory, most files first.
std::vector<SeriesInfo> dicom_series_list(const std::string& dir);
// NIfTI (.nii / .nii.gz), NRRD (.nrrd) or MetaImage (.mha) with the full geometry; dtype U8, I16, I32, F32 or F64.
void volume_write(const std::string& path, const RawVolume& volume);

}  // namespace imaging

using imaging::dicom_series_list;
using imaging::Geometry;
using imaging::RawVolume;
using imaging::ReadOptions;
using imaging::SeriesInfo;
using imaging::volume_read;
using imaging::volume_write;
using imaging::VolumeInfo;

}  // namespace m3d
