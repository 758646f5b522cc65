#!/usr/bin/python3
"""PyTorch half of the tiny generator's training-loop parity fixture (tests/train/tiny-train-parity.test.ts).

Reads tests/fixtures/parity/tiny_train.safetensors as bench/parity/make_tiny_train_fixture.ts wrote
it (starting weights, batches of feeds exactly as DiffusionTrainer.prepare made them, configs),
builds the same model in PyTorch, trains it on those feeds for config.steps steps and writes the
results back into the same file (earlier "torch*" results are replaced, the inputs kept as they are).

  bun bench/parity/make_tiny_train_fixture.ts
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_tiny_train_fixture.py

The model, from the existing transcriptions (diffusers and transformers are not installed here):
  text encoder   make_clip_fixtures.TextModelWithProjection without projection (transformers'
                 CLIPTextModel: causal mask, quick_gelu, final_layer_norm); its last_hidden_state is
                 the UNet's encoder_hidden_states (SD 1.x)
  image tokens   IP-Adapter's Resampler (ip_adapter/resampler.py: proj_in, PerceiverAttention with q
                 and k scaled by dim_head**-0.25 over [x ; latents], FeedForward without bias,
                 proj_out, norm_out), as make_train_fixtures.resampler() transcribes it, on
                 image_features [rows, 49, 1280]
  UNet           make_unet_fixtures.unet (UNet2DConditionModel with IPAdapterAttnProcessor2_0 in
                 every attn2, scale 1), its weights under the same diffusers names our trainer uses
The loop is a diffusers training script's: loss = F.mse_loss(pred, target) (v-prediction targets
come in the feeds), loss.backward(), torch.nn.utils.clip_grad_norm_(params, 1.0),
torch.optim.AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01) with the learning rate of
lib/train/schedule.ts's cosine schedule (linear warm-up from lr / warmup, cosine down to
minLrShare * lr) set on the param group before each step. Step s uses batch s % config.batches.

It trains twice from the same float32 starting values:
  torch64   everything in float64: the trajectory of exact arithmetic, the reference the test
            compares with (the timestep embedding in float64 too)
  torch32   everything in float32, as PyTorch users train (timestep embedding in float32 as
            diffusers' get_timestep_embedding computes it): its distance from torch64 is what float32
            rounding alone does to this loop, the yardstick for the test's tolerances

Adds to the file:
  torch.lr                   [steps] F64  the learning rate of each step
  torch64.loss, torch32.loss [steps] F64  the loss at each step (before its update)
  torch64.grad_norm, torch32.grad_norm [steps] F64  global gradient norm before clipping
  torch64.grad_stats, torch32.grad_stats [GRAD_STEPS, weights, 2] F64  per weight (metadata
                             "weights" order) at each of the first GRAD_STEPS steps, before
                             clipping: the gradient's L2 norm and its probe sum_i g_i ((i mod 7) - 3)
                             over the row-major flattened gradient (sensitive to scale, sign and
                             layout errors of any single weight's gradient)
  torch64.grad0.<w>          step 0's full gradient of each SNAPSHOT_WEIGHTS weight (F32)
  torch64.at<s>.<w>          the weights SNAPSHOT_WEIGHTS after s updates, s in config.snapshots (F32)
  torch32.snapshot_drift     [snapshots, SNAPSHOT_WEIGHTS] F64  ||w32 - w64|| / ||w64 - w_init||
Metadata added: "torch", "reference", "snapshotWeights", "gradSteps", "torchSeconds".
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
import make_clip_fixtures as mc  # noqa: E402
import make_unet_fixtures as mu  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "parity", "tiny_train.safetensors")
GRAD_STEPS = 5
SNAPSHOT_WEIGHTS = [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight",
    "mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_v_ip.0.weight",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "conv_out.weight",
    "time_embedding.linear_1.weight",
    "image_proj.proj_out.weight",
    "image_proj.latents",
    "text_encoder/text_model.encoder.layers.1.self_attn.v_proj.weight",
    "text_encoder/text_model.final_layer_norm.weight",
]

NP_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def read_safetensors(path):
    """(ordered dict name -> numpy array in the file's dtype, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=NP_DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out, meta


class Leaves(mu.Weights):
    """make_unet_fixtures.Weights over given tensors: every weight must exist with the asked shape."""

    def __init__(self, tensors):
        self.w = tensors
        self.used = set()

    def __call__(self, name, *shape, kind="matrix"):
        if name not in self.w:
            raise KeyError(f"the UNet asks for {name}, which the fixture does not hold")
        t = self.w[name]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name}: fixture shape {tuple(t.shape)}, the UNet asks for {tuple(shape)}")
        self.used.add(name)
        return t


def timesteps_diffusers_f32(t, dim, flip, shift, max_period=10000):
    """diffusers get_timestep_embedding: float32 arithmetic (the UNet then casts to its dtype)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / (half - shift)
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


def resampler(w, x, c):
    """IP-Adapter's Resampler (ip_adapter/resampler.py) on x [B, L, embedding_dim], weights image_proj.*."""
    B = x.shape[0]
    heads, dh = c["heads"], c["dimHead"]
    inner = heads * dh

    def ln(name, t):
        return F.layer_norm(t, (t.shape[-1],), w[f"{name}.weight"], w[f"{name}.bias"], 1e-5)

    def split(t):
        b, n, _ = t.shape
        return t.view(b, n, heads, dh).transpose(1, 2)

    latents = w["image_proj.latents"].repeat(B, 1, 1)
    h = F.linear(x, w["image_proj.proj_in.weight"], w["image_proj.proj_in.bias"])
    for i in range(c["depth"]):
        a, f = f"image_proj.layers.{i}.0", f"image_proj.layers.{i}.1"
        xn, ln_ = ln(f"{a}.norm1", h), ln(f"{a}.norm2", latents)
        q = F.linear(ln_, w[f"{a}.to_q.weight"])
        k, v = F.linear(torch.cat([xn, ln_], dim=1), w[f"{a}.to_kv.weight"]).chunk(2, dim=-1)
        s = 1 / math.sqrt(math.sqrt(dh))
        att = torch.softmax((split(q) * s) @ (split(k) * s).transpose(-2, -1), dim=-1)
        o = (att @ split(v)).transpose(1, 2).reshape(B, -1, inner)
        latents = F.linear(o, w[f"{a}.to_out.weight"]) + latents
        latents = F.linear(F.gelu(F.linear(ln(f"{f}.0", latents), w[f"{f}.1.weight"])), w[f"{f}.3.weight"]) + latents
    return ln("image_proj.norm_out", F.linear(latents, w["image_proj.proj_out.weight"], w["image_proj.proj_out.bias"]))


def learning_rate(cfg, step):
    """lib/train/schedule.ts learningRate, schedule "cosine" (as scripts/pretrain-tiny.ts uses it)."""
    lr, warm, total, min_lr = cfg["lr"], cfg["warmup"], cfg["steps"], cfg["lr"] * cfg["minLrShare"]
    if step < warm:
        return lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


PROBE_CACHE = {}


def probe(n, dtype):
    if (n, dtype) not in PROBE_CACHE:
        PROBE_CACHE[(n, dtype)] = (torch.arange(n, dtype=torch.int64) % 7 - 3).to(dtype)
    return PROBE_CACHE[(n, dtype)]


def train(arrays, meta, dtype):
    cfg = json.loads(meta["config"])
    spec = json.loads(meta["spec"])
    proj = json.loads(meta["projection"])
    names = json.loads(meta["weights"])
    K, steps = cfg["batches"], cfg["steps"]
    init = {n: torch.from_numpy(arrays[f"init.{n}"].astype(np.float32)) for n in names}

    # Text encoder: the transcribed transformers module, loaded with the fixture's weights.
    tcfg = dict(spec["textEncoder"])
    tcfg.setdefault("layer_norm_eps", 1e-5)
    te = mc.TextModelWithProjection(tcfg, projection=False).to(dtype)
    te_params = {f"text_encoder/{k}": p for k, p in te.named_parameters()}
    want = {n for n in names if n.startswith("text_encoder/")}
    if set(te_params) != want:
        raise ValueError(f"text encoder weights differ: only ours {sorted(want - set(te_params))}, only torch {sorted(set(te_params) - want)}")
    params = {}
    for n in names:
        if n in te_params:
            with torch.no_grad():
                te_params[n].copy_(init[n].to(dtype))
            params[n] = te_params[n]
        else:
            params[n] = init[n].to(dtype).clone().requires_grad_(True)
    unet_w = Leaves({n: p for n, p in params.items() if not n.startswith("text_encoder/") and not n.startswith("image_proj.")})
    proj_w = {n: p for n, p in params.items() if n.startswith("image_proj.")}

    mu.timesteps = timesteps_diffusers_f32 if dtype == torch.float32 else TIMESTEPS_F64
    feed = {k[len("feed."):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("feed.")}
    pool = torch.cat([torch.from_numpy(arrays["features.ref"].astype(np.float32)), torch.from_numpy(arrays["features.empty"])], 0)
    index = torch.from_numpy(arrays["image_features.index"])

    opt = torch.optim.AdamW(list(params.values()), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"], weight_decay=cfg["weightDecay"])
    res = {"loss": [], "grad_norm": [], "lr": [], "grad_stats": [], "grad0": {}, "snapshots": {}}
    for step in range(steps):
        b = step % K
        ids = feed["te0_input_ids"][b]
        noisy = feed["noisy"][b].to(dtype)
        target = feed["target"][b].to(dtype)
        t = feed["timestep"][b].to(dtype)
        features = pool[index[b]].to(dtype)
        lr = learning_rate(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        context = te.text_model(ids)[0]
        tokens = resampler(proj_w, features, proj)
        pred = mu.unet(unet_w, spec["unet"], noisy, t, context, (tokens, cfg["ipScale"]))
        loss = F.mse_loss(pred, target)
        loss.backward()
        if step == 0:
            missing = [n for n, p in params.items() if p.grad is None]
            if missing:
                raise ValueError(f"no gradient reaches {missing}")
            unused = set(unet_w.w) - unet_w.used
            if unused:
                raise ValueError(f"the UNet does not use {sorted(unused)}")
            res["grad0"] = {n: params[n].grad.detach().clone() for n in SNAPSHOT_WEIGHTS}
        if step < GRAD_STEPS:
            res["grad_stats"].append([[p.grad.norm().item(), (p.grad.flatten() * probe(p.numel(), dtype)).sum().item()] for p in params.values()])
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg["clip"])
        opt.step()
        res["loss"].append(loss.item())
        res["grad_norm"].append(norm.item())
        res["lr"].append(lr)
        if step + 1 in cfg["snapshots"]:
            res["snapshots"][step + 1] = {n: params[n].detach().clone() for n in SNAPSHOT_WEIGHTS}
        if step % 50 == 0 or step == steps - 1:
            print(f"  {dtype} step {step}: loss {loss.item():.6f} grad norm {norm.item():.4f} lr {lr:.3e}", flush=True)
    res["init"] = {n: init[n] for n in SNAPSHOT_WEIGHTS}
    return res


TIMESTEPS_F64 = mu.timesteps


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    arrays, meta = read_safetensors(FIXTURE)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("torch")}
    cfg = json.loads(meta["config"])
    names = json.loads(meta["weights"])
    for n in SNAPSHOT_WEIGHTS:
        assert n in names, n
    t0 = time.time()
    r64 = train(arrays, meta, torch.float64)
    t1 = time.time()
    r32 = train(arrays, meta, torch.float32)
    t2 = time.time()
    f64 = lambda x: np.asarray(x, dtype="<f8")
    f32 = lambda t: t.detach().to(torch.float32).numpy().astype("<f4")
    out = dict(arrays)
    out["torch.lr"] = f64(r64["lr"])
    for tag, r in (("torch64", r64), ("torch32", r32)):
        out[f"{tag}.loss"] = f64(r["loss"])
        out[f"{tag}.grad_norm"] = f64(r["grad_norm"])
        out[f"{tag}.grad_stats"] = f64(r["grad_stats"])
    for n in SNAPSHOT_WEIGHTS:
        out[f"torch64.grad0.{n}"] = f32(r64["grad0"][n])
    drift = []
    for s in cfg["snapshots"]:
        row = []
        for n in SNAPSHOT_WEIGHTS:
            w64, w32, w0 = r64["snapshots"][s][n], r32["snapshots"][s][n].to(torch.float64), r64["init"][n].to(torch.float64)
            out[f"torch64.at{s}.{n}"] = f32(w64)
            row.append(((w32 - w64).norm() / (w64 - w0).norm()).item())
        drift.append(row)
    out["torch32.snapshot_drift"] = f64(drift)
    loss64, loss32 = np.array(r64["loss"]), np.array(r32["loss"])
    rel = np.abs(loss32 - loss64) / loss64
    print(f"torch32 vs torch64 loss: max rel {rel.max():.3e} (first 10 steps {rel[:10].max():.3e}, first 50 {rel[:50].max():.3e})")
    print(f"torch32 vs torch64 snapshot drift: {np.array(drift).max(axis=1)}")
    meta = dict(meta)
    meta.update({
        "torch": torch.__version__,
        "reference": "bench/parity/make_tiny_train_fixture.py: transcribed CLIPTextModel + IP-Adapter Resampler + UNet2DConditionModel with IP-Adapter attention, F.mse_loss, clip_grad_norm_(1.0), torch.optim.AdamW; torch64 float64, torch32 float32",
        "snapshotWeights": json.dumps(SNAPSHOT_WEIGHTS),
        "gradSteps": str(GRAD_STEPS),
        "torchSeconds": json.dumps({"torch64": round(t1 - t0, 1), "torch32": round(t2 - t1, 1)}),
    })
    safetensors_io.write_safetensors(FIXTURE, out, meta)


if __name__ == "__main__":
    main()
