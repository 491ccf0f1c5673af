#!/usr/bin/env python3
"""Damaged DICOM inputs for the reader's bad-input tests, made with pydicom from its own
test file CT_small.dcm (Debian python3-pydicom):

  tests/fixtures/volumes/bad_dicom/short_pixels.dcm      PixelData cut to half its
      rows x columns x 16 bits (the element's length says so too, so only a length check finds it)
  tests/fixtures/volumes/bad_dicom/duplicate_positions/  two slices of one series with
      different SOP instance UIDs and the same ImagePositionPatient
  tests/fixtures/volumes/bad_dicom/missing_position/     two slices, one without ImagePositionPatient

    ../refenv/bin/python tools/reference/make_bad_dicom.py
"""
import os
import sys

import pydicom
from pydicom.data import get_testdata_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    out = os.path.join(ROOT, "tests", "fixtures", "volumes", "bad_dicom")
    source = get_testdata_file("CT_small.dcm")
    os.makedirs(out, exist_ok=True)

    ds = pydicom.dcmread(source)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(os.path.join(out, "short_pixels.dcm"))

    for name, change in (("duplicate_positions", None), ("missing_position", "drop")):
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        for n in range(2):
            ds = pydicom.dcmread(source)
            ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{n + 1}"
            ds.InstanceNumber = n + 1
            if change == "drop" and n == 1:
                del ds.ImagePositionPatient
            ds.save_as(os.path.join(folder, f"slice{n}.dcm"))
    print("pydicom", pydicom.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
