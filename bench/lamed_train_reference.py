#!/usr/bin/env python3
"""The official LaMed stage-2 training step in PyTorch, for bench/bench_lamed_train.cpp.

transformers' Phi3ForCausalLM (eager attention, M3D-LaMed-Phi-3-4B's config: width 3072, 32
heads, MLP 8192, vocab 32015) with MONAI 1.3.0's ViT (768 wide, 12 heads, perceptron patches,
32x256x256) and the spp projector attached where LaMed puts them; layer counts reduced on a CPU;
random weights. peft LoRA as M3D's train.py sets it (every LLM Linear, bias none), vision tower,
projector, embeddings and lm_head trainable in full. One step = LaMed's forward (image
embeddings spliced into rows 1..256), HF's causal-LM loss (labels on the last `answer` tokens),
backward, clip_grad_norm_(1.0), torch.optim.AdamW, zero_grad: what HF Trainer does per step.

    ../refenv/bin/python bench/lamed_train_reference.py [--llm-layers 2] [--vit-layers 2] [--batch 1] [--seq 512] [--answer 128] [--repeat 3]
"""
import argparse
import json
import os
import statistics
import time

import peft
import torch
import torch.nn.functional as F
from monai.networks.nets import ViT
from transformers import Phi3Config, Phi3ForCausalLM

IGNORE = ["vision_tower", "mm_projector", "embed_tokens", "lm_head", "seg_projector", "seg_module"]


class Holder(torch.nn.Module):
    def __init__(self, name, module):
        super().__init__()
        self.add_module(name, module)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--vit-layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--answer", type=int, default=128)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32")
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count())  # Debian's torch starts with one thread here (docs/performance.md)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    config = Phi3Config(hidden_size=3072, intermediate_size=8192, num_hidden_layers=a.llm_layers, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32015, max_position_embeddings=4096, rms_norm_eps=1e-5,
                        rope_theta=10000.0, rope_scaling=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=32000,
                        pad_token_id=32000, attention_dropout=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    config._attn_implementation = "eager"
    llm = Phi3ForCausalLM(config)
    vit = ViT(in_channels=1, img_size=(32, 256, 256), patch_size=(4, 16, 16), hidden_size=768, mlp_dim=3072,
              num_layers=a.vit_layers, num_heads=12, pos_embed="perceptron", classification=True, spatial_dims=3)
    del vit.classification_head
    projector = torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 3072))
    llm.model.vision_tower = Holder("vision_tower", vit)
    llm.model.mm_projector = Holder("projector", projector)
    with torch.no_grad():
        for name, t in llm.named_parameters():
            if "norm" in name and name.endswith("weight"):
                t.fill_(1)
            else:
                t.normal_(0, 0.02)
    targets = sorted({n for n, m in llm.named_modules() if isinstance(m, torch.nn.Linear) and not any(k in n for k in IGNORE)})
    model = peft.get_peft_model(llm, peft.LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, target_modules=targets, lora_dropout=0.05,
                                                     bias="none", task_type="CAUSAL_LM"))
    for name, t in model.named_parameters():
        if any(k in name for k in IGNORE):
            t.requires_grad = True
    model.to(a.device, dtype).train()
    trainable = [t for t in model.parameters() if t.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.0)
    images = torch.rand(a.batch, 1, 32, 256, 256).to(a.device, dtype)
    ids = torch.randint(3, 32000, (a.batch, a.seq))
    ids[:, 1:257] = 32011
    ids[:, 0] = 1
    labels = torch.full_like(ids, -100)
    labels[:, -a.answer:] = ids[:, -a.answer:]
    ids, labels = ids.to(a.device), labels.to(a.device)
    mask = torch.ones_like(ids)
    lm = model.base_model.model

    def step():
        x = vit.patch_embedding(images)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in vit.blocks:
            x = block(x)
        features = vit.norm(x)[:, 1:]
        grid = features.transpose(1, 2).reshape(a.batch, 768, 8, 16, 16)
        image_embeds = projector(F.avg_pool3d(grid, kernel_size=2, stride=2).flatten(2).transpose(1, 2))
        embeds = lm.model.embed_tokens(ids)
        spliced = torch.cat([embeds[:, :1], image_embeds, embeds[:, 257:]], dim=1)
        loss = model(inputs_embeds=spliced, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    times = []
    for r in range(a.repeat + 1):  # the first is a warm-up
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = step()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        if r > 0:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({"impl": "transformers+peft", "llm_layers": a.llm_layers, "vit_layers": a.vit_layers, "batch": a.batch, "seq": a.seq,
                      "answer_tokens": a.answer, "lora_r": a.lora_r, "trainable_params": sum(t.numel() for t in trainable),
                      "device": a.device, "dtype": a.dtype, "loss": loss, "step_s": times, "median_step_s": median,
                      "samples_per_s": a.batch / median, "threads": torch.get_num_threads(),
                      "versions": {"torch": torch.__version__, "peft": peft.__version__}}))


if __name__ == "__main__":
    main()
