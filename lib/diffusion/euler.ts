// Euler sampler of Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative
// Models", Algorithm 2) on a discrete VP schedule, after diffusers' EulerDiscreteScheduler
// (scheduling_euler_discrete.py), the default sampler of SDXL. It works in the variance-exploding
// parametrisation x = x_0 + sigma * eps with sigma_t = sqrt((1 - abar_t) / abar_t):
//
//   UNet input  = x / sqrt(sigma^2 + 1)            (scaleModelInput: back to the VP scale)
//   x0_hat      = x - sigma * eps_hat              (epsilon; v and sample below)
//   x_next      = x + (x - x0_hat) / sigma * (sigma_next - sigma)
//
// Inference sigmas are interpolated linearly (in t) from the T training sigmas at the (possibly
// fractional) timesteps of the spacing, then a final 0 is appended ("linear" interpolation, the
// diffusers default); or, with use_karras_sigmas, spaced as Karras' rho = 7 schedule between the
// smallest and largest of those, with timesteps read back from sigma by interpolation in log sigma.
// Unlike diffusers, which counts steps in a hidden step index, the step index is looked up from
// t each time (the timesteps of every spacing are distinct), so calls need no particular order.

import { UserError } from "../io/errors.ts";
import {
  NoiseSchedule, type PredictionType, type Scheduler, type SchedulerJson, type StepOptions,
  type StepResult, type TimestepSpacing, numpyLinspace, scheduleConfig, spacedTimesteps,
} from "./schedule.ts";

const f32 = Math.fround;

export interface EulerConfig {
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  useKarrasSigmas: boolean;
  /** Karras range overrides (null: the smallest / largest interpolated sigma). */
  sigmaMin: number | null;
  sigmaMax: number | null;
  /** The sigma after the last step: 0 (a clean sample) or the smallest training sigma. */
  finalSigmasType: "zero" | "sigma_min";
}

export interface EulerStepOptions extends StepOptions {
  /** Karras' S_churn (default 0: plain, deterministic Euler). */
  sChurn?: number;
  sTmin?: number;
  sTmax?: number;
  sNoise?: number;
}

/** Euler's options from a scheduler config, with EulerDiscreteScheduler's defaults. */
export function eulerConfig(json: SchedulerJson = {}): EulerConfig {
  const refuse = (what: string) => new UserError(`scheduler config: ${what} is not supported by our EulerDiscreteScheduler; remove it or use the default`);
  if (json.interpolation_type === "log_linear") throw refuse(`"interpolation_type": "log_linear"`);
  if (json.use_exponential_sigmas) throw refuse(`"use_exponential_sigmas": true`);
  if (json.use_beta_sigmas) throw refuse(`"use_beta_sigmas": true`);
  if (json.timestep_type === "continuous") throw refuse(`"timestep_type": "continuous"`);
  return {
    timestepSpacing: json.timestep_spacing ?? "linspace",
    stepsOffset: json.steps_offset ?? 0,
    useKarrasSigmas: json.use_karras_sigmas ?? false,
    sigmaMin: json.sigma_min ?? null,
    sigmaMax: json.sigma_max ?? null,
    finalSigmasType: json.final_sigmas_type ?? "zero",
  };
}

/** np.interp(x, [0, 1, ..., n-1], fp) for one x (float64, numpy's formula and edge rules). */
function interpUnitGrid(x: number, fp: ArrayLike<number>): number {
  const n = fp.length;
  if (x <= 0) return fp[0]!;
  if (x >= n - 1) return fp[n - 1]!;
  const j = Math.floor(x);
  if (j === x) return fp[j]!;
  const slope = fp[j + 1]! - fp[j]!;
  return slope * (x - j) + fp[j]!;
}

/** diffusers' _sigma_to_t: the fractional timestep of a sigma, linear in log sigma. */
function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  // The last index whose log sigma is <= logSigma, capped so that a neighbour above exists.
  let low = 0;
  for (let i = 0; i < n; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, n - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  const w = Math.min(1, Math.max(0, (lo - logSigma) / (lo - hi)));
  return (1 - w) * low + w * (low + 1);
}

export class EulerDiscreteScheduler implements Scheduler {
  readonly schedule: NoiseSchedule;
  readonly config: EulerConfig;
  readonly predictionType: PredictionType;
  /** sigma_t = sqrt((1 - abar_t) / abar_t) of every training timestep, t = 0..T-1 (float32). */
  readonly trainSigmas: Float32Array;
  timesteps: number[] = [];
  /** One sigma per timestep plus the final one (float32 values). */
  sigmas: number[] = [];

  constructor(schedule: NoiseSchedule, config: EulerConfig) {
    this.schedule = schedule;
    this.config = config;
    this.predictionType = schedule.predictionType;
    const ac = schedule.alphasCumprod.slice();
    // Zero terminal SNR makes the last abar 0 and its sigma infinite; diffusers puts it just
    // above 0 (the smallest positive float16 subnormal).
    if (schedule.config.rescaleBetasZeroSnr) ac[ac.length - 1] = 2 ** -24;
    this.trainSigmas = ac.map((a) => Math.sqrt(f32(f32(1 - a) / a)));
    // Before setTimesteps, diffusers' defaults: every training timestep, noisiest first.
    const T = schedule.numTrainTimesteps;
    this.timesteps = Array.from({ length: T }, (_, i) => T - 1 - i);
    this.sigmas = [...Array.from(this.trainSigmas).reverse(), 0];
  }

  /** From a diffusers scheduler config (SDXL's scheduler_config.json is this class's). */
  static fromConfig(json: SchedulerJson = {}): EulerDiscreteScheduler {
    return new EulerDiscreteScheduler(new NoiseSchedule(scheduleConfig(json)), eulerConfig(json));
  }

  /** sqrt(max sigma^2 + 1) for "leading" spacing, max sigma otherwise (as diffusers). */
  get initNoiseSigma(): number {
    const max = Math.max(...this.sigmas);
    if (this.config.timestepSpacing === "leading") return f32(Math.sqrt(f32(f32(max * max) + 1)));
    return max;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = this.schedule.numTrainTimesteps;
    let ts = spacedTimesteps(c.timestepSpacing, numInferenceSteps, T, c.stepsOffset, false).map(f32);
    let sigmas = ts.map((t) => interpUnitGrid(t, this.trainSigmas));
    if (c.useKarrasSigmas) {
      const sigmaMin = c.sigmaMin ?? sigmas[sigmas.length - 1]!;
      const sigmaMax = c.sigmaMax ?? sigmas[0]!;
      const rho = 7;
      const minInv = sigmaMin ** (1 / rho);
      const maxInv = sigmaMax ** (1 / rho);
      const ramp = numpyLinspace(0, 1, numInferenceSteps);
      sigmas = Array.from(ramp, (r) => (maxInv + r * (minInv - maxInv)) ** rho);
      const logSigmas = this.trainSigmas.map(Math.log);
      ts = sigmas.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    const last = c.finalSigmasType === "sigma_min" ? this.trainSigmas[0]! : 0;
    this.sigmas = [...sigmas, last].map(f32);
    this.timesteps = ts;
  }

  /** Index of t in the timesteps (t must be one of them). */
  stepIndex(t: number): number {
    const i = this.timesteps.indexOf(f32(t));
    if (i < 0) throw new Error(`EulerDiscreteScheduler: timestep ${t} is not in the schedule (call setTimesteps, then pass one of .timesteps)`);
    return i;
  }

  /** The sigma of timestep t. */
  sigma(t: number): number {
    return this.sigmas[this.stepIndex(t)]!;
  }

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const s = this.sigma(t);
    const c = f32(Math.sqrt(f32(f32(s * s) + 1)));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) out[i] = sample[i]! / c;
    return out;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, options: EulerStepOptions = {}): StepResult {
    if (modelOutput.length !== sample.length) {
      throw new Error(`EulerDiscreteScheduler.step: model output has ${modelOutput.length} elements, sample ${sample.length}`);
    }
    const i = this.stepIndex(t);
    const sigma = this.sigmas[i]!;
    const sigmaNext = this.sigmas[i + 1]!;
    const { sChurn = 0, sTmin = 0, sTmax = Infinity, sNoise = 1 } = options;
    const gamma = sTmin <= sigma && sigma <= sTmax ? Math.min(sChurn / (this.sigmas.length - 1), Math.SQRT2 - 1) : 0;
    const sigmaHat = sigma * (gamma + 1);
    const n = sample.length;
    let x: Float32Array | Float64Array = sample;
    if (gamma > 0) {
      // Karras' churn: raise the noise level from sigma to sigma_hat with fresh noise first.
      let z = options.noise;
      if (!z) {
        if (!options.rng) throw new Error("EulerDiscreteScheduler.step: sChurn > 0 needs options.rng (or options.noise)");
        z = options.rng.normals(n);
      }
      const k = sNoise * Math.sqrt(sigmaHat * sigmaHat - sigma * sigma);
      const churned = new Float64Array(n);
      for (let j = 0; j < n; j++) churned[j] = sample[j]! + k * z[j]!;
      x = churned;
    }
    const dt = sigmaNext - sigmaHat;
    const type = this.predictionType;
    const vOut = -sigma / Math.sqrt(sigma * sigma + 1);
    const vSkip = 1 / (sigma * sigma + 1);
    const prev = new Float32Array(n);
    const x0 = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      const xj = x[j]!;
      const m = modelOutput[j]!;
      const p = type === "epsilon" ? xj - sigmaHat * m : type === "v_prediction" ? m * vOut + xj * vSkip : m;
      x0[j] = p;
      prev[j] = xj + ((xj - p) / sigmaHat) * dt;
    }
    return { prevSample: prev, predOriginalSample: x0 };
  }

  /** Noises a clean sample to timestep t of this chain (img2img): x0 + sigma_t * noise. */
  addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array {
    if (x0.length !== noise.length) throw new Error(`addNoise: inputs have ${x0.length} and ${noise.length} elements`);
    const s = this.sigma(t);
    const out = new Float32Array(x0.length);
    for (let i = 0; i < x0.length; i++) out[i] = x0[i]! + s * noise[i]!;
    return out;
  }
}
