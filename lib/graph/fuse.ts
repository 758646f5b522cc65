// Contrib-op lowering for inference graphs: the builder's standard-op attention, recognised at
// lowering time and emitted as ONNX Runtime's fused `com.microsoft.MultiHeadAttention` (one kernel:
// no [B, H, Lq, Lk] score tensor written out and read back between MatMul, Softmax and MatMul).
//
// Only contrib ops that the CPU, CUDA and WebGPU providers all register are used:
//   MultiHeadAttention (float)  cpu:    onnxruntime/contrib_ops/cpu/cpu_contrib_kernels.cc
//                               cuda:   onnxruntime/contrib_ops/cuda/cuda_contrib_kernels.cc
//                               webgpu: onnxruntime/contrib_ops/webgpu/webgpu_contrib_kernels.cc
// The other candidates these three share: Gelu (and BiasGelu / FastGelu) ONNX Runtime's own
// optimizer already forms from our erf GELU (12 of 12 in ViT-S). SkipLayerNormalization (a
// residual Add + LayerNormalization in one kernel) was emitted from here and measured slower on
// the CPU than the two ops it replaces (Add + LayerNormalization + the residual Add over
// [8, 197, 384]: 15.1 vs 20.4 ms; [2, 4096, 320]: 141 vs 171 ms; 2 threads, load 3.7-4.1), so it
// is not used. None of them has a gradient kernel in the inference builds (GeluGrad and the like
// live only in ORT's training builds), so training graphs keep the standard ops.
//
// The standard-op graph stays the reference: tests/graph/fuse.test.ts checks every fused pattern
// against it (cpu, and webgpu where an adapter exists). Models need no change: the rule matches
// what `attention`, `splitHeads` and `mergeHeads` in ops.ts emit.
//
// Recognised (B batch, H heads, Lq/Lk lengths, d head size):
//   mergeHeads(attention(Q4, K4, V4))   Reshape(Transpose(MatMul(Softmax(MatMul(q * s, Transpose(k))), V4), [0,2,1,3]), [B, Lq, H*d])
//   attention(q3, k3, v3)               the same on rank-3 q, k, v (one head: the VAE's mid-block attention)
// where q and k may carry scalar multipliers (folded into `scale`), and Q4/K4/V4 come from
// splitHeads (Transpose(Reshape(x3, [B, L, H, d]), [0,2,1,3]); its input x3 is fed directly), from
// a packed projection (ViT's qkv: a Slice of it is fed), or from anything else of shape
// [B, H, L, d] (transposed back to [B, L, H*d] first).
// Not recognised, left in standard ops: attention with an additive mask (CLIP's causal text
// encoder), and any match whose intermediates other nodes also read (training graphs: the
// backward pass reads the softmax), which would compute attention twice.

import { type Node, type Tensor, float, int, ints } from "./graph.ts";
import type { Emit } from "./lower.ts";

export const MS_DOMAIN = "com.microsoft";

const constScalar = (t: Tensor | null | undefined): number | undefined => {
  const l = t?.leaf;
  if (l?.kind !== "constant" || !(l.data instanceof Float32Array) || l.data.length !== 1) return undefined;
  return l.data[0];
};
const perm = (n: Node | undefined): number[] | undefined => (n?.op === "Transpose" && n.attrs.perm?.kind === "ints" ? (n.attrs.perm.value as number[]) : undefined);
const same = (a: readonly number[] | undefined, b: readonly number[]) => !!a && a.length === b.length && a.every((v, i) => v === b[i]);

/** Strips scalar-constant multipliers: x * s1 * s2 -> (x, s1 * s2, [the products]). */
function unscale(t: Tensor): [Tensor, number, Tensor[]] {
  let s = 1;
  const chain: Tensor[] = [];
  for (;;) {
    const n = t.node;
    if (n?.op !== "Mul") return [t, s, chain];
    const [a, b] = n.inputs as [Tensor, Tensor];
    const cb = constScalar(b), ca = constScalar(a);
    chain.push(t);
    if (cb !== undefined && sameShapeAs(a, t)) { s *= cb; t = a; }
    else if (ca !== undefined && sameShapeAs(b, t)) { s *= ca; t = b; }
    else { chain.pop(); return [t, s, chain]; }
  }
}
const sameShapeAs = (a: Tensor, b: Tensor) => same(a.shape, b.shape);

/** The [B, L, H*d] tensor a [B, H, L, d] one was split from, if it came from splitHeads. */
function unsplit(t: Tensor): Tensor | undefined {
  const n = t.node;
  if (!same(perm(n), [0, 2, 1, 3])) return undefined;
  const r = n!.inputs[0]!;
  if (r.node?.op !== "Reshape") return undefined;
  const x = r.node.inputs[0]!;
  const [B, L, H, d] = r.shape as [number, number, number, number];
  return x.rank === 3 && same(x.shape, [B, L, H * d]) ? x : undefined;
}

/**
 * A [B, H, L, d] head tensor cut from a packed projection (ViT's fused qkv): Reshape(Split(
 * Transpose(Reshape(x3 [B, L, P*H*d], [B, L, P, H, d]), [2,0,3,1,4]), axis 0)[i]). Returns x3 and
 * the channel range [i*H*d, (i+1)*H*d) that holds this head tensor's [B, L, H*d].
 */
function unpack(t: Tensor): { src: Tensor; start: number; end: number } | undefined {
  const r = t.node;
  if (r?.op !== "Reshape") return undefined;
  const part = r.inputs[0]!;
  const sp = part.node;
  if (sp?.op !== "Split" || sp.attrs.axis?.kind !== "int" || sp.attrs.axis.value !== 0 || part.shape[0] !== 1) return undefined;
  const i = sp.outputs.indexOf(part);
  const tr = sp.inputs[0]!;
  if (!same(perm(tr.node), [2, 0, 3, 1, 4])) return undefined;
  const rs = tr.node!.inputs[0]!;
  if (rs.node?.op !== "Reshape") return undefined;
  const src = rs.node.inputs[0]!;
  const [B, L, P, H, d] = rs.shape as [number, number, number, number, number];
  if (src.rank !== 3 || !same(src.shape, [B, L, P * H * d]) || !same(t.shape, [B, H, L, d]) || sp.outputs.some((o) => o.shape[0] !== 1)) return undefined;
  // Split's outputs follow each other along axis 0, one per packed part.
  return { src, start: i * H * d, end: (i + 1) * H * d };
}

interface Match {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  heads: number;
  scale: number;
  /** Every intermediate tensor of the standard form (must be read only inside the pattern). */
  inner: Tensor[];
}

/** Matches softmax(q s k^T) v on its final MatMul (rank 3 or 4). */
function matchCore(mm: Tensor): Match | undefined {
  const n = mm.node;
  if (n?.op !== "MatMul") return undefined;
  const [p, v] = n.inputs as [Tensor, Tensor];
  const sm = p.node;
  if (sm?.op !== "Softmax") return undefined;
  const axis = sm.attrs.axis?.kind === "int" ? (sm.attrs.axis.value as number) : -1;
  if (axis !== -1 && axis !== p.rank - 1) return undefined;
  const scores = sm.inputs[0]!;
  const sn = scores.node;
  if (sn?.op !== "MatMul") return undefined;
  const [qs, kt] = sn.inputs as [Tensor, Tensor];
  const r = mm.rank;
  if (r !== 3 && r !== 4) return undefined;
  const swap = [...Array(r).keys()].map((i) => (i === r - 1 ? r - 2 : i === r - 2 ? r - 1 : i));
  if (!same(perm(kt.node), swap)) return undefined;
  const [q, sq, qChain] = unscale(qs);
  const [k, sk, kChain] = unscale(kt.node!.inputs[0]!);
  if (q.rank !== r || k.rank !== r || v.rank !== r) return undefined;
  // float32 only: the CPU provider registers MultiHeadAttention for float alone (fp16 graphs of
  // lib/graph/precision.ts keep the standard form).
  if (q.dtype !== "float32" || k.dtype !== "float32" || v.dtype !== "float32") return undefined;
  // No broadcasting anywhere: every operand has the full batch (and heads).
  const lead = q.shape.slice(0, r - 2);
  if (!same(k.shape.slice(0, r - 2), lead) || !same(v.shape.slice(0, r - 2), lead)) return undefined;
  if (k.shape[r - 2] !== v.shape[r - 2] || q.shape[r - 1] !== k.shape[r - 1]) return undefined;
  const inner = [p, scores, kt, mm, ...qChain, ...kChain];
  return { q, k, v, heads: r === 4 ? q.shape[1]! : 1, scale: sq * sk, inner };
}

/**
 * The rewrite rule (a NodeRewrite): on the last node of a recognised attention, emits one
 * MultiHeadAttention that writes the node's output. The standard-form nodes before it become
 * dead and `lower` drops them. `readers` counts, per tensor, the nodes of the lowered graph that
 * read it (plus graph outputs), so that a match whose intermediates are read elsewhere is refused.
 */
export function fuseAttention(readers: Map<Tensor, number>): (n: Node, e: Emit) => boolean {
  return (n, e) => {
    let m: Match | undefined;
    let out = n.outputs[0]!;
    if (n.op === "Reshape" && out.rank === 3) {
      // mergeHeads: Reshape(Transpose(attn4, [0,2,1,3]), [B, Lq, H*dv])
      const t = n.inputs[0]!;
      if (!same(perm(t.node), [0, 2, 1, 3])) return false;
      const a = t.node!.inputs[0]!;
      m = matchCore(a);
      if (!m || a.rank !== 4) return false;
      const [B, H, Lq, dv] = a.shape as [number, number, number, number];
      if (!same(out.shape, [B, Lq, H * dv])) return false;
      m.inner.push(t);
    } else if (n.op === "MatMul" && out.rank === 3) {
      m = matchCore(out);
      if (!m) return false;
    } else return false;
    // Intermediates read by anything outside the pattern (a backward pass): keep the standard form.
    for (const t of m.inner) if (t !== out && (readers.get(t) ?? 0) > 1) return false;
    const H = m.heads;
    const to3 = (x: Tensor): string => {
      if (x.rank === 3) return e.name(x);
      const src = unsplit(x);
      if (src) return e.name(src);
      const pk = unpack(x);
      if (pk) {
        // One Slice of the packed projection instead of transposing the head tensor back.
        const out = e.temp();
        const c = (v: number) => e.constant(BigInt64Array.from([BigInt(v)]), [1], "int64");
        e.node("Slice", [e.name(pk.src), c(pk.start), c(pk.end), c(2)], [out]);
        return out;
      }
      const [B, Hx, L, d] = x.shape as [number, number, number, number];
      const tr = e.temp(), r = e.temp();
      e.node("Transpose", [e.name(x)], [tr], { perm: ints([0, 2, 1, 3]) });
      e.node("Reshape", [tr, e.constant(BigInt64Array.from([B, L, Hx * d].map(BigInt)), [3], "int64")], [r]);
      return r;
    };
    e.node("MultiHeadAttention", [to3(m.q), to3(m.k), to3(m.v)], [e.name(out)], { num_heads: int(H), scale: float(m.scale) }, MS_DOMAIN);
    return true;
  };
}
