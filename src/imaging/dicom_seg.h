// DICOM Segmentation (SOP class 1.2.840.10008.5.1.4.1.1.66.4, PS3.3 A.51) output: a binary
// mask on a DICOM series' own grid as one BINARY segment whose frames reference the source
// slices, written with GDCM from a hand-built data set. The layout follows highdicom's
// defaults (hd.seg.Segmentation, checked by tools/reference/make_dicom_seg_fixtures.py):
// frames only where the mask has a voxel, ordered along cross(column, row cosines).
// Torch-free.
#pragma once

#include <string>

#include "m3d/volume.h"

namespace m3d::imaging {

struct DicomSegOptions {
  // Segment Label (LO): printable ASCII, at most 64 characters (longer ones are cut, others replaced).
  std::string label = "m3d segmentation";
  std::string series_uid;  // the source series; default: the mask's info.series_uid, else the series with most files
  std::string series_description = "m3d segmentation";
  int series_number = 300;
};

// Writes `mask` (U8, nonzero = inside; the grid volume_read(source_dir) gives for that series:
// size, spacing, origin and direction) to `path` as a DICOM-SEG of the series in `source_dir`,
// atomically. Patient, study and frame-of-reference attributes are copied from the source
// slices; Series and SOP Instance UIDs are new. Segmented Property Category and Type are both
// SCT 85756007 "Tissue" (a generic code, 3D Slicer's default for a new segment). Throws when a
// source slice does not lie on the mask's grid or the sizes differ.
void dicom_seg_write(const std::string& path, const std::string& source_dir, const RawVolume& mask, const DicomSegOptions& options = {});

// A binary DICOM-SEG of the series in `source_dir` decoded back onto that series' grid:
// `grid` is the series as volume_read gives it (size and geometry are taken from it); each
// frame lands on the source slice its Source Image Sequence references; U8 0 / 1 with every
// segment's frames together. Frames that reference no slice of the series are an error.
RawVolume dicom_seg_read(const std::string& path, const std::string& source_dir, const RawVolume& grid);

// Whether `path` is a directory holding a DICOM image series (what dicom_seg_write needs).
bool is_dicom_series_dir(const std::string& path);

}  // namespace m3d::imaging
