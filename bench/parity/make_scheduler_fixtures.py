#!/usr/bin/python3
"""Golden scheduler fixtures for tests/diffusion/schedulers.test.ts.

diffusers is not installed here, so this is a torch transcription of the formulas of diffusers'
schedulers, read at huggingface/diffusers commit 58eb52c0803ea9af3abec60841c2a093bdf1f951:
  src/diffusers/schedulers/scheduling_ddim.py            (betas, rescale_zero_terminal_snr,
                                                          set_timesteps, step, add_noise, get_velocity)
  src/diffusers/schedulers/scheduling_euler_discrete.py  (sigmas, set_timesteps with linear
                                                          interpolation and Karras sigmas,
                                                          _sigma_to_t, init_noise_sigma,
                                                          scale_model_input, step)
  src/diffusers/training_utils.py                        (compute_snr)
It keeps their dtypes and order of operations: betas by torch.linspace in float32, alphas and
alphas_cumprod as float32 tensors, timesteps through numpy exactly as set_timesteps does, and
the step maths in float32 tensor arithmetic (what a diffusers user on CPU gets). Tests compare
our float64-per-element evaluation against these float32 results (tolerances in the test).

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
  ddim.<case>.t, .prev, .x0          DDIM steps (cases below, config in the metadata)
  euler.<cfg>.sigmas, .timesteps, .init_noise_sigma     Euler after set_timesteps
  euler.<case>.t, .sample, .scaled, .prev, .x0           Euler steps (scale_model_input, step)
  euler.zsnr.v_prediction.i0.prev64                      that step evaluated in float64

Needs /usr/bin/python3 with torch (Debian python3-torch 1.13) and numpy. Writes with the shared
minimal writer bench/parity/safetensors_io.py (tensors sorted by name, compact JSON header), so
the output does not depend on whether the `safetensors` package is installed.
Usage: OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_scheduler_fixtures.py
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)

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


# ---------------------------------------------------------------------------------- schedules

def make_betas(schedule, T=1000, beta_start=0.0001, beta_end=0.02, zero_snr=False):
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=F32)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=F32) ** 2
    else:  # squaredcos_cap_v2: glide's cosine alpha_bar, betas capped at 0.999, in float64
        abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=F32)
    if zero_snr:  # Lin et al. 2023, Algorithm 1, in float32
        sqrt_bar = torch.cumprod(1.0 - betas, dim=0).sqrt()
        first, last = sqrt_bar[0].clone(), sqrt_bar[-1].clone()
        sqrt_bar = (sqrt_bar - last) * (first / (first - last))
        bar = sqrt_bar ** 2
        alphas = torch.cat([bar[0:1], bar[1:] / bar[:-1]])
        betas = 1 - alphas
    return betas


def alphas_cumprod(betas):
    return torch.cumprod(1.0 - betas, dim=0)


# ------------------------------------------------------------------------------------ DDIM

def ddim_timesteps(spacing, n, T=1000, steps_offset=0):
    if spacing == "linspace":
        return np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = T // n
        return (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) + steps_offset
    ratio = T / n  # trailing
    return np.round(np.arange(T, 0, -ratio)).astype(np.int64) - 1


def ddim_step(ac, final_ac, T, n, model_output, t, sample, prediction_type, eta=0.0, noise=None, clip=None):
    prev_t = t - T // n
    a_t = ac[t]
    a_prev = ac[prev_t] if prev_t >= 0 else final_ac
    b_t = 1 - a_t
    if prediction_type == "epsilon":
        x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5
        eps = model_output
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - a_t ** 0.5 * x0) / b_t ** 0.5
    else:
        x0 = a_t ** 0.5 * sample - b_t ** 0.5 * model_output
        eps = a_t ** 0.5 * model_output + b_t ** 0.5 * sample
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    variance = ((1 - a_prev) / b_t) * (1 - a_t / a_prev)
    std = eta * variance ** 0.5
    prev = a_prev ** 0.5 * x0 + (1 - a_prev - std ** 2) ** 0.5 * eps
    if eta > 0:
        prev = prev + std * noise
    return prev, x0


# ----------------------------------------------------------------------------------- Euler

def euler_set_timesteps(ac, spacing, n, T=1000, steps_offset=0, karras=False, final="zero"):
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n, dtype=np.float32)[::-1].copy()
    elif spacing == "leading":
        ratio = T // n
        ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.float32) + steps_offset
    else:
        ratio = T / n
        ts = np.arange(T, 0, -ratio).round().copy().astype(np.float32) - 1
    table = np.array(((1 - ac) / ac) ** 0.5)  # float32
    log_table = np.log(table)
    sigmas = np.interp(ts, np.arange(0, len(table)), table)
    if karras:
        lo, hi, rho = sigmas[-1].item(), sigmas[0].item(), 7.0
        ramp = np.linspace(0, 1, n)
        sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        ts = np.array([sigma_to_t(s, log_table) for s in sigmas])
    last = ((1 - ac[0]) / ac[0]) ** 0.5 if final == "sigma_min" else 0
    sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
    return torch.from_numpy(sigmas), torch.from_numpy(ts.astype(np.float32))


def sigma_to_t(sigma, log_table):
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_table[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_table.shape[0] - 2)
    lo, hi = log_table[low], log_table[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(np.shape(sigma))


def euler_init_noise_sigma(sigmas, spacing):
    m = sigmas.max()
    return m if spacing in ("linspace", "trailing") else (m ** 2 + 1) ** 0.5


def euler_step(sigmas, i, model_output, sample, prediction_type):
    sigma = sigmas[i]
    scaled = sample / ((sigma ** 2 + 1) ** 0.5)
    sigma_hat = sigma * (0.0 + 1)
    if prediction_type == "epsilon":
        x0 = sample - sigma_hat * model_output
    elif prediction_type == "v_prediction":
        x0 = model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (sample / (sigma ** 2 + 1))
    else:
        x0 = model_output
    derivative = (sample - x0) / sigma_hat
    dt = sigmas[i + 1] - sigma_hat
    return scaled, sample + derivative * dt, x0


# ------------------------------------------------------------------------------------- main

def main():
    out = {}
    meta = {
        "generator": "bench/parity/make_scheduler_fixtures.py",
        "diffusers_commit": "58eb52c0803ea9af3abec60841c2a093bdf1f951",
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    configs = {
        "scaled_linear": dict(schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        "linear": dict(schedule="linear", beta_start=0.0001, beta_end=0.02),
        "cosine": dict(schedule="squaredcos_cap_v2"),
        "zsnr": dict(schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, zero_snr=True),
    }
    acs = {}
    for name, c in configs.items():
        b = make_betas(**c)
        out[f"betas.{name}"] = b
        acs[name] = out[f"ac.{name}"] = alphas_cumprod(b)
    ac = acs["scaled_linear"]
    # compute_snr: (sqrt(abar) / sqrt(1 - abar))^2 in float32
    out["snr.scaled_linear"] = (ac ** 0.5 / (1.0 - ac) ** 0.5) ** 2

    for spacing in ("leading", "trailing", "linspace"):
        for n in (1, 2, 3, 7, 10, 25, 30, 50, 61, 100, 103, 250, 1000):
            out[f"ddim.ts.{spacing}.n{n}"] = torch.from_numpy(ddim_timesteps(spacing, n, steps_offset=1 if spacing == "leading" else 0))

    g = torch.Generator().manual_seed(7)
    shape = (2, 4, 4, 4)
    x = torch.randn(shape, generator=g, dtype=F32)
    m = torch.randn(shape, generator=g, dtype=F32)
    x0 = torch.randn(shape, generator=g, dtype=F32) * 0.8
    noise = torch.randn(shape, generator=g, dtype=F32)
    z = torch.randn(shape, generator=g, dtype=F32)
    out.update(x=x, m=m, x0=x0, noise=noise, z=z)

    # add_noise / get_velocity with one timestep per batch item
    t = torch.tensor([10, 700])
    sa = (ac[t] ** 0.5).reshape(-1, 1, 1, 1)
    sb = ((1 - ac[t]) ** 0.5).reshape(-1, 1, 1, 1)
    out["add.t"] = t
    out["add.noisy"] = sa * x0 + sb * noise
    out["add.v"] = sa * noise - sb * x0

    # DDIM: SD 1.5's config (scaled_linear, set_alpha_to_one false, steps_offset 1, leading), 50 steps
    sd15 = acs["scaled_linear"]
    final_sd15 = sd15[0]
    ts = ddim_timesteps("leading", 50, steps_offset=1)
    cases = []
    for ptype in ("epsilon", "v_prediction", "sample"):
        for i in (0, 1, 25, 49):
            cases.append((f"ddim.sd15.{ptype}.i{i}", sd15, final_sd15, 50, int(ts[i]), ptype, 0.0, None))
    cases.append(("ddim.sd15.epsilon.clip.i10", sd15, final_sd15, 50, int(ts[10]), "epsilon", 0.0, 1.0))
    cases.append(("ddim.sd15.epsilon.eta.i10", sd15, final_sd15, 50, int(ts[10]), "epsilon", 0.5, None))
    # trailing spacing, zero terminal SNR, v-prediction, set_alpha_to_one true (SD 2.x-style fix)
    tz = ddim_timesteps("trailing", 50)
    for i in (0, 1, 49):
        cases.append((f"ddim.zsnr.v_prediction.i{i}", acs["zsnr"], torch.tensor(1.0), 50, int(tz[i]), "v_prediction", 0.0, None))
    for name, a, fin, n, tt, ptype, eta, clip in cases:
        prev, px0 = ddim_step(a, fin, 1000, n, m, tt, x, ptype, eta=eta, noise=z, clip=clip)
        out[f"{name}.t"] = torch.tensor([tt])
        out[f"{name}.prev"] = prev
        out[f"{name}.x0"] = px0

    # Euler: SDXL's config (scaled_linear, leading, steps_offset 1, linear interpolation), 30 steps,
    # and variations: linspace spacing (fractional timesteps), trailing, Karras sigmas, zero SNR.
    euler_cfgs = {
        "sdxl": dict(a=sd15, spacing="leading", n=30, steps_offset=1),
        "linspace": dict(a=sd15, spacing="linspace", n=30),
        "trailing": dict(a=sd15, spacing="trailing", n=30),
        "karras": dict(a=sd15, spacing="leading", n=25, steps_offset=1, karras=True),
        "sigma_min": dict(a=sd15, spacing="leading", n=30, steps_offset=1, final="sigma_min"),
    }
    zac = acs["zsnr"].clone()
    zac[-1] = 2 ** -24
    euler_cfgs["zsnr"] = dict(a=zac, spacing="trailing", n=20)
    sched = {}
    for name, c in euler_cfgs.items():
        sigmas, tts = euler_set_timesteps(c["a"], c["spacing"], c["n"], steps_offset=c.get("steps_offset", 0),
                                          karras=c.get("karras", False), final=c.get("final", "zero"))
        sched[name] = (sigmas, tts)
        out[f"euler.{name}.sigmas"] = sigmas
        out[f"euler.{name}.timesteps"] = tts
        out[f"euler.{name}.init_noise_sigma"] = torch.as_tensor(euler_init_noise_sigma(sigmas, c["spacing"])).reshape(1)
    for cfg, ptype, idx in (("sdxl", "epsilon", (0, 1, 15, 29)), ("sdxl", "v_prediction", (0, 15, 29)),
                            ("sdxl", "sample", (3,)), ("karras", "epsilon", (0, 24)), ("zsnr", "v_prediction", (0, 19))):
        sigmas, tts = sched[cfg]
        for i in idx:
            sample = x * (sigmas[i] ** 2 + 1) ** 0.5
            scaled, prev, px0 = euler_step(sigmas, i, m, sample, ptype)
            key = f"euler.{cfg}.{ptype}.i{i}"
            out[f"{key}.t"] = tts[i].reshape(1)
            out[f"{key}.sample"] = sample
            out[f"{key}.scaled"] = scaled
            out[f"{key}.prev"] = prev
            out[f"{key}.x0"] = px0
            if cfg == "zsnr" and i == 0:
                # sigma = 4096: x_next is a difference of values ~1e4, so float32 evaluation loses
                # ~1e-3 absolute; the same formula in float64 (float32 inputs and sigmas) is kept
                # too, to hold our float64 evaluation to a tight tolerance.
                _, prev64, _ = euler_step(sigmas.double(), i, m.double(), sample.double(), ptype)
                out[f"{key}.prev64"] = prev64

    write_safetensors(OUT, out, meta)


if __name__ == "__main__":
    main()
