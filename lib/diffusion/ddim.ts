// DDIM sampler (Song et al. 2021, "Denoising Diffusion Implicit Models", eqs. 12 and 16), after
// diffusers' DDIMScheduler (scheduling_ddim.py). One step from x_t to x_prev:
//
//   x0_hat  = the model's estimate of x_0 (from eps, v or x0; clipped when clip_sample)
//   eps_hat = the matching noise estimate
//   sigma   = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
//   x_prev  = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z
//
// As in diffusers, the previous timestep is t - floor(T / n) whatever the spacing (for "leading"
// and for "trailing" with n dividing T it is the next timestep of the chain; otherwise it can be
// off by one from it), and below 0 abar_prev is 1 (set_alpha_to_one) or abar_0 (SD's configs set
// set_alpha_to_one false with steps_offset 1).

import { UserError } from "../io/errors.ts";
import {
  NoiseSchedule, type PredictionType, type Scheduler, type SchedulerJson, type StepOptions,
  type StepResult, type TimestepSpacing, scheduleConfig, spacedTimesteps,
} from "./schedule.ts";

export interface DDIMConfig {
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  setAlphaToOne: boolean;
  clipSample: boolean;
  clipSampleRange: number;
}

/** DDIM's options from a scheduler config, with DDIMScheduler's defaults. */
export function ddimConfig(json: SchedulerJson = {}): DDIMConfig {
  if (json.thresholding) {
    throw new UserError(`scheduler config: "thresholding": true (dynamic thresholding, for pixel-space models) is not supported; set it to false`);
  }
  return {
    timestepSpacing: json.timestep_spacing ?? "leading",
    stepsOffset: json.steps_offset ?? 0,
    setAlphaToOne: json.set_alpha_to_one ?? true,
    clipSample: json.clip_sample ?? true,
    clipSampleRange: json.clip_sample_range ?? 1,
  };
}

export class DDIMScheduler implements Scheduler {
  readonly schedule: NoiseSchedule;
  readonly config: DDIMConfig;
  readonly predictionType: PredictionType;
  readonly initNoiseSigma = 1;
  /** abar used after the last step (the "previous" of timestep < 0). */
  readonly finalAlphaCumprod: number;
  timesteps: number[] = [];
  numInferenceSteps = 0;

  constructor(schedule: NoiseSchedule, config: DDIMConfig) {
    this.schedule = schedule;
    this.config = config;
    this.predictionType = schedule.predictionType;
    this.finalAlphaCumprod = config.setAlphaToOne ? 1 : schedule.alphasCumprod[0]!;
  }

  /** From a diffusers scheduler config (any scheduler class of an SD / SDXL folder works). */
  static fromConfig(json: SchedulerJson = {}): DDIMScheduler {
    return new DDIMScheduler(new NoiseSchedule(scheduleConfig(json)), ddimConfig(json));
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    this.timesteps = spacedTimesteps(c.timestepSpacing, numInferenceSteps, this.schedule.numTrainTimesteps, c.stepsOffset, true);
    this.numInferenceSteps = numInferenceSteps;
  }

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  /** The timestep a step from t lands on (negative after the last step). */
  previousTimestep(t: number): number {
    return t - Math.floor(this.schedule.numTrainTimesteps / this.numInferenceSteps);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, options: StepOptions = {}): StepResult {
    if (this.numInferenceSteps === 0) throw new Error("DDIMScheduler.step: call setTimesteps first");
    if (modelOutput.length !== sample.length) {
      throw new Error(`DDIMScheduler.step: model output has ${modelOutput.length} elements, sample ${sample.length}`);
    }
    const eta = options.eta ?? 0;
    const prevT = this.previousTimestep(t);
    const aT = this.schedule.alphaBar(t);
    const aPrev = prevT >= 0 ? this.schedule.alphaBar(prevT) : this.finalAlphaCumprod;
    const f32 = Math.fround;
    const bT = f32(1 - aT);
    const sqrtA = f32(Math.sqrt(aT));
    const sqrtB = f32(Math.sqrt(bT));
    const sqrtAPrev = f32(Math.sqrt(aPrev));
    const variance = ((1 - aPrev) / bT) * (1 - aT / aPrev);
    const std = eta * Math.sqrt(variance);
    const dirCoef = Math.sqrt(Math.max(0, 1 - aPrev - std * std));
    let z: Float32Array | null = null;
    if (eta > 0) {
      if (options.noise) {
        if (options.noise.length !== sample.length) throw new Error("DDIMScheduler.step: noise has the wrong length");
        z = options.noise;
      } else if (options.rng) {
        z = options.rng.normals(sample.length);
      } else {
        throw new Error("DDIMScheduler.step: eta > 0 needs options.rng (or options.noise)");
      }
    }
    const clip = this.config.clipSample ? this.config.clipSampleRange : Infinity;
    const type = this.predictionType;
    const n = sample.length;
    const prev = new Float32Array(n);
    const x0 = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = sample[i]!;
      const m = modelOutput[i]!;
      let p: number;
      let e: number;
      if (type === "epsilon") {
        p = (x - sqrtB * m) / sqrtA;
        e = m;
      } else if (type === "v_prediction") {
        p = sqrtA * x - sqrtB * m;
        e = sqrtA * m + sqrtB * x;
      } else {
        p = m;
        e = (x - sqrtA * m) / sqrtB;
      }
      // diffusers clips x0_hat but keeps eps_hat (its use_clipped_model_output defaults to False).
      if (p > clip) p = clip;
      else if (p < -clip) p = -clip;
      x0[i] = p;
      let v = sqrtAPrev * p + dirCoef * e;
      if (z) v += std * z[i]!;
      prev[i] = v;
    }
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
