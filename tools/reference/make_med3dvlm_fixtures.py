#!/usr/bin/env python3
"""Reference outputs of a tiny Med3DVLM VLM and a tiny DCFormer_SigLIP, for tests/test_med3dvlm.cpp.

Both models are built by the official code (mirthAI/Med3DVLM @ cbbd633, the checkout given as the
first argument, imported from there, never copied): `src/model/llm/qwen.py` VLMQwenForCausalLM
(transformers' Qwen2 + `vlm_arch.py`'s vision tower, mixer projector and image splice) and
`src/model/CLIP.py` DEC_CLIP (DCFormer + transformers' DistilBertModel, mm_vision_proj /
mm_language_proj, t_prime / bias). Only the sizes are tiny: `decomp_small` is replaced by
DecompModel(num_blocks [1,1,2,2,1], channels [8,12,16,24,32]) — the official towers ignore config —
the LLM is a 2-layer Qwen2 of width 64, the text tower a 2-layer DistilBERT of width 32; every
parameter and BatchNorm statistic is random. The image is the 128x256x256 volume of
../shared/fixtures/dcformer_mixer_tiny (expected.safetensors "images", F16 -> f32); it is not
copied here, the tests read it from the same place.

Written under tests/fixtures/med3dvlm/:
- vlm_qwen_tiny/: config.json as save_pretrained writes it, with `architectures` a plain string
  (what the release's merge script leaves) and the test-only keys dcformer_num_blocks /
  dcformer_channels; generation_config.json with Qwen2.5-Instruct's sampling values (what the
  release inherits, med3dvlm_spec.md §4.7); model.safetensors (keys model.*, lm_head.weight,
  num_batches_tracked included); a tiny byte-level BPE tokenizer.json whose last id is <im_patch>;
  expected.safetensors: input_ids of "<im_patch>" x 64 + PROMPT, the logits of that prompt with the
  image (the first text token after the image tokens is dropped by the official splice:
  `dropped_token`), and `greedy_tokens`, the 20 tokens of generate(images, inputs, do_sample=False,
  max_new_tokens=20) under that generation_config (its repetition_penalty 1.05 applies).
- dec_clip_tiny/: config.json (DEC_CLIPConfig keys + m3d's `text_config`, the DistilBERT config the
  official code loads from language_model_name_or_path), model.safetensors (vision_encoder.*,
  language_encoder.*, mm_*_proj.*, t_prime, bias), the DistilBERT WordPiece files (vocab.txt, cased),
  expected.safetensors: the batch (input_ids, attention_mask; images are the fixture volume, it
  flipped along W, and 1 - it), image/text features in eval mode, and from one training step
  (train mode: BatchNorm on batch statistics) the loss and the gradient of every parameter
  ("grad." + key). The loss runs the branch the release trained with: torch.distributed is
  initialised (gloo, one rank), so exp(t_prime), gathered features and / N apply (spec §2.3).

Shims, because the reference venv has torch 1.13 / transformers 4.41.2 and the official code pins
torch 2.6 / transformers 4.48.3:
- `timm.layers` is a stand-in module: dcformer.py imports DropPath, to_3tuple and trunc_normal_
  from it, and timm >= 0.9 imports torchvision, which has no build for this torch (installing it
  would replace torch). DropPath is never built (drop_path 0 -> nn.Identity); to_3tuple and
  trunc_normal_ are the same two-line functions.
- `src/model/vlm_arch.py` is compiled from its text with one f-string rewritten: line 81 nests
  double quotes inside an f-string (`k.split(keyword + ".")`), valid from Python 3.12 only (this venv
  is 3.11). The line is in the "mlp" projector's weight loader, which nothing here runs.
- Nothing else: Qwen2, DistilBERT, generate(inputs_embeds=...) exist in transformers 4.41.2 with
  the same math; the attention is forced to "eager" (no numerical difference in f32 at this size).

    ../refenv/bin/python tools/reference/make_med3dvlm_fixtures.py /path/to/Med3DVLM-checkout
"""
import argparse
import json
import os
import sys
import tempfile
import types

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "med3dvlm")
IMAGES = os.path.join(ROOT, "..", "shared", "fixtures", "dcformer_mixer_tiny", "expected.safetensors")
NUM_BLOCKS, CHANNELS = [1, 1, 2, 2, 1], [8, 12, 16, 24, 32]
PROMPT = "Describe the findings of this scan."
CORPUS = [
    "Describe the findings of this scan.", "What is the abnormality in the liver?", "Which organ is shown in this image?",
    "The liver shows a hypodense lesion in segment four.", "No acute intracranial abnormality.",
    "Axial CT of the abdomen with contrast in the portal venous phase.", "Choices: A. Axial B. Coronal C. Sagittal D. Oblique",
    "A large mass in the right kidney with calcification.", "The lungs are clear. Heart size is normal.",
    "Please describe this CT scan in detail.", "MRI of the brain shows a ring-enhancing lesion.",
]


def shim_timm():
    """A stand-in for timm.layers (see the module docstring)."""
    import transformers  # noqa: F401  (its import probes for timm, which a stand-in without __spec__ confuses)

    layers = types.ModuleType("timm.layers")

    class DropPath(nn.Module):
        def __init__(self, p):
            raise NotImplementedError("DropPath with drop_path > 0 is not used by Med3DVLM")

    def to_3tuple(x):
        return tuple(x) if isinstance(x, (list, tuple)) else (x, x, x)

    layers.DropPath, layers.to_3tuple, layers.trunc_normal_ = DropPath, to_3tuple, nn.init.trunc_normal_
    timm = types.ModuleType("timm")
    timm.layers = layers
    sys.modules["timm"], sys.modules["timm.layers"] = timm, layers


def import_official(checkout):
    shim_timm()
    sys.path.insert(0, os.path.abspath(checkout))
    import src.model.encoder.builder as builder

    path = os.path.join(checkout, "src", "model", "vlm_arch.py")  # Python 3.12 syntax, see the module docstring
    with open(path) as f:
        source = f.read().replace('k.split(keyword + ".")', "k.split(keyword + '.')")
    vlm_arch = types.ModuleType("src.model.vlm_arch")
    vlm_arch.__file__, vlm_arch.__package__ = path, "src.model"
    sys.modules["src.model.vlm_arch"] = vlm_arch
    exec(compile(source, path, "exec"), vlm_arch.__dict__)
    import src.model.encoder.dcformer as dcformer
    import src.model.CLIP as clip
    from src.model.llm.qwen import VLMQwenConfig, VLMQwenForCausalLM

    def tiny_decomp(input_size=(512, 512, 256)):  # stands for decomp_small, which ignores config
        return dcformer.DecompModel(input_size=input_size, num_blocks=NUM_BLOCKS, channels=CHANNELS)

    builder.decomp_small = tiny_decomp
    clip.decomp_small = tiny_decomp
    return clip, VLMQwenConfig, VLMQwenForCausalLM


def randomize(model, generator, scale):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("t_prime", "bias"):
                continue
            noise = torch.randn(p.shape, generator=generator)
            is_norm = any(s in name for s in ("norm", "LayerNorm", "ln1", "ln2", ".1.weight")) and name.endswith("weight") and p.dim() == 1
            p.copy_(1.0 + 0.1 * noise if is_norm else scale * noise)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=generator))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=generator))


def fixture_image():
    return load_file(IMAGES)["images"].float()  # (1, 1, 128, 256, 256)


def tiny_tokenizer(directory):
    """A byte-level BPE with Qwen2's pre-tokenizer regex; <im_patch> is the last id, as in the release."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    qwen_split = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(qwen_split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": ["<im_patch>"]})  # train_vlm.py
    fast.save_pretrained(directory)
    return fast


def make_vlm(VLMQwenConfig, VLMQwenForCausalLM):
    directory = os.path.join(OUT, "vlm_qwen_tiny")
    os.makedirs(directory, exist_ok=True)
    tokenizer = tiny_tokenizer(directory)
    vocab = len(tokenizer)
    im_patch = tokenizer.convert_tokens_to_ids("<im_patch>")
    assert im_patch == vocab - 1
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    config = VLMQwenConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, use_sliding_window=False, sliding_window=512, max_window_layers=2,
        hidden_act="silu", bos_token_id=eos[1], eos_token_id=eos[0], torch_dtype="float32",
        # initialize_vision_modules + train_vlm.py defaults, at the tiny tower's sizes
        input_size=[256, 256, 128], patch_size=[16, 16, 16], dim=768, depth=12, vision_tower="dcformer",
        vision_select_layer=-2, vision_select_feature="cls_patch", mm_projector_type="mixer", mm_mlp_depth=2,
        proj_out_num=64, low_output_size=[48, 32], high_output_size=[16, 32], low_input_size=[256, 24],
        high_input_size=[32, 32], mm_hidden_size=768)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = VLMQwenForCausalLM(config)
    randomize(model, torch.Generator().manual_seed(21), 0.1)
    model.eval()
    model.generation_config.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
                                   eos_token_id=eos, pad_token_id=eos[1], bos_token_id=eos[1])

    image = fixture_image()
    ids = tokenizer("<im_patch>" * config.proj_out_num + PROMPT, return_tensors="pt")["input_ids"]
    assert (ids[0, :config.proj_out_num] == im_patch).all() and ids[0, config.proj_out_num] != im_patch
    with torch.no_grad():
        logits = model(input_ids=ids, images=image).logits  # (1, L, V)
        greedy = model.generate(images=image, inputs=ids, do_sample=False, max_new_tokens=20)  # new tokens only
    dropped = ids[0, config.proj_out_num].item()
    print(f"vlm: {ids.shape[1]} prompt ids, dropped token {dropped} {tokenizer.convert_ids_to_tokens(dropped)!r}, "
          f"max |logit| {logits.abs().max():.3f}, greedy {greedy[0].tolist()} -> {tokenizer.decode(greedy[0])!r}")
    if greedy.shape[1] != 20:
        raise SystemExit(f"greedy decoding stopped after {greedy.shape[1]} tokens; pick another seed")

    model.save_pretrained(directory, safe_serialization=True)
    with open(os.path.join(directory, "config.json")) as f:
        saved = json.load(f)
    saved["architectures"] = "VLMQwenForCausalLM"  # merge_lora_weights_and_save_hf_model.py leaves a plain string
    saved["_test_only_note"] = ("the official tower is always decomp_small; dcformer_num_blocks / dcformer_channels give "
                                "the tiny encoder's shape")
    saved["dcformer_num_blocks"], saved["dcformer_channels"] = NUM_BLOCKS, CHANNELS
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(saved, f, indent=2)
        f.write("\n")
    save_file({"input_ids": ids, "logits": logits.contiguous(), "greedy_tokens": greedy.contiguous(),
               "dropped_token": torch.tensor([dropped])}, os.path.join(directory, "expected.safetensors"))


def make_clip(clip):
    import torch.distributed as dist
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    directory = os.path.join(OUT, "dec_clip_tiny")
    os.makedirs(directory, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w.strip(".,:?") for t in CORPUS for w in t.split()} - {""})
    words += ["##s", "##ed", "##ing", "##al", "."]
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")
    tokenizer = DistilBertTokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=False)  # multilingual-cased
    tokenizer.save_pretrained(directory)
    text_config = DistilBertConfig(vocab_size=len(words), dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                   max_position_embeddings=40, dropout=0.0, attention_dropout=0.0, activation="gelu",
                                   sinusoidal_pos_embds=False, pad_token_id=0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as language_dir:
        DistilBertModel(text_config).save_pretrained(language_dir)
        config = clip.DEC_CLIPConfig(language_model_name_or_path=language_dir, vision_encoder="dcformer",
                                     input_size=(256, 256, 128), hidden_size=40, loss_type="sigmoid")
        model = clip.DEC_CLIP(config)
    randomize(model, torch.Generator().manual_seed(31), 0.2)
    with torch.no_grad():
        model.bias.fill_(-0.5)  # t_prime stays ln(1/0.07); a non-zero bias checks that it enters the logits
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    image = fixture_image()
    images = torch.cat([image, image.flip(-1), 1 - image])  # (3, 1, 128, 256, 256)
    texts = ["The liver shows a hypodense lesion.", "No acute intracranial abnormality.", "The lungs are clear."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]

    model.eval()
    with torch.no_grad():
        image_features = model.encode_image(images)
        text_features = model.encode_text(ids, mask)
    model.train()
    dist.init_process_group("gloo", init_method=f"file://{tempfile.mkdtemp()}/rendezvous", rank=0, world_size=1)
    out = model(images, ids, mask, labels=torch.arange(3))
    out["loss"].backward()
    dist.destroy_process_group()
    print(f"dec_clip: loss {out['loss'].item():.6f}, |image - text| {(image_features - text_features).abs().max():.3f}")

    save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    saved = config.to_diff_dict()  # what save_pretrained writes
    saved.pop("transformers_version", None)
    saved.update(architectures=["DEC_CLIP"], model_type="dec_clip", text_config=dict(text_config.to_diff_dict(), model_type="distilbert"))
    saved["text_config"].pop("transformers_version", None)
    saved["_test_only_note"] = "the official tower is always decomp_small; dcformer_num_blocks / dcformer_channels give the tiny encoder's shape"
    saved["dcformer_num_blocks"], saved["dcformer_channels"] = NUM_BLOCKS, CHANNELS
    saved["language_model_name_or_path"] = "medicalai/ClinicalBERT"
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(saved, f, indent=2, default=list)
        f.write("\n")
    expected = {"input_ids": ids, "attention_mask": mask, "image_features": image_features, "text_features": text_features,
                "loss": out["loss"].detach().reshape(1)}
    for k, v in model.state_dict().items():
        if "running_" in k:
            expected["after." + k] = v.detach().clone()  # train-mode BatchNorm updated its statistics
    for name, p in model.named_parameters():
        if p.grad is not None:
            expected["grad." + name] = p.grad.detach().clone().contiguous()
    save_file(expected, os.path.join(directory, "expected.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", help="a checkout of github.com/mirthAI/Med3DVLM (cbbd633)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    clip, VLMQwenConfig, VLMQwenForCausalLM = import_official(args.checkout)
    make_vlm(VLMQwenConfig, VLMQwenForCausalLM)
    make_clip(clip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
