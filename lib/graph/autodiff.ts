// Reverse-mode automatic differentiation on the builder graph. `grad(loss, wrt)` appends the
// backward pass to the same graph, written only in standard ONNX ops, so ONNX Runtime runs
// forward + backward as one graph (on CPU here, on a GPU box alike).
//
// - Only tensors that depend on `wrt` carry gradients: no gradient is ever built for a frozen
//   weight, and integer/boolean paths (shapes, indices, masks) are not differentiable.
// - Forward activations that a rule needs are referenced directly (reused, not recomputed);
//   LayerNormalization and MaxPool expose their saved statistics/indices as extra outputs.
// - Branches that do not reach `wrt` are never built, so nothing dead is left to prune.

import { type Graph, type Node, Tensor, topoSort, int, str } from "./graph.ts";
import * as O from "./ops.ts";
import { GELU_ENDS } from "./ops.ts";
import { graphSegments, type Segment } from "./recompute.ts";
import { fmt, product, sameShape } from "./shape.ts";

const isFloat = (t: Tensor) => t.dtype === "float32" || t.dtype === "float16" || t.dtype === "bfloat16";

/** Sums a broadcast gradient back to `shape` (the reverse of numpy broadcasting). */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  let out = g;
  if (lead > 0) out = O.reduceSum(out, [...Array(lead).keys()], false);
  const axes = shape.flatMap((d, i) => (d === 1 && out.shape[i] !== 1 ? [i] : []));
  if (axes.length) out = O.reduceSum(out, axes, true);
  if (!sameShape(out.shape, shape)) throw new Error(`autodiff: cannot sum gradient ${fmt(g.shape)} to ${fmt(shape)}`);
  return out;
}

const zerosLike = (t: Tensor) => O.expand(O.scalar(t.graph, 0, t.dtype), t.shape);
/** Swap the last two axes. */
const mT = (t: Tensor) => O.transpose(t, [...t.shape.keys()].map((i) => (i === t.rank - 1 ? t.rank - 2 : i === t.rank - 2 ? t.rank - 1 : i)));
const attrInt = (n: Node, k: string, d: number) => (n.attrs[k]?.kind === "int" ? (n.attrs[k] as { value: number }).value : d);
const attrInts = (n: Node, k: string) => (n.attrs[k]?.kind === "ints" ? (n.attrs[k] as { value: number[] }).value : undefined);
const attrFloat = (n: Node, k: string, d: number) => (n.attrs[k]?.kind === "float" ? (n.attrs[k] as { value: number }).value : d);
const attrStr = (n: Node, k: string, d: string) => (n.attrs[k]?.kind === "string" ? (n.attrs[k] as { value: string }).value : d);

/** Reads the values of a constant int64 input (axes, shapes, pads). */
function constInts(t: Tensor | null | undefined): number[] {
  if (!t || t.leaf?.kind !== "constant") throw new Error(`autodiff: expected a constant int input, got ${t}`);
  return Array.from(t.leaf.data as BigInt64Array, Number);
}

/**
 * A vector-Jacobian rule: given the node, the gradients of its outputs (null where none flows) and
 * which inputs need a gradient, returns the gradient of each input (null where not needed).
 */
type Rule = (n: Node, gys: (Tensor | null)[], need: boolean[]) => (Tensor | null)[];

const RULES: Record<string, Rule> = {};
const rule = (ops: string[], r: Rule) => ops.forEach((o) => (RULES[o] = r));

const x0 = (n: Node) => n.inputs[0]!;
const x1 = (n: Node) => n.inputs[1]!;
const y0 = (n: Node) => n.outputs[0]!;

// ---- elementwise
rule(["Add"], (n, [gy], need) => [need[0] ? sumTo(gy!, x0(n).shape) : null, need[1] ? sumTo(gy!, x1(n).shape) : null]);
rule(["Sub"], (n, [gy], need) => [need[0] ? sumTo(gy!, x0(n).shape) : null, need[1] ? sumTo(O.neg(gy!), x1(n).shape) : null]);
rule(["Mul"], (n, [gy], need) => [need[0] ? sumTo(O.mul(gy!, x1(n)), x0(n).shape) : null, need[1] ? sumTo(O.mul(gy!, x0(n)), x1(n).shape) : null]);
rule(["Div"], (n, [gy], need) => [
  need[0] ? sumTo(O.div(gy!, x1(n)), x0(n).shape) : null,
  need[1] ? sumTo(O.neg(O.div(O.mul(gy!, y0(n)), x1(n))), x1(n).shape) : null,
]);
rule(["Pow"], (n, [gy], need) => [
  need[0] ? sumTo(O.mul(gy!, O.mul(x1(n), O.pow(x0(n), O.sub(x1(n), 1)))), x0(n).shape) : null,
  need[1] ? sumTo(O.mul(gy!, O.mul(y0(n), O.log(x0(n)))), x1(n).shape) : null,
]);
function minMax(n: Node, gy: Tensor, need: boolean[]): (Tensor | null)[] {
  // Ties share the gradient equally, as torch.maximum/minimum do.
  const a = x0(n), b = x1(n);
  const pick = n.op === "Max" ? O.greater : O.less;
  const tie = O.cast(O.equal(a, b), a.dtype);
  const wa = O.add(O.cast(pick(a, b), a.dtype), O.mul(tie, 0.5));
  const wb = O.add(O.cast(pick(b, a), a.dtype), O.mul(tie, 0.5));
  return [need[0] ? sumTo(O.mul(gy, wa), a.shape) : null, need[1] ? sumTo(O.mul(gy, wb), b.shape) : null];
}
rule(["Max", "Min"], (n, [gy], need) => minMax(n, gy!, need));
rule(["Neg"], (_n, [gy]) => [O.neg(gy!)]);
rule(["Identity"], (_n, [gy]) => [gy]);
rule(["Exp"], (n, [gy]) => [O.mul(gy!, y0(n))]);
rule(["Log"], (n, [gy]) => [O.div(gy!, x0(n))]);
rule(["Sqrt"], (n, [gy]) => [O.div(O.mul(gy!, 0.5), y0(n))]);
rule(["Abs"], (n, [gy]) => [O.mul(gy!, O.sign(x0(n)))]);
rule(["Tanh"], (n, [gy]) => [O.mul(gy!, O.sub(1, O.mul(y0(n), y0(n))))]);
rule(["Sigmoid"], (n, [gy]) => [O.mul(gy!, O.mul(y0(n), O.sub(1, y0(n))))]);
rule(["Relu"], (n, [gy]) => [O.where(O.greater(x0(n), 0), gy!, 0)]);
rule(["LeakyRelu"], (n, [gy]) => [O.where(O.greater(x0(n), 0), gy!, O.mul(gy!, attrFloat(n, "alpha", 0.01)))]);
rule(["Erf"], (n, [gy]) => [O.mul(gy!, O.mul(O.exp(O.neg(O.mul(x0(n), x0(n)))), 2 / Math.sqrt(Math.PI)))]);
rule(["Reciprocal"], (n, [gy]) => [O.neg(O.mul(gy!, O.mul(y0(n), y0(n))))]);
rule(["Sin"], (n, [gy]) => [O.mul(gy!, O.cos(x0(n)))]);
rule(["Cos"], (n, [gy]) => [O.neg(O.mul(gy!, O.sin(x0(n))))]);
rule(["Softplus"], (n, [gy]) => [O.mul(gy!, O.sigmoid(x0(n)))]);
rule(["Clip"], (n, [gy]) => {
  // The gradient passes where lo <= x <= hi (PyTorch's convention at the bounds).
  const x = x0(n);
  let keep: Tensor | null = null;
  if (n.inputs[1]) keep = O.not(O.less(x, n.inputs[1]));
  if (n.inputs[2]) {
    const hi = O.not(O.greater(x, n.inputs[2]));
    keep = keep ? O.and(keep, hi) : hi;
  }
  return [keep ? O.where(keep, gy!, 0) : gy];
});
rule(["Cast"], (n, [gy]) => [isFloat(x0(n)) ? O.cast(gy!, x0(n).dtype) : null]);
rule(["Where"], (n, [gy], need) => {
  const [c, a, b] = n.inputs as [Tensor, Tensor, Tensor];
  return [null, need[1] ? sumTo(O.where(c, gy!, 0), a.shape) : null, need[2] ? sumTo(O.where(c, 0, gy!), b.shape) : null];
});

// ---- linear algebra
rule(["MatMul"], (n, [gy], need) => {
  const a = x0(n), b = x1(n);
  // Promote 1-D operands as numpy does, so the matrix rules apply.
  const A = a.rank === 1 ? O.reshape(a, [1, a.shape[0]!]) : a;
  const B = b.rank === 1 ? O.reshape(b, [b.shape[0]!, 1]) : b;
  let G = gy!;
  const gShape = [...G.shape];
  if (a.rank === 1) gShape.splice(gShape.length - (b.rank === 1 ? 0 : 1), 0, 1);
  if (b.rank === 1) gShape.push(1);
  G = O.reshape(G, gShape);
  let ga: Tensor | null = null, gb: Tensor | null = null;
  if (need[0]) ga = O.reshape(sumTo(O.matmul(G, mT(B)), A.shape), a.shape);
  if (need[1]) {
    if (B.rank === 2 && A.rank > 2) {
      // x @ W with x [.., K]: fold the batch into rows for one big matmul.
      const K = A.shape[A.rank - 1]!, N = G.shape[G.rank - 1]!;
      gb = O.matmul(O.transpose(O.reshape(A, [-1, K]), [1, 0]), O.reshape(G, [-1, N]));
    } else gb = sumTo(O.matmul(mT(A), G), B.shape);
    gb = O.reshape(gb, b.shape);
  }
  return [ga, gb];
});

rule(["Gemm"], (n, [gy], need) => {
  // Y = alpha A' B' + beta C. Each gradient is itself one Gemm with the transposes folded into its
  // flags, so no transposed copy of a weight is ever materialized.
  const [a, b, c] = n.inputs as [Tensor, Tensor, Tensor | undefined];
  const tA = attrInt(n, "transA", 0) === 1, tB = attrInt(n, "transB", 0) === 1;
  const alpha = attrFloat(n, "alpha", 1), beta = attrFloat(n, "beta", 1);
  const g = gy!;
  const ga = !need[0] ? null : tA ? O.gemm(b, g, null, { transA: tB, transB: true, alpha }) : O.gemm(g, b, null, { transB: !tB, alpha });
  const gb = !need[1] ? null : tB ? O.gemm(g, a, null, { transA: true, transB: tA, alpha }) : O.gemm(a, g, null, { transA: !tA, alpha });
  const gc = c && need[2] ? sumTo(beta === 1 ? g : O.mul(g, beta), c.shape) : null;
  return [ga, gb, gc];
});

// ---- shape ops
rule(["Reshape", "Squeeze", "Unsqueeze", "Flatten"], (n, [gy]) => [O.reshape(gy!, x0(n).shape)]);
rule(["Transpose"], (n, [gy]) => {
  const perm = attrInts(n, "perm")!;
  const inv = new Array(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return [O.transpose(gy!, inv)];
});
rule(["Expand"], (n, [gy]) => [sumTo(gy!, x0(n).shape)]);
rule(["Tile"], (n, [gy]) => {
  const x = x0(n);
  const reps = constInts(n.inputs[1]);
  const inter = x.shape.flatMap((d, i) => [reps[i]!, d]);
  const summed = O.reduceSum(O.reshape(gy!, inter), reps.map((_, i) => 2 * i), false);
  return [summed];
});
rule(["Concat"], (n, [gy], need) => {
  const axis = attrInt(n, "axis", 0);
  const parts = O.split(gy!, n.inputs.map((t) => t!.shape[axis]!), axis);
  return parts.map((p, i) => (need[i] ? p : null));
});
rule(["Split"], (n, gys) => {
  const axis = attrInt(n, "axis", 0);
  return [O.concat(n.outputs.map((o, i) => gys[i] ?? zerosLike(o)), axis)];
});
rule(["Slice"], (n, [gy]) => {
  const x = x0(n);
  const starts = constInts(n.inputs[1]), ends = constInts(n.inputs[2]);
  const axes = n.inputs[3] ? constInts(n.inputs[3]) : starts.map((_, i) => i);
  const steps = n.inputs[4] ? constInts(n.inputs[4]) : starts.map(() => 1);
  if (steps.some((s) => s !== 1)) throw new Error("autodiff: Slice with steps other than 1 has no gradient rule yet");
  const pads = new Array(2 * x.rank).fill(0);
  axes.forEach((a, i) => {
    const dim = x.shape[a]!;
    const s = Math.min(Math.max(starts[i]! < 0 ? starts[i]! + dim : starts[i]!, 0), dim);
    pads[a] = s;
    pads[a + x.rank] = dim - s - gy!.shape[a]!;
  });
  return [O.pad(gy!, pads)];
});
rule(["Pad"], (n, [gy]) => {
  const x = x0(n);
  if (attrStr(n, "mode", "constant") !== "constant") throw new Error("autodiff: only constant Pad is differentiable");
  const pads = constInts(n.inputs[1]);
  return [O.slice(gy!, pads.slice(0, x.rank), x.shape.map((d, i) => pads[i]! + d), [...x.shape.keys()])];
});
rule(["Gather"], (n, [gy]) => {
  // Scatter-add the gradient rows back to the gathered positions (repeated indices accumulate).
  const x = x0(n), idx = x1(n);
  const axis = attrInt(n, "axis", 0);
  const k = product(idx.shape);
  const gshape = [...x.shape.slice(0, axis), k, ...x.shape.slice(axis + 1)];
  const g2 = O.reshape(gy!, gshape);
  const ishape = gshape.map((_, i) => (i === axis ? k : 1));
  const ix = O.expand(O.reshape(O.cast(idx, "int64"), ishape), gshape);
  const out = x.graph.addNode("ScatterElements", [zerosLike(x), ix, g2], { axis: int(axis), reduction: str("add") }, [{ shape: x.shape, dtype: x.dtype }]);
  return [out[0]!];
});

// ---- reductions
function expandReduced(n: Node, gy: Tensor, axes: number[]): Tensor {
  const x = x0(n);
  const keep = attrInt(n, "keepdims", 1) === 1;
  const kept = keep ? gy : O.reshape(gy, x.shape.map((d, i) => (axes.includes(i) ? 1 : d)));
  return O.expand(kept, x.shape);
}
function reduceAxes(n: Node): number[] {
  const x = x0(n);
  const raw = n.op === "ReduceSum" ? (n.inputs[1] ? constInts(n.inputs[1]) : undefined) : attrInts(n, "axes");
  return (raw ?? [...x.shape.keys()]).map((a) => (a < 0 ? a + x.rank : a));
}
rule(["ReduceSum"], (n, [gy]) => [expandReduced(n, gy!, reduceAxes(n))]);
rule(["ReduceMean"], (n, [gy]) => {
  const axes = reduceAxes(n);
  const count = axes.reduce((c, a) => c * x0(n).shape[a]!, 1);
  return [O.div(expandReduced(n, gy!, axes), count)];
});
rule(["ReduceSumSquare"], (n, [gy]) => [O.mul(expandReduced(n, gy!, reduceAxes(n)), O.mul(x0(n), 2))]);
rule(["ReduceMax", "ReduceMin"], (n, [gy]) => {
  // Ties share the gradient equally (torch.amax/amin).
  const axes = reduceAxes(n);
  const x = x0(n);
  const y = expandReduced(n, y0(n), axes);
  const hit = O.cast(O.equal(x, y), x.dtype);
  const ties = O.reduceSum(hit, axes, true);
  return [O.mul(expandReduced(n, gy!, axes), O.div(hit, ties))];
});
rule(["Softmax"], (n, [gy]) => {
  const axis = attrInt(n, "axis", -1);
  const y = y0(n);
  return [O.mul(y, O.sub(gy!, O.reduceSum(O.mul(gy!, y), [axis], true)))];
});
rule(["LogSoftmax"], (n, [gy]) => {
  const axis = attrInt(n, "axis", -1);
  return [O.sub(gy!, O.mul(O.exp(y0(n)), O.reduceSum(gy!, [axis], true)))];
});

// ---- normalization
/** d/dx of (x - mean) * invstd over `axes`, given dxhat. */
function normBackward(xhat: Tensor, invstd: Tensor, gxhat: Tensor, axes: number[]): Tensor {
  const m1 = O.reduceMean(gxhat, axes, true);
  const m2 = O.reduceMean(O.mul(gxhat, xhat), axes, true);
  return O.mul(invstd, O.sub(O.sub(gxhat, m1), O.mul(xhat, m2)));
}
rule(["LayerNormalization"], (n, [gy], need) => {
  const [x, gamma, beta] = n.inputs as [Tensor, Tensor, Tensor | null];
  const axis = attrInt(n, "axis", -1);
  const a = axis < 0 ? axis + x.rank : axis;
  const statShape = x.shape.map((d, i) => (i < a ? d : 1));
  // Reuse the forward's saved mean and 1/std (LayerNormalization's optional outputs 1 and 2).
  while (n.outputs.length < 3) x.graph.addOutput(n, statShape, "float32");
  const mean = n.outputs[1]!, invstd = n.outputs[2]!;
  const xhat = O.mul(O.sub(x, mean), invstd);
  const axes = x.shape.flatMap((_, i) => (i >= a ? [i] : []));
  return [
    need[0] ? normBackward(xhat, invstd, O.mul(gy!, gamma), axes) : null,
    need[1] ? sumTo(O.mul(gy!, xhat), gamma.shape) : null,
    beta && need[2] ? sumTo(gy!, beta.shape) : null,
  ];
});
rule(["InstanceNormalization"], (n, [gy], need) => {
  const [x, scale, bias] = n.inputs as [Tensor, Tensor, Tensor];
  const eps = attrFloat(n, "epsilon", 1e-5);
  const axes = x.shape.flatMap((_, i) => (i >= 2 ? [i] : []));
  const mean = O.reduceMean(x, axes, true);
  const xc = O.sub(x, mean);
  const invstd = O.reciprocal(O.sqrt(O.add(O.reduceMean(O.mul(xc, xc), axes, true), eps)));
  const xhat = O.mul(xc, invstd);
  const cshape = [x.shape[1]!, ...axes.map(() => 1)];
  return [
    need[0] ? normBackward(xhat, invstd, O.mul(gy!, O.reshape(scale, cshape)), axes) : null,
    need[1] ? O.reshape(sumTo(O.mul(gy!, xhat), [1, ...cshape]), scale.shape) : null,
    need[2] ? O.reshape(sumTo(gy!, [1, ...cshape]), bias.shape) : null,
  ];
});

// ---- convolution and pooling
interface ConvAttrs { strides: number[]; pads: number[]; dilations: number[]; group: number; kernel: number[] }
function convAttrs(n: Node, w: Tensor): ConvAttrs {
  const sp = w.rank - 2;
  return {
    kernel: w.shape.slice(2),
    strides: attrInts(n, "strides") ?? new Array(sp).fill(1),
    pads: attrInts(n, "pads") ?? new Array(2 * sp).fill(0),
    dilations: attrInts(n, "dilations") ?? new Array(sp).fill(1),
    group: attrInt(n, "group", 1),
  };
}

/**
 * Gradient of a convolution's weight: gw[g*Mg+m, c, k] = sum_{n,o} gy[n, g*Mg+m, o] x[n, g*Cg+c, o*s + k*d - p].
 * That is itself a grouped convolution of x (channels and batch swapped) with gy as the kernel,
 * stride and dilation exchanged; the result is cropped to the kernel size.
 */
function convWeightGrad(x: Tensor, gy: Tensor, a: ConvAttrs): Tensor {
  const [N, C] = x.shape as [number, number];
  const G = a.group, Cg = C / G;
  const sp = x.shape.slice(2);
  const xs = O.reshape(O.transpose(O.reshape(x, [N, G, Cg, ...sp]), [2, 1, 0, ...sp.map((_, i) => 3 + i)]), [Cg, G * N, ...sp]);
  const ws = O.transpose(gy, [1, 0, ...sp.map((_, i) => 2 + i)]); // [M, N, *out]
  const full = O.conv(xs, ws, null, { stride: a.dilations, dilation: a.strides, padding: a.pads, groups: G }); // [Cg, M, *k']
  const cropped = O.slice(full, a.kernel.map(() => 0), a.kernel, a.kernel.map((_, i) => 2 + i));
  return O.transpose(cropped, [1, 0, ...sp.map((_, i) => 2 + i)]);
}

rule(["Conv"], (n, [gy], need) => {
  const [x, w, b] = n.inputs as [Tensor, Tensor, Tensor | undefined];
  const a = convAttrs(n, w);
  const sp = a.kernel.length;
  let gx: Tensor | null = null;
  if (need[0]) {
    // The transposed convolution maps gy back to x's shape; output_padding recovers the rows
    // that the forward's floor() dropped (always fewer than the stride).
    const outPad = a.kernel.map((k, i) => x.shape[2 + i]! - ((gy!.shape[2 + i]! - 1) * a.strides[i]! + (k - 1) * a.dilations[i]! + 1 - a.pads[i]! - a.pads[i + sp]!));
    gx = O.convTranspose(gy!, w, null, { stride: a.strides, padding: a.pads, dilation: a.dilations, groups: a.group, outputPadding: outPad });
  }
  return [
    gx,
    need[1] ? convWeightGrad(x, gy!, a) : null,
    b && need[2] ? O.reduceSum(gy!, [0, ...a.kernel.map((_, i) => 2 + i)], false) : null,
  ];
});
rule(["ConvTranspose"], (n, [gy], need) => {
  const [x, w, b] = n.inputs as [Tensor, Tensor, Tensor | undefined];
  const a = convAttrs(n, w);
  return [
    need[0] ? O.conv(gy!, w, null, { stride: a.strides, padding: a.pads, dilation: a.dilations, groups: a.group }) : null,
    // ConvTranspose's weight gradient is Conv's with the roles of input and output gradient swapped.
    need[1] ? convWeightGrad(gy!, x, a) : null,
    b && need[2] ? O.reduceSum(gy!, [0, ...a.kernel.map((_, i) => 2 + i)], false) : null,
  ];
});
rule(["GlobalAveragePool"], (n, [gy]) => {
  const x = x0(n);
  return [O.div(O.expand(gy!, x.shape), product(x.shape.slice(2)))];
});
rule(["AveragePool"], (n, [gy]) => {
  const x = x0(n);
  const k = attrInts(n, "kernel_shape")!;
  const strides = attrInts(n, "strides") ?? k.map(() => 1);
  const pads = attrInts(n, "pads") ?? [...k.map(() => 0), ...k.map(() => 0)];
  const C = x.shape[1]!;
  const includePad = attrInt(n, "count_include_pad", 0) === 1;
  // Each output spreads gy / count over its window: a depthwise transposed conv with a ones kernel.
  let g = gy!;
  if (includePad || pads.every((p) => p === 0)) g = O.div(g, product(k));
  else g = O.div(g, x.graph.constant(poolCounts(x.shape.slice(2), k, strides, pads), [1, 1, ...gy!.shape.slice(2)]));
  const ones = x.graph.constant(new Float32Array(C * product(k)).fill(1), [C, 1, ...k]);
  const sp = k.length;
  const outPad = k.map((kk, i) => x.shape[2 + i]! - ((gy!.shape[2 + i]! - 1) * strides[i]! + kk - pads[i]! - pads[i + sp]!));
  return [O.convTranspose(g, ones, null, { stride: strides, padding: pads, groups: C, outputPadding: outPad })];
});
rule(["MaxPool"], (n, [gy]) => {
  // MaxPool's optional Indices output: the flat (N*C*H*W) position of each window's maximum.
  const x = x0(n);
  while (n.outputs.length < 2) x.graph.addOutput(n, y0(n).shape, "int64");
  const flat = O.reshape(n.outputs[1]!, [-1]);
  const zero = O.expand(O.scalar(x.graph, 0, x.dtype), [x.size]);
  const out = x.graph.addNode("ScatterElements", [zero, flat, O.reshape(gy!, [-1])], { axis: int(0), reduction: str("add") }, [{ shape: [x.size], dtype: x.dtype }]);
  return [O.reshape(out[0]!, x.shape)];
});
rule(["Resize"], (n, [gy]) => {
  const x = x0(n);
  const sizes = constInts(n.inputs[3]);
  const mode = attrStr(n, "mode", "nearest");
  const coord = attrStr(n, "coordinate_transformation_mode", "half_pixel");
  const nearest = attrStr(n, "nearest_mode", "round_prefer_floor");
  const cubicA = attrFloat(n, "cubic_coeff_a", -0.75);
  // Resizing is linear and separable: y = R_h x R_w^T per channel, so dx = R_h^T dy R_w.
  const [H, W] = x.shape.slice(2) as [number, number];
  const [OH, OW] = sizes.slice(2) as [number, number];
  if (x.rank !== 4) throw new Error("autodiff: Resize gradient is implemented for 4-D inputs");
  if (mode === "nearest" && coord === "asymmetric" && nearest === "floor" && OH % H === 0 && OW % W === 0) {
    // Integer nearest upsampling (UNet Upsample2D): sum each f x f block.
    const [N, C] = x.shape as [number, number];
    return [O.reduceSum(O.reshape(gy!, [N, C, H, OH / H, W, OW / W]), [3, 5], false)];
  }
  const g = x.graph;
  const rh = g.constant(resizeMatrix(H, OH, mode, coord, nearest, cubicA), [OH, H]);
  const rw = g.constant(resizeMatrix(W, OW, mode, coord, nearest, cubicA), [OW, W]);
  return [O.matmul(O.transpose(rh, [1, 0]), O.matmul(gy!, rw))];
});

/** The [out, in] matrix of ONNX Resize along one axis (exclude_outside = 0, edges clamped). */
export function resizeMatrix(inSize: number, outSize: number, mode: string, coord: string, nearestMode: string, cubicA: number): Float32Array {
  const m = new Float32Array(outSize * inSize);
  const scale = outSize / inSize;
  for (let o = 0; o < outSize; o++) {
    let xin: number;
    if (coord === "half_pixel") xin = (o + 0.5) / scale - 0.5;
    else if (coord === "pytorch_half_pixel") xin = outSize > 1 ? (o + 0.5) / scale - 0.5 : 0;
    else if (coord === "align_corners") xin = outSize > 1 ? (o * (inSize - 1)) / (outSize - 1) : 0;
    else xin = o / scale; // asymmetric
    const clampI = (i: number) => Math.min(Math.max(i, 0), inSize - 1);
    if (mode === "nearest") {
      let i: number;
      if (nearestMode === "floor") i = Math.floor(xin);
      else if (nearestMode === "ceil") i = Math.ceil(xin);
      else if (nearestMode === "round_prefer_ceil") i = Math.floor(xin + 0.5);
      else i = Number.isInteger(xin - 0.5) ? Math.floor(xin) : Math.round(xin);
      m[o * inSize + clampI(i)] = 1;
    } else if (mode === "linear") {
      const xc = Math.min(Math.max(xin, 0), inSize - 1);
      const i0 = Math.floor(xc), t = xc - i0;
      m[o * inSize + clampI(i0)] += 1 - t;
      m[o * inSize + clampI(i0 + 1)] += t;
    } else {
      const i0 = Math.floor(xin), t = xin - i0;
      const a = cubicA;
      const w = (d: number) => {
        d = Math.abs(d);
        return d <= 1 ? (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1 : d < 2 ? a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a : 0;
      };
      for (let k = -1; k <= 2; k++) m[o * inSize + clampI(i0 + k)] += w(t - k);
    }
  }
  return m;
}

function poolCounts(spatial: number[], k: number[], strides: number[], pads: number[]): Float32Array {
  // Number of real (non-padding) elements in each window, for count_include_pad = 0.
  const sp = k.length;
  const outDims = spatial.map((d, i) => Math.floor((d + pads[i]! + pads[i + sp]! - k[i]!) / strides[i]!) + 1);
  const out = new Float32Array(product(outDims));
  for (let idx = 0; idx < out.length; idx++) {
    let rem = idx, count = 1;
    for (let i = sp - 1; i >= 0; i--) {
      const o = rem % outDims[i]!;
      rem = Math.floor(rem / outDims[i]!);
      const start = o * strides[i]! - pads[i]!;
      count *= Math.min(start + k[i]!, spatial[i]!) - Math.max(start, 0);
    }
    out[idx] = count;
  }
  return out;
}

/** Ops through which no gradient flows (comparisons, integer maths, argmax...). */
const NON_DIFFERENTIABLE = new Set(["Equal", "Less", "Greater", "And", "Or", "Not", "ArgMax", "Floor", "Sign", "Shape", "Size"]);

/** Op types that have a gradient rule. */
export function differentiableOps(): string[] {
  return Object.keys(RULES).sort();
}

/**
 * Appends the gradient of `loss` with respect to each tensor in `wrt` to the graph.
 * `loss` is usually a scalar; for other shapes the seed gradient is all ones (a sum).
 * Returns null for a `wrt` that `loss` does not depend on.
 */
export function grad(loss: Tensor, wrt: Tensor[], seed?: Tensor, opts: GradOptions = {}): (Tensor | null)[] {
  const g: Graph = loss.graph;
  if (!isFloat(loss)) throw new Error(`grad: loss must be a float tensor, got ${loss}`);
  const nodes = topoSort([loss]);
  // Forward: which tensors depend on a wrt tensor through differentiable float paths.
  const needs = new Set<Tensor>(wrt.filter(isFloat));
  for (const n of nodes) {
    if (NON_DIFFERENTIABLE.has(n.op)) continue;
    if (n.inputs.some((x) => x && needs.has(x))) for (const o of n.outputs) if (isFloat(o)) needs.add(o);
  }
  const grads = new Map<Tensor, Tensor[]>();
  const push = (t: Tensor, gt: Tensor) => {
    if (!sameShape(gt.shape, t.shape)) throw new Error(`autodiff: gradient ${fmt(gt.shape)} does not match ${t} (internal error)`);
    const l = grads.get(t);
    if (l) l.push(gt);
    else grads.set(t, [gt]);
    lastGrad = gt;
  };
  let lastGrad: Tensor | null = null;
  let consumers: Map<Tensor, number> | undefined;
  const recompute = recomputer(g, opts.recompute ?? false, () => lastGrad);
  const total = (t: Tensor): Tensor | null => {
    const l = grads.get(t);
    if (!l) return null;
    const s = l.length === 1 ? l[0]! : l.reduce((a, b) => O.add(a, b));
    grads.set(t, [s]);
    return s;
  };
  if (needs.has(loss)) push(loss, seed ?? O.expand(O.scalar(g, 1, loss.dtype), loss.shape));
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    const need = n.inputs.map((x) => !!x && needs.has(x));
    if (!need.some(Boolean)) continue;
    const gys = n.outputs.map(total);
    if (gys.every((x) => x === null)) continue;
    if (GELU_ENDS.has(n) && geluGrad(n, recompute(n), gys[0]!, consumers ??= countConsumers(nodes), push)) continue;
    const r = RULES[n.op];
    if (!r) throw new Error(`autodiff: no gradient rule for ${n.op} (differentiable ops: ${differentiableOps().join(", ")})`);
    // In a recomputed segment the rule reads the recomputed copy of the node; gradients still
    // flow to (and are keyed by) the original tensors.
    const rn = recompute(n);
    // Outputs other than the first get a zero gradient only if a rule needs it (Split handles it).
    const gins = r(rn, n.op === "Split" ? gys : [gys[0] ?? zerosLike(n.outputs[0]!), ...gys.slice(1)], need);
    gins.forEach((gi, k) => {
      if (gi && need[k]) push(n.inputs[k]!, gi);
    });
  }
  return wrt.map((t) => total(t));
}

function countConsumers(nodes: Node[]): Map<Tensor, number> {
  const c = new Map<Tensor, number>();
  for (const n of nodes) for (const x of n.inputs) if (x) c.set(x, (c.get(x) ?? 0) + 1);
  return c;
}

/**
 * The gradient of an erf GELU built by ops.gelu (n: its last node, Mul(m, 0.5) with m = x * A,
 * A = 1 + erf(u), u = x / sqrt 2) as one expression of x alone:
 *   d/dx = 0.5 (1 + erf(u) + sqrt(2/pi) x exp(-u^2)),  u = x / sqrt 2.
 * Reading only x (not the forward's u, erf(u), A) leaves the forward's five nodes with one reader
 * each, so ONNX Runtime fuses them into its one-pass Gelu kernel (com.microsoft.Gelu, CPU, CUDA
 * and WebGPU) and no longer keeps three full-size intermediates alive until the backward. Per
 * GELU, ORT runs 13 kernels instead of 16 (forward 1 + backward 12 vs 5 + 11); measured 1.22x on
 * GELU forward + backward over [8, 197, 1536] (bench/gelu-grad.ts). Pushes x's gradient and
 * returns true, or returns false (the per-node rules run) when an inner tensor of the pattern has
 * another reader or the pattern was changed. `rn` is the node whose x to read (its recomputed
 * copy under recompute).
 */
function geluGrad(n: Node, rn: Node, gy: Tensor, consumers: Map<Tensor, number>, push: (t: Tensor, g: Tensor) => void): boolean {
  const inner = (t: Tensor | null | undefined, op: string) => (t?.node?.op === op && consumers.get(t) === 1 ? t.node : undefined);
  const m = inner(n.inputs[0], "Mul");
  const add = inner(m?.inputs[1], "Add");
  const erf = inner(add?.inputs[0], "Erf");
  const div = inner(erf?.inputs[0], "Div");
  const x = m?.inputs[0];
  if (!m || !add || !erf || !div || !x || div.inputs[0] !== x) return false;
  // x in the node the rule reads (a recomputed copy has the same structure).
  const rx = rn.inputs[0]!.node!.inputs[0]!;
  const u = O.mul(rx, Math.SQRT1_2);
  const A = O.add(O.erf(u), 1);
  const e = O.exp(O.neg(O.mul(u, u)));
  const d = O.add(A, O.mul(O.mul(rx, e), Math.sqrt(2 / Math.PI)));
  push(x, O.mul(O.mul(gy, d), 0.5));
  return true;
}

export interface GradOptions {
  /**
   * Recompute the segments that the model marked with `checkpoint` (lib/graph/recompute.ts)
   * instead of keeping their inner activations for the backward pass. Segments marked `always`
   * (chunked attention) are recomputed either way.
   */
  recompute?: boolean;
}

/**
 * Returns, for an original forward node, the node whose inputs and outputs its gradient rule
 * should read: the node itself, or its copy in a recomputed segment. A segment is copied once,
 * when the backward first reaches one of its nodes. The copy reads the segment's inputs (kept
 * from the forward) through `x + 0 * g[0]`, where g is the gradient built last: ONNX Runtime runs
 * nodes in a topological order and would otherwise run the copy right after the forward,
 * holding its activations all along; the data dependency on a backward tensor makes the copy
 * wait until the backward has reached it. (The sum is exact: x + 0 is x, for any finite g[0].)
 */
function recomputer(g: Graph, all: boolean, lastGrad: () => Tensor | null): (n: Node) => Node {
  const active = graphSegments(g).filter((s) => all || s.always);
  if (!active.length) return (n) => n;
  const isActive = new Set(active);
  const activeParent = (s: Segment): Segment | undefined => {
    let p = s.parent;
    while (p && !isActive.has(p)) p = p.parent;
    return p;
  };
  // Innermost active segment of each node (outer segments first, inner ones overwrite).
  const segOf = new Map<Node, Segment>();
  const index = new Map<Node, number>();
  for (const s of [...active].sort((a, b) => b.end - b.start - (a.end - a.start))) {
    for (let i = s.start; i < s.end; i++) {
      segOf.set(g.nodes[i]!, s);
      index.set(g.nodes[i]!, i);
    }
  }
  const inside = (s: Segment, t: Tensor) => {
    const i = t.node ? index.get(t.node) : undefined;
    return i !== undefined && i >= s.start && i < s.end;
  };
  const copies = new Map<Segment, { tensors: Map<Tensor, Tensor>; nodes: Map<Node, Node> }>();
  /** `t` as the copy of segment s (and of the segments around it) computes it. */
  const view = (s: Segment | undefined, t: Tensor): Tensor => {
    for (; s; s = activeParent(s)) if (inside(s, t)) return copies.get(s)!.tensors.get(t)!;
    return t;
  };
  const materialize = (s: Segment) => {
    if (copies.has(s)) return;
    const parent = activeParent(s);
    if (parent) materialize(parent);
    const tensors = new Map<Tensor, Tensor>();
    const nodes = new Map<Node, Node>();
    copies.set(s, { tensors, nodes });
    const last = lastGrad();
    const zero = last ? O.mul(O.slice(O.reshape(last, [-1]), [0], [1], [0]), 0) : null;
    const delayed = new Map<Tensor, Tensor>();
    const delay = (t: Tensor): Tensor => {
      if (!zero || t.leaf || !isFloat(t)) return t;
      let d = delayed.get(t);
      if (!d) delayed.set(t, (d = O.add(t, zero.dtype === t.dtype ? zero : O.cast(zero, t.dtype))));
      return d;
    };
    for (let i = s.start; i < s.end; i++) {
      const n = g.nodes[i]!;
      const inputs = n.inputs.map((x) => (!x ? null : inside(s, x) ? tensors.get(x)! : delay(view(parent, x))));
      const outs = g.addNode(n.op, inputs, { ...n.attrs }, n.outputs.map((o) => ({ shape: o.shape, dtype: o.dtype })));
      nodes.set(n, outs[0]!.node!);
      n.outputs.forEach((o, k) => tensors.set(o, outs[k]!));
    }
  };
  return (n) => {
    const s = segOf.get(n);
    if (!s) return n;
    materialize(s);
    return copies.get(s)!.nodes.get(n)!;
  };
}

export { Tensor };
