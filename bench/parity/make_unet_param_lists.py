#!/usr/bin/python3
"""Weight-name lists of diffusers' UNet2DConditionModel and AutoencoderKL for the standard configs,
from diffusers itself (v0.31.0, pinned in bench/parity/upstream.py).

Writes tests/fixtures/diffusers/{sd15-unet,sdxl-unet,sd-vae}.params.txt ("name shape" per line,
shape as comma-separated dimensions, in state-dict order) from the config fixtures next to them
(sd15-unet.config.json and sd-vae.config.json from runwayml/stable-diffusion-v1-5,
sdxl-unet.config.json from stabilityai/stable-diffusion-xl-base-1.0): the models are built by
diffusers' from_config with their parameters on the meta device (upstream.empty_weights), and
their state_dict() is listed. Known counts asserted: SD 1.5 UNet 686 tensors / 859,520,964
parameters (diffusers' own num_parameters docstring), SD VAE 248 tensors / 83,653,863, SDXL UNet
1680 tensors / 2,567,463,684.

Regenerate:
  /usr/bin/python3 bench/parity/fetch_upstream.py
  OMP_NUM_THREADS=2 /usr/bin/python3 bench/parity/make_unet_param_lists.py [--check]
(--check compares with the committed lists instead of writing them.)
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import upstream  # noqa: E402

upstream.setup()

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures", "diffusers")


def shapes_of(cls, config_file):
    cfg = json.load(open(os.path.join(FIX, config_file)))
    with upstream.empty_weights():
        model = cls.from_config(cfg)
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def write(name, shapes, check):
    path = os.path.join(FIX, name)
    text = "".join(f"{k} {','.join(str(d) for d in s)}\n" for k, s in shapes)
    total = sum(math.prod(s) for _, s in shapes)
    if check:
        same = open(path).read() == text
        print(f"{os.path.relpath(path, REPO)}: {'identical to' if same else 'DIFFERS from'} diffusers' state_dict "
              f"({len(shapes)} tensors, {total:,} parameters)")
    else:
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path, REPO)}: {len(shapes)} tensors, {total:,} parameters")
    return len(shapes), total


def main():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    check = "--check" in sys.argv[1:]
    assert write("sd15-unet.params.txt", shapes_of(UNet2DConditionModel, "sd15-unet.config.json"), check) == (686, 859_520_964)
    assert write("sdxl-unet.params.txt", shapes_of(UNet2DConditionModel, "sdxl-unet.config.json"), check) == (1680, 2_567_463_684)
    assert write("sd-vae.params.txt", shapes_of(AutoencoderKL, "sd-vae.config.json"), check) == (248, 83_653_863)


if __name__ == "__main__":
    main()
