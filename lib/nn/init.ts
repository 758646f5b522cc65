// Fresh weights for a model definition's parameter list (tests, and the tiny world's models
// before training): PyTorch's default-like initialisation, from the seeded Rng.
//   *.weight of norms (1-D, name contains "norm" or "ln"): 1;  biases: 0;
//   matrices and convolutions: N(0, 1/fan_in) scaled by `gain`;  other 1-D / embeddings: N(0, 0.02).

import { Rng } from "../rng.ts";
import { MemorySource } from "./params.ts";

export function initWeights(shapes: Map<string, number[]>, seed: number, gain = 1, label = "fresh weights"): MemorySource {
  const rng = new Rng(seed);
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const leaf = name.split(".").slice(-2).join(".");
    let data: Float32Array;
    if (name.endsWith("bias")) data = new Float32Array(n);
    else if (shape.length === 1 && /norm|ln|layer_?norm|lambda/.test(leaf)) data = new Float32Array(n).fill(1);
    else if (shape.length >= 2 && !/embedding|latents|token|class_embedding/.test(name)) {
      const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
      data = rng.normals(n, gain / Math.sqrt(fanIn));
    } else data = rng.normals(n, 0.02);
    m.set(name, { shape: [...shape], data });
  }
  return new MemorySource(m, label);
}
