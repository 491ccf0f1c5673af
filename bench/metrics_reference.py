#!/usr/bin/env python3
"""The Python side of bench/bench_metrics.cpp: sentence BLEU-1 (sacrebleu, 13a, the formula HF
`evaluate` runs) and rouge_score's ROUGE-1/2/L/Lsum per pair, on the same pairs; median of R runs.

    ../refenv/bin/python bench/metrics_reference.py [--pairs N] [--repeat R]
"""
import argparse
import json
import logging
import os
import statistics
import time

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)
    corpus = json.load(open(os.path.join(ROOT, "tests", "fixtures", "metrics", "text_metrics.json")))["pairs"]
    items = [(corpus[n % len(corpus)]["prediction"], corpus[n % len(corpus)]["references"][0]) for n in range(args.pairs)]
    bleu = BLEU(max_ngram_order=1, smooth_method="none", tokenize="13a", effective_order=False)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    times, checksum = [], 0.0
    for _ in range(args.repeat):
        start = time.perf_counter()
        for pred, ref in items:
            checksum += bleu.sentence_score(pred, [ref]).score / 100
            s = scorer.score(ref, pred)
            checksum += s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure + s["rougeLsum"].fmeasure
        times.append(time.perf_counter() - start)
    print(json.dumps({"impl": "sacrebleu+rouge_score", "pairs": args.pairs, "bleu1_rouge_s": round(statistics.median(times), 3),
                      "checksum": round(checksum / args.repeat, 6)}))


if __name__ == "__main__":
    main()
