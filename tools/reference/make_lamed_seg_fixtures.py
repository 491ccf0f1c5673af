#!/usr/bin/env python3
"""A tiny M3D-LaMed-Phi-3 *with* its SegVol [SEG] head, run by the official M3D code.

The model is the official LamedPhi3ForCausalLM (BAAI-DCAI/M3D LaMed/src/model/
language_model/lamed_phi3.py, imported from a checkout given on the command line, never
copied here) over transformers 4.41.2's Phi-3 and MONAI 1.3.0, in fp32, eval mode. Its
generate(images, inputs, seg_enable=True) is what is recorded: greedy tokens, the [SEG]
hidden state (the seg_projector's input, caught by a forward hook), seg_prompt (its output)
and the mask logits. Box and point prompts go through the official PromptEncoder and
MaskDecoder the way SegVol's forward_decoder calls them (M3D's SegVol.forward drops them).

Sizes. SegVol's width is hard-wired to 768 (mask_decoder.py's Linear(768, 96)), and LaMed's
mm_hidden_size is both the vision width and the seg_projector's output, so the vision tower
is 768 wide too. Such weights do not fit a small committed fixture, so they are not stored
here: the seg module and seg_projector are the official fixture
../shared/fixtures/segvol_small (F16 weights; ViT 1 layer / mlp 64, two-way mlp 64, IoU
hidden 32, LLM width 48), and the vision tower's ViT (1 layer, mlp 64, 12 heads, with a cls
token) reuses that fixture's image-encoder tensors. tests/fixtures/lamed_seg_tiny/
model.safetensors holds the rest (Phi-3 LLM of width 48, mm_projector 768 -> 48, cls_token);
the full checkpoint is that file plus segvol_small's tensors, with
`model.seg_module.image_encoder.*` also copied to `model.vision_tower.vision_tower.*`
(lamed_seg_checkpoint() below; the C++ tests assemble it the same way).

[SEG] in the greedy output. The tiny tokenizer of make_lamed_fixtures.py gets "[SEG]" added
as a normal token (tokenizer.add_tokens, as M3D's train.py does), id 300 = seg_token_id.
Random weights rarely choose it, so for each seed the LLM is drawn, greedy decoding is run
once, and lm_head's [SEG] row is set to 1.1 x the row of the first later token that differs
from the first one: [SEG] then wins where that token led with a positive logit. Seeds are
tried in order until the answer (16 tokens, no EOS) starts with another token, holds [SEG]
2 to 5 times after position 0 (so the mean of several is exercised; a [SEG] at position 0
has no hidden state in the official generate), has at least 3 distinct tokens, and every
step's top-2 logit gap is at least MIN_MARGIN standard deviations. A second question whose answer has no
[SEG] records the official "no [SEG]" case (logits all -inf).

Logits. (1,1,32,256,256) f32 is 8 MB per case, so expected.safetensors keeps, per case:
`*_logits_sub` = logits[0, 0, 1::3, 2::7, 3::5] (11 x 37 x 51, every interpolation phase),
`*_mean_d` / `*_mean_h` / `*_mean_w` = the mean over the other two axes (32, 256, 256), and
`*_positive` = the number of voxels with logit > 0 (int64).

Environment: the reference venv (torch 1.13, transformers 4.41.2, monai 1.3.0, einops,
safetensors). torchvision, which only the official package's unused SAM predictor imports,
is replaced by an empty stand-in module. Deterministic: a rerun reproduces every file.

    ../refenv/bin/python tools/reference/make_lamed_seg_fixtures.py /path/to/M3D-checkout

Outputs in tests/fixtures/lamed_seg_tiny/: config.json, tokenizer.json, model.safetensors
(the part described above), expected.safetensors, generate_expected.json.
"""
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "fixtures")
OUT = os.path.join(ROOT, "tests", "fixtures", "lamed_seg_tiny")
HIDDEN, VOCAB, SEG = 48, 301, 300
QUESTION = "Can you segment the liver?"
NO_SEG_QUESTIONS = ["What is this?", "Describe the image.", "Where is it?", "Is it normal?", "Any lesion?", "Hello.",
                    "What organ is shown here?", "Please write a report.", "Is there a tumor in the liver?", "Yes or no?"]
MAX_NEW_TOKENS = 16
MIN_MARGIN = 0.05
SUB = (slice(1, None, 3), slice(2, None, 7), slice(3, None, 5))
# Prompts for the prompt encoder, in model voxels (d, h, w).
POINTS = torch.tensor([[[10.0, 100.0, 120.0], [20.0, 60.0, 200.0]]]), torch.tensor([[1, 0]])
BOX = torch.tensor([[4.0, 40.0, 60.0, 24.0, 200.0, 220.0]])


class _NoTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty torchvision.*: imported by segment_anything_volumetric's predictor and
    automatic mask generator, which M3D's SegVol never uses."""

    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def missing(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return lambda *args, **kwargs: None

        module.__getattr__ = missing
        return module

    def exec_module(self, module):
        pass


def import_official(checkout):
    sys.meta_path.insert(0, _NoTorchvision())
    sys.path.insert(0, checkout)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from LaMed.src.model import lamed_arch
    from LaMed.src.model.language_model.lamed_phi3 import LamedPhi3Config, LamedPhi3ForCausalLM
    from LaMed.src.model.multimodal_encoder.vit import ViT as M3dViT, ViT3DTower
    from LaMed.src.model.segmentation_module.segment_anything_volumetric.modeling import (MaskDecoder, PromptEncoder,
                                                                                         TwoWayTransformer)
    from LaMed.src.model.segmentation_module.segvol import SegVol
    from monai.networks.nets import ViT as MonaiViT

    def tiny_vision_tower(config):
        """ViT3DTower ignores config and builds 768/3072/12/12; the same class with the
        tiny ViT (M3D's own ViT copy, as ViT3DTower uses it)."""
        tower = ViT3DTower(config)
        tower.vision_tower = M3dViT(in_channels=1, img_size=config.image_size, patch_size=config.patch_size,
                                    hidden_size=768, mlp_dim=64, num_layers=1, num_heads=12, pos_embed="perceptron",
                                    spatial_dims=3, classification=True)
        return tower

    def tiny_segvol(config):
        """build_sam.py's _build_sam with segvol_small's smaller depths and MLPs."""
        grid = [i // p for i, p in zip(config.image_size, config.patch_size)]
        encoder = MonaiViT(in_channels=1, img_size=config.image_size, patch_size=config.patch_size, hidden_size=768,
                           mlp_dim=64, num_layers=1, num_heads=12, pos_embed="perceptron", classification=False,
                           dropout_rate=0.0)
        prompt = PromptEncoder(embed_dim=768, image_embedding_size=grid, input_image_size=config.image_size,
                               mask_in_chans=16)
        decoder = MaskDecoder(image_encoder_type="vit", num_multimask_outputs=3,
                              transformer=TwoWayTransformer(depth=2, embedding_dim=768, mlp_dim=64, num_heads=8),
                              transformer_dim=768, iou_head_depth=3, iou_head_hidden_dim=32,
                              image_size=np.array(config.image_size), patch_size=np.array(config.patch_size))
        return SegVol(image_encoder=encoder, mask_decoder=decoder, prompt_encoder=prompt, roi_size=config.image_size,
                      patch_size=config.patch_size)

    lamed_arch.build_vision_tower = tiny_vision_tower
    lamed_arch.build_segmentation_module = tiny_segvol
    return LamedPhi3Config, LamedPhi3ForCausalLM


def lamed_seg_checkpoint(part):
    """The full checkpoint: `part` (this fixture's model.safetensors) + segvol_small's
    seg module and seg_projector, whose image encoder is also the vision tower's ViT."""
    seg = {k: v.float() for k, v in load_file(os.path.join(SHARED, "segvol_small", "model.safetensors")).items()}
    weights = dict(part)
    weights.update(seg)
    prefix = "model.seg_module.image_encoder."
    weights.update({"model.vision_tower.vision_tower." + k[len(prefix):]: v for k, v in seg.items() if k.startswith(prefix)})
    return weights


def make_config(config_class):
    config = config_class(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        image_channel=1, image_size=[32, 256, 256], patch_size=[4, 16, 16], vision_tower="vit3d",
        vision_select_layer=-1, vision_select_feature="patch", mm_projector_type="spp", proj_layer_type="mlp",
        proj_layer_num=2, proj_pooling_type="spatial", proj_pooling_size=2, mm_hidden_size=768, proj_out_num=256,
        segmentation_module="segvol", seg_token_id=SEG)
    config._attn_implementation = "eager"
    return config


def config_json(config):
    out = config.to_dict()
    out["architectures"] = ["LamedPhi3ForCausalLM"]
    for key in ("_name_or_path", "_attn_implementation_autoset", "transformers_version"):
        out.pop(key, None)
    out.update({
        "_test_only_note": "the official ViT3DTower and build_sam.py fix the ViTs at 768/3072/12/12; these test-only keys "
                           "give this fixture's dims (1 layer, mlp 64); see tools/reference/make_lamed_seg_fixtures.py",
        "vision_hidden_size": 768, "vision_mlp_dim": 64, "vision_num_layers": 1, "vision_num_heads": 12,
        "seg_embed_dim": 768, "seg_vit_mlp_dim": 64, "seg_vit_num_layers": 1, "seg_vit_num_heads": 12,
        "seg_twoway_mlp_dim": 64, "seg_iou_head_hidden_dim": 32,
    })
    return out


def randomize(model, gen):
    """The LLM, mm_projector and cls_token random (norms near 1); the rest comes from segvol_small."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("model.seg_", "model.vision_tower.")) and not name.endswith("cls_token"):
                continue
            noise = torch.randn(p.shape, generator=gen)
            scale = 0.05 if name.startswith(("model.mm_projector", "model.vision_tower")) else 0.15
            p.copy_(1.0 + 0.1 * noise if "norm" in name and name.endswith("weight") else scale * noise)


def greedy(model, images, ids, **kwargs):
    out = model.generate(images=images, inputs=ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=0,
                         **kwargs)
    return out


def margins_of(scores):
    result = []
    for s in scores:
        top2 = s[0].topk(2).values
        result.append(float((top2[0] - top2[1]) / s[0].std()))
    return result


def logit_stats(name, logits):
    x = logits[0, 0]
    return {f"{name}_logits_sub": x[SUB].contiguous(), f"{name}_mean_d": x.mean((1, 2)), f"{name}_mean_h": x.mean((0, 2)),
            f"{name}_mean_w": x.mean((0, 1)), f"{name}_positive": torch.tensor([int((x > 0).sum())])}


def main(argv):
    if len(argv) != 2:
        print(__doc__.split("\n\n")[-2])
        return 2
    LamedPhi3Config, LamedPhi3ForCausalLM = import_official(os.path.abspath(argv[1]))
    from make_lamed_fixtures import tiny_tokenizer
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    tok = tiny_tokenizer(OUT)
    tok.add_tokens(["[SEG]"])  # train.py: tokenizer.add_tokens("[SEG]"), a normal token
    assert tok.token_to_id("[SEG]") == SEG
    tok.save(os.path.join(OUT, "tokenizer.json"))
    images = load_file(os.path.join(SHARED, "vit3d_spp_tiny", "expected.safetensors"))["images"].float()
    ids = torch.tensor([tok.encode("<im_patch>" * 256 + QUESTION).ids])

    config = make_config(LamedPhi3Config)
    model = LamedPhi3ForCausalLM(config).eval()
    model.load_state_dict(lamed_seg_checkpoint(model.state_dict()), strict=True)
    for seed in range(1, 3000):
        randomize(model, torch.Generator().manual_seed(seed))  # the LLM, mm_projector and cls_token only
        with torch.no_grad():
            first = greedy(model, images, ids)[0].tolist()
            later = [t for t in first[1:] if t != first[0]]
            if not later:
                continue
            model.lm_head.weight[SEG] = 1.1 * model.lm_head.weight[later[0]]
            out = greedy(model, images, ids, output_scores=True, return_dict_in_generate=True)
        tokens = out.sequences[0].tolist()
        margins = margins_of(out.scores)
        segs = tokens[1:].count(SEG)
        if (tokens[0] != SEG and 2 <= segs <= len(tokens) // 3 and len(set(tokens)) >= 3 and min(margins) >= MIN_MARGIN
                and len(tokens) == MAX_NEW_TOKENS):
            break
    else:
        raise RuntimeError("no seed gives [SEG] twice with clear margins")

    # The official [SEG] path, with hooks on the seg_projector for its input and output.
    caught = {}
    hook = model.get_model().seg_projector.register_forward_hook(
        lambda module, inputs, output: caught.update(hidden=inputs[0].detach().clone(), prompt=output.detach().clone()))
    with torch.no_grad():
        out_ids, seg_logits = greedy(model, images, ids, seg_enable=True)
    hook.remove()
    assert out_ids[0].tolist() == tokens, (out_ids, tokens)
    expected = {"input_ids": ids, "greedy_ids": out_ids, "seg_hidden_state": caught["hidden"],
                "seg_prompt": caught["prompt"], "seg_margins": torch.tensor(margins)}
    expected.update(logit_stats("seg", seg_logits))

    # A question whose answer has no [SEG]: the official logits are all -inf.
    for question in NO_SEG_QUESTIONS:
        no_seg_ids = torch.tensor([tok.encode("<im_patch>" * 256 + question).ids])
        with torch.no_grad():
            no_seg_out, no_seg_logits = greedy(model, images, no_seg_ids, seg_enable=True)
        if SEG not in no_seg_out[0].tolist()[1:]:
            break
    else:
        raise RuntimeError("every question's answer has [SEG]")
    assert bool(torch.isneginf(no_seg_logits).all())
    expected.update({"no_seg_input_ids": no_seg_ids, "no_seg_greedy_ids": no_seg_out})

    # Box and point prompts through the official prompt encoder and mask decoder
    # (SegVol's forward_decoder with points / boxes, as standalone SegVol calls it).
    seg = model.get_model().seg_module
    with torch.no_grad():
        embedding = seg.image_encoder(images)[0].transpose(1, 2).reshape(1, 768, 8, 16, 16)
        for name, points, boxes, text in [("points", POINTS, None, None), ("box_text", None, BOX, caught["prompt"]),
                                          ("points_box", POINTS, BOX, None)]:
            sparse, dense = seg.prompt_encoder(points=points, boxes=boxes, masks=None, text_embedding=text)
            low, _ = seg.mask_decoder(image_embeddings=embedding, text_embedding=text, image_pe=seg.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            logits = F.interpolate(low, size=(32, 256, 256), mode="trilinear", align_corners=False)
            expected[f"{name}_sparse"] = sparse.contiguous()
            expected.update(logit_stats(name, logits))
        expected.update({"points": POINTS[0], "point_labels": POINTS[1], "box": BOX})
        # The same path with the text only is the generate() logits.
        sparse, dense = seg.prompt_encoder(points=None, boxes=None, masks=None, text_embedding=caught["prompt"])
        low, _ = seg.mask_decoder(image_embeddings=embedding, text_embedding=caught["prompt"],
                                  image_pe=seg.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                                  dense_prompt_embeddings=dense, multimask_output=False)
        assert torch.allclose(F.interpolate(low, size=(32, 256, 256), mode="trilinear", align_corners=False), seg_logits,
                              atol=1e-6)

    part = {k: v.contiguous() for k, v in model.state_dict().items()
            if not k.startswith("model.seg_") and not (k.startswith("model.vision_tower.") and not k.endswith("cls_token"))}
    save_file(part, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config_json(config), f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "generate_expected.json"), "w") as f:
        json.dump({"prompt": QUESTION, "ids": tokens, "text": tok.decode(tokens, skip_special_tokens=True),
                   "no_seg_prompt": question, "no_seg_ids": no_seg_out[0].tolist(),
                   "no_seg_text": tok.decode(no_seg_out[0].tolist(), skip_special_tokens=True),
                   "max_new_tokens": MAX_NEW_TOKENS}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    # The saved part plus segvol_small rebuilds the model exactly.
    fresh = LamedPhi3ForCausalLM(config).eval()
    fresh.load_state_dict(lamed_seg_checkpoint(load_file(os.path.join(OUT, "model.safetensors"))), strict=True)
    with torch.no_grad():
        again_ids, again_logits = greedy(fresh, images, ids, seg_enable=True)
    assert torch.equal(again_ids, out_ids) and torch.equal(again_logits, seg_logits)
    print(f"lamed_seg_tiny: seed {seed}, tokens {tokens}, [SEG] x{tokens.count(SEG)}, smallest margin {min(margins):.3f} "
          f"std, {int((seg_logits > 0).sum())} positive voxels; no-[SEG] question {question!r}: {no_seg_out[0].tolist()}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
