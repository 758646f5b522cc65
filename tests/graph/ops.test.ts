// Every forward op of lib/graph/ops.ts, built into a small graph, compiled and run on ONNX Runtime
// (CPU), and compared with the plain-TypeScript references of ./reference.ts on seeded random
// inputs. The builder's inferred output shape must equal the reference's shape exactly.
//
// Tolerance: |got - want| <= TOL * (1 + |want|), i.e. 1e-5 absolute near zero and 1e-5 relative
// for large values. Inputs are float32 (the references see the exact float32 values, computed in
// float64); ONNX Runtime's vectorised exp/tanh/erf/logistic are good to a few float32 ulps, and
// sums are kept short (<= ~50 terms of magnitude <= 1) so float32 accumulation stays below 1e-6.
// Integer and boolean outputs must match exactly.

import { describe, expect, test } from "bun:test";
import * as ort from "onnxruntime-node";
import * as G from "../../lib/graph/index.ts";
import * as ops from "../../lib/graph/ops.ts";
import * as R from "./reference.ts";

const TOL = 1e-5;

type InDType = "float32" | "bool" | "int64";

interface InSpec {
  shape: number[];
  dtype?: InDType;
  /** Uniform range (inclusive integers when `int` or int64). */
  lo?: number;
  hi?: number;
  /** Integer-valued float32 (ties for comparisons, argMax, sign, cast). */
  int?: boolean;
  /** Fixed values instead of random ones. */
  values?: number[];
}

interface Case {
  /** The export of lib/graph/ops.ts under test. */
  op: string;
  name: string;
  inputs: InSpec[];
  build: (xs: G.Tensor[], g: G.Graph) => G.Tensor | G.Tensor[];
  ref: (xs: R.NDArray[]) => R.NDArray | R.NDArray[];
  tol?: number;
}

const F = (shape: number[], lo = -2, hi = 2): InSpec => ({ shape, lo, hi });
const I = (shape: number[], lo: number, hi: number): InSpec => ({ shape, lo, hi, int: true });
const B = (shape: number[]): InSpec => ({ shape, dtype: "bool" });
const IDX = (shape: number[], values: number[]): InSpec => ({ shape, dtype: "int64", values });
const fmt = (s: readonly number[]) => `[${s.join(",")}]`;
const scalarArr = (v: number) => R.nd([], [v]);

const cases: Case[] = [];
const add = (c: Case) => cases.push(c);

// ---------------------------------------------------------------- elementwise, binary

type Bin = (a: G.Operand, b: G.Operand) => G.Tensor;
type RBin = (a: R.NDArray, b: R.NDArray) => R.NDArray;
const BCAST: [number[], number[]][] = [
  [[2, 1, 4], [3, 1]],
  [[3, 4], [3, 4]],
  [[4], [2, 3, 4]],
  [[2, 3], []],
  [[2, 1, 3, 1], [1, 4, 1, 5]],
];
const binaries: [string, Bin, RBin, [number, number], [number, number]][] = [
  ["add", G.add, R.add, [-2, 2], [-2, 2]],
  ["sub", G.sub, R.sub, [-2, 2], [-2, 2]],
  ["mul", G.mul, R.mul, [-2, 2], [-2, 2]],
  ["div", G.div, R.div, [-2, 2], [0.5, 2]],
  ["pow", G.pow, R.pow, [0.5, 2], [-2, 2]],
  ["maximum", G.maximum, R.maximum, [-2, 2], [-2, 2]],
  ["minimum", G.minimum, R.minimum, [-2, 2], [-2, 2]],
];
for (const [op, fn, rf, ra, rb] of binaries) {
  for (const [sa, sb] of BCAST) {
    add({ op, name: `${fmt(sa)} with ${fmt(sb)}`, inputs: [F(sa, ...ra), F(sb, ...rb)], build: ([a, b]) => fn(a!, b!), ref: ([a, b]) => rf(a!, b!) });
  }
  add({ op, name: "tensor with number", inputs: [F([3, 5], ...ra)], build: ([a]) => fn(a!, 1.5), ref: ([a]) => rf(a!, scalarArr(1.5)) });
  add({ op, name: "number with tensor", inputs: [F([3, 5], ...rb)], build: ([b]) => fn(0.75, b!), ref: ([b]) => rf(scalarArr(0.75), b!) });
}
const comparisons: [string, Bin, RBin][] = [
  ["equal", G.equal, R.equal],
  ["less", G.less, R.less],
  ["greater", G.greater, R.greater],
];
for (const [op, fn, rf] of comparisons) {
  add({ op, name: "[2,1,4] with [3,1]", inputs: [I([2, 1, 4], -2, 2), I([3, 1], -2, 2)], build: ([a, b]) => fn(a!, b!), ref: ([a, b]) => rf(a!, b!) });
  add({ op, name: "[3,4] with [3,4]", inputs: [I([3, 4], -1, 1), I([3, 4], -1, 1)], build: ([a, b]) => fn(a!, b!), ref: ([a, b]) => rf(a!, b!) });
  add({ op, name: "tensor with number", inputs: [I([3, 5], -2, 2)], build: ([a]) => fn(a!, 1), ref: ([a]) => rf(a!, scalarArr(1)) });
}
add({ op: "and", name: "[2,1,4] with [3,1]", inputs: [B([2, 1, 4]), B([3, 1])], build: ([a, b]) => G.and(a!, b!), ref: ([a, b]) => R.and(a!, b!) });
add({ op: "and", name: "[3,4] with [3,4]", inputs: [B([3, 4]), B([3, 4])], build: ([a, b]) => G.and(a!, b!), ref: ([a, b]) => R.and(a!, b!) });
add({ op: "or", name: "[2,1,4] with [3,1]", inputs: [B([2, 1, 4]), B([3, 1])], build: ([a, b]) => G.or(a!, b!), ref: ([a, b]) => R.or(a!, b!) });
add({ op: "or", name: "[3,4] with [3,4]", inputs: [B([3, 4]), B([3, 4])], build: ([a, b]) => G.or(a!, b!), ref: ([a, b]) => R.or(a!, b!) });
add({ op: "not", name: "[3,5]", inputs: [B([3, 5])], build: ([a]) => G.not(a!), ref: ([a]) => R.not(a!) });

// ---------------------------------------------------------------- elementwise, unary

// [3, 37]: 111 values, so vectorised kernels run both their main loop and their tail.
const U = [3, 37];
const unaries: [string, (x: G.Tensor) => G.Tensor, (x: R.NDArray) => R.NDArray, InSpec][] = [
  ["neg", G.neg, R.neg, F(U)],
  ["exp", G.exp, R.exp, F(U, -4, 4)],
  ["log", G.log, R.log, F(U, 0.05, 6)],
  ["sqrt", G.sqrt, R.sqrt, F(U, 0, 6)],
  ["abs", G.abs, R.abs, F(U)],
  ["tanh", G.tanh, R.tanh, F(U, -5, 5)],
  ["sin", G.sin, R.sin, F(U, -5, 5)],
  ["cos", G.cos, R.cos, F(U, -5, 5)],
  ["relu", G.relu, R.relu, F(U)],
  ["sigmoid", G.sigmoid, R.sigmoid, F(U, -10, 10)],
  ["erf", G.erf, R.erf, F(U, -4, 4)],
  ["reciprocal", G.reciprocal, R.reciprocal, F(U, 0.25, 4)],
  ["floor", G.floor, R.floor, F(U, -3, 3)],
  ["sign", G.sign, R.sign, I(U, -2, 2)],
  ["identity", G.identity, R.identity, F(U)],
  ["softplus", G.softplus, R.softplus, F(U, -10, 10)],
  ["gelu", G.gelu, R.gelu, F(U, -5, 5)],
  ["geluTanh", G.geluTanh, R.geluTanh, F(U, -5, 5)],
  ["quickGelu", G.quickGelu, R.quickGelu, F(U, -6, 6)],
  ["silu", G.silu, R.silu, F(U, -6, 6)],
];
for (const [op, fn, rf, spec] of unaries) add({ op, name: fmt(spec.shape), inputs: [spec], build: ([x]) => fn(x!), ref: ([x]) => rf(x!) });
add({ op: "exp", name: "rank 0", inputs: [F([])], build: ([x]) => G.exp(x!), ref: ([x]) => R.exp(x!) });
add({ op: "reciprocal", name: "negative", inputs: [F(U, -4, -0.25)], build: ([x]) => G.reciprocal(x!), ref: ([x]) => R.reciprocal(x!) });
add({ op: "leakyRelu", name: "default alpha", inputs: [F(U)], build: ([x]) => G.leakyRelu(x!), ref: ([x]) => R.leakyRelu(x!) });
add({ op: "leakyRelu", name: "alpha 0.2", inputs: [F(U)], build: ([x]) => G.leakyRelu(x!, 0.2), ref: ([x]) => R.leakyRelu(x!, 0.2) });
add({ op: "clip", name: "both bounds", inputs: [F(U)], build: ([x]) => G.clip(x!, -0.5, 0.8), ref: ([x]) => R.clip(x!, -0.5, 0.8) });
add({ op: "clip", name: "lower only (relu)", inputs: [F(U)], build: ([x]) => G.clip(x!, 0), ref: ([x]) => R.clip(x!, 0) });
add({ op: "clip", name: "upper only", inputs: [F(U)], build: ([x]) => G.clip(x!, undefined, 0.3), ref: ([x]) => R.clip(x!, undefined, 0.3) });
add({ op: "cast", name: "float32 -> int32 truncates", inputs: [F([4, 6], -5, 5)], build: ([x]) => G.cast(x!, "int32"), ref: ([x]) => R.cast(x!, "int32") });
add({ op: "cast", name: "float32 -> int64", inputs: [F([4, 6], -5, 5)], build: ([x]) => G.cast(x!, "int64"), ref: ([x]) => R.cast(x!, "int64") });
add({ op: "cast", name: "float32 -> bool", inputs: [I([4, 6], -1, 1)], build: ([x]) => G.cast(x!, "bool"), ref: ([x]) => R.cast(x!, "bool") });
add({ op: "cast", name: "bool -> float32", inputs: [B([4, 6])], build: ([x]) => G.cast(x!, "float32"), ref: ([x]) => R.cast(x!, "float32") });
add({ op: "cast", name: "int64 -> float32", inputs: [IDX([5], [-3, 0, 7, 123456, -2])], build: ([x]) => G.cast(x!, "float32"), ref: ([x]) => R.cast(x!, "float32") });
add({ op: "cast", name: "same dtype is a no-op", inputs: [F([3])], build: ([x]) => G.cast(x!, "float32"), ref: ([x]) => x! });
add({ op: "where", name: "cond [2,1,4], a [3,1], b [4]", inputs: [B([2, 1, 4]), F([3, 1]), F([4])], build: ([c, a, b]) => G.where(c!, a!, b!), ref: ([c, a, b]) => R.where(c!, a!, b!) });
add({ op: "where", name: "number as else", inputs: [B([3, 4]), F([3, 4])], build: ([c, a]) => G.where(c!, a!, 0), ref: ([c, a]) => R.where(c!, a!, scalarArr(0)) });
add({ op: "where", name: "number as then", inputs: [B([3, 4]), F([4])], build: ([c, b]) => G.where(c!, 1.5, b!), ref: ([c, b]) => R.where(c!, scalarArr(1.5), b!) });
add({ op: "scalar", name: "shared scalar constant", inputs: [F([2, 3])], build: ([x], g) => G.add(x!, G.scalar(g, 2.5)), ref: ([x]) => R.add(x!, scalarArr(2.5)) });
add({ op: "i64", name: "int64 constant vector", inputs: [], build: (_, g) => G.i64(g, [3, -1, 7]), ref: () => R.nd([3], [3, -1, 7]) });

// ---------------------------------------------------------------- linear algebra

const W = (shape: number[]) => F(shape, -1, 1);
const matmuls: [number[], number[]][] = [
  [[2, 3], [3, 4]],
  [[2, 1, 3, 5], [4, 5, 2]],
  [[3, 4, 5], [5, 6]],
  [[5], [2, 5, 3]],
  [[2, 3, 5], [5]],
  [[5], [5]],
  [[1, 7], [7, 1]],
];
for (const [sa, sb] of matmuls) add({ op: "matmul", name: `${fmt(sa)} x ${fmt(sb)}`, inputs: [W(sa), W(sb)], build: ([a, b]) => G.matmul(a!, b!), ref: ([a, b]) => R.matmul(a!, b!) });
add({ op: "linear", name: "with bias", inputs: [W([2, 3, 5]), W([4, 5]), W([4])], build: ([x, w, b]) => G.linear(x!, w!, b!), ref: ([x, w, b]) => R.add(R.matmul(x!, R.transpose(w!, [1, 0])), b!) });
add({ op: "linear", name: "rank 1 input", inputs: [W([5]), W([4, 5]), W([4])], build: ([x, w, b]) => G.linear(x!, w!, b!), ref: ([x, w, b]) => R.add(R.matmul(x!, R.transpose(w!, [1, 0])), b!) });
const gemms: { name: string; a: number[]; b: number[]; c?: number[]; o: G.GemmOptions }[] = [
  { name: "plain, C [3,4]", a: [3, 5], b: [5, 4], c: [3, 4], o: {} },
  { name: "no C", a: [3, 5], b: [5, 4], o: {} },
  { name: "transA, C [4] broadcast", a: [5, 3], b: [5, 4], c: [4], o: { transA: true } },
  { name: "transB, C [3,1], alpha 0.5 beta 2", a: [3, 5], b: [4, 5], c: [3, 1], o: { transB: true, alpha: 0.5, beta: 2 } },
  { name: "transA and transB, scalar C", a: [5, 3], b: [4, 5], c: [], o: { transA: true, transB: true, beta: -1 } },
];
for (const c of gemms) {
  add({
    op: "gemm", name: c.name, inputs: c.c ? [W(c.a), W(c.b), W(c.c)] : [W(c.a), W(c.b)],
    build: ([a, b, cc]) => G.gemm(a!, b!, cc ?? null, c.o),
    ref: ([a, b, cc]) => R.gemm(a!, b!, cc ?? null, c.o),
  });
}
add({ op: "linear", name: "without bias", inputs: [W([3, 5]), W([2, 5])], build: ([x, w]) => G.linear(x!, w!), ref: ([x, w]) => R.matmul(x!, R.transpose(w!, [1, 0])) });

// ---------------------------------------------------------------- shape ops

const reshapes: [number[], number[], number[]][] = [
  [[2, 3, 4], [4, -1], [4, 6]],
  [[2, 3, 4], [0, 12], [2, 12]],
  [[2, 3, 4], [-1], [24]],
  [[2, 3, 4], [0, -1, 2], [2, 6, 2]],
  [[2, 3, 4], [2, 3, 4], [2, 3, 4]],
];
for (const [s, target, want] of reshapes) add({ op: "reshape", name: `${fmt(s)} to ${fmt(target)}`, inputs: [F(s)], build: ([x]) => G.reshape(x!, target), ref: ([x]) => R.reshape(x!, want) });
add({ op: "flatten", name: "from axis 1 (default)", inputs: [F([2, 3, 4, 5])], build: ([x]) => G.flatten(x!), ref: ([x]) => R.reshape(x!, [2, 60]) });
add({ op: "flatten", name: "from axis 2", inputs: [F([2, 3, 4, 5])], build: ([x]) => G.flatten(x!, 2), ref: ([x]) => R.reshape(x!, [2, 3, 20]) });
add({ op: "flatten", name: "from axis -2", inputs: [F([2, 3, 4, 5])], build: ([x]) => G.flatten(x!, -2), ref: ([x]) => R.reshape(x!, [2, 3, 20]) });
for (const [s, perm] of [[[2, 3, 4], [2, 0, 1]], [[2, 3, 4, 5], [0, 2, 3, 1]], [[3, 4], [1, 0]], [[2, 3], [0, 1]]] as [number[], number[]][]) {
  add({ op: "transpose", name: `${fmt(s)} by ${fmt(perm)}`, inputs: [F(s)], build: ([x]) => G.transpose(x!, perm), ref: ([x]) => R.transpose(x!, perm) });
}
add({ op: "unsqueeze", name: "[3,4] axes [0,-1]", inputs: [F([3, 4])], build: ([x]) => G.unsqueeze(x!, [0, -1]), ref: ([x]) => R.reshape(x!, [1, 3, 4, 1]) });
add({ op: "unsqueeze", name: "[3,4] axes [1]", inputs: [F([3, 4])], build: ([x]) => G.unsqueeze(x!, [1]), ref: ([x]) => R.reshape(x!, [3, 1, 4]) });
add({ op: "squeeze", name: "[1,3,1,4] axes [0,2]", inputs: [F([1, 3, 1, 4])], build: ([x]) => G.squeeze(x!, [0, 2]), ref: ([x]) => R.reshape(x!, [3, 4]) });
add({ op: "squeeze", name: "no axes is a no-op", inputs: [F([1, 3, 1])], build: ([x]) => G.squeeze(x!, []), ref: ([x]) => x! });
add({ op: "squeeze", name: "[1,3,1,4] axes [-2]", inputs: [F([1, 3, 1, 4])], build: ([x]) => G.squeeze(x!, [-2]), ref: ([x]) => R.reshape(x!, [1, 3, 4]) });
add({ op: "concat", name: "three along axis 1", inputs: [F([2, 3]), F([2, 1]), F([2, 4])], build: (xs) => G.concat(xs, 1), ref: (xs) => R.concat(xs, 1) });
add({ op: "concat", name: "two along axis -3", inputs: [F([2, 3, 4]), F([1, 3, 4])], build: (xs) => G.concat(xs, -3), ref: (xs) => R.concat(xs, 0) });
add({ op: "concat", name: "one input is itself", inputs: [F([2, 3])], build: (xs) => G.concat(xs, 0), ref: (xs) => xs[0]! });
add({ op: "split", name: "[4,6] into [1,2,3] on axis 1", inputs: [F([4, 6])], build: ([x]) => G.split(x!, [1, 2, 3], 1), ref: ([x]) => R.split(x!, [1, 2, 3], 1) });
add({ op: "split", name: "[5,2] into [2,3] on axis -2", inputs: [F([5, 2])], build: ([x]) => G.split(x!, [2, 3], -2), ref: ([x]) => R.split(x!, [2, 3], 0) });
const slices: { name: string; shape: number[]; starts: number[]; ends: number[]; axes?: number[]; steps?: number[] }[] = [
  { name: "negative starts and ends", shape: [5, 6], starts: [1, -4], ends: [4, -1] },
  { name: "step 2 on one axis", shape: [5, 6], starts: [0, 1], ends: [5, 6], steps: [2, 1] },
  { name: "reverse everything", shape: [6], starts: [-1], ends: [-1000], steps: [-1] },
  { name: "step -2 from 4 to 0", shape: [6], starts: [4], ends: [0], steps: [-2] },
  { name: "step -3 with start past the end", shape: [7], starts: [100], ends: [-100], steps: [-3] },
  { name: "one negative axis", shape: [3, 4, 5], starts: [1], ends: [100], axes: [-1] },
  { name: "axes out of order with steps", shape: [4, 5, 6], starts: [5, 0], ends: [0, 4], axes: [2, 0], steps: [-2, 3] },
  { name: "start before the beginning, step -1", shape: [5], starts: [-100], ends: [-200], steps: [-1] },
  { name: "empty result", shape: [3, 5], starts: [3], ends: [1], axes: [1] },
];
for (const s of slices) {
  add({ op: "slice", name: s.name, inputs: [F(s.shape)], build: ([x]) => G.slice(x!, s.starts, s.ends, s.axes, s.steps), ref: ([x]) => R.slice(x!, s.starts, s.ends, s.axes, s.steps) });
}
add({ op: "gather", name: "axis 0, [2,3] indices", inputs: [F([5, 4]), IDX([2, 3], [0, 4, -1, 2, 2, -5])], build: ([x, i]) => G.gather(x!, i!, 0), ref: ([x, i]) => R.gather(x!, i!, 0) });
add({ op: "gather", name: "axis 1, [2,2] indices", inputs: [F([3, 5, 2]), IDX([2, 2], [1, 3, 4, -2])], build: ([x, i]) => G.gather(x!, i!, 1), ref: ([x, i]) => R.gather(x!, i!, 1) });
add({ op: "gather", name: "axis -1, index list", inputs: [F([4, 3])], build: ([x]) => G.gather(x!, [2, 0, -1], -1), ref: ([x]) => R.gather(x!, R.nd([3], [2, 0, -1]), 1) });
add({ op: "gather", name: "rank-0 index drops the axis", inputs: [F([4, 3]), IDX([], [2])], build: ([x, i]) => G.gather(x!, i!, 0), ref: ([x, i]) => R.gather(x!, i!, 0) });
for (const [s, target] of [[[3, 1], [2, 3, 4]], [[4], [3, 4]], [[3, 1], [1, 5]], [[2, 3], [2, 3]]] as [number[], number[]][]) {
  add({ op: "expand", name: `${fmt(s)} to ${fmt(target)}`, inputs: [F(s)], build: ([x]) => G.expand(x!, target), ref: ([x]) => R.expand(x!, target) });
}
add({ op: "tile", name: "[2,3] by [2,3]", inputs: [F([2, 3])], build: ([x]) => G.tile(x!, [2, 3]), ref: ([x]) => R.tile(x!, [2, 3]) });
add({ op: "tile", name: "[2,1,3] by [1,4,2]", inputs: [F([2, 1, 3])], build: ([x]) => G.tile(x!, [1, 4, 2]), ref: ([x]) => R.tile(x!, [1, 4, 2]) });
add({ op: "pad", name: "constant 0.5", inputs: [F([3, 4])], build: ([x]) => G.pad(x!, [0, 1, 2, 1], "constant", 0.5), ref: ([x]) => R.pad(x!, [0, 1, 2, 1], "constant", 0.5) });
add({ op: "pad", name: "constant default zero", inputs: [F([2, 3, 4])], build: ([x]) => G.pad(x!, [1, 0, 2, 0, 1, 1]), ref: ([x]) => R.pad(x!, [1, 0, 2, 0, 1, 1]) });
add({ op: "pad", name: "reflect", inputs: [F([1, 2, 4, 5])], build: ([x]) => G.pad(x!, [0, 0, 1, 2, 0, 0, 2, 1], "reflect"), ref: ([x]) => R.pad(x!, [0, 0, 1, 2, 0, 0, 2, 1], "reflect") });
add({ op: "pad", name: "edge", inputs: [F([1, 2, 4, 5])], build: ([x]) => G.pad(x!, [0, 0, 3, 2, 0, 0, 2, 4], "edge"), ref: ([x]) => R.pad(x!, [0, 0, 3, 2, 0, 0, 2, 4], "edge") });

// ---------------------------------------------------------------- reductions

type Red = (x: G.Tensor, axes?: readonly number[], keepdims?: boolean) => G.Tensor;
const reductions: [string, Red, R.ReduceKind, InSpec][] = [
  ["reduceSum", G.reduceSum, "sum", F([2, 3, 4])],
  ["reduceMean", G.reduceMean, "mean", F([2, 3, 4])],
  ["reduceMax", G.reduceMax, "max", F([2, 3, 4])],
  ["reduceMin", G.reduceMin, "min", F([2, 3, 4])],
  ["reduceProd", G.reduceProd, "prod", F([2, 3, 4], 0.5, 1.5)],
  ["reduceSumSquare", G.reduceSumSquare, "sumsquare", F([2, 3, 4])],
];
const reduceAxes: [number[] | undefined, boolean][] = [
  [[1], true],
  [[0, 2], false],
  [[-1], false],
  [undefined, true],
  [undefined, false],
];
for (const [op, fn, kind, spec] of reductions) {
  for (const [axes, keep] of reduceAxes) {
    add({ op, name: `axes ${axes ? fmt(axes) : "all"} keepdims ${keep}`, inputs: [spec], build: ([x]) => fn(x!, axes, keep), ref: ([x]) => R.reduce(kind, x!, axes, keep) });
  }
}
add({ op: "reduceSum", name: "no axes is a no-op", inputs: [F([1, 3, 1])], build: ([x]) => G.reduceSum(x!, [], false), ref: ([x]) => x! });
add({ op: "reduceMean", name: "no axes is a no-op", inputs: [F([2, 3])], build: ([x]) => G.reduceMean(x!, []), ref: ([x]) => x! });
add({ op: "reduceMax", name: "rank 0, all axes", inputs: [F([])], build: ([x]) => G.reduceMax(x!), ref: ([x]) => x! });
add({ op: "argMax", name: "axis 1 keepdims", inputs: [F([3, 4, 5])], build: ([x]) => G.argMax(x!, 1), ref: ([x]) => R.argMax(x!, 1, true) });
add({ op: "argMax", name: "axis -1 no keepdims", inputs: [F([3, 4, 5])], build: ([x]) => G.argMax(x!, -1, false), ref: ([x]) => R.argMax(x!, -1, false) });
add({ op: "argMax", name: "ties pick the first", inputs: [I([4, 6], 0, 2)], build: ([x]) => G.argMax(x!, 1, false), ref: ([x]) => R.argMax(x!, 1, false) });
for (const axis of [-1, 1, 0]) {
  add({ op: "softmax", name: `axis ${axis}`, inputs: [F([2, 3, 5], -4, 4)], build: ([x]) => G.softmax(x!, axis), ref: ([x]) => R.softmax(x!, axis) });
  add({ op: "logSoftmax", name: `axis ${axis}`, inputs: [F([2, 3, 5], -4, 4)], build: ([x]) => G.logSoftmax(x!, axis), ref: ([x]) => R.logSoftmax(x!, axis) });
}

// ---------------------------------------------------------------- normalization

add({ op: "layerNorm", name: "last axis, with bias", inputs: [F([2, 3, 8]), F([8]), F([8])], build: ([x, g, b]) => G.layerNorm(x!, g!, b!), ref: ([x, g, b]) => R.layerNorm(x!, g!, b!) });
add({ op: "layerNorm", name: "last two axes, no bias", inputs: [F([2, 3, 8]), F([3, 8])], build: ([x, g]) => G.layerNorm(x!, g!, null), ref: ([x, g]) => R.layerNorm(x!, g!, null) });
add({ op: "layerNorm", name: "eps 1e-2", inputs: [F([4, 6], -0.2, 0.2), F([6]), F([6])], build: ([x, g, b]) => G.layerNorm(x!, g!, b!, 1e-2), ref: ([x, g, b]) => R.layerNorm(x!, g!, b!, 1e-2) });
add({ op: "instanceNorm", name: "[2,3,4,5]", inputs: [F([2, 3, 4, 5]), F([3]), F([3])], build: ([x, s, b]) => G.instanceNorm(x!, s!, b!), ref: ([x, s, b]) => R.instanceNorm(x!, s!, b!) });
add({ op: "instanceNorm", name: "[2,3,7] eps 1e-3", inputs: [F([2, 3, 7]), F([3]), F([3])], build: ([x, s, b]) => G.instanceNorm(x!, s!, b!, 1e-3), ref: ([x, s, b]) => R.instanceNorm(x!, s!, b!, 1e-3) });
add({ op: "groupNorm", name: "3 groups of [2,6,4,4], affine", inputs: [F([2, 6, 4, 4]), F([6]), F([6])], build: ([x, g, b]) => G.groupNorm(x!, 3, g!, b!), ref: ([x, g, b]) => R.groupNorm(x!, 3, g!, b!) });
add({ op: "groupNorm", name: "1 group, no affine", inputs: [F([2, 6, 4, 4])], build: ([x]) => G.groupNorm(x!, 1, null, null), ref: ([x]) => R.groupNorm(x!, 1, null, null) });
add({ op: "groupNorm", name: "groups = channels, gamma only", inputs: [F([2, 4, 3, 3]), F([4])], build: ([x, g]) => G.groupNorm(x!, 4, g!, null), ref: ([x, g]) => R.groupNorm(x!, 4, g!, null) });
add({ op: "groupNorm", name: "rank 3, eps 1e-6", inputs: [F([2, 4, 5]), F([4]), F([4])], build: ([x, g, b]) => G.groupNorm(x!, 2, g!, b!, 1e-6), ref: ([x, g, b]) => R.groupNorm(x!, 2, g!, b!, 1e-6) });

// ---------------------------------------------------------------- convolution and pooling

type Pads4 = [number, number, number, number];
const convs: { name: string; x: number[]; w: number[]; bias: boolean; opts: G.ConvOptions; ref: R.Conv2dOptions }[] = [
  { name: "3x3, bias", x: [1, 3, 7, 7], w: [4, 3, 3, 3], bias: true, opts: {}, ref: {} },
  { name: "stride 2 padding 1", x: [2, 3, 8, 8], w: [4, 3, 3, 3], bias: true, opts: { stride: 2, padding: 1 }, ref: { stride: [2, 2], pads: [1, 1, 1, 1] } },
  { name: "dilation 2 padding 2", x: [1, 2, 9, 9], w: [3, 2, 3, 3], bias: false, opts: { dilation: 2, padding: 2 }, ref: { dilation: [2, 2], pads: [2, 2, 2, 2] } },
  { name: "2 groups", x: [1, 4, 6, 6], w: [6, 2, 3, 3], bias: true, opts: { groups: 2, padding: 1 }, ref: { groups: 2, pads: [1, 1, 1, 1] } },
  { name: "depthwise stride 2", x: [1, 4, 6, 6], w: [4, 1, 3, 3], bias: false, opts: { groups: 4, stride: 2, padding: 1 }, ref: { groups: 4, stride: [2, 2], pads: [1, 1, 1, 1] } },
  { name: "asymmetric pads, stride [2,1]", x: [1, 2, 7, 6], w: [3, 2, 3, 2], bias: true, opts: { stride: [2, 1], padding: [1, 0, 2, 1] }, ref: { stride: [2, 1], pads: [1, 0, 2, 1] } },
  { name: "per-axis padding [1,0]", x: [1, 2, 5, 6], w: [2, 2, 3, 3], bias: false, opts: { padding: [1, 0] }, ref: { pads: [1, 0, 1, 0] } },
  { name: "1x1", x: [1, 5, 4, 4], w: [3, 5, 1, 1], bias: true, opts: {}, ref: {} },
  {
    name: "3 groups, dilation [2,1], stride [1,2]", x: [1, 6, 8, 8], w: [3, 2, 3, 3], bias: true,
    opts: { groups: 3, dilation: [2, 1], stride: [1, 2], padding: 1 }, ref: { groups: 3, dilation: [2, 1], stride: [1, 2], pads: [1, 1, 1, 1] },
  },
];
for (const c of convs) {
  add({
    op: "conv", name: c.name, inputs: c.bias ? [F(c.x, -1, 1), W(c.w), W([c.w[0]!])] : [F(c.x, -1, 1), W(c.w)],
    build: ([x, w, b]) => G.conv(x!, w!, b ?? null, c.opts),
    ref: ([x, w, b]) => R.conv2d(x!, w!, b ?? null, c.ref),
  });
}
add({
  op: "conv", name: "1-D, stride 2 padding 1", inputs: [F([2, 3, 10], -1, 1), W([4, 3, 3]), W([4])],
  build: ([x, w, b]) => G.conv(x!, w!, b!, { stride: 2, padding: 1 }),
  ref: ([x, w, b]) => {
    const y = R.conv2d(R.reshape(x!, [2, 3, 1, 10]), R.reshape(w!, [4, 3, 1, 3]), b!, { stride: [1, 2], pads: [0, 1, 0, 1] });
    return R.reshape(y, [y.shape[0]!, y.shape[1]!, y.shape[3]!]);
  },
});
const convTs: { name: string; x: number[]; w: number[]; groups?: number; bias: boolean; opts: G.ConvTransposeOptions; ref: R.ConvTranspose2dOptions }[] = [
  { name: "stride 2 padding 1 output padding 1", x: [1, 4, 3, 3], w: [4, 2, 3, 3], bias: true, opts: { stride: 2, padding: 1, outputPadding: 1 }, ref: { stride: [2, 2], pads: [1, 1, 1, 1], outputPadding: [1, 1] } },
  { name: "stride 1", x: [2, 3, 4, 4], w: [3, 5, 3, 3], bias: false, opts: {}, ref: {} },
  { name: "2 groups, stride 2", x: [1, 4, 3, 3], w: [4, 3, 3, 3], groups: 2, bias: true, opts: { groups: 2, stride: 2 }, ref: { groups: 2, stride: [2, 2] } },
  { name: "dilation 2 padding 1", x: [1, 2, 4, 4], w: [2, 3, 3, 3], bias: true, opts: { dilation: 2, padding: 1 }, ref: { dilation: [2, 2], pads: [1, 1, 1, 1] } },
  {
    name: "stride [2,1], asymmetric pads, output padding [1,0]", x: [1, 2, 3, 4], w: [2, 2, 3, 2], bias: false,
    opts: { stride: [2, 1], padding: [1, 0, 0, 1], outputPadding: [1, 0] }, ref: { stride: [2, 1], pads: [1, 0, 0, 1], outputPadding: [1, 0] },
  },
  { name: "4x4 kernel stride 2 padding 1 (2x upsampling)", x: [1, 3, 4, 4], w: [3, 2, 4, 4], bias: true, opts: { stride: 2, padding: 1 }, ref: { stride: [2, 2], pads: [1, 1, 1, 1] } },
];
for (const c of convTs) {
  const m = c.w[1]! * (c.groups ?? 1);
  add({
    op: "convTranspose", name: c.name, inputs: c.bias ? [F(c.x, -1, 1), W(c.w), W([m])] : [F(c.x, -1, 1), W(c.w)],
    build: ([x, w, b]) => G.convTranspose(x!, w!, b ?? null, c.opts),
    ref: ([x, w, b]) => R.convTranspose2d(x!, w!, b ?? null, c.ref),
  });
}
const pools: { name: string; x: number[]; k: number | [number, number]; opts: G.PoolOptions; kernel: [number, number]; ref: R.Pool2dOptions }[] = [
  { name: "2x2 (stride = kernel)", x: [1, 2, 6, 6], k: 2, opts: {}, kernel: [2, 2], ref: {} },
  { name: "3x3 stride 2 padding 1", x: [2, 3, 7, 7], k: 3, opts: { stride: 2, padding: 1 }, kernel: [3, 3], ref: { stride: [2, 2], pads: [1, 1, 1, 1] } },
  { name: "[2,3] stride [1,2]", x: [1, 2, 5, 5], k: [2, 3], opts: { stride: [1, 2] }, kernel: [2, 3], ref: { stride: [1, 2] } },
  { name: "asymmetric pads [0,1,1,0], 3x3 stride 2", x: [1, 2, 6, 6], k: 3, opts: { stride: 2, padding: [0, 1, 1, 0] }, kernel: [3, 3], ref: { stride: [2, 2], pads: [0, 1, 1, 0] } },
];
for (const p of pools) {
  add({ op: "maxPool", name: p.name, inputs: [F(p.x)], build: ([x]) => G.maxPool(x!, p.k, p.opts), ref: ([x]) => R.maxPool2d(x!, p.kernel, p.ref) });
  for (const include of [true, false]) {
    add({
      op: "avgPool", name: `${p.name}, countIncludePad ${include}`, inputs: [F(p.x)],
      build: ([x]) => G.avgPool(x!, p.k, { ...p.opts, countIncludePad: include }),
      ref: ([x]) => R.avgPool2d(x!, p.kernel, { ...p.ref, countIncludePad: include }),
    });
  }
}
add({ op: "avgPool", name: "countIncludePad defaults to true", inputs: [F([1, 2, 5, 5])], build: ([x]) => G.avgPool(x!, 3, { padding: 1 }), ref: ([x]) => R.avgPool2d(x!, [3, 3], { stride: [3, 3], pads: [1, 1, 1, 1], countIncludePad: true }) });
add({ op: "globalAvgPool", name: "[2,3,4,5]", inputs: [F([2, 3, 4, 5])], build: ([x]) => G.globalAvgPool(x!), ref: ([x]) => R.globalAvgPool(x!) });
add({ op: "globalAvgPool", name: "[2,3,7]", inputs: [F([2, 3, 7])], build: ([x]) => G.globalAvgPool(x!), ref: ([x]) => R.globalAvgPool(x!) });
// Scales are exact in float32 (2, 1.5, 0.5, 3), so floor() sees the same source coordinate in both.
const resizes: [number[], number[]][] = [
  [[1, 2, 3, 4], [6, 8]],
  [[1, 1, 4, 4], [6, 6]],
  [[1, 2, 8, 8], [4, 4]],
  [[2, 1, 3, 4], [6, 4]],
];
for (const [s, sizes] of resizes) {
  add({ op: "resize", name: `nearest ${fmt(s)} to ${fmt(sizes)}`, inputs: [F(s)], build: ([x]) => G.resize(x!, sizes), ref: ([x]) => R.resizeNearest(x!, sizes) });
  add({ op: "resize", name: `linear ${fmt(s)} to ${fmt(sizes)}`, inputs: [F(s)], build: ([x]) => G.resize(x!, sizes, { mode: "linear" }), ref: ([x]) => R.resizeLinear(x!, sizes) });
}
add({ op: "upsampleNearest", name: "factor 2", inputs: [F([1, 2, 3, 4])], build: ([x]) => G.upsampleNearest(x!, 2), ref: ([x]) => R.resizeNearest(x!, [6, 8]) });
add({ op: "upsampleNearest", name: "factor 3", inputs: [F([1, 1, 2, 3])], build: ([x]) => G.upsampleNearest(x!, 3), ref: ([x]) => R.resizeNearest(x!, [6, 9]) });

// ---------------------------------------------------------------- attention

add({ op: "attention", name: "[2,2,3,4] over 5 keys", inputs: [F([2, 2, 3, 4]), F([2, 2, 5, 4]), F([2, 2, 5, 6])], build: ([q, k, v]) => G.attention(q!, k!, v!), ref: ([q, k, v]) => R.attention(q!, k!, v!) });
add({ op: "attention", name: "rank 3, scale 0.3", inputs: [F([2, 4, 8]), F([2, 6, 8]), F([2, 6, 8])], build: ([q, k, v]) => G.attention(q!, k!, v!, 0.3), ref: ([q, k, v]) => R.attention(q!, k!, v!, 0.3) });
add({ op: "splitHeads", name: "[2,3,8] into 2 heads", inputs: [F([2, 3, 8])], build: ([x]) => G.splitHeads(x!, 2), ref: ([x]) => R.transpose(R.reshape(x!, [2, 3, 2, 4]), [0, 2, 1, 3]) });
add({ op: "mergeHeads", name: "[2,2,3,4]", inputs: [F([2, 2, 3, 4])], build: ([x]) => G.mergeHeads(x!), ref: ([x]) => R.reshape(R.transpose(x!, [0, 2, 1, 3]), [2, 3, 8]) });

// ---------------------------------------------------------------- runner

function seedOf(s: string): number {
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function makeInput(spec: InSpec, rng: () => number): { feed: G.HostArray; arr: R.NDArray } {
  const n = R.size(spec.shape);
  const dtype = spec.dtype ?? "float32";
  const lo = spec.lo ?? (dtype === "int64" ? 0 : -2);
  const hi = spec.hi ?? (dtype === "int64" ? 3 : 2);
  const vals =
    spec.values ??
    Array.from({ length: n }, () =>
      dtype === "bool" ? (rng() < 0.5 ? 1 : 0) : spec.int || dtype === "int64" ? lo + Math.floor((hi - lo + 1) * rng()) : lo + (hi - lo) * rng(),
    );
  if (dtype === "bool") return { feed: Uint8Array.from(vals), arr: R.nd(spec.shape, vals) };
  if (dtype === "int64") return { feed: BigInt64Array.from(vals.map((v) => BigInt(v))), arr: R.nd(spec.shape, vals) };
  const f32 = Float32Array.from(vals);
  return { feed: f32, arr: R.nd(spec.shape, f32) };
}

function toNumbers(a: G.HostArray): number[] {
  return a instanceof BigInt64Array ? Array.from(a, (v) => Number(v)) : Array.from(a as ArrayLike<number>);
}

/** Throws with the worst element when any |got - want| > tol (1 + |want|). */
function compare(label: string, got: G.HostArray, want: R.NDArray, tol: number): void {
  const g = toNumbers(got);
  if (g.length !== want.data.length) throw new Error(`${label}: ${g.length} values, reference has ${want.data.length} (shape ${fmt(want.shape)})`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < g.length; i++) {
    const w = want.data[i]!;
    const err = Math.abs(g[i]! - w);
    const excess = Number.isNaN(g[i]!) !== Number.isNaN(w) ? Infinity : Number.isNaN(w) ? 0 : err / (tol * (1 + Math.abs(w)));
    if (excess > 1 && excess > worstExcess) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    const at = R.unravel(worst, want.shape);
    throw new Error(`${label}: at [${at.join(", ")}] got ${g[worst]}, want ${want.data[worst]} (error ${Math.abs(g[worst]! - want.data[worst]!).toExponential(2)}, tolerance ${(tol * (1 + Math.abs(want.data[worst]!))).toExponential(2)})`);
  }
}

describe("ops match the reference implementations", () => {
  for (const c of cases) {
    test(`${c.op}: ${c.name}`, async () => {
      const rng = R.mulberry32(seedOf(`${c.op}: ${c.name}`));
      const made = c.inputs.map((s) => makeInput(s, rng));
      const g = new G.Graph();
      const xs = c.inputs.map((s, i) => g.input(`x${i}`, s.shape, s.dtype ?? "float32"));
      const built = c.build(xs, g);
      const outs = Array.isArray(built) ? built : [built];
      const refOut = c.ref(made.map((m) => m.arr));
      const wants = Array.isArray(refOut) ? refOut : [refOut];
      expect(outs.length).toBe(wants.length);
      expect(outs.map((t) => [...t.shape])).toEqual(wants.map((w) => w.shape));
      const named = Object.fromEntries(outs.map((t, i) => [`y${i}`, t]));
      const compiled = await G.compile(named);
      const res = await compiled.run(Object.fromEntries(made.map((m, i) => [`x${i}`, m.feed])));
      outs.forEach((_, i) => compare(`output ${i}`, res[`y${i}`]!, wants[i]!, c.tol ?? TOL));
      // The shapes ONNX Runtime actually produced (run() returns only the data): a builder shape
      // that differs from ORT's own inference only shows up here.
      const raw = await compiled.session.run(Object.fromEntries(made.map((m, i) => [`x${i}`, new ort.Tensor(c.inputs[i]!.dtype ?? "float32", m.feed as never, c.inputs[i]!.shape)])));
      expect(outs.map((_, i) => [...raw[`y${i}`]!.dims])).toEqual(wants.map((w) => w.shape));
    });
  }

  test("every exported op of lib/graph/ops.ts has a case", () => {
    const covered = new Set([...cases.map((c) => c.op), "onnxTypeCode"]);
    const missing = Object.entries(ops).filter(([k, v]) => typeof v === "function" && !covered.has(k)).map(([k]) => k);
    expect(missing).toEqual([]);
  });

  test("onnxTypeCode follows TensorProto.DataType", () => {
    const codes = (["float32", "uint8", "int32", "int64", "bool", "float16", "bfloat16"] as const).map(G.onnxTypeCode);
    expect(codes).toEqual([1, 2, 6, 7, 9, 10, 16]);
  });

  test("scalar constants are shared within a graph, per value and dtype", () => {
    const g = new G.Graph();
    expect(G.scalar(g, 2.5)).toBe(G.scalar(g, 2.5));
    expect(G.scalar(g, 2)).not.toBe(G.scalar(g, 2, "int64"));
    expect(G.scalar(g, 0)).not.toBe(G.scalar(g, -0));
  });
});

// ---------------------------------------------------------------- build-time shape errors

describe("shape errors name the op and the shapes", () => {
  const g = new G.Graph();
  const t = (shape: number[]) => g.constant(new Float32Array(R.size(shape)), shape);

  test("matmul inner dimension mismatch", () => {
    expect(() => G.matmul(t([2, 3]), t([4, 5]))).toThrow(/MatMul.*\[2, 3\].*\[4, 5\].*3 and 4/);
  });
  test("gemm inner dimension mismatch", () => {
    expect(() => G.gemm(t([2, 3]), t([4, 3]), null)).toThrow(/Gemm.*\[2, 3\].*\[4, 3\].*3 and 4/);
    expect(() => G.gemm(t([2, 3]), t([4, 3]), t([3]), { transB: true })).toThrow(/Gemm.*\[2, 4\].*\[3\]/);
  });
  test("matmul batch broadcast failure", () => {
    expect(() => G.matmul(t([2, 3, 4]), t([3, 4, 5]))).toThrow(/MatMul.*\[2\].*\[3\].*cannot be broadcast/);
  });
  test("elementwise broadcast failure", () => {
    expect(() => G.add(t([2, 3]), t([4]))).toThrow(/Add.*\[2, 3\].*\[4\].*cannot be broadcast/);
    expect(() => G.mul(t([2, 1, 4]), t([3, 5]))).toThrow(/Mul.*\[2, 1, 4\].*\[3, 5\]/);
    expect(() => G.where(g.constant(new Uint8Array(6), [2, 3], "bool"), t([3]), t([2]))).toThrow(/Where.*\[2, 3\].*\[3\].*\[2\]/);
    expect(() => G.expand(t([2, 3]), [4, 3])).toThrow(/Expand.*\[2, 3\].*\[4, 3\]/);
  });
  test("reshape size mismatch", () => {
    expect(() => G.reshape(t([2, 3]), [4, 2])).toThrow(/Reshape.*\[2, 3\].*6 elements.*\[4, 2\]/);
    expect(() => G.reshape(t([2, 3]), [4, -1])).toThrow(/Reshape.*\[2, 3\].*\[4, -1\]/);
    expect(() => G.reshape(t([2, 3]), [-1, -1])).toThrow(/Reshape.*-1/);
  });
  test("conv channel and group mismatch", () => {
    expect(() => G.conv(t([1, 3, 8, 8]), t([4, 2, 3, 3]), null)).toThrow(/Conv.*\[1, 3, 8, 8\].*\[4, 2, 3, 3\]/);
    expect(() => G.conv(t([1, 4, 8, 8]), t([6, 4, 3, 3]), null, { groups: 2 })).toThrow(/Conv.*\[1, 4, 8, 8\].*2 group.*\[6, 4, 3, 3\]/);
    expect(() => G.conv(t([1, 3, 8, 8]), t([4, 1, 3, 3]), null, { groups: 2 })).toThrow(/Conv.*\[1, 3, 8, 8\].*\[4, 1, 3, 3\]/);
    expect(() => G.conv(t([1, 4, 8, 8]), t([3, 2, 3, 3]), null, { groups: 2 })).toThrow(/Conv.*\[1, 4, 8, 8\].*\[3, 2, 3, 3\]/);
    expect(() => G.conv(t([1, 3, 8, 8]), t([4, 3, 3, 3]), t([5]))).toThrow(/Conv.*bias \[5\]/);
    expect(() => G.conv(t([1, 3, 2, 2]), t([4, 3, 3, 3]), null)).toThrow(/Conv.*\[3, 3\].*\[1, 3, 2, 2\]/);
    expect(() => G.convTranspose(t([1, 4, 3, 3]), t([3, 2, 3, 3]), null)).toThrow(/ConvTranspose.*\[1, 4, 3, 3\].*\[3, 2, 3, 3\]/);
  });
  test("concat mismatch", () => {
    expect(() => G.concat([t([2, 3]), t([3, 3])], 1)).toThrow(/Concat.*\[2, 3\].*\[3, 3\]/);
    expect(() => G.concat([t([2, 3]), t([2, 3, 1])], 0)).toThrow(/Concat.*\[2, 3\].*\[2, 3, 1\]/);
  });
  test("split sizes", () => {
    expect(() => G.split(t([2, 4]), [1, 2], 1)).toThrow(/Split.*\[1, 2\].*\[2, 4\]/);
  });
  test("layerNorm weight shape", () => {
    expect(() => G.layerNorm(t([2, 3, 8]), t([4]), null)).toThrow(/LayerNormalization.*\[2, 3, 8\].*\[4\]/);
    expect(() => G.layerNorm(t([2, 3, 8]), t([8]), t([3]))).toThrow(/LayerNormalization.*\[3\].*\[8\]/);
  });
  test("norm channel counts", () => {
    expect(() => G.groupNorm(t([2, 6, 4, 4]), 4, null, null)).toThrow(/GroupNorm.*4 groups.*\[2, 6, 4, 4\]/);
    expect(() => G.instanceNorm(t([2, 3, 4, 4]), t([4]), t([4]))).toThrow(/InstanceNormalization.*\[2, 3, 4, 4\].*\[4\]/);
  });
  test("transpose bad perm", () => {
    expect(() => G.transpose(t([2, 3, 4]), [0, 0, 1])).toThrow(/Transpose.*\[0, 0, 1\].*\[2, 3, 4\]/);
    expect(() => G.transpose(t([2, 3, 4]), [1, 0])).toThrow(/Transpose.*\[1, 0\].*\[2, 3, 4\]/);
  });
  test("squeeze non-1 axis", () => {
    expect(() => G.squeeze(t([2, 3]), [1])).toThrow(/Squeeze.*axis 1.*\[2, 3\]/);
  });
  test("axis out of range", () => {
    expect(() => G.softmax(t([2, 3]), 2)).toThrow(/Softmax.*axis 2.*rank 2/);
    expect(() => G.reduceSum(t([2, 3]), [-3])).toThrow(/ReduceSum.*axis -3.*rank 2/);
  });
});

// ---------------------------------------------------------------- compile and run

describe("compile and run", () => {
  const build = () => {
    const g = new G.Graph();
    const x = g.input("x", [2, 3]);
    return { y: G.relu(G.add(G.mul(x, 2), 1)) };
  };

  test("the same graph compiled twice hits the session cache", async () => {
    const outs = build();
    const a = await G.compile(outs);
    const b = await G.compile(outs);
    expect(b).toBe(a);
    // An identical graph built again hashes to the same model bytes.
    expect(await G.compile(build())).toBe(a);
    // Different session options are a different session.
    expect(await G.compile(outs, { threads: 1 })).not.toBe(a);
    const out = await a.run({ x: Float32Array.from([-1, 0, 1, 2, -0.5, 0.25]) });
    expect(Array.from(out.y as Float32Array)).toEqual([0, 1, 3, 5, 0, 1.5]);
  });

  test("run rejects a missing feed, a wrong-sized feed and an unknown feed", async () => {
    const c = await G.compile(build());
    await expect(c.run({})).rejects.toThrow(/missing feed "x" \[2, 3\]/);
    await expect(c.run({ x: new Float32Array(5) })).rejects.toThrow(/feed "x" has 5 values.*\[2, 3\] = 6/);
    await expect(c.run({ x: new Float32Array(6), z: new Float32Array(1) })).rejects.toThrow(/"z" is not an input/);
  });
});

// ---------------------------------------------------------------- the references themselves

describe("reference sanity", () => {
  test("erf matches tabulated values to 1e-15", () => {
    const table: [number, number][] = [
      [0, 0], [0.1, 0.1124629160182849], [0.5, 0.5204998778130465], [1, 0.8427007929497149],
      [2, 0.9953222650189527], [3, 0.9999779095030014], [-1.5, -0.9661051464753108], [4.5, 0.9999999998033839],
    ];
    for (const [x, want] of table) expect(Math.abs(R.erfScalar(x) - want)).toBeLessThan(1e-15);
  });

  test("convTranspose2d is the adjoint of conv2d", () => {
    const rng = R.mulberry32(7);
    const rand = (shape: number[]) => R.nd(shape, Array.from({ length: R.size(shape) }, () => rng() * 2 - 1));
    const dot = (a: R.NDArray, b: R.NDArray) => a.data.reduce((s, v, i) => s + v * b.data[i]!, 0);
    const settings: R.Conv2dOptions[] = [
      { stride: [2, 1], pads: [1, 0, 2, 1], dilation: [1, 2], groups: 2 },
      { stride: [3, 2], pads: [0, 1, 1, 0], groups: 1 },
    ];
    for (const o of settings) {
      const x = rand([2, 4, 7, 8]);
      const w = rand([6, 4 / o.groups!, 3, 2]);
      const y = R.conv2d(x, w, null, o);
      const dy = rand(y.shape);
      const [sh, sw] = o.stride!;
      const [pt, pl, pb, pr] = o.pads!;
      const [dh, dw] = o.dilation ?? [1, 1];
      const outputPadding: [number, number] = [(7 + pt + pb - dh * 2 - 1) % sh, (8 + pl + pr - dw * 1 - 1) % sw];
      const dx = R.convTranspose2d(dy, w, null, { ...o, outputPadding });
      expect(dx.shape).toEqual(x.shape);
      expect(Math.abs(dot(y, dy) - dot(x, dx))).toBeLessThan(1e-9);
    }
  });

  test("pools, resize and slice on hand-checked examples", () => {
    const x = R.nd([1, 1, 3, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Array.from(R.maxPool2d(x, [2, 2], { stride: [1, 1] }).data)).toEqual([5, 6, 8, 9]);
    // Top-left window of a 3x3 kernel with padding 1 covers 1, 2, 4, 5.
    expect(R.avgPool2d(x, [3, 3], { stride: [2, 2], pads: [1, 1, 1, 1], countIncludePad: false }).data[0]).toBe(3);
    expect(R.avgPool2d(x, [3, 3], { stride: [2, 2], pads: [1, 1, 1, 1], countIncludePad: true }).data[0]).toBe(12 / 9);
    expect(Array.from(R.resizeLinear(R.nd([1, 1, 1, 2], [0, 1]), [1, 4]).data)).toEqual([0, 0.25, 0.75, 1]);
    expect(Array.from(R.resizeNearest(R.nd([1, 1, 1, 3], [1, 2, 3]), [1, 6]).data)).toEqual([1, 1, 2, 2, 3, 3]);
    const r = R.nd([6], [0, 1, 2, 3, 4, 5]);
    expect(Array.from(R.slice(r, [-1], [-1000], undefined, [-1]).data)).toEqual([5, 4, 3, 2, 1, 0]);
    expect(Array.from(R.slice(r, [-100], [-200], undefined, [-1]).data)).toEqual([0]);
    expect(Array.from(R.pad(R.nd([3], [1, 2, 3]), [2, 2], "reflect").data)).toEqual([3, 2, 1, 2, 3, 2, 1]);
    expect(R.matmul(R.nd([2], [1, 2]), R.nd([2], [3, 4])).shape).toEqual([]);
  });
});
