// Plain-TypeScript reference implementations of the builder's ops, written from the ONNX operator
// specifications and PyTorch's documented semantics (not from lib/graph), as the oracle that
// tests/graph/ops.test.ts checks ONNX Runtime's results against. Everything is computed in float64
// with simple nested loops over row-major N-d arrays; clarity over speed (inputs are tiny).

export interface NDArray {
  shape: number[];
  /** Row-major values; booleans are 0/1, integers are exact doubles. */
  data: Float64Array;
}

// ---------------------------------------------------------------- seeded PRNG

/** mulberry32: a tiny 32-bit-state generator, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- strided N-d helpers

export function size(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** Flat row-major position -> multi-index. */
export function unravel(flat: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = shape[i]!;
    idx[i] = flat % d;
    flat = Math.floor(flat / d);
  }
  return idx;
}

/** Multi-index -> flat row-major position (no bounds check). */
export function ravel(idx: readonly number[], shape: readonly number[]): number {
  let o = 0;
  for (let i = 0; i < shape.length; i++) o = o * shape[i]! + idx[i]!;
  return o;
}

export function nd(shape: readonly number[], data?: ArrayLike<number>): NDArray {
  const n = size(shape);
  const d = data ? Float64Array.from(data) : new Float64Array(n);
  if (d.length !== n) throw new Error(`nd: ${d.length} values for shape [${shape.join(", ")}]`);
  return { shape: [...shape], data: d };
}

export function get(a: NDArray, idx: readonly number[]): number {
  for (let i = 0; i < idx.length; i++) {
    if (idx[i]! < 0 || idx[i]! >= a.shape[i]!) throw new Error(`get: index [${idx.join(", ")}] out of range for [${a.shape.join(", ")}]`);
  }
  return a.data[ravel(idx, a.shape)]!;
}

/** A new array whose value at each multi-index is f(index). */
export function build(shape: readonly number[], f: (idx: number[]) => number): NDArray {
  const out = nd(shape);
  for (let i = 0; i < out.data.length; i++) out.data[i] = f(unravel(i, shape));
  return out;
}

export function reshape(a: NDArray, shape: readonly number[]): NDArray {
  if (size(shape) !== a.data.length) throw new Error(`reshape: [${a.shape.join(", ")}] to [${shape.join(", ")}]`);
  return { shape: [...shape], data: a.data };
}

export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

// ---------------------------------------------------------------- numpy broadcasting

/** numpy broadcasting: align trailing dimensions; each pair must be equal or contain a 1. */
export function broadcastShape(...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const k = i - (rank - s.length);
      if (k < 0) continue;
      const v = s[k]!;
      if (v === 1) continue;
      if (d === 1) d = v;
      else if (d !== v) throw new Error(`cannot broadcast ${shapes.map((x) => `[${x.join(", ")}]`).join(" with ")}`);
    }
    out.push(d);
  }
  return out;
}

/** The index into an array of `shape` that a broadcast output index `idx` reads. */
export function broadcastIndex(idx: readonly number[], shape: readonly number[]): number[] {
  const off = idx.length - shape.length;
  return shape.map((d, i) => (d === 1 ? 0 : idx[i + off]!));
}

/** Elementwise f over broadcast operands. */
export function zip(f: (...v: number[]) => number, ...arrs: NDArray[]): NDArray {
  const shape = broadcastShape(...arrs.map((a) => a.shape));
  return build(shape, (idx) => f(...arrs.map((a) => get(a, broadcastIndex(idx, a.shape)))));
}

export function map(a: NDArray, f: (v: number) => number): NDArray {
  return { shape: [...a.shape], data: a.data.map(f) };
}

// ---------------------------------------------------------------- scalar math

/**
 * erf by the everywhere-convergent series of Abramowitz & Stegun 7.1.6,
 * erf x = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (1*3*...*(2n+1)),
 * whose terms are all positive (no cancellation): relative error ~1e-16 for |x| <= 6;
 * beyond 6, |erf x| rounds to 1 in double precision.
 */
export function erfScalar(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax > 6) return Math.sign(x);
  let term = ax;
  let sum = ax;
  for (let n = 1; n < 2000; n++) {
    term *= (2 * ax * ax) / (2 * n + 1);
    sum += term;
    if (term <= 1e-18 * sum) break;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-ax * ax) * sum;
}

const sigmoidScalar = (v: number) => 1 / (1 + Math.exp(-v));

// ---------------------------------------------------------------- elementwise

export const add = (a: NDArray, b: NDArray) => zip((x, y) => x + y, a, b);
export const sub = (a: NDArray, b: NDArray) => zip((x, y) => x - y, a, b);
export const mul = (a: NDArray, b: NDArray) => zip((x, y) => x * y, a, b);
export const div = (a: NDArray, b: NDArray) => zip((x, y) => x / y, a, b);
export const pow = (a: NDArray, b: NDArray) => zip((x, y) => Math.pow(x, y), a, b);
export const maximum = (a: NDArray, b: NDArray) => zip((x, y) => Math.max(x, y), a, b);
export const minimum = (a: NDArray, b: NDArray) => zip((x, y) => Math.min(x, y), a, b);
export const equal = (a: NDArray, b: NDArray) => zip((x, y) => (x === y ? 1 : 0), a, b);
export const less = (a: NDArray, b: NDArray) => zip((x, y) => (x < y ? 1 : 0), a, b);
export const greater = (a: NDArray, b: NDArray) => zip((x, y) => (x > y ? 1 : 0), a, b);
export const and = (a: NDArray, b: NDArray) => zip((x, y) => (x !== 0 && y !== 0 ? 1 : 0), a, b);
export const or = (a: NDArray, b: NDArray) => zip((x, y) => (x !== 0 || y !== 0 ? 1 : 0), a, b);

export const neg = (a: NDArray) => map(a, (v) => -v);
export const exp = (a: NDArray) => map(a, Math.exp);
export const log = (a: NDArray) => map(a, Math.log);
export const sqrt = (a: NDArray) => map(a, Math.sqrt);
export const abs = (a: NDArray) => map(a, Math.abs);
export const tanh = (a: NDArray) => map(a, Math.tanh);
export const sin = (a: NDArray) => map(a, Math.sin);
export const cos = (a: NDArray) => map(a, Math.cos);
export const floor = (a: NDArray) => map(a, Math.floor);
export const sign = (a: NDArray) => map(a, (v) => (v > 0 ? 1 : v < 0 ? -1 : 0));
export const not = (a: NDArray) => map(a, (v) => (v === 0 ? 1 : 0));
export const identity = (a: NDArray) => map(a, (v) => v);
export const relu = (a: NDArray) => map(a, (v) => Math.max(v, 0));
export const leakyRelu = (a: NDArray, alpha = 0.01) => map(a, (v) => (v >= 0 ? v : alpha * v));
export const reciprocal = (a: NDArray) => map(a, (v) => 1 / v);
/** log(1 + e^x), computed stably. */
export const softplus = (a: NDArray) => map(a, (v) => Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v))));
export const sigmoid = (a: NDArray) => map(a, sigmoidScalar);
export const erf = (a: NDArray) => map(a, erfScalar);
/** GELU, exact: x/2 (1 + erf(x / sqrt 2)). */
export const gelu = (a: NDArray) => map(a, (v) => 0.5 * v * (1 + erfScalar(v / Math.SQRT2)));
/** GELU, tanh approximation: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export const geluTanh = (a: NDArray) => map(a, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))));
/** x sigmoid(1.702 x) (OpenAI CLIP). */
export const quickGelu = (a: NDArray) => map(a, (v) => v * sigmoidScalar(1.702 * v));
export const silu = (a: NDArray) => map(a, (v) => v * sigmoidScalar(v));

export function clip(a: NDArray, lo?: number, hi?: number): NDArray {
  return map(a, (v) => {
    let r = v;
    if (lo !== undefined && r < lo) r = lo;
    if (hi !== undefined && r > hi) r = hi;
    return r;
  });
}

/** ONNX Cast: float -> int truncates toward zero; anything -> bool is (x != 0); -> float32 rounds. */
export function cast(a: NDArray, to: "float32" | "int32" | "int64" | "bool"): NDArray {
  switch (to) {
    case "float32": return map(a, Math.fround);
    case "int32":
    case "int64": return map(a, Math.trunc);
    case "bool": return map(a, (v) => (v !== 0 ? 1 : 0));
  }
}

export function where(cond: NDArray, a: NDArray, b: NDArray): NDArray {
  return zip((c, x, y) => (c !== 0 ? x : y), cond, a, b);
}

// ---------------------------------------------------------------- linear algebra

/** numpy matmul: 1-D operands are promoted (and the added axis removed), batch axes broadcast. */
export function matmul(a: NDArray, b: NDArray): NDArray {
  const A = a.shape.length === 1 ? reshape(a, [1, a.shape[0]!]) : a;
  const B = b.shape.length === 1 ? reshape(b, [b.shape[0]!, 1]) : b;
  const M = A.shape[A.shape.length - 2]!;
  const K = A.shape[A.shape.length - 1]!;
  const N = B.shape[B.shape.length - 1]!;
  if (B.shape[B.shape.length - 2] !== K) throw new Error(`matmul: [${a.shape}] x [${b.shape}]`);
  const aBatch = A.shape.slice(0, -2);
  const bBatch = B.shape.slice(0, -2);
  const batch = broadcastShape(aBatch, bBatch);
  const full = build([...batch, M, N], (idx) => {
    const bi = idx.slice(0, -2);
    const i = idx[idx.length - 2]!;
    const j = idx[idx.length - 1]!;
    const ab = broadcastIndex(bi, aBatch);
    const bb = broadcastIndex(bi, bBatch);
    let s = 0;
    for (let k = 0; k < K; k++) s += get(A, [...ab, i, k]) * get(B, [...bb, k, j]);
    return s;
  });
  const shape = [...batch];
  if (a.shape.length !== 1) shape.push(M);
  if (b.shape.length !== 1) shape.push(N);
  return reshape(full, shape);
}

/** ONNX Gemm: alpha * A' B' + beta * C for 2-D A, B (A' = A^T when transA), C broadcast to [M, N]. */
export function gemm(a: NDArray, b: NDArray, c: NDArray | null, o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {}): NDArray {
  const A = o.transA ? transpose(a, [1, 0]) : a;
  const B = o.transB ? transpose(b, [1, 0]) : b;
  const [M, K] = A.shape as [number, number];
  const N = B.shape[1]!;
  const alpha = o.alpha ?? 1;
  const beta = o.beta ?? 1;
  return build([M, N], ([i, j]) => {
    let s = 0;
    for (let k = 0; k < K; k++) s += get(A, [i!, k]) * get(B, [k, j!]);
    return alpha * s + (c ? beta * get(c, broadcastIndex([i!, j!], c.shape)) : 0);
  });
}

// ---------------------------------------------------------------- shape ops

export function transpose(a: NDArray, perm: readonly number[]): NDArray {
  const shape = perm.map((p) => a.shape[p]!);
  return build(shape, (idx) => {
    const src = new Array<number>(perm.length);
    perm.forEach((p, j) => (src[p] = idx[j]!));
    return get(a, src);
  });
}

export function concat(xs: NDArray[], axis: number): NDArray {
  const ax = normAxis(axis, xs[0]!.shape.length);
  const shape = [...xs[0]!.shape];
  shape[ax] = xs.reduce((s, x) => s + x.shape[ax]!, 0);
  return build(shape, (idx) => {
    let k = idx[ax]!;
    for (const x of xs) {
      if (k < x.shape[ax]!) return get(x, idx.map((v, i) => (i === ax ? k : v)));
      k -= x.shape[ax]!;
    }
    throw new Error("concat: unreachable");
  });
}

export function split(a: NDArray, sizes: readonly number[], axis: number): NDArray[] {
  const ax = normAxis(axis, a.shape.length);
  let start = 0;
  return sizes.map((n) => {
    const s0 = start;
    start += n;
    const shape = [...a.shape];
    shape[ax] = n;
    return build(shape, (idx) => get(a, idx.map((v, i) => (i === ax ? v + s0 : v))));
  });
}

/**
 * ONNX Slice. Negative starts/ends count from the end; then for step > 0 both clamp to [0, dim],
 * for step < 0 start clamps to [0, dim - 1] and end to [-1, dim - 1].
 */
export function slice(a: NDArray, starts: readonly number[], ends: readonly number[], axes?: readonly number[], steps?: readonly number[]): NDArray {
  const rank = a.shape.length;
  const ax = (axes ?? starts.map((_, i) => i)).map((x) => normAxis(x, rank));
  const first = a.shape.map(() => 0);
  const step = a.shape.map(() => 1);
  const shape = [...a.shape];
  ax.forEach((axis, i) => {
    const dim = a.shape[axis]!;
    const st = steps ? steps[i]! : 1;
    let s = starts[i]!;
    let e = ends[i]!;
    if (s < 0) s += dim;
    if (e < 0) e += dim;
    const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
    if (st > 0) {
      s = clamp(s, 0, dim);
      e = clamp(e, 0, dim);
    } else {
      s = clamp(s, 0, dim - 1);
      e = clamp(e, -1, dim - 1);
    }
    first[axis] = s;
    step[axis] = st;
    shape[axis] = Math.max(0, Math.ceil((e - s) / st));
  });
  return build(shape, (idx) => get(a, idx.map((v, i) => first[i]! + v * step[i]!)));
}

/** ONNX Gather: out[pre, idx..., post] = a[pre, indices[idx...], post]; negative indices wrap. */
export function gather(a: NDArray, indices: NDArray, axis: number): NDArray {
  const ax = normAxis(axis, a.shape.length);
  const r = indices.shape.length;
  const dim = a.shape[ax]!;
  const shape = [...a.shape.slice(0, ax), ...indices.shape, ...a.shape.slice(ax + 1)];
  return build(shape, (idx) => {
    let j = get(indices, idx.slice(ax, ax + r));
    if (j < 0) j += dim;
    return get(a, [...idx.slice(0, ax), j, ...idx.slice(ax + r)]);
  });
}

/** ONNX Expand: bidirectional broadcast of `a` with `shape`. */
export function expand(a: NDArray, shape: readonly number[]): NDArray {
  const out = broadcastShape(a.shape, shape);
  return build(out, (idx) => get(a, broadcastIndex(idx, a.shape)));
}

export function tile(a: NDArray, reps: readonly number[]): NDArray {
  return build(a.shape.map((d, i) => d * reps[i]!), (idx) => get(a, idx.map((v, i) => v % a.shape[i]!)));
}

/**
 * ONNX Pad with pads [begin_0..., end_0...]. reflect mirrors without repeating the edge
 * (numpy "reflect", PyTorch ReflectionPad), edge repeats the border value.
 */
export function pad(a: NDArray, pads: readonly number[], mode: "constant" | "reflect" | "edge" = "constant", value = 0): NDArray {
  const r = a.shape.length;
  const shape = a.shape.map((d, i) => d + pads[i]! + pads[i + r]!);
  return build(shape, (idx) => {
    const src: number[] = [];
    for (let i = 0; i < r; i++) {
      const d = a.shape[i]!;
      let j = idx[i]! - pads[i]!;
      if (j < 0 || j >= d) {
        if (mode === "constant") return value;
        if (mode === "edge") j = Math.min(Math.max(j, 0), d - 1);
        else while (j < 0 || j >= d) j = j < 0 ? -j : 2 * (d - 1) - j;
      }
      src.push(j);
    }
    return get(a, src);
  });
}

// ---------------------------------------------------------------- reductions

export type ReduceKind = "sum" | "mean" | "max" | "min" | "prod" | "sumsquare";

/** Reduce over `axes` (all axes when undefined). */
export function reduce(kind: ReduceKind, a: NDArray, axes: readonly number[] | undefined, keepdims: boolean): NDArray {
  const rank = a.shape.length;
  const ax = (axes ?? a.shape.map((_, i) => i)).map((x) => normAxis(x, rank));
  const kept = a.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const init = kind === "max" ? -Infinity : kind === "min" ? Infinity : kind === "prod" ? 1 : 0;
  const out = nd(kept);
  out.data.fill(init);
  let count = 1;
  for (const i of ax) count *= a.shape[i]!;
  for (let f = 0; f < a.data.length; f++) {
    const idx = unravel(f, a.shape);
    const o = ravel(idx.map((v, i) => (ax.includes(i) ? 0 : v)), kept);
    const v = a.data[f]!;
    const cur = out.data[o]!;
    switch (kind) {
      case "sum":
      case "mean": out.data[o] = cur + v; break;
      case "sumsquare": out.data[o] = cur + v * v; break;
      case "prod": out.data[o] = cur * v; break;
      case "max": out.data[o] = Math.max(cur, v); break;
      case "min": out.data[o] = Math.min(cur, v); break;
    }
  }
  if (kind === "mean") for (let i = 0; i < out.data.length; i++) out.data[i] /= count;
  return keepdims ? out : reshape(out, a.shape.filter((_, i) => !ax.includes(i)));
}

/** Index of the first maximum along `axis` (ONNX select_last_index = 0). */
export function argMax(a: NDArray, axis: number, keepdims: boolean): NDArray {
  const ax = normAxis(axis, a.shape.length);
  const kept = a.shape.map((d, i) => (i === ax ? 1 : d));
  const out = build(kept, (idx) => {
    let best = 0;
    let bestV = -Infinity;
    for (let k = 0; k < a.shape[ax]!; k++) {
      const v = get(a, idx.map((x, i) => (i === ax ? k : x)));
      if (v > bestV) {
        bestV = v;
        best = k;
      }
    }
    return best;
  });
  return keepdims ? out : reshape(out, a.shape.filter((_, i) => i !== ax));
}

/** Calls f(offsets) for every 1-D lane along `axis` (offsets are flat positions in the lane). */
function lanes(shape: readonly number[], axis: number, f: (offsets: number[]) => void): void {
  const ax = normAxis(axis, shape.length);
  const outer = size(shape.slice(0, ax));
  const dim = shape[ax]!;
  const inner = size(shape.slice(ax + 1));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const offs: number[] = [];
      for (let k = 0; k < dim; k++) offs.push((o * dim + k) * inner + i);
      f(offs);
    }
  }
}

export function softmax(a: NDArray, axis = -1): NDArray {
  const out = nd(a.shape);
  lanes(a.shape, axis, (offs) => {
    const m = Math.max(...offs.map((o) => a.data[o]!));
    let s = 0;
    for (const o of offs) s += Math.exp(a.data[o]! - m);
    for (const o of offs) out.data[o] = Math.exp(a.data[o]! - m) / s;
  });
  return out;
}

export function logSoftmax(a: NDArray, axis = -1): NDArray {
  const out = nd(a.shape);
  lanes(a.shape, axis, (offs) => {
    const m = Math.max(...offs.map((o) => a.data[o]!));
    let s = 0;
    for (const o of offs) s += Math.exp(a.data[o]! - m);
    const lse = m + Math.log(s);
    for (const o of offs) out.data[o] = a.data[o]! - lse;
  });
  return out;
}

// ---------------------------------------------------------------- normalization

/** Mean and biased variance of a list of values (two-pass). */
function moments(v: number[]): { mean: number; variance: number } {
  const mean = v.reduce((s, x) => s + x, 0) / v.length;
  const variance = v.reduce((s, x) => s + (x - mean) * (x - mean), 0) / v.length;
  return { mean, variance };
}

/** PyTorch LayerNorm: normalize over the trailing axes that gamma's shape covers. */
export function layerNorm(x: NDArray, gamma: NDArray, beta: NDArray | null, eps = 1e-5): NDArray {
  const inner = size(gamma.shape);
  const outer = x.data.length / inner;
  const out = nd(x.shape);
  for (let o = 0; o < outer; o++) {
    const row = Array.from(x.data.subarray(o * inner, (o + 1) * inner));
    const { mean, variance } = moments(row);
    const inv = 1 / Math.sqrt(variance + eps);
    for (let j = 0; j < inner; j++) out.data[o * inner + j] = (row[j]! - mean) * inv * gamma.data[j]! + (beta ? beta.data[j]! : 0);
  }
  return out;
}

/** InstanceNorm over the spatial axes of [N, C, ...], per-channel scale and bias. */
export function instanceNorm(x: NDArray, scale: NDArray, bias: NDArray, eps = 1e-5): NDArray {
  const [N, C] = x.shape as [number, number];
  const sp = size(x.shape.slice(2));
  const out = nd(x.shape);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const base = (n * C + c) * sp;
      const v = Array.from(x.data.subarray(base, base + sp));
      const { mean, variance } = moments(v);
      const inv = 1 / Math.sqrt(variance + eps);
      for (let j = 0; j < sp; j++) out.data[base + j] = (v[j]! - mean) * inv * scale.data[c]! + bias.data[c]!;
    }
  }
  return out;
}

/** PyTorch GroupNorm: statistics over (C/G channels x spatial) per group, per-channel affine. */
export function groupNorm(x: NDArray, groups: number, gamma: NDArray | null, beta: NDArray | null, eps = 1e-5): NDArray {
  const [N, C] = x.shape as [number, number];
  const sp = size(x.shape.slice(2));
  const cg = C / groups;
  const out = nd(x.shape);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      const base = (n * C + g * cg) * sp;
      const v = Array.from(x.data.subarray(base, base + cg * sp));
      const { mean, variance } = moments(v);
      const inv = 1 / Math.sqrt(variance + eps);
      for (let j = 0; j < cg * sp; j++) {
        const c = g * cg + Math.floor(j / sp);
        out.data[base + j] = (v[j]! - mean) * inv * (gamma ? gamma.data[c]! : 1) + (beta ? beta.data[c]! : 0);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- convolution and pooling

export interface Conv2dOptions {
  stride?: [number, number];
  /** ONNX order: [top, left, bottom, right]. */
  pads?: [number, number, number, number];
  dilation?: [number, number];
  groups?: number;
}

/**
 * conv2d, PyTorch layout: x [N, C, H, W], w [M, C/groups, KH, KW], b [M].
 * out[n, m, i, j] = b[m] + sum_{c, p, q} x[n, g*C/groups + c, i*sh - top + p*dh, j*sw - left + q*dw] w[m, c, p, q]
 * with g = floor(m / (M/groups)) and out-of-range (padded) positions contributing zero.
 */
export function conv2d(x: NDArray, w: NDArray, b: NDArray | null, o: Conv2dOptions = {}): NDArray {
  const [N, , H, W] = x.shape as [number, number, number, number];
  const [M, Cg, KH, KW] = w.shape as [number, number, number, number];
  const G = o.groups ?? 1;
  const [sh, sw] = o.stride ?? [1, 1];
  const [pt, pl, pb, pr] = o.pads ?? [0, 0, 0, 0];
  const [dh, dw] = o.dilation ?? [1, 1];
  const OH = Math.floor((H + pt + pb - dh * (KH - 1) - 1) / sh) + 1;
  const OW = Math.floor((W + pl + pr - dw * (KW - 1) - 1) / sw) + 1;
  const Mg = M / G;
  return build([N, M, OH, OW], ([n, m, i, j]) => {
    const g = Math.floor(m! / Mg);
    let s = b ? b.data[m!]! : 0;
    for (let c = 0; c < Cg; c++) {
      for (let p = 0; p < KH; p++) {
        const ih = i! * sh - pt + p * dh;
        if (ih < 0 || ih >= H) continue;
        for (let q = 0; q < KW; q++) {
          const iw = j! * sw - pl + q * dw;
          if (iw < 0 || iw >= W) continue;
          s += get(x, [n!, g * Cg + c, ih, iw]) * get(w, [m!, c, p, q]);
        }
      }
    }
    return s;
  });
}

export interface ConvTranspose2dOptions extends Conv2dOptions {
  outputPadding?: [number, number];
}

/**
 * convTranspose2d (the adjoint of conv2d), PyTorch layout: x [N, C, H, W], w [C, M/groups, KH, KW].
 * Each input pixel (i, j) of channel c scatters x * w[c, mo, p, q] to output
 * (i*sh - top + p*dh, j*sw - left + q*dw) of channel g*(M/groups) + mo, g = floor(c / (C/groups)).
 * OH = sh (H - 1) + output_padding + dh (KH - 1) + 1 - top - bottom.
 */
export function convTranspose2d(x: NDArray, w: NDArray, b: NDArray | null, o: ConvTranspose2dOptions = {}): NDArray {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [, Mg, KH, KW] = w.shape as [number, number, number, number];
  const G = o.groups ?? 1;
  const M = Mg * G;
  const Cg = C / G;
  const [sh, sw] = o.stride ?? [1, 1];
  const [pt, pl, pb, pr] = o.pads ?? [0, 0, 0, 0];
  const [dh, dw] = o.dilation ?? [1, 1];
  const [oph, opw] = o.outputPadding ?? [0, 0];
  const OH = sh * (H - 1) + oph + dh * (KH - 1) + 1 - pt - pb;
  const OW = sw * (W - 1) + opw + dw * (KW - 1) + 1 - pl - pr;
  const out = nd([N, M, OH, OW]);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const g = Math.floor(c / Cg);
      for (let i = 0; i < H; i++) {
        for (let j = 0; j < W; j++) {
          const v = get(x, [n, c, i, j]);
          for (let mo = 0; mo < Mg; mo++) {
            for (let p = 0; p < KH; p++) {
              const oh = i * sh - pt + p * dh;
              if (oh < 0 || oh >= OH) continue;
              for (let q = 0; q < KW; q++) {
                const ow = j * sw - pl + q * dw;
                if (ow < 0 || ow >= OW) continue;
                out.data[ravel([n, g * Mg + mo, oh, ow], out.shape)] += v * get(w, [c, mo, p, q]);
              }
            }
          }
        }
      }
    }
  }
  if (b) for (let f = 0; f < out.data.length; f++) out.data[f] += b.data[unravel(f, out.shape)[1]!]!;
  return out;
}

export interface Pool2dOptions {
  stride?: [number, number];
  /** ONNX order: [top, left, bottom, right]. */
  pads?: [number, number, number, number];
}

function pool2d(x: NDArray, kernel: [number, number], o: Pool2dOptions, f: (vals: number[]) => number): NDArray {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [KH, KW] = kernel;
  const [sh, sw] = o.stride ?? kernel;
  const [pt, pl, pb, pr] = o.pads ?? [0, 0, 0, 0];
  const OH = Math.floor((H + pt + pb - KH) / sh) + 1;
  const OW = Math.floor((W + pl + pr - KW) / sw) + 1;
  return build([N, C, OH, OW], ([n, c, i, j]) => {
    const vals: number[] = [];
    for (let p = 0; p < KH; p++) {
      for (let q = 0; q < KW; q++) {
        const ih = i! * sh - pt + p;
        const iw = j! * sw - pl + q;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) vals.push(get(x, [n!, c!, ih, iw]));
      }
    }
    return f(vals);
  });
}

/** Max over each window; padded positions never win. */
export function maxPool2d(x: NDArray, kernel: [number, number], o: Pool2dOptions = {}): NDArray {
  return pool2d(x, kernel, o, (v) => Math.max(...v));
}

/** Mean over each window: divisor KH*KW with countIncludePad, else the number of real pixels. */
export function avgPool2d(x: NDArray, kernel: [number, number], o: Pool2dOptions & { countIncludePad?: boolean } = {}): NDArray {
  const include = o.countIncludePad ?? true;
  return pool2d(x, kernel, o, (v) => v.reduce((s, a) => s + a, 0) / (include ? kernel[0] * kernel[1] : v.length));
}

export function globalAvgPool(x: NDArray): NDArray {
  return reduce("mean", x, x.shape.slice(2).map((_, i) => i + 2), true);
}

/**
 * Nearest resize of the spatial axes of [N, C, ...] with ONNX coordinate_transformation_mode
 * "asymmetric" and nearest_mode "floor": src = floor(dst * in / out) (= PyTorch mode="nearest").
 */
export function resizeNearest(x: NDArray, sizes: readonly number[]): NDArray {
  const out = [...x.shape.slice(0, 2), ...sizes];
  return build(out, (idx) => get(x, idx.map((v, i) => (i < 2 ? v : Math.min(Math.floor((v * x.shape[i]!) / out[i]!), x.shape[i]! - 1)))));
}

/**
 * (Multi)linear resize with "half_pixel": src = (dst + 0.5) * in / out - 0.5, clamped to
 * [0, in - 1] (= PyTorch mode="bilinear", align_corners=False, antialias=False).
 */
export function resizeLinear(x: NDArray, sizes: readonly number[]): NDArray {
  const out = [...x.shape.slice(0, 2), ...sizes];
  const ns = sizes.length;
  return build(out, (idx) => {
    const lo: number[] = [];
    const hi: number[] = [];
    const t: number[] = [];
    for (let k = 0; k < ns; k++) {
      const inD = x.shape[2 + k]!;
      let s = ((idx[2 + k]! + 0.5) * inD) / out[2 + k]! - 0.5;
      s = Math.min(Math.max(s, 0), inD - 1);
      const i0 = Math.floor(s);
      lo.push(i0);
      hi.push(Math.min(i0 + 1, inD - 1));
      t.push(s - i0);
    }
    let v = 0;
    for (let mask = 0; mask < 1 << ns; mask++) {
      let wgt = 1;
      const src = [idx[0]!, idx[1]!];
      for (let k = 0; k < ns; k++) {
        const up = (mask >> k) & 1;
        wgt *= up ? t[k]! : 1 - t[k]!;
        src.push(up ? hi[k]! : lo[k]!);
      }
      if (wgt !== 0) v += wgt * get(x, src);
    }
    return v;
  });
}

// ---------------------------------------------------------------- attention

/** softmax(q k^T * scale) v over the last two axes; scale defaults to 1/sqrt(d). */
export function attention(q: NDArray, k: NDArray, v: NDArray, scale = 1 / Math.sqrt(q.shape[q.shape.length - 1]!)): NDArray {
  const r = k.shape.length;
  const perm = k.shape.map((_, i) => (i === r - 1 ? r - 2 : i === r - 2 ? r - 1 : i));
  const scores = map(matmul(q, transpose(k, perm)), (s) => s * scale);
  return matmul(softmax(scores, -1), v);
}
