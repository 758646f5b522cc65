// Checkpoints hold everything needed to resume exactly (nanoGPT's rule: one checkpoint, the
// whole state): trainable weights in the model's own key layout, AdamW moments, step, RNG state
// and config. Safetensors only. Layout of a checkpoint folder:
//   weights.safetensors    the trainable parameters (loadable over the original weights)
//   optimizer.safetensors  exp_avg.<name>, exp_avg_sq.<name> (torch's names for the moments)
//   state.json             { step, adamStep, rng, config, ... }
// Each file is written atomically and state.json last, so a checkpoint without it is incomplete
// and ignored by `latestCheckpoint`.

import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { openSafetensors, writeSafetensors, type TensorInput } from "../io/safetensors.ts";
import type { RngState } from "../rng.ts";
import type { AdamW } from "./adamw.ts";

export interface TrainState {
  step: number;
  rng: RngState;
  config: Record<string, unknown>;
  [extra: string]: unknown;
}

export interface Checkpoint {
  params: Map<string, Float32Array>;
  shapes: Map<string, number[]>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
  adamStep: number;
  state: TrainState;
}

export async function saveCheckpoint(dir: string, params: Map<string, { shape: readonly number[]; data: Float32Array }>, opt: AdamW, state: TrainState): Promise<void> {
  const weights: Record<string, TensorInput> = {};
  const moments: Record<string, TensorInput> = {};
  for (const [name, p] of params) {
    weights[name] = { dtype: "F32", shape: p.shape, data: p.data };
    const m = opt.m.get(name), v = opt.v.get(name);
    if (m && v) {
      moments[`exp_avg.${name}`] = { dtype: "F32", shape: p.shape, data: m };
      moments[`exp_avg_sq.${name}`] = { dtype: "F32", shape: p.shape, data: v };
    }
  }
  await writeSafetensors(join(dir, "weights.safetensors"), weights, { format: "pt", step: String(state.step) });
  await writeSafetensors(join(dir, "optimizer.safetensors"), moments, { adam_step: String(opt.t) });
  await writeJsonAtomic(join(dir, "state.json"), { ...state, adamStep: opt.t });
}

export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const w = openSafetensors(join(dir, "weights.safetensors"));
  const o = openSafetensors(join(dir, "optimizer.safetensors"));
  const state = (await Bun.file(join(dir, "state.json")).json()) as TrainState & { adamStep: number };
  const params = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  for (const name of w.names()) {
    params.set(name, Float32Array.from(w.float32(name))); // copies: the trainer updates them in place
    shapes.set(name, w.info(name).shape);
    if (o.has(`exp_avg.${name}`)) {
      m.set(name, Float32Array.from(o.float32(`exp_avg.${name}`)));
      v.set(name, Float32Array.from(o.float32(`exp_avg_sq.${name}`)));
    }
  }
  return { params, shapes, m, v, adamStep: state.adamStep, state };
}

/** Restores AdamW's moments and step count from a checkpoint. */
export function restoreOptimizer(opt: AdamW, ck: Checkpoint): void {
  opt.m.clear();
  opt.v.clear();
  for (const [k, a] of ck.m) opt.m.set(k, a);
  for (const [k, a] of ck.v) opt.v.set(k, a);
  opt.t = ck.adamStep;
}

/** The newest complete `step-N` checkpoint folder under `dir`, or undefined. */
export function latestCheckpoint(dir: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  const steps = readdirSync(dir)
    .map((d) => /^step-(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => !!m && existsSync(join(dir, m[0], "state.json")))
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  return steps.length ? join(dir, `step-${steps[0]}`) : undefined;
}
