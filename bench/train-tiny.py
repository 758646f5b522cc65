# Reference: ONE pretraining step of the tiny world's generator in PyTorch eager float32, the same
# model and step as bench/train-tiny.ts, on the upstream modules bench/parity/make_tiny_train_fixture.py
# trains (pinned trees of bench/parity/.upstream, upstream.setup): transformers' CLIPTextModel (its
# last_hidden_state is the context), IP-Adapter's Resampler, diffusers' UNet2DConditionModel with
# IPAdapterAttnProcessor2_0 (IPAdapterAttnProcessor on torch < 2) in every attn2, scale 1 (built by
# bench/gpu.py's build_unet), every weight trainable, built from the configs and weight shapes ours
# wrote to bench/out/train-tiny-spec.json (run `bun bench/train-tiny.ts` first; bench/run.ts does).
# Random weights (their values do not matter for timing). One step, as a diffusers training script
# takes it on a batch from its data loader (images already 64 px, token ids already made):
#   prepare  pixel-unshuffle "VAE" (factor 4) of [references ; generated] (16 rows, [48, 16, 16]),
#            noise and timestep shared per pair, add_noise and the target of the spec's prediction
#            type (sample: x0, v_prediction: v, epsilon: noise; DDIM scaled_linear betas), image
#            features [pairs, 49, 1280] repeated for both rows
#   run      text encoder on ids [16, 77] -> Resampler -> UNet -> F.mse_loss -> backward
#   clip     torch.nn.utils.clip_grad_norm_(params, 1.0)
#   adamw    torch.optim.AdamW(lr 5e-4, weight_decay 0.01).step()
# Prints the parameter count next to ours and fails unless the weights are ours, name by name and
# shape by shape.
import argparse, json, math, os, resource, statistics, sys, time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "parity"))
import gpu  # noqa: E402  (bench/gpu.py: build_unet)
import upstream  # noqa: E402  (bench/parity/upstream.py)

SPEC = os.path.join(REPO, "bench", "out", "train-tiny-spec.json")


def random_weight(name, shape, gen):
    """N(0, 1/fan_in) matrices, LayerNorm/GroupNorm weights 1, biases 0, latents N(0, 1/dim)."""
    if len(shape) == 1:
        return torch.ones(shape) if name.endswith(".weight") else torch.zeros(shape)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=gen) / math.sqrt(fan_in)


def alphas_cumprod(n=1000, start=0.00085, end=0.012):
    betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2  # scaled_linear
    return torch.cumprod(1 - betas, 0).float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not os.path.exists(SPEC):
        sys.exit(f"{SPEC} is missing: run `bun bench/train-tiny.ts` first (it writes the model's configs and weight shapes)")
    with open(SPEC) as f:
        spec = json.load(f)
    shapes = {n: tuple(s) for n, s in spec["shapes"].items()}
    ucfg, proj, tcfg = spec["unet"], spec["projection"], spec["textEncoder"]
    B, R, L = spec["pairs"], 2 * spec["pairs"], spec["maxLength"]
    factor = spec["size"] // ucfg["sample_size"]
    gen = torch.Generator().manual_seed(0)

    # The upstream modules; their weight names and shapes must be ours.
    upstream.setup(extra=["IP-Adapter"])
    from ip_adapter.resampler import Resampler
    from transformers import CLIPTextConfig, CLIPTextModel
    te = CLIPTextModel(CLIPTextConfig(**tcfg))
    resampler = Resampler(dim=proj["dim"], depth=proj["depth"], dim_head=proj["dimHead"], heads=proj["heads"],
                          num_queries=proj["numQueries"], embedding_dim=proj["embeddingDim"], output_dim=proj["outputDim"],
                          ff_mult=proj["ffMult"])
    resampler.load_state_dict({n[len("image_proj."):]: random_weight(n, s, gen) for n, s in shapes.items() if n.startswith("image_proj.")}, strict=True)
    unet_w = {n: random_weight(n, s, gen) for n, s in shapes.items() if not n.startswith(("text_encoder/", "image_proj."))}
    unet = gpu.build_unet(ucfg, unet_w, proj["numQueries"], "cpu", torch.float32).train()
    named = {f"text_encoder/{k}": p for k, p in te.named_parameters()}
    named.update({f"image_proj.{k}": p for k, p in resampler.named_parameters()})
    named.update(dict(unet.named_parameters()))
    if set(named) != set(shapes):
        raise SystemExit(f"weights differ: only ours {sorted(set(shapes) - set(named))[:8]}, only torch {sorted(set(named) - set(shapes))[:8]}")
    for n, p in named.items():
        if tuple(p.shape) != shapes[n]:
            raise SystemExit(f"{n}: ours {shapes[n]}, torch {tuple(p.shape)}")
    params = list(named.values())
    assert all(p.requires_grad for p in params)
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01)

    # One batch from the "data loader": 64 px images, ids, timesteps, noise, features of the pairs.
    images = torch.rand(R, 3, spec["size"], spec["size"], generator=gen) * 2 - 1
    ids = torch.randint(0, tcfg["vocab_size"] - 2, (R, L), generator=gen)
    ids[:, 0], ids[:, 12:] = tcfg["bos_token_id"], tcfg["eos_token_id"]
    features = torch.randn(B, *spec["featureShape"], generator=gen).abs()  # MobileNetV2 features are post-ReLU6
    acp = alphas_cumprod()
    prediction = spec["prediction"]
    if prediction not in ("sample", "v_prediction", "epsilon"):
        raise SystemExit(f"unknown prediction type {prediction!r}")

    def prepare():
        x0 = F.pixel_unshuffle(images, factor)  # scaling factor 1
        noise = torch.randn(B, *x0.shape[1:]).repeat(2, 1, 1, 1)
        t = torch.randint(0, 1000, (B,)).repeat(2)
        s1, s2 = acp[t].sqrt()[:, None, None, None], (1 - acp[t]).sqrt()[:, None, None, None]
        noisy = s1 * x0 + s2 * noise
        target = x0 if prediction == "sample" else s1 * noise - s2 * x0 if prediction == "v_prediction" else noise
        return noisy, t.float(), target, torch.cat([features, features])

    def step(times):
        t0 = time.perf_counter()
        noisy, t, target, feats = prepare()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        context = te.text_model(ids)[0]
        tokens = resampler(feats)
        pred = unet(noisy, t, encoder_hidden_states=(context, [tokens])).sample
        loss = F.mse_loss(pred, target)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if times is not None:
            for k, v in zip(("prepare", "run", "clip", "adamw", "total"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                times[k].append(v)
        return loss

    loss = step(None)  # warm-up; and every weight must be used and reached
    missing = [n for n, p in named.items() if p.grad is None]
    if missing:
        raise SystemExit(f"no gradient reaches {missing}")
    torch_params = sum(p.numel() for p in params)
    print(f"train-tiny (pytorch): {torch_params} trainable parameters (ours {spec['params']}), {R} UNet rows, loss {loss.item():.4f}", file=sys.stderr)
    assert torch_params == spec["params"], f"parameter counts differ: torch {torch_params}, ours {spec['params']}"
    times = {k: [] for k in ("prepare", "run", "clip", "adamw", "total")}
    for _ in range(a.iters):
        step(times)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "seconds": med["total"], "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "params": torch_params, "oursParams": spec["params"], "rows": R,
        "prepareSeconds": med["prepare"], "runSeconds": med["run"], "clipSeconds": med["clip"], "adamwSeconds": med["adamw"],
        "hostShare": (med["prepare"] + med["clip"] + med["adamw"]) / med["total"],
    }))


if __name__ == "__main__":
    main()
