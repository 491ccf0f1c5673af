#!/usr/bin/env python3
"""Tiny random M3D-LaMed checkpoints in the released layout, with reference outputs.

The LLMs are transformers' own Phi3ForCausalLM / LlamaForCausalLM (eager attention,
fp32); the vision tower is MONAI 1.3.0's ViT built as M3D's ViT3DTower builds it
(pos_embed "perceptron", cls token, no classification head); the projector follows
M3D's SpatialPoolingProjector ("spp", spatial pooling 2, mlp with 2 layers); image
features replace embedding rows 1..256 as lamed_arch.py's
prepare_inputs_for_multimodal does (position 0 kept).

Input image: the real MRI of the official fixture
../shared/fixtures/vit3d_spp_tiny/expected.safetensors ("images"), read here and by the
C++ tests from ../shared (not copied into the repository).

Environment: a venv with --system-site-packages over Debian's python3-torch (1.13),
plus `pip install safetensors==0.8.0 transformers==4.41.2 monai==1.3.0 einops==0.8.2`
(tokenizers 0.19.1 comes with transformers; numpy 1.24.2 from Debian). Output is
deterministic: a rerun reproduces every file byte for byte.

    ../refenv/bin/python tools/reference/make_lamed_fixtures.py

Also tests/fixtures/qwen2_tiny: a plain Qwen2ForCausalLM (q/k/v bias, tied embeddings,
GQA) with `input_ids`, `logits` and `greedy_ids` of a text prompt.

Outputs, for NAME in lamed_phi3_tiny, lamed_llama_tiny (tests/fixtures/NAME/):
  config.json         released-style LaMed config (+ test-only vision dims keys)
  model.safetensors   every weight random, keys as in the released checkpoints
  expected.safetensors
    input_ids (1,L) i64, image_features (1,2048,64), projector_output (1,256,96),
    inputs_embeds (1,L,96), logits (1,L,300), greedy_ids (1,20) i64 (argmax, full
    recompute each step, no cache), logits_last_step (1,300).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
import transformers
from monai.networks.nets import ViT
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_IMAGE = os.path.join(ROOT, "..", "shared", "fixtures", "vit3d_spp_tiny", "expected.safetensors")
VOCAB, HIDDEN, VISION, IM_PATCH = 300, 96, 64, 299


def randomize(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.05) -> None:
    """Every parameter random: norms near 1, everything else normal(0, scale)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(scale * noise)


def build_vision(gen):
    vit = ViT(in_channels=1, img_size=(32, 256, 256), patch_size=(4, 16, 16), hidden_size=VISION, mlp_dim=128,
              num_layers=2, num_heads=4, pos_embed="perceptron", classification=True, spatial_dims=3)
    del vit.classification_head  # commented out in M3D's copy of the ViT
    randomize(vit, gen)
    projector = torch.nn.Sequential(torch.nn.Linear(VISION, HIDDEN), torch.nn.GELU(), torch.nn.Linear(HIDDEN, HIDDEN))
    randomize(projector, gen)
    return vit.eval(), projector.eval()


def vision_forward(vit, projector, image):
    x = vit.patch_embedding(image)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    for block in vit.blocks:
        x = block(x)
    features = vit.norm(x)[:, 1:]  # select_feature "patch"
    grid = features.transpose(1, 2).reshape(1, VISION, 8, 16, 16)  # "b (p1 p2 p3) d -> b d p1 p2 p3"
    pooled = F.avg_pool3d(grid, kernel_size=2, stride=2).flatten(2).transpose(1, 2)
    return features, projector(pooled)


def lamed_config(llm_config, architecture, model_type):
    config = llm_config.to_dict()
    config.update({
        "architectures": [architecture], "model_type": model_type,
        "image_channel": 1, "image_size": [32, 256, 256], "patch_size": [4, 16, 16], "vision_tower": "vit3d",
        "vision_select_layer": -1, "vision_select_feature": "patch", "mm_projector_type": "spp",
        "proj_layer_type": "mlp", "proj_layer_num": 2, "proj_pooling_type": "spatial", "proj_pooling_size": 2,
        "mm_hidden_size": VISION, "proj_out_num": 256,
        "_vision_tower_dims_note": "the official ViT3DTower always builds hidden 768 / mlp 3072 / 12 layers / 12 heads "
                                   "and ignores config; these test-only keys give the tiny tower's dims",
        "vision_hidden_size": VISION, "vision_mlp_dim": 128, "vision_num_layers": 2, "vision_num_heads": 4,
    })
    for key in ("_name_or_path", "_attn_implementation_autoset"):
        config.pop(key, None)
    return config


# Greedy tokens are only a meaningful bf16 check when each step's winner is clear:
# seeds are tried in order until the top-2 logit gap of each of the first 10 steps
# is at least MIN_MARGIN standard deviations of that step's logits.
MIN_MARGIN = 0.05


def make(name, llm_class, llm_config, architecture, model_type, first_seed, image):
    gen = torch.Generator().manual_seed(first_seed)
    vit, projector = build_vision(gen)
    ids = torch.tensor([[1] + [IM_PATCH] * 256 + torch.randint(3, IM_PATCH, (12,), generator=gen).tolist()])
    with torch.no_grad():
        features, image_embeds = vision_forward(vit, projector, image)
    for seed in range(first_seed, first_seed + 2000):
        result = attempt(llm_class, llm_config, seed, vit, projector, ids, features, image_embeds)
        if result is not None:
            break
    else:
        raise RuntimeError(f"{name}: no seed with clear greedy margins")
    vit, projector, llm, ids, features, image_embeds, spliced, logits, greedy, last, margins = result

    save(name, llm_class, llm_config, architecture, model_type, seed, vit, projector, llm, ids, features, image_embeds,
         spliced, logits, greedy, last, margins)


def attempt(llm_class, llm_config, seed, vit, projector, ids, features, image_embeds):
    gen = torch.Generator().manual_seed(seed)
    llm_config._attn_implementation = "eager"
    llm = llm_class(llm_config).eval()
    randomize(llm, gen, scale=0.15)
    with torch.no_grad():
        embeds = llm.model.embed_tokens(ids)
        spliced = torch.cat([embeds[:, :1], image_embeds, embeds[:, 257:]], dim=1)
        logits = llm(inputs_embeds=spliced).logits
        current, greedy, last, margins = spliced, [], None, []
        for _ in range(20):
            last = llm(inputs_embeds=current).logits[:, -1]
            token = last.argmax(-1)
            top2 = last.topk(2).values[0]
            margins.append(float((top2[0] - top2[1]) / last.std()))
            greedy.append(int(token))
            current = torch.cat([current, llm.model.embed_tokens(token)[:, None]], dim=1)
    if min(margins[:10]) < MIN_MARGIN or len(set(greedy[:10])) < 5:
        return None
    return vit, projector, llm, ids, features, image_embeds, spliced, logits, greedy, last, margins


def save(name, llm_class, llm_config, architecture, model_type, seed, vit, projector, llm, ids, features, image_embeds,
         spliced, logits, greedy, last, margins):
    weights = {f"model.vision_tower.vision_tower.{k}": v for k, v in vit.state_dict().items()}
    weights.update({f"model.mm_projector.projector.{k}": v for k, v in projector.state_dict().items()})
    weights.update(llm.state_dict())
    weights = {k: v.contiguous() for k, v in weights.items()}
    out_dir = os.path.join(ROOT, "tests", "fixtures", name)
    os.makedirs(out_dir, exist_ok=True)
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(lamed_config(llm_config, architecture, model_type), f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({
        "input_ids": ids, "image_features": features.contiguous(), "projector_output": image_embeds.contiguous(),
        "inputs_embeds": spliced.contiguous(), "logits": logits.contiguous(), "greedy_ids": torch.tensor([greedy]),
        "logits_last_step": last.contiguous(),
    }, os.path.join(out_dir, "expected.safetensors"))

    # `m3d generate` reference: the prompt through the tokenizer, greedy decoding with HF.
    tok = tiny_tokenizer(out_dir)
    question = "Where is the lesion? Describe the heart."
    prompt_ids = torch.tensor([tok.encode("<im_patch>" * 256 + question).ids])
    with torch.no_grad():
        e = llm.model.embed_tokens(prompt_ids)
        current = torch.cat([e[:, :1], image_embeds, e[:, 257:]], dim=1)
        answer = []
        for _ in range(12):
            token = llm(inputs_embeds=current).logits[:, -1].argmax(-1)
            answer.append(int(token))
            current = torch.cat([current, llm.model.embed_tokens(token)[:, None]], dim=1)
    with open(os.path.join(out_dir, "generate_expected.json"), "w") as f:
        json.dump({"prompt": question, "prompt_ids": prompt_ids[0].tolist(), "max_new_tokens": 12, "ids": answer,
                   "text": tok.decode(answer, skip_special_tokens=True)}, f, indent=1, ensure_ascii=False)
        f.write("\n")

    # Read back into fresh modules: the saved weights reproduce the logits exactly.
    fresh = llm_class(llm_config).eval()
    loaded = load_file(os.path.join(out_dir, "model.safetensors"))
    fresh.load_state_dict({k: v for k, v in loaded.items() if not k.startswith(("model.vision_tower", "model.mm_projector"))})
    with torch.no_grad():
        assert torch.equal(fresh(inputs_embeds=spliced).logits, logits)
    print(f"{name}: seed {seed}, {len(weights)} tensors, greedy {greedy}, smallest top-2 margin of the first 10 "
          f"steps {min(margins[:10]):.3f} std")


def tiny_tokenizer(out_dir):
    """A Llama-style tokenizer.json over the tiny vocabulary: <unk> <s> </s>, the 256
    byte tokens, '▁' and a few merges (ids up to 298), and <im_patch> = 299 added as
    M3D adds it. Written with HF `tokenizers`; returns it."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    merges = []
    for word in ["▁", "e", "t", "a", "i", "n", "o", "r", "s", "l", "h", "d", "c", "u", "m", "p", "g", "y", "w", "f", "b",
                 "v", "k", "x", "q", "z", "?", ".", ","]:
        vocab[word] = len(vocab)
    for a, b in [("▁", "t"), ("h", "e"), ("i", "n"), ("e", "r"), ("▁", "a"), ("o", "n"), ("r", "e"), ("▁", "s"),
                 ("▁t", "he"), ("e", "s")]:
        if len(vocab) >= IM_PATCH:
            break
        merges.append((a, b))
        vocab[a + b] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    from tokenizers.processors import TemplateProcessing
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    assert len(vocab) <= IM_PATCH, len(vocab)
    for filler in range(len(vocab), IM_PATCH):  # pad the vocabulary so <im_patch> lands on 299
        tok.add_tokens([AddedToken(f"<unused{filler}>", special=True, normalized=False)])
    tok.add_special_tokens([AddedToken("<im_patch>", special=True, normalized=False)])
    assert tok.token_to_id("<im_patch>") == IM_PATCH
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    return tok


def make_text_only(name, llm_class, llm_config, seed):
    """A plain decoder checkpoint (no vision): logits of a text prompt and 20 greedy tokens."""
    gen = torch.Generator().manual_seed(seed)
    llm_config._attn_implementation = "eager"
    llm = llm_class(llm_config).eval()
    randomize(llm, gen, scale=0.15)
    ids = torch.randint(3, VOCAB, (1, 24), generator=gen)
    with torch.no_grad():
        logits = llm(input_ids=ids).logits
        current, greedy = ids, []
        for _ in range(20):
            last = llm(input_ids=current).logits[:, -1]
            greedy.append(int(last.argmax(-1)))
            current = torch.cat([current, last.argmax(-1, keepdim=True)], dim=1)
    out_dir = os.path.join(ROOT, "tests", "fixtures", name)
    os.makedirs(out_dir, exist_ok=True)
    weights = {k: v.contiguous() for k, v in llm.state_dict().items()}
    if llm_config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)  # tied: HF checkpoints store the embedding only
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    config = llm_config.to_dict()
    config.pop("_name_or_path", None)
    config["architectures"] = [llm_class.__name__]  # as save_pretrained writes it
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({"input_ids": ids, "logits": logits.contiguous(), "greedy_ids": torch.tensor([greedy])},
              os.path.join(out_dir, "expected.safetensors"))
    print(f"{name}: {len(weights)} tensors, greedy {greedy}")


def main() -> int:
    torch.manual_seed(0)
    image = load_file(SHARED_IMAGE)["images"].float()
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    make("lamed_phi3_tiny", Phi3ForCausalLM, Phi3Config(num_key_value_heads=4, rope_scaling=None, **common),
         "LamedPhi3ForCausalLM", "lamed_phi3", 1, image)
    make("lamed_llama_tiny", LlamaForCausalLM, LlamaConfig(num_key_value_heads=2, **common),
         "LamedLlamaForCausalLM", "lamed_llama", 5000, image)
    qwen = dict(common, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
                use_sliding_window=False)
    make_text_only("qwen2_tiny", Qwen2ForCausalLM, Qwen2Config(**qwen), 7)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
