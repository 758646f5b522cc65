#!/usr/bin/python3
"""Reference outputs for lib/io/images.ts (PIL resampling + torchvision eval preprocessing).

Writes tests/fixtures/images/:
  synthetic_37x23.png       deterministic RGB test pattern (input of the direct resize cases)
  resize_cases.safetensors  uint8 HWC outputs of PIL Image.resize on the synthetic image
                            (bicubic up/down at non-integer factors, bilinear, nearest) and float32
                            CHW outputs of torchvision ToTensor+Normalize (ImageNet, CLIP) on a
                            16x16 image that holds every byte value in every channel; __metadata__
                            holds, per real photo, the SHA-256 of PIL's decoded RGB pixels and the
                            crop that was applied before preprocessing
  photo_<subject>.png       PIL/torchvision DINO preprocessing of real DreamBench photos:
                            Resize(256, BICUBIC) then CenterCrop(224), uint8, lossless PNG

Needs /usr/bin/python3 with PIL, numpy, torch, torchvision (Debian python3-torchvision) and the
photos under ../shared/data/dreambench relative to the repository root. Tests never run this.
Usage: /usr/bin/python3 bench/parity/make_image_fixture.py
"""
import hashlib
import json
import os
import sys

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "images")
DREAMBENCH = os.path.join(REPO, "..", "shared", "data", "dreambench")

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CLIP = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])

# (name, subject/file, crop box applied to the decoded photo before preprocessing or None).
# The 512x388 crop makes the resize non-square (512x388 -> 337x256, int() truncation) and the
# centre crop land on a half pixel ((337-224)/2 = 56.5, Python round -> 56: banker's rounding).
PHOTOS = [
    ("dog", "dog/00.jpg", None),
    ("teapot", "teapot/00.jpg", None),
    ("can", "can/00.jpg", None),
    ("dog_512x388", "dog/00.jpg", (0, 0, 512, 388)),
]

# Direct resizes of the 37x23 synthetic image: (filter name, width, height).
RESIZES = [
    ("bicubic", 74, 46),   # 2x up
    ("bicubic", 50, 31),   # non-integer up
    ("bicubic", 19, 12),   # non-integer down (antialiased support)
    ("bicubic", 7, 5),     # strong down
    ("bicubic", 100, 17),  # up in x, down in y
    ("bicubic", 37, 60),   # width unchanged: PIL skips the horizontal pass
    ("bicubic", 13, 23),   # height unchanged: PIL skips the vertical pass
    ("bilinear", 50, 31),
    ("bilinear", 19, 12),
    ("nearest", 50, 31),
    ("nearest", 19, 12),
]
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def synthetic_pattern(width=37, height=23):
    """Gradients, a checkerboard with saturated extremes (exercises clipping) and LCG noise."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    state = 12345
    for y in range(height):
        for x in range(width):
            state = (state * 1103515245 + 12345) % (1 << 31)
            noise = state >> 23
            checker = 255 if ((x // 3) + (y // 2)) % 2 == 0 else 0
            img[y, x, 0] = (x * 255) // (width - 1)
            img[y, x, 1] = checker if x < width // 2 else noise
            img[y, x, 2] = (y * 255) // (height - 1) ^ (noise & 0x3F)
    return img


def write_safetensors(path, tensors, metadata):
    """Writes the uint8 (U8) and float32 (F32) numpy arrays in insertion order, with metadata."""
    for name, arr in tensors.items():
        assert arr.dtype in (np.dtype("uint8"), np.dtype("<f4")), f"{name}: {arr.dtype}"
    safetensors_io.write_safetensors(path, tensors, metadata, quiet=True)


def main():
    if not os.path.isdir(DREAMBENCH):
        sys.exit(f"missing {DREAMBENCH}: the DreamBench photos are needed to regenerate the fixture")
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    metadata = {
        "generator": "bench/parity/make_image_fixture.py",
        "pillow": PIL.__version__,
        "torchvision": torchvision.__version__,
        "torch": torch.__version__,
    }

    synth = synthetic_pattern()
    Image.fromarray(synth, "RGB").save(os.path.join(OUT, "synthetic_37x23.png"))
    src = Image.open(os.path.join(OUT, "synthetic_37x23.png")).convert("RGB")
    assert np.array_equal(np.asarray(src), synth)
    for name, w, h in RESIZES:
        tensors[f"{name}_{w}x{h}"] = np.asarray(src.resize((w, h), FILTERS[name]))

    values = np.arange(256, dtype=np.uint8)
    chw_in = np.stack([values, values[::-1], (values * 7 + 3) % 256], axis=-1).astype(np.uint8).reshape(16, 16, 3)
    tensors["chw_input"] = chw_in
    for tag, (mean, std) in (("imagenet", IMAGENET), ("clip", CLIP)):
        t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        tensors[f"chw_{tag}"] = t(Image.fromarray(chw_in, "RGB")).numpy().astype("<f4")

    # The DINO evaluation transform (as in the DreamBench evaluation code): bicubic = 3.
    dino = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(224)])
    photos = {}
    for name, rel, box in PHOTOS:
        im = Image.open(os.path.join(DREAMBENCH, rel)).convert("RGB")
        decoded = np.asarray(im)
        entry = {"file": rel, "decoded_sha256": hashlib.sha256(decoded.tobytes()).hexdigest(),
                 "decoded_size": [im.width, im.height]}
        if box is not None:
            im = im.crop(box)
            entry["crop_box"] = list(box)
        resized = transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC)(im)
        entry["resized_size"] = [resized.width, resized.height]
        out = dino(im)
        assert out.size == (224, 224)
        out.save(os.path.join(OUT, f"photo_{name}.png"))
        photos[name] = entry
    metadata["photos"] = json.dumps(photos, sort_keys=True)

    write_safetensors(os.path.join(OUT, "resize_cases.safetensors"), tensors, metadata)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
