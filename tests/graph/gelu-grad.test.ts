// The erf-GELU gradient (lib/graph/autodiff.ts geluGrad): the gradient of ops.gelu equals
// the gradient the per-node rules give for the same five nodes built by hand (unmarked), and
// leaves ONNX Runtime free to fuse the forward (its optimized graph holds com.microsoft.Gelu);
// when an inner tensor of the pattern has another reader, the per-node rules run.
// (The finite-difference check of gelu is in tests/graph/autodiff.test.ts.)

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeModel } from "../../lib/onnx/index.ts";
import * as G from "../../lib/graph/index.ts";
import { Graph, type Tensor } from "../../lib/graph/index.ts";
import { mulberry32 } from "./reference.ts";

const N = 4096;
const dir = mkdtempSync(join(tmpdir(), "patchdpo-gelu-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let built = 0;
const xs = (() => {
  const r = mulberry32(5);
  return Float32Array.from({ length: N }, (_, i) => (i < 16 ? [0, -0, 1e-8, -6, 6, -12, 12, 3][i % 8]! : (r() - 0.5) * 10));
})();
/** The same forward as ops.gelu, not marked for the fused gradient. */
const plainGelu = (x: Tensor) => G.mul(G.mul(x, G.add(G.erf(G.div(x, Math.SQRT2)), 1)), 0.5);

async function gradOf(gelu: (x: Tensor) => Tensor, extra?: (x: Tensor, y: Tensor) => Tensor) {
  const g = new Graph();
  const x = g.param("x", [N]);
  const w = g.constant(Float32Array.from({ length: N }, (_, i) => Math.cos(i)), [N]);
  const y = gelu(x);
  let loss = G.reduceSum(G.mul(y, w), undefined, false);
  if (extra) loss = G.add(loss, extra(x, y));
  const [gx] = G.grad(loss, [x]);
  const path = join(dir, `opt-${++built}.onnx`);
  // y is an output too (a model's next layer reads it), so its forward runs.
  const out = (await (await G.compile({ y, gx: gx! }, { threads: 1, optimizedModelFilePath: path })).run({ x: xs })).gx as Float32Array;
  const ortOps = decodeModel(readFileSync(path)).graph.node.map((n) => n.opType);
  return { out, ortOps };
}

const maxRel = (a: Float32Array, b: Float32Array) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)));
  return m;
};

describe("fused erf-GELU gradient", () => {
  test("= the per-node rules' gradient; ORT fuses the forward into Gelu and runs fewer nodes", async () => {
    const fused = await gradOf(G.gelu);
    const plain = await gradOf(plainGelu);
    const d = maxRel(fused.out, plain.out);
    console.log(`gelu gradient fused vs per-node: max rel ${d.toExponential(2)}; ORT nodes ${fused.ortOps.length} vs ${plain.ortOps.length}`);
    expect(d).toBeLessThan(1e-6);
    expect(fused.ortOps).toContain("Gelu");
    expect(plain.ortOps).not.toContain("Gelu");
    expect(fused.ortOps.length).toBeLessThan(plain.ortOps.length);
  });

  test("an inner tensor with another reader (A = 1 + erf(u) used in the loss): the per-node rules run, same gradient", async () => {
    const innerA = (y: Tensor) => y.node!.inputs[0]!.node!.inputs[1]!; // y = (x * A) * 0.5
    const extra = (_x: Tensor, y: Tensor) => G.reduceSum(G.mul(innerA(y), 0.25), undefined, false);
    const fused = await gradOf(G.gelu, extra);
    const plain = await gradOf(plainGelu, extra);
    expect(maxRel(fused.out, plain.out)).toBeLessThan(1e-6);
    expect(fused.ortOps).toEqual(plain.ortOps);
  });
});
