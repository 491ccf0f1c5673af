#!/usr/bin/env python3
"""The Python side of bench/bench_volume.cpp: read the same NIfTI with nibabel (MONAI's default
reader) and run M3D's preparation with MONAI 1.3.0 (min-max, CropForeground, Resize([32, 256, 256],
bilinear)), median of R runs. Prints one JSON line.

    ../refenv/bin/python bench/volume_reference.py FILE.nii.gz [--repeat R]
"""
import argparse
import json
import os
import statistics
import time

import nibabel
import numpy as np
import torch
from monai.transforms import CropForeground, Resize


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # Debian's torch starts with 1; m3d uses every core
    crop, resize = CropForeground(), Resize(spatial_size=(32, 256, 256), mode="bilinear")
    reads, preps = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        data = np.asarray(nibabel.load(args.path).dataobj)  # (i, j, k) int16
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 1, 0)))[None].float()  # (1, D, H, W)
        x = x - x.min()
        x = x / max(float(x.max()), 1e-8)
        resize(crop(x))
        preps.append(time.perf_counter() - start)
    totals = [a + b for a, b in zip(reads, preps)]
    print(json.dumps({"impl": "nibabel+monai", "threads": torch.get_num_threads(), "read_s": round(statistics.median(reads), 3),
                      "recipe_s": round(statistics.median(preps), 3), "total_s": round(statistics.median(totals), 3),
                      "repeat": args.repeat}))


if __name__ == "__main__":
    main()
