// AdamW (Loshchilov & Hutter), exactly as torch.optim.AdamW updates (decoupled weight decay,
// bias correction, eps outside the square root), on float32 typed arrays.
// Each element is computed in float64 and rounded once when stored (torch computes in float32:
// results agree to float32 rounding, tests/train/train.test.ts).
//
// Two ways to run the same update, bit for bit the same results (one kernel, `adamwKernel`):
//   step()       one thread, in place;
//   stepAsync()  split over worker threads (lib/train/adamw-worker.ts) for large parameter sets:
//                AdamW's moments live in SharedArrayBuffers, and each chunk of weights and
//                gradients is copied into a shared staging buffer, updated by the workers, and
//                the weights copied back (memcpy costs ~1/10 of the update per element).
//                Below PARALLEL_MIN values (64M), or with threads <= 1, it is step(); the
//                trainers call stepAsync, so large parameter sets (an SDXL IP-Adapter's 341M)
//                get the threads and the rest runs as before.
// bench/adamw.ts measures both (bench/RESULTS.md).

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

/** The step's constants (bias corrections and decay from t and lr). */
export interface AdamWConsts { b1: number; b2: number; eps: number; stepSize: number; bc2Sqrt: number; decay: number }

/**
 * The update of n elements: p[po..], g[go..] and the moments m, v [mo..]. Every path runs this
 * function, so the single-threaded and the worker updates agree bit for bit.
 */
export function adamwKernel(p: Float32Array, po: number, g: Float32Array, go: number, m: Float32Array, v: Float32Array, mo: number, n: number, k: AdamWConsts): void {
  const { b1, b2, eps, stepSize, bc2Sqrt, decay } = k;
  const c1 = 1 - b1, c2 = 1 - b2;
  // step * m / (sqrt(v) / bc2 + eps) = (step * bc2) * m / (sqrt(v) + eps * bc2): one float64
  // division instead of two (the loop is bound by division and sqrt throughput: 1.3x faster).
  // Not the same float64 rounding, but after the one rounding to float32 the weights came out
  // bit for bit equal to the two-division loop on every element measured (8M values; and the
  // 1.4M x 4 steps of tests/train/adamw-parallel.test.ts).
  const s2 = stepSize * bc2Sqrt, e2 = eps * bc2Sqrt;
  for (let i = 0; i < n; i++) {
    const gi = g[go + i]!;
    // The float64 values, not the rounded stored ones, feed the update (as always here).
    const mi = b1 * m[mo + i]! + c1 * gi;
    const vi = b2 * v[mo + i]! + c2 * gi * gi;
    m[mo + i] = mi;
    v[mo + i] = vi;
    p[po + i] = p[po + i]! * decay - (s2 * mi) / (Math.sqrt(vi) + e2);
  }
}

/**
 * Parameter sets smaller than this many values are updated on the calling thread by stepAsync.
 * Measured here (bench/adamw.ts, 2 threads, load 5-7): at 19.2M and 22.0M values the threads
 * gained nothing over step() (the copies through the staging buffer cost what the second thread
 * saves), at 340.8M they were 1.19x faster than step() (1.71x the old loop).
 */
export const PARALLEL_MIN = 1 << 26;
/** Values per staging chunk (weights and gradients: 2 x 32 MB). */
const STAGE = 1 << 23;

const shared = (n: number) => new Float32Array(new SharedArrayBuffer(n * 4));

interface Pool { workers: Worker[]; busy: boolean }
let pool: Pool | undefined;
function workers(threads: number): Worker[] {
  if (!pool || pool.workers.length !== threads) {
    for (const w of pool?.workers ?? []) w.terminate();
    const ws = Array.from({ length: threads }, () => {
      const w = new Worker(new URL("./adamw-worker.ts", import.meta.url));
      (w as unknown as { unref?: () => void }).unref?.(); // idle workers do not keep the process alive
      return w;
    });
    pool = { workers: ws, busy: false };
  }
  return pool.workers;
}

/** A job for one worker: segments of the staging buffers and of the moments. */
export interface WorkerJob {
  p: Float32Array;
  g: Float32Array;
  k: AdamWConsts;
  segs: { m: Float32Array; v: Float32Array; mo: number; so: number; n: number }[];
}

function run(w: Worker, job: WorkerJob): Promise<void> {
  return new Promise((resolve, reject) => {
    w.onmessage = () => resolve();
    w.onerror = (e) => reject(new Error(`AdamW worker: ${(e as ErrorEvent).message}`));
    w.postMessage(job);
  });
}

export class AdamW {
  readonly cfg: AdamWConfig;
  /** First and second moments (torch's exp_avg, exp_avg_sq), by parameter name. */
  readonly m = new Map<string, Float32Array>();
  readonly v = new Map<string, Float32Array>();
  /** Number of steps taken (torch's per-parameter `step`; identical for all parameters here). */
  t = 0;

  /** Threads of stepAsync, the calling one included (default: one per core, at most 8). */
  threads: number;

  /** Values per staging chunk of stepAsync. */
  readonly stage: number;
  private staging?: [Float32Array, Float32Array];

  /** Values below which stepAsync runs step() (default PARALLEL_MIN). */
  readonly minParallel: number;

  constructor(cfg: Partial<AdamWConfig> = {}, opts: { threads?: number; stage?: number; minParallel?: number } = {}) {
    this.cfg = { ...ADAMW_DEFAULTS, ...cfg };
    this.threads = opts.threads ?? Math.min(8, navigator.hardwareConcurrency || 1);
    this.stage = opts.stage ?? STAGE;
    this.minParallel = opts.minParallel ?? PARALLEL_MIN;
  }

  private consts(lr: number): AdamWConsts {
    const { beta1: b1, beta2: b2, eps, weightDecay } = this.cfg;
    return { b1, b2, eps, stepSize: lr / (1 - b1 ** this.t), bc2Sqrt: Math.sqrt(1 - b2 ** this.t), decay: 1 - lr * weightDecay };
  }

  /** The parameters to update with their gradients and moments (moments created at zero). */
  private pairs(params: Map<string, Float32Array>, grads: Map<string, Float32Array>, alloc: (n: number) => Float32Array) {
    const out: { p: Float32Array; g: Float32Array; m: Float32Array; v: Float32Array }[] = [];
    for (const [name, p] of params) {
      const g = grads.get(name);
      if (!g) continue; // a parameter the loss does not reach is left alone, as torch does for grad=None
      if (g.length !== p.length) throw new Error(`AdamW: gradient of "${name}" has ${g.length} values, parameter has ${p.length}`);
      let m = this.m.get(name);
      let v = this.v.get(name);
      if (!m || !v) {
        this.m.set(name, (m = alloc(p.length)));
        this.v.set(name, (v = alloc(p.length)));
      }
      out.push({ p, g, m, v });
    }
    return out;
  }

  /**
   * step() on worker threads (same results bit for bit). The moments move into shared memory on
   * first use (restored ones are copied once). Small sets, or threads <= 1, run step().
   */
  async stepAsync(params: Map<string, Float32Array>, grads: Map<string, Float32Array>, lr = this.cfg.lr): Promise<void> {
    let total = 0;
    for (const [name, p] of params) if (grads.has(name)) total += p.length;
    if (this.threads <= 1 || total < this.minParallel) return this.step(params, grads, lr);
    // The calling thread takes one share itself (it would otherwise wait, and Bun's event loop
    // spins while it waits for a worker's answer): threads - 1 workers.
    const ws = workers(this.threads - 1);
    if (pool!.busy) throw new Error("AdamW.stepAsync: another step is still running (await it first)");
    pool!.busy = true;
    try {
      const toShared = (map: Map<string, Float32Array>) => {
        for (const [k, a] of map) if (!(a.buffer instanceof SharedArrayBuffer)) { const s = shared(a.length); s.set(a); map.set(k, s); }
      };
      toShared(this.m);
      toShared(this.v);
      const list = this.pairs(params, grads, shared);
      this.t++;
      const k = this.consts(lr);
      // Staging buffers are kept between steps (fresh ones would page-fault every step).
      const size = Math.min(this.stage, total);
      if (!this.staging || this.staging[0].length !== size) this.staging = [shared(size), shared(size)];
      const [ps, gs] = this.staging;
      // Chunks of at most STAGE values (a large tensor spans several), each split evenly over the workers.
      let li = 0, off = 0;
      while (li < list.length) {
        const placed: { e: (typeof list)[number]; off: number; so: number; n: number }[] = [];
        let fill = 0;
        while (li < list.length && fill < ps.length) {
          const e = list[li]!;
          const n = Math.min(e.p.length - off, ps.length - fill);
          ps.set(e.p.subarray(off, off + n), fill);
          gs.set(e.g.subarray(off, off + n), fill);
          placed.push({ e, off, so: fill, n });
          fill += n;
          off += n;
          if (off === e.p.length) { li++; off = 0; }
        }
        const parts = ws.length + 1;
        const per = Math.ceil(fill / parts);
        const jobs: WorkerJob[] = Array.from({ length: parts }, () => ({ p: ps, g: gs, k, segs: [] }));
        for (const s of placed) {
          // Cut this segment at the workers' boundaries [w * per, (w + 1) * per).
          for (let a = s.so; a < s.so + s.n;) {
            const w = Math.floor(a / per);
            const b = Math.min(s.so + s.n, (w + 1) * per);
            jobs[w]!.segs.push({ m: s.e.m, v: s.e.v, mo: s.off + (a - s.so), so: a, n: b - a });
            a = b;
          }
        }
        const answers = jobs.slice(1).map((j, w) => (j.segs.length ? run(ws[w]!, j) : undefined));
        for (const s of jobs[0]!.segs) adamwKernel(ps, s.so, gs, s.so, s.m, s.v, s.mo, s.n, k);
        await Promise.all(answers);
        for (const s of placed) s.e.p.set(ps.subarray(s.so, s.so + s.n), s.off);
      }
    } finally {
      pool!.busy = false;
    }
  }

  /** One update of every parameter in place. `lr` overrides the configured rate (schedules). */
  step(params: Map<string, Float32Array>, grads: Map<string, Float32Array>, lr = this.cfg.lr): void {
    const list = this.pairs(params, grads, (n) => new Float32Array(n));
    this.t++;
    const k = this.consts(lr);
    for (const { p, g, m, v } of list) adamwKernel(p, 0, g, 0, m, v, 0, p.length, k);
  }

  /** The single-threaded loop as it was before adamwKernel (kept for bench/adamw.ts's "old" column). */
  stepLegacy(params: Map<string, Float32Array>, grads: Map<string, Float32Array>, lr = this.cfg.lr): void {
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
