#!/usr/bin/python3
"""Reference values for lib/eval/metrics.ts and the DINO-protocol preprocessing (tests/eval/metrics.test.ts).

Writes tests/fixtures/eval/:
  metrics.safetensors   fixed embedding arrays (float32, seeded) and what the DreamBench evaluation
                        computes from them, the way the PatchDPO authors' script does it
                        (L2-normalize, generated x real cosine matrix, np.mean per subject, mean
                        over subjects; CLIP-T = row-wise cosine of image and text embeddings):
                          gen [G, D], real [R, D], text [G, D]  inputs
                          gen_subject [G], real_subject [R], gen_prompt [G]  (I32 indices)
                          image_all [G], image_single [G]  per-image mean cosine (all photos / photo 1)
                          subject_all [S], subject_single [S], clipt_subject [S]
                          mean_all, mean_single, clipt_mean  [1]
                          prompt_all [P]  per prompt: mean over subjects of the subject's mean
                        everything in float64, plus the same headline numbers in float32 arithmetic
                        (mean_all_f32, ...) as the authors' numpy code produces them
  pattern_96x64.png     a deterministic RGB pattern (input of the preprocessing check)
  preprocess.safetensors  torchvision Resize(256, BICUBIC) + CenterCrop(224) + ToTensor +
                        Normalize(ImageNet) of it on a PIL image: `sub` = every 4th pixel in each
                        direction [3, 56, 56], `channel_sum` [3] (float64 sums of the full tensor)

Tests never run this. Usage: /usr/bin/python3 bench/parity/make_eval_fixture.py
"""
import os
import sys

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "eval")


def write_safetensors(path, tensors):
    """Writes numpy arrays sorted by name, each in its own dtype (F32, F64, I32 or U8), no metadata."""
    safetensors_io.write_safetensors(path, {name: tensors[name] for name in sorted(tensors)}, quiet=True)


def metrics_fixture():
    rng = np.random.default_rng(20241204)
    D = 24
    real_counts = [4, 6, 3]  # photos per subject
    gen_counts = [5, 3, 4]  # generated images per subject
    S = len(real_counts)
    P = 4
    # Subject embeddings share a direction so that cosines are realistic (0.3 .. 0.9), not ~0.
    centres = rng.normal(size=(S, D))
    real = np.concatenate([centres[s] + 0.8 * rng.normal(size=(n, D)) for s, n in enumerate(real_counts)]).astype(np.float32)
    gen = np.concatenate([centres[s] + 1.0 * rng.normal(size=(n, D)) for s, n in enumerate(gen_counts)]).astype(np.float32)
    text = (gen + 1.5 * rng.normal(size=gen.shape)).astype(np.float32)
    real_subject = np.concatenate([[s] * n for s, n in enumerate(real_counts)]).astype(np.int32)
    gen_subject = np.concatenate([[s] * n for s, n in enumerate(gen_counts)]).astype(np.int32)
    gen_prompt = np.array([i % P for i in range(len(gen))], dtype=np.int32)  # not every subject has every prompt the same number of times

    def norm(x):
        return x / np.sqrt(np.sum(x**2, axis=1, keepdims=True))

    def compute(dtype):
        g, r, t = norm(gen.astype(dtype)), norm(real.astype(dtype)), norm(text.astype(dtype))
        out = {"image_all": [], "image_single": [], "subject_all": [], "subject_single": [], "clipt_subject": []}
        for s in range(S):
            gs, rs, ts = g[gen_subject == s], r[real_subject == s], t[gen_subject == s]
            m = gs @ rs.T
            out["image_all"].append(m.mean(axis=1))
            out["image_single"].append(m[:, 1])
            out["subject_all"].append(np.mean(m))
            out["subject_single"].append(np.mean(m[:, 1:2]))
            out["clipt_subject"].append(np.mean(np.sum(gs * ts, axis=1)))
        res = {k: (np.concatenate(v) if k.startswith("image") else np.array(v)) for k, v in out.items()}
        res["mean_all"] = np.array([np.array(res["subject_all"]).mean()])
        res["mean_single"] = np.array([np.array(res["subject_single"]).mean()])
        res["clipt_mean"] = np.array([np.array(res["clipt_subject"]).mean()])
        pr = []
        for p in range(P):
            per_subject = [res["image_all"][(gen_subject == s) & (gen_prompt == p)] for s in range(S)]
            pr.append(np.mean([x.mean() for x in per_subject if len(x)]))
        res["prompt_all"] = np.array(pr)
        return res

    f64 = compute(np.float64)
    f32 = compute(np.float32)
    tensors = {"gen": gen, "real": real, "text": text, "gen_subject": gen_subject, "real_subject": real_subject, "gen_prompt": gen_prompt}
    tensors.update({k: v.astype(np.float64) for k, v in f64.items()})
    for k in ("mean_all", "mean_single", "clipt_mean"):
        tensors[f"{k}_f32"] = f32[k].astype(np.float32)
    write_safetensors(os.path.join(OUT, "metrics.safetensors"), tensors)
    print("metrics:", {k: float(f64[k][0]) for k in ("mean_all", "mean_single", "clipt_mean")})


def preprocess_fixture():
    h, w = 64, 96
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // (w - 1)), (y * 255 // (h - 1)), ((x * 7 + y * 13) % 256)], axis=2)
    img[(x // 8 + y // 8) % 2 == 0] //= 2  # a checkerboard: edges the bicubic kernel overshoots on
    pil = Image.fromarray(img.astype(np.uint8), "RGB")
    pil.save(os.path.join(OUT, "pattern_96x64.png"))
    t = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])(Image.open(os.path.join(OUT, "pattern_96x64.png")).convert("RGB"))
    a = t.numpy()
    write_safetensors(os.path.join(OUT, "preprocess.safetensors"), {
        "sub": np.ascontiguousarray(a[:, ::4, ::4]).astype(np.float32),
        "channel_sum": a.astype(np.float64).sum(axis=(1, 2)),
    })
    print("preprocess:", a.shape, "torch", torch.__version__)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    metrics_fixture()
    preprocess_fixture()
