#!/usr/bin/env python3
"""Reference ids for tokenizer.json normalizers, pre-tokenizers and decoders
(tests/fixtures/tokenizers/pretokenizers.json, checked by tests/test_pretokenizers.cpp).

Two tiny BPE models are trained here with `tokenizers` 0.19.1: "sp", SentencePiece-style
(Metaspace words, <unk> <s> </s>, the 256 <0xXX> byte-fallback pieces appended) and "bl",
byte-level (GPT-2's byte alphabet). Each case is a tokenizer.json made of one of these models
and its own normalizer / pre_tokenizer / decoder / post_processor / added_tokens sections, as
real models write them (Llama-2 legacy Prepend+Replace, Mistral / Llama-2 non-legacy Metaspace
with prepend_scheme "first", legacy `add_prefix_space` fields, BERT-like NFD+Lowercase+
StripAccents, NFKC+Whitespace, SmolLM's Digits+ByteLevel, GPT-2's ByteLevel with a prefix
space) and one case per Split behaviour, String and Regex patterns, `invert`, Punctuation
behaviours, Strip, CharDelimiterSplit. For every text the fixture holds encode(text).ids
(with special tokens) and decode(ids) (keeping and skipping special tokens); the C++ test
rebuilds each tokenizer.json as {"model": models[case.model], **case.tokenizer}.

    ../refenv/bin/pip install tokenizers==0.19.1
    ../refenv/bin/python tools/reference/make_pretokenizer_fixtures.py
"""
import json
import os

import tokenizers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "pretokenizers.json")
assert tokenizers.__version__ == "0.19.1", tokenizers.__version__

TRAIN = [
    "There is a hypodense lesion in the liver, measuring 3.5 x 2.1 cm.",
    "The left kidney demonstrates a well-circumscribed cyst.",
    "No evidence of pleural effusion in the right lung.",
    "Compared with the prior study, the mass has increased in size.",
    "IMPRESSION: findings are likely benign; follow-up CT in 6-12 months.",
    "The pancreas and spleen are unremarkable. The aorta is normal in caliber.",
    "Multiple calcified nodules are seen within the thyroid gland.",
    "What is the abnormality in the liver? Which organ shows the lesion?",
    "the the the and and of of in in is is a a with with",
    "café naïve Zürich résumé über straße",
]

TEXTS = [
    "Hello world", "The liver is normal.", " leading space", "trailing space ", "multiple   spaces  inside", "   ", "",
    "tabs\tand\nnewlines\r\n\nhere", "\t\tindented\ttabs  \n", "Punctuation!!! runs... (like this), and: semi; colons?!",
    "digits 0123456789 and 3.14159, -42, 1e-6, 100%", "Ünïcödé àccents: café, naïve, Zürich", "cafe\u0301 decomposed",
    "中文报告：肝脏未见明显异常。", "日本語のテキスト、カタカナ", "emoji 🫁🩻🧠 ok 👍🏽", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３！",
    "ﬁ ligature ﬂ, Ⅻ numeral, ① circled, ㎏ ㍻", "mm² µm ± ≥ 5 cm ½", "İstanbul ΣΟΦΙΑ ß ẞ Ελληνικά кириллица",
    "a\u00a0non-breaking\u2003em space\u3000ideographic", "under_score snake_case CamelCase", "It's a test: don't, I'M",
    "\u2581literal lower-one-eighth \u2581\u2581 block", "<s> literal bos </s> and [SEG] token", "[SEG]x[SEG]", "x",
    "Devanagari हिन्दी नमस्ते and Arabic مرحبا", "Ⓐ circled letter and x\u20dd enclosing", "zero\u200bwidth joiner\u200d here",
    "Email: user@example.com, URL: https://m3d.org/a-b?c=d&e=f", "CT ABDOMEN/PELVIS W/ CONTRAST 3.5 x 2.1 cm",
]

SPECIAL = [{"id": 0, "content": "<unk>"}, {"id": 1, "content": "<s>"}, {"id": 2, "content": "</s>"}]


def added(normal=False):
    """<unk> <s> </s> as special added tokens (as Llama's file has them), and optionally a normal [SEG]."""
    out = [dict(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True) for t in SPECIAL]
    if normal:
        out.append({"id": 3, "content": "[SEG]", "single_word": False, "lstrip": False, "rstrip": False,
                    "normalized": True, "special": False})
    return out


BOS = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
       "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}}],
       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}


def metaspace(scheme="always", split=True, replacement="\u2581", **extra):
    return {"type": "Metaspace", "replacement": replacement, "prepend_scheme": scheme, "split": split, **extra}


def split(pattern, behavior, invert=False, kind="String"):
    return {"type": "Split", "pattern": {kind: pattern}, "behavior": behavior, "invert": invert}


def seq(kind, *parts):
    key = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "decoder": "decoders"}[kind]
    return {"type": "Sequence", key: list(parts)}


REPLACE_SPACE = {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}
SP_DECODER = seq("decoder", REPLACE_SPACE, {"type": "ByteFallback"}, {"type": "Fuse"},
                 {"type": "Strip", "content": " ", "start": 1, "stop": 0})
BYTES = seq("decoder", {"type": "ByteFallback"}, {"type": "Fuse"})
WS = {"type": "WhitespaceSplit"}

CASES = [
    ("llama2_legacy", "sp", {"normalizer": seq("normalizer", {"type": "Prepend", "prepend": "\u2581"},
                                              {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}),
                             "decoder": SP_DECODER, "post_processor": BOS, "added_tokens": added(True)}),
    ("mistral_metaspace_first", "sp", {"pre_tokenizer": metaspace("first", False), "decoder": SP_DECODER,
                                       "post_processor": BOS, "added_tokens": added(True)}),
    ("metaspace_first_split_decoder", "sp", {"pre_tokenizer": metaspace("first"), "added_tokens": added(True),
                                             "decoder": seq("decoder", metaspace("first"), {"type": "ByteFallback"}, {"type": "Fuse"})}),
    ("metaspace_legacy_add_prefix_space", "sp", {
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
        "decoder": seq("decoder", {"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True})}),
    ("metaspace_never_nosplit", "sp", {
        "pre_tokenizer": metaspace("never", False, add_prefix_space=False),
        "decoder": seq("decoder", {"type": "ByteFallback"}, metaspace("never", False))}),
    ("metaspace_underscore", "sp", {"pre_tokenizer": metaspace("always", True, "_"), "decoder": metaspace("always", True, "_")}),
    ("bert_like_lowercase_strip_accents", "sp", {"normalizer": seq("normalizer", {"type": "NFD"}, {"type": "Lowercase"}, {"type": "StripAccents"}),
                                                 "pre_tokenizer": WS}),
    ("nfkc_whitespace", "sp", {"normalizer": {"type": "NFKC"}, "pre_tokenizer": {"type": "Whitespace"}, "decoder": BYTES}),
    ("nfkd_strip_punctuation", "sp", {"normalizer": seq("normalizer", {"type": "NFKD"}, {"type": "Strip", "strip_left": True, "strip_right": True}),
                                      "pre_tokenizer": seq("pre_tokenizer", WS, {"type": "Punctuation"})}),
    ("strip_left_lowercase_punct_contiguous", "sp", {
        "normalizer": seq("normalizer", {"type": "Strip", "strip_left": True, "strip_right": False}, {"type": "Lowercase"}),
        "pre_tokenizer": {"type": "Punctuation", "behavior": "Contiguous"}, "decoder": BYTES}),
    ("strip_right_punct_merged_previous", "sp", {"normalizer": seq("normalizer", {"type": "NFD"}, {"type": "Strip", "strip_left": False, "strip_right": True}),
                                                 "pre_tokenizer": {"type": "Punctuation", "behavior": "MergedWithPrevious"}, "decoder": BYTES}),
    ("punct_merged_next", "sp", {"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "Punctuation", "behavior": "MergedWithNext"}}),
    ("punct_removed", "sp", {"pre_tokenizer": {"type": "Punctuation", "behavior": "Removed"}, "decoder": BYTES}),
    *[(f"split_space_{b.lower()}", "sp", {"pre_tokenizer": split(" ", b), "decoder": BYTES})
      for b in ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")],
    ("split_regex_words_inverted", "sp", {"pre_tokenizer": split(r"\w+", "Removed", True, "Regex"), "decoder": BYTES}),
    ("split_regex_spaces_merged_next", "sp", {"pre_tokenizer": split(r"\s+", "MergedWithNext", False, "Regex")}),
    ("split_regex_classes_isolated", "sp", {"pre_tokenizer": split(r"\d+|\s+|[\w\-]+|[^\W_]", "Isolated", False, "Regex"), "decoder": BYTES}),
    ("split_regex_empty_matches_contiguous", "sp", {"pre_tokenizer": split(r"a*", "Contiguous", False, "Regex"), "decoder": BYTES}),
    ("split_regex_digits_contiguous_inverted", "sp", {"pre_tokenizer": split(r"[0-9]", "Contiguous", True, "Regex"), "decoder": BYTES}),
    ("split_string_dot_merged_previous_inverted", "sp", {"pre_tokenizer": split(". ", "MergedWithPrevious", True), "decoder": BYTES}),
    ("sequence_split_digits_metaspace", "sp", {
        "pre_tokenizer": seq("pre_tokenizer", split("-", "Isolated"), {"type": "Digits", "individual_digits": False}, metaspace("always")),
        "decoder": seq("decoder", metaspace("always"), {"type": "ByteFallback"}, {"type": "Fuse"})}),
    ("replace_regex_char_delimiter", "sp", {
        "normalizer": seq("normalizer", {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}, {"type": "Strip", "strip_left": True, "strip_right": True}),
        "pre_tokenizer": {"type": "CharDelimiterSplit", "delimiter": " "}, "decoder": BYTES}),
    ("bl_smollm_digits_byte_level", "bl", {
        "pre_tokenizer": seq("pre_tokenizer", {"type": "Digits", "individual_digits": True},
                             {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}}),
    ("bl_gpt2_prefix_space_nfkc", "bl", {"normalizer": {"type": "NFKC"},
                                         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                                         "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}}),
    ("bl_whitespace_punct_no_regex", "bl", {"normalizer": {"type": "Lowercase"},
        "pre_tokenizer": seq("pre_tokenizer", {"type": "Whitespace"}, {"type": "Punctuation", "behavior": "Isolated"},
                             {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}}),
]


def train_sp():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=260, special_tokens=["<unk>", "<s>", "</s>", "[SEG]"], show_progress=False))
    model = json.loads(tok.to_str())["model"]
    for b in range(256):
        model["vocab"][f"<0x{b:02X}>"] = len(model["vocab"])
    return model


def train_bl():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "[SEG]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    return json.loads(tok.to_str())["model"]


def main():
    model_json = {"sp": train_sp(), "bl": train_bl()}
    cases = []
    for name, model, parts in CASES:
        tok = Tokenizer.from_str(json.dumps({"version": "1.0", "model": model_json[model], **parts}))
        ids = [tok.encode(t).ids for t in TEXTS]
        case = {"name": name, "model": model, "tokenizer": parts, "ids": ids,
                "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids]}
        if "added_tokens" in parts:
            case["decoded_skip"] = [tok.decode(i, skip_special_tokens=True) for i in ids]
        # Which texts come back whole from decode(encode(text)): the test expects the same of m3d.
        case["round_trips"] = [i for i, t in enumerate(TEXTS) if tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=True) == t]
        print(f"{name}: {len(case['round_trips'])} of {len(TEXTS)} texts round-trip")
        cases.append(case)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"tokenizers_version": tokenizers.__version__, "models": model_json, "texts": TEXTS, "cases": cases},
                  f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{OUT}: {os.path.getsize(OUT)} bytes, {len(cases)} cases x {len(TEXTS)} texts")


if __name__ == "__main__":
    main()
