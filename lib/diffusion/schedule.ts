// Noise schedules of discrete-time diffusion models (DDPM / latent diffusion), read from a diffusers
// `scheduler/scheduler_config.json`, and the host-side maths on them: the forward (noising)
// process used in training, the v target, conversions between epsilon / v / sample predictions,
// SNR and min-SNR weights. Also the pieces the samplers share: the config reader, timestep spacing
// and the Scheduler interface (lib/diffusion/ddim.ts, lib/diffusion/euler.ts).
//
// Written from diffusers' schedulers (src/diffusers/schedulers/scheduling_ddim.py and
// scheduling_euler_discrete.py, commit 58eb52c0803ea9af3abec60841c2a093bdf1f951) and checked
// against a torch transcription of them (bench/parity/make_scheduler_fixtures.py).
//
// Precision. The tables (betas, alphas, alphas_cumprod, timesteps, sigmas) reproduce what
// diffusers builds, in float32 and in torch's order of operations, so that a model sees the very
// timesteps and noise levels it saw in diffusers: betas through torch's float32 linspace, alphas =
// 1 - betas in float32, alphas_cumprod by torch's CPU cumprod (a float64 running product stored as
// float32 at each step). Per-element maths on latents (addNoise, the samplers' steps) takes the
// float32 coefficients diffusers takes and evaluates each element in float64, rounding once:
// within ~2 float32 ulps of diffusers, whose float32 evaluation rounds at every operation.

import { readFileSync } from "node:fs";
import { UserError } from "../io/errors.ts";
import type { Rng } from "../rng.ts";

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
export type PredictionType = "epsilon" | "v_prediction" | "sample";
export type TimestepSpacing = "leading" | "trailing" | "linspace";

/**
 * The keys of a diffusers `scheduler_config.json` that we read, under diffusers' names. Every key
 * is optional: a missing one takes the default of the scheduler class built from it (DDIM and
 * Euler differ: `timestep_spacing` is "leading" for DDIM and "linspace" for Euler, as in diffusers).
 * Other keys (`skip_prk_steps`, `sample_max_value`, ...) are ignored.
 */
export interface SchedulerJson {
  _class_name?: string;
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: BetaSchedule;
  trained_betas?: number[] | null;
  prediction_type?: PredictionType;
  timestep_spacing?: TimestepSpacing;
  steps_offset?: number;
  rescale_betas_zero_snr?: boolean;
  // DDIM
  set_alpha_to_one?: boolean;
  clip_sample?: boolean;
  clip_sample_range?: number;
  thresholding?: boolean;
  // Euler
  interpolation_type?: "linear" | "log_linear";
  use_karras_sigmas?: boolean;
  use_exponential_sigmas?: boolean;
  use_beta_sigmas?: boolean;
  sigma_min?: number | null;
  sigma_max?: number | null;
  final_sigmas_type?: "zero" | "sigma_min";
  timestep_type?: "discrete" | "continuous";
}

/** What defines the noise schedule itself (the training-time forward process). */
export interface ScheduleConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  /** Explicit betas (diffusers' `trained_betas`), overriding betaStart / betaEnd / betaSchedule. */
  trainedBetas: number[] | null;
  predictionType: PredictionType;
  /** Rescale betas to zero terminal SNR (Lin et al. 2023, Algorithm 1). */
  rescaleBetasZeroSnr: boolean;
}

/** A denoising output from the model: x_{t-1} and the model's estimate of x_0 behind it. */
export interface StepResult {
  prevSample: Float32Array;
  predOriginalSample: Float32Array;
}

/**
 * The small interface every sampler has (diffusers' scheduler interface), so that a pipeline
 * swaps samplers without changing its loop:
 *
 *   scheduler.setTimesteps(steps);
 *   let x = gaussianLatents(shape, seed) scaled by scheduler.initNoiseSigma;
 *   for (const t of scheduler.timesteps) {
 *     const eps = unet(scheduler.scaleModelInput(x, t), t, ...);
 *     x = scheduler.step(eps, t, x).prevSample;
 *   }
 */
export interface Scheduler {
  /** The timesteps of the sampling chain, noisiest first (empty until setTimesteps). */
  readonly timesteps: readonly number[];
  /** Standard deviation of the initial latents: multiply N(0, 1) noise by it. */
  readonly initNoiseSigma: number;
  readonly schedule: NoiseSchedule;
  setTimesteps(numInferenceSteps: number): void;
  /** The UNet's input at timestep t (the identity for DDIM, x / sqrt(sigma^2 + 1) for Euler). */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  step(modelOutput: Float32Array, t: number, sample: Float32Array, options?: StepOptions): StepResult;
}

export interface StepOptions {
  /** DDIM: weight of the fresh noise of each step (0: deterministic DDIM, 1: DDPM-like). */
  eta?: number;
  /** Source of fresh noise for stochastic steps (DDIM eta > 0, Euler sChurn > 0). */
  rng?: Rng;
  /** The fresh noise itself instead of drawing it from `rng` (diffusers' `variance_noise`). */
  noise?: Float32Array;
}

// ------------------------------------------------------------------------------------ config

const BETA_SCHEDULES: readonly BetaSchedule[] = ["linear", "scaled_linear", "squaredcos_cap_v2"];
const PREDICTION_TYPES: readonly PredictionType[] = ["epsilon", "v_prediction", "sample"];
const SPACINGS: readonly TimestepSpacing[] = ["leading", "trailing", "linspace"];

/** Reads and validates `scheduler_config.json` (or any JSON file of that shape). */
export function readSchedulerConfig(path: string): SchedulerJson {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read the scheduler config (${(err as Error).message}); point at a diffusers model folder's scheduler/scheduler_config.json`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${path}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  return parseSchedulerConfig(raw, path);
}

/**
 * Validates the keys we read from a parsed scheduler config. `source` names the file in messages.
 * `null` counts as absent (diffusers writes `"trained_betas": null`).
 */
export function parseSchedulerConfig(raw: unknown, source = "scheduler config"): SchedulerJson {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new UserError(`${source}: expected a JSON object (a diffusers scheduler_config.json)`);
  }
  const r = raw as Record<string, unknown>;
  const out: SchedulerJson = {};
  const bad = (key: string, want: string) =>
    new UserError(`${source}: "${key}" is ${JSON.stringify(r[key])}; expected ${want}`);
  const has = (key: string) => r[key] !== undefined && r[key] !== null;
  const num = (key: string, check: (x: number) => boolean, want: string): number | undefined => {
    if (!has(key)) return undefined;
    const v = r[key];
    if (typeof v !== "number" || !Number.isFinite(v) || !check(v)) throw bad(key, want);
    return v;
  };
  const bool = (key: string): boolean | undefined => {
    if (!has(key)) return undefined;
    if (typeof r[key] !== "boolean") throw bad(key, "true or false");
    return r[key] as boolean;
  };
  const oneOf = <T extends string>(key: string, values: readonly T[]): T | undefined => {
    if (!has(key)) return undefined;
    if (!values.includes(r[key] as T)) throw bad(key, `one of ${values.map((v) => `"${v}"`).join(", ")}`);
    return r[key] as T;
  };
  const set = <K extends keyof SchedulerJson>(key: K, v: SchedulerJson[K] | undefined) => {
    if (v !== undefined) out[key] = v;
  };
  if (has("_class_name")) set("_class_name", String(r._class_name));
  set("num_train_timesteps", num("num_train_timesteps", (x) => Number.isInteger(x) && x >= 2, "an integer >= 2"));
  set("beta_start", num("beta_start", (x) => x >= 0 && x < 1, "a number in [0, 1)"));
  set("beta_end", num("beta_end", (x) => x >= 0 && x < 1, "a number in [0, 1)"));
  set("beta_schedule", oneOf("beta_schedule", BETA_SCHEDULES));
  if (has("trained_betas")) {
    const v = r.trained_betas;
    if (!Array.isArray(v) || !v.every((b) => typeof b === "number" && b >= 0 && b < 1)) {
      throw bad("trained_betas", "null or an array of numbers in [0, 1)");
    }
    out.trained_betas = v as number[];
  }
  set("prediction_type", oneOf("prediction_type", PREDICTION_TYPES));
  set("timestep_spacing", oneOf("timestep_spacing", SPACINGS));
  set("steps_offset", num("steps_offset", (x) => Number.isInteger(x) && x >= 0, "a non-negative integer"));
  set("rescale_betas_zero_snr", bool("rescale_betas_zero_snr"));
  set("set_alpha_to_one", bool("set_alpha_to_one"));
  set("clip_sample", bool("clip_sample"));
  set("clip_sample_range", num("clip_sample_range", (x) => x > 0, "a positive number"));
  set("thresholding", bool("thresholding"));
  set("interpolation_type", oneOf("interpolation_type", ["linear", "log_linear"] as const));
  set("use_karras_sigmas", bool("use_karras_sigmas"));
  set("use_exponential_sigmas", bool("use_exponential_sigmas"));
  set("use_beta_sigmas", bool("use_beta_sigmas"));
  set("sigma_min", num("sigma_min", (x) => x > 0, "a positive number or null"));
  set("sigma_max", num("sigma_max", (x) => x > 0, "a positive number or null"));
  set("final_sigmas_type", oneOf("final_sigmas_type", ["zero", "sigma_min"] as const));
  set("timestep_type", oneOf("timestep_type", ["discrete", "continuous"] as const));
  const n = out.num_train_timesteps ?? 1000;
  if (out.trained_betas && out.trained_betas.length !== n) {
    throw new UserError(`${source}: "trained_betas" has ${out.trained_betas.length} values but num_train_timesteps is ${n}`);
  }
  return out;
}

/** The schedule part of a config, with diffusers' defaults for missing keys. */
export function scheduleConfig(json: SchedulerJson = {}): ScheduleConfig {
  return {
    numTrainTimesteps: json.num_train_timesteps ?? 1000,
    betaStart: json.beta_start ?? 0.0001,
    betaEnd: json.beta_end ?? 0.02,
    betaSchedule: json.beta_schedule ?? "linear",
    trainedBetas: json.trained_betas ?? null,
    predictionType: json.prediction_type ?? "epsilon",
    rescaleBetasZeroSnr: json.rescale_betas_zero_snr ?? false,
  };
}

// ------------------------------------------------------------------------------ float32 tables

const f32 = Math.fround;

/**
 * torch.linspace(start, end, steps, dtype=torch.float32) on CPU, bit for bit. torch 1.13's kernel
 * computes step = (end - start) / (steps - 1) in float32 and value i as start + step * i for the
 * first half, end - step * (steps - 1 - i) for the second half (one rounding: the compiler fuses
 * the multiply-add); its AVX2 path does that once per 8 lanes and adds k * step for lane k
 * (two roundings), over blocks of 16, and the scalar rule for the last steps % 16 values.
 * Measured against Debian's torch 1.13 (AVX2 kernels). A torch using AVX-512 kernels (16 lanes)
 * can differ in the last bit of some betas; these values do not depend on the machine.
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  // step * i is exact in float64 (24-bit times <= 31-bit integer); the add rounds like an FMA.
  const scalar = (i: number) => (i < half ? f32(s + step * i) : f32(e - step * (steps - 1 - i)));
  const lanes = 8;
  let i = 0;
  for (; i + 2 * lanes <= steps; i += 2 * lanes) {
    for (let block = 0; block < 2; block++) {
      const idx = i + block * lanes;
      const base = scalar(idx);
      for (let k = 0; k < lanes; k++) out[idx + k] = f32(base + f32(k * step));
    }
  }
  for (; i < steps; i++) out[i] = scalar(i);
  return out;
}

/** torch.cumprod on CPU for float32: a float64 running product, each prefix stored as float32. */
function cumprodF32(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  let acc = 1;
  for (let i = 0; i < x.length; i++) {
    acc *= x[i]!;
    out[i] = acc;
  }
  return out;
}

/** The glide cosine schedule (diffusers' betas_for_alpha_bar, "cosine", max_beta 0.999). */
function cosineBetas(n: number): Float32Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999);
  return out;
}

/**
 * Zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
 * Flawed", Algorithm 1): shift and scale sqrt(alphas_cumprod) so that the last is 0 and the first
 * unchanged, then recover betas. In float32, in torch's order of operations.
 */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const alphas = new Float32Array(n);
  for (let i = 0; i < n; i++) alphas[i] = 1 - betas[i]!;
  const sqrtBar = cumprodF32(alphas).map(Math.sqrt);
  const first = sqrtBar[0]!;
  const last = sqrtBar[n - 1]!;
  const scale = f32(first / f32(first - last));
  const bar = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = f32(f32(sqrtBar[i]! - last) * scale);
    bar[i] = v * v;
  }
  const out = new Float32Array(n);
  out[0] = 1 - bar[0]!;
  for (let i = 1; i < n; i++) out[i] = 1 - f32(bar[i]! / bar[i - 1]!);
  return out;
}

/** betas as diffusers builds them (float32). */
export function makeBetas(c: ScheduleConfig): Float32Array {
  let betas: Float32Array;
  if (c.trainedBetas) {
    betas = Float32Array.from(c.trainedBetas);
  } else if (c.betaSchedule === "linear") {
    betas = torchLinspaceF32(c.betaStart, c.betaEnd, c.numTrainTimesteps);
  } else if (c.betaSchedule === "scaled_linear") {
    // "very specific to the latent diffusion model": linear in sqrt(beta).
    betas = torchLinspaceF32(Math.sqrt(c.betaStart), Math.sqrt(c.betaEnd), c.numTrainTimesteps);
    for (let i = 0; i < betas.length; i++) betas[i] = betas[i]! * betas[i]!;
  } else {
    betas = cosineBetas(c.numTrainTimesteps);
  }
  return c.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betas) : betas;
}

// ----------------------------------------------------------------------------- the schedule

/** Which timestep applies to each element: one t for all, or one per batch item (equal chunks). */
function perItem(n: number, t: number | ArrayLike<number>, what: string): (i: number) => number {
  if (typeof t === "number") return () => t;
  const b = t.length;
  if (b === 0 || n % b !== 0) {
    throw new Error(`${what}: ${b} timesteps do not split ${n} elements into equal batch items`);
  }
  const per = n / b;
  return (i) => t[Math.floor(i / per)]!;
}

function sameLength(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: inputs have ${a.length} and ${b.length} elements`);
}

/**
 * The discrete noise schedule: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t in [0, T).
 * Tensors are flat Float32Arrays; where a method takes `t` as an array, it holds one timestep
 * per batch item and the tensor splits into that many equal chunks (batch-major layout).
 */
export class NoiseSchedule {
  readonly config: ScheduleConfig;
  readonly numTrainTimesteps: number;
  readonly predictionType: PredictionType;
  readonly betas: Float32Array;
  /** 1 - betas (float32). */
  readonly alphas: Float32Array;
  /** abar_t = prod_{s <= t} alphas_s (float32, as torch stores it). */
  readonly alphasCumprod: Float32Array;

  constructor(config: ScheduleConfig) {
    this.config = config;
    this.numTrainTimesteps = config.numTrainTimesteps;
    this.predictionType = config.predictionType;
    this.betas = makeBetas(config);
    this.alphas = this.betas.map((b) => 1 - b);
    this.alphasCumprod = cumprodF32(this.alphas);
  }

  static fromConfig(json: SchedulerJson = {}): NoiseSchedule {
    return new NoiseSchedule(scheduleConfig(json));
  }

  /** abar_t for an integer timestep in [0, T). */
  alphaBar(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.numTrainTimesteps) {
      throw new Error(`timestep ${t} is not an integer in [0, ${this.numTrainTimesteps})`);
    }
    return this.alphasCumprod[t]!;
  }

  /** (sqrt(abar_t), sqrt(1 - abar_t)) as float32, the coefficients diffusers multiplies by. */
  coefficients(t: number): [number, number] {
    const a = this.alphaBar(t);
    return [f32(Math.sqrt(a)), f32(Math.sqrt(f32(1 - a)))];
  }

  private combine(x: Float32Array, y: Float32Array, t: number | ArrayLike<number>, what: string,
    coef: (sa: number, sb: number, x: number, y: number) => number): Float32Array {
    sameLength(x, y, what);
    const tOf = perItem(x.length, t, what);
    const out = new Float32Array(x.length);
    let lastT = Number.NaN;
    let sa = 0;
    let sb = 0;
    for (let i = 0; i < x.length; i++) {
      const ti = tOf(i);
      if (ti !== lastT) [sa, sb] = this.coefficients((lastT = ti));
      out[i] = coef(sa, sb, x[i]!, y[i]!);
    }
    return out;
  }

  /** The forward process: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (diffusers' add_noise). */
  addNoise(x0: Float32Array, noise: Float32Array, t: number | ArrayLike<number>): Float32Array {
    return this.combine(x0, noise, t, "addNoise", (sa, sb, x, n) => sa * x + sb * n);
  }

  /** The v target (Salimans & Ho 2022): v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0. */
  velocity(x0: Float32Array, noise: Float32Array, t: number | ArrayLike<number>): Float32Array {
    return this.combine(x0, noise, t, "velocity", (sa, sb, x, n) => sa * n - sb * x);
  }

  /** What a model of `predictionType` is trained to output: noise, v, or x0. */
  target(x0: Float32Array, noise: Float32Array, t: number | ArrayLike<number>,
    predictionType: PredictionType = this.predictionType): Float32Array {
    if (predictionType === "epsilon") return noise.slice();
    if (predictionType === "sample") return x0.slice();
    return this.velocity(x0, noise, t);
  }

  /**
   * x0 estimated from a model output at x_t:
   *   epsilon: (x_t - sqrt(1 - abar) eps) / sqrt(abar)
   *   v:       sqrt(abar) x_t - sqrt(1 - abar) v
   *   sample:  the output itself.
   */
  predictedX0(modelOutput: Float32Array, sample: Float32Array, t: number | ArrayLike<number>,
    predictionType: PredictionType = this.predictionType): Float32Array {
    if (predictionType === "sample") {
      sameLength(modelOutput, sample, "predictedX0");
      return modelOutput.slice();
    }
    if (predictionType === "epsilon") {
      return this.combine(modelOutput, sample, t, "predictedX0", (sa, sb, e, x) => (x - sb * e) / sa);
    }
    return this.combine(modelOutput, sample, t, "predictedX0", (sa, sb, v, x) => sa * x - sb * v);
  }

  /**
   * The noise estimated from a model output at x_t:
   *   epsilon: the output itself
   *   v:       sqrt(abar) v + sqrt(1 - abar) x_t
   *   sample:  (x_t - sqrt(abar) x0) / sqrt(1 - abar).
   */
  predictedEpsilon(modelOutput: Float32Array, sample: Float32Array, t: number | ArrayLike<number>,
    predictionType: PredictionType = this.predictionType): Float32Array {
    if (predictionType === "epsilon") {
      sameLength(modelOutput, sample, "predictedEpsilon");
      return modelOutput.slice();
    }
    if (predictionType === "sample") {
      return this.combine(modelOutput, sample, t, "predictedEpsilon", (sa, sb, x0, x) => (x - sa * x0) / sb);
    }
    return this.combine(modelOutput, sample, t, "predictedEpsilon", (sa, sb, v, x) => sa * v + sb * x);
  }

  /** Signal-to-noise ratio abar_t / (1 - abar_t) (in float64 from the float32 abar). */
  snr(t: number): number {
    const a = this.alphaBar(t);
    return a / (1 - a);
  }

  /** SNR of every timestep 0..T-1. */
  snrTable(): Float64Array {
    return Float64Array.from(this.alphasCumprod, (a) => a / (1 - a));
  }

  /**
   * Min-SNR-gamma loss weight (Hang et al. 2023) for a model of `predictionType`, as diffusers'
   * training scripts apply it to a plain MSE on that prediction: min(snr, gamma) / snr for
   * epsilon, min(snr, gamma) / (snr + 1) for v, min(snr, gamma) for sample.
   */
  minSnrWeight(t: number, gamma = 5, predictionType: PredictionType = this.predictionType): number {
    const snr = this.snr(t);
    const clipped = Math.min(snr, gamma);
    if (predictionType === "epsilon") return snr === 0 ? 0 : clipped / snr;
    if (predictionType === "v_prediction") return clipped / (snr + 1);
    return clipped;
  }
}

// -------------------------------------------------------------------------- timestep spacing

/** numpy's round(): halves to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, n) in float64: i * ((stop - start) / (n - 1)) + start, last = stop. */
export function numpyLinspace(start: number, stop: number, n: number): Float64Array {
  const out = new Float64Array(n);
  const step = n > 1 ? (stop - start) / (n - 1) : 0;
  for (let i = 0; i < n; i++) out[i] = i * step + start;
  if (n > 1) out[n - 1] = stop;
  return out;
}

/**
 * The inference timesteps of diffusers' set_timesteps, before the integer (DDIM) or float32
 * (Euler) cast, noisiest first (Lin et al. 2023, Table 2):
 *   leading:  i * floor(T / n) + steps_offset, i = n-1 .. 0   (SD 1.5 / SDXL configs)
 *   trailing: round(T - i * T / n) - 1, i = 0 .. n-1            (reaches T - 1)
 *   linspace: linspace(0, T - 1, n) reversed (rounded to integers when `round`).
 * "trailing" follows np.arange(T, 0, -T/n), including its float steps, but keeps n values:
 * numpy's arange returns n + 1 values for some n (61, 103, 121, ...; the extra one rounds to
 * timestep -1, which torch then reads as the last, noisiest entry); diffusers keeps that bug.
 */
export function spacedTimesteps(spacing: TimestepSpacing, n: number, numTrainTimesteps: number,
  stepsOffset: number, round: boolean): number[] {
  const T = numTrainTimesteps;
  if (!Number.isInteger(n) || n < 1) throw new Error(`number of inference steps must be a positive integer, got ${n}`);
  if (n > T) {
    throw new UserError(`${n} inference steps is more than the ${T} timesteps the model was trained with; use at most ${T}`);
  }
  const out: number[] = [];
  if (spacing === "leading") {
    const ratio = Math.floor(T / n);
    for (let i = n - 1; i >= 0; i--) out.push(i * ratio + stepsOffset);
  } else if (spacing === "trailing") {
    const ratio = T / n;
    const delta = T - ratio - T; // numpy's arange fills start + i * (values[1] - values[0])
    for (let i = 0; i < n; i++) out.push(roundHalfEven(i === 1 ? T - ratio : T + i * delta) - 1);
  } else {
    const lin = numpyLinspace(0, T - 1, n);
    for (let i = n - 1; i >= 0; i--) out.push(round ? roundHalfEven(lin[i]!) : lin[i]!);
  }
  return out;
}
