#!/usr/bin/env python3
"""MONAI 1.3.0 reference outputs of the preprocessing ops m3d implements, on three real volumes
(Debian python3-nibabel test data), for tests/test_preprocess.cpp (tests/fixtures/volumes/preprocess.json).

Axis order: m3d's tensors are (D, H, W) = nibabel's data[i, j, k] transposed, so MONAI gets
data.transpose(2, 1, 0)[None] for every op except Orientation, which needs the (i, j, k) array
with its affine (its output is transposed back the same way for the comparison).

Each output: shape (D, H, W), sum, sum of squares, min, max and 256 values at fixed pseudo-random
indices; Orientation also the new RAS affine.

    ../refenv/bin/python tools/reference/make_preprocess_fixtures.py
"""
import json
import os
import random
import sys

import monai
import nibabel
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (CenterSpatialCrop, CropForeground, NormalizeIntensity, Orientation, Resize,
                              ScaleIntensityRange, ScaleIntensityRangePercentiles, Spacing, SpatialPad)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "volumes", "preprocess.json")
NIBABEL = "/usr/lib/python3/dist-packages/nibabel/tests/data"
VOLUMES = ["anatomical.nii", "functional.nii", "reoriented_anat_moved.nii", "example4d.nii.gz"]  # the last is oblique


def summary(array, seed):
    a = np.asarray(array, dtype=np.float64)
    rng = random.Random(seed)
    picks = [[rng.randrange(n) for n in a.shape] for _ in range(256)]
    return {"shape": list(a.shape), "sum": float(a.sum()), "sum_squares": float((a * a).sum()), "min": float(a.min()),
            "max": float(a.max()), "samples": [{"index": p, "value": float(a[tuple(p)])} for p in picks]}


def dhw(t):
    return t[0].numpy() if isinstance(t, torch.Tensor) else t[0]


def m3d_minmax(x):  # M3D / Med3DVLM data preparation
    x = x - x.min()
    return x / max(float(x.max()), 1e-8)


def cases_for(name):
    image = nibabel.load(os.path.join(NIBABEL, name))
    data = np.asarray(image.get_fdata(dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    x = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 1, 0)))[None].float()  # (1, D, H, W)
    lo, hi = float(np.percentile(data, 10)), float(np.percentile(data, 90))
    mean = float(data.mean())
    unit = m3d_minmax(x)
    ops = []

    def add(op, output, note=""):
        ops.append({"op": op, "note": note, **summary(dhw(output), f"{name}{len(ops)}")})

    for axcodes in ("RAS", "LPS", "ASL"):
        oriented = Orientation(axcodes=axcodes)(MetaTensor(torch.from_numpy(data)[None], affine=torch.tensor(image.affine)))
        result = summary(oriented[0].numpy().transpose(2, 1, 0), f"{name}{axcodes}")
        ops.append({"op": {"op": "orient", "axcodes": axcodes}, "affine_ras": oriented.affine.numpy().reshape(-1).tolist(), **result})
    # Spacing on the (i, j, k) array with its affine; pixdim given to m3d in (D, H, W) = (k, j, i) order.
    for pixdim, mode in (((3.0, 1.5, 2.5), "bilinear"), ((1.0, 1.0, 1.0), "bilinear"), ((2.7, 3.3, 1.9), "nearest")):  # nearest: no exact .5 ties, whose rounding is last-bit fragile
        resampled = Spacing(pixdim=pixdim, mode=mode)(MetaTensor(torch.from_numpy(data)[None], affine=torch.tensor(image.affine)))
        result = summary(resampled[0].numpy().transpose(2, 1, 0), f"{name}{pixdim}")
        ops.append({"op": {"op": "spacing", "pixdim": list(pixdim[::-1]), "mode": mode},
                    "affine_ras": resampled.affine.numpy().reshape(-1).tolist(), **result})
    add({"op": "scale_range", "a_min": lo, "a_max": hi, "b_min": 0.0, "b_max": 1.0, "clip": True},
        ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(x))
    add({"op": "scale_range", "a_min": lo, "a_max": hi, "b_min": -1.0, "b_max": 1.0, "clip": False},
        ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=False)(x))
    add({"op": "percentile_range", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": True},
        ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)(x))
    add({"op": "zscore"}, NormalizeIntensity()(x))
    add({"op": "minmax"}, unit, "M3D's formula (numpy), not a MONAI transform")
    for threshold, margin in ((0.0, 0), (mean, 0), (mean, 2)):
        add({"op": "crop_foreground", "threshold": threshold, "margin": margin},
            CropForeground(select_fn=lambda v, t=threshold: v > t, margin=margin, allow_smaller=True)(x))
    for size in ((20, 24, 28), (9, 50, 31)):
        add({"op": "resize", "size": list(size), "mode": "trilinear"}, Resize(spatial_size=size, mode="trilinear")(unit))
        add({"op": "resize", "size": list(size), "mode": "nearest"}, Resize(spatial_size=size, mode="nearest")(unit))
        add({"op": "resize", "size": list(size), "mode": "area"}, Resize(spatial_size=size, mode="area")(unit))
    add({"op": "pad", "size": [40, 48, 41]}, SpatialPad(spatial_size=(40, 48, 41))(unit))
    add({"op": "center_crop", "size": [10, 12, 15]}, CenterSpatialCrop(roi_size=(10, 12, 15))(unit))
    # The built-in m3d-lamed recipe (M3D-Cap preparation): min-max, CropForeground, Resize([32, 256, 256]).
    recipe = Resize(spatial_size=(32, 256, 256), mode="bilinear")(CropForeground()(unit))
    add({"recipe": "m3d-lamed"}, recipe, "MONAI Resize mode bilinear (trilinear in 3D)")
    return {"file": f"nibabel/{name}", "ops": ops}


def main() -> int:
    cases = [cases_for(n) for n in VOLUMES]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"monai": monai.__version__, "torch": torch.__version__, "nibabel_data": NIBABEL, "cases": cases}, f)
        f.write("\n")
    print(f"{sum(len(c['ops']) for c in cases)} op outputs; MONAI {monai.__version__}, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
