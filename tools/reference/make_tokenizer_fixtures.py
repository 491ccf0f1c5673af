#!/usr/bin/env python3
"""Reference token ids for m3d's tokenizers (tests/fixtures/tokenizers/).

References, on real vocabularies fetched by scripts/fetch_vocab.sh:
- fast `tokenizer.json`: Hugging Face `tokenizers` (what transformers' fast tokenizers run on);
  llama2_m3d.json (SentencePiece-BPE, M3D-LaMed's added tokens as train.py adds them:
  `<im_patch>`, `<bx_start>`, `<bx_end>` special, then `[SEG]` normal), llama3.json and
  qwen2_5_med3dvlm.json (byte-level BPE; Qwen2.5 with Med3DVLM's special `<im_patch>`; the same
  texts also go through transformers' slow Qwen2Tokenizer, which Med3DVLM uses, built from the
  vocab and merges of that tokenizer.json, and the script checks both agree);
- slow SentencePiece `tokenizer.model`: transformers' LlamaTokenizer (use_fast=False, as M3D loads
  it), one directory per layout: the base tokenizer files are written, loaded, M3D's tokens are
  added as train.py adds them, the result is saved with save_pretrained (the layout of a released
  checkpoint), loaded again, and that tokenizer gives the reference. The directory keeps what
  save_pretrained wrote except tokenizer.model (the test copies it in from third_party/).
- WordPiece (bert_wordpiece.json), on the uncased BERT vocabulary of all-MiniLM-L6-v2: transformers'
  slow BertTokenizer (vocab.txt + tokenizer_config.json, what M3D-CLIP and bert_score load), the
  same with do_lower_case=False (bert_cased/tokenizer_config.json), and the fast tokenizer.json
  through `tokenizers`.

    bash scripts/fetch_vocab.sh
    ../refenv/bin/python tools/reference/make_tokenizer_fixtures.py

Each expected file: {"corpus": [text], "cases": [{"ids" (with special tokens), "ids_plain"
(add_special_tokens=False), "decoded", "decoded_skip"}], ...}.
"""
import itertools
import json
import os
import random
import sys

import shutil
import tempfile

import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer
from transformers import AutoTokenizer, Qwen2Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCABS = os.path.join(ROOT, "third_party", "tokenizers")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
M3D_SPECIAL = ["<im_patch>", "<bx_start>", "<bx_end>"]


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
        # byte-level and slow-tokenizer corner cases
        "cafe\u0301 (decomposed) vs café", "Don't, I'M, we'RE, it'S, they'll, she'd, you've",
        "12345678901 and 1,234.5678", "line one\r\nline two\n\n\nthree", "trailing spaces   ", "   ",
        "\t\tindented\ttabs", "a literal \u2581 lower-one-eighth block", "<0x41> looks like a byte token",
        "x\u3000ideographic space", "<|user|>\nWhat is shown?<|end|>\n<|assistant|>\nA liver cyst.<|end|>",
        "<|endoftext|>", "text <|end|>   after", "<im_patch> [SEG] <bx_start>", " <s>[SEG]</s> ",
        "Ω≈ç√∫˜µ≤≥÷ “quotes” ‘single’ — dash … ellipsis", "ﬁ ligature, Ⅻ numeral, ① circled",
    ]
    return corpus


def cases_of(encode, encode_plain, decode, corpus):
    out = []
    for text in corpus:
        ids = encode(text)
        out.append({"ids": ids, "ids_plain": encode_plain(text), "decoded": decode(ids, False),
                    "decoded_skip": decode(ids, True)})
    return out


def write(name, payload):
    path = os.path.join(FIXTURES, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False)
        f.write("\n")


def fast_fixture(vocab, name, corpus, special=(), normal=()):
    tok = Tokenizer.from_file(os.path.join(VOCABS, vocab, "tokenizer.json"))
    if special:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    if normal:
        tok.add_tokens([AddedToken(t, special=False) for t in normal])
    cases = cases_of(lambda t: tok.encode(t).ids, lambda t: tok.encode(t, add_special_tokens=False).ids,
                     lambda ids, skip: tok.decode(ids, skip_special_tokens=skip), corpus)
    write(name, {"tokenizers_version": tokenizers.__version__, "vocab": vocab, "special": list(special),
                 "normal": list(normal), "added": {t: tok.token_to_id(t) for t in (*special, *normal)},
                 "corpus": corpus, "cases": cases})
    return cases


def slow_qwen_check(corpus, fast_cases):
    """Med3DVLM's slow Qwen2Tokenizer from the same vocab and merges must agree with the fast reference."""
    data = json.load(open(os.path.join(VOCABS, "qwen2_5", "tokenizer.json"), encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(data["model"]["vocab"], f, ensure_ascii=False)
        with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for merge in data["model"]["merges"]:
                f.write((merge if isinstance(merge, str) else " ".join(merge)) + "\n")
        tok = Qwen2Tokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"))
        for added in data["added_tokens"]:
            tok.add_tokens([transformers.AddedToken(added["content"], special=added["special"], normalized=False)],
                           special_tokens=added["special"])
        tok.add_special_tokens({"additional_special_tokens": ["<im_patch>"]})
        assert tok.convert_tokens_to_ids("<im_patch>") == 151665, tok.convert_tokens_to_ids("<im_patch>")
        slow = cases_of(lambda t: tok(t)["input_ids"], lambda t: tok(t, add_special_tokens=False)["input_ids"],
                        lambda ids, skip: tok.decode(ids, skip_special_tokens=skip), corpus)
    differ = [corpus[i] for i, (a, b) in enumerate(zip(slow, fast_cases)) if a != b]
    print(f"qwen2_5: slow Qwen2Tokenizer and fast tokenizers differ on {len(differ)} of {len(corpus)} texts: {differ[:5]}")
    return not differ


PHI3_ADDED = [("<|endoftext|>", False), ("<|assistant|>", True), ("<|placeholder1|>", True), ("<|placeholder2|>", True),
              ("<|placeholder3|>", True), ("<|placeholder4|>", True), ("<|system|>", True), ("<|end|>", True),
              ("<|placeholder5|>", True), ("<|placeholder6|>", True), ("<|user|>", True)]


def slow_base_config(layout, legacy):
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
              "clean_up_tokenization_spaces": False, "model_max_length": 512, "padding_side": "right",
              "sp_model_kwargs": {}}
    if legacy is not None:
        config["legacy"] = legacy
    if layout == "phi3":  # the Phi-3-mini-4k tokenizer_config.json: 11 added tokens, most of them rstrip
        config["added_tokens_decoder"] = {
            str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": r, "single_word": False, "special": True}
            for i, (c, r) in enumerate([("<unk>", False), ("<s>", False), ("</s>", True)])}
        for k, (content, rstrip) in enumerate(PHI3_ADDED):
            config["added_tokens_decoder"][str(32000 + k)] = {"content": content, "lstrip": False, "normalized": False,
                                                              "rstrip": rstrip, "single_word": False, "special": True}
        config.update({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    return config


def slow_fixture(name, layout, legacy, corpus, old_layout=False):
    """M3D's flow: load the base tokenizer slow, add its tokens, save_pretrained, load the saved directory."""
    model = os.path.join(VOCABS, "mistral_v1", "tokenizer.model")
    out_dir = os.path.join(FIXTURES, name)
    with tempfile.TemporaryDirectory() as tmp:
        base, saved = os.path.join(tmp, "base"), os.path.join(tmp, "saved")
        os.makedirs(base)
        shutil.copy(model, base)
        with open(os.path.join(base, "tokenizer_config.json"), "w") as f:
            json.dump(slow_base_config(layout, legacy), f, indent=2)
        tok = AutoTokenizer.from_pretrained(base, use_fast=False)
        tok.add_special_tokens({"additional_special_tokens": M3D_SPECIAL})
        tok.add_tokens("[SEG]")
        if layout == "llama2":
            tok.pad_token = tok.unk_token  # train.py
        tok.save_pretrained(saved)
        if old_layout:  # as transformers < 4.34 saved it: no added_tokens_decoder, added_tokens.json instead
            path = os.path.join(saved, "tokenizer_config.json")
            config = json.load(open(path))
            config.pop("added_tokens_decoder")
            config.pop("additional_special_tokens", None)
            json.dump(config, open(path, "w"), indent=2)
        tok = AutoTokenizer.from_pretrained(saved, use_fast=False)
        assert type(tok).__name__ == "LlamaTokenizer", type(tok)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        for file in sorted(os.listdir(saved)):
            if file != "tokenizer.model":
                shutil.copy(os.path.join(saved, file), out_dir)
    cases = cases_of(lambda t: tok(t)["input_ids"], lambda t: tok(t, add_special_tokens=False)["input_ids"],
                     lambda ids, skip: tok.decode(ids, skip_special_tokens=skip), corpus)
    write(os.path.join(name, "expected.json"),
          {"transformers_version": transformers.__version__, "legacy": tok.legacy, "layout": layout,
           "old_layout": old_layout, "added": {t: tok.convert_tokens_to_ids(t) for t in (*M3D_SPECIAL, "[SEG]")},
           "corpus": corpus, "cases": cases})
    print(f"{name}: {len(corpus)} texts, legacy={tok.legacy}, [SEG]={tok.convert_tokens_to_ids('[SEG]')}")


def sentencepiece_fixture(corpus):
    """A small BPE model (the first 700 pieces of the Mistral model: control, 256 byte pieces, the
    highest-scored merges), so most text goes through byte fallback, against the sentencepiece library;
    also the fuzzing seed."""
    import sentencepiece
    from transformers.convert_slow_tokenizer import import_protobuf  # the one protobuf module transformers uses too

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(open(os.path.join(VOCABS, "mistral_v1", "tokenizer.model"), "rb").read())
    del proto.pieces[700:]
    proto.trainer_spec.vocab_size = 700
    path = os.path.join(FIXTURES, "tiny_bpe.model")
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    cases = []
    for text in corpus:
        ids = sp.encode(text)
        cases.append({"ids": ids, "decoded": sp.decode_pieces([sp.id_to_piece(i) for i in ids])})
    write("tiny_bpe.json", {"sentencepiece_version": sentencepiece.__version__, "corpus": corpus, "cases": cases})


def tiny_lamed_slow():
    """The slow-tokenizer files of the tiny LaMed fixture (tests/fixtures/lamed_llama_tiny): a SentencePiece
    BPE model with the same vocabulary as its tokenizer.json (a merged piece scores minus its merge rank), the
    same added tokens, legacy=True. Checks that transformers' slow LlamaTokenizer over these files gives the
    prompt ids of that fixture's generate_expected.json, so `m3d generate --tokenizer slow` must reproduce it."""
    tiny = os.path.join(ROOT, "tests", "fixtures", "lamed_llama_tiny")
    data = json.load(open(os.path.join(tiny, "tokenizer.json"), encoding="utf-8"))
    vocab = data["model"]["vocab"]
    merged_rank = {"".join(m.split(" ") if isinstance(m, str) else m): r for r, m in enumerate(data["model"]["merges"])}
    from transformers.convert_slow_tokenizer import import_protobuf
    pb = import_protobuf()
    proto = pb.ModelProto()
    for piece, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        entry = proto.pieces.add()
        entry.piece = piece
        entry.score = -float(merged_rank.get(piece, 0) + 1) if piece in merged_rank else 0.0
        entry.type = (pb.ModelProto.SentencePiece.UNKNOWN if piece == "<unk>" else pb.ModelProto.SentencePiece.CONTROL
                      if piece in ("<s>", "</s>") else pb.ModelProto.SentencePiece.BYTE if piece.startswith("<0x")
                      else pb.ModelProto.SentencePiece.NORMAL)
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(vocab)
    proto.trainer_spec.byte_fallback = True
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    out_dir = os.path.join(FIXTURES, "tiny_lamed_slow")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(proto.SerializeToString())
    added = {str(a["id"]): {"content": a["content"], "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True} for a in data["added_tokens"]}
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
              "additional_special_tokens": ["<im_patch>"], "added_tokens_decoder": added}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    tok = AutoTokenizer.from_pretrained(out_dir, use_fast=False)
    want = json.load(open(os.path.join(tiny, "generate_expected.json")))
    prompt = "<im_patch>" * 256 + want["prompt"]
    assert tok(prompt)["input_ids"] == want["prompt_ids"], (tok(prompt)["input_ids"][250:], want["prompt_ids"][250:])
    # The generated ids are the fixture's; their text differs where the random model emitted byte pieces:
    # SentencePiece decodes valid UTF-8 runs across byte pieces, tokenizers' ByteFallback does not.
    text = tok.decode(want["ids"], skip_special_tokens=True)
    write(os.path.join("tiny_lamed_slow", "expected.json"), {"prompt": want["prompt"], "ids": want["ids"], "text": text,
                                                             "max_new_tokens": want["max_new_tokens"]})
    print(f"tiny_lamed_slow: slow LlamaTokenizer gives the tiny fixture's prompt ids; text {text!r} (fast: {want['text']!r})")


BERT_EXTRA = [
    "[CLS] literal specials [SEP] [PAD] [MASK] [UNK]", "[cls] lower-case [sep]", "x[SEP]y", "İstanbul ΣΊΣΥΦΟΣ ΟΔΟΣ",
    "unaffable hypoechogenicity pneumonoultramicroscopicsilicovolcanoconiosis", "a" * 100, "b" * 101,
    "control\x00chars\x1f\x7f\u200d\ufeff here\ufffd", "e\u0301 Cafe\u0301 Å Å", "ﬃ Ⅷ ² ½ ℃ Å",
    "don't won't can't isn't y'all", "\u2028line\u2029para\x85next", "U.S.A. e.g. i.e. Dr. Smith's",
    "((nested)) [brackets] {braces} <angles> |pipes| ~tilde^ `tick` @at #hash $dollar",
    "한국어 텍스트 and ไทย and العربية and עברית", "𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐 ｆｕｌｌｗｉｄｔｈ",
]


def bert_fixture(corpus):
    directory = os.path.join(ROOT, "third_party", "models", "all-MiniLM-L6-v2")
    slow = transformers.BertTokenizer.from_pretrained(directory)
    cased_config = {"do_lower_case": False, "tokenizer_class": "BertTokenizer", "model_max_length": 512}
    write(os.path.join("bert_cased", "tokenizer_config.json"), cased_config)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(directory, "vocab.txt"), tmp)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump(cased_config, f)
        cased = transformers.BertTokenizer.from_pretrained(tmp)
    fast = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    fast.no_truncation()
    fast.no_padding()

    def slow_cases(tok):
        return cases_of(lambda t: tok.encode(t), lambda t: tok.encode(t, add_special_tokens=False),
                        lambda ids, skip: tok.decode(ids, skip_special_tokens=skip), corpus)

    payload = {"transformers_version": transformers.__version__, "tokenizers_version": tokenizers.__version__,
               "corpus": corpus, "slow": slow_cases(slow), "slow_cased": slow_cases(cased),
               "fast": cases_of(lambda t: fast.encode(t).ids, lambda t: fast.encode(t, add_special_tokens=False).ids,
                                lambda ids, skip: fast.decode(ids, skip_special_tokens=skip), corpus)}
    write("bert_wordpiece.json", payload)
    same = sum(a["ids"] == b["ids"] for a, b in zip(payload["slow"], payload["fast"]))
    print(f"bert_wordpiece: slow and fast ids agree on {same}/{len(corpus)} texts")


def main() -> int:
    for path in ("llama2/tokenizer.json", "qwen2_5/tokenizer.json", "llama3/tokenizer.json", "mistral_v1/tokenizer.model"):
        if not os.path.exists(os.path.join(VOCABS, path)):
            sys.exit(f"{VOCABS}/{path} missing: run scripts/fetch_vocab.sh")
    corpus = radiology_corpus()
    bert_fixture([t for t in corpus if "<im_patch>" * 2 not in t] + BERT_EXTRA)
    sentencepiece_fixture(corpus)
    tiny_lamed_slow()
    fast_fixture("llama2", "llama2_m3d.json", corpus, special=M3D_SPECIAL, normal=["[SEG]"])
    fast_fixture("llama3", "llama3.json", corpus)
    qwen_cases = fast_fixture("qwen2_5", "qwen2_5_med3dvlm.json", corpus, special=["<im_patch>"])
    if not slow_qwen_check(corpus, qwen_cases):
        return 1
    slow_fixture("slow_llama2_legacy", "llama2", True, corpus)
    slow_fixture("slow_llama2", "llama2", False, corpus)
    slow_fixture("slow_llama2_old_layout", "llama2", None, corpus, old_layout=True)
    slow_fixture("slow_phi3", "phi3", False, corpus)
    print(f"{len(corpus)} texts; tokenizers {tokenizers.__version__}, transformers {transformers.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
