// Lowering rules for onnxruntime-node 1.30's WebGPU provider: ops it lacks or computes wrongly,
// written in other standard ops. Each rule was found by running every op and gradient test of
// tests/graph on `webgpu` (Mesa lavapipe) against `cpu`, and is checked both ways in
// tests/graph/webgpu.test.ts: the rewritten graph equals the original on `cpu` (everywhere), and
// equals `cpu` on `webgpu` (where an adapter exists).
//
//   LogSoftmax          no WebGPU kernel: ORT runs it on the CPU, copying across every run.
//   Conv, zero leading pads and non-zero trailing ones, with a 1x1 kernel or one as large as the input
//                       wrong values (the provider's MatMul shortcut checks only the leading pads):
//                       the weight gradient of any conv with TF "same" padding (MobileNetV2's
//                       stride-2 depthwise convs, pads [0, 0, 1, 1]).
//   ConvTranspose, group > 1, one output channel per group, several input channels per group
//                       wrong values (the input gradient of a grouped conv with a channel multiplier).
//   Pow, an exponent tensor smaller than the output
//                       fails to run ("raw_hash_map<>::at").
//   Slice, a negative step
//                       wrong values (a full reversal happens to come out right).
//   MaxPool's Indices output (what its gradient uses)
//                       refused at run time ("The Indices output is not supported yet").
// Left to ORT's CPU fallback (correct, small): int64 arithmetic, Sign, Or, bfloat16 Casts.

import { type DType, type Node, type Tensor, int, ints } from "./graph.ts";
import { onnxTypeCode } from "./ops.ts";
import type { Emit } from "./lower.ts";
import { sameShape } from "./shape.ts";

/** float32 or float16 (--precision fp16 computes these nodes in float16: lib/graph/precision.ts). */
const isFloat = (t: Tensor) => t.dtype === "float32" || t.dtype === "float16";
/** A float constant in `dtype`: float32 values, cast in the graph when the node computes in float16 (ORT folds the Cast). */
function floatConstant(e: Emit, data: Float32Array, shape: readonly number[], dtype: DType): string {
  const c = e.constant(data, shape, "float32");
  if (dtype === "float32") return c;
  const out = e.temp();
  e.node("Cast", [c], [out], { to: int(onnxTypeCode(dtype)) });
  return out;
}
const attrInts = (n: Node, k: string): number[] | undefined => (n.attrs[k]?.kind === "ints" ? (n.attrs[k].value as number[]) : undefined);
const i64 = (xs: readonly number[]) => BigInt64Array.from(xs.map((v) => BigInt(v)));
const constInts = (t: Tensor | null | undefined): number[] | undefined =>
  t?.leaf?.kind === "constant" && t.leaf.data instanceof BigInt64Array ? Array.from(t.leaf.data, Number) : undefined;

/** log_softmax(x) = (x - max) - log(sum(exp(x - max))), along the node's axis. */
function logSoftmax(n: Node, e: Emit): boolean {
  const x = n.inputs[0]!;
  const axis = n.attrs.axis?.kind === "int" ? (n.attrs.axis.value as number) : -1;
  const a = axis < 0 ? axis + x.rank : axis;
  const [m, d, ex, s, l] = [e.temp(), e.temp(), e.temp(), e.temp(), e.temp()];
  e.node("ReduceMax", [e.name(x)], [m], { axes: ints([a]), keepdims: int(1) });
  e.node("Sub", [e.name(x), m], [d]);
  e.node("Exp", [d], [ex]);
  e.node("ReduceSum", [ex, e.constant(i64([a]), [1], "int64")], [s], { keepdims: int(1) });
  e.node("Log", [s], [l]);
  e.node("Sub", [d, l], [e.name(n.outputs[0]!)]);
  return true;
}

/**
 * Conv whose shape takes the provider's MatMul shortcut (a 1x1 kernel at stride 1, or a kernel as
 * large as the input) with zero leading pads but trailing ones: the shortcut drops the trailing
 * pads. The same conv with one more stride of leading pad on the first spatial axis computes one
 * extra leading output row and takes the general path; a Slice drops that row. (An explicit Pad
 * would not do: ORT's PadFusion folds it back into the conv's pads.)
 */
function convTrailingPads(n: Node, e: Emit): boolean {
  const pads = attrInts(n, "pads"), strides = attrInts(n, "strides"), dil = attrInts(n, "dilations"), kernel = attrInts(n, "kernel_shape");
  const x = n.inputs[0]!;
  if (!pads || !strides || !dil || !kernel) return false;
  const sp = kernel.length;
  const leading = pads.slice(0, sp), trailing = pads.slice(sp);
  if (leading.some((p) => p !== 0) || trailing.every((p) => p === 0)) return false;
  const pointwise = kernel.every((k) => k === 1) && strides.every((s) => s === 1) && dil.every((d) => d === 1);
  const whole = kernel.every((k, i) => k === x.shape[2 + i]);
  if (!pointwise && !whole) return false;
  const wide = e.temp();
  const padded = [...pads];
  padded[0] = strides[0]!;
  e.node("Conv", n.inputs.map((t) => (t ? e.name(t) : "")), [wide], { ...n.attrs, pads: ints(padded) });
  const out = n.outputs[0]!;
  const c = (v: number) => e.constant(i64([v]), [1], "int64");
  e.node("Slice", [wide, c(1), c(out.shape[2]! + 1), c(2), c(1)], [e.name(out)]);
  return true;
}

/**
 * Grouped ConvTranspose with one output channel per group: the same as an ungrouped one whose
 * weight [C, groups, *k] is zero outside each input channel's own group (block diagonal).
 */
function convTransposeGroups(n: Node, e: Emit): boolean {
  const group = n.attrs.group?.kind === "int" ? (n.attrs.group.value as number) : 1;
  const [x, w, b] = n.inputs as [Tensor, Tensor, Tensor | undefined];
  const C = x.shape[1]!;
  if (group === 1 || w.shape[1] !== 1 || C / group === 1 || !isFloat(w)) return false;
  const per = C / group;
  const mask = new Float32Array(C * group);
  for (let c = 0; c < C; c++) mask[c * group + Math.floor(c / per)] = 1;
  const full = e.temp();
  e.node("Mul", [e.name(w), floatConstant(e, mask, [C, group, ...w.shape.slice(2).map(() => 1)], w.dtype)], [full]);
  e.node("ConvTranspose", [e.name(x), full, ...(b ? [e.name(b)] : [])], [e.name(n.outputs[0]!)], { ...n.attrs, group: int(1) });
  return true;
}

/** Pow whose exponent broadcasts: the exponent expanded to the output's shape first. */
function powBroadcastExponent(n: Node, e: Emit): boolean {
  const [x, p] = n.inputs as [Tensor, Tensor];
  const out = n.outputs[0]!;
  if (p.size === 1 || sameShape(p.shape, out.shape)) return false;
  const full = e.temp();
  e.node("Expand", [e.name(p), e.constant(i64(out.shape), [out.rank], "int64")], [full]);
  e.node("Pow", [e.name(x), full], [e.name(out)]);
  return true;
}

/** Slice with a negative step: one Gather of the explicit indices per sliced axis. */
function sliceNegativeStep(n: Node, e: Emit): boolean {
  const [x, s, en, ax, st] = n.inputs;
  const starts = constInts(s), ends = constInts(en);
  const axes = ax ? constInts(ax) : starts?.map((_, i) => i);
  const steps = st ? constInts(st) : starts?.map(() => 1);
  if (!starts || !ends || !axes || !steps || steps.every((v) => v > 0)) return false;
  let cur = e.name(x!);
  axes.forEach((axis, i) => {
    const a = axis < 0 ? axis + x!.rank : axis;
    const dim = x!.shape[a]!;
    const step = steps[i]!;
    // ONNX's clamping (ops.ts slice computes the same output shape).
    const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v < 0 ? v + dim : v, lo), hi);
    const from = step > 0 ? clamp(starts[i]!, 0, dim) : clamp(starts[i]!, 0, dim - 1);
    const to = step > 0 ? clamp(ends[i]!, 0, dim) : clamp(ends[i]!, -1, dim - 1);
    const idx: number[] = [];
    for (let k = from; step > 0 ? k < to : k > to; k += step) idx.push(k);
    const next = i === axes.length - 1 ? e.name(n.outputs[0]!) : e.temp();
    e.node("Gather", [cur, e.constant(i64(idx), [idx.length], "int64")], [next], { axis: int(a) });
    cur = next;
  });
  return true;
}

/**
 * MaxPool with its Indices output (what its gradient scatters through), which the provider
 * refuses: every window offset is a strided Slice of the input padded with -inf, ArgMax over the
 * offsets picks the first maximum in row-major window order (as ORT's CPU kernel does), and the
 * flat input index ((n C + c) H + h) W + w is built from it. The values come from MaxPool itself.
 */
function maxPoolIndices(n: Node, e: Emit): boolean {
  if (n.outputs.length !== 2) return false;
  const x = n.inputs[0]!;
  const [y, indices] = n.outputs as [Tensor, Tensor];
  const kernel = attrInts(n, "kernel_shape")!;
  const sp = kernel.length;
  const strides = attrInts(n, "strides") ?? kernel.map(() => 1);
  const pads = attrInts(n, "pads") ?? [...kernel, ...kernel].map(() => 0);
  const dil = attrInts(n, "dilations");
  const ceil = n.attrs.ceil_mode?.kind === "int" && n.attrs.ceil_mode.value !== 0;
  const storage = n.attrs.storage_order?.kind === "int" && n.attrs.storage_order.value !== 0;
  if ((dil && dil.some((d) => d !== 1)) || ceil || storage || !isFloat(x)) return false;
  const { storage_order: _s, ...attrs } = n.attrs;
  e.node("MaxPool", [e.name(x)], [e.name(y)], attrs);
  const [N, C] = x.shape as [number, number];
  const inSp = x.shape.slice(2), outSp = y.shape.slice(2);
  let xp = e.name(x);
  if (pads.some((p) => p !== 0)) {
    xp = e.temp();
    e.node("Pad", [e.name(x), e.constant(i64([0, 0, ...pads.slice(0, sp), 0, 0, ...pads.slice(sp)]), [2 * (sp + 2)], "int64"), floatConstant(e, Float32Array.of(-Infinity), [], x.dtype)], [xp]);
  }
  // Window offsets in row-major order; each one's strided view [1, N, C, *out].
  const offsets: number[][] = [[]];
  for (const k of kernel) offsets.splice(0, offsets.length, ...offsets.flatMap((o) => Array.from({ length: k }, (_, i) => [...o, i])));
  const axes = e.constant(i64(kernel.map((_, i) => 2 + i)), [sp], "int64");
  const steps = e.constant(i64(strides), [sp], "int64");
  const zero = e.constant(i64([0]), [1], "int64");
  const views = offsets.map((o) => {
    const v = e.temp(), u = e.temp();
    const ends = o.map((d, i) => d + strides[i]! * (outSp[i]! - 1) + 1);
    e.node("Slice", [xp, e.constant(i64(o), [sp], "int64"), e.constant(i64(ends), [sp], "int64"), axes, steps], [v]);
    e.node("Unsqueeze", [v, zero], [u]);
    return u;
  });
  const stacked = e.temp(), which = e.temp(), offset = e.temp();
  e.node("Concat", views, [stacked], { axis: int(0) });
  e.node("ArgMax", [stacked], [which], { axis: int(0), keepdims: int(0) });
  // Flat input index = the window's origin in the unpadded input + the chosen offset's displacement.
  const strideOf = inSp.map((_, i) => inSp.slice(i + 1).reduce((a, b) => a * b, 1));
  const displacement = offsets.map((o) => o.reduce((a, d, i) => a + d * strideOf[i]!, 0));
  e.node("Gather", [e.constant(i64(displacement), [displacement.length], "int64"), which], [offset], { axis: int(0) });
  const plane = inSp.reduce((a, b) => a * b, 1);
  const origin: number[] = [];
  const outSize = outSp.reduce((a, b) => a * b, 1);
  for (let nc = 0; nc < N * C; nc++) {
    for (let j = 0; j < outSize; j++) {
      let rest = j, flat = nc * plane;
      for (let i = sp - 1; i >= 0; i--) {
        const pos = rest % outSp[i]!;
        rest = Math.floor(rest / outSp[i]!);
        flat += (pos * strides[i]! - pads[i]!) * strideOf[i]!;
      }
      origin.push(flat);
    }
  }
  e.node("Add", [offset, e.constant(i64(origin), y.shape, "int64")], [e.name(indices)]);
  return true;
}

const RULES: Record<string, (n: Node, e: Emit) => boolean> = {
  LogSoftmax: logSoftmax,
  Conv: convTrailingPads,
  ConvTranspose: convTransposeGroups,
  Pow: powBroadcastExponent,
  Slice: sliceNegativeStep,
  MaxPool: maxPoolIndices,
};

/** The WebGPU provider's lowering rules (see the top of this file). */
export function webgpuRewrite(n: Node, e: Emit): boolean {
  return RULES[n.op]?.(n, e) ?? false;
}

/** Op types that webgpuRewrite may replace (for tests and docs). */
export const WEBGPU_REWRITTEN_OPS = Object.keys(RULES);
