// Memory of one compiled graph, from shapes alone (no weights, no session): what ONNX Runtime holds
// for it and the peak of its intermediate tensors during one run. lib/train/plan.ts adds the host
// side of a training step (weights fed from JS, AdamW moments, gradient copies) and the runtime.
//
// Model of ONNX Runtime's CPU execution (1.30, graph optimization "all", static shapes):
// - Initializers after constant folding: a node whose inputs are all initializers (frozen weights,
//   constants, or outputs of such nodes) runs once at session creation and its outputs become
//   initializers; an initializer left without a consumer is dropped. So a frozen weight read in
//   float16 and Cast to float32 is held as float32, and a weight that the backward pass transposes
//   is held twice (itself for the forward, its transpose for the backward).
// - Intermediate tensors are allocated when their node runs and freed after their last consumer
//   (ORT's allocation planner does exactly this liveness over its execution order, which for our
//   graphs is the lowered topological order). Graph outputs live until the run returns.
// - Reshape / Flatten / Squeeze / Unsqueeze / Identity alias their input (no new buffer).
// - Elementwise ops may write in place into an input of the same size whose last use they are.
// - Fed inputs are the caller's arrays (the Node binding wraps them, no copy).

import { type DType, type Node, type Tensor, topoSort } from "./graph.ts";
import { product } from "./shape.ts";

/** Bytes of one element as ONNX Runtime stores it. */
export const DTYPE_BYTES: Record<DType, number> = { float32: 4, float16: 2, bfloat16: 2, int64: 8, int32: 4, bool: 1, uint8: 1 };

export const sizeOf = (t: { shape: readonly number[]; dtype: DType }): number => product(t.shape) * DTYPE_BYTES[t.dtype];

/** Ops whose output is a view of their first input in ORT (kernel Alias(0, 0)). */
const ALIAS = new Set(["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"]);
/** Ops that ORT's planner may run in place (kernel MayInplace on an input of equal size). */
const IN_PLACE = new Set([
  "Add", "Sub", "Mul", "Div", "Neg", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Abs", "Erf",
  "Reciprocal", "Clip", "LeakyRelu", "Softplus", "Where", "Pow", "Max", "Min", "Cast", "Sin", "Cos",
]);
/** Kernels that keep their own pre-packed copy of a constant weight. */
const PACKS = new Set(["MatMul", "Gemm", "Conv", "ConvTranspose"]);
/** Ops ONNX Runtime never constant-folds (randomness). */
const NO_FOLD = new Set(["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"]);

export interface GraphMemory {
  /** Nodes executed per run (after constant folding). */
  nodes: number;
  /** Initializers ORT holds after constant folding, in bytes (frozen weights, folded transposes and casts, constants). */
  initializerBytes: number;
  /** Extra copies of weights that several kernels pre-pack (a weight read by forward and backward). */
  packedBytes: number;
  /** Of those: frozen weights read from files (external data) as they are stored, before folding. */
  externalBytes: number;
  /** Fed inputs: trainable parameters, and the rest (batch, maps, reference predictions). */
  trainableInputBytes: number;
  otherInputBytes: number;
  /** Graph outputs (gradients, loss, logs, predictions): ORT's buffers, copied into JS arrays by the binding. */
  outputBytes: number;
  /** Peak bytes of intermediate tensors (graph outputs included) during a run, and where it is reached. */
  peakActivationBytes: number;
  peakAt: { index: number; op: string };
  /** Size of ORT's memory-pattern block (best-fit offsets over the same lifetimes), >= the peak. */
  patternBytes: number;
  /** Bytes a run allocates in all (no reuse): how much liveness saves. */
  totalActivationBytes: number;
}

export interface MemoryOptions {
  /** Stored dtypes of frozen weights whose Cast is not folded (session.ts keepHalfWeights: cuda fp16/bf16, webgpu fp16). */
  keepHalfWeights?: readonly DType[];
  /**
   * Bytes of every floating-point tensor (2: a graph computing in float16 / bfloat16). Default:
   * each tensor's own dtype.
   */
  floatBytes?: number;
  /**
   * Keep every intermediate tensor until the run ends (no freeing): the upper bound a runtime
   * without a liveness planner would need. For tests that the liveness analysis matters.
   */
  neverFree?: boolean;
}

const isInitializer = (t: Tensor) => t.leaf?.kind === "constant" || t.leaf?.kind === "external";

/** The memory of the graph that computes `outputs` (as lib/graph/lower.ts lowers it). */
export function graphMemory(outputs: Record<string, Tensor>, opts: MemoryOptions = {}): GraphMemory {
  const fb = opts.floatBytes;
  const tensorBytes = (t: Tensor) => (fb && (t.dtype === "float32" || t.dtype === "float16" || t.dtype === "bfloat16") ? product(t.shape) * fb : sizeOf(t));
  const outs = Object.values(outputs);
  const order = topoSort(outs);

  // ---- constant folding: nodes computable at session creation
  const folded = new Set<Node>();
  const constant = (t: Tensor | null) => !t || isInitializer(t) || (t.node !== undefined && folded.has(t.node));
  // On a GPU provider session.ts keeps half-precision frozen weights unfolded (listed as never-fed
  // inputs): their Cast runs at each use, and the weight stays in its stored dtype.
  const keptHalf = (n: Node) => n.op === "Cast" && n.inputs[0]?.leaf?.kind === "external" && !!opts.keepHalfWeights?.includes(n.inputs[0].dtype);
  for (const n of order) if (!NO_FOLD.has(n.op) && !keptHalf(n) && n.inputs.every(constant)) folded.add(n);
  const run = order.filter((n) => !folded.has(n));

  // Initializers still used by a node that runs (or requested as an output).
  const inits = new Set<Tensor>();
  const inputs = new Set<Tensor>();
  for (const n of run) {
    for (const x of n.inputs) {
      if (!x) continue;
      if (constant(x)) inits.add(x);
      else if (x.leaf) inputs.add(x);
    }
  }
  for (const t of outs) {
    if (constant(t)) inits.add(t);
    else if (t.leaf) inputs.add(t);
  }
  let initializerBytes = 0, externalBytes = 0, packedBytes = 0;
  for (const t of inits) initializerBytes += tensorBytes(t);
  // Weights of matrix and convolution kernels: ORT pre-packs a constant B of MatMul / Gemm and
  // reorders a Conv's weights (NCHWc) into a copy per consuming kernel; the original is released
  // only when no other node reads it. So a weight that the backward pass reads again is held twice.
  const uses = new Map<Tensor, number>();
  for (const n of run) {
    if (!PACKS.has(n.op)) continue;
    for (const x of new Set(n.inputs)) if (x && constant(x) && x.rank >= 2) uses.set(x, (uses.get(x) ?? 0) + 1);
  }
  for (const [t, k] of uses) if (k > 1) packedBytes += (k - 1) * tensorBytes(t);
  const leaves = new Set<Tensor>();
  for (const n of order) for (const x of n.inputs) if (x?.leaf) leaves.add(x);
  for (const t of leaves) if (t.leaf?.kind === "external") externalBytes += fb ? tensorBytes(t) : t.leaf.byteLength;
  let trainableInputBytes = 0, otherInputBytes = 0;
  for (const t of inputs) (t.trainable ? (trainableInputBytes += tensorBytes(t)) : (otherInputBytes += tensorBytes(t)));

  // ---- buffers. Pass 1: alias groups (a view shares its input's buffer); a group is needed until
  // the last consumer of any of its members (graph outputs: until the run ends).
  const N = run.length;
  const computed = (t: Tensor | null | undefined): t is Tensor => !!t && !t.leaf && !constant(t);
  const root = new Map<Tensor, Tensor>();
  const rootOf = (t: Tensor) => root.get(t) ?? t;
  const groupLast = new Map<Tensor, number>();
  const need = (t: Tensor, i: number) => {
    const r = rootOf(t);
    groupLast.set(r, Math.max(groupLast.get(r) ?? i, i));
  };
  run.forEach((n, i) => {
    for (const x of n.inputs) if (computed(x)) need(x, i);
    n.outputs.forEach((y, k) => {
      if (k === 0 && ALIAS.has(n.op) && computed(n.inputs[0])) root.set(y, rootOf(n.inputs[0]!));
      else need(y, i);
    });
  });
  for (const t of outs) if (computed(t)) need(t, N);
  // Pass 2: physical buffers. An in-place op writes into an input's buffer when that buffer is not
  // needed after this node and has the output's size.
  const phys = new Map<Tensor, Tensor>(); // group root -> buffer
  const physOf = (r: Tensor) => phys.get(r) ?? r;
  const last = new Map<Tensor, number>(); // buffer -> last node that needs it
  const start = new Map<Tensor, number>();
  run.forEach((n, i) => {
    n.outputs.forEach((y, k) => {
      if (root.has(y)) return; // a view
      if (k === 0 && IN_PLACE.has(n.op) && !opts.neverFree) {
        const reuse = n.inputs.find((x) => computed(x) && last.get(physOf(rootOf(x))) === i && tensorBytes(x) === tensorBytes(y));
        if (reuse) {
          const b = physOf(rootOf(reuse));
          phys.set(y, b);
          last.set(b, Math.max(i, groupLast.get(y) ?? i));
          return;
        }
      }
      start.set(y, i);
      last.set(y, groupLast.get(y) ?? i);
    });
  });

  // ---- sweep: +bytes when a buffer is made, -bytes after its last use
  const delta = new Float64Array(N + 2);
  let total = 0;
  for (const [b, s] of start) {
    const sz = tensorBytes(b);
    total += sz;
    delta[s] += sz;
    const end = opts.neverFree ? N : last.get(b)!;
    delta[end + 1] -= sz;
  }
  let live = 0, peak = 0, peakIndex = 0;
  for (let i = 0; i <= N; i++) {
    live += delta[i]!;
    if (live > peak) {
      peak = live;
      peakIndex = i;
    }
  }
  // ---- ORT's memory pattern: from the second run on, one block holds every intermediate at an
  // offset planned by best fit over the gaps between live tensors (MemPatternPlanner); its size is
  // at least the liveness peak (gaps that nothing fits stay empty).
  const allocAt: Tensor[][] = Array.from({ length: N + 1 }, () => []);
  const freeAt: Tensor[][] = Array.from({ length: N + 1 }, () => []);
  for (const [b, s] of start) {
    allocAt[s]!.push(b);
    freeAt[opts.neverFree ? N : last.get(b)!]!.push(b);
  }
  const blocks: { t: Tensor; off: number; size: number }[] = []; // sorted by offset
  let patternBytes = 0;
  const align = (x: number) => Math.ceil(x / 64) * 64;
  for (let i = 0; i <= N; i++) {
    for (const t of allocAt[i]!) {
      const size = align(tensorBytes(t));
      let best = -1, bestGap = Infinity, prevEnd = 0;
      for (let k = 0; k <= blocks.length; k++) {
        const gapEnd = k < blocks.length ? blocks[k]!.off : Infinity;
        const gap = gapEnd - prevEnd;
        if (gap >= size && gap < bestGap && k < blocks.length) {
          best = k;
          bestGap = gap;
        }
        if (k < blocks.length) prevEnd = Math.max(prevEnd, blocks[k]!.off + blocks[k]!.size);
      }
      let off: number, at: number;
      if (best >= 0) {
        off = best === 0 ? 0 : blocks.slice(0, best).reduce((e, b) => Math.max(e, b.off + b.size), 0);
        at = best;
      } else {
        off = prevEnd;
        at = blocks.length;
      }
      blocks.splice(at, 0, { t, off, size });
      patternBytes = Math.max(patternBytes, off + size);
    }
    for (const t of freeAt[i]!) {
      const k = blocks.findIndex((b) => b.t === t);
      if (k >= 0) blocks.splice(k, 1);
    }
  }
  let outputBytes = 0;
  for (const t of new Set(outs)) outputBytes += tensorBytes(t);
  return {
    nodes: N, initializerBytes, packedBytes, externalBytes, trainableInputBytes, otherInputBytes, outputBytes,
    peakActivationBytes: peak, patternBytes, peakAt: { index: peakIndex, op: run[peakIndex]?.op ?? "(end)" }, totalActivationBytes: total,
  };
}
