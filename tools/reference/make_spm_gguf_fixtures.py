#!/usr/bin/env python3
"""Reference ids for m3d's SentencePiece ("llama") tokenizer read from GGUF metadata.

A GGUF converted from a Llama-2 / Mistral v1 / Phi-3 / TinyLlama checkpoint carries the
SentencePiece model as tokenizer.ggml.model = "llama": the pieces, their scores and their types,
written by llama.cpp's convert_hf_to_gguf.py (_create_vocab_sentencepiece; Phi3MiniModel for
the added tokens and the padding up to vocab_size). This script writes such GGUFs (vocabulary
only, with gguf-py) from the SentencePiece model of third_party/tokenizers/mistral_v1 (the
Llama-2-style 32000-piece model of PyPI mistral-common 1.5.1; its pieces are those of
third_party/tokenizers/llama2/tokenizer.json), reads the pieces with a small protobuf reader of
its own (no sentencepiece / protobuf package needed), and runs llama.cpp (llama-cpp-python) on
them: llama_tokenize (add_special with parse_special), llama_detokenize (keeping / removing
special tokens) and llama_vocab_is_eog (the ids that end generation; also on the SmolLM2 GGUF). The GGUFs (~700 KB each) are not committed: the C++ test writes the same
metadata with m3d's GGUF writer from the same tokenizer.model, and the fixture pins what that
metadata holds (counts per type, score sum, spot entries) and lists the entries past the
model's pieces (Phi-3's added tokens and padding).

Variants:
- llama2: the converter's output for the plain model (add_bos true, add_eos false, no
  add_space_prefix key: llama.cpp's default true).
- phi3_lamed: Phi-3-mini's layout (32064 tokens: the Phi-3 added tokens at 32000..32010 as
  control, M3D-LaMed's <im_patch> <bx_start> <bx_end> control and [SEG] user-defined, [PADn]
  unused), general.name "Phi3" (llama.cpp then right-strips whitespace after special tokens),
  add_space_prefix written true, eos <|endoftext|>.
- no_prefix: add_space_prefix false, add_bos false, add_eos true.

The same texts also go through Hugging Face `tokenizers` on third_party/tokenizers/llama2/
tokenizer.json (the fast tokenizer of that vocabulary); where its ids differ from llama.cpp's the
case keeps them as `hf_ids` (the GGUF tokenizer follows llama.cpp).

    bash scripts/fetch_vocab.sh
    ../refenv/bin/python tools/reference/make_spm_gguf_fixtures.py

Writes tests/fixtures/tokenizers/spm_gguf.json; the GGUFs go to build/spm_gguf/.
"""
import ctypes
import importlib.metadata
import json
import os
import struct
import sys

import gguf
import llama_cpp
import tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "third_party", "tokenizers", "mistral_v1", "tokenizer.model")
HF_JSON = os.path.join(ROOT, "third_party", "tokenizers", "llama2", "tokenizer.json")
SMOLLM2 = os.path.join(ROOT, "third_party", "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT_DIR = os.path.join(ROOT, "build", "spm_gguf")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "spm_gguf.json")

PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
              "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
LAMED_ADDED = [("<im_patch>", True), ("<bx_start>", True), ("<bx_end>", True), ("[SEG]", False)]
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

TEXTS = [
    "Hello world",
    " Hello world",
    "  two leading spaces",
    "multiple   spaces   between",
    "trailing space ",
    "line one\nline two\n\nline four",
    "\n starts with a newline",
    "tabs\tand\tmore\ttabs",
    "",
    " ",
    "The liver measures 15.2 x 10.4 cm; no focal lesion (series 3, image 45/120).",
    "Digits 0123456789 and 2024-03-14",
    "Ünïcödé çàfé naïve résumé",
    "日本語のテキスト",
    "emoji 🫁🩻 need byte fallback 🧠",
    "mixed 한국어 and Ελληνικά",
    "\u0000control\u0007chars",
    "<s> literal bos in text",
    "text </s> with eos",
    "<unk> unknown token",
    "a<s>b</s>c",
    "<s><s>",
    "[INST] What is shown in this CT? [/INST]",
    "What is the diagnosis?<im_patch><im_patch> Answer: [SEG] here",
    "<|user|>\nDescribe the scan.<|end|>\n<|assistant|>\n",
    "<|system|> You are a radiologist.<|end|>   <|user|>  hi",
    "<bx_start>12,34,56<bx_end> box",
    "[SEG][SEG] adjacent",
    "[PAD32020] padding name",
    "don't can't it's we'll they've",
    "▁already▁escaped",
    "Hello\u3000ideographic space",
    "aaaaaaaaaaaaaaaaaaaaaaaa ================ ....",
    "https://example.org/path?q=1&r=two#frag",
    "  \n  \n  ",
]


def read_varint(b, i):
    value, shift = 0, 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def read_fields(b):
    """(field, wire type, value) of one protobuf message; value: int, bytes or 4/8 raw bytes."""
    i = 0
    while i < len(b):
        key, i = read_varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(b, i)
        elif wire == 2:
            n, i = read_varint(b, i)
            value, i = b[i:i + n], i + n
        elif wire == 5:
            value, i = b[i:i + 4], i + 4
        elif wire == 1:
            value, i = b[i:i + 8], i + 8
        else:
            raise ValueError(f"wire type {wire}")
        yield field, wire, value


def read_spm(path):
    """The pieces of a SentencePiece ModelProto: [(piece, score, type)] (sentencepiece_model.proto)."""
    pieces = []
    with open(path, "rb") as f:
        data = f.read()
    for field, _, value in read_fields(data):
        if field != 1:
            continue
        piece, score, kind = "", 0.0, NORMAL
        for f2, _, v2 in read_fields(value):
            if f2 == 1:
                piece = v2.decode("utf-8")
            elif f2 == 2:
                score = struct.unpack("<f", v2)[0]
            elif f2 == 3:
                kind = v2
        pieces.append((piece, score, kind))
    return pieces


def variants(pieces):
    base_tokens = [p for p, _, _ in pieces]
    base_scores = [s for _, s, _ in pieces]
    base_types = [t for _, _, t in pieces]
    phi_tokens, phi_scores, phi_types = list(base_tokens), list(base_scores), list(base_types)
    # convert_hf_to_gguf.py: tokens up to vocab_size are "[PAD{i}]" UNUSED at -10000; added tokens
    # score -1000, CONTROL when their added_tokens_decoder entry is special, else USER_DEFINED.
    for i in range(len(base_tokens), 32064):
        phi_tokens.append(f"[PAD{i}]")
        phi_scores.append(-10000.0)
        phi_types.append(UNUSED)
    added = [(t, True) for t in PHI3_ADDED] + LAMED_ADDED
    for k, (text, special) in enumerate(added):
        i = len(base_tokens) + k
        phi_tokens[i], phi_scores[i], phi_types[i] = text, -1000.0, CONTROL if special else USER_DEFINED
    # <|end|> written user-defined, as a converter that reads only added_tokens.json does: llama.cpp
    # then makes this control-looking token control ("control-looking token ... was not control-type").
    phi_types[phi_tokens.index("<|end|>")] = USER_DEFINED
    return {
        "llama2": {"name": "Llama 2 7b Chat Hf", "tokens": base_tokens, "scores": base_scores, "types": base_types,
                   "bos": 1, "eos": 2, "unk": 0, "pad": None, "add_bos": True, "add_eos": False, "add_space_prefix": None},
        "phi3_lamed": {"name": "Phi3", "tokens": phi_tokens, "scores": phi_scores, "types": phi_types,
                       "bos": 1, "eos": 32000, "unk": 0, "pad": 32000, "add_bos": True, "add_eos": False, "add_space_prefix": True},
        "no_prefix": {"name": "no prefix", "tokens": base_tokens, "scores": base_scores, "types": base_types,
                      "bos": 1, "eos": 2, "unk": 0, "pad": None, "add_bos": False, "add_eos": True, "add_space_prefix": False},
    }


def write_gguf(path, v):
    """A vocabulary-only llama GGUF (the hyperparameters llama.cpp reads before the vocabulary)."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(v["name"])
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(v["tokens"])
    w.add_token_scores(v["scores"])
    w.add_token_types(v["types"])
    w.add_bos_token_id(v["bos"])
    w.add_eos_token_id(v["eos"])
    w.add_unk_token_id(v["unk"])
    if v["pad"] is not None:
        w.add_pad_token_id(v["pad"])
    w.add_add_bos_token(v["add_bos"])
    w.add_add_eos_token(v["add_eos"])
    if v["add_space_prefix"] is not None:
        w.add_add_space_prefix(v["add_space_prefix"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def detokenize(vocab, ids, remove_special, unparse_special):
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 + 16 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, remove_special, unparse_special)
    assert 0 <= n <= size, n
    return buf.raw[:n].decode("utf-8", errors="strict")


def summary(v):
    counts = {}
    for t in v["types"]:
        counts[str(t)] = counts.get(str(t), 0) + 1
    spots = [0, 1, 2, 3, 13, 258, 259, 260, 1000, 28705, 31999, len(v["tokens"]) - 1]
    return {"n_tokens": len(v["tokens"]), "type_counts": counts, "score_sum": float(sum(v["scores"])),
            "spots": [{"id": i, "token": v["tokens"][i], "score": v["scores"][i], "type": v["types"][i]} for i in spots]}


def compare_slow_phi3(path):
    """Prints where llama.cpp on the Phi-3 layout differs from transformers' slow LlamaTokenizer
    (legacy=False, M3D's tokens added: what M3D-LaMed-Phi-3 was trained with) over the corpus of
    make_tokenizer_fixtures.py, whose ids tests/fixtures/tokenizers/slow_phi3/expected.json keeps."""
    slow = json.load(open(os.path.join(os.path.dirname(FIXTURE), "slow_phi3", "expected.json"), encoding="utf-8"))
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    differ = [(t, c["ids"]) for t, c in zip(slow["corpus"], slow["cases"])
              if llm.tokenize(t.encode("utf-8"), add_bos=True, special=True) != c["ids"]]
    print(f"phi3_lamed vs the slow LlamaTokenizer of slow_phi3/: {len(differ)} of {len(slow['corpus'])} texts differ")
    for text, ids in differ[:8]:
        print(f"  {text[-70:]!r}\n    llama.cpp {llm.tokenize(text.encode('utf-8'), add_bos=True, special=True)[-12:]}\n    slow HF   {ids[-12:]}")


def main():
    if not os.path.exists(MODEL):
        sys.exit(f"{MODEL} is missing: run scripts/fetch_vocab.sh")
    os.makedirs(OUT_DIR, exist_ok=True)
    pieces = read_spm(MODEL)
    hf = tokenizers.Tokenizer.from_file(HF_JSON)
    hf_vocab = hf.get_vocab()
    assert all(hf_vocab.get(p) == i for i, (p, _, _) in enumerate(pieces)), "tokenizer.json and tokenizer.model differ"
    out = {"source": "third_party/tokenizers/mistral_v1/tokenizer.model", "llama_cpp_python": llama_cpp.__version__,
           "gguf": importlib.metadata.version("gguf"), "tokenizers": tokenizers.__version__,
           "texts": TEXTS, "variants": {}}
    pass
    for name, v in variants(pieces).items():
        path = os.path.join(OUT_DIR, f"{name}.gguf")
        write_gguf(path, v)
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        vocab = llm._model.vocab
        cases, hf_differs = [], 0
        for text in TEXTS:
            raw = text.encode("utf-8")
            ids = llm.tokenize(raw, add_bos=True, special=True)
            ids_plain = llm.tokenize(raw, add_bos=False, special=True)
            case = {"ids": ids, "ids_plain": ids_plain,
                    "decoded": detokenize(vocab, ids, False, True),
                    "decoded_skip": detokenize(vocab, ids, True, False),
                    "decoded_plain_skip": detokenize(vocab, ids_plain, True, False)}
            if name == "llama2":
                hf_ids = hf.encode(text).ids
                if hf_ids != ids:
                    case["hf_ids"] = hf_ids
                    hf_differs += 1
                    print(f"  llama.cpp and HF differ on {text!r}:\n    llama.cpp {ids}\n    HF        {hf_ids}")
            cases.append(case)
        eog_ids = [i for i in range(len(v["tokens"])) if llama_cpp.llama_vocab_is_eog(vocab, i)]
        del llm
        meta = {k: v[k] for k in ("name", "bos", "eos", "unk", "pad", "add_bos", "add_eos", "add_space_prefix")}
        # The entries past the SentencePiece model's pieces, as written (the test appends them).
        extra = [[v["tokens"][i], v["scores"][i], v["types"][i]] for i in range(len(pieces), len(v["tokens"]))]
        out["variants"][name] = {"metadata": meta, "extra_tokens": extra, "vocab": summary(v), "eog_ids": eog_ids,
                                 "cases": cases}
        print(f"{name}: {len(cases)} texts" + (f", HF differs on {hf_differs}" if name == "llama2" else ""))
    compare_slow_phi3(os.path.join(OUT_DIR, "phi3_lamed.gguf"))
    # The same end-of-generation set on a real byte-level GGUF (scripts/fetch_vocab.sh).
    llm = llama_cpp.Llama(model_path=SMOLLM2, vocab_only=True, verbose=False)
    out["smollm2_eog_ids"] = [i for i in range(llama_cpp.llama_vocab_n_tokens(llm._model.vocab))
                              if llama_cpp.llama_vocab_is_eog(llm._model.vocab, i)]
    del llm
    with open(FIXTURE, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {FIXTURE} ({os.path.getsize(FIXTURE)} bytes)")


if __name__ == "__main__":
    main()
