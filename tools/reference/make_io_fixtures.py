#!/usr/bin/env python3
"""Generate reference fixtures for m3d's checkpoint readers (tests/fixtures/io/).

The files are written by the real Python libraries (``safetensors`` and
``torch.save``) so that the C++ GoogleTests can check our safetensors reader
and our PyTorch ``.bin`` (zip + pickle) reader against ground truth.

Environment (one-time setup): a virtual environment created with
``--system-site-packages`` on top of a system Python that has PyTorch
installed (e.g. Debian's ``python3-torch``), plus ``safetensors`` from PyPI::

    /usr/bin/python3 -m venv --system-site-packages ../refenv
    ../refenv/bin/pip install safetensors

Run from the repository root::

    ../refenv/bin/python tools/reference/make_io_fixtures.py [--out DIR]

Outputs (default DIR = tests/fixtures/io):

* ``st_dtypes.safetensors``  one small tensor per safetensors dtype, plus a
  0-d scalar and an empty [0, 3] tensor, with ``__metadata__``.
* ``st_sharded/``            two safetensors shards + ``model.safetensors.index.json``
  laid out the way Hugging Face ``save_pretrained`` writes them.
* ``torch_state.bin``        ``torch.save`` (zip format) of a real
  ``nn.Module.state_dict()`` (Linear + BatchNorm1d + an f16 buffer).
  Saved to a path, so the zip's top-level folder is the file stem
  (``torch_state/``).
* ``torch_bf16_views.bin``   ``torch.save`` (zip format) of an OrderedDict of
  bf16 views (storage offsets, transposed / strided views, one
  ``nn.Parameter``) into ONE shared 64-element storage.  Saved through an
  in-memory buffer, so the zip's top-level folder is ``archive/``.
* ``torch_legacy.bin``       the state dict of ``torch_state.bin`` saved in the
  legacy (pre-1.6, non-zip) format; the C++ reader must reject it.
  NOTE: the legacy format keys storages by memory address, so this one file is
  not byte-for-byte reproducible (its contents are); an existing file with the
  right contents is therefore left untouched.
* ``expected.json``          for every fixture except the legacy one:
  name -> {"dtype", "shape", "values"} where values are the logical
  (row-major, after views/strides) elements converted to float64.

All random data comes from fixed-seed generators; re-running produces
byte-identical files (``torch_legacy.bin``: see above).  safetensors
emits ``__metadata__`` in hash order, so those files are re-saved until the
library writes the keys sorted (see ``save_st_deterministic``).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickletools
import struct
import sys
import zipfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "io")

# torch dtype -> safetensors dtype string.
ST_DTYPE = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

ST_METADATA = {"format": "pt", "note": "m3d fixture"}


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def describe(t: torch.Tensor) -> dict:
    """Expected-record for one tensor: dtype, shape, logical float64 values."""
    values = t.detach().contiguous().flatten().to(torch.float64).tolist()
    return {
        "dtype": ST_DTYPE[t.dtype],
        "shape": list(t.shape),
        "values": values,
    }


def randn(gen: torch.Generator, shape, dtype) -> torch.Tensor:
    # Draw in f32 and round into the target dtype: the stored tensor *is* the
    # rounded value, so it is exactly representable by construction.
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)


def randint(gen: torch.Generator, lo: int, hi: int, shape, dtype) -> torch.Tensor:
    return torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64).to(dtype)


# ----------------------------------------------------------------------------
# safetensors fixtures
# ----------------------------------------------------------------------------

def _st_header(path: str) -> str:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n).decode("utf-8")


def save_st_deterministic(tensors, path: str, metadata: dict) -> None:
    """``save_file``, retried until ``__metadata__`` comes out in sorted key order.

    safetensors (Rust) serializes ``__metadata__`` from a HashMap with a
    per-process random hash seed, so the key order in the header varies from
    run to run.  Rather than editing the header ourselves, re-save until the
    library happens to emit the keys sorted; the file is then byte-for-byte
    what safetensors wrote, and reproducible.  (Tensor entries are always
    emitted in a fixed order: by dtype alignment, then by name.)
    """
    want = sorted(metadata)
    for _ in range(256):
        save_file(dict(tensors), path, metadata=metadata)
        got = json.loads(_st_header(path),
                         object_pairs_hook=collections.OrderedDict)["__metadata__"]
        if list(got) == want:
            return
        # New HashMap instances get fresh random keys, so simply retry.
    raise RuntimeError(f"{path}: could not obtain a sorted __metadata__ order")


def make_st_dtypes(out_dir: str) -> dict:
    g = torch.Generator().manual_seed(1234)
    tensors = collections.OrderedDict()
    tensors["f64"] = torch.randn((2, 3), generator=g, dtype=torch.float64)
    tensors["f32"] = randn(g, (3, 4), torch.float32)
    tensors["f16"] = randn(g, (5,), torch.float16)
    tensors["bf16"] = randn(g, (2, 2, 2), torch.bfloat16)
    # Values well inside +-2^53 so the float64 expected values are exact; make
    # sure large magnitudes (beyond 32 bits) and negatives are present.
    i64 = randint(g, -1000, 1000, (4,), torch.int64)
    i64[0] = -(1 << 40) - 7
    i64[1] = (1 << 35) + 3
    tensors["i64"] = i64
    i32 = randint(g, -100000, 100000, (2, 3), torch.int32)
    i32[0, 0] = -(1 << 31)  # INT32_MIN
    tensors["i32"] = i32
    tensors["i16"] = torch.tensor([-32768, 1234, 32767], dtype=torch.int16)
    tensors["i8"] = torch.tensor([-128, -5, 0, 127], dtype=torch.int8)
    tensors["u8"] = randint(g, 0, 256, (6,), torch.uint8)
    tensors["u8"][0] = 255
    tensors["bool"] = torch.tensor([True, False, False, True, True], dtype=torch.bool)
    tensors["scalar"] = randn(g, (), torch.float32)
    tensors["empty"] = torch.zeros((0, 3), dtype=torch.float32)

    save_st_deterministic(tensors, os.path.join(out_dir, "st_dtypes.safetensors"),
                          ST_METADATA)

    expected = collections.OrderedDict()
    expected["__metadata__"] = dict(ST_METADATA)
    for name, t in tensors.items():
        expected[name] = describe(t)
    return expected


def make_st_sharded(out_dir: str) -> dict:
    g = torch.Generator().manual_seed(2024)
    shard_dir = os.path.join(out_dir, "st_sharded")
    os.makedirs(shard_dir, exist_ok=True)

    shards = collections.OrderedDict()
    shards["model-00001-of-00002.safetensors"] = collections.OrderedDict([
        ("model.embed.weight", randn(g, (4, 3), torch.float32)),
        ("model.layers.0.w", randn(g, (3, 3), torch.float32)),
    ])
    shards["model-00002-of-00002.safetensors"] = collections.OrderedDict([
        ("model.layers.1.w", randn(g, (3, 3), torch.float32)),
        ("lm_head.weight", randn(g, (4, 3), torch.float32)),
    ])

    weight_map = {}
    total_size = 0
    expected = collections.OrderedDict()
    for fname, tensors in shards.items():
        # transformers writes {"format": "pt"} into every shard.
        save_st_deterministic(tensors, os.path.join(shard_dir, fname),
                              {"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = fname
            total_size += t.numel() * t.element_size()
            expected[name] = describe(t)

    # Same layout as transformers' save_pretrained: indent=2, sorted keys,
    # trailing newline.
    index = {"metadata": {"total_size": total_size},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(shard_dir, "model.safetensors.index.json"), "w",
              encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return expected


# ----------------------------------------------------------------------------
# torch.save fixtures
# ----------------------------------------------------------------------------

class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.register_buffer("scale", torch.zeros(4, dtype=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x)) * self.scale.float()


def make_state_dict() -> "collections.OrderedDict[str, torch.Tensor]":
    torch.manual_seed(7)  # nn.Linear init uses the global generator
    net = SmallNet()
    g = torch.Generator().manual_seed(77)
    with torch.no_grad():
        net.scale.copy_(randn(g, (4,), torch.float16))
        net.bn.weight.copy_(1.0 + 0.1 * randn(g, (4,), torch.float32))
        net.bn.bias.copy_(0.1 * randn(g, (4,), torch.float32))
        # One training step so running_mean / running_var are non-trivial
        # and num_batches_tracked == 1.
        net.train()
        net(randn(g, (8, 3), torch.float32))
    net.eval()
    sd = net.state_dict()
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, "_metadata")
    return sd


def make_torch_state(out_dir: str, sd) -> dict:
    # Saving to a path: torch uses the file stem as the zip's top-level folder.
    torch.save(sd, os.path.join(out_dir, "torch_state.bin"))
    return collections.OrderedDict((k, describe(v)) for k, v in sd.items())


def make_torch_legacy(out_dir: str, sd) -> None:
    # The legacy format names storages by their memory address, so its bytes
    # differ on every run.  To avoid churn, keep an existing file whose
    # contents already match.
    path = os.path.join(out_dir, "torch_legacy.bin")
    if os.path.exists(path) and not zipfile.is_zipfile(path):
        try:
            old = torch.load(path, map_location="cpu")
        except Exception:  # pylint: disable=broad-except
            old = None
        if (isinstance(old, dict) and list(old) == list(sd)
                and all(old[k].dtype == v.dtype and torch.equal(old[k], v)
                        for k, v in sd.items())):
            return
    torch.save(sd, path, _use_new_zipfile_serialization=False)


def make_torch_bf16_views(out_dir: str) -> dict:
    g = torch.Generator().manual_seed(4321)
    flat = randn(g, (64,), torch.bfloat16)

    views = collections.OrderedDict()
    views["a.weight"] = flat[0:12].view(3, 4)                 # offset 0, contiguous
    views["b.weight"] = flat[12:24].view(4, 3).t()            # offset 12, stride (1, 3)
    views["c.bias"] = flat[30:35]                             # offset 30
    views["d.weight"] = flat[40:64].view(2, 3, 4)[:, 1:, ::2]  # offset 44, stride (12, 4, 2)
    views["e.param"] = torch.nn.Parameter(flat[5:9])          # _rebuild_parameter, offset 5

    for v in views.values():
        assert v.storage().data_ptr() == flat.storage().data_ptr()
    assert not views["b.weight"].is_contiguous()
    assert not views["d.weight"].is_contiguous()

    # Saved through a buffer: the zip's top-level folder is then "archive/".
    buf = io.BytesIO()
    torch.save(views, buf)
    with open(os.path.join(out_dir, "torch_bf16_views.bin"), "wb") as f:
        f.write(buf.getvalue())
    return collections.OrderedDict((k, describe(v)) for k, v in views.items())


# ----------------------------------------------------------------------------
# verification
# ----------------------------------------------------------------------------

def _check(name: str, t: torch.Tensor, exp: dict) -> None:
    got = describe(t)
    if got != exp:
        raise AssertionError(f"{name}: read-back mismatch\n got {got}\n exp {exp}")


def verify(out_dir: str) -> None:
    with open(os.path.join(out_dir, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)

    # st_dtypes
    path = os.path.join(out_dir, "st_dtypes.safetensors")
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == expected["st_dtypes"]["__metadata__"], f.metadata()
    loaded = load_file(path)
    exp = {k: v for k, v in expected["st_dtypes"].items() if k != "__metadata__"}
    assert set(loaded) == set(exp), (sorted(loaded), sorted(exp))
    for k, t in loaded.items():
        _check(f"st_dtypes/{k}", t, exp[k])

    # st_sharded
    shard_dir = os.path.join(out_dir, "st_sharded")
    with open(os.path.join(shard_dir, "model.safetensors.index.json"),
              encoding="utf-8") as f:
        index = json.load(f)
    total = 0
    seen = set()
    for fname in sorted(set(index["weight_map"].values())):
        for k, t in load_file(os.path.join(shard_dir, fname)).items():
            assert index["weight_map"][k] == fname
            _check(f"st_sharded/{k}", t, expected["st_sharded"][k])
            total += t.numel() * t.element_size()
            seen.add(k)
    assert seen == set(expected["st_sharded"]) == set(index["weight_map"])
    assert total == index["metadata"]["total_size"]

    # torch_state
    sd = torch.load(os.path.join(out_dir, "torch_state.bin"), map_location="cpu")
    assert list(sd) == list(expected["torch_state"]), list(sd)
    for k, t in sd.items():
        _check(f"torch_state/{k}", t, expected["torch_state"][k])

    # torch_bf16_views: values, and that the views still share one storage
    views = torch.load(os.path.join(out_dir, "torch_bf16_views.bin"),
                       map_location="cpu")
    assert list(views) == list(expected["torch_bf16_views"]), list(views)
    ptrs = {v.storage().data_ptr() for v in views.values()}
    assert len(ptrs) == 1, "views no longer share a storage"
    assert isinstance(views["e.param"], torch.nn.Parameter)
    for k, t in views.items():
        _check(f"torch_bf16_views/{k}", t, expected["torch_bf16_views"][k])
    with zipfile.ZipFile(os.path.join(out_dir, "torch_bf16_views.bin")) as z:
        data = [n for n in z.namelist() if "/data/" in n]
        assert data == ["archive/data/0"], data
        assert z.getinfo("archive/data/0").file_size == 64 * 2

    # torch_legacy: must not be a zip, but torch can still read it
    legacy = os.path.join(out_dir, "torch_legacy.bin")
    assert not zipfile.is_zipfile(legacy)
    sd_legacy = torch.load(legacy, map_location="cpu")
    for k, t in sd_legacy.items():
        _check(f"torch_legacy/{k}", t, expected["torch_state"][k])


def print_report(out_dir: str) -> None:
    total = 0
    print("files:")
    for root, _, files in sorted(os.walk(out_dir)):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            sz = os.path.getsize(p)
            total += sz
            print(f"  {os.path.relpath(p, out_dir):48s} {sz:8d}")
    print(f"  {'TOTAL':48s} {total:8d}")
    for fn in ("torch_state.bin", "torch_bf16_views.bin"):
        with zipfile.ZipFile(os.path.join(out_dir, fn)) as z:
            print(f"{fn} zip entries:")
            for info in z.infolist():
                print(f"  {info.filename:40s} {info.file_size:6d} "
                      f"compress_type={info.compress_type} offset={info.header_offset}")
            pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            ops, globals_ = set(), []
            for op, arg, _ in pickletools.genops(z.read(pkl)):
                ops.add(op.name)
                if op.name == "GLOBAL" and arg not in globals_:
                    globals_.append(arg)
            print(f"  opcodes: {' '.join(sorted(ops))}")
            print(f"  GLOBALs: {globals_}")


# ----------------------------------------------------------------------------

def make_npy(out_dir: str) -> dict:
    """.npy files written by numpy itself: the M3D-Data image layout (1, D, H, W)
    float32, other dtypes, a format-2.0 file; plus arrays the reader must refuse
    (Fortran order, big-endian), which get no expected entry."""
    import numpy as np

    rng = np.random.default_rng(7)
    arrays = collections.OrderedDict()
    arrays["npy_image_f32"] = rng.standard_normal((1, 4, 5, 6)).astype("<f4")
    arrays["npy_i16"] = rng.integers(-2000, 3000, size=(3, 4)).astype("<i2")
    arrays["npy_u8"] = rng.integers(0, 256, size=(7,)).astype("|u1")
    arrays["npy_bool"] = rng.integers(0, 2, size=(2, 3)).astype("|b1")
    arrays["npy_f64_scalar"] = np.array(2.5, dtype="<f8")
    expected = collections.OrderedDict()
    names = {"<f4": "F32", "<i2": "I16", "|u1": "U8", "|b1": "BOOL", "<f8": "F64"}
    for name, a in arrays.items():
        np.save(os.path.join(out_dir, name + ".npy"), a)
        expected[name] = {"dtype": names[a.dtype.str], "shape": list(a.shape),
                          "values": [float(v) for v in a.reshape(-1)]}
    v2 = rng.standard_normal((2, 3)).astype("<f4")
    with open(os.path.join(out_dir, "npy_v2_f32.npy"), "wb") as f:
        np.lib.format.write_array(f, v2, version=(2, 0))
    expected["npy_v2_f32"] = {"dtype": "F32", "shape": [2, 3], "values": [float(v) for v in v2.reshape(-1)]}
    np.save(os.path.join(out_dir, "npy_bad_fortran.npy"), np.asfortranarray(rng.standard_normal((3, 4)).astype("<f4")))
    np.save(os.path.join(out_dir, "npy_bad_bigendian.npy"), rng.standard_normal((3,)).astype(">f4"))
    return expected


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--quiet", action="store_true", help="no report")
    args = ap.parse_args(argv)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    expected = collections.OrderedDict()
    expected["st_dtypes"] = make_st_dtypes(out_dir)
    expected["st_sharded"] = make_st_sharded(out_dir)
    sd = make_state_dict()
    expected["torch_state"] = make_torch_state(out_dir, sd)
    expected["torch_bf16_views"] = make_torch_bf16_views(out_dir)
    make_torch_legacy(out_dir, sd)
    expected["npy"] = make_npy(out_dir)

    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")

    verify(out_dir)
    if not args.quiet:
        print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
        print_report(out_dir)
        print("read-back verification: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
