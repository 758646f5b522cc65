// Training whose state stays on the device (issue 14, item 2): the optimizer runs as part of the
// training graph, and the trainable weights with AdamW's moments are outputs kept on the device
// (webgpu gpu buffers, `keepOnDevice`) and fed back as inputs of the next step. Per step only the
// batch and a few scalars go to the device and only the loss, logs, the gradient norm and the
// update flag come back; the weights come back when asked for (a checkpoint). On `cpu` (and
// `cuda`, which has no device-tensor path in Node) the same graph runs with the state
// round-tripping through the host.
//
// AdamW as a graph: torch.optim.AdamW's update (decoupled weight decay, bias correction, eps outside
// the square root), as lib/train/adamw.ts computes it, but in float32 on the device (the host
// version computes each element in float64 and rounds once): results agree to float32 rounding,
// not bit for bit. The step-dependent scalars (lr / (1 - beta1^t), sqrt(1 - beta2^t), 1 - lr wd)
// are computed on the host and fed each step, so a learning-rate schedule costs nothing.
//
// What the host training loop does around AdamW happens in the graph too:
//   - clipping: the global gradient norm (torch's clip_grad_norm_, lib/train/adamw.ts clipGradNorm)
//     is computed in the graph, the gradients scaled by min(1, clip / (norm + 1e-6)); the norm
//     before clipping comes back for the log;
//   - the NaN/Inf guard: sum(g * 0) over every gradient, plus loss * 0, is 0 exactly when all are
//     finite (0 * Inf and 0 * NaN are NaN). When not, Where keeps the old weights and moments, the
//     flag `updated` comes back 0, and AdamW's step count does not advance (the host loop skips
//     the step the same way);
//   - gradient accumulation over `gradAccum` micro-batches: each run adds its gradients to sums
//     kept on the device (`accum:<name>`); the run of the last micro-batch (`last` = 1) divides by
//     `gradAccum` (lib/train/adamw.ts GradAccumulator's mean), clips, updates and zeroes the sums.
//     A `gate` fed 0 on that run skips the update (the host saw a non-finite loss in an earlier
//     micro-batch of the step). Every micro-batch runs the same graph; the update of the others is
//     computed and dropped (elementwise work, small next to a forward and backward pass).

import * as G from "../graph/index.ts";
import type { CompileOptions, Compiled, DeviceTensor, Feeds, HostArray, Tensor } from "../graph/index.ts";
import { ADAMW_DEFAULTS, type AdamW, type AdamWConfig } from "./adamw.ts";

/** Where a training script keeps its weights and AdamW state between steps (its --state flag). */
export const STATE_WHERE = ["auto", "host", "device"] as const;
export type StateWhere = (typeof STATE_WHERE)[number];

const M = (n: string) => `adamw.m:${n}`;
const V = (n: string) => `adamw.v:${n}`;
const ACC = (n: string) => `accum:${n}`;
const NEXT = (n: string) => `next:${n}`;

/**
 * Appends AdamW's update of each trainable weight to the graph of its gradient. Returns the new
 * weight and moments per name; reads the moments from inputs `adamw.m:<name>`, `adamw.v:<name>`
 * and the scalars `adamw.step_size`, `adamw.bc2_sqrt`, `adamw.decay` (all [1]).
 */
export function adamwGraph(g: G.Graph, params: Map<string, Tensor>, grads: Map<string, Tensor>, cfg: AdamWConfig) {
  const stepSize = g.input("adamw.step_size", [1]);
  const bc2Sqrt = g.input("adamw.bc2_sqrt", [1]);
  const decay = g.input("adamw.decay", [1]);
  const out = new Map<string, { p: Tensor; m: Tensor; v: Tensor; m0: Tensor; v0: Tensor }>();
  for (const [name, p] of params) {
    const grad = grads.get(name)!;
    const m0 = g.input(M(name), p.shape), v0 = g.input(V(name), p.shape);
    const m = G.add(G.mul(m0, cfg.beta1), G.mul(grad, 1 - cfg.beta1));
    const v = G.add(G.mul(v0, cfg.beta2), G.mul(G.mul(grad, grad), 1 - cfg.beta2));
    const denom = G.add(G.div(G.sqrt(v), bc2Sqrt), cfg.eps);
    out.set(name, { p: G.sub(G.mul(p, decay), G.div(G.mul(m, stepSize), denom)), m, v, m0, v0 });
  }
  return out;
}

export interface ResidentOptions {
  /** Max global gradient norm (0: no clipping). */
  clip?: number;
  /** Micro-batches per optimizer step, summed on the device (default 1). */
  gradAccum?: number;
  /** Gradient checkpointing: grad's `recompute` option (lib/graph/recompute.ts). */
  recompute?: boolean;
}

export interface ResidentStep {
  loss: number;
  logs: Record<string, number>;
  /** Global gradient norm before clipping (of the step's mean gradient: valid on the last micro-batch). */
  gradNorm: number;
  /** Whether the weights were updated (last micro-batch, finite loss and gradients, gate open). */
  updated: boolean;
}

/** AdamW state for a resume: moments by weight name and steps taken. */
export interface ResidentRestore { m: Map<string, Float32Array>; v: Map<string, Float32Array>; t: number }

/**
 * A training loop's state on the device. `build` makes the loss (and scalar logs) in a fresh graph
 * with the trainable weights as `g.param` inputs; `params` maps each weight's name (the keys of
 * `initial`, of `weights()`, of a checkpoint) to its graph input.
 */
export class ResidentTrainer {
  readonly cfg: AdamWConfig;
  readonly clip: number;
  readonly gradAccum: number;
  /** Steps taken (AdamW's t): counts updates, not skipped steps. */
  t = 0;
  private readonly compiled: Promise<Compiled>;
  private readonly names: string[];
  /** Graph input of each weight, by name. */
  private readonly inputName = new Map<string, string>();
  private readonly sizes = new Map<string, number>();
  private state: Record<string, HostArray | DeviceTensor> = {};
  /** Micro-batches run since the last optimizer step. */
  private micro = 0;

  constructor(
    build: (g: G.Graph) => { loss: Tensor; logs?: Record<string, Tensor>; params: Map<string, Tensor> },
    /** Starting weights (undefined: call `load` before the first step). */
    initial: Map<string, Float32Array> | undefined,
    cfg: Partial<AdamWConfig> = {},
    compileOpts: CompileOptions = {},
    /** A checkpoint's AdamW state (moments by weight name, steps taken) to resume from. */
    restore?: ResidentRestore,
    opts: ResidentOptions = {},
  ) {
    this.cfg = { ...ADAMW_DEFAULTS, ...cfg };
    this.clip = opts.clip ?? 0;
    this.gradAccum = opts.gradAccum ?? 1;
    if (!(this.clip >= 0)) throw new Error(`ResidentTrainer: clip must be >= 0, got ${this.clip}`);
    if (!Number.isInteger(this.gradAccum) || this.gradAccum < 1) throw new Error(`ResidentTrainer: gradAccum must be a positive integer, got ${this.gradAccum}`);
    const g = new G.Graph();
    const { loss, logs = {}, params } = build(g);
    this.names = [...params.keys()];
    for (const [n, t] of params) {
      this.inputName.set(n, t.name);
      this.sizes.set(n, t.shape.reduce((a, b) => a * b, 1));
    }
    // Parameters are addressed by their graph input names inside the graph.
    const byInput = new Map([...params].map(([n, t]) => [t.name, t]));
    const grads = G.grad(loss, this.names.map((n) => params.get(n)!), undefined, { recompute: opts.recompute });
    const accum = this.gradAccum > 1;
    const sums = new Map<string, Tensor>();
    const gradMap = new Map<string, Tensor>();
    const nextAcc: Record<string, Tensor> = {};
    this.names.forEach((n, i) => {
      const grad = grads[i];
      if (!grad) throw new Error(`ResidentTrainer: the loss does not reach "${n}"`);
      const key = this.inputName.get(n)!;
      const sum = accum ? G.add(g.input(ACC(key), grad.shape), grad) : grad;
      sums.set(key, sum);
      gradMap.set(key, accum ? G.mul(sum, 1 / this.gradAccum) : sum);
    });
    // Finite probe and global norm of the step's (mean) gradient.
    let probe = G.reshape(G.mul(loss, 0), []);
    let sq: Tensor | undefined;
    for (const gr of gradMap.values()) {
      probe = G.add(probe, G.reduceSum(G.mul(gr, 0), undefined, false));
      const s = G.reduceSumSquare(gr, undefined, false);
      sq = sq ? G.add(sq, s) : s;
    }
    const norm = G.sqrt(sq!);
    // The flags combine as 0/1 floats (no And: fewer ops a provider must have).
    let okF = G.cast(G.equal(probe, 0), "float32");
    if (accum) {
      const lastF = G.reshape(g.input("step.last", [1]), []);
      okF = G.mul(okF, G.mul(lastF, G.reshape(g.input("step.gate", [1]), [])));
      const last = G.greater(lastF, 0.5);
      for (const [key, sum] of sums) nextAcc[NEXT(ACC(key))] = G.where(last, 0, sum);
    }
    const ok = G.greater(okF, 0.5);
    const clipped = new Map<string, Tensor>();
    const coef = this.clip > 0 ? G.minimum(G.div(this.clip, G.add(norm, 1e-6)), 1) : undefined;
    for (const [key, gr] of gradMap) clipped.set(key, coef ? G.mul(gr, coef) : gr);
    const updated = adamwGraph(g, byInput, clipped, this.cfg);
    const outputs: Record<string, Tensor> = { loss, "step.grad_norm": norm, "step.updated": okF };
    for (const [k, v] of Object.entries(logs)) outputs[`log:${k}`] = v;
    for (const [key, u] of updated) {
      outputs[NEXT(key)] = G.where(ok, u.p, byInput.get(key)!);
      outputs[NEXT(M(key))] = G.where(ok, u.m, u.m0);
      outputs[NEXT(V(key))] = G.where(ok, u.v, u.v0);
    }
    Object.assign(outputs, nextAcc);
    const keep = Object.keys(outputs).filter((k) => k.startsWith("next:"));
    this.compiled = G.compile(outputs, { ...compileOpts, keepOnDevice: keep });
    if (initial) this.load(initial, restore);
  }

  /** The compiled graph's inputs (the batch feeds a caller must give, and the state this class feeds). */
  async inputs(): Promise<{ name: string; shape: readonly number[]; dtype: string }[]> {
    return (await this.compiled).inputs;
  }

  /**
   * Sets the weights (and AdamW's moments and step count; default: zero moments, t = 0). The
   * next step uploads them (one copy); later steps feed the previous step's outputs.
   */
  load(weights: Map<string, Float32Array>, restore?: ResidentRestore): void {
    for (const n of this.names) {
      const w = weights.get(n);
      if (!w) throw new Error(`ResidentTrainer: no initial value for "${n}"`);
      if (w.length !== this.sizes.get(n)) throw new Error(`ResidentTrainer: "${n}" has ${w.length} values, the graph wants ${this.sizes.get(n)}`);
      const [m, v] = [restore?.m.get(n), restore?.v.get(n)];
      if (restore && (m?.length !== w.length || v?.length !== w.length)) throw new Error(`ResidentTrainer: the restored AdamW state has no moments of "${n}" (or of another size)`);
    }
    this.dispose();
    for (const n of this.names) {
      const key = this.inputName.get(n)!;
      const w = weights.get(n)!;
      this.state[key] = Float32Array.from(w);
      this.state[M(key)] = restore ? Float32Array.from(restore.m.get(n)!) : new Float32Array(w.length);
      this.state[V(key)] = restore ? Float32Array.from(restore.v.get(n)!) : new Float32Array(w.length);
      if (this.gradAccum > 1) this.state[ACC(key)] = new Float32Array(w.length);
    }
    this.t = restore?.t ?? 0;
    this.micro = 0;
  }

  /**
   * One micro-batch on `feeds` (the batch) at learning rate `lr` (default: the configured one).
   * With gradAccum > 1, every gradAccum-th call is the optimizer step; `gate` false skips that
   * step's update (an earlier micro-batch's loss was not finite).
   */
  async step(feeds: Feeds | Record<string, HostArray | DeviceTensor>, lr = this.cfg.lr, gate = true): Promise<ResidentStep> {
    const c = await this.compiled;
    if (!Object.keys(this.state).length) throw new Error("ResidentTrainer: no weights loaded (call load first)");
    const t = this.t + 1;
    const last = this.micro + 1 === this.gradAccum;
    const { beta1: b1, beta2: b2, weightDecay } = this.cfg;
    const scalars: Feeds = {
      "adamw.step_size": Float32Array.of(lr / (1 - b1 ** t)),
      "adamw.bc2_sqrt": Float32Array.of(Math.sqrt(1 - b2 ** t)),
      "adamw.decay": Float32Array.of(1 - lr * weightDecay),
    };
    if (this.gradAccum > 1) Object.assign(scalars, { "step.last": Float32Array.of(last ? 1 : 0), "step.gate": Float32Array.of(gate ? 1 : 0) });
    const r = await c.runResident({ ...feeds, ...scalars, ...this.state });
    const previous = this.state;
    this.state = {};
    for (const [k, v] of Object.entries(r.device)) this.state[k.slice(NEXT("").length)] = v;
    for (const v of Object.values(previous)) if (v instanceof G.DeviceTensor) v.dispose();
    this.micro = last ? 0 : this.micro + 1;
    const updated = (r.host["step.updated"] as Float32Array)[0] === 1;
    if (updated) this.t = t;
    const logs: Record<string, number> = {};
    for (const [k, v] of Object.entries(r.host)) if (k.startsWith("log:")) logs[k.slice(4)] = (v as Float32Array)[0]!;
    return { loss: (r.host.loss as Float32Array)[0]!, logs, gradNorm: (r.host["step.grad_norm"] as Float32Array)[0]!, updated };
  }

  /** The current weights on the host (a download on webgpu): for a checkpoint. */
  async weights(): Promise<Map<string, Float32Array>> {
    return this.read((n) => n);
  }

  /** AdamW's moments on the host (a download on webgpu): for a resumable checkpoint. */
  async moments(): Promise<{ m: Map<string, Float32Array>; v: Map<string, Float32Array> }> {
    return { m: await this.read(M), v: await this.read(V) };
  }

  /**
   * The whole state on the host for a checkpoint: puts AdamW's moments and step count into `opt`
   * (the host optimizer that saveCheckpoint writes) and returns the weights.
   */
  async downloadInto(opt: AdamW): Promise<Map<string, Float32Array>> {
    opt.m.clear();
    opt.v.clear();
    if (this.t > 0) {
      const { m, v } = await this.moments();
      for (const [k, a] of m) opt.m.set(k, a);
      for (const [k, a] of v) opt.v.set(k, a);
    }
    opt.t = this.t;
    return this.weights();
  }

  /** Frees the device buffers of the state (the trainer cannot step afterwards until `load`). */
  dispose(): void {
    for (const v of Object.values(this.state)) if (v instanceof G.DeviceTensor) v.dispose();
    this.state = {};
  }

  private async read(key: (n: string) => string): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const n of this.names) {
      const s = this.state[key(this.inputName.get(n)!)]!;
      out.set(n, Float32Array.from((s instanceof G.DeviceTensor ? await G.readback(s) : s) as Float32Array));
    }
    return out;
  }
}
