// InfoNCE over patches (the self-supervised patch task of DESIGN.md section 1, item 2):
// row i of `a` and row i of `b` are features of the same image location seen in two augmented
// views; every other row of `b` is a negative. Symmetric (a->b and b->a averaged), as in CLIP.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";

/** Rows scaled to unit L2 norm (eps keeps all-zero ReLU features finite). */
export function l2normalize(x: Tensor, axis = -1, eps = 1e-6): Tensor {
  return G.div(x, G.sqrt(G.add(G.reduceSumSquare(x, [axis], true), eps)));
}

/** Mean cross-entropy of logits [N, N] whose correct class is the diagonal. */
function diagonalCrossEntropy(logits: Tensor): Tensor {
  const n = logits.shape[0]!;
  const eye = new Float32Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 1;
  const picked = G.reduceSum(G.mul(G.logSoftmax(logits, 1), logits.graph.constant(eye, [n, n])), undefined, false);
  return G.div(G.neg(picked), n);
}

/** a, b: [N, C] corresponding patch features. Returns the scalar loss. */
export function infoNCE(a: Tensor, b: Tensor, temperature = 0.07): Tensor {
  if (a.rank !== 2 || a.shape[0] !== b.shape[0] || a.shape[1] !== b.shape[1]) {
    throw new Error(`infoNCE: feature sets must both be [N, C], got [${a.shape}] and [${b.shape}]`);
  }
  const logits = G.div(G.matmul(l2normalize(a), G.transpose(l2normalize(b), [1, 0])), temperature);
  return G.mul(G.add(diagonalCrossEntropy(logits), diagonalCrossEntropy(G.transpose(logits, [1, 0]))), 0.5);
}
