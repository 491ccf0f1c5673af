#!/usr/bin/env python3
"""llama.cpp reference for bench_lamed on a GGUF text model: the same file run by
llama.cpp (PyPI llama-cpp-python, built from source in the reference venv with its
defaults: f16 KV cache, no flash attention), measuring what bench_lamed measures:
prefill of --prompt random tokens (tokens/s) and greedy decode tokens/s with the KV
cache, one warm-up then --repeat timed repeats, each printed, medians in the JSON line.

    ../refenv/bin/python bench/llamacpp_reference.py FILE.gguf [--prompt P] [--decode N] [--repeat R] [--threads T]
(venv and the llama-cpp-python build: docs/development.md)
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=289)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    start = time.perf_counter()
    llm = Llama(model_path=args.model, n_ctx=args.prompt + args.decode + 8, n_batch=512, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)
    load_s = time.perf_counter() - start
    vocab = llm.n_vocab()
    ids = np.random.default_rng(0).integers(3, min(vocab, 32000), args.prompt).tolist()
    prefill_tps, decode_tps = [], []
    for r in range(args.repeat + 1):  # r == 0: warm-up
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        prefill = args.prompt / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(args.decode):
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        decode = args.decode / (time.perf_counter() - t)
        print(f"{'warm-up' if r == 0 else 'repeat '} prefill {prefill:.2f} tok/s  decode {decode:.3f} tok/s", file=sys.stderr)
        if r:
            prefill_tps.append(prefill)
            decode_tps.append(decode)
    print(json.dumps({"impl": "llama.cpp", "model": args.model, "threads": args.threads, "load_s": round(load_s, 2),
                      "prompt_tokens": args.prompt, "prefill_tok_s": round(statistics.median(prefill_tps), 2),
                      "decode_tok_s": round(statistics.median(decode_tps), 3),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576, 2)}))


if __name__ == "__main__":
    main()
