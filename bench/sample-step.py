# Reference: ONE sampling step of an SD 1.5-shaped UNet with classifier-free guidance in PyTorch
# eager float32 (torch.inference_mode): the UNet on batch 2 ([uncond; cond]) at 64x64 latents,
# context [2, 77, 768], then uncond + s * (cond - uncond). The model is diffusers' own
# UNet2DConditionModel (the pinned v0.31.0 tree of bench/parity/.upstream unless diffusers is
# installed; built by bench/gpu.py's build_unet) with its default attention processor (AttnProcessor
# on torch 1.x: softmax(QK^T)V; AttnProcessor2_0's scaled_dot_product_attention on torch 2), run on
# the float32 weights of the same safetensors file as ours (bench/out/sd15-unet-random.safetensors,
# written by bench/sample-step.ts), bound in place (no second copy of the 3.4 GB). When
# bench/out/sample-step-io.safetensors (ours' fixed input and output) exists, the reference uses that
# input and reports the max abs difference on stderr.
# Until 2026-11-30 the reference ran a functional transcription (plain softmax(QK^T)V); diffusers'
# AttnProcessor on torch 1.x computes the scores with torch.baddbmm on a torch.empty input (beta 0),
# which here also copies and zero-fills each [16, 4096, 4096] score tensor of the 64x64 self-attentions
# (aten::copy_ + aten::fill_ in torch.profiler), so PyTorch times from before and after differ for that
# reason too.
import argparse, json, os, resource, statistics, sys, time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gpu  # noqa: E402  (bench/gpu.py: import_diffusers, read_safetensors, build_unet)

WEIGHTS = os.path.join(REPO, "bench", "out", "sd15-unet-random.safetensors")
IO = os.path.join(REPO, "bench", "out", "sample-step-io.safetensors")
CONFIG = os.path.join(REPO, "tests", "fixtures", "diffusers", "sd15-unet.config.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--scale", type=float, default=7.5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(CONFIG) as f:
        cfg = json.load(f)
    if not os.path.exists(WEIGHTS):
        sys.exit(f"{WEIGHTS} is missing: run `bun bench/sample-step.ts` first (it writes the weights)")
    gpu.import_diffusers()
    unet = gpu.build_unet(cfg, gpu.read_safetensors(WEIGHTS), None, "cpu", torch.float32, in_place=True)

    ref = None
    if os.path.exists(IO):
        io, meta = gpu.read_safetensors(IO, with_meta=True)
        sample, t, context = io["sample"], io["timestep"], io["encoder_hidden_states"]
        ref = io
        scale = float(meta.get("guidance_scale", a.scale))
    else:
        g = torch.Generator().manual_seed(1)
        half = torch.randn(1, 4, 64, 64, generator=g)
        sample = torch.cat([half, half])
        t = torch.tensor([601.0, 601.0])
        context = torch.randn(2, 77, 768, generator=g)
        scale = a.scale

    def step():
        pred = unet(sample, t, encoder_hidden_states=context).sample
        uncond, cond = pred.chunk(2)
        return pred, uncond + scale * (cond - uncond)

    with torch.inference_mode():
        pred, guided = step()  # warm-up, and the parity check on ours' input
        if ref is not None:
            d_pred = (pred - ref["noise_pred"]).abs().max().item()
            d_guided = (guided - ref["guided"]).abs().max().item()
            print(f"parity vs ours (same weights and input): max|noise_pred diff| = {d_pred:.3g} "
                  f"(max|noise_pred| = {pred.abs().max().item():.3g}), max|guided diff| = {d_guided:.3g} "
                  f"(max|guided| = {guided.abs().max().item():.3g})", file=sys.stderr)
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": statistics.median(times), "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
