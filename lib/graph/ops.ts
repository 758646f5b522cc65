// Forward ops of the builder. Each function checks shapes at build time (errors name the op and
// the shapes involved), infers the output shape exactly as ONNX does, and adds one ONNX node.
// Composite ops (gelu, silu, groupNorm, attention) are written out in standard ops so that the
// autodiff pass only ever sees primitives, and ONNX Runtime's fusions can still recognise them.

import { type DType, type Graph, type Node, Tensor, float, int, ints, str, type Attr } from "./graph.ts";
import { broadcastShapes, fmt, normAxis, product, sameShape } from "./shape.ts";

export type Operand = Tensor | number;

const scalarCache = new WeakMap<Graph, Map<string, Tensor>>();

/** A scalar constant of the given dtype, shared within a graph. */
export function scalar(g: Graph, value: number, dtype: DType = "float32"): Tensor {
  let m = scalarCache.get(g);
  if (!m) scalarCache.set(g, (m = new Map()));
  const key = `${dtype}:${Object.is(value, -0) ? "-0" : value}`;
  let t = m.get(key);
  if (!t) {
    t = g.constant([value], [], dtype);
    m.set(key, t);
  }
  return t;
}

/** An int64 constant vector (shapes, axes, pads...). */
export function i64(g: Graph, values: readonly number[]): Tensor {
  return g.constant(BigInt64Array.from(values.map((v) => BigInt(v))), [values.length], "int64");
}

function graphOf(...xs: Operand[]): Graph {
  for (const x of xs) if (x instanceof Tensor) return x.graph;
  throw new Error("at least one operand must be a tensor");
}

function lift(x: Operand, like: Tensor): Tensor {
  return x instanceof Tensor ? x : scalar(like.graph, x, like.dtype);
}

function first(xs: Operand[]): Tensor {
  for (const x of xs) if (x instanceof Tensor) return x;
  throw new Error("at least one operand must be a tensor");
}

function one(g: Graph, op: string, inputs: (Tensor | null)[], attrs: Record<string, Attr>, shape: readonly number[], dtype: DType): Tensor {
  return g.addNode(op, inputs, attrs, [{ shape, dtype }])[0]!;
}

// ---------------------------------------------------------------- elementwise

function binary(op: string, a: Operand, b: Operand, outDType?: DType): Tensor {
  const like = first([a, b]);
  const x = lift(a, like);
  const y = lift(b, like);
  if (x.dtype !== y.dtype) throw new Error(`${op}: dtypes differ (${x} and ${y})`);
  const shape = broadcastShapes(op, x.shape, y.shape);
  return one(like.graph, op, [x, y], {}, shape, outDType ?? x.dtype);
}

export const add = (a: Operand, b: Operand) => binary("Add", a, b);
export const sub = (a: Operand, b: Operand) => binary("Sub", a, b);
export const mul = (a: Operand, b: Operand) => binary("Mul", a, b);
export const div = (a: Operand, b: Operand) => binary("Div", a, b);
export const pow = (a: Operand, b: Operand) => binary("Pow", a, b);
export const maximum = (a: Operand, b: Operand) => binary("Max", a, b);
export const minimum = (a: Operand, b: Operand) => binary("Min", a, b);
export const equal = (a: Operand, b: Operand) => binary("Equal", a, b, "bool");
export const less = (a: Operand, b: Operand) => binary("Less", a, b, "bool");
export const greater = (a: Operand, b: Operand) => binary("Greater", a, b, "bool");
export const and = (a: Tensor, b: Tensor) => binary("And", a, b, "bool");
export const or = (a: Tensor, b: Tensor) => binary("Or", a, b, "bool");

function unary(op: string, x: Tensor, attrs: Record<string, Attr> = {}, dtype?: DType): Tensor {
  return one(x.graph, op, [x], attrs, x.shape, dtype ?? x.dtype);
}

export const neg = (x: Tensor) => unary("Neg", x);
export const exp = (x: Tensor) => unary("Exp", x);
export const log = (x: Tensor) => unary("Log", x);
export const sqrt = (x: Tensor) => unary("Sqrt", x);
export const abs = (x: Tensor) => unary("Abs", x);
export const tanh = (x: Tensor) => unary("Tanh", x);
export const sin = (x: Tensor) => unary("Sin", x);
export const cos = (x: Tensor) => unary("Cos", x);
export const relu = (x: Tensor) => unary("Relu", x);
export const sigmoid = (x: Tensor) => unary("Sigmoid", x);
export const erf = (x: Tensor) => unary("Erf", x);
export const reciprocal = (x: Tensor) => unary("Reciprocal", x);
export const floor = (x: Tensor) => unary("Floor", x);
export const sign = (x: Tensor) => unary("Sign", x);
export const not = (x: Tensor) => unary("Not", x);
export const identity = (x: Tensor) => unary("Identity", x);
export const softplus = (x: Tensor) => unary("Softplus", x);
export const leakyRelu = (x: Tensor, alpha = 0.01) => unary("LeakyRelu", x, { alpha: float(alpha) });

/** Clamp to [lo, hi] (either bound may be omitted). ReLU6 is clip(x, 0, 6). */
export function clip(x: Tensor, lo?: number, hi?: number): Tensor {
  const g = x.graph;
  return one(g, "Clip", [x, lo === undefined ? null : scalar(g, lo, x.dtype), hi === undefined ? null : scalar(g, hi, x.dtype)], {}, x.shape, x.dtype);
}

export function cast(x: Tensor, to: DType): Tensor {
  if (x.dtype === to) return x;
  return one(x.graph, "Cast", [x], { to: int(onnxTypeCode(to)) }, x.shape, to);
}

export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  if (cond.dtype !== "bool") throw new Error(`Where: condition must be bool, got ${cond}`);
  const like = first([a, b]);
  const x = lift(a, like);
  const y = lift(b, like);
  if (x.dtype !== y.dtype) throw new Error(`Where: dtypes differ (${x} and ${y})`);
  return one(cond.graph, "Where", [cond, x, y], {}, broadcastShapes("Where", cond.shape, x.shape, y.shape), x.dtype);
}

/**
 * The last node (the Mul by 0.5) of each erf GELU that `gelu` built: autodiff gives the pattern
 * one gradient expression of x alone (lib/graph/autodiff.ts geluGrad) instead of differentiating
 * its five nodes one by one, so that ONNX Runtime still fuses the forward into one Gelu kernel.
 */
export const GELU_ENDS = new WeakSet<Node>();

/** Gaussian error linear unit, exact (erf) form: the pattern ONNX Runtime fuses into one Gelu kernel. */
export function gelu(x: Tensor): Tensor {
  const y = mul(mul(x, add(erf(div(x, Math.SQRT2)), 1)), 0.5);
  GELU_ENDS.add(y.node!);
  return y;
}

/** GELU, tanh approximation (OpenAI CLIP's "quick" variants use sigmoid; see quickGelu). */
export function geluTanh(x: Tensor): Tensor {
  const inner = mul(add(x, mul(pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(mul(x, add(tanh(inner), 1)), 0.5);
}

/** x * sigmoid(1.702 x), the activation of OpenAI's CLIP. */
export function quickGelu(x: Tensor): Tensor {
  return mul(x, sigmoid(mul(x, 1.702)));
}

/** SiLU / swish: x * sigmoid(x). */
export function silu(x: Tensor): Tensor {
  return mul(x, sigmoid(x));
}

// ---------------------------------------------------------------- linear algebra

/** ONNX MatMul: numpy matmul semantics (1-D promotion, batch broadcasting). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.dtype !== b.dtype) throw new Error(`MatMul: dtypes differ (${a} and ${b})`);
  if (a.rank === 0 || b.rank === 0) throw new Error(`MatMul: scalars are not allowed (${fmt(a.shape)} x ${fmt(b.shape)})`);
  const as = a.rank === 1 ? [1, a.shape[0]!] : [...a.shape];
  const bs = b.rank === 1 ? [b.shape[0]!, 1] : [...b.shape];
  const k1 = as[as.length - 1]!;
  const k2 = bs[bs.length - 2]!;
  if (k1 !== k2) throw new Error(`MatMul: cannot multiply ${fmt(a.shape)} by ${fmt(b.shape)}: inner dimensions ${k1} and ${k2} differ`);
  const batch = broadcastShapes("MatMul", as.slice(0, -2), bs.slice(0, -2));
  const shape = [...batch];
  if (a.rank !== 1) shape.push(as[as.length - 2]!);
  if (b.rank !== 1) shape.push(bs[bs.length - 1]!);
  return one(a.graph, "MatMul", [a, b], {}, shape, a.dtype);
}

export interface GemmOptions { transA?: boolean; transB?: boolean; alpha?: number; beta?: number }

/** ONNX Gemm: alpha * A' B' + beta * C for 2-D A, B (A' = A^T when transA), C broadcast to the result. */
export function gemm(a: Tensor, b: Tensor, c: Tensor | null, o: GemmOptions = {}): Tensor {
  if (a.rank !== 2 || b.rank !== 2) throw new Error(`Gemm: operands must be 2-D, got ${fmt(a.shape)} and ${fmt(b.shape)}`);
  const [m, k1] = o.transA ? [a.shape[1]!, a.shape[0]!] : [a.shape[0]!, a.shape[1]!];
  const [k2, n] = o.transB ? [b.shape[1]!, b.shape[0]!] : [b.shape[0]!, b.shape[1]!];
  if (k1 !== k2) throw new Error(`Gemm: cannot multiply ${fmt(a.shape)}${o.transA ? "^T" : ""} by ${fmt(b.shape)}${o.transB ? "^T" : ""}: inner dimensions ${k1} and ${k2} differ`);
  if (c) broadcastShapes("Gemm", [m, n], c.shape);
  const attrs: Record<string, Attr> = {};
  if (o.transA) attrs.transA = int(1);
  if (o.transB) attrs.transB = int(1);
  if (o.alpha !== undefined && o.alpha !== 1) attrs.alpha = float(o.alpha);
  if (o.beta !== undefined && o.beta !== 1) attrs.beta = float(o.beta);
  return one(a.graph, "Gemm", c ? [a, b, c] : [a, b], attrs, [m, n], a.dtype);
}

/**
 * x @ w^T + b with w stored [out, in] (the PyTorch nn.Linear layout). Lowered to one Gemm with
 * transB over the flattened rows, so neither the forward nor the backward pass copies a
 * transposed weight.
 */
export function linear(x: Tensor, w: Tensor, b?: Tensor): Tensor {
  if (w.rank !== 2) throw new Error(`linear: weight must be 2-D [out, in], got ${fmt(w.shape)}`);
  const k = x.shape[x.rank - 1];
  if (k !== w.shape[1]) throw new Error(`linear: input ${fmt(x.shape)} has ${k} features, weight ${fmt(w.shape)} expects ${w.shape[1]}`);
  if (b && (b.rank !== 1 || b.shape[0] !== w.shape[0])) throw new Error(`linear: bias ${fmt(b.shape)} does not match ${w.shape[0]} outputs`);
  const rows = x.rank === 2 ? x : reshape(x, [-1, k!]);
  const y = gemm(rows, w, b ?? null, { transB: true });
  return x.rank === 2 ? y : reshape(y, [...x.shape.slice(0, -1), w.shape[0]!]);
}

// ---------------------------------------------------------------- shape ops

/** Reshape; one dimension may be -1 (inferred), 0 copies the input's dimension (ONNX rule). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const out = shape.map((d, i) => (d === 0 ? x.shape[i]! : d));
  const known = out.filter((d) => d !== -1);
  const unknown = out.length - known.length;
  if (unknown > 1) throw new Error(`Reshape: at most one -1 allowed, got ${fmt(shape)}`);
  if (unknown === 1) {
    const k = product(known);
    if (k === 0 || x.size % k !== 0) throw new Error(`Reshape: cannot reshape ${fmt(x.shape)} (${x.size} elements) to ${fmt(shape)}`);
    out[out.indexOf(-1)] = x.size / k;
  }
  if (product(out) !== x.size) throw new Error(`Reshape: cannot reshape ${fmt(x.shape)} (${x.size} elements) to ${fmt(shape)} (${product(out)} elements)`);
  if (sameShape(out, x.shape)) return x;
  return one(x.graph, "Reshape", [x, i64(x.graph, out)], {}, out, x.dtype);
}

export function flatten(x: Tensor, fromAxis = 1): Tensor {
  const a = normAxis("Flatten", fromAxis, x.rank);
  return reshape(x, [...x.shape.slice(0, a), product(x.shape.slice(a))]);
}

export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new Error(`Transpose: perm ${fmt(perm)} is not a permutation of the ${x.rank} axes of ${fmt(x.shape)}`);
  }
  if (perm.every((p, i) => p === i)) return x;
  return one(x.graph, "Transpose", [x], { perm: ints([...perm]) }, perm.map((p) => x.shape[p]!), x.dtype);
}

export function unsqueeze(x: Tensor, axes: readonly number[]): Tensor {
  const rank = x.rank + axes.length;
  const norm = axes.map((a) => normAxis("Unsqueeze", a, rank)).sort((a, b) => a - b);
  const shape: number[] = [];
  let j = 0;
  for (let i = 0; i < rank; i++) shape.push(norm.includes(i) ? 1 : x.shape[j++]!);
  return one(x.graph, "Unsqueeze", [x, i64(x.graph, norm)], {}, shape, x.dtype);
}

export function squeeze(x: Tensor, axes: readonly number[]): Tensor {
  const norm = axes.map((a) => normAxis("Squeeze", a, x.rank));
  for (const a of norm) if (x.shape[a] !== 1) throw new Error(`Squeeze: axis ${a} of ${fmt(x.shape)} is not 1`);
  // No axes is a no-op; ONNX would read empty axes as "squeeze every 1".
  if (norm.length === 0) return x;
  return one(x.graph, "Squeeze", [x, i64(x.graph, norm)], {}, x.shape.filter((_, i) => !norm.includes(i)), x.dtype);
}

export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error("Concat: no inputs");
  const r = xs[0]!.rank;
  const a = normAxis("Concat", axis, r);
  for (const x of xs) {
    if (x.rank !== r || x.dtype !== xs[0]!.dtype || x.shape.some((d, i) => i !== a && d !== xs[0]!.shape[i])) {
      throw new Error(`Concat: along axis ${a}, shapes ${xs.map((t) => fmt(t.shape)).join(", ")} do not match outside that axis (or dtypes differ)`);
    }
  }
  if (xs.length === 1) return xs[0]!;
  const shape = [...xs[0]!.shape];
  shape[a] = xs.reduce((s, x) => s + x.shape[a]!, 0);
  return one(xs[0]!.graph, "Concat", xs, { axis: int(a) }, shape, xs[0]!.dtype);
}

export function split(x: Tensor, sizes: readonly number[], axis: number): Tensor[] {
  const a = normAxis("Split", axis, x.rank);
  const total = sizes.reduce((s, d) => s + d, 0);
  if (total !== x.shape[a]) throw new Error(`Split: sizes ${fmt(sizes)} sum to ${total}, but axis ${a} of ${fmt(x.shape)} is ${x.shape[a]}`);
  const outs = sizes.map((d) => {
    const s = [...x.shape];
    s[a] = d;
    return { shape: s, dtype: x.dtype };
  });
  return x.graph.addNode("Split", [x, i64(x.graph, sizes)], { axis: int(a) }, outs);
}

/** Slice along the given axes with ONNX rules (negative indices count from the end, out-of-range ones clamp). */
export function slice(x: Tensor, starts: readonly number[], ends: readonly number[], axes?: readonly number[], steps?: readonly number[]): Tensor {
  const ax = (axes ?? starts.map((_, i) => i)).map((a) => normAxis("Slice", a, x.rank));
  const st = steps ?? starts.map(() => 1);
  const shape = [...x.shape];
  ax.forEach((a, i) => {
    const dim = x.shape[a]!;
    const step = st[i]!;
    if (step === 0) throw new Error("Slice: step cannot be 0");
    const clampIdx = (v: number, lo: number, hi: number) => Math.min(Math.max(v < 0 ? v + dim : v, lo), hi);
    // ONNX (not numpy): with a negative step the start clamps to [0, dim - 1], the end to [-1, dim - 1].
    const s = step > 0 ? clampIdx(starts[i]!, 0, dim) : clampIdx(starts[i]!, 0, dim - 1);
    const e = step > 0 ? clampIdx(ends[i]!, 0, dim) : clampIdx(ends[i]!, -1, dim - 1);
    shape[a] = Math.max(0, Math.ceil((e - s) / step));
  });
  const g = x.graph;
  return one(g, "Slice", [x, i64(g, starts), i64(g, ends), i64(g, ax), i64(g, st)], {}, shape, x.dtype);
}

/** Gather along an axis with an int64 index tensor (or a list of indices). */
export function gather(x: Tensor, indices: Tensor | readonly number[], axis = 0): Tensor {
  const a = normAxis("Gather", axis, x.rank);
  const idx = indices instanceof Tensor ? indices : x.graph.constant(BigInt64Array.from(indices.map(BigInt)), [indices.length], "int64");
  if (idx.dtype !== "int64" && idx.dtype !== "int32") throw new Error(`Gather: indices must be int64 or int32, got ${idx}`);
  return one(x.graph, "Gather", [x, idx], { axis: int(a) }, [...x.shape.slice(0, a), ...idx.shape, ...x.shape.slice(a + 1)], x.dtype);
}

export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const out = broadcastShapes("Expand", x.shape, shape);
  if (sameShape(out, x.shape)) return x;
  return one(x.graph, "Expand", [x, i64(x.graph, shape)], {}, out, x.dtype);
}

export function tile(x: Tensor, repeats: readonly number[]): Tensor {
  if (repeats.length !== x.rank) throw new Error(`Tile: ${repeats.length} repeats for rank ${x.rank}`);
  return one(x.graph, "Tile", [x, i64(x.graph, repeats)], {}, x.shape.map((d, i) => d * repeats[i]!), x.dtype);
}

/** Pad with pads given per axis as [before..., after...] (ONNX order). */
export function pad(x: Tensor, pads: readonly number[], mode: "constant" | "reflect" | "edge" = "constant", value = 0): Tensor {
  if (pads.length !== 2 * x.rank) throw new Error(`Pad: ${pads.length} pads for rank ${x.rank} (needs ${2 * x.rank})`);
  const shape = x.shape.map((d, i) => d + pads[i]! + pads[i + x.rank]!);
  const g = x.graph;
  return one(g, "Pad", [x, i64(g, pads), mode === "constant" ? scalar(g, value, x.dtype) : null], { mode: str(mode) }, shape, x.dtype);
}

// ---------------------------------------------------------------- reductions

function reduceShape(op: string, x: Tensor, axes: readonly number[] | undefined, keepdims: boolean): { axes: number[]; shape: number[] } {
  const ax = (axes ?? x.shape.map((_, i) => i)).map((a) => normAxis(op, a, x.rank));
  const shape = keepdims ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
  return { axes: ax, shape };
}

function reduce(op: string, x: Tensor, axes: readonly number[] | undefined, keepdims: boolean): Tensor {
  const r = reduceShape(op, x, axes, keepdims);
  // No axes is a no-op (numpy's axis=()); ONNX would read empty axes as "reduce everything".
  if (r.axes.length === 0) return x;
  // Opset 17: ReduceSum takes axes as an input, the others as an attribute.
  if (op === "ReduceSum") return one(x.graph, op, [x, i64(x.graph, r.axes)], { keepdims: int(keepdims ? 1 : 0) }, r.shape, x.dtype);
  return one(x.graph, op, [x], { axes: ints(r.axes), keepdims: int(keepdims ? 1 : 0) }, r.shape, x.dtype);
}

export const reduceSum = (x: Tensor, axes?: readonly number[], keepdims = true) => reduce("ReduceSum", x, axes, keepdims);
export const reduceMean = (x: Tensor, axes?: readonly number[], keepdims = true) => reduce("ReduceMean", x, axes, keepdims);
export const reduceMax = (x: Tensor, axes?: readonly number[], keepdims = true) => reduce("ReduceMax", x, axes, keepdims);
export const reduceMin = (x: Tensor, axes?: readonly number[], keepdims = true) => reduce("ReduceMin", x, axes, keepdims);
export const reduceProd = (x: Tensor, axes?: readonly number[], keepdims = true) => reduce("ReduceProd", x, axes, keepdims);
export const reduceSumSquare = (x: Tensor, axes?: readonly number[], keepdims = true) => reduce("ReduceSumSquare", x, axes, keepdims);

export function argMax(x: Tensor, axis: number, keepdims = true): Tensor {
  const a = normAxis("ArgMax", axis, x.rank);
  return one(x.graph, "ArgMax", [x], { axis: int(a), keepdims: int(keepdims ? 1 : 0) }, reduceShape("ArgMax", x, [a], keepdims).shape, "int64");
}

export function softmax(x: Tensor, axis = -1): Tensor {
  return one(x.graph, "Softmax", [x], { axis: int(normAxis("Softmax", axis, x.rank)) }, x.shape, x.dtype);
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return one(x.graph, "LogSoftmax", [x], { axis: int(normAxis("LogSoftmax", axis, x.rank)) }, x.shape, x.dtype);
}

// ---------------------------------------------------------------- normalization

/** LayerNorm over the last axes covered by gamma's shape (PyTorch nn.LayerNorm semantics). */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor | null, eps = 1e-5): Tensor {
  const k = gamma.rank;
  if (!sameShape(x.shape.slice(x.rank - k), gamma.shape)) throw new Error(`LayerNormalization: input ${fmt(x.shape)} does not end with the weight's shape ${fmt(gamma.shape)}`);
  if (beta && !sameShape(beta.shape, gamma.shape)) throw new Error(`LayerNormalization: bias ${fmt(beta.shape)} and weight ${fmt(gamma.shape)} differ`);
  // Without a bias the input is left off entirely: a trailing "" input makes onnxruntime 1.30's
  // extended graph optimizations crash (segfault) while creating the session.
  return one(x.graph, "LayerNormalization", beta ? [x, gamma, beta] : [x, gamma], { axis: int(x.rank - k), epsilon: float(eps) }, x.shape, x.dtype);
}

/** InstanceNormalization over the spatial axes of [N, C, ...] with per-channel scale and bias. */
export function instanceNorm(x: Tensor, scale: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  if (x.rank < 3 || scale.rank !== 1 || scale.shape[0] !== x.shape[1] || !sameShape(scale.shape, bias.shape)) {
    throw new Error(`InstanceNormalization: input ${fmt(x.shape)} needs scale and bias of shape [${x.shape[1]}], got ${fmt(scale.shape)} and ${fmt(bias.shape)}`);
  }
  return one(x.graph, "InstanceNormalization", [x, scale, bias], { epsilon: float(eps) }, x.shape, x.dtype);
}

/** GroupNorm (PyTorch nn.GroupNorm): normalize over (C/G, spatial) per group, then per-channel affine. */
export function groupNorm(x: Tensor, groups: number, gamma: Tensor | null, beta: Tensor | null, eps = 1e-5): Tensor {
  const [n, c] = x.shape as [number, number];
  if (x.rank < 3 || c % groups !== 0) throw new Error(`GroupNorm: ${groups} groups do not divide the ${c} channels of ${fmt(x.shape)}`);
  const g = x.graph;
  const ones = g.constant(new Float32Array(groups).fill(1), [groups]);
  const zeros = g.constant(new Float32Array(groups), [groups]);
  const grouped = reshape(x, [n, groups, -1]);
  let y = reshape(instanceNorm(grouped, ones, zeros, eps), x.shape);
  const affine = [c, ...x.shape.slice(2).map(() => 1)];
  if (gamma) y = mul(y, reshape(gamma, affine));
  if (beta) y = add(y, reshape(beta, affine));
  return y;
}

// ---------------------------------------------------------------- convolution and pooling

export interface ConvOptions {
  stride?: number | number[];
  /** Symmetric padding per spatial axis, or explicit ONNX pads [begin..., end...]. */
  padding?: number | number[];
  dilation?: number | number[];
  groups?: number;
}

function spatial(v: number | number[] | undefined, n: number, dflt: number): number[] {
  if (v === undefined) return new Array(n).fill(dflt);
  if (typeof v === "number") return new Array(n).fill(v);
  if (v.length !== n) throw new Error(`expected ${n} spatial values, got ${fmt(v)}`);
  return v;
}

function onnxPads(v: number | number[] | undefined, n: number): number[] {
  if (Array.isArray(v) && v.length === 2 * n) return v;
  const p = spatial(v, n, 0);
  return [...p, ...p];
}

/** Conv (PyTorch layout): x [N, C, *spatial], w [M, C/groups, *kernel], optional bias [M]. */
export function conv(x: Tensor, w: Tensor, b: Tensor | null, opts: ConvOptions = {}): Tensor {
  const n = x.rank - 2;
  const groups = opts.groups ?? 1;
  if (n < 1 || w.rank !== x.rank) throw new Error(`Conv: input ${fmt(x.shape)} and weight ${fmt(w.shape)} ranks do not match`);
  const [N, C] = x.shape as [number, number];
  const M = w.shape[0]!;
  if (C % groups !== 0 || M % groups !== 0 || w.shape[1] !== C / groups) {
    throw new Error(`Conv: input ${fmt(x.shape)} with ${groups} group(s) needs weight [*, ${C / groups}, ...], got ${fmt(w.shape)}`);
  }
  if (b && (b.rank !== 1 || b.shape[0] !== M)) throw new Error(`Conv: bias ${fmt(b.shape)} does not match ${M} output channels`);
  const kernel = w.shape.slice(2);
  const strides = spatial(opts.stride, n, 1);
  const dil = spatial(opts.dilation, n, 1);
  const pads = onnxPads(opts.padding, n);
  const out = [N, M];
  for (let i = 0; i < n; i++) {
    const o = Math.floor((x.shape[2 + i]! + pads[i]! + pads[i + n]! - dil[i]! * (kernel[i]! - 1) - 1) / strides[i]!) + 1;
    if (o < 1) throw new Error(`Conv: kernel ${fmt(kernel)} (dilation ${fmt(dil)}) is larger than padded input ${fmt(x.shape)}`);
    out.push(o);
  }
  const attrs = { kernel_shape: ints(kernel), strides: ints(strides), pads: ints(pads), dilations: ints(dil), group: int(groups) };
  return one(x.graph, "Conv", b ? [x, w, b] : [x, w], attrs, out, x.dtype);
}

export interface ConvTransposeOptions extends ConvOptions {
  outputPadding?: number | number[];
}

/** ConvTranspose (PyTorch layout): w [C, M/groups, *kernel]. */
export function convTranspose(x: Tensor, w: Tensor, b: Tensor | null, opts: ConvTransposeOptions = {}): Tensor {
  const n = x.rank - 2;
  const groups = opts.groups ?? 1;
  const [N, C] = x.shape as [number, number];
  if (w.rank !== x.rank || w.shape[0] !== C) throw new Error(`ConvTranspose: input ${fmt(x.shape)} needs weight [${C}, M/groups, ...], got ${fmt(w.shape)}`);
  const M = w.shape[1]! * groups;
  if (b && (b.rank !== 1 || b.shape[0] !== M)) throw new Error(`ConvTranspose: bias ${fmt(b.shape)} does not match ${M} output channels`);
  const kernel = w.shape.slice(2);
  const strides = spatial(opts.stride, n, 1);
  const dil = spatial(opts.dilation, n, 1);
  const pads = onnxPads(opts.padding, n);
  const outPad = spatial(opts.outputPadding, n, 0);
  const out = [N, M];
  for (let i = 0; i < n; i++) {
    out.push(strides[i]! * (x.shape[2 + i]! - 1) + outPad[i]! + (kernel[i]! - 1) * dil[i]! + 1 - pads[i]! - pads[i + n]!);
  }
  const attrs = { kernel_shape: ints(kernel), strides: ints(strides), pads: ints(pads), dilations: ints(dil), group: int(groups), output_padding: ints(outPad) };
  return one(x.graph, "ConvTranspose", b ? [x, w, b] : [x, w], attrs, out, x.dtype);
}

export interface PoolOptions {
  stride?: number | number[];
  padding?: number | number[];
  /** AveragePool only: count padded zeros in the divisor (PyTorch's default is true). */
  countIncludePad?: boolean;
}

function pool(op: "MaxPool" | "AveragePool", x: Tensor, kernel: number | number[], opts: PoolOptions): Tensor {
  const n = x.rank - 2;
  const k = spatial(kernel, n, 1);
  const strides = spatial(opts.stride ?? k, n, 1);
  const pads = onnxPads(opts.padding, n);
  const out = x.shape.slice(0, 2);
  for (let i = 0; i < n; i++) {
    const o = Math.floor((x.shape[2 + i]! + pads[i]! + pads[i + n]! - k[i]!) / strides[i]!) + 1;
    if (o < 1) throw new Error(`${op}: kernel ${fmt(k)} is larger than padded input ${fmt(x.shape)}`);
    out.push(o);
  }
  const attrs: Record<string, Attr> = { kernel_shape: ints(k), strides: ints(strides), pads: ints(pads) };
  if (op === "AveragePool") attrs.count_include_pad = int(opts.countIncludePad === false ? 0 : 1);
  return one(x.graph, op, [x], attrs, out, x.dtype);
}

export const maxPool = (x: Tensor, kernel: number | number[], opts: PoolOptions = {}) => pool("MaxPool", x, kernel, opts);
export const avgPool = (x: Tensor, kernel: number | number[], opts: PoolOptions = {}) => pool("AveragePool", x, kernel, opts);

export function globalAvgPool(x: Tensor): Tensor {
  return one(x.graph, "GlobalAveragePool", [x], {}, [...x.shape.slice(0, 2), ...x.shape.slice(2).map(() => 1)], x.dtype);
}

export interface ResizeOptions {
  mode?: "nearest" | "linear" | "cubic";
  /** ONNX coordinate_transformation_mode; "asymmetric" + floor nearest matches PyTorch's nearest interpolate. */
  coordinateTransform?: "half_pixel" | "asymmetric" | "align_corners" | "pytorch_half_pixel";
  nearestMode?: "floor" | "round_prefer_floor" | "round_prefer_ceil" | "ceil";
  /** Cubic coefficient (-0.75 in PyTorch, -0.5 in PIL/ONNX default). */
  cubicA?: number;
}

/** Resize the spatial axes of [N, C, *spatial] to the given sizes. */
export function resize(x: Tensor, sizes: readonly number[], opts: ResizeOptions = {}): Tensor {
  const n = x.rank - 2;
  if (sizes.length !== n) throw new Error(`Resize: ${sizes.length} sizes for ${n} spatial axes of ${fmt(x.shape)}`);
  const mode = opts.mode ?? "nearest";
  const out = [...x.shape.slice(0, 2), ...sizes];
  const g = x.graph;
  const attrs: Record<string, Attr> = {
    mode: str(mode),
    coordinate_transformation_mode: str(opts.coordinateTransform ?? (mode === "nearest" ? "asymmetric" : "half_pixel")),
    nearest_mode: str(opts.nearestMode ?? "floor"),
  };
  if (mode === "cubic") attrs.cubic_coeff_a = float(opts.cubicA ?? -0.75);
  return one(g, "Resize", [x, null, null, i64(g, out)], attrs, out, x.dtype);
}

/** Nearest-neighbour upsampling by an integer factor (the UNet Upsample2D). */
export function upsampleNearest(x: Tensor, factor: number): Tensor {
  return resize(x, x.shape.slice(2).map((d) => d * factor), { mode: "nearest" });
}

// ---------------------------------------------------------------- attention

/** softmax(q k^T * scale) v over the last two axes; q [.., Lq, d], k [.., Lk, d], v [.., Lk, dv]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, scale = 1 / Math.sqrt(q.shape[q.rank - 1]!)): Tensor {
  const scores = matmul(mul(q, scale), transpose(k, [...k.shape.keys()].map((i) => (i === k.rank - 1 ? k.rank - 2 : i === k.rank - 2 ? k.rank - 1 : i))));
  return matmul(softmax(scores, -1), v);
}

/** [B, L, heads*d] -> [B, heads, L, d] */
export function splitHeads(x: Tensor, heads: number): Tensor {
  const [b, l, c] = x.shape as [number, number, number];
  if (c % heads !== 0) throw new Error(`splitHeads: ${c} channels are not divisible by ${heads} heads`);
  return transpose(reshape(x, [b, l, heads, c / heads]), [0, 2, 1, 3]);
}

/** [B, heads, L, d] -> [B, L, heads*d] */
export function mergeHeads(x: Tensor): Tensor {
  const [b, h, l, d] = x.shape as [number, number, number, number];
  return reshape(transpose(x, [0, 2, 1, 3]), [b, l, h * d]);
}

// ---------------------------------------------------------------- dtype codes

export function onnxTypeCode(dt: DType): number {
  switch (dt) {
    case "float32": return 1;
    case "uint8": return 2;
    case "int32": return 6;
    case "int64": return 7;
    case "bool": return 9;
    case "float16": return 10;
    case "bfloat16": return 16;
  }
}
