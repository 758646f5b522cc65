// Noise schedules and samplers against diffusers itself (v0.31.0 DDIMScheduler /
// EulerDiscreteScheduler run by bench/parity/make_scheduler_fixtures.py, fixture
// tests/fixtures/diffusion/schedulers.safetensors),
// a full DDIM / Euler sampling loop with a perfect model, seeded latents and guidance maths.
//
// Tolerances.
// - Tables (betas, alphas_cumprod, DDIM and Euler timesteps, Euler sigmas, init_noise_sigma,
//   scale_model_input): bit-exact. Karras timesteps: 1e-6 relative (diffusers reads them back
//   through numpy's float32 log, which can differ from a correctly rounded log by an ulp;
//   measured 2.1e-7).
// - Per-element step maths: |ours - torch| <= 1e-6 * max|torch| of the tensor. torch evaluates in
//   float32 with a rounding at every operation, we in float64 with one rounding, so elements near
//   zero differ by up to 7e-5 of their own size, but never by more than ~1.3e-7 of the tensor's
//   largest value (measured; 8x margin). One exception: Euler's first step on a zero-terminal-SNR
//   schedule (sigma = 4096), where x_next is a difference of values ~1e4 and torch's float32
//   result is off by ~1e-3; there we compare with the same formula in float64 (1e-6 of scale)
//   and with torch's float32 at 1e-6 of the largest input.

import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { UserError } from "../../lib/io/errors.ts";
import { Rng } from "../../lib/rng.ts";
import {
  DDIMScheduler, EulerDiscreteScheduler, NoiseSchedule, type SchedulerJson, batchLatents, cfg,
  dualCfg, gaussianLatents, imageSeed, parseSchedulerConfig, readSchedulerConfig, rescaleGuidance,
  roundHalfEven, schedulerFromConfig, spacedTimesteps, splitBatch, torchLinspaceF32,
} from "../../lib/diffusion/index.ts";

const fx = openSafetensors(join(import.meta.dir, "../fixtures/diffusion/schedulers.safetensors"));
const get = (name: string) => fx.float32(name);

const SD: SchedulerJson = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 };
/** SD 1.5's scheduler_config.json (a PNDMScheduler config; DDIM reads its schedule keys). */
const SD15: SchedulerJson = { ...SD, _class_name: "PNDMScheduler", clip_sample: false, set_alpha_to_one: false, steps_offset: 1 };
/** SDXL base's scheduler_config.json. */
const SDXL: SchedulerJson = {
  ...SD, _class_name: "EulerDiscreteScheduler", clip_sample: false, interpolation_type: "linear",
  prediction_type: "epsilon", set_alpha_to_one: false, steps_offset: 1, timestep_spacing: "leading",
  use_karras_sigmas: false,
};
const SCHEDULES: Record<string, SchedulerJson> = {
  scaled_linear: SD,
  linear: { beta_schedule: "linear", beta_start: 0.0001, beta_end: 0.02 },
  cosine: { beta_schedule: "squaredcos_cap_v2" },
  zsnr: { ...SD, rescale_betas_zero_snr: true },
};

function expectExact(name: string, have: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(have.length, name).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (have[i] !== want[i]) throw new Error(`${name}[${i}]: ${have[i]} != ${want[i]}`);
  }
}

function maxAbs(...xs: ArrayLike<number>[]): number {
  let m = 0;
  for (const x of xs) for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
  return m;
}

/** Worst |have - want| / scale; fails above `tol` (scale: max|want| unless given). */
function expectClose(name: string, have: ArrayLike<number>, want: ArrayLike<number>, tol = 1e-6, scale = maxAbs(want)): number {
  expect(have.length, name).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(have[i]! - want[i]!) / scale);
  if (!(worst <= tol)) throw new Error(`${name}: worst error ${worst.toExponential(2)} of scale ${scale.toExponential(2)} exceeds ${tol}`);
  return worst;
}

describe("noise schedules", () => {
  test("betas and alphas_cumprod match diffusers bit for bit", () => {
    for (const [name, json] of Object.entries(SCHEDULES)) {
      const s = NoiseSchedule.fromConfig(json);
      expectExact(`betas.${name}`, s.betas, get(`betas.${name}`));
      expectExact(`ac.${name}`, s.alphasCumprod, get(`ac.${name}`));
    }
    const z = NoiseSchedule.fromConfig(SCHEDULES.zsnr!);
    expect(z.alphasCumprod[999]).toBe(0);
    expect(z.snr(999)).toBe(0);
  });

  test("torch's float32 linspace: endpoints and the scalar path for short ranges", () => {
    const l = torchLinspaceF32(0.1, 0.9, 7);
    expect(l[0]).toBe(Math.fround(0.1));
    expect(l[6]).toBe(Math.fround(0.9));
    expect(Array.from(torchLinspaceF32(3, 5, 1))).toEqual([3]);
  });

  test("SNR per timestep", () => {
    const s = NoiseSchedule.fromConfig(SD);
    // diffusers' compute_snr squares float32 square roots: ~2.7e-7 relative from ours.
    const want = get("snr.scaled_linear");
    const have = s.snrTable();
    for (let t = 0; t < 1000; t++) expect(Math.abs(have[t]! - want[t]!) / want[t]!).toBeLessThan(1e-6);
    expect(s.snr(0)).toBeCloseTo(s.alphasCumprod[0]! / (1 - s.alphasCumprod[0]!), 12);
    // min-SNR-5 weights: 1 at low SNR for epsilon, min(snr, 5) / snr at high SNR.
    expect(s.minSnrWeight(999, 5, "epsilon")).toBe(1);
    expect(s.minSnrWeight(0, 5, "epsilon")).toBeCloseTo(5 / s.snr(0), 12);
    expect(s.minSnrWeight(500, 5, "v_prediction")).toBeCloseTo(Math.min(s.snr(500), 5) / (s.snr(500) + 1), 12);
  });

  test("addNoise and velocity (one timestep per batch item)", () => {
    const s = NoiseSchedule.fromConfig(SD);
    const x0 = get("x0");
    const noise = get("noise");
    const t = Array.from(get("add.t"));
    expectClose("add.noisy", s.addNoise(x0, noise, t), get("add.noisy"));
    expectClose("add.v", s.velocity(x0, noise, t), get("add.v"));
    // One scalar timestep applies to the whole tensor.
    const half = x0.length / 2;
    expectExact("scalar t", s.addNoise(x0, noise, 700).subarray(half), s.addNoise(x0, noise, t).subarray(half));
    expect(() => s.addNoise(x0, noise, [1, 2, 3])).toThrow(/equal batch items/);
    expect(() => s.addNoise(x0, noise, 1000)).toThrow(/not an integer in \[0, 1000\)/);
  });

  test("prediction conversions invert the forward process", () => {
    const s = NoiseSchedule.fromConfig(SD);
    const x0 = get("x0");
    const noise = get("noise");
    for (const t of [0, 10, 500, 999]) {
      const xt = s.addNoise(x0, noise, t);
      const v = s.velocity(x0, noise, t);
      const tol = t === 999 ? 2e-4 : 2e-6; // epsilon -> x0 divides by sqrt(abar) = 0.068 at t = 999
      expectClose(`x0 from eps t${t}`, s.predictedX0(noise, xt, t, "epsilon"), x0, tol);
      expectClose(`x0 from v t${t}`, s.predictedX0(v, xt, t, "v_prediction"), x0, 2e-6);
      expectClose(`eps from v t${t}`, s.predictedEpsilon(v, xt, t, "v_prediction"), noise, 2e-6);
      expectClose(`eps from x0 t${t}`, s.predictedEpsilon(x0, xt, t, "sample"), noise, t === 0 ? 1e-4 : 2e-6);
      expectExact(`target v t${t}`, s.target(x0, noise, t, "v_prediction"), v);
    }
    expectExact("target eps", s.target(x0, noise, 5, "epsilon"), noise);
  });
});

describe("timestep spacing", () => {
  const NS = [1, 2, 3, 7, 10, 25, 30, 50, 61, 100, 103, 250, 1000];

  test("DDIM timesteps for leading (steps_offset 1), trailing and linspace match diffusers", () => {
    for (const spacing of ["leading", "trailing", "linspace"] as const) {
      for (const n of NS) {
        const want = get(`ddim.ts.${spacing}.n${n}`);
        const have = spacedTimesteps(spacing, n, 1000, spacing === "leading" ? 1 : 0, true);
        if (spacing === "trailing" && (n === 61 || n === 103)) {
          // diffusers gets n + 1 timesteps here (np.arange overshoots), the extra one -1.
          expect(want.length).toBe(n + 1);
          expect(want[n]).toBe(-1);
          expectExact(`${spacing} n${n}`, have, want.subarray(0, n));
        } else {
          expectExact(`${spacing} n${n}`, have, want);
        }
      }
    }
  });

  test("SD 1.5's 50 DDIM steps", () => {
    const d = DDIMScheduler.fromConfig(SD15);
    d.setTimesteps(50);
    expect(d.timesteps.length).toBe(50);
    expect(d.timesteps[0]).toBe(981);
    expect(d.timesteps[49]).toBe(1);
    expect(d.finalAlphaCumprod).toBe(d.schedule.alphasCumprod[0]!);
    expect(() => d.setTimesteps(1001)).toThrow(UserError);
  });

  test("numpy rounding is half to even", () => {
    expect([0.5, 1.5, 2.5, 3.49, 3.5, 998.5].map(roundHalfEven)).toEqual([0, 2, 2, 3, 4, 998]);
  });
});

describe("DDIM step", () => {
  const x = get("x");
  const m = get("m");
  const z = get("z");
  const cases = fx.names().filter((n) => n.startsWith("ddim.") && n.endsWith(".prev")).map((n) => n.slice(0, -5));

  test("fixture has the DDIM cases", () => expect(cases.length).toBe(17));

  for (const key of cases) {
    test(key, () => {
      const ptype = key.split(".")[2] as "epsilon" | "v_prediction" | "sample";
      const json: SchedulerJson = key.startsWith("ddim.zsnr")
        ? { ...SCHEDULES.zsnr, timestep_spacing: "trailing", set_alpha_to_one: true, clip_sample: false, prediction_type: ptype }
        : { ...SD15, clip_sample: key.includes(".clip."), prediction_type: ptype };
      const d = DDIMScheduler.fromConfig(json);
      d.setTimesteps(50);
      const i = Number(key.split(".i").pop());
      const t = d.timesteps[i]!;
      expect(t).toBe(get(`${key}.t`)[0]!);
      const r = d.step(m, t, x, key.includes(".eta.") ? { eta: 0.5, noise: z } : {});
      expectClose(`${key}.prev`, r.prevSample, get(`${key}.prev`));
      expectClose(`${key}.x0`, r.predOriginalSample, get(`${key}.x0`));
    });
  }

  test("eta > 0 draws its noise from the Rng, reproducibly", () => {
    const d = DDIMScheduler.fromConfig(SD15);
    d.setTimesteps(50);
    const t = d.timesteps[10]!;
    const a = d.step(m, t, x, { eta: 1, rng: new Rng(3) }).prevSample;
    const b = d.step(m, t, x, { eta: 1, rng: new Rng(3) }).prevSample;
    const c = d.step(m, t, x, { eta: 1, noise: new Rng(3).normals(x.length) }).prevSample;
    expectExact("same seed", a, b);
    expectExact("rng = explicit noise", a, c);
    expect(() => d.step(m, t, x, { eta: 1 })).toThrow(/rng/);
  });
});

describe("Euler", () => {
  const m = get("m");
  const CONFIGS: Record<string, [SchedulerJson, number]> = {
    sdxl: [SDXL, 30],
    linspace: [SD, 30],
    trailing: [{ ...SD, timestep_spacing: "trailing" }, 30],
    karras: [{ ...SDXL, use_karras_sigmas: true }, 25],
    sigma_min: [{ ...SDXL, final_sigmas_type: "sigma_min" }, 30],
    zsnr: [{ ...SCHEDULES.zsnr, timestep_spacing: "trailing" }, 20],
  };
  const make = (name: string, ptype: "epsilon" | "v_prediction" | "sample" = "epsilon") => {
    const [json, n] = CONFIGS[name]!;
    const e = EulerDiscreteScheduler.fromConfig({ ...json, prediction_type: ptype });
    e.setTimesteps(n);
    return e;
  };

  test("sigmas, timesteps and init_noise_sigma match diffusers", () => {
    for (const name of Object.keys(CONFIGS)) {
      const e = make(name);
      expectExact(`euler.${name}.sigmas`, e.sigmas, get(`euler.${name}.sigmas`));
      if (name === "karras") {
        const want = get(`euler.${name}.timesteps`);
        e.timesteps.forEach((t, i) => expect(Math.abs(t - want[i]!)).toBeLessThanOrEqual(1e-6 * Math.max(1, want[i]!)));
      } else {
        expectExact(`euler.${name}.timesteps`, e.timesteps, get(`euler.${name}.timesteps`));
      }
      expect(e.initNoiseSigma).toBe(get(`euler.${name}.init_noise_sigma`)[0]!);
    }
    const sdxl = make("sdxl");
    expect(sdxl.timesteps[0]).toBe(958);
    expect(sdxl.timesteps[29]).toBe(1);
    expect(sdxl.sigmas.length).toBe(31);
    expect(sdxl.sigmas[30]).toBe(0);
  });

  const cases = fx.names().filter((n) => n.startsWith("euler.") && n.endsWith(".prev")).map((n) => n.slice(0, -5));
  test("fixture has the Euler cases", () => expect(cases.length).toBe(12));

  for (const key of cases) {
    test(key, () => {
      const [, name, ptype] = key.split(".") as [string, string, "epsilon" | "v_prediction" | "sample"];
      const e = make(name, ptype);
      const t = e.timesteps[Number(key.split(".i").pop())]!;
      const sample = get(`${key}.sample`);
      expectExact(`${key}.scaled`, e.scaleModelInput(sample, t), get(`${key}.scaled`));
      const r = e.step(m, t, sample);
      expectClose(`${key}.x0`, r.predOriginalSample, get(`${key}.x0`));
      if (fx.has(`${key}.prev64`)) {
        expectClose(`${key}.prev (float64)`, r.prevSample, get(`${key}.prev64`));
        expectClose(`${key}.prev`, r.prevSample, get(`${key}.prev`), 1e-6, maxAbs(sample, m));
      } else {
        expectClose(`${key}.prev`, r.prevSample, get(`${key}.prev`));
      }
    });
  }

  test("timesteps not in the schedule are refused", () => {
    expect(() => make("sdxl").step(m, 500, m)).toThrow(/not in the schedule/);
  });

  test("churn needs an Rng and is reproducible with one", () => {
    const e = make("sdxl");
    const t = e.timesteps[5]!;
    const x = get("x");
    expect(() => e.step(m, t, x, { sChurn: 1 })).toThrow(/rng/);
    const a = e.step(m, t, x, { sChurn: 1, rng: new Rng(1) }).prevSample;
    const b = e.step(m, t, x, { sChurn: 1, rng: new Rng(1) }).prevSample;
    expectExact("churn", a, b);
  });
});

describe("sampling loops with a perfect model", () => {
  // The model knows x0 and answers, at every step, the noise (or v) that explains x_t given x0.
  const rng = new Rng(11);
  const x0 = Float32Array.from({ length: 2 * 4 * 8 * 8 }, () => rng.uniform() * 2 - 1);
  const start = gaussianLatents([2, 4, 8, 8], 5);

  for (const ptype of ["epsilon", "v_prediction"] as const) {
    test(`DDIM 50 steps (${ptype}, set_alpha_to_one) recovers x0 from pure noise`, () => {
      const d = DDIMScheduler.fromConfig({ ...SD15, set_alpha_to_one: true, prediction_type: ptype });
      d.setTimesteps(50);
      let x: Float32Array = start.map((v) => v * d.initNoiseSigma);
      for (const t of d.timesteps) {
        const input = d.scaleModelInput(x, t);
        const [sa, sb] = [Math.sqrt(d.schedule.alphaBar(t)), Math.sqrt(1 - d.schedule.alphaBar(t))];
        const eps = input.map((xt, i) => (xt - sa * x0[i]!) / sb);
        const out = ptype === "epsilon" ? eps : eps.map((e, i) => sa * e - sb * x0[i]!);
        x = d.step(out, t, x).prevSample;
      }
      expectClose("x0", x, x0, 1e-5);
    });
  }

  test("DDIM with SD 1.5's config ends one step short of x0 (abar_0, not 1)", () => {
    const d = DDIMScheduler.fromConfig(SD15);
    d.setTimesteps(50);
    const noise = gaussianLatents([x0.length], 9);
    let x = d.schedule.addNoise(x0, noise, d.timesteps[0]!);
    let last = x;
    for (const t of d.timesteps) {
      const r = d.step(noise, t, x);
      last = r.predOriginalSample;
      x = r.prevSample;
    }
    expectClose("x0_hat", last, x0, 1e-5);
    expectClose("x_final", x, d.schedule.addNoise(x0, noise, 0), 1e-5);
  });

  test("Euler 30 steps (SDXL config) recovers x0 from pure noise", () => {
    const e = EulerDiscreteScheduler.fromConfig(SDXL);
    e.setTimesteps(30);
    let x: Float32Array = start.map((v) => v * e.initNoiseSigma);
    for (const t of e.timesteps) {
      const input = e.scaleModelInput(x, t); // the VP-scaled latent the UNet sees
      const sigma = e.sigma(t);
      const sa = 1 / Math.sqrt(sigma * sigma + 1);
      const sb = sigma * sa;
      const eps = input.map((xt, i) => (xt - sa * x0[i]!) / sb);
      x = e.step(eps, t, x).prevSample;
    }
    expectClose("x0", x, x0, 1e-5);
  });

  test("schedulerFromConfig picks the sampler by class and both share the interface", () => {
    expect(schedulerFromConfig(SDXL)).toBeInstanceOf(EulerDiscreteScheduler);
    expect(schedulerFromConfig(SD15)).toBeInstanceOf(DDIMScheduler);
    expect(schedulerFromConfig(SDXL, "ddim")).toBeInstanceOf(DDIMScheduler);
    const d = schedulerFromConfig(SD15);
    d.setTimesteps(10);
    expect(d.scaleModelInput(x0, d.timesteps[0]!)).toBe(x0);
    expect(d.initNoiseSigma).toBe(1);
  });
});

describe("scheduler config", () => {
  test("reads a scheduler_config.json; unknown keys are ignored, bad ones named", () => {
    const dir = mkdtempSync(join(tmpdir(), "patchdpo-sched-"));
    try {
      const path = join(dir, "scheduler_config.json");
      writeFileSync(path, JSON.stringify({ ...SDXL, _diffusers_version: "0.19.0", skip_prk_steps: true, trained_betas: null, sample_max_value: 1 }));
      const json = readSchedulerConfig(path);
      expect(json.timestep_spacing).toBe("leading");
      expect(json.trained_betas).toBeUndefined();
      writeFileSync(path, JSON.stringify({ beta_schedule: "cosine" }));
      expect(() => readSchedulerConfig(path)).toThrow(/scheduler_config\.json: "beta_schedule" is "cosine"; expected one of "linear"/);
      writeFileSync(path, "{");
      expect(() => readSchedulerConfig(path)).toThrow(UserError);
      expect(() => readSchedulerConfig(join(dir, "missing.json"))).toThrow(/cannot read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => parseSchedulerConfig({ steps_offset: -1 })).toThrow(/steps_offset/);
    expect(() => parseSchedulerConfig({ num_train_timesteps: 3, trained_betas: [0.1, 0.2] })).toThrow(/trained_betas/);
    expect(() => DDIMScheduler.fromConfig({ thresholding: true })).toThrow(UserError);
    expect(() => EulerDiscreteScheduler.fromConfig({ use_exponential_sigmas: true })).toThrow(UserError);
  });

  test("class defaults: DDIM leading + clip_sample + alpha one, Euler linspace", () => {
    const d = DDIMScheduler.fromConfig({});
    expect(d.config).toEqual({ timestepSpacing: "leading", stepsOffset: 0, setAlphaToOne: true, clipSample: true, clipSampleRange: 1 });
    expect(EulerDiscreteScheduler.fromConfig({}).config.timestepSpacing).toBe("linspace");
    const tb = NoiseSchedule.fromConfig({ num_train_timesteps: 4, trained_betas: [0.1, 0.2, 0.3, 0.4] });
    expectExact("trained betas", tb.betas, Float32Array.from([0.1, 0.2, 0.3, 0.4]));
  });
});

describe("seeded latents", () => {
  test("same seed, same numbers; pinned values", () => {
    const a = gaussianLatents([1, 4, 16, 16], 42);
    expectExact("repeat", a, gaussianLatents([1, 4, 16, 16], 42));
    expect(Array.from(a.subarray(0, 4))).toEqual([1.0271775722503662, 1.0517370700836182, 0.19312959909439087, -0.44676268100738525]);
    const b = gaussianLatents([1, 4, 16, 16], 43);
    expect(a.some((v, i) => v !== b[i])).toBe(true);
  });

  test("standard normal statistics", () => {
    const a = gaussianLatents([4, 4, 64, 64], 1);
    let mean = 0;
    for (const v of a) mean += v;
    mean /= a.length;
    let varSum = 0;
    for (const v of a) varSum += (v - mean) ** 2;
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.abs(Math.sqrt(varSum / a.length) - 1)).toBeLessThan(0.01);
  });

  test("per-image seeds: stable, distinct, independent of the batch", () => {
    expect(imageSeed(0, "teapot-3")).toBe(2577671159);
    expect(imageSeed(0, "teapot-4")).toBe(328227235);
    expect(imageSeed(1, "teapot-3")).toBe(4215995712);
    expect(imageSeed(12345, 7)).toBe(imageSeed(12345, "7"));
    const seeds = ["a", "b", "c"].map((id) => imageSeed(7, id));
    expect(new Set(seeds).size).toBe(3);
    const batch = batchLatents([4, 8, 8], seeds);
    expectExact("image 1 alone", batch.subarray(256, 512), gaussianLatents([4, 8, 8], seeds[1]!));
    expect(() => gaussianLatents([4, 0], 1)).toThrow(/positive integers/);
  });
});

describe("guidance", () => {
  const r = new Rng(2);
  const u = r.normals(64);
  const c = r.normals(64);
  const im = r.normals(64);

  test("cfg: uncond + s (cond - uncond)", () => {
    expectExact("s=1", cfg(u, c, 1), c);
    expectExact("s=0", cfg(u, c, 0), u);
    const g = cfg(u, c, 7.5);
    for (let i = 0; i < 64; i++) expect(g[i]!).toBeCloseTo(u[i]! + 7.5 * (c[i]! - u[i]!), 5);
    expect(() => cfg(u, c.subarray(1), 2)).toThrow(/lengths/);
  });

  test("dual image/text guidance", () => {
    const g = dualCfg(u, im, c, 3, 7.5);
    for (let i = 0; i < 64; i++) expect(g[i]!).toBeCloseTo(u[i]! + 3 * (im[i]! - u[i]!) + 7.5 * (c[i]! - im[i]!), 5);
    // Equal scales: plain CFG between the unconditional and the fully conditioned outputs.
    expectClose("equal scales", dualCfg(u, im, c, 5, 5), cfg(u, c, 5), 1e-6);
    expectExact("sImage only, sText 1 at full image", dualCfg(u, im, c, 1, 1), c);
  });

  test("guidance rescale matches the std of the conditional output per batch item", () => {
    const g = cfg(u, c, 9);
    expectExact("phi 0", rescaleGuidance(g, c, 0, 2), g);
    const out = rescaleGuidance(g, c, 1, 2);
    const std = (x: Float32Array) => {
      const mu = x.reduce((s, v) => s + v, 0) / x.length;
      return Math.sqrt(x.reduce((s, v) => s + (v - mu) ** 2, 0) / x.length);
    };
    for (const [o, cc] of [[out.subarray(0, 32), c.subarray(0, 32)], [out.subarray(32), c.subarray(32)]] as const) {
      expect(std(o)).toBeCloseTo(std(cc), 5);
    }
    const half = rescaleGuidance(g, c, 0.7, 2);
    const k = (0.7 * std(c.subarray(0, 32))) / std(g.subarray(0, 32)) + 0.3;
    expect(half[0]!).toBeCloseTo(g[0]! * k, 5);
  });

  test("splitBatch gives views of the halves", () => {
    const both = new Float32Array([...u, ...c]);
    const [a, b] = splitBatch(both, 2);
    expectExact("uncond", a!, u);
    expectExact("cond", b!, c);
    expect(a!.buffer).toBe(both.buffer);
    expect(() => splitBatch(both, 3)).toThrow(/equal parts/);
  });
});
