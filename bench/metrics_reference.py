#!/usr/bin/env python3
"""The Python side of bench/bench_metrics.cpp: sentence BLEU-1 (sacrebleu, 13a, the formula HF
`evaluate` runs), rouge_score's ROUGE-1/2/L/Lsum and METEOR (HF `evaluate` 0.4.1's call of nltk 3.8.1's
meteor_score on word_tokenize output) per pair, on the same pairs; median of R runs. Each run starts
cold like bench_metrics: nltk's Punkt pickle and a WordNetCorpusReader over Debian's WordNet 3.0 are
loaded (tools/reference/make_meteor_fixtures.py), then every pair is scored.

    bash scripts/fetch_vocab.sh     # the Punkt data into third_party/nltk
    ../refenv/bin/python bench/metrics_reference.py [--pairs N] [--repeat R]

--csv FILE writes the pairs as a report predictions CSV instead (to time `m3d score` on them);
--bertscore MODEL_DIR --layers L times bert_score 0.3.13's F1 instead, one sample per call as
eval_caption.py calls it, on --threads torch threads (default: all CPUs; m3d's side: `m3d -t N score
--bertscore-model` on the CSV).
"""
import argparse
import csv
import json
import logging
import os
import statistics
import sys
import time

import nltk
from nltk.translate import meteor_score
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
from make_meteor_fixtures import load_punkt, wordnet_reader  # noqa: E402


def bertscore(args, items):
    import warnings

    import bert_score
    import torch

    torch.set_num_threads(args.threads)
    times, checksum = [], 0.0
    for _ in range(args.repeat):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scorer = bert_score.BERTScorer(model_type=args.bertscore, num_layers=args.layers, batch_size=64, device="cpu")
            for pred, ref in items:  # both strip()ped, as eval_caption.py passes them
                checksum += scorer.score([pred.strip()], [[ref.strip()]])[2][0].item()
        times.append(time.perf_counter() - start)
    print(json.dumps({"impl": "bert_score", "pairs": len(items), "model": os.path.basename(args.bertscore.rstrip("/")), "layers": args.layers,
                      "threads": args.threads, "bert_f1_s": round(statistics.median(times), 3), "checksum_bert_f1": round(checksum / args.repeat, 6)}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--csv")
    parser.add_argument("--bertscore")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for --bertscore")
    args = parser.parse_args()
    if nltk.__version__ != "3.8.1":
        sys.exit(f"nltk {nltk.__version__}: M3D's environment had nltk 3.8.1")
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)
    corpus = json.load(open(os.path.join(ROOT, "tests", "fixtures", "metrics", "text_metrics.json")))["pairs"]
    items = [(corpus[n % len(corpus)]["prediction"], corpus[n % len(corpus)]["references"][0]) for n in range(args.pairs)]
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Question", "Ground Truth", "pred"])
            w.writerows(["Describe the findings of the medical image you see.", ref, pred] for pred, ref in items)
        return
    if args.bertscore:
        bertscore(args, items)
        return
    bleu = BLEU(max_ngram_order=1, smooth_method="none", tokenize="13a", effective_order=False)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    times = {"meteor_load_s": [], "bleu1_rouge_s": [], "meteor_s": [], "total_s": []}
    checksum_bleu_rouge = checksum_meteor = 0.0
    for _ in range(args.repeat):
        start = time.perf_counter()
        nltk.data.clear_cache()
        load_punkt()
        wn = wordnet_reader()
        times["meteor_load_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for pred, ref in items:
            checksum_bleu_rouge += bleu.sentence_score(pred, [ref]).score / 100
            s = scorer.score(ref, pred)
            checksum_bleu_rouge += s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure + s["rougeLsum"].fmeasure
        times["bleu1_rouge_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for pred, ref in items:  # evaluate 0.4.1 metrics/meteor/meteor.py _compute, one reference
            checksum_meteor += meteor_score.meteor_score([nltk.word_tokenize(ref)], nltk.word_tokenize(pred), wordnet=wn,
                                                         alpha=0.9, beta=3, gamma=0.5)
        times["meteor_s"].append(time.perf_counter() - start)
        times["total_s"].append(times["meteor_load_s"][-1] + times["bleu1_rouge_s"][-1] + times["meteor_s"][-1])
    out = {"impl": "sacrebleu+rouge_score+nltk", "pairs": args.pairs}
    out.update({k: round(statistics.median(v), 3) for k, v in times.items()})
    out.update({"checksum_bleu_rouge": round(checksum_bleu_rouge / args.repeat, 6), "checksum_meteor": round(checksum_meteor / args.repeat, 6)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
