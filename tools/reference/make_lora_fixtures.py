#!/usr/bin/env python3
"""LoRA and LaMed instruction-tuning references for tests/test_lamed_train.cpp, with peft 0.11.1.

Model: the tiny M3D-LaMed-Phi-3 of make_lamed_fixtures.py (tests/fixtures/lamed_phi3_tiny), loaded
into transformers' Phi3ForCausalLM with MONAI's ViT and the spp projector attached where the LaMed
checkpoint puts them (model.vision_tower.vision_tower, model.mm_projector.projector), so every
parameter name is the released one. LaMed's forward is lamed_arch.py's: image embeddings replace
rows 1..256 of the token embeddings, then the plain causal-LM loss (labels -100 ignored).

Samples are built exactly as M3D's multi_dataset.py does (tokenizer(question + ' ' + answer,
max_length, truncation, padding="max_length"); EOS written into the first padding slot; labels
masked over the question's token count and at padding), for both of train.py's pad settings
(pad = unk, and pad = eos as Phi-3's tokenizer has).

LoRA as M3D's train.py sets it up (stage 2): target_modules = find_all_linear_names (every Linear
outside vision_tower, mm_projector, embed_tokens, lm_head, seg_*), bias "none", task CAUSAL_LM,
then every parameter named with one of those keywords made trainable. Here r=4, alpha=8 and
dropout 0 (dropout draws random masks no second implementation can reproduce); lora_B is set to
random values so the adapters change the output. Stage 1: only mm_projector and embed_tokens train.

Written: tests/fixtures/lora/
  adapter/adapter_config.json, adapter/adapter_model.safetensors  peft's save_pretrained
  samples.json     the questions/answers and, per pad setting, input_ids, labels, attention_mask
  expected.safetensors
    input_ids, labels, attention_mask (2, L): the training batch (pad = unk)
    logits (2, 50, V): the LoRA model's logits at positions L-50..L-1
    loss: its loss; grad.<name>: the gradient of every stage-2 trainable parameter
    after.<name>: LoRA and projector parameters after clip_grad_norm_(1.0) and one
      torch.optim.AdamW step (lr 1e-3, weight decay 0); loss_after: the loss after it
    stage1.loss, stage1.grad.<name>: the same batch without LoRA, stage-1 trainable set
    merged_logits (2, 50, V): the logits after merge_and_unload();
    merged.<name>: the merged weights of layer 0's qkv_proj and gate_up_proj
  merged_keys.json   the state-dict keys of the merged model (the HF layout)

    ../refenv/bin/python tools/reference/make_lora_fixtures.py

Environment: as make_lamed_fixtures.py, plus `pip install peft==0.11.1 accelerate==0.30.1` then
`pip uninstall torch triton nvidia-* cuda-*` (their dependency resolution pulls a new torch; the
Debian one must stay).
"""
import copy
import json
import os
import sys

import peft
import torch
import torch.nn.functional as F
from monai.networks.nets import ViT
from safetensors.torch import load_file, save_file
from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "lamed_phi3_tiny")
OUT = os.path.join(ROOT, "tests", "fixtures", "lora")
SHARED_IMAGE = os.path.join(ROOT, "..", "shared", "fixtures", "vit3d_spp_tiny", "expected.safetensors")
IGNORE = ["vision_tower", "mm_projector", "embed_tokens", "lm_head", "seg_projector", "seg_module"]
MAX_LENGTH, TAIL = 448, 50
IMAGE_TOKENS = "<im_patch>" * 256

SAMPLES = [  # (question, answer), as the M3D datasets build them
    (IMAGE_TOKENS + "Please generate a medical report based on this image.",
     "Axial chest CT. A small cyst in the liver."),
    (IMAGE_TOKENS + " What is the plane? Choices: A. Axial B. Coronal C. Sagittal D. Oblique", "A. Axial"),
    (IMAGE_TOKENS + " Where is liver in this image? Please output the box.",
     "Coordinates are <bx_start>[0.125, 0.297, 0.336, 0.844, 0.703, 0.664]<bx_end>."),
    (IMAGE_TOKENS + "Describe the findings of the medical image you see.",
     "A very long report that runs past the maximum length so that truncation cuts it. " * 3),
]


class Holder(torch.nn.Module):
    """Gives a module the attribute name LaMed nests it under."""

    def __init__(self, name, module):
        super().__init__()
        self.add_module(name, module)


def load_lamed():
    config = json.load(open(os.path.join(FIXTURE, "config.json")))
    llm_config = Phi3Config.from_dict(config)
    llm_config._attn_implementation = "eager"
    llm = Phi3ForCausalLM(llm_config)
    vit = ViT(in_channels=1, img_size=(32, 256, 256), patch_size=(4, 16, 16), hidden_size=64, mlp_dim=128,
              num_layers=2, num_heads=4, pos_embed="perceptron", classification=True, spatial_dims=3)
    del vit.classification_head
    projector = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 96))
    llm.model.vision_tower = Holder("vision_tower", vit)
    llm.model.mm_projector = Holder("projector", projector)
    llm.load_state_dict(load_file(os.path.join(FIXTURE, "model.safetensors")), strict=True)
    return llm.train()


def inner(model):
    """The Phi3ForCausalLM under a PeftModel (or itself)."""
    return model.base_model.model if isinstance(model, peft.PeftModel) else model


def lamed_forward(model, images, input_ids, attention_mask, labels):
    lm = inner(model)
    vit = lm.model.vision_tower.vision_tower
    x = vit.patch_embedding(images)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    for block in vit.blocks:
        x = block(x)
    features = vit.norm(x)[:, 1:]
    grid = features.transpose(1, 2).reshape(images.shape[0], 64, 8, 16, 16)
    pooled = F.avg_pool3d(grid, kernel_size=2, stride=2).flatten(2).transpose(1, 2)
    image_embeds = lm.model.mm_projector.projector(pooled)
    embeds = lm.model.embed_tokens(input_ids)
    spliced = torch.cat([embeds[:, :1], image_embeds, embeds[:, 257:]], dim=1)
    return model(inputs_embeds=spliced, attention_mask=attention_mask, labels=labels)


def build_sample(tokenizer, question, answer):
    """multi_dataset.py's __getitem__ text part."""
    text = tokenizer(question + " " + answer, max_length=MAX_LENGTH, truncation=True, padding="max_length",
                     return_tensors="pt")
    input_id, attention_mask = text["input_ids"][0], text["attention_mask"][0]
    valid_len = int(attention_mask.sum())
    if valid_len < len(input_id):
        input_id[valid_len] = tokenizer.eos_token_id
    question_tensor = tokenizer(question, max_length=MAX_LENGTH, truncation=True, padding="max_length",
                                return_tensors="pt")
    question_len = int(question_tensor["attention_mask"][0].sum())
    label = input_id.clone()
    label[:question_len] = -100
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        label[label == tokenizer.pad_token_id] = -100
        if valid_len < len(label):
            label[valid_len] = tokenizer.eos_token_id
    else:
        label[label == tokenizer.pad_token_id] = -100
    return input_id, label, attention_mask


def tokenizer_with_pad(pad):
    return PreTrainedTokenizerFast(tokenizer_file=os.path.join(FIXTURE, "tokenizer.json"), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", pad_token=pad, padding_side="right",
                                   model_max_length=MAX_LENGTH)


def find_all_linear_names(model):  # M3D train.py
    return sorted({name for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and not any(k in name for k in IGNORE)})


def plain_name(name):
    """peft's in-memory name -> the checkpoint name m3d uses (no base_model.model., no adapter name)."""
    return name.replace("base_model.model.", "", 1).replace(".default", "")


def main() -> int:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    os.makedirs(OUT, exist_ok=True)

    samples = {"max_length": MAX_LENGTH, "samples": [{"question": q, "answer": a} for q, a in SAMPLES]}
    batches = {}
    for pad in ("<unk>", "</s>"):
        tokenizer = tokenizer_with_pad(pad)
        built = [build_sample(tokenizer, q, a) for q, a in SAMPLES]
        batches[pad] = [torch.stack(part) for part in zip(*built)]
        samples["pad_" + ("unk" if pad == "<unk>" else "eos")] = {
            "input_ids": batches[pad][0].tolist(), "labels": batches[pad][1].tolist(),
            "attention_mask": batches[pad][2].tolist()}
    with open(os.path.join(OUT, "samples.json"), "w") as f:
        json.dump(samples, f)
        f.write("\n")

    image = load_file(SHARED_IMAGE)["images"].float()
    images = torch.cat([image, image.flip(-1)], dim=0)
    input_ids, labels, attention_mask = (t[[1, 2]] for t in batches["<unk>"])  # a VQA and a REC sample
    out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}

    # Stage 1: projector and input embeddings train, nothing else.
    base = load_lamed()
    base.requires_grad_(False)
    for name, p in base.named_parameters():
        p.requires_grad = "mm_projector" in name or "embed_tokens" in name
    result = lamed_forward(base, images, input_ids, attention_mask, labels)
    result.loss.backward()
    out["stage1.loss"] = result.loss.detach().reshape(1)
    for name, p in base.named_parameters():
        if p.requires_grad:
            out["stage1.grad." + name] = p.grad.clone()

    # Stage 2: LoRA on the LLM's Linears, the six keyword groups in full.
    llm = load_lamed()
    targets = find_all_linear_names(llm)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none",
                             task_type="CAUSAL_LM")
    model = peft.get_peft_model(llm, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    for name, p in model.named_parameters():
        if any(k in name for k in IGNORE):
            p.requires_grad = True
    model.save_pretrained(os.path.join(OUT, "adapter"))
    os.remove(os.path.join(OUT, "adapter", "README.md"))  # a model card template

    merged_model = copy.deepcopy(model)
    result = lamed_forward(model, images, input_ids, attention_mask, labels)
    out["logits"] = result.logits[:, -TAIL:].detach().contiguous()
    out["loss"] = result.loss.detach().reshape(1)
    result.loss.backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    for name, p in trainable:
        out["grad." + plain_name(name)] = p.grad.clone()
    torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=1e-3, weight_decay=0.0)
    optimizer.step()
    optimizer.zero_grad()
    for name, p in trainable:
        if "lora_" in name or "mm_projector" in name:
            out["after." + plain_name(name)] = p.detach().clone()
    with torch.no_grad():
        out["loss_after"] = lamed_forward(model, images, input_ids, attention_mask, labels).loss.reshape(1)

    # Merge (from the adapters before the step) into plain weights: the HF layout again.
    merged = merged_model.merge_and_unload()
    with torch.no_grad():
        out["merged_logits"] = lamed_forward(merged, images, input_ids, attention_mask, labels).logits[:, -TAIL:].contiguous()
    state = merged.state_dict()
    for key in ("model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.mlp.gate_up_proj.weight"):
        out["merged." + key] = state[key].clone()
    with open(os.path.join(OUT, "merged_keys.json"), "w") as f:
        json.dump(sorted(state.keys()), f, indent=0)
        f.write("\n")

    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "expected.safetensors"))
    print(f"targets {targets}")
    print(f"stage-1 loss {out['stage1.loss'].item():.6f}, stage-2 loss {out['loss'].item():.6f} -> "
          f"{out['loss_after'].item():.6f}, {len(trainable)} trainable tensors, "
          f"merged logits max diff {(out['merged_logits'] - out['logits']).abs().max().item():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
