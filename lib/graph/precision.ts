// Mixed precision: `--precision fp32|fp16|bf16` picks the dtype that a graph computes in. Models
// are written once, in float32; `autocast` rewrites a built graph (forward, and backward if
// autodiff appended one) before lowering, the way PyTorch's autocast picks a dtype per op:
//
//   the matmul family (MatMul, Gemm, Conv, ConvTranspose)   -> the low dtype (fp16 / bf16);
//   numerically sensitive ops: Softmax, LogSoftmax, the normalizations (their statistics),
//     reductions (sums and means: the losses, the softmax's backward), Exp, Log, Pow,
//     Reciprocal, Sqrt, Softplus                             -> float32;
//   squares (Mul(x, x))                                      -> float32, like Pow;
//   everything else (elementwise, shape ops)                 -> the low dtype when every float input
//     is already low (or a constant), else float32 (a fed input or a float32 result is involved).
//     Decided from a node's inputs only, so a forward computes alike in every graph it is part of.
//
// Casts go in where a tensor is needed in the other dtype, once per tensor. The graph's edge stays
// float32: fed inputs (images, noise, trainable master weights) are cast inside the graph, and every
// float32 output (predictions, the loss, gradients for the optimizer) is cast back, so callers and
// the host-side AdamW never see a half-precision array. (onnxruntime-node under Bun cannot take a
// float16 feed anyway: Bun has Float16Array, onnxruntime-common turns a Uint16Array feed into one,
// and the binding then reads 0 bytes from it.) A frozen weight stored in the low dtype (an fp16
// checkpoint, read in place as external data; lib/nn/params.ts wraps it in a Cast to float32)
// feeds the low-dtype ops directly: the Cast disappears.
//
// bf16 computes only MatMul and Gemm in bf16; everything else, Conv included, stays float32.
// ONNX opset 17 (ours) does not allow bf16 for Conv, ConvTranspose or the normalizations (the
// model is refused as invalid), and onnxruntime's CUDA provider registers Conv for float, double and
// MLFloat16 only (onnxruntime/core/providers/cuda/cuda_execution_provider.cc, the
// `kOnnxDomain, 11, MLFloat16, Conv` group; MatMul-13 and Gemm-13 have BFloat16 kernels).
//
// What each provider does with it, measured here on onnxruntime-node 1.30 (tests/graph/precision.test.ts):
//   cpu     fp16 runs, but x86's CPU provider has no fp16 MatMul, Conv or InstanceNormalization:
//           ORT inserts Casts and computes them in float32 (fp16 then only rounds activations).
//           bf16 fails ("Could not find an implementation for MatMul(13)"): refused.
//   webgpu  fp16 runs on the GPU (lavapipe has shader-f16). bf16: no kernels ("Provider type for
//           MatMul node ... is not set"): refused.
//   cuda    fp16 and bf16 (MatMul/Gemm), from ORT's kernel registrations; not run here (no GPU).
// No loss scaling: gradients reach the trainable weights through fp16 matmuls unscaled (PyTorch's
// GradScaler has no counterpart yet); bf16's range does not need it.

import { type DType, Graph, type Node, type Tensor, topoSort } from "./graph.ts";

const topoNodes = (outputs: Record<string, Tensor>): Node[] => topoSort(Object.values(outputs));
import { onnxTypeCode } from "./ops.ts";
import { UserError } from "../io/errors.ts";

export type Precision = "fp32" | "fp16" | "bf16";
export const PRECISIONS: readonly Precision[] = ["fp32", "fp16", "bf16"];

export const COMPUTE_DTYPE: Record<Precision, DType> = { fp32: "float32", fp16: "float16", bf16: "bfloat16" };

/** Ops that compute in the low dtype. */
export const LOW_OPS: Record<Exclude<Precision, "fp32">, ReadonlySet<string>> = {
  fp16: new Set(["MatMul", "Gemm", "Conv", "ConvTranspose"]),
  bf16: new Set(["MatMul", "Gemm"]),
};

/** Ops that always compute in float32 (their statistics, sums and exponentials need the range and mantissa). */
export const FLOAT32_OPS: ReadonlySet<string> = new Set([
  "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization", "BatchNormalization",
  "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
  "Exp", "Log", "Pow", "Reciprocal", "Sqrt", "Softplus",
]);

/**
 * Whether `device` computes in `precision`: null when it does, else why not (a refusal the CLI
 * prints). `note` is a line worth printing when it runs but not as one would expect.
 */
export function precisionSupport(device: string, precision: Precision): { problem: string | null; note?: string } {
  if (precision === "fp32") return { problem: null };
  if (precision === "bf16" && device !== "cuda") {
    return { problem: `--precision bf16 is not supported on ${device}: onnxruntime-node's ${device === "cpu" ? "CPU" : "WebGPU"} provider has no bfloat16 MatMul or elementwise kernels (use fp16${device === "cpu" ? " or fp32" : ""}, or --device cuda)` };
  }
  if (precision === "fp16" && device === "cpu") {
    return { problem: null, note: "--precision fp16 on cpu: the CPU provider has no fp16 MatMul/Conv/InstanceNormalization kernels here, so ONNX Runtime computes them in float32 between Casts (fp16 only rounds activations; slower than fp32: use it to check parity)" };
  }
  return { problem: null };
}

let current: Precision = "fp32";

/** The precision compile() uses when its options name none. */
export const currentPrecision = (): Precision => current;

/**
 * Sets the precision of every graph compiled from now on (a script's --precision), after checking
 * that `device` supports it: an unsupported pair is a UserError that says what to use instead, and
 * a pair that runs in a way one may not expect prints its note. Returns the function that restores
 * the previous setting (a script's run() calls it when it ends, so a notebook's next call starts
 * from fp32).
 */
export function usePrecision(precision: Precision, device: string, log: (line: string) => void = console.error): () => void {
  const { problem, note } = precisionSupport(device, precision);
  if (problem) throw new UserError(problem);
  if (note) log(note);
  const before = current;
  current = precision;
  return () => {
    current = before;
  };
}

/**
 * Runs `fn` (a script's step) with `precision` set for every graph it compiles, then restores the
 * previous setting. Checks the pair first: bf16 on cpu is refused before any work starts. (One
 * setting per process: two steps that overlap in one process must use the same precision.)
 */
export async function withPrecision<T>(precision: Precision, device: string, fn: () => Promise<T>, log?: (line: string) => void): Promise<T> {
  const restore = usePrecision(precision, device, log);
  try {
    return await fn();
  } finally {
    restore();
  }
}

/** The flag, for the scripts' parseArgs options and help. */
export const PRECISION_FLAG = { precision: { type: "string", default: "fp32" } } as const;
export const PRECISION_HELP = `  --precision <p>         compute dtype: fp32 | fp16 (matmuls and convs in fp16; softmax, norms,
                          reductions and the loss in fp32; fp32 weights and gradients at the edges)
                          | bf16 (MatMul/Gemm in bf16; cuda only) (default: fp32; README "Precision")`;

const autoName = /^_\d+$/;
const cached = new WeakMap<Tensor, Map<string, Record<string, Tensor>>>();

/**
 * The graph for `outputs` rewritten to compute in `precision` (a new Graph; `outputs`' graph is
 * not changed). Fed inputs keep their names, dtypes and trainable flags; outputs keep their dtypes.
 */
export function autocast(outputs: Record<string, Tensor>, precision: Precision): Record<string, Tensor> {
  if (precision === "fp32") return outputs;
  const entries = Object.entries(outputs);
  const first = entries[0]?.[1];
  if (!first) return outputs;
  const key = `${precision}|${entries.map(([k, t]) => `${k}=${t.id}`).join(",")}`;
  const hit = cached.get(first)?.get(key);
  if (hit) return hit;

  const low = COMPUTE_DTYPE[precision];
  const lowOps = LOW_OPS[precision];
  const g = new Graph();
  // Every float32 tensor of the original has up to two versions in the new graph.
  const f32 = new Map<Tensor, Tensor>();
  const lo = new Map<Tensor, Tensor>();
  /** Tensors whose low version is as cheap as their float32 one (constants: ORT folds the Cast). */
  const flexible = new Set<Tensor>();
  const other = new Map<Tensor, Tensor>(); // non-float32 tensors: one version

  const cast = (x: Tensor, to: DType) => g.addNode("Cast", [x], { to: { kind: "int", value: onnxTypeCode(to) } }, [{ shape: x.shape, dtype: to }])[0]!;

  const leaf = (t: Tensor): Tensor => {
    const l = t.leaf!;
    const name = autoName.test(t.name) ? undefined : t.name;
    let n: Tensor;
    if (l.kind === "input") {
      n = g.input(t.name, t.shape, t.dtype);
      n.trainable = t.trainable;
    } else if (l.kind === "constant") {
      n = g.constant(l.data, t.shape, t.dtype, name);
    } else {
      n = g.external(t.name, t.shape, l.file, l.byteOffset, l.byteLength, l.fileDType);
    }
    if (t.dtype === "float32") {
      f32.set(t, n);
      if (l.kind === "constant") flexible.add(t);
    } else if (t.dtype === low) {
      // A stored half-precision leaf (a frozen fp16 weight) is its own low version.
      other.set(t, n);
    } else other.set(t, n);
    return n;
  };

  const asF32 = (t: Tensor): Tensor => {
    let v = f32.get(t);
    if (!v) {
      v = cast(lo.get(t)!, "float32");
      f32.set(t, v);
    }
    return v;
  };
  const asLow = (t: Tensor): Tensor => {
    let v = lo.get(t);
    if (!v) {
      v = cast(f32.get(t)!, low);
      lo.set(t, v);
    }
    return v;
  };
  /** The new tensor for an input of a node that does not care about float precision (Cast, shapes). */
  const any = (t: Tensor): Tensor => other.get(t) ?? f32.get(t) ?? lo.get(t)!;

  for (const t of topoLeaves(outputs)) leaf(t);

  const nodes = topoNodes(outputs);
  for (const n of nodes) {
    const floats = n.inputs.filter((x): x is Tensor => !!x && x.dtype === "float32");
    let mode: "low" | "f32" | "pass";
    if (n.op === "Cast") mode = "pass";
    else if (!floats.length && !n.outputs.some((o) => o.dtype === "float32")) mode = "pass";
    else if (lowOps.has(n.op)) mode = "low";
    else if (FLOAT32_OPS.has(n.op) || precision === "bf16") mode = "f32";
    else {
      // Promote: low only if every float input already has a low version (or is a constant) and
      // at least one is not a constant. The choice depends on a node's inputs only, never on its
      // consumers: the forward part of a training graph then computes exactly as the same forward
      // in an inference graph does (patch-dpo's frozen reference pass and the trained model's pass
      // must round alike, or beta multiplies the difference). A square (Mul(x, x), an AdamW's g * g)
      // is float32 like Pow: 1e-4 squared is below fp16's smallest value.
      const ready = floats.every((x) => lo.has(x) || flexible.has(x));
      const real = floats.some((x) => lo.has(x) && !flexible.has(x));
      const square = n.op === "Mul" && n.inputs[0] === n.inputs[1];
      mode = ready && real && !square ? "low" : "f32";
    }

    if (n.op === "Cast") {
      const x = n.inputs[0]!;
      const out = n.outputs[0]!;
      const to = out.dtype;
      if (to === "float32" && x.dtype === low) {
        // Cast(stored fp16 weight -> float32): its low version is the weight itself.
        lo.set(out, other.get(x)!);
        continue;
      }
      const src = x.dtype === "float32" ? (f32.get(x) ?? lo.get(x)!) : any(x);
      const y = src.dtype === to ? src : cast(src, to);
      if (to === "float32") f32.set(out, y);
      else if (to === low) other.set(out, y), lo.set(out, y);
      else other.set(out, y);
      continue;
    }

    const ins = n.inputs.map((x) => {
      if (!x) return null;
      if (x.dtype !== "float32") return any(x);
      if (mode === "low") return asLow(x);
      if (mode === "f32") return asF32(x);
      return any(x);
    });
    const outDType = (o: Tensor) => (o.dtype === "float32" && mode === "low" ? low : o.dtype);
    const outs = g.addNode(n.op, ins, n.attrs, n.outputs.map((o) => ({ shape: o.shape, dtype: outDType(o) })));
    n.outputs.forEach((o, i) => {
      const v = outs[i]!;
      if (o.dtype !== "float32") other.set(o, v);
      else if (v.dtype === "float32") f32.set(o, v);
      else lo.set(o, v);
    });
  }

  const result: Record<string, Tensor> = {};
  for (const [k, t] of entries) result[k] = t.dtype === "float32" ? asF32(t) : any(t);
  let m = cached.get(first);
  if (!m) cached.set(first, (m = new Map()));
  m.set(key, result);
  return result;
}

/** Leaves reached from `outputs`, in creation order (so fed inputs keep the original's order). */
function topoLeaves(outputs: Record<string, Tensor>): Tensor[] {
  const leaves = new Set<Tensor>();
  for (const n of topoNodes(outputs)) for (const x of n.inputs) if (x?.leaf) leaves.add(x);
  for (const t of Object.values(outputs)) if (t.leaf) leaves.add(t);
  return [...leaves].sort((a, b) => a.id - b.id);
}
