#!/usr/bin/python3
"""Golden fixtures for lib/models/unet.ts and lib/models/vae.ts (tests/models/{unet,vae}.test.ts).

diffusers is not installed here; this is a PyTorch transcription of the diffusers modules the
TypeScript rebuilds (UNet2DConditionModel with IP-Adapter's IPAdapterAttnProcessor2_0 in every
attn2, AutoencoderKL), written from diffusers' source and weighted by diffusers' key names, so a
fixture is what diffusers would compute for those weights. The block structure (channels, skips,
heads from `attention_head_dim`) is derived here from the config independently of unet.ts.

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
                                biases, residual), resnet; 16 channels 4x4; loss = sum(out * R)
  unet_tiny.safetensors         whole UNet2DConditionModel, SD-style config (metadata "config"),
                                block_out_channels [8, 16], layers_per_block 1, cross dim 12,
                                attention_head_dim 2, norm_num_groups 4, sample 8x8, batch 2,
                                timesteps [981, 37]: "out" with IP tokens (scale 0.6), "out_no_ip"
                                without, and grad.<ip weight> of sum(out * R) for every to_k_ip /
                                to_v_ip (the weights PatchDPO trains)
  unet_tiny_sdxl.safetensors    the same for an SDXL-style config: addition_embed_type text_time
                                (text_embeds 6 + 6 time ids x 4), use_linear_projection,
                                transformer_layers_per_block [1, 2], DownBlock2D first; "out" only
  vae_tiny.safetensors          whole AutoencoderKL (block_out_channels [8, 16], layers_per_block 1,
                                norm_num_groups 4): "mean" = encode(image).latent_dist.mean for a
                                16x16 image, "decoded" = decode(latents) for an 8x8 latent

Conventions as in make_train_fixtures.py: weights and inputs drawn in float32 (seeded), evaluated in
float64, stored float32; "R" random loss weights; "grad.<name>" gradients; metadata "inputs" lists
the differentiated leaves (inputs first, then weights in the order the modules created them).

Usage: OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_unet_fixtures.py
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_train_fixtures import Draw, write_safetensors  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "diffusers")
F64 = torch.float64


class Weights:
    """Draws each weight the first time a module asks for it, under its diffusers key name."""

    def __init__(self, draw):
        self.d = draw
        self.w = {}

    def __call__(self, name, *shape, kind="matrix"):
        if name not in self.w:
            if kind == "norm":
                self.w[name] = self.d.randn(*shape, scale=0.1, shift=1.0)
            elif kind == "bias":
                self.w[name] = self.d.randn(*shape, scale=0.1)
            else:
                fan_in = math.prod(shape[1:])
                self.w[name] = self.d.randn(*shape, scale=1 / math.sqrt(fan_in))
        return self.w[name]

    def linear(self, name, x, out, bias=True):
        wt = self(f"{name}.weight", out, x.shape[-1])
        return F.linear(x, wt, self(f"{name}.bias", out, kind="bias") if bias else None)

    def conv(self, name, x, out, k, stride=1, padding=None):
        wt = self(f"{name}.weight", out, x.shape[1], k, k)
        return F.conv2d(x, wt, self(f"{name}.bias", out, kind="bias"), stride=stride, padding=(k - 1) // 2 if padding is None else padding)

    def group_norm(self, name, x, groups, eps):
        C = x.shape[1]
        return F.group_norm(x, groups, self(f"{name}.weight", C, kind="norm"), self(f"{name}.bias", C, kind="bias"), eps)

    def layer_norm(self, name, x, eps=1e-5):
        C = x.shape[-1]
        return F.layer_norm(x, (C,), self(f"{name}.weight", C, kind="norm"), self(f"{name}.bias", C, kind="bias"), eps)


# ------------------------------------------------------------------------------ diffusers modules

def resnet_block(w, p, x, temb, cout, groups, eps, out_scale=1.0):
    """ResnetBlock2D (time_embedding_norm default, pre-norm, eval)."""
    h = w.conv(f"{p}.conv1", F.silu(w.group_norm(f"{p}.norm1", x, groups, eps)), cout, 3)
    if temb is not None:
        h = h + w.linear(f"{p}.time_emb_proj", F.silu(temb), cout)[:, :, None, None]
    h = w.conv(f"{p}.conv2", F.silu(w.group_norm(f"{p}.norm2", h, groups, eps)), cout, 3)
    skip = x if x.shape[1] == cout else w.conv(f"{p}.conv_shortcut", x, cout, 1)
    return (skip + h) / out_scale


def sdpa(q, k, v):
    """F.scaled_dot_product_attention (no mask, default scale) on [B, H, L, d]."""
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def attention(w, p, x, heads, context=None, ip=None):
    """Attention with AttnProcessor2_0, or IPAdapterAttnProcessor2_0 when ip = (tokens, scale)."""
    B, L, D = x.shape
    d = D // heads
    split = lambda t: t.reshape(B, -1, heads, d).transpose(1, 2)
    merge = lambda t: t.transpose(1, 2).reshape(B, -1, heads * d)
    ctx = x if context is None else context
    q = split(w.linear(f"{p}.to_q", x, D, bias=False))
    h = merge(sdpa(q, split(w.linear(f"{p}.to_k", ctx, D, bias=False)), split(w.linear(f"{p}.to_v", ctx, D, bias=False))))
    if ip is not None:
        tokens, scale = ip
        ik = split(w.linear(f"{p}.processor.to_k_ip.0", tokens, D, bias=False))
        iv = split(w.linear(f"{p}.processor.to_v_ip.0", tokens, D, bias=False))
        h = h + scale * merge(sdpa(q, ik, iv))
    return w.linear(f"{p}.to_out.0", h, D)


def basic_transformer_block(w, p, x, heads, context, ip):
    D = x.shape[-1]
    x = attention(w, f"{p}.attn1", w.layer_norm(f"{p}.norm1", x), heads) + x
    x = attention(w, f"{p}.attn2", w.layer_norm(f"{p}.norm2", x), heads, context, ip) + x
    h, gate = w.linear(f"{p}.ff.net.0.proj", w.layer_norm(f"{p}.norm3", x), 8 * D).chunk(2, dim=-1)
    return w.linear(f"{p}.ff.net.2", h * F.gelu(gate), D) + x


def transformer_2d(w, p, x, heads, layers, context, ip, linear, groups):
    """Transformer2DModel on continuous inputs (GroupNorm eps 1e-6)."""
    B, C, H, W = x.shape
    h = w.group_norm(f"{p}.norm", x, groups, 1e-6)
    if linear:
        h = w.linear(f"{p}.proj_in", h.permute(0, 2, 3, 1).reshape(B, H * W, C), C)
    else:
        h = w.conv(f"{p}.proj_in", h, C, 1).permute(0, 2, 3, 1).reshape(B, H * W, C)
    for i in range(layers):
        h = basic_transformer_block(w, f"{p}.transformer_blocks.{i}", h, heads, context, ip)
    if linear:
        h = w.linear(f"{p}.proj_out", h, C).reshape(B, H, W, C).permute(0, 3, 1, 2)
    else:
        h = w.conv(f"{p}.proj_out", h.reshape(B, H, W, C).permute(0, 3, 1, 2), C, 1)
    return h + x


def downsample(w, p, x, padding):
    if padding == 0:
        x = F.pad(x, (0, 1, 0, 1))
    return w.conv(f"{p}.conv", x, x.shape[1], 3, stride=2, padding=padding)


def upsample(w, p, x):
    return w.conv(f"{p}.conv", F.interpolate(x, scale_factor=2.0, mode="nearest"), x.shape[1], 3)


def timesteps(t, dim, flip, shift):
    """get_timestep_embedding, in float64."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=F64) / (half - shift)
    emb = t.to(F64)[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


def cross_attn_down_block(w, p, x, temb, cout, layers, tl, heads, context, ip, linear, add_down, groups, eps, attn=True):
    states = []
    for i in range(layers):
        x = resnet_block(w, f"{p}.resnets.{i}", x, temb, cout, groups, eps)
        if attn:
            x = transformer_2d(w, f"{p}.attentions.{i}", x, heads, tl[i], context, ip, linear, groups)
        states.append(x)
    if add_down:
        x = downsample(w, f"{p}.downsamplers.0", x, 1)
        states.append(x)
    return x, states


def cross_attn_up_block(w, p, x, skips, temb, cout, layers, tl, heads, context, ip, linear, add_up, groups, eps, attn=True):
    skips = list(skips)
    for i in range(layers):
        x = torch.cat([x, skips.pop()], dim=1)
        x = resnet_block(w, f"{p}.resnets.{i}", x, temb, cout, groups, eps)
        if attn:
            x = transformer_2d(w, f"{p}.attentions.{i}", x, heads, tl[i], context, ip, linear, groups)
    if add_up:
        x = upsample(w, f"{p}.upsamplers.0", x)
    return x


def unet(w, cfg, sample, t, context, ip=None, text_embeds=None, time_ids=None):
    """UNet2DConditionModel.forward for the config subset the fixtures use."""
    C = cfg["block_out_channels"]
    n = len(C)
    per = lambda v: [v] * n if isinstance(v, int) else list(v)
    heads = per(cfg.get("num_attention_heads") or cfg["attention_head_dim"])  # diffusers' naming issue
    lpb = per(cfg["layers_per_block"])
    tl = per(cfg.get("transformer_layers_per_block", 1))
    groups, eps = cfg["norm_num_groups"], cfg.get("norm_eps", 1e-5)
    linear = cfg.get("use_linear_projection", False)
    T = 4 * C[0]
    emb = timesteps(t, C[0], cfg.get("flip_sin_to_cos", True), cfg.get("freq_shift", 0))
    emb = w.linear("time_embedding.linear_2", F.silu(w.linear("time_embedding.linear_1", emb, T)), T)
    if cfg.get("addition_embed_type") == "text_time":
        te = timesteps(time_ids.flatten(), cfg["addition_time_embed_dim"], cfg.get("flip_sin_to_cos", True), cfg.get("freq_shift", 0))
        add = torch.cat([text_embeds, te.reshape(text_embeds.shape[0], -1)], dim=-1)
        emb = emb + w.linear("add_embedding.linear_2", F.silu(w.linear("add_embedding.linear_1", add, T)), T)
    h = w.conv("conv_in", sample, C[0], 3)
    skips = [h]
    for i, kind in enumerate(cfg["down_block_types"]):
        h, states = cross_attn_down_block(w, f"down_blocks.{i}", h, emb, C[i], lpb[i], [tl[i]] * lpb[i], heads[i], context, ip,
                                          linear, i < n - 1, groups, eps, attn=(kind == "CrossAttnDownBlock2D"))
        skips += states
    h = resnet_block(w, "mid_block.resnets.0", h, emb, C[-1], groups, eps)
    h = transformer_2d(w, "mid_block.attentions.0", h, heads[-1], tl[-1], context, ip, linear, groups)
    h = resnet_block(w, "mid_block.resnets.1", h, emb, C[-1], groups, eps)
    rc, rh, rl, rt = C[::-1], heads[::-1], lpb[::-1], tl[::-1]
    for i, kind in enumerate(cfg["up_block_types"]):
        k = rl[i] + 1
        h = cross_attn_up_block(w, f"up_blocks.{i}", h, skips[-k:], emb, rc[i], k, [rt[i]] * k, rh[i], context, ip,
                                linear, i < n - 1, groups, eps, attn=(kind == "CrossAttnUpBlock2D"))
        del skips[-k:]
    h = F.silu(w.group_norm("conv_norm_out", h, groups, eps))
    return w.conv("conv_out", h, cfg["out_channels"], 3)


def vae_attention(w, p, x, groups):
    B, C, H, W = x.shape
    h = w.group_norm(f"{p}.group_norm", x.reshape(B, C, H * W), groups, 1e-6).transpose(1, 2)
    q, k, v = (w.linear(f"{p}.{n}", h, C) for n in ("to_q", "to_k", "to_v"))
    o = w.linear(f"{p}.to_out.0", sdpa(q[:, None], k[:, None], v[:, None])[:, 0], C)
    return o.transpose(1, 2).reshape(B, C, H, W) + x


def vae_mid_block(w, p, x, groups):
    C = x.shape[1]
    x = resnet_block(w, f"{p}.resnets.0", x, None, C, groups, 1e-6)
    x = vae_attention(w, f"{p}.attentions.0", x, groups)
    return resnet_block(w, f"{p}.resnets.1", x, None, C, groups, 1e-6)


def up_decoder_block(w, p, x, cout, layers, add_up, groups):
    for i in range(layers):
        x = resnet_block(w, f"{p}.resnets.{i}", x, None, cout, groups, 1e-6)
    return upsample(w, f"{p}.upsamplers.0", x) if add_up else x


def vae_encode(w, cfg, x):
    C, L, g, lat = cfg["block_out_channels"], cfg["layers_per_block"], cfg["norm_num_groups"], cfg["latent_channels"]
    h = w.conv("encoder.conv_in", x, C[0], 3)
    for i, c in enumerate(C):
        for j in range(L):
            h = resnet_block(w, f"encoder.down_blocks.{i}.resnets.{j}", h, None, c, g, 1e-6)
        if i < len(C) - 1:
            h = downsample(w, f"encoder.down_blocks.{i}.downsamplers.0", h, 0)
    h = vae_mid_block(w, "encoder.mid_block", h, g)
    h = w.conv("encoder.conv_out", F.silu(w.group_norm("encoder.conv_norm_out", h, g, 1e-6)), 2 * lat, 3)
    moments = w.conv("quant_conv", h, 2 * lat, 1)
    return moments.chunk(2, dim=1)[0]


def vae_decode(w, cfg, z):
    C, L, g, lat = cfg["block_out_channels"], cfg["layers_per_block"], cfg["norm_num_groups"], cfg["latent_channels"]
    z = w.conv("post_quant_conv", z, lat, 1)
    h = w.conv("decoder.conv_in", z, C[-1], 3)
    h = vae_mid_block(w, "decoder.mid_block", h, g)
    for i, c in enumerate(C[::-1]):
        h = up_decoder_block(w, f"decoder.up_blocks.{i}", h, c, L + 1, i < len(C) - 1, g)
    h = F.silu(w.group_norm("decoder.conv_norm_out", h, g, 1e-6))
    return w.conv("decoder.conv_out", h, cfg["out_channels"], 3)


# ------------------------------------------------------------------------------ fixtures

def save(name, leaves, extra, loss, description, config=None):
    names = list(leaves)
    out = dict(leaves)
    out.update(extra)
    if loss is not None:
        grads = torch.autograd.grad(loss, [leaves[n] for n in names])
        out["loss"] = loss.detach().reshape(1)
        for n, g in zip(names, grads):
            out[f"grad.{n}"] = g
    meta = {
        "generator": "bench/parity/make_unet_fixtures.py",
        "torch": torch.__version__,
        "compute": "float64 on float32 inputs, stored float32",
        "description": description,
        "inputs": json.dumps(names if loss is not None else []),
    }
    if config is not None:
        meta["config"] = json.dumps(config)
    write_safetensors(os.path.join(OUT, name), out, meta)


def down_block_fixture():
    B, Cin, Cout, S, heads, D, Lt, Li, scale, groups, eps = 2, 8, 16, 8, 2, 12, 5, 4, 0.6, 4, 1e-5
    d = Draw(11)
    x = d.randn(B, Cin, S, S)
    temb = d.randn(B, 32)
    context = d.randn(B, Lt, D)
    ip_tokens = d.randn(B, Li, D)
    w = Weights(d)
    out, states = cross_attn_down_block(w, "", x, temb, Cout, 1, [1], heads, context, (ip_tokens, scale), False, True, groups, eps)
    R = d.randn(*out.shape).detach()
    R_skip = d.randn(*states[0].shape).detach()
    loss = (out * R).sum() + (states[0] * R_skip).sum()
    weights = {k[1:]: v for k, v in w.w.items()}  # drop the leading "." of the block-relative names
    leaves = {"x": x, "temb": temb, "context": context, "ip_tokens": ip_tokens, **weights}
    save("unet_down_block.safetensors", leaves, {"R": R, "R_skip": R_skip, "out": out, "skip.0": states[0]}, loss,
         "CrossAttnDownBlock2D 8->16, 1 resnet + 1 transformer (conv proj), 8x8, heads 2, cross 12, IP tokens 4 scale 0.6, groups 4, downsample",
         {"heads": heads, "ip_scale": scale, "groups": groups, "eps": eps, "temb": 32})


def up_block_fixture():
    B, prev, cin, cout, S, heads, D, Lt, groups, eps = 2, 16, 8, 16, 4, 2, 12, 5, 4, 1e-5
    d = Draw(12)
    x = d.randn(B, prev, S, S)
    skip0 = d.randn(B, cin, S, S)   # produced first by the down path; taken by the last resnet
    skip1 = d.randn(B, cout, S, S)  # produced last; taken by the first resnet
    temb = d.randn(B, 32)
    context = d.randn(B, Lt, D)
    w = Weights(d)
    out = cross_attn_up_block(w, "", x, [skip0, skip1], temb, cout, 2, [2, 2], heads, context, None, True, True, groups, eps)
    R = d.randn(*out.shape).detach()
    weights = {k[1:]: v for k, v in w.w.items()}
    leaves = {"x": x, "skip0": skip0, "skip1": skip1, "temb": temb, "context": context, **weights}
    save("unet_up_block.safetensors", leaves, {"R": R, "out": out}, (out * R).sum(),
         "CrossAttnUpBlock2D prev 16, skips 16 then 8, out 16, 2 resnets, linear proj, 2 transformer blocks per layer, heads 2, upsample 4->8",
         {"heads": heads, "groups": groups, "eps": eps, "temb": 32})


def vae_up_block_fixture():
    B, cin, cout, S, groups = 2, 16, 8, 4, 4
    d = Draw(13)
    x = d.randn(B, cin, S, S)
    w = Weights(d)
    out = up_decoder_block(w, "", x, cout, 2, True, groups)
    R = d.randn(*out.shape).detach()
    weights = {k[1:]: v for k, v in w.w.items()}
    save("vae_up_block.safetensors", {"x": x, **weights}, {"R": R, "out": out}, (out * R).sum(),
         "UpDecoderBlock2D 16->8, 2 resnets (eps 1e-6, groups 4, no temb), Upsample2D 4->8", {"groups": groups})


def vae_mid_block_fixture():
    B, C, S, groups = 2, 16, 4, 4
    d = Draw(14)
    x = d.randn(B, C, S, S)
    w = Weights(d)
    out = vae_mid_block(w, "", x, groups)
    R = d.randn(*out.shape).detach()
    weights = {k[1:]: v for k, v in w.w.items()}
    save("vae_mid_block.safetensors", {"x": x, **weights}, {"R": R, "out": out}, (out * R).sum(),
         "VAE UNetMidBlock2D: resnet, Attention(group_norm, 1 head, biases, residual), resnet; 16 ch 4x4, groups 4", {"groups": groups})


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


def unet_tiny_fixture():
    B, S, Lt, Li, D, scale = 2, 8, 5, 4, 12, 0.6
    d = Draw(15)
    sample = d.randn(B, 4, S, S).detach()
    t = torch.tensor([981.0, 37.0], dtype=F64)
    context = d.randn(B, Lt, D).detach()
    ip_tokens = d.randn(B, Li, D).detach()
    w = Weights(d)
    out = unet(w, TINY_SD, sample, t, context, (ip_tokens, scale))
    out_no_ip = unet(w, TINY_SD, sample, t, context, None)
    R = d.randn(*out.shape).detach()
    ip_names = [k for k in w.w if ".processor.to_" in k]
    leaves = {k: w.w[k] for k in ip_names}
    extra = {k: v for k, v in w.w.items() if k not in leaves}
    extra.update({"sample": sample, "timestep": t, "context": context, "ip_tokens": ip_tokens, "R": R, "out": out, "out_no_ip": out_no_ip})
    save("unet_tiny.safetensors", leaves, extra, (out * R).sum(),
         "UNet2DConditionModel tiny SD config (metadata config), IP-Adapter scale 0.6 in every attn2; out, out_no_ip, grad of sum(out*R) w.r.t. the IP weights",
         dict(TINY_SD, ip_scale=scale))


def unet_tiny_sdxl_fixture():
    B, S, Lt, D = 2, 8, 5, 12
    d = Draw(16)
    sample = d.randn(B, 4, S, S).detach()
    t = torch.tensor([500.0, 3.0], dtype=F64)
    context = d.randn(B, Lt, D).detach()
    text_embeds = d.randn(B, 6).detach()
    time_ids = torch.tensor([[64.0, 48.0, 0.0, 8.0, 64.0, 64.0], [32.0, 32.0, 4.0, 0.0, 64.0, 64.0]], dtype=F64)
    w = Weights(d)
    with torch.no_grad():
        out = unet(w, TINY_SDXL, sample, t, context, None, text_embeds, time_ids)
    extra = {k: v for k, v in w.w.items()}
    extra.update({"sample": sample, "timestep": t, "context": context, "text_embeds": text_embeds, "time_ids": time_ids, "out": out})
    save("unet_tiny_sdxl.safetensors", {}, extra, None,
         "UNet2DConditionModel tiny SDXL config (text_time, linear projection, transformer layers [1, 2]); forward only", TINY_SDXL)


TINY_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 1, "norm_num_groups": 4, "out_channels": 3, "sample_size": 16, "scaling_factor": 0.5,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
}


def vae_tiny_fixture():
    d = Draw(17)
    image = d.randn(2, 3, 16, 16).detach()
    latents = d.randn(2, 4, 8, 8).detach()
    w = Weights(d)
    with torch.no_grad():
        mean = vae_encode(w, TINY_VAE, image)
        decoded = vae_decode(w, TINY_VAE, latents)
    extra = {k: v for k, v in w.w.items()}
    extra.update({"image": image, "latents": latents, "mean": mean, "decoded": decoded})
    save("vae_tiny.safetensors", {}, extra, None, "AutoencoderKL tiny: mean = encode(image) latent mean, decoded = decode(latents)", TINY_VAE)


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    os.makedirs(OUT, exist_ok=True)
    down_block_fixture()
    up_block_fixture()
    vae_up_block_fixture()
    vae_mid_block_fixture()
    unet_tiny_fixture()
    unet_tiny_sdxl_fixture()
    vae_tiny_fixture()


if __name__ == "__main__":
    main()
