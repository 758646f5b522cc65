# Reference of bench/dpo-step.ts: ONE patch-dpo training step in PyTorch eager float32 on the
# upstream modules: diffusers' UNet2DConditionModel (the pinned v0.31.0 tree of bench/parity/.upstream
# unless diffusers is installed) with IPAdapterAttnProcessor (torch < 2; IPAdapterAttnProcessor2_0 on
# torch 2) in every attn2, built by bench/gpu.py's build_unet with in_place=True on the same two files
# as ours (bench/out/sd15-unet-random.safetensors + bench/out/dpo-step-ip.safetensors), and fed ours'
# inputs (bench/out/dpo-step-io.safetensors). The frozen reference twin and the trained model share
# the frozen tensors (one copy of the 3.4 GB, as ours reads one file); the trained model's to_k_ip /
# to_v_ip are its own float32 copies with requires_grad. Step = the twin under no_grad on both images,
# the trained model's forward and backward on both images, gpu.py's patch_dpo (beta 5000, lambda 1),
# torch.optim.AdamW (lr 1e-5, weight decay 0.01). --objective mse: the trained model's forward and
# backward with the mean squared error, no twin; run by the patch-dpo process as a child of its own
# (its own peak RSS). Prints one JSON line: median seconds per step after a warm-up, peak RSS, the
# losses of the first two steps (compared with ours' on stderr).
import argparse, json, os, statistics, subprocess, sys, time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gpu  # noqa: E402  (bench/gpu.py: import_diffusers, read_safetensors, build_unet, patch_dpo)

WEIGHTS = os.path.join(REPO, "bench", "out", "sd15-unet-random.safetensors")
IP_WEIGHTS = os.path.join(REPO, "bench", "out", "dpo-step-ip.safetensors")
IO = os.path.join(REPO, "bench", "out", "dpo-step-io.safetensors")
CONFIG = os.path.join(REPO, "tests", "fixtures", "diffusers", "sd15-unet.config.json")


def is_ip(n):
    return ".processor.to_k_ip." in n or ".processor.to_v_ip." in n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--objective", choices=["patch-dpo", "mse"], default="patch-dpo")
    ap.add_argument("--mse-iters", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for p in (WEIGHTS, IP_WEIGHTS, IO):
        if not os.path.exists(p):
            sys.exit(f"{p} is missing: run `bun bench/dpo-step.ts` first (it writes the weights and inputs)")
    with open(CONFIG) as f:
        cfg = json.load(f)
    io = gpu.read_safetensors(IO)
    ip_tokens = io["ip_tokens"].shape[1]
    gpu.import_diffusers()
    frozen = gpu.read_safetensors(WEIGHTS)
    ip = gpu.read_safetensors(IP_WEIGHTS)
    unet = gpu.build_unet(cfg, {**frozen, **{k: v.clone() for k, v in ip.items()}}, ip_tokens, "cpu", torch.float32, in_place=True)
    trained = [p for n, p in unet.named_parameters() if is_ip(n)]
    for p in trained:
        p.requires_grad_(True)
    ref = gpu.build_unet(cfg, {**frozen, **ip}, ip_tokens, "cpu", torch.float32, in_place=True) if a.objective == "patch-dpo" else None
    opt = torch.optim.AdamW(trained, lr=1e-5, weight_decay=0.01)
    x, t, ctx, ipt, target = io["noisy"], io["timestep"], io["encoder_hidden_states"], io["ip_tokens"], io["target"]
    q_ref, q_gen = io["q_ref"], io["q_gen"]

    def step():
        if ref is not None:
            with torch.no_grad():
                ref_pred = ref(x, t, encoder_hidden_states=(ctx, [ipt])).sample
        pred = unet(x, t, encoder_hidden_states=(ctx, [ipt])).sample
        if ref is not None:
            loss = gpu.patch_dpo(pred, ref_pred, target, q_ref, q_gen)
        else:
            loss = ((pred - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    losses = [step()]  # warm-up; the loss at the initial weights
    times = []
    for _ in range(max(1, a.iters)):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
    ours = io["losses"].tolist()
    if a.objective == "patch-dpo":
        print("losses of the first steps: pytorch " + ", ".join(f"{v:.7g}" for v in losses[:len(ours)])
              + " | ours " + ", ".join(f"{v:.7g}" for v in ours), file=sys.stderr)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork and exec, so the mse child's would
    # start at this process's RSS at the spawn (bench/dpo-step.ts says the same).
    with open("/proc/self/status") as f:
        hwm_kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    result = {"seconds": statistics.median(times), "peakRssMB": hwm_kb / 1024,
              "loss0": losses[0], "loss1": losses[1], "oursLoss0": ours[0], "oursLoss1": ours[1] if len(ours) > 1 else None}
    if a.objective == "patch-dpo" and a.mse_iters > 0:
        del unet, ref, opt, frozen, ip, trained
        out = subprocess.run([sys.executable, __file__, "--objective", "mse", "--threads", str(a.threads), "--iters", str(a.mse_iters)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        m = json.loads(out.strip().split("\n")[-1])
        result.update({"mseSeconds": m["seconds"], "msePeakRssMB": m["peakRssMB"], "mseLoss0": m["loss0"]})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
