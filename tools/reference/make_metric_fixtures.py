#!/usr/bin/env python3
"""Reference values of M3D-Bench's metrics, for tests/test_metrics.cpp: the text metrics on a corpus
of (prediction, references) pairs (tests/fixtures/metrics/text_metrics.json), and the closed-VQA rule,
box parsing, IoU, mask2box, Dice and recall@k with the official formulas (Bench/utils.py, metrics.py,
eval_itr.py) on hand-made and random inputs (task_metrics.json).

References (pip):
- BLEU: sacrebleu's BLEU with the 13a tokenizer (the tokenizer file HF `evaluate`'s "bleu" copies),
  no smoothing, no effective order, max order 1 (what M3D records) and 4: the same formula as the
  tensorflow/nmt compute_bleu that `evaluate` runs, for one reference (with several, sacrebleu's
  brevity penalty uses the closest reference length, compute_bleu the shortest; those pairs carry
  no BLEU value). Sentence level per pair, and corpus level.
- ROUGE: rouge_score 0.1.2 RougeScorer(rouge1, rouge2, rougeL, rougeLsum; no stemmer).score_multi,
  which HF `evaluate`'s "rouge" wraps;
- the `rouge` 1.0.1 package's Rouge().get_scores (Bench/eval/metrics.py), None where it raises.

Predictions CSVs with the official columns (report_predictions.csv, vqa_closed_predictions.csv,
rec_predictions.csv), their metric columns filled as the official scripts fill them; in the report file
`meteor` is HF `evaluate` 0.4.1's METEOR (nltk 3.8.1 with the Punkt and WordNet data of
make_meteor_fixtures.py) and `bert_f1` bert_score 0.3.13's F1 with all-MiniLM-L6-v2 and 4 layers (the
official roberta-large is not available offline), one sample per call as eval_caption.py runs them.

The corpus: radiology-style reference sentences and reports with predictions made from them by
word swaps, deletions, reordering, case changes, other findings; plus empty strings, punctuation,
numbers with units, unicode, multi-line and very long reports, and pairs with two references.

    bash scripts/fetch_vocab.sh        # the Punkt data and all-MiniLM-L6-v2 into third_party/
    ../refenv/bin/python tools/reference/make_metric_fixtures.py
"""
import json
import os
import random
import re
import sys

import rouge as rouge_package
import rouge_score
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "metrics", "text_metrics.json")
MINILM = os.path.join(ROOT, "third_party", "models", "all-MiniLM-L6-v2")

ORGANS = ["liver", "spleen", "left kidney", "right kidney", "pancreas", "gallbladder", "urinary bladder", "right lung",
          "left lower lobe", "aorta", "heart", "thyroid", "prostate", "adrenal gland", "L1-L2 disc"]
FINDINGS = ["a hypodense lesion", "a well-circumscribed cyst", "multiple calcified nodules", "a ground-glass opacity",
            "mild fatty infiltration", "an enhancing mass", "a 4 mm non-obstructing stone", "diffuse wall thickening",
            "no focal abnormality", "a small pleural effusion", "heterogeneous enhancement", "post-surgical changes"]
SIZES = ["3.5 x 2.1 cm", "12 mm", "0.8 cm", "4.2 x 3.9 x 3.1 cm", "25mm", "1,200 mL", "7 mm (approx.)"]
TEMPLATES = ["There is {f} in the {o}, measuring {s}.", "The {o} demonstrates {f}.", "{F} is noted in the {o} (image 45/120).",
             "No evidence of {f} in the {o}.", "Compared with 2021-03-14, {f} in the {o} has increased to {s}.",
             "IMPRESSION: {F} of the {o}; follow-up CT in 6-12 months is recommended.", "Findings: {f}, {s}, in the {o}."]
SWAPS = {"hypodense": "hyperdense", "small": "large", "mild": "moderate", "multiple": "several", "lesion": "lesions",
         "no": "a", "increased": "decreased", "left": "right", "right": "left", "liver": "hepatic parenchyma"}


def sentence(rng):
    f = rng.choice(FINDINGS)
    return rng.choice(TEMPLATES).format(o=rng.choice(ORGANS), f=f, F=f[0].upper() + f[1:], s=rng.choice(SIZES))


def perturb(text, rng):
    words = text.split(" ")
    kind = rng.randrange(7)
    if kind == 0:
        words = [SWAPS.get(w, w) for w in words]
    elif kind == 1 and len(words) > 3:
        del words[rng.randrange(len(words))]
    elif kind == 2:
        rng.shuffle(words)
    elif kind == 3:
        words = [w.upper() if rng.random() < 0.3 else w for w in words]
    elif kind == 4:
        return sentence(rng)
    elif kind == 5:
        words = words + sentence(rng).split(" ")
    return " ".join(words)


def corpus():
    rng = random.Random(11)
    pairs = []
    for _ in range(380):
        ref = " ".join(sentence(rng) for _ in range(rng.randint(1, 4)))
        pairs.append({"prediction": perturb(ref, rng), "references": [ref]})
    for _ in range(40):  # multi-line reports (rougeLsum splits on newlines)
        ref = "\n".join(sentence(rng) for _ in range(rng.randint(2, 5)))
        pred = "\n".join(perturb(s, rng) for s in ref.split("\n"))
        pairs.append({"prediction": pred, "references": [ref]})
    for _ in range(30):  # two references
        ref = sentence(rng)
        pairs.append({"prediction": perturb(ref, rng), "references": [ref, perturb(ref, rng)]})
    for _ in range(10):  # very long reports
        ref = " ".join(sentence(rng) for _ in range(40))
        pairs.append({"prediction": " ".join(perturb(s, rng) for s in ref.split(". ")), "references": [ref]})
    special = [("", "The liver is normal."), ("The liver is normal.", ""), ("", ""), ("   ", "a"), (".", "."),
               ("...", "Normal."), ("Normal", "Normal"), ("normal.", "Normal."), ("3.5 cm", "3.5cm"), ("2,1", "2, 1"),
               ("isn't", "is n't"), ("(approx.)", "approx"), ("L1-L2", "L1 - L2"), ("e.g. the cyst", "eg the cyst"),
               ("<bx_start>[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]<bx_end>", "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]"),
               ("Sure, it is [SEG].", "It is [SEG]."), ("B. liver", "B. liver"), ("A.", "B. spleen"),
               ("Ünïcödé café naïve Zürich", "Unicode cafe naive Zurich"), ("肝脏未见明显异常。", "肝脏未见明显异常。"),
               ("emoji 🫁 lung", "lung 🫁"), ("-1000 HU (air), +40 HU", "-1000 HU air +40 HU"), ("&amp; &lt;b&gt;", "& <b>"),
               ("word-\nbreak", "wordbreak"), ("tabs\tand\nnewlines", "tabs and newlines"), ("100% 50/50 x*y=z", "100 % 50 / 50"),
               ("The the the the the", "the cat sat on the mat"), ("a b c d e f g", "g f e d c b a"),
               ("Kelvin \u212a sign", "kelvin k sign"), ("mm²  µm  ±  ≥ 5 cm", "mm2 um +/- >= 5 cm"),
               ("It is a guide to action which ensures that the military always obeys the commands of the party",
                "It is a guide to action that ensures that the military will forever heed Party commands"),
               ("Enlarged liver with several hypodense lesions in right hepatic lobe.",
                "The liver is enlarged with multiple hypodense lesions in the right lobe.")]
    for pred, ref in special:
        pairs.append({"prediction": pred, "references": [ref]})
    while len(pairs) < 500:
        ref = sentence(rng)
        pairs.append({"prediction": perturb(ref, rng), "references": [ref]})
    return pairs


BOX_NUMBER = r"([-+]?\d*\.\d+|[-+]?\d+)"
BOX_PATTERN = r"\[" + ", ".join([BOX_NUMBER] * 6) + r"\]"  # Bench/utils.py


def official_iou(a, b):  # Bench/utils.py calculate_iou
    inter, union = 1.0, 1.0
    for i in range(3):
        inter *= max(0, min(a[i + 3], b[i + 3]) - max(a[i], b[i]))
        union *= max(a[i + 3], b[i + 3]) - min(a[i], b[i])
    return inter / (union + 1e-6)


def true_iou(a, b):
    inter = va = vb = 1.0
    for i in range(3):
        inter *= max(0.0, min(a[i + 3], b[i + 3]) - max(a[i], b[i]))
        va *= max(0.0, a[i + 3] - a[i])
        vb *= max(0.0, b[i + 3] - b[i])
    u = va + vb - inter
    return inter / u if u > 0 else 0.0


def task_metrics():
    """Closed-VQA rule, box parsing, IoU, mask2box, Dice and recall@k with the official formulas."""
    import numpy as np
    import torch

    rng = random.Random(5)
    vqa = [("B. liver", "B"), ("The answer is B.", "B"), ("b. liver", "B"), ("B liver", "B"), ("N/A.", "A"),
           ("C. spleen. A. no", "A"), ("", "D"), ("D.", "D"), ("Choice: C.", "C")]
    out = {"closed_vqa": [{"prediction": p, "choice": c, "correct": int((c + ".") in p)} for p, c in vqa]}
    texts = ["<bx_start>[0.125, 0.297, 0.336, 0.844, 0.703, 0.664]<bx_end>", "Coordinates are [0.1, 0.2, 0.3, 0.4, 0.5, 0.6].",
             "[1, 0, .5, -0.25, +0.75, 2]", "[0.1,0.2,0.3,0.4,0.5,0.6]", "no box here", "[0.1, 0.2, 0.3, 0.4, 0.5]",
             "first [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] then [0.7, 0.7, 0.7, 0.8, 0.8, 0.8]", "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]",
             "[1e-3, 0.2, 0.3, 0.4, 0.5, 0.6]", "[ 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]"]
    out["boxes"] = []
    for t in texts:
        m = re.search(BOX_PATTERN, t)
        out["boxes"].append({"text": t, "box": [float(x) for x in m.groups()] if m else None})
    out["iou"] = []
    for _ in range(200):
        boxes = []
        for _ in range(2):
            lo = [rng.random() for _ in range(3)]
            boxes.append([round(v, 3) for v in lo] + [round(min(1.0, v + rng.random() * 0.5), 3) for v in lo])
        if rng.random() < 0.1:
            boxes[1] = list(boxes[0])
        out["iou"].append({"a": boxes[0], "b": boxes[1], "official": official_iou(*boxes), "true": true_iou(*boxes)})
    out["mask2box"] = []
    nrng = np.random.default_rng(3)
    for n in range(20):
        shape = (int(nrng.integers(2, 14)), int(nrng.integers(2, 20)), int(nrng.integers(2, 20)))
        mask = np.zeros(shape, np.uint8)
        if n % 7:
            lo = [int(nrng.integers(0, s)) for s in shape]
            hi = [int(nrng.integers(l, s)) for l, s in zip(lo, shape)]
            mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = (nrng.random((hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1)) < 0.6)
        nz = np.nonzero(mask)
        box = None
        if len(nz[0]):
            box = [round(float(nz[i].min()) / shape[i], 3) for i in range(3)] + [round(float(nz[i].max()) / shape[i], 3) for i in range(3)]
        out["mask2box"].append({"shape": list(shape), "mask": mask.reshape(-1).tolist(), "box": box, "text": str(box) if box else None})
    out["dice"] = []
    for n in range(10):
        size = int(nrng.integers(50, 400))
        p = torch.sigmoid(torch.randn(size, generator=torch.Generator().manual_seed(n)) * 3)
        g = torch.from_numpy(nrng.choice([-1.0, 0.0, 1.0], size=size, p=[0.1, 0.5, 0.4]).astype(np.float32))
        gt = torch.where(g < 0, torch.zeros_like(g), g)
        soft = float(2 * torch.sum(p * gt) / (torch.sum(p) + torch.sum(gt) + 1))  # BinaryDice, smooth 1
        hp, hg = p > 0.5, gt > 0
        hard = 1.0 if int(hp.sum() + hg.sum()) == 0 else float(2 * (hp & hg).sum() / (hp.sum() + hg.sum()))
        out["dice"].append({"p": p.tolist(), "g": g.tolist(), "soft": soft, "hard": hard})
    out["recall"] = []
    for n in (5, 17, 50):
        sim = torch.randn(n, n, generator=torch.Generator().manual_seed(n)) + 2.0 * torch.eye(n) * torch.rand(n, generator=torch.Generator().manual_seed(n + 1))
        def calc(s, k):  # eval_itr.py calculate_recall
            topk = torch.topk(s, k, dim=1).indices
            return float(torch.mean(torch.tensor([float(i in topk[i]) for i in range(s.shape[0])])))
        out["recall"].append({"n": n, "similarity": sim.reshape(-1).tolist(),
                              "i2t": {str(k): calc(sim, k) for k in (1, 5, 10) if k <= n},
                              "t2i": {str(k): calc(sim.T, k) for k in (1, 5, 10) if k <= n}})
    return out


def meteor_and_bert_f1():
    """(pred, ref) -> (METEOR, BERTScore F1) for one sample, both texts strip()ped: eval_caption.py's
    meteor.compute(predictions=[pred], references=[[ref]]) (evaluate 0.4.1 on nltk 3.8.1) and
    bertscore.compute(...)["f1"][0], with all-MiniLM-L6-v2 at 4 layers in place of roberta-large."""
    import warnings

    import bert_score
    import nltk
    import torch
    from nltk.translate import meteor_score

    from make_meteor_fixtures import load_punkt, wordnet_reader

    if nltk.__version__ != "3.8.1":
        sys.exit(f"nltk {nltk.__version__}: M3D's environment had nltk 3.8.1 (../refenv/bin/pip install nltk==3.8.1)")
    if not os.path.exists(os.path.join(MINILM, "model.safetensors")):
        sys.exit(f"{MINILM} missing: run scripts/fetch_vocab.sh")
    load_punkt()  # nltk.word_tokenize then reads the English pickle under third_party/nltk
    wn = wordnet_reader()
    torch.set_num_threads(1)  # the same float sums on every machine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer = bert_score.BERTScorer(model_type=MINILM, num_layers=4, batch_size=64, device="cpu")

    def score(pred, ref):
        m = meteor_score.meteor_score([nltk.word_tokenize(ref)], nltk.word_tokenize(pred), wordnet=wn, alpha=0.9, beta=3, gamma=0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "empty candidate/reference": bert_score then gives 0
            f1 = scorer.score([pred], [[ref]])[2][0].item()
        return m, f1

    return score


def prediction_csvs(pairs):
    """Predictions files with the official columns, written with csv.writer as the official eval
    scripts write them, metric columns filled by the reference packages (what m3d score must reproduce)."""
    import csv

    rng = random.Random(9)
    folder = os.path.dirname(OUT)
    bleu1 = BLEU(max_ngram_order=1, smooth_method="none", tokenize="13a", effective_order=False)
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    meteor_bert = meteor_and_bert_f1()
    with open(os.path.join(folder, "report_predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Question", "Ground Truth", "pred", "bleu", "rouge1", "meteor", "bert_f1"])
        for p in pairs[:60] + pairs[-32:]:
            ref, pred = p["references"][0].strip(), p["prediction"].strip()
            w.writerow(["Describe the findings of the medical image you see.", p["references"][0], p["prediction"],
                        bleu1.sentence_score(pred, [ref]).score / 100, scorer.score_multi([ref], pred)["rouge1"].fmeasure,
                        *meteor_bert(pred, ref)])
    with open(os.path.join(folder, "vqa_closed_predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Question Type", "Question", "Answer", "Answer Choice", "Pred", "Correct"])
        for n in range(80):
            choice = "ABCD"[rng.randrange(4)]
            said = choice if rng.random() < 0.6 else "ABCD"[rng.randrange(4)]
            pred = rng.choice([f"{said}. liver", f"The answer is {said}.", f"{said} liver", f"{said.lower()}. liver"])
            w.writerow([1 + n % 5, "Which organ, \"quoted\", is abnormal?", "liver", choice, pred, int((choice + ".") in pred)])
    with open(os.path.join(folder, "rec_predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["idx", "Question Type", "Question", "Answer", "pred", "IOU"])
        for n in range(60):
            lo = [round(rng.random() * 0.5, 3) for _ in range(3)]
            ref = lo + [round(v + 0.1 + rng.random() * 0.4, 3) for v in lo]
            pred = [round(min(1.0, max(0.0, v + rng.uniform(-0.1, 0.1))), 3) for v in ref]
            answer = f"Coordinates are {ref}."
            text = rng.choice([f"Coordinates are {pred}.", f"<bx_start>{pred}<bx_end>", "Sorry, there is no liver.", f"{pred}"])
            m = re.search(BOX_PATTERN, text)
            iou = official_iou([float(x) for x in m.groups()], ref) if m else -1
            w.writerow([n, "cls" if n % 2 else "des", "Can you find the liver in this image?\nGive coordinates.", answer, text, iou])


PORTER_EXTRA = """caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized hopping
tanned falling hissing fizzed failing filing happy sky skies dying lying tying news innings outings cannings howe proceed
exceed succeed relational conditional rational valenci hesitanci digitizer conformabli radicalli differentli vileli
analogousli vietnamization predication operator feudalism decisiveness hopefulness callousness formaliti sensitiviti
sensibiliti triplicate formative formalize electriciti electrical hopeful goodness revival allowance inference airliner
gyroscopic adjustable defensible irritant replacement adjustment dependent adoption homologou communism activate
angulariti homologous effective bowdlerize probate rate cease controll roll generalizations oscillators yyyy syzygy toy
enjoying spied died tied lied cried fully logically analogically hopefully skillfully agreement by be is as y ys
radiology radiological radiologist hypodense hyperdense enhancement enhancing calcifications calcified opacities
effusions pleural lesions lymphadenopathy hepatomegaly splenomegaly atelectasis consolidation nodularity
Café NAÏVE Über ÉCOLE déjà-vu""".split()


def porter_cases(pairs):
    from nltk.stem.porter import PorterStemmer

    stemmer = PorterStemmer()  # NLTK_EXTENSIONS, as meteor_score uses
    words = set(PORTER_EXTRA)
    for p in pairs:
        for text in [p["prediction"], *p["references"]]:
            words.update(re.findall(r"[^\W\d_]+", text))
    return {w: stemmer.stem(w) for w in sorted(words)}


def main() -> int:
    pairs = corpus()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    bleu1 = BLEU(max_ngram_order=1, smooth_method="none", tokenize="13a", effective_order=False)
    bleu4 = BLEU(max_ngram_order=4, smooth_method="none", tokenize="13a", effective_order=False)
    package = rouge_package.Rouge()
    for p in pairs:
        pred, refs = p["prediction"], p["references"]
        # sacrebleu takes the reference length closest to the prediction's, compute_bleu the shortest:
        # equal for one reference, so BLEU is referenced on single-reference pairs only.
        p["bleu1"] = bleu1.sentence_score(pred, refs).score / 100 if len(refs) == 1 else None
        p["bleu4"] = bleu4.sentence_score(pred, refs).score / 100 if len(refs) == 1 else None
        if len(pred) < 120:  # tokenizations of the short texts, for debugging the tokenizers
            p["tokens_13a"] = bleu1.tokenizer(pred).split()
            p["rouge_tokens"] = rouge_score.tokenize.tokenize(pred, None)
        scores = scorer.score_multi(refs, pred)
        p["rouge"] = {k: [v.precision, v.recall, v.fmeasure] for k, v in scores.items()}
        try:
            s = package.get_scores(pred, refs[0])[0]
            p["rouge_package"] = {k: [v["p"], v["r"], v["f"]] for k, v in s.items()}
        except Exception:  # the package raises on empty input; metrics.py turns that into 0.0
            p["rouge_package"] = None
    corpus_preds = [p["prediction"] for p in pairs]
    corpus_refs = [[p["references"][0] for p in pairs]]
    import nltk

    out = {"sacrebleu": sacrebleu.__version__, "rouge_score": "0.1.2", "rouge": "1.0.1", "nltk": nltk.__version__,
           "porter": porter_cases(pairs), "pairs": pairs,
           "corpus_bleu1": bleu1.corpus_score(corpus_preds, corpus_refs).score / 100,
           "corpus_bleu4": bleu4.corpus_score(corpus_preds, corpus_refs).score / 100}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    prediction_csvs(pairs)
    with open(os.path.join(os.path.dirname(OUT), "task_metrics.json"), "w") as f:
        json.dump(task_metrics(), f)
        f.write("\n")
    print(f"{len(pairs)} pairs; corpus BLEU-1 {out['corpus_bleu1']:.6f}, BLEU-4 {out['corpus_bleu4']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
