#!/usr/bin/env python3
"""A small GGUF file written by gguf-py's GGUFWriter, for the byte-identity test of
m3d's writer (io/gguf_write.h, tests/test_gguf.cpp GgufWrite.*).

Environment: ../refenv/bin/pip install gguf==0.17.1
Run from the repository root:
    ../refenv/bin/python tools/reference/make_gguf_write_fixture.py
Output: tests/fixtures/gguf/written.gguf. The test rebuilds the same content (the values
below are restated there) and compares bytes.
"""
import pathlib

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quants

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/gguf/written.gguf"


def main():
    w = GGUFWriter(str(OUT), arch="m3d")  # writes general.architecture first
    w.add_string("general.name", "LamedPhi3ForCausalLM")
    w.add_uint32("m3d.count", 7)
    w.add_int32("m3d.offset", -3)
    w.add_float32("m3d.scale", 0.5)
    w.add_bool("m3d.flag", True)
    w.add_uint64("m3d.big", 1 << 40)
    w.add_array("m3d.long_names", ["model.a.very.long.name", "x"])
    w.add_array("m3d.ids", [1, -2, 3])  # gguf-py stores Python ints as INT32 arrays
    # f32 (2, 3): 0..5 / 4; q8_0 (2, 32): row r = (j - 16) * (r + 1) / 8; bf16-free to keep numpy simple.
    a = (np.arange(6, dtype=np.float32) / 4).reshape(2, 3)
    w.add_tensor("plain", a)
    rows = np.stack([(np.arange(32, dtype=np.float32) - 16) * (r + 1) / 8 for r in range(2)])
    q = quants.quantize(rows, GGMLQuantizationType.Q8_0)
    w.add_tensor("blocks", q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(OUT, OUT.stat().st_size)


if __name__ == "__main__":
    main()
