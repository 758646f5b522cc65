// Host-side diffusion maths: noise schedules, samplers, guidance, seeded latents.

import { DDIMScheduler } from "./ddim.ts";
import { EulerDiscreteScheduler } from "./euler.ts";
import type { Scheduler, SchedulerJson } from "./schedule.ts";

export * from "./schedule.ts";
export * from "./ddim.ts";
export * from "./euler.ts";
export * from "./guidance.ts";
export * from "./noise.ts";

export type SamplerName = "ddim" | "euler";
export const SAMPLERS: readonly SamplerName[] = ["ddim", "euler"];

/**
 * A sampler over a model folder's noise schedule. Without `sampler`, the config's own class
 * decides: EulerDiscreteScheduler (SDXL) gives Euler, anything else (SD 1.5 ships PNDM, which we
 * do not implement) DDIM. Either sampler works with either config: the schedule is the model's.
 */
export function schedulerFromConfig(json: SchedulerJson, sampler?: SamplerName): Scheduler {
  const name = sampler ?? (json._class_name === "EulerDiscreteScheduler" ? "euler" : "ddim");
  return name === "euler" ? EulerDiscreteScheduler.fromConfig(json) : DDIMScheduler.fromConfig(json);
}
