# Reference: the scoring computation of bench/score-patches.ts in PyTorch eager, with the SAME
# MobileNetV2 weights (nsfwjs' model, dequantized by our loader and exported by the .ts side to
# bench/out/mobilenet_v2_nsfwjs.safetensors: Keras names, PyTorch layouts).
#
# Per iteration, on N pairs of 224x224 RGB images already decoded in memory (uint8 HWC, the same
# pixels ours uses, read from bench/out/score-patches-inputs.safetensors): uint8 -> float x / 255
# NCHW (nsfwjs' preprocessing: no mean / std), one forward of torchvision's mobilenet_v2 `features`
# over the 2N images (out_relu, [2N, 1280, 7, 7]), reference background masks (near-white share per
# 32x32 patch), and the q_gen / q_ref quality maps (L2-normalize, bmm, masked max).
#
# torchvision's mobilenet_v2 is the same architecture as Keras' MobileNetV2 (alpha 1.0), except:
# - Keras pads stride-2 convolutions asymmetrically (ZeroPadding2D ((0, 1), (0, 1)), then "valid"):
#   reproduced with F.pad (0, 1, 0, 1) before each stride-2 conv, which gets padding 0;
# - Keras BatchNormalization eps is 1e-3 (torch's default 1e-5).
# Once per process (untimed) the pooled features (GAP of out_relu) and q_gen are compared with the
# .ts side's dump; the max errors go to stderr and a mismatch above 1e-3 fails.
#
# Prints one JSON line for bench/run.ts: seconds = median seconds per pair.
import argparse, json, os, resource, statistics, subprocess, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import mobilenet_v2

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=5)
ap.add_argument("--pairs", type=int, default=16)
a = ap.parse_args()
torch.set_num_threads(a.threads)
N = a.pairs
HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "out", "mobilenet_v2_nsfwjs.safetensors")
INPUTS = os.path.join(HERE, "out", "score-patches-inputs.safetensors")


def read_safetensors(path):
    """name -> numpy array (F32 / U8 only, which is all the .ts side writes)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    dtypes = {"F32": np.float32, "U8": np.uint8}
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(blob, dtype=dtypes[t["dtype"]], count=(e - b) // np.dtype(dtypes[t["dtype"]]).itemsize, offset=8 + n + b).reshape(t["shape"])
    return out


def ensure_exported():
    ok = os.path.exists(WEIGHTS) and os.path.exists(INPUTS)
    if ok:
        ok = read_safetensors(INPUTS)["images"].shape[0] == 2 * N
    if not ok:
        repo = os.path.dirname(HERE)
        subprocess.run(["bun", "bench/score-patches.ts", "--export-only", "--pairs", str(N), "--threads", str(a.threads)], cwd=repo, check=True)


class PadConv(nn.Module):
    """Keras' stride-2 convolution: zero-pad bottom/right by 1, then a "valid" conv."""

    def __init__(self, conv):
        super().__init__()
        conv.padding = (0, 0)
        self.conv = conv

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def keras_mobilenet_v2(weights):
    m = mobilenet_v2()
    feats = m.features
    # Keras layer prefix of each conv / BN pair, in torchvision's order.
    plan = [(feats[0][0], feats[0][1], "Conv1/kernel", "bn_Conv1")]
    plan += [
        (feats[1].conv[0][0], feats[1].conv[0][1], "expanded_conv_depthwise/depthwise_kernel", "expanded_conv_depthwise_BN"),
        (feats[1].conv[1], feats[1].conv[2], "expanded_conv_project/kernel", "expanded_conv_project_BN"),
    ]
    for i in range(2, 18):
        b, c = i - 1, feats[i].conv
        plan += [
            (c[0][0], c[0][1], f"block_{b}_expand/kernel", f"block_{b}_expand_BN"),
            (c[1][0], c[1][1], f"block_{b}_depthwise/depthwise_kernel", f"block_{b}_depthwise_BN"),
            (c[2], c[3], f"block_{b}_project/kernel", f"block_{b}_project_BN"),
        ]
    plan.append((feats[18][0], feats[18][1], "Conv_1/kernel", "Conv_1_bn"))
    used = set()
    with torch.no_grad():
        for conv, bn, wname, bnname in plan:
            w = torch.from_numpy(weights[wname].copy())
            assert conv.weight.shape == w.shape, (wname, conv.weight.shape, w.shape)
            conv.weight.copy_(w)
            for attr, key in [("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance")]:
                getattr(bn, attr).copy_(torch.from_numpy(weights[f"{bnname}/{key}"].copy()))
            bn.eps = 1e-3
            used.update([wname] + [f"{bnname}/{k}" for k in ("gamma", "beta", "moving_mean", "moving_variance")])
    left = [k for k in weights if k not in used and not k.startswith("dense_")]
    assert not left, f"weights not mapped: {left}"
    # Stride-2 convolutions (Conv1 and the depthwise convs of blocks 1, 3, 6, 13): Keras padding.
    for parent in list(feats.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.stride == (2, 2):
                setattr(parent, name, PadConv(child))
    return feats.eval()


ensure_exported()
features = keras_mobilenet_v2(read_safetensors(WEIGHTS))
dump = read_safetensors(INPUTS)
pixels = dump["images"].copy()  # [2N, 224, 224, 3] uint8: N references, then N generated
refs_u8 = pixels[:N]
P, GRID = 32, 7  # 224 / 7: the out_relu patch size in pixels


def score(pixels_u8, refs_u8):
    x = torch.from_numpy(pixels_u8).permute(0, 3, 1, 2).float().div(255)  # [2N, 3, 224, 224]
    f = features(x)  # [2N, 1280, 7, 7]
    ref, gen = f[:N].flatten(2), f[N:].flatten(2)  # [N, C, 49]
    g = gen / gen.norm(dim=1, keepdim=True).clamp_min(1e-8)
    r = ref / ref.norm(dim=1, keepdim=True).clamp_min(1e-8)
    s = torch.bmm(g.transpose(1, 2), r)  # [N, 49 gen, 49 ref]
    white = torch.from_numpy(refs_u8).ge(235).all(dim=3).float()  # [N, 224, 224]
    mask = white.view(N, GRID, P, GRID, P).mean(dim=(2, 4)).ge(0.95).flatten(1)  # [N, 49]
    mask &= ~mask.all(dim=1, keepdim=True)  # an all-background reference masks nothing
    q_gen = s.masked_fill(mask[:, None, :], -1e4).amax(dim=2)
    q_ref = s.amax(dim=1).masked_fill(mask, float("nan"))
    return f, q_gen, q_ref, mask


with torch.inference_mode():
    f, q_gen, q_ref, mask = score(pixels, refs_u8)
    pooled = f.mean(dim=(2, 3)).numpy()
    err_pooled = float(np.abs(pooled - dump["pooled"]).max())
    err_qgen = float(np.abs(q_gen.numpy() - dump["q_gen"]).max())
    same_mask = bool((mask.numpy().astype(np.uint8) == dump["ref_mask"]).all())
    print(f"score-patches parity vs ours: pooled features max |err| {err_pooled:.2e} (max |value| {np.abs(pooled).max():.2f}), q_gen max |err| {err_qgen:.2e}, masks equal: {same_mask}", file=sys.stderr)
    if not (err_pooled < 1e-3 and err_qgen < 1e-3 and same_mask):
        sys.exit("score-patches.py: the PyTorch model does not reproduce ours; check the weight mapping / padding")
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        score(pixels, refs_u8)
        times.append((time.perf_counter() - t0) / N)
print(json.dumps({"seconds": statistics.median(times), "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "pairsPerSecond": 1 / statistics.median(times), "pairs": N}))
