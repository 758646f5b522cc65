#!/usr/bin/python3
"""PyTorch half of the tiny generator's training-loop parity fixture (tests/train/tiny-train-parity.test.ts).

Reads tests/fixtures/parity/tiny_train.safetensors as bench/parity/make_tiny_train_fixture.ts wrote
it (starting weights, batches of feeds exactly as DiffusionTrainer.prepare made them, configs),
builds the same model in PyTorch, trains it on those feeds for config.steps steps and writes the
results back into the same file (earlier "torch*" results are replaced, the inputs kept as they are).

  bun bench/parity/make_tiny_train_fixture.ts
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_tiny_train_fixture.py

The model is the upstream code itself (pinned commits in bench/parity/upstream.py; fetch them
first with /usr/bin/python3 bench/parity/fetch_upstream.py):
  text encoder   transformers' CLIPTextModel (models/clip/modeling_clip.py) with the fixture's
                 config; its last_hidden_state is the UNet's encoder_hidden_states (SD 1.x)
  image tokens   IP-Adapter's Resampler (tencent-ailab/IP-Adapter ip_adapter/resampler.py) on
                 image_features [rows, 49, 1280], weights under "image_proj."
  UNet           diffusers' UNet2DConditionModel (v0.31.0) with diffusers' IPAdapterAttnProcessor in
                 every attn2 (scale config.ipScale, numQueries tokens), its weights under the same
                 diffusers names our trainer uses
The loop is a diffusers training script's: loss = F.mse_loss(pred, target) (v-prediction targets
come in the feeds), loss.backward(), torch.nn.utils.clip_grad_norm_(params, 1.0),
torch.optim.AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01) with the learning rate of
lib/train/schedule.ts's cosine schedule (linear warm-up from lr / warmup, cosine down to
minLrShare * lr) set on the param group before each step. Step s uses batch s % config.batches.

It trains twice from the same float32 starting values:
  torch64   the modules in float64: the trajectory of exact arithmetic, the reference the test
            compares with, except where the upstream code computes in float32 whatever the model
            dtype (diffusers' get_timestep_embedding, the Resampler's softmax)
  torch32   everything in float32, as PyTorch users train: its distance from torch64 is what float32
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
import upstream  # noqa: E402
import make_unet_fixtures as mu  # noqa: E402  (runs upstream.setup with IP-Adapter on the path)

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

    # The upstream modules, loaded with the fixture's starting weights.
    from diffusers import UNet2DConditionModel
    from ip_adapter.resampler import Resampler
    from transformers import CLIPTextConfig, CLIPTextModel
    te = CLIPTextModel(CLIPTextConfig(**spec["textEncoder"])).eval().to(dtype)
    proj_m = Resampler(dim=proj["dim"], depth=proj["depth"], dim_head=proj["dimHead"], heads=proj["heads"],
                       num_queries=proj["numQueries"], embedding_dim=proj["embeddingDim"], output_dim=proj["outputDim"],
                       ff_mult=proj["ffMult"]).eval().to(dtype)
    unet = mu.set_ip_processors(UNet2DConditionModel.from_config(spec["unet"]), scale=cfg["ipScale"],
                                num_tokens=proj["numQueries"]).eval().to(dtype)
    params = {f"text_encoder/{k}": p for k, p in te.named_parameters()}
    params.update({f"image_proj.{k}": p for k, p in proj_m.named_parameters()})
    params.update(dict(unet.named_parameters()))
    if set(params) != set(names):
        raise ValueError(f"weights differ: only ours {sorted(set(names) - set(params))[:5]}, only torch {sorted(set(params) - set(names))[:5]}")
    with torch.no_grad():
        for n in names:
            params[n].copy_(init[n].to(dtype))
    params = {n: params[n] for n in names}

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
        tokens = proj_m(features)
        pred = unet(noisy, t, encoder_hidden_states=(context, [tokens])).sample
        loss = F.mse_loss(pred, target)
        loss.backward()
        if step == 0:
            missing = [n for n, p in params.items() if p.grad is None]
            if missing:
                raise ValueError(f"no gradient reaches {missing}")
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


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    arrays, meta = read_safetensors(FIXTURE)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("torch")}
    cfg = json.loads(meta["config"])
    names = json.loads(meta["weights"])
    for n in SNAPSHOT_WEIGHTS:
        assert n in names, n
    t0 = time.time()
    with upstream.default_dtype(torch.float64):  # transformers' CLIP causal mask in float64
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
        "reference": "bench/parity/make_tiny_train_fixture.py: transformers CLIPTextModel + IP-Adapter Resampler + diffusers "
                     "UNet2DConditionModel with IPAdapterAttnProcessor, F.mse_loss, clip_grad_norm_(1.0), torch.optim.AdamW; "
                     "torch64 float64 (diffusers' timestep embedding and the Resampler's softmax in float32, as upstream computes them), torch32 float32",
        "upstream": upstream.provenance("diffusers", "transformers", "IP-Adapter"),
        "snapshotWeights": json.dumps(SNAPSHOT_WEIGHTS),
        "gradSteps": str(GRAD_STEPS),
        "torchSeconds": json.dumps({"torch64": round(t1 - t0, 1), "torch32": round(t2 - t1, 1)}),
    })
    safetensors_io.write_safetensors(FIXTURE, out, meta)


if __name__ == "__main__":
    main()
