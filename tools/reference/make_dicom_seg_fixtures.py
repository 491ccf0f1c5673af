#!/usr/bin/env python3
"""A tiny synthetic CT series, a mask on it, and highdicom's binary DICOM-SEG of that mask.

tests/fixtures/dicom_seg/ gets:
- `series/`: 6 CT slices of 12 rows x 13 columns written with pydicom (CT Image Storage,
  int16 with rescale -1024, axial, no obliquity, PixelSpacing 0.75 \\ 0.8 mm, slices 2.5 mm
  apart along +z, patient and study attributes filled in). The files are named in the
  reverse of their slice order (slice_05.dcm is the lowest z) so that a reader must sort by
  position. Every UID is derived from a fixed seed: a rerun writes the same bytes.
- `expected.json`: the mask (slices, rows, columns) in slice order (lowest z first), and what
  highdicom 0.28 writes for it with its defaults (`hd.seg.Segmentation`, BINARY,
  `omit_empty_frames=True`): rows / columns, number of frames, the shared Pixel Measures and
  Plane Orientation, per frame the Plane Position, the referenced source SOP instance UID
  (Derivation Image and Source Image sequences) and the dimension index values, the segment
  description (label, category and type codes, algorithm type), the copied patient / study
  attributes, the bit layout and the packed PixelData bytes (hex) with each frame unpacked.
- `highdicom_seg.dcm`: that SEG itself (m3d's reader decodes it back to the mask).
  highdicom keeps only the frames with a mask voxel (all frames when the mask is empty), orders
  them by ascending distance along cross(column cosines, row cosines) (for an axial series:
  highest z first), and puts Segment Identification in the shared functional groups when there
  is one segment.

With a second argument, an m3d DICOM-SEG of the same series is read back with highdicom
(`hd.seg.segread`) and pydicom, and its frames and references are compared with the above:

    ../refenv/bin/python tools/reference/make_dicom_seg_fixtures.py [m3d_seg.dcm]

Environment: the reference venv with `pip install highdicom pydicom` (highdicom 0.28.2,
pydicom 3.0.2), numpy 1.24.
"""
import json
import os
import sys

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "dicom_seg")
SLICES, ROWS, COLUMNS = 6, 12, 13  # 156 bits a frame: packed frames share bytes
PIXEL_SPACING = [0.75, 0.8]  # row spacing (between rows), column spacing
SLICE_STEP = 2.5
ORIGIN = [-6.0, -4.5, 30.0]
LABEL = "liver"


def uid(name):
    return generate_uid(entropy_srcs=["m3d dicom_seg fixture", name])


def ct_slice(k, study, series, frame):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid(f"ct {k}")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = pydicom.uid.CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Tiny", "M3D-0001", "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "17", "ACC17"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.StudyDescription, ds.SeriesDescription = "m3d fixture study", "tiny ct"
    ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "CT", "pydicom", 3, k + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + SLICE_STEP * k]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = PIXEL_SPACING, SLICE_STEP
    ds.KVP, ds.AcquisitionNumber = 120, 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    r, c = np.mgrid[0:ROWS, 0:COLUMNS]
    pixels = (1024 + 40 * k + 10 * r + c).astype(np.int16)
    ds.PixelData = pixels.tobytes()
    return ds


def make_mask():
    mask = np.zeros((SLICES, ROWS, COLUMNS), bool)
    mask[1, 3:7, 4:9] = True  # a box on slice 1
    mask[2, 2:10, 3:12] = True
    mask[2, 5, 12] = True  # a lone voxel on the right edge
    mask[3, 4:6, 6:8] = True
    mask[3, 11, 0] = True  # the last row's first column
    return mask  # slices 0, 4 and 5 are empty


def dump_seg(seg):
    """The attributes the C++ test compares, from a SEG dataset."""
    frames = seg.pixel_array if seg.NumberOfFrames > 1 else seg.pixel_array[None]
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    segment = seg.SegmentSequence[0]
    per_frame = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        derivation = item.DerivationImageSequence[0]
        source = derivation.SourceImageSequence[0]
        per_frame.append({
            "image_position": [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            "referenced_sop_instance_uid": str(source.ReferencedSOPInstanceUID),
            "referenced_sop_class_uid": str(source.ReferencedSOPClassUID),
            "dimension_index_values": [int(v) for v in item.FrameContentSequence[0].DimensionIndexValues],
            "segment_number": int((item if "SegmentIdentificationSequence" in item else shared).SegmentIdentificationSequence[0].ReferencedSegmentNumber),
        })

    def code(c):
        return [str(c.CodeValue), str(c.CodingSchemeDesignator), str(c.CodeMeaning)]

    return {
        "sop_class_uid": str(seg.SOPClassUID),
        "modality": str(seg.Modality),
        "segmentation_type": str(seg.SegmentationType),
        "rows": int(seg.Rows),
        "columns": int(seg.Columns),
        "number_of_frames": int(seg.NumberOfFrames),
        "bits_allocated": int(seg.BitsAllocated),
        "bits_stored": int(seg.BitsStored),
        "high_bit": int(seg.HighBit),
        "photometric_interpretation": str(seg.PhotometricInterpretation),
        "pixel_spacing": [float(v) for v in measures.PixelSpacing],
        "slice_thickness": float(measures.SliceThickness),
        "spacing_between_slices": float(measures.SpacingBetweenSlices) if "SpacingBetweenSlices" in measures else None,
        "image_orientation": [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        "frame_of_reference_uid": str(seg.FrameOfReferenceUID),
        "study": {k: str(seg.get(k, "")) for k in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                                                      "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")},
        "referenced_series_uid": str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
        "referenced_instances": sorted(str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence),
        "dimension_index_pointers": [[f"{int(i.DimensionIndexPointer):08x}", f"{int(i.FunctionalGroupPointer):08x}"]
                                     for i in seg.DimensionIndexSequence],
        "segment": {
            "number": int(segment.SegmentNumber),
            "label": str(segment.SegmentLabel),
            "algorithm_type": str(segment.SegmentAlgorithmType),
            "category": code(segment.SegmentedPropertyCategoryCodeSequence[0]),
            "type": code(segment.SegmentedPropertyTypeCodeSequence[0]),
        },
        "per_frame": per_frame,
        "pixel_data_hex": bytes(seg.PixelData).hex(),
        "frames": [f.astype(int).tolist() for f in frames],
    }


def make():
    study, series, frame = uid("study"), uid("series"), uid("frame of reference")
    os.makedirs(os.path.join(OUT, "series"), exist_ok=True)
    slices = [ct_slice(k, study, series, frame) for k in range(SLICES)]
    for k, ds in enumerate(slices):
        ds.save_as(os.path.join(OUT, "series", f"slice_{SLICES - 1 - k:02d}.dcm"), enforce_file_format=True)
    mask = make_mask()
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=LABEL,
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(name="m3d", version="0.1.0", family=codes.cid7162.ArtificialIntelligence),
    )
    seg = hd.seg.Segmentation(
        source_images=slices,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=uid("seg series"),
        series_number=300,
        sop_instance_uid=uid("seg instance"),
        instance_number=1,
        manufacturer="m3d",
        manufacturer_model_name="m3d",
        software_versions="0.1.0",
        device_serial_number="0",
    )
    # Fixed creation times, so that a rerun writes the same bytes.
    seg.InstanceCreationDate = seg.ContentDate = "20240102"
    seg.InstanceCreationTime = seg.ContentTime = "120000"
    for item in seg.ContributingEquipmentSequence:
        if "ContributionDateTime" in item:
            item.ContributionDateTime = "20240102120000"
    dimension_uid = uid("dimension organization")
    seg.DimensionOrganizationSequence[0].DimensionOrganizationUID = dimension_uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = dimension_uid
    seg.save_as(os.path.join(OUT, "highdicom_seg.dcm"))
    expected = dump_seg(seg)
    expected["mask"] = mask.astype(int).tolist()
    expected["label"] = LABEL
    expected["source_sop_instance_uids"] = [str(s.SOPInstanceUID) for s in slices]  # in slice order
    expected["source_series_uid"] = series
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    return expected


def check_m3d(path, expected):
    """highdicom reads m3d's SEG; its frames and references agree with highdicom's own SEG."""
    seg = hd.seg.segread(path)
    got = dump_seg(seg)
    problems = []
    for key in ("sop_class_uid", "segmentation_type", "rows", "columns", "number_of_frames", "bits_allocated", "pixel_spacing", "slice_thickness",
                "image_orientation", "frame_of_reference_uid", "study", "referenced_series_uid", "referenced_instances", "per_frame",
                "dimension_index_pointers", "segment", "frames"):
        if got[key] != expected[key]:
            problems.append(key)
    # The packed bits; not the byte that pads an odd length (highdicom 0.28 appends b'0', i.e.
    # 0x30, where the standard pads with 0x00, as m3d does).
    data_bytes = 2 * ((got["number_of_frames"] * got["rows"] * got["columns"] + 7) // 8)
    if got["pixel_data_hex"][:data_bytes] != expected["pixel_data_hex"][:data_bytes]:
        problems.append("pixel_data_hex")
    source_uids = expected["source_sop_instance_uids"]
    volume = seg.get_volume() if hasattr(seg, "get_volume") else None
    print(f"highdicom {hd.__version__} read {path}: {seg.NumberOfFrames} frames, segment '{seg.SegmentSequence[0].SegmentLabel}'")
    dense = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, segment_numbers=[1], assert_missing_frames_are_empty=True)
    print("frames by source instance equal the mask:", bool(np.array_equal(dense[..., 0].astype(bool), np.array(expected["mask"], bool))))
    if volume is not None:
        print("volume shape", volume.spatial_shape)
    print("differences from highdicom's own SEG:", problems or "none")
    return not problems


def main():
    expected = make()
    print(f"wrote {OUT}: {expected['number_of_frames']} frames of {len(expected['mask'])} slices")
    if len(sys.argv) > 1:
        sys.exit(0 if check_m3d(sys.argv[1], expected) else 1)


if __name__ == "__main__":
    main()
