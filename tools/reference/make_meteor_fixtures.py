#!/usr/bin/env python3
"""Reference values of M3D-Bench's METEOR, for tests/test_meteor.cpp (tests/fixtures/metrics/meteor.json).

M3D calls HF `evaluate` 0.4.1's "meteor" once per sample with predictions=[pred], references=[[ref]]; for
nltk >= 3.6.5 and list references its `_compute` runs

    meteor_score.meteor_score([word_tokenize(ref) for ref in refs], word_tokenize(pred), alpha=0.9, beta=3, gamma=0.5)

i.e. the maximum of single_meteor_score over the references (m3d_bench_spec.md §3.3). This script runs that
call with nltk 3.8.1 (what an April-2024 install got; nltk >= 3.9 breaks evaluate 0.4.1's METEOR) on:
- every pair of make_metric_fixtures.corpus() (all references; the score is the max over them, and each
  reference's own score, match count and chunk count are kept): word_tokenize output of prediction and
  references, their Punkt sentence spans (code-point offsets), the METEOR score;
- Punkt-focused texts (abbreviations, initials, numbers, ellipses, quotes, brackets, case, white space);
- words with their WordNet synonym-name sets as METEOR builds them (`_enum_wordnetsyn_match`: the word plus
  every lemma name without "_" of every synset of wordnet.synsets(word)) and `_morphy` per part of speech;
- METEOR pairs aimed at the matcher (repeats, crossings, stems, synonyms) and the test vectors of spec §3.8.

Data, both from package registries (scripts/setup.sh, scripts/fetch_vocab.sh):
- Punkt: nltk_data's `tokenizers/punkt/PY3/english.pickle` (what nltk 3.8.1's word_tokenize loads), from
  third_party/nltk/; the script checks that its parameters equal the punkt_tab text files m3d reads;
- WordNet 3.0: Debian `wordnet-base` (/usr/share/wordnet), loaded with nltk's WordNetCorpusReader through a
  temporary folder of links plus the `lexnames` file Debian does not ship.

    ../refenv/bin/pip install nltk==3.8.1
    ../refenv/bin/python tools/reference/make_meteor_fixtures.py
"""
import atexit
import json
import os
import re
import shutil
import sys
import tempfile
import warnings

import nltk
from nltk.corpus.reader.wordnet import POS_LIST, WordNetCorpusReader
from nltk.stem.porter import PorterStemmer
from nltk.tokenize.punkt import PunktParameters
from nltk.translate import meteor_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_metric_fixtures import PORTER_EXTRA, corpus  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "metrics", "meteor.json")
NLTK_DATA = os.path.join(ROOT, "third_party", "nltk")
PUNKT_TAB = os.path.join(NLTK_DATA, "tokenizers", "punkt_tab", "english")
WORDNET = "/usr/share/wordnet"

# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)); nltk only needs the names in order.
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body
noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive
noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation
noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication
verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception
verb.possession verb.social verb.stative verb.weather adj.ppl""".split()

PUNKT_TEXTS = [
    "The liver is normal. The spleen is enlarged.",
    "Dr. Smith reviewed the scan. No change.",
    "Seen by Dr. Smith and Prof. Jones on Jan. 5. Follow-up advised.",
    "Findings, e.g. a cyst, are noted. Impression: benign.",
    "Findings (e.g. cysts) are noted. i.e. nothing acute.",
    "Lesion measures approx. 3 cm. Stable.",
    "Lesion measures approx. 3.5 cm. The spleen is normal.",
    "Mass of 3.5 cm. The kidney is normal.",
    "It measures 12 mm. no change since 2021.",
    "Compare vs. prior. Stable vs. increased.",
    "Size 4.2 x 3.9 x 3.1 cm. Margins are smooth.",
    "Wait... The lesion is gone.",
    "Wait... the lesion is gone.",
    "Unclear . . . possibly a cyst. Recheck.",
    "He said \"The liver is fine.\" Then he left.",
    "He said 'fine.' Then he left.",
    "(The liver is normal.) The spleen is normal.",
    "[See image 45.] Next finding.",
    "J. R. R. Tolkien wrote it. A. Smith agreed.",
    "Patient J. Doe, age 54. History of U.S. travel.",
    "The U.S. The U.K. Government.",
    "Mr. and Mrs. Smith arrived at 5 p.m. They left.",
    "It rose 5%. Then it fell.",
    "Is it malignant? Probably not! Follow up.",
    "Really?! Yes.",
    "Very bad acting!!! I promise.",
    "No acute findings.Stable appearance.",
    "First line.\nSecond line.\n\nNew paragraph.",
    "Multiple   spaces.   Between   sentences.",
    "Trailing spaces.   ",
    "   Leading spaces. Here.",
    "Tabs\tinside.\tAnd more.",
    "lowercase start. another sentence. Third one.",
    "The 1st. The 2nd. The 3rd place.",
    "Item no. 5 is here. Item No. 6 too.",
    "Vol. 3, No. 2, pp. 45-67. Published 2020.",
    "See Fig. 2. It shows the mass.",
    "Ref: St. Mary's Hospital. Call Ms. Brown.",
    "The mass -- large. -- Next.",
    "Ends with abbreviation etc.",
    "Ends with an initial A.",
    "One. Two. Three.",
    "A.",
    ".",
    "...",
    "",
    "   ",
    "No period at the end",
    "Sentence one.Sentence two. Sentence three.",
    "“Quoted sentence.” Next one.",
    "He wrote «fine.» Then left.",
    "Ünïcödé café. Naïve Zürich.",
    "肝脏未见明显异常。肝脏正常。",
    "Größe 3 cm. Über dem Niveau.",
    "ΟΔΟΣ ΚΑΛΗ. Η ΟΔΟΣ.",
    "Values: 1,200 mL. Also -1000 HU.",
    "Version 2.0.1. Released today.",
    "IMPRESSION: Mild fatty infiltration of the liver; follow-up CT in 6-12 months is recommended.",
    "Compared with 2021-03-14, the lesion has increased. No new lesion.",
    "e.g. the cyst",
    "B. liver",
    "A. B. C. D.",
    "Choices: A. yes B. no C. maybe.",
    "cannot gonna wanna gimme lemme 'tis 'twas more'n d'ye gotta",
    "I can't, won't, shouldn't. They're here; we'll see. It's John's.",
    "``Quotes'' and \"double quotes\" and 'single'.",
    "Hello (world) [test] {braces} <angle>.",
    "a--b c - d",
    "$3.88 (roughly 3,36 euros) in New York.",
    "x*y=z 100% 50/50 #1 @home &co",
    "Nodule:3 mm, cyst:12mm, ratio 3:1, list: a, b.",
    "Sure, it is [SEG].",
    "<bx_start>[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]<bx_end>",
    "Kelvin \u212a sign. Next.",
    "emoji 🫁 lung. Another.",
    "word-\nbreak. Next line.",
    "Sent1.) Sent2.",
    "Line with CR.\r\nNext line.",
    "End with quote.\" Next.",
    "What?\" he asked. Then nothing.",
]

# METEOR pairs (prediction, reference) aimed at the matcher: repeated words, crossings, stems, synonyms.
METEOR_PAIRS = [
    ("the the the", "the cat the"),
    ("cat the", "the cat"),
    ("a b c d", "d c b a"),
    ("big large", "large big"),
    ("The liver shows enlargement", "The enlarged liver"),
    ("kidneys enlarged", "kidney enlarges"),
    ("small nodule", "little node"),
    ("He ran quickly home", "He runs fast to his house"),
    ("geese mice children", "goose mouse child"),
    ("better worse", "good bad"),
    ("It is a guide to action that ensures that the military will forever heed Party commands",
     "It is a guide to action which ensures that the military always obeys the commands of the party"),
    ("multiple several many", "several many multiple"),
    ("There is no evidence of malignancy.", "No malignancy is evident."),
    ("A", "a"),
    ("ΟΔΟΣ", "οδος"),  # str.lower: final sigma
    ("ΟΔΟΣ", "οδοσ"),
    ("İzmir", "i\u0307zmir"),  # str.lower: U+0130 becomes two code points
    ("Kelvin \u212a", "kelvin k"),
    (".", ","),
    ("", ""),
    ("word", ""),
    ("", "word"),
]

SPEC_VECTORS = [
    ("Enlarged liver with several hypodense lesions in right hepatic lobe.",
     "The liver is enlarged with multiple hypodense lesions in the right lobe."),
    ("It is a guide to action which ensures that the military always obeys the commands of the party",
     "It is a guide to action that ensures that the military will forever heed Party commands"),
]

# Irregular forms and words that test morphy's exception lists and detachment rules.
WORD_EXTRA = """geese mice children feet teeth women men oxen went ran better best worse worst was were been is are
am being lying dying ate eaten saw seen taken took gone did done has had having aardwolves abaci churches dogs axes
buses boxes quizzes wolves leaves knives lives hardrock fuller fullest biggest bigger happier happiest hotter ran
running stopped stopping hoped hoping ties tied flies flied studies studied goes goodness mostly fast faster
quickly well badly data criteria phenomena analyses diagnoses metastases nuclei foci bronchi vertebrae sequelae
lymph nodes node lesion lesions mass masses enlarged enlargement heed obey obeys always forever command commands
party parties military ensure ensures guide action hepatic hepat sever sever severe multipl multiple several
little small large big great good bad cat mat sat the a an of in on at by for with without 3.5 12 mm cm ct . , ;
( ) 's n't ca wo u.s. u.s dr. dr e.g. i.e. approx. vs. etc. st. mr. no. l1-l2 ground-glass well-circumscribed
non-obstructing post-surgical x-ray co-op t-shirt hyper- -ing ing es s ss ses xes zes ches shes men ies ed er est
ful ness Party Liver LIVER cAt ÉCOLE café naïve zürich 肝脏 🫁 kelvin \u212a ṡ ſ İstanbul""".split()


def wordnet_reader():
    """nltk's WordNetCorpusReader over Debian's WordNet 3.0 files plus a lexnames file."""
    if not os.path.isfile(os.path.join(WORDNET, "data.noun")):
        sys.exit(f"{WORDNET}/data.noun missing: apt-get install wordnet-base (scripts/setup.sh)")
    folder = tempfile.mkdtemp(prefix="wordnet_")  # the reader opens data files when it needs them
    atexit.register(shutil.rmtree, folder, True)
    for name in os.listdir(WORDNET):
        os.symlink(os.path.join(WORDNET, name), os.path.join(folder, name))
    category = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    with open(os.path.join(folder, "lexnames"), "w") as f:
        for i, name in enumerate(LEXNAMES):  # number, name, syntactic category
            f.write(f"{i:02d}\t{name}\t{category[name.split('.')[0]]}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The multilingual functions are not available": no OMW, English only
        reader = WordNetCorpusReader(folder, None)
    assert reader.get_version() == "3.0", reader.get_version()
    return reader


def punkt_tab_params():
    """PunktParameters from the punkt_tab text files, read as nltk 3.9's load_punkt_params reads them."""
    def lines(name):
        with open(os.path.join(PUNKT_TAB, name), encoding="utf-8") as f:
            return [line[:-1] if line.endswith("\n") else line for line in f]

    params = PunktParameters()
    params.abbrev_types = set(lines("abbrev_types.txt"))
    params.collocations = {tuple(line.split("\t")) for line in lines("collocations.tab")}
    params.sent_starters = set(lines("sent_starters.txt"))
    for line in lines("ortho_context.tab"):
        typ, flags = line.split("\t")
        params.ortho_context[typ] = int(flags)
    return params


def load_punkt():
    """The tokenizer nltk 3.8.1's sent_tokenize uses: nltk.data.load of the English pickle."""
    if not os.path.isfile(os.path.join(NLTK_DATA, "tokenizers", "punkt", "PY3", "english.pickle")):
        sys.exit(f"{NLTK_DATA}: Punkt data missing: run scripts/fetch_vocab.sh")
    nltk.data.path[:] = [NLTK_DATA]
    tokenizer = nltk.data.load("tokenizers/punkt/english.pickle")
    p, tab = tokenizer._params, punkt_tab_params()
    assert p.abbrev_types == tab.abbrev_types and p.collocations == tab.collocations, "punkt_tab differs from the pickle"
    assert p.sent_starters == tab.sent_starters and dict(p.ortho_context) == dict(tab.ortho_context), "punkt_tab differs"
    return tokenizer


def synonym_names(wn, word):
    """The set _enum_wordnetsyn_match builds for one (stemmed) hypothesis word."""
    names = {lemma.name() for synset in wn.synsets(word) for lemma in synset.lemmas() if lemma.name().find("_") < 0}
    return sorted(names | {word})


def alignment(reference, hypothesis, wn):
    """(score, matches, chunks) of single_meteor_score on token lists."""
    hyp, ref = meteor_score._generate_enums(hypothesis, reference)
    matches, _, _ = meteor_score._enum_align_words(hyp, ref, wordnet=wn)
    score = meteor_score.single_meteor_score(reference, hypothesis, wordnet=wn, alpha=0.9, beta=3, gamma=0.5)
    return [score, len(matches), meteor_score._count_chunks(matches) if matches else 0]


def main() -> int:
    if nltk.__version__ != "3.8.1":
        sys.exit(f"nltk {nltk.__version__}: M3D's environment had nltk 3.8.1 (../refenv/bin/pip install nltk==3.8.1)")
    punkt = load_punkt()
    wn = wordnet_reader()
    tok = nltk.word_tokenize

    def evaluate_meteor(pred, refs):  # evaluate 0.4.1 metrics/meteor/meteor.py _compute, list references
        return meteor_score.meteor_score([tok(r) for r in refs], tok(pred), wordnet=wn, alpha=0.9, beta=3, gamma=0.5)

    def text_record(text):
        return {"text": text, "tokens": tok(text), "spans": [list(s) for s in punkt.span_tokenize(text)]}

    pairs = []
    texts = corpus()
    for p in texts:
        pred, refs = p["prediction"], p["references"]
        pairs.append({"prediction": text_record(pred), "references": [text_record(r) for r in refs],
                      "per_reference": [alignment(tok(r), tok(pred), wn) for r in refs],
                      "meteor": evaluate_meteor(pred, refs)})
    extra = [{"prediction": text_record(h), "references": [text_record(r)], "per_reference": [alignment(tok(r), tok(h), wn)],
              "meteor": evaluate_meteor(h, [r])} for h, r in METEOR_PAIRS]
    punkt_texts = [{"text": t, "sentences": punkt.tokenize(t), "spans": [list(s) for s in punkt.span_tokenize(t)],
                    "tokens": tok(t)} for t in PUNKT_TEXTS]

    words = set(WORD_EXTRA) | set(PORTER_EXTRA)
    stemmer = PorterStemmer()
    for p in texts[:120]:
        for w in re.findall(r"[^\W\d_]+(?:-[^\W\d_]+)*", p["prediction"] + " " + " ".join(p["references"])):
            words.update({w.lower(), stemmer.stem(w.lower())})
    synonyms = {w: {"names": synonym_names(wn, w),
                    "morphy": {pos: wn._morphy(w.lower(), pos) for pos in POS_LIST}} for w in sorted(words)}

    spec = [{"prediction": h, "reference": r, "meteor": evaluate_meteor(h, [r])} for h, r in SPEC_VECTORS]
    out = {"nltk": nltk.__version__, "wordnet": "Debian wordnet-base, WordNet " + wn.get_version(),
           "punkt": "nltk_data tokenizers/punkt/PY3/english.pickle", "alpha": 0.9, "beta": 3, "gamma": 0.5,
           "pairs": pairs, "extra_pairs": extra, "punkt_texts": punkt_texts, "synonyms": synonyms, "spec_vectors": spec}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{len(pairs)} pairs, {len(extra)} extra, {len(punkt_texts)} Punkt texts, {len(synonyms)} words; "
          f"spec vectors {spec[0]['meteor']:.6f} {spec[1]['meteor']:.4f}; {os.path.getsize(OUT)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
