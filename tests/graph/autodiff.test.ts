// Finite-difference gradient checks for every op that has a reverse-mode rule (lib/graph/autodiff.ts).
//
// Method, per case: small inputs from a seeded Rng, out = build(inputs), loss = sum(out * R) with a
// fixed random R (every output element matters). The analytic gradient of every float input comes
// from G.grad; the numeric one from central differences (f(x + eps) - f(x - eps)) / (actual step),
// where f runs a forward-only compiled graph (compiled once per case, run 2n times) and the dot
// product with R is accumulated in float64 on the host, so float32 rounding in the loss sum does not
// swamp the difference.
//
// Tolerances (float32 forward): eps = 1e-2 by default; inputs are drawn away from kinks (0 for
// Relu/Abs, Clip bounds, ties of Max/Min/ReduceMax/MaxPool, integers for Cast-to-int) by more than
// eps. An element passes when |analytic - numeric| <= atol + rtol * |numeric| with
// atol = rtol = 1e-3 for every case (the worst, Div by a small denominator and attention with
// heads, use ~18% of it; the Cast case uses eps = 1/64 so every step is exact in float16).
// Piecewise-linear and linear ops are exact up to float32 rounding (errors ~1e-5); smooth ops add
// the O(eps^2 f''') truncation error.

import { describe, expect, test } from "bun:test";
import * as G from "../../lib/graph/index.ts";
import type { DType, Graph, Tensor } from "../../lib/graph/index.ts";
import { Rng } from "../../lib/rng.ts";

// ---------------------------------------------------------------- input generators

type Gen = (rng: Rng, n: number) => Float32Array;
const normal = (scale = 1): Gen => (rng, n) => rng.normals(n, scale);
const uniform = (lo: number, hi: number): Gen => (rng, n) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.uniform());
/** Normals (times scale) at least `margin` away from each of `points` (kinks, bounds, integers). */
const avoid = (points: number[], margin = 0.05, scale = 1): Gen => (rng, n) =>
  Float32Array.from({ length: n }, () => {
    for (;;) {
      const v = rng.normal() * scale;
      if (points.every((p) => Math.abs(v - p) > margin)) return v;
    }
  });
/** Normals at least `margin` away from every integer. */
const offInteger = (scale = 2, margin = 0.05): Gen => (rng, n) =>
  Float32Array.from({ length: n }, () => {
    for (;;) {
      const v = rng.normal() * scale;
      if (Math.abs(v - Math.round(v)) > margin) return v;
    }
  });
/** Distinct values on a grid (step apart, shifted by offset), shuffled: no ties anywhere. */
const grid = (step = 0.1, offset = 0): Gen => (rng, n) => {
  const v = Array.from({ length: n }, (_, i) => (i - Math.floor(n / 2)) * step + offset);
  return Float32Array.from(rng.shuffle(v));
};
/** Magnitudes in [lo, hi] with random signs (away from 0). */
const signed = (lo: number, hi: number): Gen => (rng, n) =>
  Float32Array.from({ length: n }, () => (rng.uniform() < 0.5 ? -1 : 1) * (lo + (hi - lo) * rng.uniform()));

// ---------------------------------------------------------------- case table

interface InputSpec {
  shape: number[];
  /** float32 inputs are trainable params checked by finite differences. */
  gen?: Gen;
  /** A float input fed at run time but not differentiated (exercises rules' partial `need`). */
  frozen?: boolean;
  /** Non-float inputs (indices, masks) are fed as-is and never differentiated. */
  dtype?: DType;
  data?: BigInt64Array | Int32Array | Uint8Array;
}

interface Case {
  name: string;
  inputs: Record<string, InputSpec>;
  build: (t: Record<string, Tensor>, g: Graph) => Tensor;
  eps?: number;
  atol?: number;
  rtol?: number;
}

const f = (...shape: number[]): InputSpec => ({ shape });
const fg = (gen: Gen, ...shape: number[]): InputSpec => ({ shape, gen });
const frozen = (...shape: number[]): InputSpec => ({ shape, frozen: true });
const i64 = (shape: number[], values: number[]): InputSpec => ({ shape, dtype: "int64", data: BigInt64Array.from(values.map(BigInt)) });
const bool = (shape: number[], values: number[]): InputSpec => ({ shape, dtype: "bool", data: Uint8Array.from(values) });
const flattenNode = (x: Tensor, axis: number): Tensor => {
  const shape = [x.shape.slice(0, axis).reduce((a, b) => a * b, 1), x.shape.slice(axis).reduce((a, b) => a * b, 1)];
  return x.graph.addNode("Flatten", [x], { axis: G.int(axis) }, [{ shape, dtype: x.dtype }])[0]!;
};

const CASES: Case[] = [
  // ---- elementwise binary, with broadcasting
  { name: "Add [2,1,4] + [3,1]", inputs: { a: f(2, 1, 4), b: f(3, 1) }, build: ({ a, b }) => G.add(a!, b!) },
  { name: "Add x + x (fan-out accumulates)", inputs: { x: f(2, 3) }, build: ({ x }) => G.mul(G.add(x!, x!), x!) },
  { name: "Sub [3,4] - [4]", inputs: { a: f(3, 4), b: f(4) }, build: ({ a, b }) => G.sub(a!, b!) },
  { name: "Sub [1] - [2,3] (broadcast first operand)", inputs: { a: f(1), b: f(2, 3) }, build: ({ a, b }) => G.sub(a!, b!) },
  { name: "Mul [2,3] * scalar-shaped []", inputs: { a: f(2, 3), s: f() }, build: ({ a, s }) => G.mul(a!, s!) },
  { name: "Mul [2,3,1] * [3,4]", inputs: { a: f(2, 3, 1), b: f(3, 4) }, build: ({ a, b }) => G.mul(a!, b!) },
  { name: "Div [2,3] / [3]", inputs: { a: f(2, 3), b: fg(signed(0.5, 2), 3) }, build: ({ a, b }) => G.div(a!, b!) },
  { name: "Div [] / [2,3]", inputs: { a: f(), b: fg(signed(0.5, 2), 2, 3) }, build: ({ a, b }) => G.div(a!, b!) },
  { name: "Pow positive base, tensor exponent", inputs: { a: fg(uniform(0.5, 2), 2, 3), p: fg(uniform(-1, 2.5), 3) }, build: ({ a, p }) => G.pow(a!, p!) },
  { name: "Pow constant exponent 3 (negative base)", inputs: { a: f(2, 3) }, build: ({ a }) => G.pow(a!, 3) },
  { name: "Max [2,3] vs [3] (no ties)", inputs: { a: fg(grid(0.2), 2, 3), b: fg(grid(0.2, 0.1), 3) }, build: ({ a, b }) => G.maximum(a!, b!) },
  { name: "Min [3] vs [2,3] (no ties)", inputs: { a: fg(grid(0.2, 0.1), 3), b: fg(grid(0.2), 2, 3) }, build: ({ a, b }) => G.minimum(a!, b!) },

  // ---- elementwise unary
  { name: "Neg", inputs: { x: f(2, 3) }, build: ({ x }) => G.neg(x!) },
  { name: "Identity", inputs: { x: f(2, 3) }, build: ({ x }) => G.identity(x!) },
  { name: "Exp", inputs: { x: f(2, 3) }, build: ({ x }) => G.exp(x!) },
  { name: "Log (positive)", inputs: { x: fg(uniform(0.5, 3), 2, 3) }, build: ({ x }) => G.log(x!) },
  { name: "Sqrt (positive)", inputs: { x: fg(uniform(0.5, 3), 2, 3) }, build: ({ x }) => G.sqrt(x!) },
  { name: "Abs (away from 0)", inputs: { x: fg(avoid([0]), 2, 4) }, build: ({ x }) => G.abs(x!) },
  { name: "Tanh", inputs: { x: f(2, 3) }, build: ({ x }) => G.tanh(x!) },
  { name: "Sigmoid", inputs: { x: fg(normal(2), 2, 3) }, build: ({ x }) => G.sigmoid(x!) },
  { name: "Relu (away from 0)", inputs: { x: fg(avoid([0]), 2, 4) }, build: ({ x }) => G.relu(x!) },
  { name: "LeakyRelu alpha 0.2 (away from 0)", inputs: { x: fg(avoid([0]), 2, 4) }, build: ({ x }) => G.leakyRelu(x!, 0.2) },
  { name: "Erf", inputs: { x: f(2, 3) }, build: ({ x }) => G.erf(x!) },
  { name: "Reciprocal (away from 0)", inputs: { x: fg(signed(0.5, 2), 2, 3) }, build: ({ x }) => G.reciprocal(x!) },
  { name: "Sin", inputs: { x: fg(normal(2), 2, 3) }, build: ({ x }) => G.sin(x!) },
  { name: "Cos", inputs: { x: fg(normal(2), 2, 3) }, build: ({ x }) => G.cos(x!) },
  { name: "Softplus", inputs: { x: fg(normal(2), 2, 3) }, build: ({ x }) => G.softplus(x!) },
  { name: "Clip [-0.5, 0.7] (away from the bounds)", inputs: { x: fg(avoid([-0.5, 0.7]), 3, 4) }, build: ({ x }) => G.clip(x!, -0.5, 0.7) },
  { name: "Clip lower bound only", inputs: { x: fg(avoid([-0.3]), 3, 4) }, build: ({ x }) => G.clip(x!, -0.3) },
  { name: "Clip upper bound only", inputs: { x: fg(avoid([0.4]), 3, 4) }, build: ({ x }) => G.clip(x!, undefined, 0.4) },
  {
    // float32 -> float16 -> float32; values and step are multiples of 1/64, exact in float16.
    name: "Cast float32 <-> float16",
    inputs: { x: fg((rng, n) => Float32Array.from({ length: n }, () => (rng.int(256) - 128) / 64), 2, 3), w: f(2, 3) },
    build: ({ x, w }) => G.mul(G.cast(G.cast(x!, "float16"), "float32"), w!),
    eps: 1 / 64,
  },
  {
    name: "Where cond [3,1], a [2,3,4], b [4]",
    inputs: { c: bool([3, 1], [1, 0, 1]), a: f(2, 3, 4), b: f(4) },
    build: ({ c, a, b }) => G.where(c!, a!, b!),
  },
  { name: "Where with a scalar branch", inputs: { c: bool([2, 3], [1, 0, 0, 1, 1, 0]), a: f(2, 3) }, build: ({ c, a }) => G.where(c!, 0.5, a!) },

  // ---- MatMul
  { name: "MatMul [2,3] @ [3,4]", inputs: { a: f(2, 3), b: f(3, 4) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul batched broadcast [2,1,2,3] @ [3,3,2]", inputs: { a: f(2, 1, 2, 3), b: f(3, 3, 2) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul [2,3] @ [4,3,2]", inputs: { a: f(2, 3), b: f(4, 3, 2) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul 1-D [3] @ [3,4]", inputs: { a: f(3), b: f(3, 4) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul [2,3] @ 1-D [3]", inputs: { a: f(2, 3), b: f(3) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul 1-D [4] @ 1-D [4]", inputs: { a: f(4), b: f(4) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul 1-D [3] @ [2,3,4]", inputs: { a: f(3), b: f(2, 3, 4) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul [2,4,3] @ 1-D [3]", inputs: { a: f(2, 4, 3), b: f(3) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "MatMul [B,L,K] @ [K,N]", inputs: { a: f(2, 3, 4), b: f(4, 5) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "linear [2,3,4] (Gemm transB over flattened rows)", inputs: { x: f(2, 3, 4), w: f(5, 4), b: f(5) }, build: ({ x, w, b }) => G.linear(x!, w!, b!) },
  { name: "linear 2-D without bias", inputs: { x: f(3, 4), w: f(2, 4) }, build: ({ x, w }) => G.linear(x!, w!) },
  { name: "Gemm plain, C [N]", inputs: { a: f(3, 4), b: f(4, 2), c: f(2) }, build: ({ a, b, c }) => G.gemm(a!, b!, c!) },
  {
    name: "Gemm transA, alpha 0.5, beta 2, C [M,1]",
    inputs: { a: f(4, 3), b: f(4, 2), c: f(3, 1) },
    build: ({ a, b, c }) => G.gemm(a!, b!, c!, { transA: true, alpha: 0.5, beta: 2 }),
  },
  {
    name: "Gemm transA + transB, alpha -1.5, scalar-shaped C",
    inputs: { a: f(4, 3), b: f(2, 4), c: f() },
    build: ({ a, b, c }) => G.gemm(a!, b!, c!, { transA: true, transB: true, alpha: -1.5 }),
  },
  {
    name: "Gemm transB, beta 0.5, full C [M,N]",
    inputs: { a: f(3, 4), b: f(2, 4), c: f(3, 2) },
    build: ({ a, b, c }) => G.gemm(a!, b!, c!, { transB: true, beta: 0.5 }),
  },

  // ---- shape ops
  { name: "Reshape [2,3,4] -> [4,-1]", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.reshape(x!, [4, -1]) },
  { name: "Squeeze [2,1,3,1] axes [1,-1]", inputs: { x: f(2, 1, 3, 1) }, build: ({ x }) => G.squeeze(x!, [1, -1]) },
  { name: "Unsqueeze [2,3] axes [0,-1]", inputs: { x: f(2, 3) }, build: ({ x }) => G.unsqueeze(x!, [0, -1]) },
  { name: "Flatten axis 2", inputs: { x: f(2, 3, 2, 2) }, build: ({ x }) => flattenNode(x!, 2) },
  { name: "Transpose perm [2,0,1]", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.transpose(x!, [2, 0, 1]) },
  { name: "Expand [3,1] -> [2,3,4]", inputs: { x: f(3, 1) }, build: ({ x }) => G.expand(x!, [2, 3, 4]) },
  { name: "Expand [1,4] -> [3,1] (two-way broadcast)", inputs: { x: f(1, 4) }, build: ({ x }) => G.expand(x!, [3, 1]) },
  { name: "Tile [2,3] x [2,3]", inputs: { x: f(2, 3) }, build: ({ x }) => G.tile(x!, [2, 3]) },
  { name: "Tile [3,1,2] x [1,2,2]", inputs: { x: f(3, 1, 2) }, build: ({ x }) => G.tile(x!, [1, 2, 2]) },
  { name: "Concat three inputs, axis 1", inputs: { a: f(2, 1, 3), b: f(2, 2, 3), c: f(2, 3, 3) }, build: ({ a, b, c }) => G.concat([a!, b!, c!], 1) },
  { name: "Concat same input twice, axis -1", inputs: { a: f(2, 3), b: f(2, 2) }, build: ({ a, b }) => G.concat([a!, b!, a!], -1) },
  {
    name: "Split [1,3,2] axis 1, outputs 0 and 2 used",
    inputs: { x: f(2, 6) },
    build: ({ x }) => {
      const [s0, , s2] = G.split(x!, [1, 3, 2], 1);
      return G.add(s0!, s2!);
    },
  },
  { name: "Split, only the middle output used", inputs: { x: f(3, 4) }, build: ({ x }) => G.split(x!, [1, 2, 1], 1)[1]! },
  { name: "Slice negative starts and ends", inputs: { x: f(4, 5) }, build: ({ x }) => G.slice(x!, [-3, 1], [100, -1]) },
  { name: "Slice one axis of three", inputs: { x: f(2, 5, 3) }, build: ({ x }) => G.slice(x!, [-4], [4], [1]) },
  { name: "Pad constant [1,0,2,1] value 0.5", inputs: { x: f(2, 3) }, build: ({ x }) => G.pad(x!, [1, 0, 2, 1], "constant", 0.5) },
  { name: "Pad rank 3, last axes only", inputs: { x: f(2, 2, 3) }, build: ({ x }) => G.pad(x!, [0, 1, 0, 0, 0, 2]) },
  { name: "Gather axis 0, repeated indices", inputs: { x: f(4, 3) }, build: ({ x }) => G.gather(x!, [0, 2, 2, 3, 0]) },
  { name: "Gather axis 0, negative index", inputs: { x: f(4, 3) }, build: ({ x }) => G.gather(x!, [-1, 1, 3]) },
  {
    name: "Gather axis 1, 2-D repeated indices fed at run time",
    inputs: { x: f(2, 4, 3), idx: i64([2, 2], [1, 1, 0, 3]) },
    build: ({ x, idx }) => G.gather(x!, idx!, 1),
  },
  {
    name: "Gather int32 indices (constant)",
    inputs: { x: f(5, 2) },
    build: ({ x }, g) => G.gather(x!, g.constant(Int32Array.from([4, 0, 4]), [3], "int32"), 0),
  },

  // ---- reductions
  { name: "ReduceSum axis 1 keepdims", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.reduceSum(x!, [1], true) },
  { name: "ReduceSum axes [0,-1] no keepdims", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.reduceSum(x!, [0, -1], false) },
  { name: "ReduceSum all axes keepdims", inputs: { x: f(2, 3) }, build: ({ x }) => G.reduceSum(x!) },
  { name: "ReduceMean axes [1,2] keepdims", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.reduceMean(x!, [1, 2], true) },
  { name: "ReduceMean axis 0 no keepdims", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.reduceMean(x!, [0], false) },
  { name: "ReduceSumSquare axis 1 no keepdims", inputs: { x: f(3, 4) }, build: ({ x }) => G.reduceSumSquare(x!, [1], false) },
  { name: "ReduceMax axis 1 keepdims (unique maxima)", inputs: { x: fg(grid(), 2, 3, 4) }, build: ({ x }) => G.reduceMax(x!, [1], true) },
  { name: "ReduceMax all axes no keepdims", inputs: { x: fg(grid(), 3, 4) }, build: ({ x }) => G.reduceMax(x!, undefined, false) },
  { name: "ReduceMin axes [0,2] no keepdims", inputs: { x: fg(grid(), 2, 3, 4) }, build: ({ x }) => G.reduceMin(x!, [0, 2], false) },
  { name: "Softmax axis -1", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.softmax(x!, -1) },
  { name: "Softmax axis 0", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.softmax(x!, 0) },
  { name: "Softmax axis 1", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.softmax(x!, 1) },
  { name: "LogSoftmax axis -1", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.logSoftmax(x!, -1) },
  { name: "LogSoftmax axis 1", inputs: { x: f(2, 3, 4) }, build: ({ x }) => G.logSoftmax(x!, 1) },

  // ---- normalization
  { name: "LayerNorm with bias", inputs: { x: f(2, 3, 4), gamma: f(4), beta: f(4) }, build: ({ x, gamma, beta }) => G.layerNorm(x!, gamma!, beta!) },
  { name: "LayerNorm without bias, over two axes", inputs: { x: f(2, 3, 4), gamma: f(3, 4) }, build: ({ x, gamma }) => G.layerNorm(x!, gamma!, null) },
  { name: "InstanceNorm [2,3,4]", inputs: { x: f(2, 3, 4), s: f(3), b: f(3) }, build: ({ x, s, b }) => G.instanceNorm(x!, s!, b!) },
  { name: "InstanceNorm [1,2,3,3]", inputs: { x: f(1, 2, 3, 3), s: f(2), b: f(2) }, build: ({ x, s, b }) => G.instanceNorm(x!, s!, b!) },
  { name: "groupNorm 2 groups with affine", inputs: { x: f(1, 4, 2, 3), gamma: f(4), beta: f(4) }, build: ({ x, gamma, beta }) => G.groupNorm(x!, 2, gamma!, beta!) },
  { name: "groupNorm 3 groups without affine", inputs: { x: f(2, 6, 3) }, build: ({ x }) => G.groupNorm(x!, 3, null, null) },

  // ---- convolution
  { name: "Conv 3x3 with bias", inputs: { x: f(1, 2, 4, 4), w: f(2, 2, 3, 3), b: f(2) }, build: ({ x, w, b }) => G.conv(x!, w!, b!) },
  { name: "Conv 3x3 padding 1", inputs: { x: f(2, 1, 4, 4), w: f(2, 1, 3, 3) }, build: ({ x, w }) => G.conv(x!, w!, null, { padding: 1 }) },
  {
    name: "Conv stride 2, odd input (floor drops a row)",
    inputs: { x: f(1, 1, 5, 5), w: f(2, 1, 2, 2), b: f(2) },
    build: ({ x, w, b }) => G.conv(x!, w!, b!, { stride: 2 }),
  },
  {
    name: "Conv stride 2, padding 1, 3x3 on 5x6",
    inputs: { x: f(1, 1, 5, 6), w: f(2, 1, 3, 3) },
    build: ({ x, w }) => G.conv(x!, w!, null, { stride: 2, padding: 1 }),
  },
  { name: "Conv asymmetric pads [0,0,1,1]", inputs: { x: f(1, 2, 4, 4), w: f(2, 2, 2, 2) }, build: ({ x, w }) => G.conv(x!, w!, null, { padding: [0, 0, 1, 1] }) },
  { name: "Conv dilation 2", inputs: { x: f(1, 1, 6, 6), w: f(2, 1, 2, 2) }, build: ({ x, w }) => G.conv(x!, w!, null, { dilation: 2 }) },
  {
    name: "Conv dilation 2, stride 2, odd sizes",
    inputs: { x: f(1, 1, 6, 5), w: f(2, 1, 2, 2) },
    build: ({ x, w }) => G.conv(x!, w!, null, { dilation: 2, stride: 2 }),
  },
  { name: "Conv groups 2", inputs: { x: f(1, 4, 3, 3), w: f(4, 2, 2, 2), b: f(4) }, build: ({ x, w, b }) => G.conv(x!, w!, b!, { groups: 2 }) },
  {
    name: "Conv depthwise 3x3 padding 1",
    inputs: { x: f(1, 3, 3, 4), w: f(3, 1, 3, 3), b: f(3) },
    build: ({ x, w, b }) => G.conv(x!, w!, b!, { groups: 3, padding: 1 }),
  },
  {
    name: "Conv depthwise x2 multiplier, stride 2, odd input",
    inputs: { x: f(1, 2, 5, 5), w: f(4, 1, 2, 2) },
    build: ({ x, w }) => G.conv(x!, w!, null, { groups: 2, stride: 2 }),
  },
  { name: "Conv 1-D stride 2 padding 1", inputs: { x: f(2, 2, 7), w: f(3, 2, 3), b: f(3) }, build: ({ x, w, b }) => G.conv(x!, w!, b!, { stride: 2, padding: 1 }) },
  {
    name: "Conv 2x3 kernel, stride [2,1], pads [1,0,0,1]",
    inputs: { x: f(1, 2, 5, 4), w: f(2, 2, 2, 3) },
    build: ({ x, w }) => G.conv(x!, w!, null, { stride: [2, 1], padding: [1, 0, 0, 1] }),
  },
  {
    name: "ConvTranspose stride 2, padding 1, output padding 1",
    inputs: { x: f(1, 2, 3, 3), w: f(2, 2, 3, 3), b: f(2) },
    build: ({ x, w, b }) => G.convTranspose(x!, w!, b!, { stride: 2, padding: 1, outputPadding: 1 }),
  },
  { name: "ConvTranspose stride 2 kernel 2", inputs: { x: f(1, 2, 2, 3), w: f(2, 3, 2, 2) }, build: ({ x, w }) => G.convTranspose(x!, w!, null, { stride: 2 }) },
  { name: "ConvTranspose groups 2", inputs: { x: f(1, 4, 2, 2), w: f(4, 1, 2, 2), b: f(2) }, build: ({ x, w, b }) => G.convTranspose(x!, w!, b!, { groups: 2 }) },
  {
    name: "ConvTranspose 1-D stride 3, padding 1, output padding 2",
    inputs: { x: f(2, 2, 3), w: f(2, 3, 3) },
    build: ({ x, w }) => G.convTranspose(x!, w!, null, { stride: 3, padding: 1, outputPadding: 2 }),
  },
  {
    name: "ConvTranspose dilation 2",
    inputs: { x: f(1, 1, 3, 3), w: f(1, 2, 2, 2) },
    build: ({ x, w }) => G.convTranspose(x!, w!, null, { dilation: 2 }),
  },

  // ---- pooling
  { name: "AveragePool 2x2 stride 2, odd input", inputs: { x: f(1, 2, 5, 5) }, build: ({ x }) => G.avgPool(x!, 2) },
  {
    name: "AveragePool 3x3 stride 2 padding 1, count_include_pad 1",
    inputs: { x: f(1, 1, 5, 5) },
    build: ({ x }) => G.avgPool(x!, 3, { stride: 2, padding: 1, countIncludePad: true }),
  },
  {
    name: "AveragePool 3x3 stride 2 padding 1, count_include_pad 0",
    inputs: { x: f(1, 2, 5, 4) },
    build: ({ x }) => G.avgPool(x!, 3, { stride: 2, padding: 1, countIncludePad: false }),
  },
  {
    name: "AveragePool 2x3 stride 1 asymmetric pads, count_include_pad 0",
    inputs: { x: f(1, 1, 4, 4) },
    build: ({ x }) => G.avgPool(x!, [2, 3], { stride: 1, padding: [0, 1, 1, 0], countIncludePad: false }),
  },
  { name: "AveragePool kernel 2 stride 3 (skipped inputs)", inputs: { x: f(1, 1, 5, 6) }, build: ({ x }) => G.avgPool(x!, 2, { stride: 3 }) },
  {
    name: "AveragePool 1-D kernel 3 stride 2 padding 1, count_include_pad 0",
    inputs: { x: f(2, 2, 7) },
    build: ({ x }) => G.avgPool(x!, 3, { stride: 2, padding: 1, countIncludePad: false }),
  },
  { name: "MaxPool 2x2 stride 2, odd width", inputs: { x: fg(grid(), 1, 2, 4, 5) }, build: ({ x }) => G.maxPool(x!, 2) },
  { name: "MaxPool 3x3 stride 2 padding 1", inputs: { x: fg(grid(), 1, 2, 5, 4) }, build: ({ x }) => G.maxPool(x!, 3, { stride: 2, padding: 1 }) },
  { name: "MaxPool 2x2 stride 1 (overlapping windows)", inputs: { x: fg(grid(), 2, 1, 4, 4) }, build: ({ x }) => G.maxPool(x!, 2, { stride: 1 }) },
  { name: "GlobalAveragePool", inputs: { x: f(2, 3, 2, 3) }, build: ({ x }) => G.globalAvgPool(x!) },

  // ---- resize
  { name: "Resize nearest x2 (integer upsample)", inputs: { x: f(1, 2, 3, 3) }, build: ({ x }) => G.upsampleNearest(x!, 2) },
  { name: "Resize nearest 3x3 -> 5x4 (asymmetric, floor)", inputs: { x: f(1, 2, 3, 3) }, build: ({ x }) => G.resize(x!, [5, 4]) },
  {
    name: "Resize nearest half_pixel round_prefer_floor, downsample",
    inputs: { x: f(1, 1, 5, 6) },
    build: ({ x }) => G.resize(x!, [3, 4], { mode: "nearest", coordinateTransform: "half_pixel", nearestMode: "round_prefer_floor" }),
  },
  { name: "Resize linear half_pixel 3x3 -> 5x7", inputs: { x: f(1, 2, 3, 3) }, build: ({ x }) => G.resize(x!, [5, 7], { mode: "linear" }) },
  { name: "Resize linear half_pixel downsample 6x5 -> 3x2", inputs: { x: f(1, 1, 6, 5) }, build: ({ x }) => G.resize(x!, [3, 2], { mode: "linear" }) },
  {
    name: "Resize linear align_corners 3x4 -> 5x6",
    inputs: { x: f(1, 1, 3, 4) },
    build: ({ x }) => G.resize(x!, [5, 6], { mode: "linear", coordinateTransform: "align_corners" }),
  },
  { name: "Resize cubic half_pixel a=-0.75 4x4 -> 7x6", inputs: { x: f(1, 1, 4, 4) }, build: ({ x }) => G.resize(x!, [7, 6], { mode: "cubic" }) },
  {
    name: "Resize cubic asymmetric a=-0.5 4x5 -> 6x8",
    inputs: { x: f(1, 1, 4, 5) },
    build: ({ x }) => G.resize(x!, [6, 8], { mode: "cubic", coordinateTransform: "asymmetric", cubicA: -0.5 }),
  },

  // ---- composites
  { name: "gelu (erf)", inputs: { x: fg(normal(2), 2, 3, 4) }, build: ({ x }) => G.gelu(x!) },
  { name: "geluTanh", inputs: { x: fg(normal(2), 2, 3, 4) }, build: ({ x }) => G.geluTanh(x!) },
  { name: "silu", inputs: { x: fg(normal(2), 2, 3, 4) }, build: ({ x }) => G.silu(x!) },
  { name: "quickGelu", inputs: { x: fg(normal(2), 2, 3, 4) }, build: ({ x }) => G.quickGelu(x!) },
  { name: "attention [2,3,4] x [2,5,4] x [2,5,3]", inputs: { q: f(2, 3, 4), k: f(2, 5, 4), v: f(2, 5, 3) }, build: ({ q, k, v }) => G.attention(q!, k!, v!) },
  {
    name: "attention with heads (splitHeads / mergeHeads)",
    inputs: { x: f(1, 3, 4), wq: f(4, 4), wk: f(4, 4) },
    build: ({ x, wq, wk }) => {
      const q = G.splitHeads(G.matmul(x!, wq!), 2);
      const k = G.splitHeads(G.matmul(x!, wk!), 2);
      return G.mergeHeads(G.attention(q, k, G.splitHeads(x!, 2)));
    },
  },

  // ---- only some inputs differentiated (the rules' partial `need` branches)
  { name: "Div, denominator only", inputs: { a: frozen(2, 3), b: fg(signed(0.5, 2), 3) }, build: ({ a, b }) => G.div(a!, b!) },
  { name: "MatMul [B,L,K] @ [K,N], weight only", inputs: { a: frozen(2, 3, 4), b: f(4, 5) }, build: ({ a, b }) => G.matmul(a!, b!) },
  { name: "Gemm transB, B only (A frozen)", inputs: { a: frozen(3, 4), b: f(2, 4) }, build: ({ a, b }) => G.gemm(a!, b!, null, { transB: true, alpha: 2 }) },
  { name: "Gemm transA, A and C only (B frozen)", inputs: { a: f(4, 3), b: frozen(4, 2), c: f(2) }, build: ({ a, b, c }) => G.gemm(a!, b!, c!, { transA: true, beta: 3 }) },
  { name: "MatMul 1-D [3] @ [3,4], vector only", inputs: { a: f(3), b: frozen(3, 4) }, build: ({ a, b }) => G.matmul(a!, b!) },
  {
    name: "Conv weight and bias only (input frozen), stride 2",
    inputs: { x: frozen(1, 2, 5, 5), w: f(2, 2, 3, 3), b: f(2) },
    build: ({ x, w, b }) => G.conv(x!, w!, b!, { stride: 2 }),
  },
  { name: "Conv input only (weight frozen), groups 2", inputs: { x: f(1, 4, 3, 3), w: frozen(4, 2, 2, 2) }, build: ({ x, w }) => G.conv(x!, w!, null, { groups: 2 }) },
  {
    name: "ConvTranspose weight only, stride 2, output padding 1",
    inputs: { x: frozen(1, 2, 2, 2), w: f(2, 2, 3, 3) },
    build: ({ x, w }) => G.convTranspose(x!, w!, null, { stride: 2, outputPadding: 1 }),
  },
  { name: "LayerNorm gamma and beta only", inputs: { x: frozen(2, 3, 4), gamma: f(4), beta: f(4) }, build: ({ x, gamma, beta }) => G.layerNorm(x!, gamma!, beta!) },
  { name: "LayerNorm x only", inputs: { x: f(2, 3, 4), gamma: frozen(4), beta: frozen(4) }, build: ({ x, gamma, beta }) => G.layerNorm(x!, gamma!, beta!) },
  { name: "InstanceNorm scale and bias only", inputs: { x: frozen(2, 3, 4), s: f(3), b: f(3) }, build: ({ x, s, b }) => G.instanceNorm(x!, s!, b!) },
  { name: "Where, second branch only", inputs: { c: bool([2, 1], [1, 0]), a: frozen(2, 3), b: f(3) }, build: ({ c, a, b }) => G.where(c!, a!, b!) },
  { name: "Pow exponent only", inputs: { a: { shape: [2, 3], gen: uniform(0.5, 2), frozen: true }, p: f(3) }, build: ({ a, p }) => G.pow(a!, p!) },

  // ---- non-differentiable paths inside a differentiable graph
  {
    name: "bool / int64 paths are skipped (Greater, ArgMax, Cast to int, Floor, Sign, fed indices)",
    inputs: { x: fg(grid(0.13, 0.051), 2, 5), k: i64([3], [4, 0, 4]) },
    build: ({ x, k }, g) => {
      const masked = G.where(G.greater(x!, 0), x!, G.mul(x!, 0.1));
      const arg = G.argMax(x!, 1, false); // [2], depends on x but carries no gradient
      const flat = G.gather(G.reshape(x!, [10]), G.add(arg, g.constant(BigInt64Array.from([0n, 5n]), [2], "int64")));
      const stepped = G.add(G.cast(G.cast(x!, "int64"), "float32"), G.floor(x!));
      const signs = G.mul(x!, G.sign(x!));
      const picked = G.reduceSum(G.gather(x!, k!, 1), [1], true);
      return G.add(G.add(G.add(masked, stepped), signs), G.add(G.unsqueeze(flat, [1]), picked));
    },
  },
];

// ---------------------------------------------------------------- harness

const DEFAULT_EPS = 1e-2;
const DEFAULT_ATOL = 1e-3;
const DEFAULT_RTOL = 1e-3;

function seedOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619) >>> 0;
  return h;
}

interface Built {
  g: Graph;
  t: Record<string, Tensor>;
  floats: string[];
  feeds: Record<string, Float32Array | BigInt64Array | Int32Array | Uint8Array>;
  out: Tensor;
  rng: Rng;
}

function buildCase(c: Case): Built {
  const rng = new Rng(seedOf(c.name));
  const g = new G.Graph();
  const t: Record<string, Tensor> = {};
  const feeds: Built["feeds"] = {};
  const floats: string[] = [];
  for (const [name, spec] of Object.entries(c.inputs)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if ((spec.dtype ?? "float32") === "float32") {
      t[name] = spec.frozen ? g.input(name, spec.shape) : g.param(name, spec.shape);
      feeds[name] = (spec.gen ?? normal())(rng, n);
      if (!spec.frozen) floats.push(name);
    } else {
      t[name] = g.input(name, spec.shape, spec.dtype);
      feeds[name] = spec.data!;
    }
  }
  const out = c.build(t, g);
  return { g, t, floats, feeds, out, rng };
}

interface Report { maxErr: number; maxRatio: number; worst: string }

async function checkCase(c: Case): Promise<Report> {
  const { g, t, floats, feeds, out, rng } = buildCase(c);
  expect(out.dtype).toBe("float32");
  const R = rng.normals(out.size);
  const loss = G.reduceSum(G.mul(out, g.constant(R, out.shape)), undefined, false);
  const grads = G.grad(loss, floats.map((k) => t[k]!));
  const outputs: Record<string, Tensor> = { out_loss: loss };
  floats.forEach((k, i) => {
    if (!grads[i]) throw new Error(`${c.name}: no gradient for input "${k}"`);
    expect(grads[i]!.shape).toEqual(t[k]!.shape);
    outputs[`grad_${k}`] = grads[i]!;
  });
  const opts = { threads: 1 };
  const [gradSession, fwdSession] = await Promise.all([G.compile(outputs, opts), G.compile({ out_y: out }, opts)]);
  const analytic = await gradSession.run(feeds);

  const Rd = Float64Array.from(R);
  const lossAt = async () => {
    const y = (await fwdSession.run(feeds)).out_y as Float32Array;
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i]! * Rd[i]!;
    return s;
  };
  const eps = c.eps ?? DEFAULT_EPS, atol = c.atol ?? DEFAULT_ATOL, rtol = c.rtol ?? DEFAULT_RTOL;
  let maxErr = 0, maxRatio = 0, worst = "";
  const failures: string[] = [];
  for (const k of floats) {
    const x = feeds[k] as Float32Array;
    const ga = analytic[`grad_${k}`] as Float32Array;
    for (let i = 0; i < x.length; i++) {
      const x0 = x[i]!;
      x[i] = x0 + eps;
      const xp = x[i]!;
      const lp = await lossAt();
      x[i] = x0 - eps;
      const xm = x[i]!;
      const lm = await lossAt();
      x[i] = x0;
      const num = (lp - lm) / (xp - xm); // the float32-rounded step actually taken
      const err = Math.abs(ga[i]! - num);
      const ratio = err / (atol + rtol * Math.abs(num));
      if (err > maxErr) maxErr = err;
      if (ratio > maxRatio) {
        maxRatio = ratio;
        worst = `${k}[${i}]: analytic ${ga[i]} numeric ${num}`;
      }
      if (ratio > 1 && failures.length < 5) failures.push(`${k}[${i}]: analytic ${ga[i]} vs numeric ${num} (|diff| ${err.toExponential(2)})`);
    }
  }
  if (failures.length) throw new Error(`${c.name}: gradient mismatch\n  ${failures.join("\n  ")}`);
  return { maxErr, maxRatio, worst };
}

/** Op types of nodes on a differentiable path from a float input to the case's output. */
function opsOnGradientPaths(c: Case): Set<string> {
  const { t, floats, out } = buildCase(c);
  const live = new Set<Tensor>(floats.map((k) => t[k]!));
  const ops = new Set<string>();
  const isFloat = (x: Tensor) => x.dtype === "float32" || x.dtype === "float16";
  for (const n of G.topoSort([out])) {
    if (!n.inputs.some((x) => x && isFloat(x) && live.has(x))) continue;
    const floatOuts = n.outputs.filter(isFloat);
    if (!floatOuts.length) continue;
    ops.add(n.op);
    for (const o of floatOuts) live.add(o);
  }
  return ops;
}

// ---------------------------------------------------------------- tests

const REPORT = process.env.AUTODIFF_REPORT === "1";

describe("finite-difference gradient checks", () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const r = await checkCase(c);
      if (REPORT) console.log(`${c.name.padEnd(72)} maxErr ${r.maxErr.toExponential(2)} ratio ${r.maxRatio.toFixed(3)}  ${r.worst}`);
    });
  }

  test("every op with a gradient rule is checked by a case above", () => {
    const covered = new Set<string>();
    for (const c of CASES) for (const op of opsOnGradientPaths(c)) covered.add(op);
    const missing = G.differentiableOps().filter((op) => !covered.has(op));
    expect(missing).toEqual([]);
  });
});

describe("what grad does not build", () => {
  test("null for a tensor the loss does not depend on; no nodes added when nothing depends on wrt", () => {
    const g = new G.Graph();
    const x = g.param("x", [2, 3]);
    const z = g.param("z", [3]);
    const loss = G.reduceSum(G.tanh(x), undefined, false);
    const [gx, gz] = G.grad(loss, [x, z]);
    expect(gx).not.toBeNull();
    expect(gz).toBeNull();
    const before = g.nodes.length;
    expect(G.grad(loss, [z])).toEqual([null]);
    expect(g.nodes.length).toBe(before);
  });

  test("a frozen weight (constant, external, or a param not asked for) gets no gradient nodes", () => {
    const W_SHAPE = [3, 5];
    const backward = (kind: "constant" | "external" | "param-frozen" | "param-trained") => {
      const g = new G.Graph();
      const x = g.param("x", [2, 3]);
      const w =
        kind === "constant" ? g.constant(new Float32Array(15).fill(0.5), W_SHAPE)
        : kind === "external" ? g.external("w", W_SHAPE, "/nonexistent/model.safetensors", 0, 60, "float32")
        : g.param("w", W_SHAPE);
      const loss = G.reduceSum(G.gelu(G.matmul(x, w)), undefined, false);
      const first = g.nodes.length;
      const grads = G.grad(loss, kind === "param-trained" ? [x, w] : [x]);
      const added = g.nodes.slice(first);
      // A weight-gradient rule would produce a tensor of w's shape.
      const wShaped = added.filter((n) => n.outputs.some((o) => o.shape.length === 2 && o.shape[0] === 3 && o.shape[1] === 5));
      return { added: added.length, wShaped: wShaped.length, grads };
    };
    const frozen = backward("constant");
    const external = backward("external");
    const notAsked = backward("param-frozen");
    const trained = backward("param-trained");
    expect(frozen.wShaped).toBe(0);
    expect(external.wShaped).toBe(0);
    expect(notAsked.wShaped).toBe(0);
    expect(trained.wShaped).toBeGreaterThan(0);
    expect(frozen.added).toBe(external.added);
    expect(frozen.added).toBe(notAsked.added);
    expect(trained.added).toBeGreaterThan(frozen.added);
    expect(trained.grads[1]!.shape).toEqual(W_SHAPE);
  });

  test("lowered backward graph is smaller with a constant weight than with a trained one", () => {
    const nodeCount = (trainW: boolean) => {
      const g = new G.Graph();
      const x = g.param("x", [2, 3]);
      const w = trainW ? g.param("w", [3, 4]) : g.constant(new Float32Array(12).fill(0.25), [3, 4]);
      const loss = G.reduceSum(G.gelu(G.matmul(x, w)), undefined, false);
      const grads = G.grad(loss, trainW ? [x, w] : [x]);
      const outs: Record<string, Tensor> = { loss, gx: grads[0]! };
      if (trainW) outs.gw = grads[1]!;
      return G.lower(outs).model.graph.node.length;
    };
    const frozen = nodeCount(false);
    const trained = nodeCount(true);
    expect(frozen).toBeLessThan(trained);
  });

  test("integer and boolean wrt tensors get null, without error; the float gradient is exact", async () => {
    const g = new G.Graph();
    const x = g.param("x", [2, 4]);
    const idx = g.input("idx", [4], "int64");
    const mask = g.input("mask", [2, 4], "bool");
    // y = sum((mask ? x : -x) * float(idx)), so dy/dx = (mask ? 1 : -1) * idx.
    const y = G.reduceSum(G.mul(G.where(mask, x, G.neg(x)), G.cast(idx, "float32")), undefined, false);
    const [gx, gi, gm] = G.grad(y, [x, idx, mask]);
    expect(gi).toBeNull();
    expect(gm).toBeNull();
    const c = await G.compile({ y, gx: gx! }, { threads: 1 });
    const m = [1, 0, 0, 1, 1, 1, 0, 0];
    const iv = [3, -1, 0, 2];
    const r = await c.run({ x: new Float32Array(8).fill(0.3), idx: BigInt64Array.from(iv.map(BigInt)), mask: Uint8Array.from(m) });
    expect([...(r.gx as Float32Array)]).toEqual(m.map((b, i) => (b ? 1 : -1) * iv[i % 4]! + 0));
  });
});

describe("conventions at non-differentiable points (as PyTorch)", () => {
  test("ties share the gradient equally; Relu'(0) = 0; Clip passes the gradient at its bounds", async () => {
    const g = new G.Graph();
    const a = g.param("a", [4]);
    const b = g.param("b", [4]);
    const r = g.param("r", [3]);
    const m = g.param("m", [2, 3]);
    const c = g.param("c", [3]);
    const loss = G.reduceSum(
      G.concat([G.maximum(a, b), G.minimum(a, b), G.relu(r), G.reduceMax(m, [1], false), G.clip(c, -1, 1)], 0),
      undefined,
      false,
    );
    const [ga, gb, gr, gm, gc] = G.grad(loss, [a, b, r, m, c]);
    const s = await G.compile({ ga: ga!, gb: gb!, gr: gr!, gm: gm!, gc: gc! }, { threads: 1 });
    const out = await s.run({
      a: Float32Array.from([1, 2, 3, 4]), b: Float32Array.from([1, 0, 3, 5]),
      r: Float32Array.from([0, 1, -1]),
      m: Float32Array.from([2, 2, 1, 0, 3, 3]),
      c: Float32Array.from([-1, 1, 0]),
    });
    // max and min of the same pair: a wins one, b the other, so each tie sums to 1 over the two.
    expect([...(out.ga as Float32Array)]).toEqual([1, 1, 1, 1]);
    expect([...(out.gb as Float32Array)]).toEqual([1, 1, 1, 1]);
    expect([...(out.gr as Float32Array)]).toEqual([0, 1, 0]);
    expect([...(out.gm as Float32Array)]).toEqual([0.5, 0.5, 0, 0, 0.5, 0.5]);
    expect([...(out.gc as Float32Array)]).toEqual([1, 1, 1]);
  });
});

describe("clear errors", () => {
  test("an op without a rule names the op", () => {
    const g = new G.Graph();
    const x = g.param("x", [2, 3]);
    const loss = G.reduceSum(G.reduceProd(G.exp(x), [1], false), undefined, false);
    expect(() => G.grad(loss, [x])).toThrow(/no gradient rule for ReduceProd/);
  });

  test("an op without a rule is fine off the gradient path", () => {
    const g = new G.Graph();
    const x = g.param("x", [2, 3]);
    const c = g.constant(new Float32Array(6).fill(2), [2, 3]);
    const loss = G.reduceSum(G.mul(x, G.reduceProd(c, [0], true)), undefined, false);
    const [gx] = G.grad(loss, [x]);
    expect(gx!.shape).toEqual([2, 3]);
  });

  test("unsupported variants of ops with rules say what is unsupported", () => {
    const g = new G.Graph();
    const x = g.param("x", [4, 4]);
    expect(() => G.grad(G.reduceSum(G.slice(x, [0], [4], [0], [2]), undefined, false), [x])).toThrow(/Slice with steps/);
    expect(() => G.grad(G.reduceSum(G.pad(x, [1, 1, 1, 1], "reflect"), undefined, false), [x])).toThrow(/constant Pad/);
  });

  test("a non-float loss is refused", () => {
    const g = new G.Graph();
    const x = g.param("x", [3]);
    expect(() => G.grad(G.argMax(x, 0, false), [x])).toThrow(/loss must be a float tensor/);
  });
});
