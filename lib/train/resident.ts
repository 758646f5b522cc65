// Training whose state stays on the device (issue 14, item 2): the optimizer runs as part of the
// training graph, and the trainable weights with AdamW's moments are outputs kept on the device
// (webgpu gpu buffers, `keepOnDevice`) and fed back as inputs of the next step. Per step only the
// batch and three scalars go to the device and only the loss and logs come back; the weights come
// back when asked for (a checkpoint). On `cpu` (and `cuda`, which has no device-tensor path in
// Node) the same graph runs with the state round-tripping through the host.
//
// AdamW as a graph: torch.optim.AdamW's update (decoupled weight decay, bias correction, eps outside
// the square root), as lib/train/adamw.ts computes it, but in float32 on the device (the host
// version computes each element in float64 and rounds once): results agree to float32 rounding,
// not bit for bit. The step-dependent scalars (lr / (1 - beta1^t), sqrt(1 - beta2^t), 1 - lr wd)
// are computed on the host and fed each step.

import * as G from "../graph/index.ts";
import type { CompileOptions, Compiled, DeviceTensor, Feeds, HostArray, Tensor } from "../graph/index.ts";
import { ADAMW_DEFAULTS, type AdamWConfig } from "./adamw.ts";

const M = (n: string) => `adamw.m:${n}`;
const V = (n: string) => `adamw.v:${n}`;
const NEXT = (n: string) => `next:${n}`;
const NEXT_M = (n: string) => `next:${M(n)}`;
const NEXT_V = (n: string) => `next:${V(n)}`;

/**
 * Appends AdamW's update of each trainable weight to the graph of its gradient. Returns the new
 * weight and moments per name; reads the moments from inputs `adamw.m:<name>`, `adamw.v:<name>`
 * and the scalars `adamw.step_size`, `adamw.bc2_sqrt`, `adamw.decay` (all [1]).
 */
export function adamwGraph(g: G.Graph, params: Map<string, Tensor>, grads: Map<string, Tensor>, cfg: AdamWConfig) {
  const stepSize = g.input("adamw.step_size", [1]);
  const bc2Sqrt = g.input("adamw.bc2_sqrt", [1]);
  const decay = g.input("adamw.decay", [1]);
  const out = new Map<string, { p: Tensor; m: Tensor; v: Tensor }>();
  for (const [name, p] of params) {
    const grad = grads.get(name)!;
    const m0 = g.input(M(name), p.shape), v0 = g.input(V(name), p.shape);
    const m = G.add(G.mul(m0, cfg.beta1), G.mul(grad, 1 - cfg.beta1));
    const v = G.add(G.mul(v0, cfg.beta2), G.mul(G.mul(grad, grad), 1 - cfg.beta2));
    const denom = G.add(G.div(G.sqrt(v), bc2Sqrt), cfg.eps);
    out.set(name, { p: G.sub(G.mul(p, decay), G.div(G.mul(m, stepSize), denom)), m, v });
  }
  return out;
}

export interface ResidentStep {
  loss: number;
  logs: Record<string, number>;
}

/**
 * A training loop's state on the device. `build` makes the loss (and scalar logs) in a fresh graph
 * with the trainable weights as `g.param` inputs named as in `initial`.
 */
export class ResidentTrainer {
  readonly cfg: AdamWConfig;
  /** Steps taken (AdamW's t). */
  t = 0;
  private readonly compiled: Promise<Compiled>;
  private readonly names: string[];
  private state: Record<string, HostArray | DeviceTensor> = {};

  constructor(
    build: (g: G.Graph) => { loss: Tensor; logs?: Record<string, Tensor>; params: Map<string, Tensor> },
    initial: Map<string, Float32Array>,
    cfg: Partial<AdamWConfig> = {},
    compileOpts: CompileOptions = {},
    /** A checkpoint's AdamW state (moments by weight name, steps taken) to resume from. */
    restore?: { m: Map<string, Float32Array>; v: Map<string, Float32Array>; t: number },
  ) {
    this.cfg = { ...ADAMW_DEFAULTS, ...cfg };
    const g = new G.Graph();
    const { loss, logs = {}, params } = build(g);
    this.names = [...params.keys()];
    for (const n of this.names) if (!initial.has(n)) throw new Error(`ResidentTrainer: no initial value for "${n}"`);
    const grads = G.grad(loss, this.names.map((n) => params.get(n)!));
    const gradMap = new Map(this.names.map((n, i) => {
      if (!grads[i]) throw new Error(`ResidentTrainer: the loss does not reach "${n}"`);
      return [n, grads[i]!];
    }));
    const updated = adamwGraph(g, params, gradMap, this.cfg);
    const outputs: Record<string, Tensor> = { loss };
    for (const [k, v] of Object.entries(logs)) outputs[`log:${k}`] = v;
    for (const [n, u] of updated) Object.assign(outputs, { [NEXT(n)]: u.p, [NEXT_M(n)]: u.m, [NEXT_V(n)]: u.v });
    const keep = this.names.flatMap((n) => [NEXT(n), NEXT_M(n), NEXT_V(n)]);
    this.compiled = G.compile(outputs, { ...compileOpts, keepOnDevice: keep });
    // The first step feeds the host values (one upload); later steps feed the previous outputs.
    for (const n of this.names) {
      const w = initial.get(n)!;
      const [m, v] = [restore?.m.get(n), restore?.v.get(n)];
      if (restore && (m?.length !== w.length || v?.length !== w.length)) throw new Error(`ResidentTrainer: the restored AdamW state has no moments of "${n}" (or of another size)`);
      this.state[n] = Float32Array.from(w);
      this.state[M(n)] = m ? Float32Array.from(m) : new Float32Array(w.length);
      this.state[V(n)] = v ? Float32Array.from(v) : new Float32Array(w.length);
    }
    this.t = restore?.t ?? 0;
  }

  /** One step on `feeds` (the batch) at learning rate `lr` (default: the configured one). */
  async step(feeds: Feeds, lr = this.cfg.lr): Promise<ResidentStep> {
    const c = await this.compiled;
    this.t++;
    const { beta1: b1, beta2: b2, weightDecay } = this.cfg;
    const scalars = {
      "adamw.step_size": Float32Array.of(lr / (1 - b1 ** this.t)),
      "adamw.bc2_sqrt": Float32Array.of(Math.sqrt(1 - b2 ** this.t)),
      "adamw.decay": Float32Array.of(1 - lr * weightDecay),
    };
    const r = await c.runResident({ ...feeds, ...scalars, ...this.state });
    const previous = this.state;
    this.state = {};
    for (const n of this.names) {
      this.state[n] = r.device[NEXT(n)]!;
      this.state[M(n)] = r.device[NEXT_M(n)]!;
      this.state[V(n)] = r.device[NEXT_V(n)]!;
    }
    for (const v of Object.values(previous)) if (v instanceof G.DeviceTensor) v.dispose();
    const logs: Record<string, number> = {};
    for (const [k, v] of Object.entries(r.host)) if (k.startsWith("log:")) logs[k.slice(4)] = (v as Float32Array)[0]!;
    return { loss: (r.host.loss as Float32Array)[0]!, logs };
  }

  /** The current weights on the host (a download on webgpu): for a checkpoint. */
  async weights(): Promise<Map<string, Float32Array>> {
    return this.read((n) => n);
  }

  /** AdamW's moments on the host (a download on webgpu): for a resumable checkpoint. */
  async moments(): Promise<{ m: Map<string, Float32Array>; v: Map<string, Float32Array> }> {
    return { m: await this.read(M), v: await this.read(V) };
  }

  private async read(key: (n: string) => string): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const n of this.names) {
      const s = this.state[key(n)]!;
      out.set(n, Float32Array.from((s instanceof G.DeviceTensor ? await G.readback(s) : s) as Float32Array));
    }
    return out;
  }
}
