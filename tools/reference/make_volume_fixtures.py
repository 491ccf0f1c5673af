#!/usr/bin/env python3
"""Reference geometry and voxel values of real medical image files, for m3d's volume readers
(tests/fixtures/volumes/readers.json).

The files are the test data Debian ships in python3-nibabel and python3-pydicom (scripts/setup.sh
installs both); the references are what nibabel and pydicom report for them:
- NIfTI (nibabel): shape, the voxel-to-RAS affine, and voxel values of get_fdata() (scl_slope /
  scl_inter applied) for the first volume of 4D files;
- DICOM (pydicom): Rows/Columns, PixelSpacing, ImagePositionPatient, ImageOrientationPatient and
  pixel_array * RescaleSlope + RescaleIntercept; a series directory is sorted geometrically (IPP
  projected on the slice normal), as m3d must.

Voxel values: the sum, min, max and 64 values at fixed pseudo-random (i, j, k) indices (i = x =
column, j = y = row, k = slice).

    ../refenv/bin/python tools/reference/make_volume_fixtures.py
"""
import json
import os
import random
import sys

import nibabel
import numpy as np
import pydicom

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "volumes", "readers.json")
NIBABEL = "/usr/lib/python3/dist-packages/nibabel/tests/data"
PYDICOM = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

NIFTI_FILES = ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii", "standard.nii.gz",
               "reoriented_anat_moved.nii"]
DICOM_FILES = ["CT_small.dcm", "MR_small.dcm"]
DICOM_SERIES = ["dicomdirtests/77654033/CT2", "dicomdirtests/98892001/CT5N"]


def samples(data, seed):
    """data indexed [i, j, k]."""
    rng = random.Random(seed)
    out = []
    for _ in range(64):
        index = [rng.randrange(n) for n in data.shape]
        out.append({"index": index, "value": float(data[tuple(index)])})
    return {"sum": float(data.astype(np.float64).sum()), "min": float(data.min()), "max": float(data.max()), "samples": out}


def nifti_case(name):
    image = nibabel.load(os.path.join(NIBABEL, name))
    data = np.asarray(image.get_fdata(dtype=np.float64))
    frames = data.shape[3] if data.ndim == 4 else 1
    if data.ndim == 4:
        data = data[..., 0]
    return {"file": f"nibabel/{name}", "shape": list(data.shape), "frames": frames,
            "affine_ras": np.asarray(image.affine, dtype=float).reshape(-1).tolist(), **samples(data, name)}


def dicom_geometry(ds):
    iop = [float(v) for v in ds.ImageOrientationPatient]
    row, col = np.array(iop[:3]), np.array(iop[3:])
    return row, col, np.cross(row, col)


def dicom_pixels(ds):
    pixels = ds.pixel_array.astype(np.float64)
    return pixels * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))


def dicom_file_case(name):
    ds = pydicom.dcmread(os.path.join(PYDICOM, name))
    row, col, _ = dicom_geometry(ds)
    data = dicom_pixels(ds).T[:, :, None]  # [row, column] -> [i, j, k]
    return {"file": f"pydicom/{name}", "shape": list(data.shape), "spacing_xy": [float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])],
            "origin_lps": [float(v) for v in ds.ImagePositionPatient], "direction_columns": [row.tolist(), col.tolist()],
            "modality": str(ds.Modality), "series_uid": str(ds.SeriesInstanceUID), **samples(data, name)}


def dicom_series_case(relative):
    folder = os.path.join(PYDICOM, relative)
    slices = [pydicom.dcmread(os.path.join(folder, f)) for f in sorted(os.listdir(folder))]
    slices = [s for s in slices if "PixelData" in s]
    row, col, normal = dicom_geometry(slices[0])
    slices.sort(key=lambda s: float(np.dot(normal, [float(v) for v in s.ImagePositionPatient])))
    positions = [np.array([float(v) for v in s.ImagePositionPatient]) for s in slices]
    data = np.stack([dicom_pixels(s).T for s in slices], axis=-1)
    along = [float(np.dot(normal, p)) for p in positions]
    gaps = np.diff(along)
    spacing_z = (along[-1] - along[0]) / (len(along) - 1)  # the mean gap (an evenly spaced volume's spacing)
    return {"file": f"pydicom/{relative}", "shape": list(data.shape),
            "spacing_xy": [float(slices[0].PixelSpacing[1]), float(slices[0].PixelSpacing[0])], "spacing_z": spacing_z,
            "origin_lps": positions[0].tolist(), "direction_columns": [row.tolist(), col.tolist(), normal.tolist()],
            "modality": str(slices[0].Modality), "series_uid": str(slices[0].SeriesInstanceUID),
            "slice_files": len(slices), "uniform_spacing": bool(np.ptp(gaps) <= 1e-3 * gaps.max() + 1e-3),
            **samples(data, relative)}


def mixed_size_series():
    """Two slices of one series with different sizes (a bad-input case): the first two slices of CT2,
    the second cut to 8 x 8."""
    folder = os.path.join(PYDICOM, DICOM_SERIES[0])
    out_dir = os.path.join(ROOT, "tests", "fixtures", "volumes", "mixed_size_series")
    os.makedirs(out_dir, exist_ok=True)
    for n, name in enumerate(sorted(os.listdir(folder))[:2]):
        ds = pydicom.dcmread(os.path.join(folder, name))
        if n == 1:
            pixels = ds.pixel_array[:8, :8].copy()
            ds.Rows, ds.Columns = pixels.shape
            ds.PixelData = pixels.tobytes()
        ds.save_as(os.path.join(out_dir, f"slice{n}.dcm"))


def m3d_cap_slices():
    """A raw M3D-Cap case: numbered slice images (grey, RGB, palette; one of another size, which the
    official script drops), and what M3D's Data/process/m3d_cap_data_prepare.py makes of it: PIL
    convert("L") / 255, slices sorted by integer file name, the most common shape kept, stacked,
    min-max, CropForeground, Resize([32, 256, 256], bilinear)."""
    from collections import Counter

    import torch
    from monai.transforms import CropForeground, Resize
    from PIL import Image

    out_dir = os.path.join(ROOT, "tests", "fixtures", "volumes", "m3d_cap_slices")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:48, 0:40]
    for n in range(1, 13):
        body = ((yy - 24) ** 2 / 400 + (xx - 20) ** 2 / 250 < 1) * (90 + 8 * n)
        spot = ((yy - 20 - n) ** 2 + (xx - 15) ** 2 < 16) * 120
        grey = np.clip(body + spot + rng.integers(0, 20, body.shape), 0, 255).astype(np.uint8)
        if n == 7:  # a stray slice of another size
            Image.fromarray(grey[:30, :30]).save(os.path.join(out_dir, f"{n}.png"))
        elif n % 3 == 0:
            rgb = np.stack([grey, np.clip(grey.astype(int) + 10, 0, 255), grey // 2], -1).astype(np.uint8)
            Image.fromarray(rgb, "RGB").save(os.path.join(out_dir, f"{n}.png"))
        elif n % 4 == 1:
            Image.fromarray(grey).convert("P").save(os.path.join(out_dir, f"{n}.png"))
        else:
            Image.fromarray(grey).save(os.path.join(out_dir, f"{n}.png"))
    names = sorted(os.listdir(out_dir), key=lambda f: int(os.path.splitext(f)[0]))
    slices = [np.array(Image.open(os.path.join(out_dir, f)).convert("L")) / 255.0 for f in names]
    shape = Counter(s.shape for s in slices).most_common(1)[0][0]
    volume = np.stack([s for s in slices if s.shape == shape])[None].astype(np.float32)  # (1, D, H, W)
    volume = volume - volume.min()
    volume = volume / max(float(volume.max()), 1e-8)
    prepared = Resize(spatial_size=(32, 256, 256), mode="bilinear")(CropForeground()(torch.from_numpy(volume)))
    return {"file": "m3d_cap_slices", "stacked_shape": list(volume.shape[1:]), **summary_dhw(np.asarray(prepared[0]), "cap")}


def summary_dhw(a, seed):
    a = np.asarray(a, dtype=np.float64)
    rng = random.Random(seed)
    picks = [[rng.randrange(n) for n in a.shape] for _ in range(256)]
    return {"shape": list(a.shape), "sum": float(a.sum()), "min": float(a.min()), "max": float(a.max()),
            "samples": [{"index": p, "value": float(a[tuple(p)])} for p in picks]}


def main() -> int:
    mixed_size_series()
    cap = m3d_cap_slices()
    cases = [nifti_case(n) for n in NIFTI_FILES] + [dicom_file_case(n) for n in DICOM_FILES] + \
            [dicom_series_case(d) for d in DICOM_SERIES]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"nibabel": nibabel.__version__, "pydicom": pydicom.__version__, "nibabel_data": NIBABEL,
                   "pydicom_data": PYDICOM, "cases": cases, "m3d_cap_slices": cap}, f, indent=1)
        f.write("\n")
    for c in cases:
        print(c["file"], c["shape"], c.get("frames", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
