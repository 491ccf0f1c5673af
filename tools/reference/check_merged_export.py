#!/usr/bin/env python3
"""Loads an `m3d export --merge-lora` folder with transformers and compares its logits with peft's.

    build/m3d export --merge-lora tests/fixtures/lamed_phi3_tiny --adapter tests/fixtures/lora/adapter -o /tmp/merged
    ../refenv/bin/python tools/reference/check_merged_export.py /tmp/merged

The folder's model.safetensors goes strictly (every key, no extra) into the same
Phi3ForCausalLM + ViT + projector that make_lora_fixtures.py builds, and its logits on the
fixture batch are compared with peft's merge_and_unload logits (tests/fixtures/lora).
Exit status 0 when they agree within 1e-5.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_lora_fixtures as ref  # noqa: E402


def main() -> int:
    folder = sys.argv[1]
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["architectures"] == ["LamedPhi3ForCausalLM"], config["architectures"]
    model = ref.load_lamed()  # the fixture's architecture, then the export's weights, strictly
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    model.eval()
    expected = load_file(os.path.join(ref.OUT, "expected.safetensors"))
    image = load_file(ref.SHARED_IMAGE)["images"].float()
    images = torch.cat([image, image.flip(-1)], dim=0)
    with torch.no_grad():
        logits = ref.lamed_forward(model, images, expected["input_ids"], expected["attention_mask"], expected["labels"]).logits
    diff = (logits[:, -expected["merged_logits"].shape[1]:] - expected["merged_logits"]).abs().max().item()
    print(f"{folder}: loaded strictly into transformers' Phi3ForCausalLM; logits vs peft merge_and_unload: max abs diff {diff:.3g}")
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
