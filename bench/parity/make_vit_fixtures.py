#!/usr/bin/python3
"""Encoder-folder fixtures for tests/models/vit.test.ts: two tiny ViTs with random weights, saved
as the folders a user points `--encoder` at, plus what the upstream transformers code computes on them.

Regenerate (needs the upstream sources, see bench/parity/README.md):
  /usr/bin/python3 bench/parity/fetch_upstream.py
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_vit_fixtures.py [--check]
(--check recomputes the committed expected outputs from the committed weights and prints the
differences.) The script runs itself a second time for the DINOv2 part, in another process:
Dinov2WithRegistersModel exists only from transformers 4.48 on, while ViT comes from the 4.35 tree
the other generators use (bench/parity/upstream.py pins both).

Upstream modules:
  - ViT: transformers' ViTModel (models/vit/modeling_vit.py, the v4.35 branch point): pre-norm
    blocks, erf GELU, layernorm_before / layernorm_after, final layernorm and a pooler
    (tanh(dense(CLS))) that patch features never use; LayerNorm eps 1e-12 (the ViTConfig default,
    what facebook/dino-vits16 ships); position embeddings only at config.image_size.
  - DINOv2 with registers: transformers' Dinov2WithRegistersModel
    (models/dinov2_with_registers/modeling_dinov2_with_registers.py, the v4.48 branch point):
    LayerScale, register tokens inserted after CLS after the position embeddings were added,
    interpolate_pos_encoding with F.interpolate(size=(h, w), mode="bicubic", antialias=True) (in
    float32, as upstream casts); and Dinov2Model's interpolate_pos_encoding (same tree: bicubic
    without antialias) for the pos_bicubic_* grids.

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
              and the position grid resized as Dinov2Model (no antialias) does:
              pos_bicubic_6x6 [1, 32, 6, 6], pos_bicubic_3x5 [1, 32, 3, 5]

Weights are drawn in float32 (seeded torch.Generator); expected outputs are computed in float64 on
those values and rounded to float32, so a test's error is its own float32 arithmetic. The ONNX
export runs the float32 module.

Needs /usr/bin/python3 with torch + onnx (Debian python3-torch 1.13, python3-onnx 1.12); tests never
run it.
"""
import json
import math
import os
import sys

import subprocess

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)
import upstream  # noqa: E402  (bench/parity/upstream.py)

DINOV2_PART = "--dinov2-part"
upstream.setup("transformers-4.48" if DINOV2_PART in sys.argv else "default")

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
    return model


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
META = {"generator": "bench/parity/make_vit_fixtures.py", "torch": torch.__version__,
        "compute": "transformers in float64 on float32 weights and inputs, stored float32"}


def vit_model():
    from transformers import ViTConfig, ViTModel
    return ViTModel(ViTConfig(**VIT_CONFIG)).eval()


def vit_expected(model, x):
    with torch.no_grad():
        return model.to(F64)(x.to(F64)).last_hidden_state


def vit_fixtures(check=False):
    folder = os.path.join(OUT, "vit")
    if check:
        _, w = upstream.read_fixture(os.path.join(folder, "model.safetensors"))
        _, t = upstream.read_fixture(os.path.join(folder, "expected.safetensors"))
        model = vit_model()
        model.load_state_dict({k: v.float() for k, v in w.items()})
        d = upstream.Diff("vit/expected.safetensors")
        d.add("last_hidden_state", vit_expected(model, t["pixel_values"]), t["last_hidden_state"])
        print(d)
        return
    gen = torch.Generator().manual_seed(11)
    model = randomize(vit_model(), gen)
    x = pixels(gen, 2, 3, 32, 32)
    hidden = vit_expected(model, x)
    model = model.to(torch.float32)
    write_json(os.path.join(folder, "config.json"), VIT_CONFIG)
    write_json(os.path.join(folder, "preprocessor_config.json"), VIT_PREPROCESSOR)
    write_safetensors(os.path.join(folder, "model.safetensors"), model.state_dict(), {"format": "pt"})
    write_safetensors(os.path.join(folder, "expected.safetensors"), {"pixel_values": x, "last_hidden_state": hidden},
                      dict(META, upstream=upstream.provenance("transformers")),
                      dtype=lambda n: "F16" if n.startswith("pixel_values") else "F32")

    # The transformers.js layout: the same float32 model exported to ONNX.
    onnx_folder = os.path.join(OUT, "vit-onnx")
    os.makedirs(os.path.join(onnx_folder, "onnx"), exist_ok=True)
    write_json(os.path.join(onnx_folder, "config.json"), VIT_CONFIG)
    write_json(os.path.join(onnx_folder, "preprocessor_config.json"), VIT_PREPROCESSOR)
    path = os.path.join(onnx_folder, "onnx", "model.onnx")

    class Outputs(torch.nn.Module):  # the tuple transformers.js exports name: last_hidden_state, pooler_output
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            o = self.m(pixel_values)
            return o.last_hidden_state, o.pooler_output

    torch.onnx.export(
        Outputs(model), (x,), path, input_names=["pixel_values"], output_names=["last_hidden_state", "pooler_output"],
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
        ours = model(x).last_hidden_state
    print(f"  float32 torch vs float64 reference: max abs {(ours.double() - hidden).abs().max().item():.2e}")


def dinov2_models():
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    cfg = {k: v for k, v in DINOV2_CONFIG.items() if k not in ("architectures", "model_type", "torch_dtype")}
    reg = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**cfg)).eval()
    plain = Dinov2Model(Dinov2Config(**{k: v for k, v in cfg.items() if k != "num_register_tokens"})).eval()
    return reg, plain


def dinov2_expected(reg, plain, x, x2):
    """Dinov2WithRegistersModel on both images; Dinov2Model's position-grid interpolation (4x4 -> h x w)."""
    reg = reg.to(F64)
    plain = plain.to(F64)
    with torch.no_grad():
        plain.embeddings.position_embeddings.copy_(reg.embeddings.position_embeddings)
        out = {"last_hidden_state": reg(x.to(F64)).last_hidden_state, "last_hidden_state_24x40": reg(x2.to(F64)).last_hidden_state}
        P, C = DINOV2_CONFIG["patch_size"], DINOV2_CONFIG["hidden_size"]
        for h, w in ((6, 6), (3, 5)):
            dummy = torch.zeros(1, 1 + h * w, C, dtype=F64)
            pos = plain.embeddings.interpolate_pos_encoding(dummy, h * P, w * P)
            out[f"pos_bicubic_{h}x{w}"] = pos[:, 1:].reshape(1, h, w, C).permute(0, 3, 1, 2)
    return out


def dinov2_fixtures(check=False):
    folder = os.path.join(OUT, "dinov2-reg")
    reg, plain = dinov2_models()
    if check:
        _, w = upstream.read_fixture(os.path.join(folder, "model.safetensors"))
        _, t = upstream.read_fixture(os.path.join(folder, "expected.safetensors"))
        reg.load_state_dict({k: v.float() for k, v in w.items()})
        got = dinov2_expected(reg, plain, t["pixel_values"], t["pixel_values_24x40"])
        d = upstream.Diff("dinov2-reg/expected.safetensors")
        for k, v in got.items():
            d.add(k, v, t[k])
        print(d)
        return
    gen = torch.Generator().manual_seed(12)
    randomize(reg, gen, half=True)
    x = pixels(gen, 1, 3, 48, 48)
    x2 = pixels(gen, 1, 3, 24, 40)
    expected = dinov2_expected(reg, plain, x, x2)
    write_json(os.path.join(folder, "config.json"), DINOV2_CONFIG)
    write_json(os.path.join(folder, "preprocessor_config.json"), DINOV2_PREPROCESSOR)
    write_safetensors(os.path.join(folder, "model.safetensors"), reg.state_dict(), {"format": "pt"}, dtype="F16")
    write_safetensors(os.path.join(folder, "expected.safetensors"), {
        "pixel_values": x, "last_hidden_state": expected["last_hidden_state"],
        "pixel_values_24x40": x2, "last_hidden_state_24x40": expected["last_hidden_state_24x40"],
        "pos_bicubic_6x6": expected["pos_bicubic_6x6"], "pos_bicubic_3x5": expected["pos_bicubic_3x5"],
    }, dict(META, upstream=upstream.provenance("transformers-4.48")), dtype=lambda n: "F16" if n.startswith("pixel_values") else "F32")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    check = "--check" in sys.argv[1:]
    if DINOV2_PART in sys.argv:
        dinov2_fixtures(check)
    else:
        vit_fixtures(check)
        subprocess.run([sys.executable, os.path.abspath(__file__), DINOV2_PART] + (["--check"] if check else []), check=True)
        if not check:
            total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
            print(f"tests/fixtures/vit: {total} bytes")
