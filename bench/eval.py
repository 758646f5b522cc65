# Reference: the feature-score evaluation of bench/eval.ts in PyTorch eager, with the SAME
# MobileNetV2 weights (nsfwjs' model dequantized by our loader, bench/out/mobilenet_v2_nsfwjs.safetensors)
# and the same images (bench/out/eval-inputs/*.png, decoded by PIL once, untimed).
#
# Per iteration, on N decoded PIL images: the DreamBench/DINO evaluation preprocessing as the
# PatchDPO authors' script writes it (torchvision Resize(256, BICUBIC) + CenterCrop(224) +
# ToTensor; the default encoder takes x / 255 with no mean / std), one forward of the Keras-padded
# torchvision mobilenet_v2 `features` over the N images, global average pooling, L2 normalization,
# the cosine matrix against R real-photo embeddings (computed once, untimed) and its row means.
#
# The Keras -> torchvision weight mapping (asymmetric stride-2 padding, BN eps 1e-3) is the one in
# bench/score-patches.py; its definitions are loaded from that file (it runs its benchmark at
# import, so only its functions and classes are taken, with ast) rather than copied here.
# Once per process (untimed) the embeddings and scores are compared with the .ts side's dump.
#
# Prints one JSON line for bench/run.ts: seconds = median seconds per image.
import argparse, ast, json, os, resource, statistics, subprocess, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms
from torchvision.models import mobilenet_v2

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=5)
ap.add_argument("--images", type=int, default=16)
a = ap.parse_args()
torch.set_num_threads(a.threads)
N, R = a.images, 4
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
WEIGHTS = os.path.join(OUT, "mobilenet_v2_nsfwjs.safetensors")
DUMP = os.path.join(OUT, "eval-inputs.safetensors")


def load_score_patches_defs():
    """read_safetensors, PadConv and keras_mobilenet_v2 from bench/score-patches.py, without running it."""
    path = os.path.join(HERE, "score-patches.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    wanted = {"read_safetensors", "PadConv", "keras_mobilenet_v2"}
    body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in wanted]
    missing = wanted - {n.name for n in body}
    if missing:
        sys.exit(f"eval.py: bench/score-patches.py no longer defines {sorted(missing)}; update the reuse here")
    ns = {"np": np, "json": json, "torch": torch, "nn": nn, "F": F, "mobilenet_v2": mobilenet_v2}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), ns)
    return ns


defs = load_score_patches_defs()
if not (os.path.exists(DUMP) and os.path.exists(WEIGHTS) and defs["read_safetensors"](DUMP)["scores"].shape[0] == N):
    subprocess.run(["bun", "bench/eval.ts", "--export-only", "--images", str(N), "--threads", str(a.threads)], cwd=os.path.dirname(HERE), check=True)
features = defs["keras_mobilenet_v2"](defs["read_safetensors"](WEIGHTS))


def load(name):
    im = Image.open(os.path.join(OUT, "eval-inputs", name)).convert("RGB")
    im.load()
    return im


gen = [load(f"{i}.png") for i in range(N)]
real = [load(f"real-{j}.png") for j in range(R)]
pre = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224), transforms.ToTensor()])


def embed(images):
    x = torch.stack([pre(im) for im in images])
    e = features(x).mean(dim=(2, 3))
    return e / e.norm(dim=1, keepdim=True)


def score(images, refs):
    return (embed(images) @ refs.T).mean(dim=1)


with torch.inference_mode():
    refs = embed(real)
    dump = defs["read_safetensors"](DUMP)
    ours = torch.from_numpy(dump["embeddings"].copy())
    e = features(torch.stack([pre(im) for im in gen])).mean(dim=(2, 3))
    err_emb = float((e - ours).abs().max() / ours.abs().max())
    s = score(gen, refs).double().numpy()
    err_score = float(np.abs(s - dump["scores"]).max())
    print(f"eval parity vs ours: embeddings max |err| / max |value| {err_emb:.2e}, scores max |err| {err_score:.2e}", file=sys.stderr)
    if not (err_emb < 1e-3 and err_score < 1e-4):
        sys.exit("eval.py: the PyTorch reference does not reproduce ours; check the weight mapping / preprocessing")
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        score(gen, refs)
        times.append((time.perf_counter() - t0) / N)
print(json.dumps({"seconds": statistics.median(times), "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "imagesPerSecond": 1 / statistics.median(times), "images": N}))
