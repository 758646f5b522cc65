#!/usr/bin/python3
"""Golden fixtures for lib/models/unet.ts and lib/models/vae.ts (tests/models/{unet,vae}.test.ts),
computed by diffusers itself (huggingface/diffusers v0.31.0, pinned in bench/parity/upstream.py).

Regenerate (needs the upstream sources, see bench/parity/README.md):
  /usr/bin/python3 bench/parity/fetch_upstream.py
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_unet_fixtures.py
Check the committed fixtures against diffusers without rewriting them:
  OMP_NUM_THREADS=2 /usr/bin/python3 bench/parity/make_unet_fixtures.py --check

The modules are diffusers' own (models/unets/unet_2d_blocks.py, unet_2d_condition.py,
autoencoders/autoencoder_kl.py); IP-Adapter's decoupled cross-attention is diffusers'
IPAdapterAttnProcessor (the processor diffusers uses on torch < 2.0; IPAdapterAttnProcessor2_0 is
the same maths through F.scaled_dot_product_attention) in every attn2, with 4 image tokens.

Writes tests/fixtures/diffusers/:
  unet_down_block.safetensors   CrossAttnDownBlock2D: 1 ResnetBlock2D + 1 Transformer2DModel
                                (1x1-conv proj_in/out, SD 1.x), 8 -> 16 channels, 8x8, batch 2,
                                heads 2, cross dim 12 (text 5 tokens), IP-Adapter tokens 4 with
                                scale 0.6, GroupNorm 4 groups, Downsample2D. Outputs: "out" (the
                                downsampled state) and "skip.0" (the state handed to the up path);
                                loss = sum(out * R) + sum(skip.0 * R_skip)
  unet_up_block.safetensors     CrossAttnUpBlock2D: 2 resnets over [hidden ; skip] (prev 16, skips
                                16 and 8 channels, out 16), Transformer2DModel with Linear proj
                                (SD 2 / SDXL) and 2 BasicTransformerBlocks per layer, no IP,
                                Upsample2D 4x4 -> 8x8; loss = sum(out * R)
  vae_up_block.safetensors      UpDecoderBlock2D: 2 resnets 16 -> 8 (no time embedding, eps 1e-6),
                                Upsample2D 4x4 -> 8x8; loss = sum(out * R)
  vae_mid_block.safetensors     the VAE's UNetMidBlock2D: resnet, Attention (group_norm, one head,
                                biases, residual, softmax upcast to float32), resnet; 16 channels
                                4x4; loss = sum(out * R)
  unet_tiny.safetensors         whole UNet2DConditionModel, SD-style config (metadata "config": the
                                model's full diffusers config plus ip_scale), block_out_channels
                                [8, 16], layers_per_block 1, cross dim 12, attention_head_dim 2,
                                norm_num_groups 4, sample 8x8, batch 2, timesteps [981, 37]: "out"
                                with IP tokens (scale 0.6), "out_no_ip" without IP-Adapter (default
                                processors), and grad.<ip weight> of sum(out * R) for every
                                to_k_ip / to_v_ip (the weights PatchDPO trains). Metadata
                                "ip_adapter_keys": diffusers' processor weight name -> key of the
                                IP-Adapter release file ("ip_adapter.<n>.to_k_ip.weight"), checked
                                by loading a release-layout state dict through diffusers' own
                                UNet._load_ip_adapter_weights, which must give the same output.
  unet_tiny_sdxl.safetensors    the same for an SDXL-style config: addition_embed_type text_time
                                (text_embeds 6 + 6 time ids x 4), use_linear_projection,
                                transformer_layers_per_block [1, 2], DownBlock2D first; "out" without
                                IP-Adapter, "out_ip" with IP tokens (scale 0.6); forward only
  vae_tiny.safetensors          whole AutoencoderKL (block_out_channels [8, 16], layers_per_block 1,
                                norm_num_groups 4): "mean" = encode(image).latent_dist.mean for a
                                16x16 image, "decoded" = decode(latents).sample for an 8x8 latent

Conventions as in make_train_fixtures.py: weights drawn in float32 (seeded) in the module's
parameter order (upstream.draw_params), the module run in float64 on those values
(functional_call, so gradients reach every weight), results stored float32; "R" random loss
weights; "grad.<name>" gradients; metadata "inputs" lists the differentiated leaves. diffusers
itself computes two things in float32 whatever the model dtype: the sinusoidal timestep embedding
(get_timestep_embedding) and the VAE attention's softmax (upcast_softmax).

Needs /usr/bin/python3 with torch (Debian python3-torch 1.13) and the extracted upstream trees.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import upstream  # noqa: E402
from make_train_fixtures import Block, randn, write_safetensors  # noqa: E402  (also runs upstream.setup)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "diffusers")
F64 = torch.float64
GEN = "bench/parity/make_unet_fixtures.py"
IP_SCALE = 0.6
IP_TOKENS = 4


def set_ip_processors(model, scale=IP_SCALE, num_tokens=IP_TOKENS):
    """diffusers' IPAdapterAttnProcessor in every cross-attention (attn2), sized from the module."""
    from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor
    for name, m in model.named_modules():
        if isinstance(m, Attention) and name.split(".")[-1] == "attn2":
            m.set_processor(IPAdapterAttnProcessor(hidden_size=m.to_q.out_features, cross_attention_dim=m.to_k.in_features,
                                                   num_tokens=(num_tokens,), scale=scale))
    return model


# ------------------------------------------------------------------------------ blocks

def _down_block():
    from diffusers.models.unets.unet_2d_blocks import CrossAttnDownBlock2D
    blk = CrossAttnDownBlock2D(in_channels=8, out_channels=16, temb_channels=32, num_layers=1, transformer_layers_per_block=1,
                               resnet_eps=1e-5, resnet_groups=4, num_attention_heads=2, cross_attention_dim=12,
                               add_downsample=True, downsample_padding=1, use_linear_projection=False)
    return set_ip_processors(blk).eval().to(F64)


DOWN_INPUTS = ("x", "temb", "context", "ip_tokens")


def down_block_draw(gen):
    w = upstream.draw_params(_down_block(), gen)
    inputs = {"x": randn(gen, 2, 8, 8, 8), "temb": randn(gen, 2, 32), "context": randn(gen, 2, 5, 12), "ip_tokens": randn(gen, 2, IP_TOKENS, 12)}
    return inputs, w, {"R": randn(gen, 2, 16, 4, 4), "R_skip": randn(gen, 2, 16, 8, 8)}


def down_block_compute(leaves, consts):
    w = {k: v for k, v in leaves.items() if k not in DOWN_INPUTS}
    h, states = upstream.call(_down_block(), w, leaves["x"], leaves["temb"],
                              encoder_hidden_states=(leaves["context"], [leaves["ip_tokens"]]))
    assert len(states) == 2 and states[1] is h
    return {"out": h, "skip.0": states[0]}


def _up_block():
    from diffusers.models.unets.unet_2d_blocks import CrossAttnUpBlock2D
    return CrossAttnUpBlock2D(in_channels=8, out_channels=16, prev_output_channel=16, temb_channels=32, num_layers=2,
                              transformer_layers_per_block=2, resnet_eps=1e-5, resnet_groups=4, num_attention_heads=2,
                              cross_attention_dim=12, add_upsample=True, use_linear_projection=True).eval().to(F64)


UP_INPUTS = ("x", "skip0", "skip1", "temb", "context")


def up_block_draw(gen):
    w = upstream.draw_params(_up_block(), gen)
    # skip0 is produced first by the down path and taken by the last resnet; skip1 last, taken first.
    inputs = {"x": randn(gen, 2, 16, 4, 4), "skip0": randn(gen, 2, 8, 4, 4), "skip1": randn(gen, 2, 16, 4, 4),
              "temb": randn(gen, 2, 32), "context": randn(gen, 2, 5, 12)}
    return inputs, w, {"R": randn(gen, 2, 16, 8, 8)}


def up_block_compute(leaves, consts):
    w = {k: v for k, v in leaves.items() if k not in UP_INPUTS}
    out = upstream.call(_up_block(), w, leaves["x"], (leaves["skip0"], leaves["skip1"]), leaves["temb"],
                        encoder_hidden_states=leaves["context"])
    return {"out": out}


def _vae_up_block():
    from diffusers.models.unets.unet_2d_blocks import UpDecoderBlock2D
    return UpDecoderBlock2D(in_channels=16, out_channels=8, num_layers=2, resnet_eps=1e-6, resnet_groups=4,
                            add_upsample=True, temb_channels=None).eval().to(F64)


def vae_up_block_draw(gen):
    w = upstream.draw_params(_vae_up_block(), gen)
    return {"x": randn(gen, 2, 16, 4, 4)}, w, {"R": randn(gen, 2, 8, 8, 8)}


def vae_up_block_compute(leaves, consts):
    return {"out": upstream.call(_vae_up_block(), {k: v for k, v in leaves.items() if k != "x"}, leaves["x"])}


def _vae_mid_block():
    # As diffusers' Encoder / Decoder build it (autoencoders/vae.py).
    from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D
    return UNetMidBlock2D(in_channels=16, resnet_eps=1e-6, resnet_act_fn="silu", output_scale_factor=1,
                          resnet_time_scale_shift="default", attention_head_dim=16, resnet_groups=4, temb_channels=None,
                          add_attention=True).eval().to(F64)


def vae_mid_block_draw(gen):
    w = upstream.draw_params(_vae_mid_block(), gen)
    return {"x": randn(gen, 2, 16, 4, 4)}, w, {"R": randn(gen, 2, 16, 4, 4)}


def vae_mid_block_compute(leaves, consts):
    return {"out": upstream.call(_vae_mid_block(), {k: v for k, v in leaves.items() if k != "x"}, leaves["x"])}


BLOCKS = [
    Block("unet_down_block.safetensors", 11, down_block_draw, down_block_compute,
          "diffusers CrossAttnDownBlock2D 8->16, 1 resnet + 1 transformer (conv proj), 8x8, heads 2, cross 12, "
          "IPAdapterAttnProcessor (4 tokens, scale 0.6), groups 4, downsample", ["diffusers"],
          pairs=[("out", "R"), ("skip.0", "R_skip")], out=OUT, generator=GEN,
          config={"heads": 2, "ip_scale": IP_SCALE, "groups": 4, "eps": 1e-5, "temb": 32}),
    Block("unet_up_block.safetensors", 12, up_block_draw, up_block_compute,
          "diffusers CrossAttnUpBlock2D prev 16, skips 16 then 8, out 16, 2 resnets, linear proj, 2 transformer blocks per layer, "
          "heads 2, upsample 4->8", ["diffusers"], out=OUT, generator=GEN,
          config={"heads": 2, "groups": 4, "eps": 1e-5, "temb": 32}),
    Block("vae_up_block.safetensors", 13, vae_up_block_draw, vae_up_block_compute,
          "diffusers UpDecoderBlock2D 16->8, 2 resnets (eps 1e-6, groups 4, no temb), Upsample2D 4->8", ["diffusers"],
          out=OUT, generator=GEN, config={"groups": 4}),
    Block("vae_mid_block.safetensors", 14, vae_mid_block_draw, vae_mid_block_compute,
          "diffusers UNetMidBlock2D as the VAE builds it: resnet, Attention(group_norm, 1 head, biases, residual), resnet; "
          "16 ch 4x4, groups 4", ["diffusers"], out=OUT, generator=GEN, config={"groups": 4}),
]


# ------------------------------------------------------------------------------ whole models

TINY_SD = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu", "attention_head_dim": 2, "block_out_channels": [8, 16], "center_input_sample": False,
    "cross_attention_dim": 12, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 1, "mid_block_scale_factor": 1,
    "norm_eps": 1e-05, "norm_num_groups": 4, "out_channels": 4, "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}

TINY_SDXL = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_time_embed_dim": 4, "attention_head_dim": [1, 2],
    "block_out_channels": [8, 16], "cross_attention_dim": 12, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 1, "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05, "norm_num_groups": 4, "out_channels": 4, "projection_class_embeddings_input_dim": 30, "sample_size": 8,
    "transformer_layers_per_block": [1, 2], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": True,
}

TINY_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 1, "norm_num_groups": 4, "out_channels": 3, "sample_size": 16, "scaling_factor": 0.5,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
}


def unet_of(cfg, ip):
    from diffusers import UNet2DConditionModel
    m = UNet2DConditionModel.from_config(cfg).eval().to(F64)
    return set_ip_processors(m) if ip else m


def full_config(model, **extra):
    """The model's config as diffusers writes it to config.json (every option, defaults included)."""
    cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_") or k == "_class_name"}
    cfg = json.loads(json.dumps(cfg, default=list))
    cfg["_class_name"] = type(model).__name__
    cfg.update(extra)
    return cfg


def is_ip(name):
    return ".processor.to_" in name


def release_keys(unet):
    """diffusers' processor IP weight name -> IP-Adapter release key, in attn_processors order."""
    names = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    keys = {}
    for k, n in enumerate(names):
        base = n[: -len("processor")]
        keys[f"{base}processor.to_k_ip.0.weight"] = f"ip_adapter.{2 * k + 1}.to_k_ip.weight"
        keys[f"{base}processor.to_v_ip.0.weight"] = f"ip_adapter.{2 * k + 1}.to_v_ip.weight"
    return keys


def through_release_loader(cfg, weights, keys, sample, t, context, ip_tokens, extra):
    """The UNet with its IP weights loaded by diffusers' own loader from a release-layout state dict
    (UNet2DConditionModel._load_ip_adapter_weights, what pipeline.load_ip_adapter calls)."""
    unet = unet_of(cfg, ip=False)
    unet.load_state_dict({k: v.detach() for k, v in weights.items() if not is_ip(k)})
    D, E = cfg["cross_attention_dim"], 8
    release = {
        "image_proj": {"proj.weight": torch.zeros(IP_TOKENS * D, E, dtype=F64), "proj.bias": torch.zeros(IP_TOKENS * D, dtype=F64),
                       "norm.weight": torch.ones(D, dtype=F64), "norm.bias": torch.zeros(D, dtype=F64)},
        "ip_adapter": {keys[k][len("ip_adapter."):]: v.detach() for k, v in weights.items() if is_ip(k)},
    }
    unet._load_ip_adapter_weights([release])
    for proc in unet.attn_processors.values():  # what IPAdapterMixin.set_ip_adapter_scale does
        if hasattr(proc, "scale"):
            proc.scale = [IP_SCALE]
    # The image projection turns image_embeds into tokens; the fixture feeds the tokens themselves.
    unet.encoder_hid_proj = None
    with torch.no_grad():
        return unet(sample, t, encoder_hidden_states=(context, [ip_tokens]), **extra).sample


def unet_tiny(check=False):
    """SD-style UNet: out (IP), out_no_ip, gradients of the IP weights."""
    path = os.path.join(OUT, "unet_tiny.safetensors")
    model = unet_of(TINY_SD, ip=True)
    if check:
        meta, t = upstream.read_fixture(path)
        ip_names = json.loads(meta["inputs"])
        w = {k: t[k] for k in t if k in dict(model.named_parameters())}
        sample, ts, context, ip_tokens, R = (t[k] for k in ("sample", "timestep", "context", "ip_tokens", "R"))
    else:
        gen = torch.Generator().manual_seed(15)
        w = upstream.draw_params(model, gen)
        ip_names = [k for k in w if is_ip(k)]
        sample, context, ip_tokens = randn(gen, 2, 4, 8, 8), randn(gen, 2, 5, 12), randn(gen, 2, IP_TOKENS, 12)
        R = randn(gen, 2, 4, 8, 8)
        ts = torch.tensor([981.0, 37.0])
    w = {k: v.to(F64).requires_grad_(k in ip_names) for k, v in w.items()}
    x64 = lambda v: v.to(F64)
    out = upstream.call(model, w, x64(sample), x64(ts), encoder_hidden_states=(x64(context), [x64(ip_tokens)])).sample
    loss = (out * x64(R)).sum()
    grads = torch.autograd.grad(loss, [w[k] for k in ip_names])
    with torch.no_grad():
        out_no_ip = upstream.call(unet_of(TINY_SD, ip=False), {k: v for k, v in w.items() if not is_ip(k)},
                                  x64(sample), x64(ts), encoder_hidden_states=x64(context)).sample
    keys = release_keys(model)
    via_loader = through_release_loader(TINY_SD, w, keys, x64(sample), x64(ts), x64(context), x64(ip_tokens), {})
    gap = (via_loader - out.detach()).abs().max().item()
    assert gap < 1e-12, f"IP weights through diffusers' release loader differ by {gap}: the key map is wrong"
    if check:
        d = upstream.Diff("unet_tiny.safetensors")
        d.add("out", out, t["out"])
        d.add("out_no_ip", out_no_ip, t["out_no_ip"])
        for n, g in zip(ip_names, grads):
            d.add(f"grad.{n}", g, t[f"grad.{n}"])
        if "ip_adapter_keys" in meta:
            assert json.loads(meta["ip_adapter_keys"]) == keys
        return d
    tensors = {k: w[k] for k in ip_names}
    tensors.update({k: v for k, v in w.items() if k not in ip_names})
    tensors.update({"sample": sample, "timestep": ts, "context": context, "ip_tokens": ip_tokens, "R": R,
                    "out": out, "out_no_ip": out_no_ip, "loss": loss.detach().reshape(1)})
    tensors.update({f"grad.{n}": g for n, g in zip(ip_names, grads)})
    meta = {
        "generator": GEN, "torch": torch.__version__, "upstream": upstream.provenance("diffusers"),
        "compute": "diffusers UNet2DConditionModel in float64 on float32 weights and inputs, stored float32",
        "description": "UNet2DConditionModel tiny SD config (metadata config), IPAdapterAttnProcessor scale 0.6 in every attn2; "
                       "out, out_no_ip (default processors), grad of sum(out*R) w.r.t. the IP weights",
        "inputs": json.dumps(ip_names),
        "config": json.dumps(full_config(model, ip_scale=IP_SCALE)),
        "ip_adapter_keys": json.dumps(keys),
    }
    write_safetensors(path, tensors, meta)


def unet_tiny_sdxl(check=False):
    """SDXL-style UNet: out (no IP-Adapter) and out_ip (IP tokens, scale 0.6), forward only."""
    path = os.path.join(OUT, "unet_tiny_sdxl.safetensors")
    model = unet_of(TINY_SDXL, ip=True)
    names = ("sample", "timestep", "context", "text_embeds", "time_ids", "ip_tokens")
    if check:
        meta, t = upstream.read_fixture(path)
        own = dict(model.named_parameters())
        w = {k: t[k] for k in t if k in own}
        if not any(is_ip(k) for k in w):  # a fixture from before out_ip
            w.update({k: torch.zeros(v.shape, dtype=F64) for k, v in own.items() if is_ip(k)})
        x = {k: t[k] for k in names if k in t}
        x.setdefault("ip_tokens", torch.zeros(2, IP_TOKENS, 12, dtype=F64))
    else:
        gen = torch.Generator().manual_seed(16)
        w = upstream.draw_params(model, gen)
        x = {"sample": randn(gen, 2, 4, 8, 8), "timestep": torch.tensor([500.0, 3.0]), "context": randn(gen, 2, 5, 12),
             "text_embeds": randn(gen, 2, 6),
             "time_ids": torch.tensor([[64.0, 48.0, 0.0, 8.0, 64.0, 64.0], [32.0, 32.0, 4.0, 0.0, 64.0, 64.0]]),
             "ip_tokens": randn(gen, 2, IP_TOKENS, 12)}
    w = {k: v.to(F64) for k, v in w.items()}
    x64 = {k: v.to(F64) for k, v in x.items()}
    cond = {"added_cond_kwargs": {"text_embeds": x64["text_embeds"], "time_ids": x64["time_ids"]}}
    with torch.no_grad():
        out = upstream.call(unet_of(TINY_SDXL, ip=False), {k: v for k, v in w.items() if not is_ip(k)},
                            x64["sample"], x64["timestep"], encoder_hidden_states=x64["context"], **cond).sample
        out_ip = upstream.call(model, w, x64["sample"], x64["timestep"],
                               encoder_hidden_states=(x64["context"], [x64["ip_tokens"]]), **cond).sample
        keys = release_keys(model)
        via_loader = through_release_loader(TINY_SDXL, w, keys, x64["sample"], x64["timestep"], x64["context"], x64["ip_tokens"], cond)
    gap = (via_loader - out_ip).abs().max().item()
    assert gap < 1e-12, f"IP weights through diffusers' release loader differ by {gap}"
    if check:
        d = upstream.Diff("unet_tiny_sdxl.safetensors")
        d.add("out", out, t["out"])
        if "out_ip" in t:
            d.add("out_ip", out_ip, t["out_ip"])
        return d
    tensors = dict(w)
    tensors.update(x)
    tensors.update({"out": out, "out_ip": out_ip})
    meta = {
        "generator": GEN, "torch": torch.__version__, "upstream": upstream.provenance("diffusers"),
        "compute": "diffusers UNet2DConditionModel in float64 on float32 weights and inputs, stored float32",
        "description": "UNet2DConditionModel tiny SDXL config (text_time, linear projection, transformer layers [1, 2]); "
                       "out without IP-Adapter, out_ip with IPAdapterAttnProcessor (4 tokens, scale 0.6) in every attn2; forward only",
        "inputs": "[]",
        "config": json.dumps(full_config(model, ip_scale=IP_SCALE)),
        "ip_adapter_keys": json.dumps(keys),
    }
    write_safetensors(path, tensors, meta)


def vae_tiny(check=False):
    from diffusers import AutoencoderKL
    path = os.path.join(OUT, "vae_tiny.safetensors")
    model = AutoencoderKL.from_config(TINY_VAE).eval().to(F64)
    if check:
        meta, t = upstream.read_fixture(path)
        w = {k: t[k] for k in dict(model.named_parameters())}
        image, latents = t["image"], t["latents"]
    else:
        gen = torch.Generator().manual_seed(17)
        w = upstream.draw_params(model, gen)
        image, latents = randn(gen, 2, 3, 16, 16), randn(gen, 2, 4, 8, 8)
    w64 = {k: v.to(F64) for k, v in w.items()}
    with torch.no_grad():
        with upstream.bound(model, w64):
            mean = model.encode(image.to(F64)).latent_dist.mean
            decoded = model.decode(latents.to(F64)).sample
    if check:
        d = upstream.Diff("vae_tiny.safetensors")
        d.add("mean", mean, t["mean"])
        d.add("decoded", decoded, t["decoded"])
        return d
    tensors = dict(w)
    tensors.update({"image": image, "latents": latents, "mean": mean, "decoded": decoded})
    meta = {
        "generator": GEN, "torch": torch.__version__, "upstream": upstream.provenance("diffusers"),
        "compute": "diffusers AutoencoderKL in float64 on float32 weights and inputs, stored float32",
        "description": "AutoencoderKL tiny: mean = encode(image).latent_dist.mean, decoded = decode(latents).sample",
        "inputs": "[]",
        "config": json.dumps(full_config(model)),
    }
    write_safetensors(path, tensors, meta)


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    os.makedirs(OUT, exist_ok=True)
    check = "--check" in sys.argv[1:]
    for b in BLOCKS:
        print(b.check()) if check else b.generate()
    for f in (unet_tiny, unet_tiny_sdxl, vae_tiny):
        r = f(check=check)
        if check:
            print(r)


if __name__ == "__main__":
    main()
