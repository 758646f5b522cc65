// Masked (background) patches are neutral in every objective (lib/train/objectives.ts): with a
// foreground share of 0, what the quality maps say there cannot change the loss, and all-ones
// masks give exactly the unmasked formulas. Ignoring fgRef or fgGen in any objective fails here.

import { describe, expect, test } from "bun:test";
import * as G from "../../lib/graph/index.ts";
import { Graph } from "../../lib/graph/index.ts";
import { Rng } from "../../lib/rng.ts";
import { OBJECTIVES, objective } from "../../lib/train/objectives.ts";

const B = 3, C = 4, H = 4, W = 4, N = B * H * W;
const rng = new Rng(7);
const pred = rng.normals(2 * B * C * H * W), target = rng.normals(2 * B * C * H * W), refPred = rng.normals(2 * B * C * H * W);
const u = () => Float32Array.from({ length: N }, () => rng.uniform());
const qRef = u(), qGen = u();
/** Background where the pixel index is a multiple of 3: a fixed mask on both images. */
const mask = Float32Array.from({ length: N }, (_, i) => (i % 3 === 0 ? 0 : 1));

async function loss(kind: (typeof OBJECTIVES)[number], qr: Float32Array, qg: Float32Array, fgRef?: Float32Array, fgGen?: Float32Array): Promise<number> {
  const g = new Graph();
  const c = (x: Float32Array, shape: number[]) => g.constant(x, shape);
  const o = objective(kind, {
    pred: c(pred, [2 * B, C, H, W]), target: c(target, [2 * B, C, H, W]), refPred: c(refPred, [2 * B, C, H, W]),
    qRef: c(qr, [B, H, W]), qGen: c(qg, [B, H, W]),
    ...(fgRef ? { fgRef: c(fgRef, [B, H, W]) } : {}), ...(fgGen ? { fgGen: c(fgGen, [B, H, W]) } : {}),
  }, { beta: 50, lambda: 1 });
  return ((await (await G.compile({ loss: o.loss })).run({})).loss as Float32Array)[0]!;
}

/** The maps with their masked entries replaced by other values. */
const scramble = (q: Float32Array) => Float32Array.from(q, (v, i) => (mask[i] ? v : 1 - v * 0.5));

describe("masked patches are neutral", () => {
  for (const kind of ["weighted", "patch-dpo"] as const) {
    test(`${kind}: quality values under the mask do not change the loss; the mask changes it`, async () => {
      const base = await loss(kind, qRef, qGen, mask, mask);
      expect(await loss(kind, scramble(qRef), qGen, mask, mask)).toBeCloseTo(base, 6);
      expect(await loss(kind, qRef, scramble(qGen), mask, mask)).toBeCloseTo(base, 6);
      expect(Math.abs((await loss(kind, scramble(qRef), scramble(qGen))) - base)).toBeGreaterThan(1e-4);
    });
  }
  test("all-ones masks give exactly the unmasked formulas; mse ignores masks", async () => {
    const ones = new Float32Array(N).fill(1);
    for (const kind of OBJECTIVES) expect(await loss(kind, qRef, qGen, ones, ones)).toBe(await loss(kind, qRef, qGen));
    expect(await loss("mse", qRef, qGen, mask, mask)).toBe(await loss("mse", qRef, qGen));
  });
});
