#!/usr/bin/env python3
"""Reference optimisation steps for tests/test_train.cpp, as HF Trainer (transformers 4.41.2) runs them.

The tiny M3D-CLIP of make_clip_fixtures.py (tests/fixtures/clip/tiny_nce and tiny_sigmoid weights)
takes 4 steps on 4 batches of 4 pairs, with what Trainer builds: torch.optim.AdamW (lr 1e-3,
weight decay 0.1, betas 0.9/0.999, eps 1e-8) over Trainer's two parameter groups (no decay for
biases and the parameters of LayerNorm modules: transformers' get_parameter_names with
ALL_LAYERNORM_LAYERS), transformers' get_cosine_schedule_with_warmup (warmup ceil(4 * 0.3) = 2
steps), clip_grad_norm_(1.0) before each step, zero_grad after. The second batch is accumulated
over two halves (loss / 2 each), as gradient_accumulation_steps=2 would.

Written: tests/fixtures/train/steps_{nce,sigmoid}.safetensors: the batches, every step's loss
(of the whole batch) and gradient norm before clipping, the learning rates used, and every
parameter after the last step ("param." + key).

    ../refenv/bin/python tools/reference/make_train_fixtures.py
"""
import math
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
from transformers.trainer_pt_utils import get_parameter_names

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_clip_fixtures as clip  # noqa: E402

OUT = os.path.join(clip.ROOT, "tests", "fixtures", "train")
STEPS, LR, DECAY, MAX_NORM, WARMUP_RATIO = 4, 1e-3, 0.1, 1.0, 0.3


def run(loss_type):
    model = clip.Clip(loss_type)
    state = load_file(os.path.join(clip.OUT, f"tiny_{loss_type}", "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    model.train()
    decay = [n for n in get_parameter_names(model, ALL_LAYERNORM_LAYERS) if "bias" not in n]
    groups = [{"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": DECAY},
              {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8)
    warmup = math.ceil(STEPS * WARMUP_RATIO)  # TrainingArguments.get_warmup_steps (it needs accelerate to construct)
    scheduler = transformers.get_cosine_schedule_with_warmup(optimizer, warmup, STEPS)
    generator = torch.Generator().manual_seed(21)
    out = {}
    losses, norms, lrs = [], [], []
    model.zero_grad()
    for step in range(STEPS):
        images, ids, mask = clip.batch(generator)
        out[f"batch{step}.images"], out[f"batch{step}.input_ids"], out[f"batch{step}.attention_mask"] = images, ids, mask
        if step == 1:  # two micro-batches of 2
            total = 0.0
            for half in (slice(0, 2), slice(2, 4)):
                _, _, loss = model(images[half], ids[half], mask[half])
                (loss / 2).backward()
                total += loss.item() / 2
            losses.append(total)
        else:
            _, _, loss = model(images, ids, mask)
            loss.backward()
            losses.append(loss.item())
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).item())
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        model.zero_grad()
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    out["warmup"] = torch.tensor([warmup])
    for name, p in model.named_parameters():
        out["param." + name] = p.detach().clone().contiguous()
    os.makedirs(OUT, exist_ok=True)
    save_file(out, os.path.join(OUT, f"steps_{loss_type}.safetensors"))
    print(f"{loss_type}: warmup {warmup}, lrs {lrs}, losses {[round(x, 6) for x in losses]}")


def main() -> int:
    torch.set_num_threads(1)
    run("nce")
    run("sigmoid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
