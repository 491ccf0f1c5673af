#!/usr/bin/env python3
"""Reference outputs of BERT-family encoders and BERTScore, for tests/test_bert.cpp.

- tests/fixtures/bert/tiny_bert/: a random BertModel (transformers 4.41.2; hidden 32, 2 layers,
  4 heads, GELU, pooler) saved with save_pretrained; expected.safetensors holds a padded batch
  (input_ids, attention_mask, token_type_ids) and every hidden state, last_hidden_state and
  pooler_output in eval mode.
- tests/fixtures/bert/tiny_roberta/: a random RobertaForMaskedLM (gelu_new, pad id 1, positions
  counted from padding_idx + 1) saved with save_pretrained, so its keys carry `roberta.` and
  `lm_head.*` as a real RoBERTa checkpoint does; expected outputs of its encoder.
  Every parameter, LayerNorms included, is drawn from N(0, 0.5) so nothing is left at an identity.
- tests/fixtures/bert/minilm_expected.safetensors: the real all-MiniLM-L6-v2 BERT (scripts/
  fetch_vocab.sh) on texts tokenized by its slow BertTokenizer, padded: hidden states 0, 3 and 6, pooler.
- tests/fixtures/metrics/bertscore.json: bert_score 0.3.13 `score()` (what HF evaluate "bertscore"
  calls) with model_type = the MiniLM directory, on the 500 (prediction, references) pairs of
  tests/fixtures/metrics/text_metrics.json: P/R/F per pair for num_layers 4 (truncated encoder)
  without idf, with idf (weights from the references), and rescaled with a baseline file
  (tests/fixtures/metrics/bertscore_baseline.tsv, written here in bert_score's LAYER,P,R,F format).
- tests/fixtures/bert/roberta_bertscore/ + tests/fixtures/metrics/bertscore_roberta.json: BERTScore through a
  RoBERTa tokenizer and encoder (see roberta_bertscore_fixture).

    bash scripts/fetch_vocab.sh
    ../refenv/bin/python tools/reference/make_bert_fixtures.py
"""
import json
import os
import sys
import tempfile
import warnings

import torch
import transformers
from safetensors.torch import save_file

import bert_score

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
MINILM = os.path.join(ROOT, "third_party", "models", "all-MiniLM-L6-v2")


def randomize(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    model.eval()
    return model


def batch(seed, vocab, lengths, pad_id, types):
    generator = torch.Generator().manual_seed(seed)
    L = max(lengths)
    ids = torch.full((len(lengths), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), L), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(pad_id + 1, vocab, (n,), generator=generator)
        mask[row, :n] = 1
    token_types = torch.randint(0, types, (len(lengths), L), generator=generator) * mask
    return ids, mask, token_types


def encoder_fixture(name, model, encoder, pad_id, types):
    directory = os.path.join(FIXTURES, "bert", name)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    ids, mask, token_types = batch(7, model.config.vocab_size, [12, 9, 5], pad_id, types)
    with torch.no_grad():
        out = encoder(input_ids=ids, attention_mask=mask, token_type_ids=token_types, output_hidden_states=True)
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types,
               "last_hidden_state": out.last_hidden_state.clone()}
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden_state_{i}"] = h.clone()
    if getattr(out, "pooler_output", None) is not None:
        tensors["pooler_output"] = out.pooler_output.contiguous()
    save_file(tensors, os.path.join(directory, "expected.safetensors"))
    print(f"{name}: {len(out.hidden_states)} hidden states, keys {sorted(model.state_dict())[:2]}...")


def tiny_encoders():
    bert_config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=37, max_position_embeddings=40, type_vocab_size=2,
                                          hidden_act="gelu", layer_norm_eps=1e-12, attn_implementation="eager")
    bert = randomize(transformers.BertModel(bert_config), 1)
    encoder_fixture("tiny_bert", bert, bert, 0, 2)
    roberta_config = transformers.RobertaConfig(vocab_size=91, hidden_size=24, num_hidden_layers=3, num_attention_heads=2,
                                                intermediate_size=29, max_position_embeddings=42, type_vocab_size=1,
                                                hidden_act="gelu_new", layer_norm_eps=1e-5, pad_token_id=1)
    roberta = randomize(transformers.RobertaForMaskedLM(roberta_config), 2)
    encoder_fixture("tiny_roberta", roberta, roberta.roberta, 1, 1)


MINILM_TEXTS = ["The liver is enlarged with multiple hypodense lesions in the right lobe.",
                "No acute abnormality.", "", "Ünïcödé àccents, [SEP] inside and 3.5 x 2.1 cm!"]


def minilm_fixture():
    tokenizer = transformers.BertTokenizer.from_pretrained(MINILM)
    model = transformers.BertModel.from_pretrained(MINILM, attn_implementation="eager").eval()
    encoded = tokenizer(MINILM_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**encoded, output_hidden_states=True)
    tensors = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
               "pooler_output": out.pooler_output.contiguous()}
    for i in (0, 3, 6):  # embeddings, a middle layer, the last
        tensors[f"hidden_state_{i}"] = out.hidden_states[i].clone()
    save_file(tensors, os.path.join(FIXTURES, "bert", "minilm_expected.safetensors"))
    with open(os.path.join(FIXTURES, "bert", "minilm_texts.json"), "w", encoding="utf-8") as f:
        json.dump(MINILM_TEXTS, f, ensure_ascii=False)
        f.write("\n")


BASELINE = "LAYER,P,R,F\n" + "".join(f"{i},{0.70 + 0.01 * i:.8f},{0.71 + 0.012 * i:.8f},{0.705 + 0.011 * i:.8f}\n" for i in range(7))


def bertscore_fixture():
    pairs = json.load(open(os.path.join(FIXTURES, "metrics", "text_metrics.json"), encoding="utf-8"))["pairs"]
    baseline_path = os.path.join(FIXTURES, "metrics", "bertscore_baseline.tsv")
    with open(baseline_path, "w") as f:
        f.write(BASELINE)
    cands = [p["prediction"] for p in pairs]
    refs = [p["references"] for p in pairs]
    runs = {"layer4": dict(num_layers=4), "layer4_idf": dict(num_layers=4, idf=True),
            "layer6_rescaled": dict(num_layers=6, rescale_with_baseline=True, baseline_path=baseline_path, lang="en")}
    out = {"bert_score_version": bert_score.__version__, "transformers_version": transformers.__version__,
           "model": "all-MiniLM-L6-v2", "runs": {}}
    for name, kwargs in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            P, R, F = bert_score.score(cands, refs, model_type=MINILM, batch_size=64, device="cpu", **kwargs)
        out["runs"][name] = {"options": {k: v for k, v in kwargs.items() if k != "baseline_path"},
                             "P": P.tolist(), "R": R.tolist(), "F": F.tolist()}
        print(f"bertscore {name}: mean F {F.mean().item():.6f}")
    with open(os.path.join(FIXTURES, "metrics", "bertscore.json"), "w", encoding="utf-8") as f:
        json.dump(out, f)
        f.write("\n")


ROBERTA_DIR = os.path.join(FIXTURES, "bert", "roberta_bertscore")


def roberta_bertscore_fixture():
    """BERTScore through RoBERTa's tokenizer (bert_score's add_prefix_space path), as with roberta-large.

    A byte-level BPE of 600 tokens trained (deterministically) on the corpus with `tokenizers`, wrapped as
    transformers' slow RobertaTokenizer (what bert_score loads: use_fast=False) and saved with its fast
    tokenizer.json (RobertaProcessing); a tiny random RobertaModel (514 positions). Written: the slow ids of
    every corpus text as bert_score's sent_encode makes them, and bert_score P/R/F at 2 layers."""
    from tokenizers import ByteLevelBPETokenizer

    pairs = json.load(open(os.path.join(FIXTURES, "metrics", "text_metrics.json"), encoding="utf-8"))["pairs"]
    cands = [p["prediction"] for p in pairs]
    refs = [p["references"] for p in pairs]
    texts = cands + [r for group in refs for r in group]
    os.makedirs(ROBERTA_DIR, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        slow = transformers.RobertaTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), model_max_length=512)
        slow.save_pretrained(ROBERTA_DIR)
    fast = transformers.RobertaTokenizerFast.from_pretrained(ROBERTA_DIR)
    fast.backend_tokenizer.save(os.path.join(ROBERTA_DIR, "tokenizer.json"))
    config = transformers.RobertaConfig(vocab_size=len(slow), hidden_size=24, num_hidden_layers=3, num_attention_heads=2,
                                        intermediate_size=29, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
    model = randomize(transformers.RobertaModel(config, add_pooling_layer=False), 3)
    model.save_pretrained(ROBERTA_DIR, safe_serialization=True)
    slow = transformers.AutoTokenizer.from_pretrained(ROBERTA_DIR, use_fast=False)  # as bert_score loads it
    assert isinstance(slow, transformers.RobertaTokenizer)
    ids = [bert_score.utils.sent_encode(slow, t) for t in texts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P, R, F = bert_score.score(cands, refs, model_type=ROBERTA_DIR, num_layers=2, batch_size=64, device="cpu")
    out = {"bert_score_version": bert_score.__version__, "texts": texts, "ids": ids, "P": P.tolist(), "R": R.tolist(), "F": F.tolist()}
    with open(os.path.join(FIXTURES, "metrics", "bertscore_roberta.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    print(f"bertscore roberta: vocab {len(slow)}, mean F {F.mean().item():.6f}")


def main() -> int:
    if not os.path.exists(os.path.join(MINILM, "model.safetensors")):
        sys.exit(f"{MINILM} missing: run scripts/fetch_vocab.sh")
    torch.set_num_threads(1)
    tiny_encoders()
    minilm_fixture()
    bertscore_fixture()
    roberta_bertscore_fixture()
    return 0


if __name__ == "__main__":
    sys.exit(main())
