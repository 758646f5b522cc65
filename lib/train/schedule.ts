// Learning-rate schedules, as functions of the (0-based) step about to be taken.

export type ScheduleName = "constant" | "warmup" | "cosine";

export interface ScheduleConfig {
  name: ScheduleName;
  lr: number;
  /** Linear warm-up from 0 over this many steps ("warmup" and "cosine"). */
  warmupSteps: number;
  /** Total steps, for "cosine". */
  totalSteps: number;
  /** Final rate of the cosine decay. */
  minLr: number;
}

export function learningRate(c: ScheduleConfig, step: number): number {
  if (c.name === "constant") return c.lr;
  // Linear warm-up; the first step is taken at lr / warmupSteps rather than 0 (a step at lr 0 is wasted).
  if (step < c.warmupSteps) return (c.lr * (step + 1)) / c.warmupSteps;
  if (c.name === "warmup") return c.lr;
  const span = Math.max(1, c.totalSteps - c.warmupSteps);
  const progress = Math.min(1, (step - c.warmupSteps) / span);
  return c.minLr + 0.5 * (c.lr - c.minLr) * (1 + Math.cos(Math.PI * progress));
}
