#!/usr/bin/env python3
"""Generate reference fixtures for m3d's GGUF reader (tests/fixtures/gguf/).

The GGUF files are written by gguf-py (llama.cpp's own Python package, PyPI
``gguf``), and every expected value comes from gguf-py too: its quantizers and
``gguf.quants.dequantize`` for the block formats, its ``TensorNameMap`` for the
llama.cpp <-> Hugging Face tensor names, and the q/k row permutation of
llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel.permute``, restated below).

Environment (one-time setup), pinned::

    ../refenv/bin/pip install gguf==0.17.1      # numpy 1.24 from the venv

Run from the repository root::

    ../refenv/bin/python tools/reference/make_gguf_fixtures.py [--out DIR]

Outputs (default DIR = tests/fixtures/gguf):

* ``blocks.gguf``   one tensor per block type (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
  Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K), shape [3, 512], plus F64 /
  I8 / I16 / I32 tensors and a 3-d Q8_0 one; ``general.alignment`` = 64.  Types
  gguf-py can quantize are quantized from random rows (with a zero block, a
  constant block and a block of exact .5 ties); the K types are random block
  bytes with valid f16 scales.  Metadata of every value type, scalars and arrays.
* ``tiny_llama.gguf``  a 2-layer llama (hidden 64, 4 heads, 2 kv heads, ffn 96,
  vocab 32) as llama.cpp's converter lays it out: gguf names, q/k rows
  permuted, ``llama.*`` config keys and ``tokenizer.ggml.*`` keys (gpt2 model,
  ``smollm`` pre-tokenizer, tokens, token types, merges, special ids,
  add_bos_token, chat template).
* ``expected.safetensors``  float32 arrays: ``blocks/<name>`` and
  ``tiny/<name>`` = gguf-py's dequantized tensor (GGUF name, row-major);
  ``source/<name>`` = the rows that were quantized; ``hf/<hf name>`` = the
  tiny model's q_proj / k_proj in Hugging Face layout (before the permutation),
  passed through the same quantize/dequantize as the stored tensor.
* ``expected.json``  metadata of both files ({key: {type, element, value}}),
  tensor types and shapes, the gguf-py name map (HF -> GGUF) for llama and
  qwen2 (with biases), and the config the tiny model stands for.

Fixed seeds: re-running produces byte-identical files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from safetensors.numpy import save_file

GGUF_PY_VERSION = "0.17.1"
ROWS, COLS = 3, 512


def f16_bytes(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float16).view(np.uint8)


def random_k_blocks(rng: np.random.Generator, qtype: Q, n_blocks: int) -> np.ndarray:
    """Random bytes for a K-quant type gguf-py cannot quantize, with the scale
    fields overwritten by finite positive f16 (f32 for Q8_K) values."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    d = rng.uniform(0.001, 0.05, size=(n_blocks, 1))
    if qtype == Q.Q2_K:
        blocks[:, 80:82] = f16_bytes(d)
        blocks[:, 82:84] = f16_bytes(d / 2)
    elif qtype == Q.Q3_K:
        blocks[:, 108:110] = f16_bytes(d)
    elif qtype in (Q.Q4_K, Q.Q5_K):
        blocks[:, 0:2] = f16_bytes(d)
        blocks[:, 2:4] = f16_bytes(d / 2)
    elif qtype == Q.Q6_K:
        blocks[:, 208:210] = f16_bytes(d)
    elif qtype == Q.Q8_K:
        blocks[:, 0:4] = d.astype(np.float32).view(np.uint8)
        qs = blocks[:, 4:260].view(np.int8).astype(np.int16)
        blocks[:, 260:292] = qs.reshape(n_blocks, 16, 16).sum(axis=2).astype(np.int16).view(np.uint8)
    else:
        raise ValueError(qtype)
    return blocks


def dequantize_q8_k(blocks: np.ndarray) -> np.ndarray:
    """gguf-py has no Q8_K dequantizer; ggml's dequantize_row_q8_K is d * q."""
    d = blocks[:, 0:4].copy().view(np.float32)
    q = blocks[:, 4:260].view(np.int8).astype(np.float32)
    return d * q


def source_rows(rng: np.random.Generator) -> np.ndarray:
    x = (rng.standard_normal((ROWS, COLS)) * 0.7).astype(np.float32)
    x[1, 0:32] = 0.0  # all-zero block: d = 0, id = 0
    x[1, 32:64] = -1.25  # constant block
    x[2, 64:96] = np.arange(32, dtype=np.float32) - 15.5  # halves: rounding ties
    x[2, 95] = 127.0  # ... with Q8_0's d = 1 exactly
    return x


class Metadata:
    """Records every key written, as expected.json wants it."""

    def __init__(self, writer: gguf.GGUFWriter):
        self.writer = writer
        self.expected: dict[str, dict] = {}

    def add(self, key: str, value, vtype: V, sub_type: V | None = None) -> None:
        self.writer.add_key_value(key, value, vtype, sub_type)
        entry = {"type": vtype.name, "element": (sub_type if sub_type is not None else vtype).name}
        entry["value"] = value if not isinstance(value, (bytes, bytearray)) else list(value)
        if vtype in (V.FLOAT32,):
            entry["value"] = float(np.float32(value))
        if vtype == V.ARRAY and sub_type == V.FLOAT32:
            entry["value"] = [float(np.float32(v)) for v in value]
        self.expected[key] = entry


def add_every_kv_type(meta: Metadata) -> None:
    scalars = [
        ("test.u8", 255, V.UINT8), ("test.i8", -128, V.INT8), ("test.u16", 65535, V.UINT16),
        ("test.i16", -32768, V.INT16), ("test.u32", 4294967295, V.UINT32), ("test.i32", -2147483648, V.INT32),
        ("test.f32", 0.1, V.FLOAT32), ("test.bool_true", True, V.BOOL), ("test.bool_false", False, V.BOOL),
        ("test.string", "héllo, GGUF ✓", V.STRING), ("test.u64", 2**64 - 1, V.UINT64),
        ("test.i64", -(2**63), V.INT64), ("test.f64", -1.0e300, V.FLOAT64), ("test.empty_string", "", V.STRING),
    ]
    for key, value, vtype in scalars:
        meta.add(key, value, vtype)
    arrays = [
        ("test.array.u8", [0, 1, 255], V.UINT8), ("test.array.i8", [-128, 0, 127], V.INT8),
        ("test.array.u16", [1, 65535], V.UINT16), ("test.array.i16", [-32768, 32767], V.INT16),
        ("test.array.u32", [7, 4294967295], V.UINT32), ("test.array.i32", [-5, 2147483647], V.INT32),
        ("test.array.f32", [1.5, -0.1, 3e38], V.FLOAT32), ("test.array.bool", [True, False, True], V.BOOL),
        ("test.array.string", ["a", "", "ü ß 中"], V.STRING), ("test.array.u64", [0, 2**64 - 1], V.UINT64),
        ("test.array.i64", [-(2**63), 2**63 - 1], V.INT64), ("test.array.f64", [2.5, -1e-300], V.FLOAT64),
    ]
    for key, value, sub in arrays:
        meta.add(key, value, V.ARRAY, sub)


def write_blocks(out: str, rng: np.random.Generator, expected: dict, arrays: dict) -> None:
    path = os.path.join(out, "blocks.gguf")
    writer = gguf.GGUFWriter(path, arch="m3d_test")
    writer.add_custom_alignment(64)
    meta = Metadata(writer)
    meta.expected["general.architecture"] = {"type": "STRING", "element": "STRING", "value": "m3d_test"}
    meta.expected["general.alignment"] = {"type": "UINT32", "element": "UINT32", "value": 64}
    add_every_kv_type(meta)
    tensors = {}

    def add(name: str, data: np.ndarray, qtype: Q, shape: tuple, values: np.ndarray) -> None:
        writer.add_tensor(name, data, raw_dtype=None if qtype in (Q.F32, Q.F16, Q.F64, Q.I8, Q.I16, Q.I32) else qtype)
        arrays[f"blocks/{name}"] = np.ascontiguousarray(values, dtype=np.float32).reshape(shape)
        tensors[name] = {"type": qtype.name, "shape": list(shape)}

    src = source_rows(rng)
    for qtype in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1):
        name = f"t.{qtype.name.lower()}"
        data = gguf.quants.quantize(src, qtype)
        add(name, data, qtype, src.shape, gguf.quants.dequantize(data, qtype))
        arrays[f"source/{name}"] = src
    for qtype in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K):
        name = f"t.{qtype.name.lower()}"
        _, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks = random_k_blocks(rng, qtype, ROWS * COLS // 256)
        values = dequantize_q8_k(blocks) if qtype == Q.Q8_K else gguf.quants.dequantize(blocks, qtype)
        add(name, blocks.reshape(ROWS, -1), qtype, (ROWS, COLS), values)
    # A 3-d quantized tensor and the plain integer / f64 types.
    cube = (rng.standard_normal((2, 3, 64)) * 2).astype(np.float32)
    q = gguf.quants.quantize(cube, Q.Q8_0)
    add("t.q8_0_3d", q, Q.Q8_0, cube.shape, gguf.quants.dequantize(q, Q.Q8_0))
    add("t.f64", np.array([[1.0, -2.5, 1e-3], [4.0, 0.0, -7.0]]), Q.F64, (2, 3), np.array([[1.0, -2.5, 1e-3], [4.0, 0.0, -7.0]]))
    for qtype, dtype in ((Q.I8, np.int8), (Q.I16, np.int16), (Q.I32, np.int32)):
        ints = np.array([-7, 0, 5, 100, -100], dtype=dtype)
        add(f"t.{qtype.name.lower()}", ints, qtype, (5,), ints.astype(np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expected["blocks"] = {"metadata": meta.expected, "tensors": tensors, "alignment": 64}


# convert_hf_to_gguf.py's LlamaModel.permute, restated: rows of each head go from
# [half 0 | half 1] (rotate-half RoPE) to interleaved pairs (ggml's RoPE).
def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


TINY = {"hidden": 64, "heads": 4, "kv_heads": 2, "ffn": 96, "vocab": 32, "layers": 2, "ctx": 256,
        "eps": 1e-5, "theta": 100000.0}


def tokenizer_keys(meta: Metadata) -> None:
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [c for c in "abcdefghijklmnopqrstuvwxyz"] + ["Ġ", "ab", "Ġa"]
    assert len(tokens) == TINY["vocab"]
    meta.add("tokenizer.ggml.model", "gpt2", V.STRING)
    meta.add("tokenizer.ggml.pre", "smollm", V.STRING)
    meta.add("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING)
    meta.add("tokenizer.ggml.token_type", [3, 3, 3] + [1] * (len(tokens) - 3), V.ARRAY, V.INT32)
    meta.add("tokenizer.ggml.merges", ["a b", "Ġ a"], V.ARRAY, V.STRING)
    meta.add("tokenizer.ggml.bos_token_id", 1, V.UINT32)
    meta.add("tokenizer.ggml.eos_token_id", 2, V.UINT32)
    meta.add("tokenizer.ggml.unknown_token_id", 0, V.UINT32)
    meta.add("tokenizer.ggml.padding_token_id", 2, V.UINT32)
    meta.add("tokenizer.ggml.add_bos_token", False, V.BOOL)
    meta.add("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}", V.STRING)


def write_tiny_llama(out: str, rng: np.random.Generator, expected: dict, arrays: dict) -> None:
    t = TINY
    head_dim = t["hidden"] // t["heads"]
    path = os.path.join(out, "tiny_llama.gguf")
    writer = gguf.GGUFWriter(path, arch="llama")
    meta = Metadata(writer)
    meta.expected["general.architecture"] = {"type": "STRING", "element": "STRING", "value": "llama"}
    meta.add("general.name", "m3d tiny llama", V.STRING)
    meta.add("llama.context_length", t["ctx"], V.UINT32)
    meta.add("llama.embedding_length", t["hidden"], V.UINT32)
    meta.add("llama.block_count", t["layers"], V.UINT32)
    meta.add("llama.feed_forward_length", t["ffn"], V.UINT32)
    meta.add("llama.rope.dimension_count", head_dim, V.UINT32)
    meta.add("llama.attention.head_count", t["heads"], V.UINT32)
    meta.add("llama.attention.head_count_kv", t["kv_heads"], V.UINT32)
    meta.add("llama.attention.layer_norm_rms_epsilon", t["eps"], V.FLOAT32)
    meta.add("llama.rope.freq_base", t["theta"], V.FLOAT32)
    meta.add("llama.vocab_size", t["vocab"], V.UINT32)
    tokenizer_keys(meta)

    hidden, ffn, kv_rows = t["hidden"], t["ffn"], t["kv_heads"] * head_dim
    hf = {"model.embed_tokens.weight": (t["vocab"], hidden), "model.norm.weight": (hidden,), "lm_head.weight": (t["vocab"], hidden)}
    for i in range(t["layers"]):
        p = f"model.layers.{i}."
        hf.update({p + "input_layernorm.weight": (hidden,), p + "self_attn.q_proj.weight": (hidden, hidden),
                   p + "self_attn.k_proj.weight": (kv_rows, hidden), p + "self_attn.v_proj.weight": (kv_rows, hidden),
                   p + "self_attn.o_proj.weight": (hidden, hidden), p + "post_attention_layernorm.weight": (hidden,),
                   p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
                   p + "mlp.down_proj.weight": (hidden, ffn)})
    types = {"model.embed_tokens.weight": Q.F16, "lm_head.weight": Q.Q8_0,
             "model.layers.0.self_attn.q_proj.weight": Q.F32, "model.layers.0.self_attn.k_proj.weight": Q.F32,
             "model.layers.0.self_attn.v_proj.weight": Q.Q8_0, "model.layers.0.self_attn.o_proj.weight": Q.Q4_0,
             "model.layers.0.mlp.gate_proj.weight": Q.Q4_1, "model.layers.0.mlp.up_proj.weight": Q.Q5_0,
             "model.layers.0.mlp.down_proj.weight": Q.Q5_1,
             "model.layers.1.self_attn.q_proj.weight": Q.Q8_0, "model.layers.1.self_attn.k_proj.weight": Q.Q4_0,
             "model.layers.1.self_attn.v_proj.weight": Q.BF16, "model.layers.1.self_attn.o_proj.weight": Q.F16,
             "model.layers.1.mlp.gate_proj.weight": Q.Q8_0, "model.layers.1.mlp.up_proj.weight": Q.Q8_0,
             "model.layers.1.mlp.down_proj.weight": Q.Q8_0}
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, t["layers"])
    tensors = {}
    for hf_name, shape in hf.items():
        w = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if hf_name.endswith("norm.weight"):
            w = (1.0 + w).astype(np.float32)
        qtype = types.get(hf_name, Q.F32)
        stored = w
        if hf_name.endswith("q_proj.weight"):
            stored = permute(w, t["heads"], t["heads"])
        elif hf_name.endswith("k_proj.weight"):
            stored = permute(w, t["heads"], t["kv_heads"])
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        data = gguf.quants.quantize(stored, qtype)
        writer.add_tensor(name, data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
        arrays[f"tiny/{name}"] = gguf.quants.dequantize(data, qtype).reshape(shape).astype(np.float32)
        tensors[name] = {"type": qtype.name, "shape": list(shape), "hf": hf_name}
        if hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            # Rows quantize independently, so the HF-layout expectation is the same
            # quantize/dequantize applied before the permutation.
            arrays[f"hf/{hf_name}"] = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(shape).astype(np.float32)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    names = {}
    for arch, n in ((gguf.MODEL_ARCH.LLAMA, "llama"), (gguf.MODEL_ARCH.QWEN2, "qwen2")):
        m = gguf.get_tensor_name_map(arch, t["layers"])
        pairs = {}
        for hf_name in list(hf) + [f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(t["layers"]) for p in "qkv"]:
            g = m.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if g is not None:
                pairs[hf_name] = g
        names[n] = pairs
    expected["tiny_llama"] = {
        "metadata": meta.expected,
        "tensors": tensors,
        "names": names,
        "config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
                   "intermediate_size": ffn, "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
                   "num_key_value_heads": t["kv_heads"], "vocab_size": t["vocab"], "max_position_embeddings": t["ctx"],
                   "rms_norm_eps": float(np.float32(t["eps"])), "rope_theta": float(np.float32(t["theta"])),
                   "tie_word_embeddings": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tests/fixtures/gguf")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20)
    version = importlib.metadata.version("gguf")
    if version != GGUF_PY_VERSION:
        raise SystemExit(f"gguf-py {version} found; these fixtures are pinned to {GGUF_PY_VERSION}: "
                         f"pip install gguf=={GGUF_PY_VERSION}")
    expected: dict = {"gguf_py_version": version}
    arrays: dict[str, np.ndarray] = {}
    write_blocks(args.out, rng, expected, arrays)
    write_tiny_llama(args.out, rng, expected, arrays)
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(arrays.items())}, os.path.join(args.out, "expected.safetensors"))
    with open(os.path.join(args.out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
