# Reference: ONE sampling step of an SD 1.5-shaped UNet with classifier-free guidance in PyTorch
# eager float32 (torch.inference_mode): the UNet on batch 2 ([uncond; cond]) at 64x64 latents,
# context [2, 77, 768], then uncond + s * (cond - uncond). The architecture is the functional
# diffusers transcription of bench/parity/make_unet_fixtures.py (`unet`, plain softmax(QK^T)V
# attention as diffusers' AttnProcessor does on torch 1.x), run on float32 weights loaded from the
# same safetensors file as ours (bench/out/sd15-unet-random.safetensors, written by
# bench/sample-step.ts). When bench/out/sample-step-io.safetensors (ours' fixed input and output)
# exists, the reference uses that input and reports the max abs difference on stderr.
import argparse, json, math, os, resource, statistics, struct, sys, time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "parity"))
import make_unet_fixtures as mk  # noqa: E402  (main() is guarded)

WEIGHTS = os.path.join(REPO, "bench", "out", "sd15-unet-random.safetensors")
IO = os.path.join(REPO, "bench", "out", "sample-step-io.safetensors")
CONFIG = os.path.join(REPO, "tests", "fixtures", "diffusers", "sd15-unet.config.json")
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64}


def read_safetensors(path):
    """name -> tensor, all views on one bytearray holding the file (8-byte length, JSON, data)."""
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(buf)
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf8"))
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        dt = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = (end - begin) // torch.tensor([], dtype=dt).element_size()
        out[name] = torch.frombuffer(buf, dtype=dt, count=count, offset=8 + n + begin).reshape(info["shape"])
    return out, meta


class FileWeights(mk.Weights):
    """The transcription's weight lookup on a dict of loaded tensors (shape-checked, never drawn)."""

    def __init__(self, tensors):
        super().__init__(None)
        self.w = tensors

    def __call__(self, name, *shape, kind="matrix"):
        t = self.w.get(name)
        if t is None:
            raise KeyError(f"{WEIGHTS}: no tensor {name!r}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name}: file has {tuple(t.shape)}, the model expects {tuple(shape)}")
        return t

    def linear(self, name, x, out, bias=True):
        # The transcription's timestep projection is float64; feed float32 to the float32 weights.
        return super().linear(name, x.float(), out, bias)


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
    tensors, _ = read_safetensors(WEIGHTS)
    w = FileWeights(tensors)

    ref = None
    if os.path.exists(IO):
        io, meta = read_safetensors(IO)
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
        pred = mk.unet(w, cfg, sample, t, context)
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
