#!/usr/bin/python3
"""Golden scheduler fixtures for tests/diffusion/schedulers.test.ts, from diffusers itself.

Regenerate (needs the upstream sources, see bench/parity/README.md):
  /usr/bin/python3 bench/parity/fetch_upstream.py
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_scheduler_fixtures.py [--check]
(--check compares with the committed fixture instead of writing it.)

Every table and step comes from diffusers' own scheduler classes (v0.31.0, pinned in
bench/parity/upstream.py; their code differs from main's only in annotations, docstrings and
options not used here): DDIMScheduler (betas, alphas_cumprod, rescale_betas_zero_snr,
set_timesteps, step, add_noise, get_velocity), EulerDiscreteScheduler (sigmas, set_timesteps with
linear interpolation, Karras sigmas and final_sigmas_type, init_noise_sigma, scale_model_input,
step) and diffusers.training_utils.compute_snr, on CPU in float32 as a diffusers user gets them.
Tests compare our float64-per-element evaluation against these float32 results (tolerances in the
test). One value is not diffusers' output: "euler.zsnr.v_prediction.i0.prev64", Euler's step
formula (x0 from v, x + (x - x0) / sigma * (sigma_next - sigma)) evaluated in float64 on the same
float32 inputs, because diffusers' step upcasts to float32 whatever the input dtype; the generator
asserts it agrees with diffusers' float32 step to float32 accuracy.

Writes tests/fixtures/diffusion/schedulers.safetensors (all tensors F32; integer timesteps are
exact in F32). Names:
  betas.<s>, ac.<s>                  s = scaled_linear (0.00085, 0.012), linear (1e-4, 0.02),
                                     cosine (squaredcos_cap_v2), zsnr (scaled_linear rescaled to
                                     zero terminal SNR)
  snr.scaled_linear                  compute_snr at t = 0..999
  ddim.ts.<spacing>.n<k>             DDIMScheduler timesteps (leading with steps_offset 1); kept
                                     exactly as diffusers returns them (trailing n61 has 62 values)
  x, m, x0, noise, z                 random float32 arrays [2, 4, 4, 4] (sample, model output,
                                     clean sample, noise, variance noise)
  add.t, add.noisy, add.v            add_noise / get_velocity with per-item timesteps [10, 700]
  ddim.<case>.t, .prev, .x0          DDIM steps (cases below)
  euler.<cfg>.sigmas, .timesteps, .init_noise_sigma     Euler after set_timesteps
  euler.<case>.t, .sample, .scaled, .prev, .x0           Euler steps (scale_model_input, step)
  euler.zsnr.v_prediction.i0.prev64                      that step evaluated in float64 (above)

Needs /usr/bin/python3 with torch (Debian python3-torch 1.13) and numpy. Writes with the shared
minimal writer bench/parity/safetensors_io.py (tensors sorted by name, compact JSON header).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)
import upstream  # noqa: E402  (bench/parity/upstream.py)

upstream.setup()

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "diffusion", "schedulers.safetensors")
F32 = torch.float32


def write_safetensors(path, tensors, metadata):
    """Writes every value as F32 (0-d values as shape [1]), sorted by name, with metadata."""
    arrays = {}
    for name in sorted(tensors):
        t = torch.as_tensor(tensors[name]).detach().to(F32)
        arrays[name] = (t.reshape(-1) if t.dim() == 0 else t).contiguous().numpy().astype("<f4")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safetensors_io.write_safetensors(path, arrays, metadata)


# --------------------------------------------------------------------------------- diffusers

SD15 = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
BETAS = {
    "scaled_linear": SD15,
    "linear": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "cosine": dict(beta_schedule="squaredcos_cap_v2"),
    "zsnr": dict(SD15, rescale_betas_zero_snr=True),
}


def ddim(**kw):
    from diffusers import DDIMScheduler
    cfg = dict(SD15, clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    cfg.update(kw)
    return DDIMScheduler(**cfg)


def euler(**kw):
    from diffusers import EulerDiscreteScheduler
    cfg = dict(SD15, timestep_spacing="leading", steps_offset=1, interpolation_type="linear")
    cfg.update(kw)
    return EulerDiscreteScheduler(**cfg)


def euler_step64(sigmas, i, model_output, sample):
    """Euler's step for v-prediction (EulerDiscreteScheduler.step, s_churn 0) in float64."""
    sigma, nxt = sigmas[i].double(), sigmas[i + 1].double()
    m, x = model_output.double(), sample.double()
    x0 = m * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
    return x + (x - x0) / sigma * (nxt - sigma)


# ------------------------------------------------------------------------------------- main

def build():
    from diffusers.training_utils import compute_snr
    out = {}
    for name, c in BETAS.items():
        sch = ddim(**c)
        out[f"betas.{name}"] = sch.betas
        out[f"ac.{name}"] = sch.alphas_cumprod
    out["snr.scaled_linear"] = compute_snr(ddim(), torch.arange(1000))

    for spacing in ("leading", "trailing", "linspace"):
        for n in (1, 2, 3, 7, 10, 25, 30, 50, 61, 100, 103, 250, 1000):
            sch = ddim(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
            sch.set_timesteps(n)
            out[f"ddim.ts.{spacing}.n{n}"] = sch.timesteps

    g = torch.Generator().manual_seed(7)
    shape = (2, 4, 4, 4)
    x = torch.randn(shape, generator=g, dtype=F32)
    m = torch.randn(shape, generator=g, dtype=F32)
    x0 = torch.randn(shape, generator=g, dtype=F32) * 0.8
    noise = torch.randn(shape, generator=g, dtype=F32)
    z = torch.randn(shape, generator=g, dtype=F32)
    out.update(x=x, m=m, x0=x0, noise=noise, z=z)

    # add_noise / get_velocity with one timestep per batch item (SD 1.5's schedule)
    t = torch.tensor([10, 700])
    out["add.t"] = t
    out["add.noisy"] = ddim().add_noise(x0, noise, t)
    out["add.v"] = ddim().get_velocity(x0, noise, t)

    # DDIM: SD 1.5's config (scaled_linear, set_alpha_to_one false, steps_offset 1, leading), 50 steps;
    # then trailing spacing, zero terminal SNR, v-prediction, set_alpha_to_one true (SD 2.x-style fix).
    cases = []
    for ptype in ("epsilon", "v_prediction", "sample"):
        for i in (0, 1, 25, 49):
            cases.append((f"ddim.sd15.{ptype}.i{i}", dict(prediction_type=ptype), i, 0.0))
    cases.append(("ddim.sd15.epsilon.clip.i10", dict(prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0), 10, 0.0))
    cases.append(("ddim.sd15.epsilon.eta.i10", dict(prediction_type="epsilon"), 10, 0.5))
    for i in (0, 1, 49):
        cases.append((f"ddim.zsnr.v_prediction.i{i}", dict(BETAS["zsnr"], prediction_type="v_prediction", timestep_spacing="trailing",
                                                          steps_offset=0, set_alpha_to_one=True), i, 0.0))
    for name, kw, i, eta in cases:
        sch = ddim(**kw)
        sch.set_timesteps(50)
        tt = sch.timesteps[i]
        r = sch.step(m, tt, x, eta=eta, variance_noise=z if eta > 0 else None)
        out[f"{name}.t"] = tt.reshape(1)
        out[f"{name}.prev"] = r.prev_sample
        out[f"{name}.x0"] = r.pred_original_sample

    # Euler: SDXL's config (scaled_linear, leading, steps_offset 1, linear interpolation), 30 steps,
    # and variations: linspace spacing (fractional timesteps), trailing, Karras sigmas, final sigma
    # sigma_min, zero terminal SNR.
    euler_cfgs = {
        "sdxl": (dict(), 30),
        "linspace": (dict(timestep_spacing="linspace", steps_offset=0), 30),
        "trailing": (dict(timestep_spacing="trailing", steps_offset=0), 30),
        "karras": (dict(use_karras_sigmas=True), 25),
        "sigma_min": (dict(final_sigmas_type="sigma_min"), 30),
        "zsnr": (dict(BETAS["zsnr"], timestep_spacing="trailing", steps_offset=0), 20),
    }
    for name, (kw, n) in euler_cfgs.items():
        sch = euler(**kw)
        sch.set_timesteps(n)
        out[f"euler.{name}.sigmas"] = sch.sigmas
        out[f"euler.{name}.timesteps"] = sch.timesteps
        out[f"euler.{name}.init_noise_sigma"] = torch.as_tensor(sch.init_noise_sigma).reshape(1)
    for cfg, ptype, idx in (("sdxl", "epsilon", (0, 1, 15, 29)), ("sdxl", "v_prediction", (0, 15, 29)),
                            ("sdxl", "sample", (3,)), ("karras", "epsilon", (0, 24)), ("zsnr", "v_prediction", (0, 19))):
        kw, n = euler_cfgs[cfg]
        for i in idx:
            sch = euler(**kw, prediction_type=ptype)
            sch.set_timesteps(n)
            tt = sch.timesteps[i]
            sample = x * (sch.sigmas[i] ** 2 + 1) ** 0.5
            scaled = sch.scale_model_input(sample, tt)
            assert sch.step_index == i
            r = sch.step(m, tt, sample)
            key = f"euler.{cfg}.{ptype}.i{i}"
            out[f"{key}.t"] = tt.reshape(1)
            out[f"{key}.sample"] = sample
            out[f"{key}.scaled"] = scaled
            out[f"{key}.prev"] = r.prev_sample
            out[f"{key}.x0"] = r.pred_original_sample
            if cfg == "zsnr" and i == 0:
                # sigma = 4096: x_next is a difference of values ~1e4, so float32 evaluation loses
                # ~1e-3 absolute; the same formula in float64 (float32 inputs and sigmas) is kept
                # too, to hold our float64 evaluation to a tight tolerance.
                prev64 = euler_step64(sch.sigmas, i, m, sample)
                gap = (prev64 - r.prev_sample.double()).abs().max().item() / sample.abs().max().item()
                assert gap < 1e-6, f"float64 Euler step vs diffusers: {gap}"
                out[f"{key}.prev64"] = prev64
    return out


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out = build()
    if "--check" in sys.argv[1:]:
        meta, t = upstream.read_fixture(OUT)
        d = upstream.Diff("schedulers.safetensors")
        assert sorted(t) == sorted(out), sorted(set(t) ^ set(out))
        exact = 0
        for k in sorted(out):
            have = torch.as_tensor(out[k]).double().reshape(t[k].shape)
            d.add(k, have, t[k])
            exact += bool((have.to(F32) == t[k].to(F32)).all())
        print(f"{d}; {exact} of {len(out)} tensors bit-identical")
        return
    meta = {
        "generator": "bench/parity/make_scheduler_fixtures.py",
        "upstream": upstream.provenance("diffusers"),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    write_safetensors(OUT, out, meta)


if __name__ == "__main__":
    main()
