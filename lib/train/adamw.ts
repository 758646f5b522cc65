// AdamW (Loshchilov & Hutter), exactly as torch.optim.AdamW updates (decoupled weight decay,
// bias correction, eps outside the square root), on float32 typed arrays.
// Measured: a tight loop over typed arrays updates ~22M parameters (ViT-S) in well under the
// time of one forward/backward pass (see bench/RESULTS.md, train-vit).

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

export class AdamW {
  readonly cfg: AdamWConfig;
  /** First and second moments (torch's exp_avg, exp_avg_sq), by parameter name. */
  readonly m = new Map<string, Float32Array>();
  readonly v = new Map<string, Float32Array>();
  /** Number of steps taken (torch's per-parameter `step`; identical for all parameters here). */
  t = 0;

  constructor(cfg: Partial<AdamWConfig> = {}) {
    this.cfg = { ...ADAMW_DEFAULTS, ...cfg };
  }

  /** One update of every parameter in place. `lr` overrides the configured rate (schedules). */
  step(params: Map<string, Float32Array>, grads: Map<string, Float32Array>, lr = this.cfg.lr): void {
    const { beta1: b1, beta2: b2, eps, weightDecay } = this.cfg;
    this.t++;
    const bc1 = 1 - b1 ** this.t;
    const bc2Sqrt = Math.sqrt(1 - b2 ** this.t);
    const stepSize = lr / bc1;
    const decay = 1 - lr * weightDecay;
    for (const [name, p] of params) {
      const g = grads.get(name);
      if (!g) continue; // a parameter the loss does not reach is left alone, as torch does for grad=None
      if (g.length !== p.length) throw new Error(`AdamW: gradient of "${name}" has ${g.length} values, parameter has ${p.length}`);
      let m = this.m.get(name);
      let v = this.v.get(name);
      if (!m || !v) {
        this.m.set(name, (m = new Float32Array(p.length)));
        this.v.set(name, (v = new Float32Array(p.length)));
      }
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]!;
        const mi = (m[i] = b1 * m[i]! + (1 - b1) * gi);
        const vi = (v[i] = b2 * v[i]! + (1 - b2) * gi * gi);
        p[i] = p[i]! * decay - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps);
      }
    }
  }
}

/** L2 norm over all gradients together (torch.nn.utils.clip_grad_norm_'s total_norm). */
export function globalNorm(grads: Iterable<Float32Array>): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i]! * g[i]!;
  return Math.sqrt(s);
}

/** Scales gradients in place so their global norm is at most maxNorm; returns the norm before. */
export function clipGradNorm(grads: Map<string, Float32Array>, maxNorm: number): number {
  const norm = globalNorm(grads.values());
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i]! *= coef;
  return norm;
}

/** True when every value is finite (the NaN/Inf guard's test). */
export function allFinite(arrays: Iterable<Float32Array>): boolean {
  for (const a of arrays) for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return false;
  return true;
}

/** Sums gradients over micro-batches (gradient accumulation); `scale` averages them at the end. */
export class GradAccumulator {
  readonly sum = new Map<string, Float32Array>();
  count = 0;

  add(grads: Map<string, Float32Array>): void {
    for (const [k, g] of grads) {
      const s = this.sum.get(k);
      if (!s) this.sum.set(k, Float32Array.from(g));
      else for (let i = 0; i < g.length; i++) s[i]! += g[i]!;
    }
    this.count++;
  }

  /** The mean gradient over the accumulated micro-batches; resets the accumulator. */
  take(): Map<string, Float32Array> {
    const out = this.sum;
    const inv = 1 / Math.max(1, this.count);
    if (this.count > 1) for (const g of out.values()) for (let i = 0; i < g.length; i++) g[i]! *= inv;
    (this as { sum: Map<string, Float32Array> }).sum = new Map();
    this.count = 0;
    return out;
  }
}
