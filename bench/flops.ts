// FLOPs of a graph, counted from its Conv, ConvTranspose, MatMul and Gemm nodes (2 x the
// multiply-adds; elementwise ops, norms and softmax are left out, as the PyTorch references count),
// and split into the forward part and the backward part of a training graph. Shared by every bench
// (issue 13 item 4); tests/bench/flops.test.ts checks it on graphs whose FLOPs are known by hand.
//
// The count runs on the builder graph, whose nodes are the lowered ONNX nodes one for one (lowering
// renames; the fused attention of lib/graph/fuse.ts replaces two MatMuls by one node of the same
// FLOPs, so inference counts hold for both forms).
//
// Forward / backward: the forward part is every node the forward outputs (the loss, predictions)
// need; the backward part is every other node the graph's outputs need (what autodiff appended).

import * as G from "../lib/graph/index.ts";
import type { Node, Tensor } from "../lib/graph/index.ts";

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

/** FLOPs of one node (0 for ops that are not counted). */
export function nodeFlops(n: Node): number {
  const out = n.outputs[0]!;
  switch (n.op) {
    case "MatMul": {
      const a = n.inputs[0]!;
      const k = a.shape[a.rank - 1]!;
      return 2 * out.size * k;
    }
    case "Gemm": {
      const a = n.inputs[0]!;
      const transA = n.attrs.transA?.kind === "int" && n.attrs.transA.value === 1;
      const k = transA ? a.shape[0]! : a.shape[1]!;
      return 2 * out.size * k;
    }
    case "Conv": {
      // every output element: C_in / groups x kernel multiply-adds
      const w = n.inputs[1]!;
      return 2 * out.size * prod(w.shape.slice(1));
    }
    case "ConvTranspose": {
      // every input element scatters into C_out / groups x kernel outputs
      const x = n.inputs[0]!, w = n.inputs[1]!;
      return 2 * x.size * prod(w.shape.slice(1));
    }
    default:
      return 0;
  }
}

export interface FlopSplit {
  /** FLOPs of the nodes the forward outputs need. */
  forward: number;
  /** FLOPs of the remaining nodes the outputs need (the backward pass); 0 for inference graphs. */
  backward: number;
  /** Counted nodes per op type (forward + backward). */
  counted: Record<string, number>;
}

/**
 * Counts the graph that computes `outputs`; the nodes `forwardOutputs` need are the forward part.
 * Without forwardOutputs everything is forward (an inference graph).
 */
export function countFlops(outputs: Record<string, Tensor> | Tensor[], forwardOutputs?: Tensor[]): FlopSplit {
  const all = G.topoSort(Array.isArray(outputs) ? outputs : Object.values(outputs));
  const fwd = new Set(forwardOutputs ? G.topoSort(forwardOutputs) : all);
  const r: FlopSplit = { forward: 0, backward: 0, counted: {} };
  for (const n of all) {
    const f = nodeFlops(n);
    if (!f) continue;
    r.counted[n.op] = (r.counted[n.op] ?? 0) + 1;
    if (fwd.has(n)) r.forward += f;
    else r.backward += f;
  }
  return r;
}

/**
 * The fields a bench prints for bench/run.ts: GFLOP per iteration of the forward and the backward
 * part, with the seconds each part took (run.ts prints fwd / bwd GFLOP/s from them). `gflops`,
 * the total that run.ts has always read, stays each bench's own field.
 */
export function flopFields(s: FlopSplit, seconds: { forward: number; backward?: number }): Record<string, number> {
  const f: Record<string, number> = { fwdGflop: s.forward / 1e9, fwdSeconds: seconds.forward };
  if (s.backward) {
    f.bwdGflop = s.backward / 1e9;
    if (seconds.backward !== undefined) f.bwdSeconds = seconds.backward;
  }
  return f;
}
