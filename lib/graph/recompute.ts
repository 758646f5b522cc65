// Recompute (gradient checkpointing) marks. A model wraps a block's forward in `checkpoint`; the
// nodes built inside become a segment of the graph. `grad(loss, wrt, seed, { recompute: true })`
// then keeps only each segment's inputs for the backward pass: when the backward reaches the
// segment it rebuilds a copy of the segment's forward from those saved inputs and runs the
// segment's gradient rules on the copy, so the segment's inner activations are dropped after the
// forward and live again only while that segment's backward runs. Segments may nest (a query
// chunk of attention inside a transformer block). A segment marked `always` is recomputed even
// without the option: chunked attention, whose point is never to hold every chunk's score matrix.

import type { Graph, Tensor } from "./graph.ts";
import * as O from "./ops.ts";

export interface Segment {
  /** The segment's nodes are graph.nodes[start, end): nodes are appended in creation order. */
  start: number;
  end: number;
  parent?: Segment;
  /** Recompute even when grad's `recompute` option is off. */
  always: boolean;
  label: string;
}

const segments = new WeakMap<Graph, Segment[]>();
const open = new WeakMap<Graph, Segment[]>();

/** The recompute segments marked on a graph, outermost first. */
export function graphSegments(g: Graph): readonly Segment[] {
  return segments.get(g) ?? [];
}

/**
 * Marks the nodes that `fn` adds to `g` as one recompute segment and returns fn's result.
 * Leaves (inputs, weights, constants) created inside are not part of it: they are always kept.
 */
export function checkpoint<T>(g: Graph, label: string, fn: () => T, opts: { always?: boolean } = {}): T {
  const stack = open.get(g) ?? [];
  open.set(g, stack);
  const seg: Segment = { start: g.nodes.length, end: -1, parent: stack.at(-1), always: opts.always ?? false, label };
  stack.push(seg);
  try {
    return fn();
  } finally {
    stack.pop();
    seg.end = g.nodes.length;
    if (seg.end > seg.start) {
      const list = segments.get(g) ?? [];
      list.push(seg);
      segments.set(g, list);
    }
  }
}

/**
 * softmax(q k^T * scale) v computed `chunk` query rows at a time (softmax is per query row, so
 * this is exact). Each chunk is an `always` recompute segment: the backward pass rebuilds one
 * chunk's [.., chunk, Lk] scores at a time instead of keeping all [.., Lq, Lk] of them (at 4096
 * tokens, 2 rows and 8 heads, 1 GB). Without a chunk size, or with Lq <= chunk, it is `attention`.
 */
export function chunkedAttention(q: Tensor, k: Tensor, v: Tensor, chunk?: number, scale = 1 / Math.sqrt(q.shape[q.rank - 1]!)): Tensor {
  const axis = q.rank - 2;
  const Lq = q.shape[axis]!;
  if (!chunk || Lq <= chunk) return O.attention(q, k, v, scale);
  if (!Number.isInteger(chunk) || chunk < 1) throw new Error(`chunkedAttention: chunk must be a positive integer, got ${chunk}`);
  const outs: Tensor[] = [];
  for (let s = 0; s < Lq; s += chunk) {
    const qi = O.slice(q, [s], [Math.min(s + chunk, Lq)], [axis]);
    outs.push(checkpoint(q.graph, `attention rows ${s}..${Math.min(s + chunk, Lq)}`, () => O.attention(qi, k, v, scale), { always: true }));
  }
  return O.concat(outs, axis);
}
