#!/usr/bin/env python3
"""What transformers + MONAI themselves do in bf16 on the tiny LaMed fixtures: the bound
for m3d's two bf16 CPU paths (tests/test_lamed_decoder.cpp) is derived from these.

For NAME in lamed_phi3_tiny, lamed_llama_tiny (made by make_lamed_fixtures.py), the
committed weights are loaded into transformers' Phi3ForCausalLM / LlamaForCausalLM and
MONAI's ViT + the spp projector (as make_lamed_fixtures.py builds them) and run twice:

  logits_bf16          every module and activation in bf16 (model.to(torch.bfloat16)), as
                       PyTorch runs a bf16 model on a GPU or a CPU with bf16 units;
  logits_bf16_weights  weights rounded to bf16, activations in f32: m3d's path on CPUs
                       without bf16 arithmetic.

Both (1,L,300) f32, for the prompt and image of expected.safetensors, written to
tests/fixtures/NAME/bf16_reference.safetensors. The script prints each run's largest
logit error relative to the f32 logits' standard deviation. Environment as
make_lamed_fixtures.py; deterministic.

    ../refenv/bin/python tools/reference/make_bf16_fixtures.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_lamed_fixtures import ROOT, SHARED_IMAGE, build_vision, vision_forward  # noqa: E402


def load(name, llm_class, config_class):
    out_dir = os.path.join(ROOT, "tests", "fixtures", name)
    with open(os.path.join(out_dir, "config.json")) as f:
        config = json.load(f)
    llm_config = config_class(**{k: v for k, v in config.items() if not k.startswith("_")})
    llm_config._attn_implementation = "eager"
    weights = load_file(os.path.join(out_dir, "model.safetensors"))
    llm = llm_class(llm_config).eval()
    llm.load_state_dict({k: v for k, v in weights.items() if not k.startswith(("model.vision_tower", "model.mm_projector"))})
    vit, projector = build_vision(torch.Generator().manual_seed(0))
    vit.load_state_dict({k[len("model.vision_tower.vision_tower."):]: v for k, v in weights.items()
                         if k.startswith("model.vision_tower.vision_tower.")})
    projector.load_state_dict({k[len("model.mm_projector.projector."):]: v for k, v in weights.items()
                               if k.startswith("model.mm_projector.projector.")})
    expected = load_file(os.path.join(out_dir, "expected.safetensors"))
    return out_dir, llm, vit, projector, expected


def avg_pool3d_any_dtype(x, **kwargs):
    """torch 1.13 has no bf16 avg_pool3d on CPU: pool in f32 and round the result, which is
    what a bf16 kernel accumulating in f32 returns (m3d pools as a reshape + mean)."""
    return AVG_POOL3D(x.float(), **kwargs).to(x.dtype)


AVG_POOL3D = F.avg_pool3d
F.avg_pool3d = avg_pool3d_any_dtype  # seen by make_lamed_fixtures.vision_forward


def forward(llm, vit, projector, ids, image):
    with torch.no_grad():
        _, image_embeds = vision_forward(vit, projector, image)
        embeds = llm.model.embed_tokens(ids)
        spliced = torch.cat([embeds[:, :1], image_embeds, embeds[:, 257:]], dim=1)
        return llm(inputs_embeds=spliced).logits.float()


def run(name, llm_class, config_class):
    out_dir, llm, vit, projector, expected = load(name, llm_class, config_class)
    image = load_file(SHARED_IMAGE)["images"].float()
    ids, reference = expected["input_ids"], expected["logits"]
    assert torch.allclose(forward(llm, vit, projector, ids, image), reference, atol=1e-5)
    std = reference.std().item()

    modules = (llm, vit, projector)
    with torch.no_grad():  # weights rounded to bf16, kept in f32
        for module in modules:
            for p in module.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    weights_only = forward(llm, vit, projector, ids, image)
    for module in modules:
        module.to(torch.bfloat16)
    full = forward(llm, vit, projector, ids, image.to(torch.bfloat16))

    save_file({"logits_bf16": full.contiguous(), "logits_bf16_weights": weights_only.contiguous()},
              os.path.join(out_dir, "bf16_reference.safetensors"))
    for label, logits in (("bf16", full), ("bf16 weights, f32 activations", weights_only)):
        print(f"{name}: {label}: max abs diff / std = {(logits - reference).abs().max().item() / std:.4f}")


def main() -> int:
    run("lamed_phi3_tiny", Phi3ForCausalLM, Phi3Config)
    run("lamed_llama_tiny", LlamaForCausalLM, LlamaConfig)
    print(f"torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
