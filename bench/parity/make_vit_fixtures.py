#!/usr/bin/python3
"""Encoder-folder fixtures for tests/models/vit.test.ts: two tiny ViTs with random weights, saved
as the folders a user points `--encoder` at, plus what PyTorch computes on them.

PyTorch transcriptions of transformers' ViTModel (modeling_vit.py) and Dinov2WithRegistersModel
(modeling_dinov2_with_registers.py, current main), with transformers' module names so that
state_dict() keys are the checkpoint keys. Written from those files' semantics:
  - pre-norm blocks; attention = softmax(q k^T / sqrt(d)) v over heads; erf GELU ("gelu");
  - ViT: layernorm_before / layernorm_after / intermediate.dense / output.dense, final layernorm,
    and a pooler (tanh(dense(CLS))) that patch features never use; LayerNorm eps from the config
    (facebook/dino-vits16 ships 1e-12, the ViTConfig default, though DINO itself trained with 1e-6);
    position embeddings only at config.image_size (ViTModel interpolates only when asked to);
  - DINOv2: norm1 / norm2, mlp.fc1 / fc2 (hidden * mlp_ratio), LayerScale (x * lambda1) on both
    branches, final layernorm; register tokens inserted after CLS *after* the position embeddings
    were added (registers have none): [CLS, reg_1..reg_R, patch_1..patch_hw];
  - interpolate_pos_encoding (when the patch grid differs from image_size / patch_size):
    CLS position kept, the g0 x g0 grid resized with F.interpolate(size=(h, w), mode="bicubic",
    align_corners=False) — `size=`, not the `scale_factor=(h + 0.1) / g0` of older transformers
    releases (and of facebookresearch/dinov2's interpolate_offset=0.1);
    Dinov2Model: antialias=False (PyTorch bicubic, a = -0.75, edges clamped);
    Dinov2WithRegistersModel: antialias=True (PyTorch's separable anti-aliased filter: Keys cubic
    with a = -0.5, support stretched by in/out when shrinking, taps outside the grid dropped and
    the weights renormalized — Pillow's algorithm; it differs from plain bicubic when enlarging too).

Writes tests/fixtures/vit/:
  vit/        config.json (model_type "vit"), preprocessor_config.json, model.safetensors (F32,
              with the unused pooler.dense.*), expected.safetensors: pixel_values [2, 3, 32, 32]
              (F16: values exactly representable, half the bytes) and last_hidden_state
              [2, 17, 32] (F32)
  vit-onnx/   the same model (same weights) exported by torch.onnx.export in the transformers.js
              layout: onnx/model.onnx (opset 14, input pixel_values, outputs last_hidden_state and
              pooler_output, dynamic batch), config.json, preprocessor_config.json
  dinov2-reg/ config.json (model_type "dinov2_with_registers", 2 registers, image_size 32: a 4x4
              position grid), preprocessor_config.json (crop 48), model.safetensors (F16 weights,
              as half-precision exports are; with the unused embeddings.mask_token),
              expected.safetensors: pixel_values [1, 3, 48, 48] -> last_hidden_state [1, 39, 32]
              (position grid 4x4 -> 6x6), pixel_values_24x40 [1, 3, 24, 40] ->
              last_hidden_state_24x40 [1, 18, 32] (4x4 -> 3x5: shrinks one axis, grows the other),
              and the position grid resized as Dinov2Model (no antialias) would:
              pos_bicubic_6x6 [1, 32, 6, 6], pos_bicubic_3x5 [1, 32, 3, 5]

Weights are drawn in float32 (seeded torch.Generator); expected outputs are computed in float64 on
those values and rounded to float32, so a test's error is its own float32 arithmetic. The ONNX
export runs the float32 module.

Needs /usr/bin/python3 with torch + onnx (Debian python3-torch 1.13, python3-onnx 1.12); tests never
run it. Usage:
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_vit_fixtures.py
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "vit")
F64 = torch.float64
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ------------------------------------------------------------------------------ files

def write_safetensors(path, tensors, metadata=None, dtype="F32"):
    """Writes torch tensors in insertion order as F16 or F32: `dtype` is "F16", "F32" or a function
    of the tensor's name returning one of them. Empty or missing metadata writes no __metadata__."""
    arrays = {}
    for name, t in tensors.items():
        dt = dtype(name) if callable(dtype) else dtype
        t = t.detach().cpu().contiguous()
        arrays[name] = (t.to(torch.float16) if dt == "F16" else t.to(torch.float32)).numpy()
    safetensors_io.write_safetensors(path, arrays, metadata or None)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ------------------------------------------------------------------------------ modules

class Linear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(o, i))
        self.bias = nn.Parameter(torch.zeros(o))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class LayerNorm(nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps
        self.shape = (c,)

    def forward(self, x):
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class SelfAttention(nn.Module):  # "attention.attention"
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = Linear(c, c), Linear(c, c), Linear(c, c)

    def forward(self, x):
        B, L, C = x.shape
        d = C // self.heads
        split = lambda t: t.reshape(B, L, self.heads, d).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        w = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * d ** -0.5, dim=-1)
        return torch.matmul(w, v).transpose(1, 2).reshape(B, L, C)


class Attention(nn.Module):  # "attention": self-attention, then "output.dense"
    def __init__(self, c, heads):
        super().__init__()
        self.attention = SelfAttention(c, heads)
        self.output = nn.Module()
        self.output.dense = Linear(c, c)

    def forward(self, x):
        return self.output.dense(self.attention(x))


class ViTLayer(nn.Module):
    def __init__(self, c, heads, ff, eps):
        super().__init__()
        self.attention = Attention(c, heads)
        self.intermediate = nn.Module()
        self.intermediate.dense = Linear(c, ff)
        self.output = nn.Module()
        self.output.dense = Linear(ff, c)
        self.layernorm_before = LayerNorm(c, eps)
        self.layernorm_after = LayerNorm(c, eps)

    def forward(self, x):
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class LayerScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.lambda1


class Dinov2Layer(nn.Module):
    def __init__(self, c, heads, ff, eps):
        super().__init__()
        self.norm1 = LayerNorm(c, eps)
        self.attention = Attention(c, heads)
        self.layer_scale1 = LayerScale(c)
        self.norm2 = LayerNorm(c, eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = Linear(c, ff)
        self.mlp.fc2 = Linear(ff, c)
        self.layer_scale2 = LayerScale(c)

    def forward(self, x):
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        return x + self.layer_scale2(self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)))))


class Embeddings(nn.Module):
    def __init__(self, cfg, dinov2):
        super().__init__()
        C, P = cfg["hidden_size"], cfg["patch_size"]
        self.grid = cfg["image_size"] // P
        self.patch = P
        self.dinov2 = dinov2
        self.antialias = cfg["model_type"] == "dinov2_with_registers"
        self.registers = cfg.get("num_register_tokens", 0)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        if dinov2:
            self.mask_token = nn.Parameter(torch.zeros(1, C))  # BEiT-style masking in pre-training only
        if self.registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, self.registers, C))
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, C))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(3, C, P, stride=P)

    def interpolate(self, h, w, antialias):
        pos = self.position_embeddings
        if h == self.grid and w == self.grid:
            return pos
        C = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=antialias)
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, C)], dim=1)

    def forward(self, x):
        B, _, H, W = x.shape
        h, w = H // self.patch, W // self.patch
        if not self.dinov2 and (h, w) != (self.grid, self.grid):
            raise ValueError("ViTModel position embeddings are for image_size only")
        t = self.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1)
        t = t + self.interpolate(h, w, self.antialias)
        if self.registers:
            t = torch.cat([t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]], dim=1)
        return t


class Encoder(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layer = nn.ModuleList(layers)

    def forward(self, x):
        for l in self.layer:
            x = l(x)
        return x


class ViTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.embeddings = Embeddings(cfg, dinov2=False)
        self.encoder = Encoder([ViTLayer(C, cfg["num_attention_heads"], cfg["intermediate_size"], eps) for _ in range(cfg["num_hidden_layers"])])
        self.layernorm = LayerNorm(C, eps)
        self.pooler = nn.Module()
        self.pooler.dense = Linear(C, C)

    def forward(self, pixel_values):
        x = self.layernorm(self.encoder(self.embeddings(pixel_values)))
        return x, torch.tanh(self.pooler.dense(x[:, 0]))


class Dinov2Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        ff = int(C * cfg["mlp_ratio"])
        self.embeddings = Embeddings(cfg, dinov2=True)
        self.encoder = Encoder([Dinov2Layer(C, cfg["num_attention_heads"], ff, eps) for _ in range(cfg["num_hidden_layers"])])
        self.layernorm = LayerNorm(C, eps)

    def forward(self, pixel_values):
        return self.layernorm(self.encoder(self.embeddings(pixel_values)))


# ------------------------------------------------------------------------------ weights

def randomize(model, gen, half=False):
    """Every parameter drawn in float32 at a scale where each part of the model matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            n = lambda scale, shift=0.0: torch.randn(p.shape, generator=gen) * scale + shift
            if name.endswith("lambda1"):
                v = n(0.2, 0.6)
            elif leaf == "weight" and p.dim() == 1:  # LayerNorm
                v = n(0.1, 1.0)
            elif leaf == "bias":
                v = n(0.1)
            elif leaf == "weight":
                v = n(1 / math.sqrt(p[0].numel()))
            else:  # cls / register / mask tokens, position embeddings
                v = n(0.5)
            if half:
                v = v.half().float()  # stored F16; the reference uses exactly these values
            p.copy_(v)


def pixels(gen, *shape):
    """Normalized-looking pixels, exactly representable in float16."""
    return (torch.rand(shape, generator=gen) * 4.4 - 2.1).half().float()


# ------------------------------------------------------------------------------ fixtures

VIT_CONFIG = {
    "architectures": ["ViTModel"],
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 32,
    "image_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 32,
    "layer_norm_eps": 1e-12,
    "model_type": "vit",
    "num_attention_heads": 4,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 8,
    "qkv_bias": True,
    "torch_dtype": "float32",
}
VIT_PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": IMAGENET_MEAN,
    "image_processor_type": "ViTImageProcessor",
    "image_std": IMAGENET_STD,
    "resample": 2,
    "rescale_factor": 1 / 255,
    "size": {"height": 32, "width": 32},
}
DINOV2_CONFIG = {
    "architectures": ["Dinov2WithRegistersModel"],
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 32,
    "image_size": 32,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-06,
    "layerscale_value": 1.0,
    "mlp_ratio": 2,
    "model_type": "dinov2_with_registers",
    "num_attention_heads": 4,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "num_register_tokens": 2,
    "patch_size": 8,
    "qkv_bias": True,
    "torch_dtype": "float16",
    "use_swiglu_ffn": False,
}
DINOV2_PREPROCESSOR = {
    "crop_size": {"height": 48, "width": 48},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": IMAGENET_MEAN,
    "image_processor_type": "BitImageProcessor",
    "image_std": IMAGENET_STD,
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 55},
}
META = {"generator": "bench/parity/make_vit_fixtures.py", "torch": torch.__version__, "compute": "float64 on float32 weights and inputs, stored float32"}


def vit_fixtures():
    gen = torch.Generator().manual_seed(11)
    model = ViTModel(VIT_CONFIG).eval()
    randomize(model, gen)
    x = pixels(gen, 2, 3, 32, 32)
    with torch.no_grad():
        hidden, _ = model.to(F64)(x.to(F64))
    model = model.to(torch.float32)
    folder = os.path.join(OUT, "vit")
    write_json(os.path.join(folder, "config.json"), VIT_CONFIG)
    write_json(os.path.join(folder, "preprocessor_config.json"), VIT_PREPROCESSOR)
    write_safetensors(os.path.join(folder, "model.safetensors"), model.state_dict(), {"format": "pt"})
    write_safetensors(os.path.join(folder, "expected.safetensors"), {"pixel_values": x, "last_hidden_state": hidden}, META,
                      dtype=lambda n: "F16" if n.startswith("pixel_values") else "F32")

    # The transformers.js layout: the same float32 model exported to ONNX.
    onnx_folder = os.path.join(OUT, "vit-onnx")
    os.makedirs(os.path.join(onnx_folder, "onnx"), exist_ok=True)
    write_json(os.path.join(onnx_folder, "config.json"), VIT_CONFIG)
    write_json(os.path.join(onnx_folder, "preprocessor_config.json"), VIT_PREPROCESSOR)
    path = os.path.join(onnx_folder, "onnx", "model.onnx")
    torch.onnx.export(
        model, (x,), path, input_names=["pixel_values"], output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={"pixel_values": {0: "batch_size"}, "last_hidden_state": {0: "batch_size"}, "pooler_output": {0: "batch_size"}},
        opset_version=14, do_constant_folding=True,
    )
    import onnx
    proto = onnx.load(path)
    # Shorter names for nodes and intermediate values (the exporter's are scope paths with
    # source-line traces, a third of the file); inputs, outputs and initializers keep theirs.
    keep = {v.name for v in list(proto.graph.input) + list(proto.graph.output)} | {t.name for t in proto.graph.initializer}
    short = {}
    for i, node in enumerate(proto.graph.node):
        node.doc_string, node.name = "", f"n{i}"
        for k, v in enumerate(node.output):
            if v not in keep:
                short[v] = node.output[k] = f"v{len(short)}"
        for k, v in enumerate(node.input):
            node.input[k] = short.get(v, v)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    print(f"wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path)} bytes)")
    with torch.no_grad():
        ours = model(x)[0]
    print(f"  float32 torch vs float64 reference: max abs {(ours.double() - hidden).abs().max().item():.2e}")


def dinov2_fixtures():
    gen = torch.Generator().manual_seed(12)
    model = Dinov2Model(DINOV2_CONFIG).eval()
    randomize(model, gen, half=True)
    x = pixels(gen, 1, 3, 48, 48)
    x2 = pixels(gen, 1, 3, 24, 40)
    m64 = model.to(F64)
    with torch.no_grad():
        hidden = m64(x.to(F64))
        hidden2 = m64(x2.to(F64))
        pos = m64.embeddings.position_embeddings[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
        plain = {f"pos_bicubic_{h}x{w}": F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False) for h, w in ((6, 6), (3, 5))}
        aa = F.interpolate(pos, size=(6, 6), mode="bicubic", align_corners=False, antialias=True)
    print(f"  antialias vs plain bicubic, 4x4 -> 6x6: max |diff| {(aa - plain['pos_bicubic_6x6']).abs().max().item():.3f}")
    folder = os.path.join(OUT, "dinov2-reg")
    write_json(os.path.join(folder, "config.json"), DINOV2_CONFIG)
    write_json(os.path.join(folder, "preprocessor_config.json"), DINOV2_PREPROCESSOR)
    write_safetensors(os.path.join(folder, "model.safetensors"), model.state_dict(), {"format": "pt"}, dtype="F16")
    write_safetensors(os.path.join(folder, "expected.safetensors"), {
        "pixel_values": x, "last_hidden_state": hidden,
        "pixel_values_24x40": x2, "last_hidden_state_24x40": hidden2,
        **plain,
    }, META, dtype=lambda n: "F16" if n.startswith("pixel_values") else "F32")


if __name__ == "__main__":
    torch.set_num_threads(2)
    vit_fixtures()
    dinov2_fixtures()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"tests/fixtures/vit: {total} bytes")
