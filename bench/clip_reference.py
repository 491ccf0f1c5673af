#!/usr/bin/env python3
"""The official M3D-CLIP training step in PyTorch, for bench/bench_clip.cpp.

Model as LaMed/src/model/CLIP.py builds it (MONAI 1.3.0 ViT without head, transformers BertModel
bert-base config with its dropout 0.1 left as is, two projections, logit_scale), random weights;
one step = forward of a batch, the nce loss, backward, clip_grad_norm_(1.0), torch.optim.AdamW,
zero_grad -- what HF Trainer does per step. Text is padded to 512 as the official collator does
(padding="max_length"); the report lengths come from real reports tokenized by BertTokenizer.

    ../refenv/bin/python bench/clip_reference.py --reports DIR_WITH_M3D_CAP --out lengths.json [--batch 2] [--repeat 3] [--bf16]

--bf16 runs the forward under torch.autocast("cpu", dtype=torch.bfloat16), as HF Trainer's --bf16 does.
"""
import argparse
import glob
import json
import math
import contextlib
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F
import transformers
from monai.networks.nets import ViT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reports", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bf16", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count())  # Debian's torch starts with one thread here (docs/performance.md)
    tokenizer = transformers.BertTokenizer.from_pretrained(os.path.join(ROOT, "third_party", "models", "all-MiniLM-L6-v2"))
    files = sorted(glob.glob(os.path.join(a.reports, "M3D_Cap_npy", "synth", "*", "text.txt")))[: a.batch]
    lengths = [min(512, len(tokenizer.encode(open(f).read()))) for f in files]
    with open(a.out, "w") as f:
        json.dump({"lengths": lengths}, f)
    torch.manual_seed(0)
    vit = ViT(in_channels=1, img_size=(32, 256, 256), patch_size=(4, 16, 16), hidden_size=768, mlp_dim=3072, num_layers=12,
              num_heads=12, pos_embed="perceptron", classification=True, dropout_rate=0.0, spatial_dims=3)
    del vit.classification_head
    bert = transformers.BertModel(transformers.BertConfig())  # bert-base-uncased's config
    vproj, tproj = torch.nn.Linear(768, 768), torch.nn.Linear(768, 768)
    logit_scale = torch.nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
    modules = torch.nn.ModuleList([vit, bert, vproj, tproj])
    params = list(modules.parameters()) + [logit_scale]
    for m in modules:
        m.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)
    images = torch.rand(a.batch, 1, 32, 256, 256)
    ids = torch.zeros(a.batch, 512, dtype=torch.long)
    mask = torch.zeros(a.batch, 512, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1000, 30000, (n,))
        mask[i, :n] = 1
    labels = torch.arange(a.batch)
    times = []
    for r in range(a.repeat + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext():
            x = vit.patch_embedding(images)
            x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            for block in vit.blocks:
                x = block(x)
            image_features = F.normalize(vproj(vit.norm(x)), dim=-1)[:, 0]
            text_features = F.normalize(tproj(bert(ids, attention_mask=mask)["last_hidden_state"]), dim=-1)[:, 0]
            logits = logit_scale * image_features @ text_features.T
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if r > 0:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "batch": a.batch, "text_tokens": 512, "lengths": lengths,
                      "step_s": times, "median_step_s": median, "pairs_per_s": a.batch / median,
                      "threads": torch.get_num_threads(), "bf16": a.bf16,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576}))


if __name__ == "__main__":
    main()
