#!/usr/bin/env python3
"""A slice folder of real JPEG files (Pillow's libjpeg): baseline, progressive and with
restart markers, made from the first three PNG slices of tests/fixtures/volumes/m3d_cap_slices.
The reader test checks that m3d's JPEG guard accepts each and that ITK decodes the
pixels Pillow decodes (mean within 0.5 grey levels: the two libjpeg builds may use
different inverse DCTs). Writes tests/fixtures/volumes/jpeg_slices/{1,2,3}.jpg and
jpeg_slices.json beside it. Environment: the reference venv + `pip install pillow`.

    ../refenv/bin/python tools/reference/make_jpeg_slices.py
"""
import json
import os
import sys

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    source = os.path.join(ROOT, "tests", "fixtures", "volumes", "m3d_cap_slices")
    out_dir = os.path.join(ROOT, "tests", "fixtures", "volumes", "jpeg_slices")
    os.makedirs(out_dir, exist_ok=True)
    settings = [dict(quality=90), dict(quality=80, progressive=True), dict(quality=85, restart_marker_blocks=4)]
    means = []
    for n, options in enumerate(settings, start=1):
        image = Image.open(os.path.join(source, f"{n}.png")).convert("L")
        path = os.path.join(out_dir, f"{n}.jpg")
        image.save(path, "JPEG", **options)
        decoded = Image.open(path).convert("L")
        means.append(int(sum(decoded.tobytes())) / (decoded.width * decoded.height))
    with open(os.path.join(out_dir, "..", "jpeg_slices.json"), "w") as f:
        json.dump({"width": image.width, "height": image.height, "slice_means": means, "settings": [str(s) for s in settings]},
                  f, indent=1)
        f.write("\n")
    print(means)
    return 0


if __name__ == "__main__":
    sys.exit(main())
