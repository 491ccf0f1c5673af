#!/usr/bin/env python3
"""Reference forward and backward of M3D-CLIP and its sigmoid-loss variant, for tests/test_clip.cpp.

The model is M3D's LaMed/src/model/CLIP.py rebuilt from the same parts it imports: M3D's ViT is
MONAI 1.3.0's ViT without its classification head (M3D's copy comments it out), the text tower is
transformers 4.41.2's BertModel (pooler included), two nn.Linear projections, and either
`logit_scale` (M3D-CLIP, "nce": logits = logit_scale * I T^T, NOT exponentiated, symmetric
cross-entropy with labels arange(N)) or Med3DVLM's `t_prime` and `bias` ("sigmoid", as its
CLIP.py runs under torch.distributed: logits = exp(t') I T^T + b, symmetrised, labels 2 Eye - 1,
-sum(logsigmoid(labels * logits)) / N). Tiny sizes: image 8x16x16, patch 4x8x8 (8 patches),
width 32; every parameter random.

Written, per loss (tests/fixtures/clip/tiny_{nce,sigmoid}/): config.json (M3DCLIPConfig keys plus
m3d's `text_config` and `loss_type`), model.safetensors (save_pretrained-style keys:
vision_encoder.*, language_encoder.*, mm_vision_proj.*, mm_language_proj.*, logit_scale |
t_prime, bias), expected.safetensors: the batch (images, input_ids, attention_mask), the
normalised features, the loss, and the gradient of every parameter ("grad." + key) after
loss.backward() in train mode (all dropouts 0, as the official config sets); the BERT pooler gets none.

    ../refenv/bin/python tools/reference/make_clip_fixtures.py
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
import transformers
from monai.networks.nets import ViT
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "clip")
IMG, PATCH, WIDTH = (8, 16, 16), (4, 8, 8), 32
TEXT = dict(vocab_size=99, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


class Clip(torch.nn.Module):
    def __init__(self, loss_type):
        super().__init__()
        self.vision_encoder = ViT(in_channels=1, img_size=IMG, patch_size=PATCH, hidden_size=WIDTH, mlp_dim=48, num_layers=2,
                                  num_heads=4, pos_embed="perceptron", classification=True, dropout_rate=0.0, spatial_dims=3)
        del self.vision_encoder.classification_head
        self.language_encoder = transformers.BertModel(transformers.BertConfig(attn_implementation="eager", **TEXT))
        self.mm_vision_proj = torch.nn.Linear(WIDTH, WIDTH)
        self.mm_language_proj = torch.nn.Linear(WIDTH, WIDTH)
        self.loss_type = loss_type
        if loss_type == "nce":
            self.logit_scale = torch.nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        else:
            self.t_prime = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
            self.bias = torch.nn.Parameter(torch.tensor(0.0))

    def encode_image(self, image):  # M3D's ViT.forward without the head, then CLIP.encode_image
        vit = self.vision_encoder
        x = vit.patch_embedding(image)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in vit.blocks:
            x = block(x)
        x = vit.norm(x)
        return F.normalize(self.mm_vision_proj(x), dim=-1)

    def encode_text(self, ids, mask):
        feats = self.language_encoder(ids, attention_mask=mask)["last_hidden_state"]
        return F.normalize(self.mm_language_proj(feats), dim=-1)

    def forward(self, images, ids, mask):
        image_features = self.encode_image(images)[:, 0]
        text_features = self.encode_text(ids, mask)[:, 0]
        labels = torch.arange(images.shape[0])
        if self.loss_type == "nce":  # gather_loss with one rank: all features are the local ones
            logits_per_image = self.logit_scale * image_features @ text_features.T
            logits_per_text = logits_per_image.T
            loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        else:
            n = image_features.shape[0]
            logits = torch.exp(self.t_prime) * image_features @ text_features.T + self.bias
            logits = (logits + logits.T) / 2
            sign = 2 * torch.eye(n) - 1
            loss = -torch.sum(F.logsigmoid(sign * logits)) / n
        return image_features, text_features, loss


def randomize(model, generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("logit_scale", "t_prime", "bias"):
                continue
            noise = torch.randn(p.shape, generator=generator)
            if ("norm" in name or "LayerNorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def batch(generator):
    images = torch.rand((4, 1) + IMG, generator=generator)
    lengths = [10, 7, 4, 9]
    ids = torch.zeros((4, 10), dtype=torch.long)
    mask = torch.zeros((4, 10), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, TEXT["vocab_size"], (n,), generator=generator)
        ids[row, 0], ids[row, n - 1] = 2, 3  # stand-ins for [CLS] / [SEP]
        mask[row, :n] = 1
    return images, ids, mask


def config(loss_type):
    text = dict(TEXT)  # dropouts 0 (the reference runs in train mode)
    return {"architectures": ["M3DCLIP"], "model_type": "m3d_clip", "language_model_name_or_path": "bert-base-uncased",
            "in_channels": 1, "img_size": list(IMG), "patch_size": list(PATCH), "hidden_size": WIDTH, "mlp_dim": 48,
            "num_layers": 2, "num_heads": 4, "pos_embed": "perceptron", "dropout_rate": 0.0, "spatial_dims": 3,
            "max_text_len": 128, "vocab_size": TEXT["vocab_size"], "local_loss": False, "gather_loss": True,
            "loss_type": loss_type, "text_config": dict(text, model_type="bert")}


def make(loss_type):
    torch.manual_seed(0)
    model = Clip(loss_type)
    randomize(model, torch.Generator().manual_seed(11))
    model.train()
    images, ids, mask = batch(torch.Generator().manual_seed(12))
    image_features, text_features, loss = model(images, ids, mask)
    loss.backward()
    directory = os.path.join(OUT, f"tiny_{loss_type}")
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("position_ids")}
    save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config(loss_type), f, indent=2)
        f.write("\n")
    expected = {"images": images, "input_ids": ids, "attention_mask": mask,
                "image_features": image_features.detach().clone(), "text_features": text_features.detach().clone(),
                "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.grad is not None:  # the BERT pooler takes no part in the loss
            expected["grad." + name] = p.grad.detach().clone().contiguous()
    save_file(expected, os.path.join(directory, "expected.safetensors"))
    print(f"tiny_{loss_type}: loss {loss.item():.6f}, {len(state)} tensors")


def main() -> int:
    torch.set_num_threads(1)
    make("nce")
    make("sigmoid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
