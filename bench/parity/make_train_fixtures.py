#!/usr/bin/python3
"""Golden training fixtures (llm.c style) for tests/train/parity.test.ts and train.test.ts.

PyTorch transcriptions of the blocks we build in TypeScript, with the checkpoints' key names, write
their inputs, weights, outputs and gradients; the tests rebuild each block on lib/graph, run
forward + backward on ONNX Runtime and compare. Tests never run this script.

Writes tests/fixtures/parity/:
  vit_block.safetensors          DINOv2 layer (transformers' Dinov2Layer): hidden 32, 4 heads,
                                 MLP 64, LayerScale, LayerNorm eps 1e-6, erf GELU; x [2, 5, 32]
  unet_resnet_block.safetensors  diffusers ResnetBlock2D: 8 -> 16 channels, 6x6, batch 2,
                                 GroupNorm(4, eps 1e-5), SiLU, 3x3 convs, time embedding (12) via
                                 time_emb_proj(SiLU(temb)), 1x1 conv_shortcut
  cross_attention.safetensors    diffusers Attention (to_q/to_k/to_v without bias, to_out.0 with
                                 bias), 2 heads, dim 16, context 24, plus the IP-Adapter decoupled
                                 branch (to_k_ip/to_v_ip on image tokens, scale 0.7, added before
                                 to_out); x [2, 9, 16], text [2, 7, 24], image tokens [2, 4, 24]
  infonce.safetensors            symmetric InfoNCE of a [6, 8], b [6, 8], temperature 0.07
  adamw.safetensors              10 steps of torch.optim.AdamW on w [3, 4] and b [5] with saved
                                 per-step gradients, without and with clip_grad_norm_(max_norm=1)

Conventions. Every block's loss is sum(out * R) with a random R (saved), so the gradient of the
output is R itself and every output element matters. Names: the weights under their checkpoint
keys, the inputs by role ("x", "temb", "context", ...), "R", "out", "loss" and "grad.<name>" for
the gradient of the loss with respect to <name>. Inputs and weights are drawn in float32 (seeded
torch.Generator per fixture); the blocks are then evaluated in float64 on those float32 values and
the results rounded to float32, so a fixture holds the exact answer for its float32 inputs and a
test's error is the TypeScript side's own float32 rounding. AdamW runs in float32 as torch users
run it (its error budget is tiny and per-element).

InfoNCE normalizes rows as x / sqrt(sum(x^2) + 1e-6), the formula of lib/train/infonce.ts, NOT
torch.nn.functional.normalize (x / max(||x||, 1e-12)); the two agree to ~1e-7 for rows of norm ~1.

The IP-Adapter projections are saved as "to_k_ip.weight" / "to_v_ip.weight" (diffusers'
IPAdapterAttnProcessor names them "processor.to_k_ip.0.weight", the IP-Adapter release
"<n>.to_k_ip.weight"; the layer is the same Linear(cross_attention_dim, inner, bias=False)).

Needs /usr/bin/python3 with torch (Debian python3-torch 1.13). Writes with the shared minimal
writer bench/parity/safetensors_io.py (tensors in insertion order, compact JSON header), so the
output does not depend on whether the `safetensors` package is installed.
Usage: OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_train_fixtures.py
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "parity")
F64 = torch.float64


def write_safetensors(path, tensors, metadata):
    """Writes the torch tensors as F32 in insertion order, with metadata."""
    arrays = {k: v.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4") for k, v in tensors.items()}
    safetensors_io.write_safetensors(path, arrays, metadata)


class Draw:
    """Seeded float32 draws, returned as float64 leaves that require grad."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, shift=0.0):
        v = torch.randn(*shape, generator=self.gen, dtype=torch.float32) * scale + shift
        return v.to(F64).requires_grad_(True)


def fixture(path, leaves, extra, loss, description):
    """Backpropagates `loss` and writes leaves, their gradients and `extra` tensors."""
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    out = dict(leaves)
    out.update(extra)
    out["loss"] = loss.detach().reshape(1)
    for n, g in zip(names, grads):
        out[f"grad.{n}"] = g
    meta = {
        "generator": "bench/parity/make_train_fixtures.py",
        "torch": torch.__version__,
        "compute": "float64 on float32 inputs, stored float32",
        "loss": "sum(out * R)" if "R" in extra else "the block's loss",
        "description": description,
        "inputs": json.dumps(names),
    }
    write_safetensors(path, out, meta)


# ------------------------------------------------------------------------------ ViT / DINOv2 block

def vit_block():
    C, H, FF, B, L, eps = 32, 4, 64, 2, 5, 1e-6
    d = Draw(1)
    w = {}

    def lin(name, o, i):
        w[f"{name}.weight"] = d.randn(o, i, scale=1 / math.sqrt(i))
        w[f"{name}.bias"] = d.randn(o, scale=0.1)

    def norm(name):
        w[f"{name}.weight"] = d.randn(C, scale=0.1, shift=1.0)
        w[f"{name}.bias"] = d.randn(C, scale=0.1)

    norm("norm1")
    lin("attention.attention.query", C, C)
    lin("attention.attention.key", C, C)
    lin("attention.attention.value", C, C)
    lin("attention.output.dense", C, C)
    w["layer_scale1.lambda1"] = d.randn(C, scale=0.2, shift=0.5)
    norm("norm2")
    lin("mlp.fc1", FF, C)
    lin("mlp.fc2", C, FF)
    w["layer_scale2.lambda1"] = d.randn(C, scale=0.2, shift=0.5)
    x = d.randn(B, L, C)
    R = d.randn(B, L, C).detach()

    def linear(name, t):
        return F.linear(t, w[f"{name}.weight"], w[f"{name}.bias"])

    def heads(t):
        return t.view(B, L, H, C // H).permute(0, 2, 1, 3)

    # transformers Dinov2Layer (eval: no dropout, no drop path).
    h = F.layer_norm(x, (C,), w["norm1.weight"], w["norm1.bias"], eps)
    q = heads(linear("attention.attention.query", h))
    k = heads(linear("attention.attention.key", h))
    v = heads(linear("attention.attention.value", h))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C // H), dim=-1)
    ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, L, C)
    attn = linear("attention.output.dense", ctx)
    x1 = x + attn * w["layer_scale1.lambda1"]
    h = F.layer_norm(x1, (C,), w["norm2.weight"], w["norm2.bias"], eps)
    mlp = linear("mlp.fc2", F.gelu(linear("mlp.fc1", h)))
    out = x1 + mlp * w["layer_scale2.lambda1"]
    leaves = {"x": x, **w}
    fixture(os.path.join(OUT, "vit_block.safetensors"), leaves, {"R": R, "out": out}, (out * R).sum(),
            "Dinov2Layer hidden 32, heads 4, mlp 64, layer scale, LayerNorm eps 1e-6, erf GELU; x [2,5,32]")


# ------------------------------------------------------------------------------ UNet ResnetBlock2D

def unet_resnet_block():
    Cin, Cout, T, B, S, groups, eps = 8, 16, 12, 2, 6, 4, 1e-5
    d = Draw(2)
    w = {
        "norm1.weight": d.randn(Cin, scale=0.1, shift=1.0),
        "norm1.bias": d.randn(Cin, scale=0.1),
        "conv1.weight": d.randn(Cout, Cin, 3, 3, scale=1 / math.sqrt(Cin * 9)),
        "conv1.bias": d.randn(Cout, scale=0.1),
        "time_emb_proj.weight": d.randn(Cout, T, scale=1 / math.sqrt(T)),
        "time_emb_proj.bias": d.randn(Cout, scale=0.1),
        "norm2.weight": d.randn(Cout, scale=0.1, shift=1.0),
        "norm2.bias": d.randn(Cout, scale=0.1),
        "conv2.weight": d.randn(Cout, Cout, 3, 3, scale=1 / math.sqrt(Cout * 9)),
        "conv2.bias": d.randn(Cout, scale=0.1),
        "conv_shortcut.weight": d.randn(Cout, Cin, 1, 1, scale=1 / math.sqrt(Cin)),
        "conv_shortcut.bias": d.randn(Cout, scale=0.1),
    }
    x = d.randn(B, Cin, S, S)
    temb = d.randn(B, T)
    R = d.randn(B, Cout, S, S).detach()

    # diffusers ResnetBlock2D.forward (time_embedding_norm "default", output_scale_factor 1, eval).
    h = F.silu(F.group_norm(x, groups, w["norm1.weight"], w["norm1.bias"], eps))
    h = F.conv2d(h, w["conv1.weight"], w["conv1.bias"], padding=1)
    t = F.linear(F.silu(temb), w["time_emb_proj.weight"], w["time_emb_proj.bias"])[:, :, None, None]
    h = h + t
    h = F.silu(F.group_norm(h, groups, w["norm2.weight"], w["norm2.bias"], eps))
    h = F.conv2d(h, w["conv2.weight"], w["conv2.bias"], padding=1)
    skip = F.conv2d(x, w["conv_shortcut.weight"], w["conv_shortcut.bias"])
    out = skip + h
    leaves = {"x": x, "temb": temb, **w}
    fixture(os.path.join(OUT, "unet_resnet_block.safetensors"), leaves, {"R": R, "out": out}, (out * R).sum(),
            "diffusers ResnetBlock2D 8->16 channels, 6x6, batch 2, GroupNorm(4, 1e-5), temb 12, conv_shortcut 1x1")


# ------------------------------------------------------------------------------ cross-attention + IP-Adapter

def cross_attention():
    B, Lq, Lt, Li, D, Ctx, H, ip_scale = 2, 9, 7, 4, 16, 24, 2, 0.7
    d = Draw(3)
    w = {
        "to_q.weight": d.randn(D, D, scale=1 / math.sqrt(D)),
        "to_k.weight": d.randn(D, Ctx, scale=1 / math.sqrt(Ctx)),
        "to_v.weight": d.randn(D, Ctx, scale=1 / math.sqrt(Ctx)),
        "to_out.0.weight": d.randn(D, D, scale=1 / math.sqrt(D)),
        "to_out.0.bias": d.randn(D, scale=0.1),
        "to_k_ip.weight": d.randn(D, Ctx, scale=1 / math.sqrt(Ctx)),
        "to_v_ip.weight": d.randn(D, Ctx, scale=1 / math.sqrt(Ctx)),
    }
    x = d.randn(B, Lq, D)
    context = d.randn(B, Lt, Ctx)
    image_tokens = d.randn(B, Li, Ctx)
    R = d.randn(B, Lq, D).detach()

    def heads(t):
        return t.view(B, t.shape[1], H, D // H).permute(0, 2, 1, 3)

    def attend(q, k, v):
        probs = torch.softmax(q @ k.transpose(-1, -2) * (D // H) ** -0.5, dim=-1)
        return (probs @ v).permute(0, 2, 1, 3).reshape(B, Lq, D)

    # diffusers IPAdapterAttnProcessor: text attention + scale * image attention, then to_out.
    q = heads(F.linear(x, w["to_q.weight"]))
    text = attend(q, heads(F.linear(context, w["to_k.weight"])), heads(F.linear(context, w["to_v.weight"])))
    image = attend(q, heads(F.linear(image_tokens, w["to_k_ip.weight"])), heads(F.linear(image_tokens, w["to_v_ip.weight"])))
    out = F.linear(text + ip_scale * image, w["to_out.0.weight"], w["to_out.0.bias"])
    leaves = {"x": x, "context": context, "image_tokens": image_tokens, **w}
    fixture(os.path.join(OUT, "cross_attention.safetensors"), leaves, {"R": R, "out": out}, (out * R).sum(),
            "diffusers Attention heads 2, dim 16, context 24 + IP-Adapter to_k_ip/to_v_ip, scale 0.7")


# ------------------------------------------------------------------------------ InfoNCE

def infonce():
    N, C, temperature = 6, 8, 0.07
    d = Draw(4)
    a = d.randn(N, C)
    # b: noisy copies of a, so the diagonal is (mostly) the best match, as for corresponding patches.
    with torch.no_grad():
        b0 = a.detach() + 0.8 * torch.randn(N, C, generator=d.gen, dtype=torch.float32).to(F64)
    b = b0.to(torch.float32).to(F64).requires_grad_(True)

    def l2normalize(t):  # lib/train/infonce.ts's formula (not F.normalize's)
        return t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6)

    logits = l2normalize(a) @ l2normalize(b).T / temperature
    target = torch.arange(N)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    fixture(os.path.join(OUT, "infonce.safetensors"), {"a": a, "b": b}, {"logits": logits}, loss,
            "symmetric InfoNCE, temperature 0.07, rows normalized as x / sqrt(sum x^2 + 1e-6)")


# ------------------------------------------------------------------------------ AdamW

def adamw():
    steps, lr, betas, eps, wd = 10, 1e-2, (0.9, 0.999), 1e-8, 0.01
    gen = torch.Generator().manual_seed(5)
    init = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen)}
    grads = {k: torch.randn(steps, *v.shape, generator=gen) for k, v in init.items()}
    # Step 3's gradients are small (global norm < 1), so the clipped run also has a step clipping leaves alone.
    for k in grads:
        grads[k][3] *= 0.05
    out = {f"init.{k}": v for k, v in init.items()}
    out.update({f"grads.{k}": v for k, v in grads.items()})
    for clip in (False, True):
        params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
        opt = torch.optim.AdamW(list(params.values()), lr=lr, betas=betas, eps=eps, weight_decay=wd)
        history = {k: [] for k in params}
        norms = []
        for s in range(steps):
            opt.zero_grad()
            for k, p in params.items():
                p.grad = grads[k][s].clone()
            if clip:
                norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=1.0)))
            opt.step()
            for k, p in params.items():
                history[k].append(p.detach().clone())
        tag = "clipped" if clip else "params"
        for k in params:
            out[f"{tag}.{k}"] = torch.stack(history[k])
        if clip:
            out["clip_norm"] = torch.tensor(norms)
    meta = {
        "generator": "bench/parity/make_train_fixtures.py",
        "torch": torch.__version__,
        "compute": "float32 (torch.optim.AdamW, foreach=None default)",
        "config": json.dumps({"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": wd, "steps": steps, "max_norm": 1.0}),
        "description": "params.<p>[s] / clipped.<p>[s]: parameter after step s (0-based) without / with clip_grad_norm_(1.0); "
                       "grads.<p>[s]: gradient fed at step s; clip_norm[s]: total norm clip_grad_norm_ returned",
    }
    write_safetensors(os.path.join(OUT, "adamw.safetensors"), out, meta)


# ------------------------------------------------------------------------------ IP-Adapter-Plus Resampler

def resampler():
    """IP-Adapter's Resampler (ip_adapter/resampler.py semantics): proj_in, depth x (PerceiverAttention
    over [x ; latents] with q and k each scaled by dim_head**-0.25, FeedForward LayerNorm -> Linear ->
    GELU -> Linear, both without bias), proj_out, norm_out. LayerNorm eps 1e-5."""
    E, D, depth, dh, heads, Q, O, mult, B, L = 12, 16, 2, 4, 2, 3, 10, 2, 2, 5
    inner = dh * heads
    d = Draw(6)
    w = {"image_proj.latents": d.randn(1, Q, D, scale=D ** -0.5)}

    def lin(name, o, i, bias=True):
        w[f"{name}.weight"] = d.randn(o, i, scale=1 / math.sqrt(i))
        if bias:
            w[f"{name}.bias"] = d.randn(o, scale=0.1)

    def norm(name, c):
        w[f"{name}.weight"] = d.randn(c, scale=0.1, shift=1.0)
        w[f"{name}.bias"] = d.randn(c, scale=0.1)

    lin("image_proj.proj_in", D, E)
    for i in range(depth):
        a, f = f"image_proj.layers.{i}.0", f"image_proj.layers.{i}.1"
        norm(f"{a}.norm1", D)
        norm(f"{a}.norm2", D)
        lin(f"{a}.to_q", inner, D, bias=False)
        lin(f"{a}.to_kv", 2 * inner, D, bias=False)
        lin(f"{a}.to_out", D, inner, bias=False)
        norm(f"{f}.0", D)
        lin(f"{f}.1", D * mult, D, bias=False)
        lin(f"{f}.3", D, D * mult, bias=False)
    lin("image_proj.proj_out", O, D)
    norm("image_proj.norm_out", O)
    x = d.randn(B, L, E)
    R = d.randn(B, Q, O).detach()

    def ln(name, t):
        return F.layer_norm(t, (t.shape[-1],), w[f"{name}.weight"], w[f"{name}.bias"], 1e-5)

    def heads_of(t):
        b, n, _ = t.shape
        return t.view(b, n, heads, dh).transpose(1, 2)

    latents = w["image_proj.latents"].repeat(B, 1, 1)
    h = F.linear(x, w["image_proj.proj_in.weight"], w["image_proj.proj_in.bias"])
    for i in range(depth):
        a, f = f"image_proj.layers.{i}.0", f"image_proj.layers.{i}.1"
        xn, ln_ = ln(f"{a}.norm1", h), ln(f"{a}.norm2", latents)
        q = F.linear(ln_, w[f"{a}.to_q.weight"])
        k, v = F.linear(torch.cat([xn, ln_], dim=1), w[f"{a}.to_kv.weight"]).chunk(2, dim=-1)
        s = 1 / math.sqrt(math.sqrt(dh))
        att = torch.softmax((heads_of(q) * s) @ (heads_of(k) * s).transpose(-2, -1), dim=-1)
        o = (att @ heads_of(v)).transpose(1, 2).reshape(B, Q, inner)
        latents = F.linear(o, w[f"{a}.to_out.weight"]) + latents
        ff = F.linear(F.gelu(F.linear(ln(f"{f}.0", latents), w[f"{f}.1.weight"])), w[f"{f}.3.weight"])
        latents = ff + latents
    out = ln("image_proj.norm_out", F.linear(latents, w["image_proj.proj_out.weight"], w["image_proj.proj_out.bias"]))
    fixture(os.path.join(OUT, "resampler.safetensors"), {"x": x, **w}, {"R": R, "out": out}, (out * R).sum(),
            "IP-Adapter-Plus Resampler: embedding 12, dim 16, depth 2, dim_head 4, heads 2, queries 3, output 10, ff_mult 2; x [2,5,12]")


# ------------------------------------------------------------------------------ training objectives

def objectives():
    """mse, weighted and patch-dpo (lib/train/objectives.ts, DESIGN.md section 1 item 3) on a batch
    of B = 2 pairs laid out [reference ; generated], 4 latent channels, 4x4 latents."""
    B, C, S, beta, lam = 2, 4, 4, 50.0, 0.5
    d = Draw(7)
    pred = d.randn(2 * B, C, S, S)
    target = d.randn(2 * B, C, S, S).detach()
    ref_pred = (target + 0.8 * torch.randn(2 * B, C, S, S, generator=d.gen).to(F64)).detach()
    q_ref = torch.rand(B, S, S, generator=d.gen).to(F64)
    q_gen = torch.rand(B, S, S, generator=d.gen).to(F64)
    e = ((pred - target) ** 2).mean(dim=1)
    e_ref = ((ref_pred - target) ** 2).mean(dim=1)
    losses = {"mse": e.mean()}
    losses["weighted"] = (torch.cat([1 - q_ref, q_gen], 0) * e).mean()

    def wmean(u, err):
        return (u * err).sum(dim=(1, 2)) / (u.sum(dim=(1, 2)) + 1e-6)

    a, b = 1 - q_ref, 1 - q_gen
    m_w = wmean(a, e[:B]) - wmean(a, e_ref[:B])
    m_l = wmean(b, e[B:]) - wmean(b, e_ref[B:])
    losses["patch-dpo"] = -F.logsigmoid(-beta / 2 * (m_w - m_l)).mean() + lam * (q_gen * e[B:]).mean()
    out = {"pred": pred, "target": target, "ref_pred": ref_pred, "q_ref": q_ref, "q_gen": q_gen,
           "implicit_acc": (m_w < m_l).to(F64).mean().reshape(1)}
    for name, loss in losses.items():
        out[f"loss.{name}"] = loss.detach().reshape(1)
        out[f"grad.{name}.pred"] = torch.autograd.grad(loss, [pred], retain_graph=True)[0]
    meta = {
        "generator": "bench/parity/make_train_fixtures.py", "torch": torch.__version__,
        "compute": "float64 on float32 inputs, stored float32",
        "config": json.dumps({"beta": beta, "lambda": lam}),
        "description": "loss.<objective> and grad.<objective>.pred for mse, weighted, patch-dpo",
    }
    write_safetensors(os.path.join(OUT, "objectives.safetensors"), out, meta)


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    os.makedirs(OUT, exist_ok=True)
    vit_block()
    unet_resnet_block()
    cross_attention()
    infonce()
    adamw()
    resampler()
    objectives()


if __name__ == "__main__":
    main()
