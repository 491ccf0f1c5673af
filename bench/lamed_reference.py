#!/usr/bin/env python3
"""Python reference for bench_lamed: the same checkpoint directory run with
transformers' Phi3ForCausalLM / LlamaForCausalLM and MONAI's ViT (as M3D builds it),
in the checkpoint's dtype, measuring what bench_lamed measures: load, ViT3D encode,
prefill of 1 + 256 image + 32 text tokens, greedy decode tokens/s (HF KV cache),
peak RSS. One warm-up, then --repeat timed repeats, each printed on stderr; one JSON
line of medians (the statistic bench_lamed prints).

    ../refenv/bin/python bench/lamed_reference.py DIR [--decode N] [--repeat R]
(venv: docs/development.md, plus transformers==4.41.2 monai==1.3.0 einops)
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from monai.networks.nets import ViT
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    start = time.perf_counter()
    weights = load_file(os.path.join(args.dir, "model.safetensors"))
    dtype = weights["model.embed_tokens.weight"].dtype
    torch.set_default_dtype(dtype)
    phi3 = cfg["model_type"] in ("lamed_phi3", "phi3")
    keys = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "model_type")}
    llm_config = (Phi3Config if phi3 else LlamaConfig)(**keys)
    llm_config._attn_implementation = "eager"
    llm = (Phi3ForCausalLM if phi3 else LlamaForCausalLM)(llm_config).eval()
    vit = ViT(in_channels=1, img_size=(32, 256, 256), patch_size=(4, 16, 16), hidden_size=cfg.get("vision_hidden_size", 768),
              mlp_dim=cfg.get("vision_mlp_dim", 3072), num_layers=cfg.get("vision_num_layers", 12),
              num_heads=cfg.get("vision_num_heads", 12), pos_embed="perceptron", classification=True, spatial_dims=3)
    del vit.classification_head
    vit.eval()
    hidden, vision = cfg["hidden_size"], cfg.get("mm_hidden_size", 768)
    projector = torch.nn.Sequential(torch.nn.Linear(vision, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden)).eval()
    prefix_vit, prefix_proj = "model.vision_tower.vision_tower.", "model.mm_projector.projector."
    vit.load_state_dict({k[len(prefix_vit):]: v for k, v in weights.items() if k.startswith(prefix_vit)})
    projector.load_state_dict({k[len(prefix_proj):]: v for k, v in weights.items() if k.startswith(prefix_proj)})
    llm.load_state_dict({k: v for k, v in weights.items() if not k.startswith(("model.vision_tower", "model.mm_projector", "model.seg"))})
    del weights
    load_s = time.perf_counter() - start

    torch.manual_seed(0)
    image = torch.rand(1, 1, 32, 256, 256).to(dtype)
    ids = torch.randint(3, 32000, (1, 1 + 256 + 32))
    encode_s, prefill_s, decode_tps = [], [], []
    with torch.no_grad():
        for r in range(args.repeat + 1):  # r == 0: warm-up
            t = time.perf_counter()
            x = vit.patch_embedding(image)
            x = torch.cat([vit.cls_token.expand(1, -1, -1), x], dim=1)
            for block in vit.blocks:
                x = block(x)
            features = vit.norm(x)[:, 1:]
            grid = features.transpose(1, 2).reshape(1, vision, 8, 16, 16).float()  # avg_pool3d has no bf16 CPU kernel
            pooled = F.avg_pool3d(grid, 2, 2).to(dtype).flatten(2).transpose(1, 2)
            image_embeds = projector(pooled)
            encode_s.append(time.perf_counter() - t)
            embeds = llm.model.embed_tokens(ids)
            embeds = torch.cat([embeds[:, :1], image_embeds, embeds[:, 257:]], dim=1)
            t = time.perf_counter()
            out = llm(inputs_embeds=embeds, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            prefill_s.append(time.perf_counter() - t)
            past = out.past_key_values
            t = time.perf_counter()
            for _ in range(args.decode):
                out = llm(input_ids=token, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = out.logits[:, -1].argmax(-1, keepdim=True)
            decode_tps.append(args.decode / (time.perf_counter() - t))
            print(f"{'warm-up' if r == 0 else 'repeat '} encode {encode_s[-1]:.3f} s  prefill {289 / prefill_s[-1]:.2f} tok/s  "
                  f"decode {decode_tps[-1]:.3f} tok/s", file=sys.stderr)
            if r == 0:
                del encode_s[-1], prefill_s[-1], decode_tps[-1]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576
    print(json.dumps({"impl": "python", "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
                      "load_s": round(load_s, 2), "encode_s": round(statistics.median(encode_s), 3),
                      "prefill_s": round(statistics.median(prefill_s), 3),
                      "prefill_tok_s": round(statistics.median(289 / x for x in prefill_s), 2),
                      "decode_tok_s": round(statistics.median(decode_tps), 3), "peak_rss_gb": round(peak_gb, 2)}))


if __name__ == "__main__":
    main()
