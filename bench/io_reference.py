#!/usr/bin/env python3
"""Python reference for bench_io: the same 64 x 1024x1024 f32 safetensors file
loaded with safetensors.torch (the HF loader) and copied into preallocated f32 or
bf16 parameters, which is what loading weights into a model does (BM_LoadTo).

    ../refenv/bin/python bench/io_reference.py [--repeat 5]

Prints the median of --repeat runs for each case (page cache warm, as in bench_io).
"""
import argparse
import os
import statistics
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    path = os.path.join(tempfile.gettempdir(), "m3d_bench_64.safetensors")
    if not os.path.exists(path):  # bench_io writes the same file; make it if absent
        save_file({f"model.layers.{i}.weight": torch.randn(1024, 1024) for i in range(64)}, path)
    nbytes = os.path.getsize(path)
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        targets = {f"model.layers.{i}.weight": torch.empty(1024, 1024, dtype=dtype) for i in range(64)}
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            with torch.no_grad():
                for key, value in load_file(path).items():
                    targets[key].copy_(value)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"python load_file + copy_ into {name}: median {median * 1e3:.1f} ms, {nbytes / median / 2**30:.2f} GiB/s")


if __name__ == "__main__":
    main()
