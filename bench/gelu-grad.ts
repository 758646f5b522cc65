// The erf-GELU gradient alone (issue 13 item 3): forward + backward of GELU over ViT-S's MLP
// activation, batch 8 ([8, 197, 1536], 2.4M values, x12 per ViT-S step), with the fused gradient
// (ops.gelu, lib/graph/autodiff.ts geluGrad) vs the per-node rules (the same five nodes built
// unmarked). Alternating, medians, load beside. Usage: bun bench/gelu-grad.ts [--threads 2] [--iters 10] [--rounds 3]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as G from "../lib/graph/index.ts";
import { Rng } from "../lib/rng.ts";
import { median, timeIt } from "./timing.ts";

const { values } = parseArgs({ options: { threads: { type: "string", default: "2" }, iters: { type: "string", default: "10" }, rounds: { type: "string", default: "3" } } });
const shape = [8, 197, 1536];
const n = shape.reduce((a, b) => a * b, 1);
const plainGelu = (x: G.Tensor) => G.mul(G.mul(x, G.add(G.erf(G.div(x, Math.SQRT2)), 1)), 0.5);
async function build(gelu: (x: G.Tensor) => G.Tensor) {
  const g = new G.Graph();
  const x = g.param("x", shape);
  const gy = g.input("gy", shape);
  const y = gelu(x);
  const [gx] = G.grad(G.reduceSum(G.mul(y, gy), undefined, false), [x]);
  const c = await G.compile({ y, gx: gx! }, { threads: Number(values.threads), memArena: true });
  return { c, nodes: c.lowered.model.graph.node.length };
}
const feeds = { x: new Rng(1).normals(n), gy: new Rng(2).normals(n) };
const fused = await build(G.gelu), plain = await build(plainGelu);
const tf: number[] = [], tp: number[] = [], loads: string[] = [];
for (let r = 0; r < Number(values.rounds); r++) {
  tp.push(await timeIt(() => plain.c.run(feeds), Number(values.iters)));
  tf.push(await timeIt(() => fused.c.run(feeds), Number(values.iters)));
  loads.push(readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "));
}
const p = median(tp), f = median(tf);
console.log(`gelu fwd+bwd [${shape}]: per-node rules ${(p * 1000).toFixed(1)} ms (${plain.nodes} nodes), fused gradient ${(f * 1000).toFixed(1)} ms (${fused.nodes} nodes), ${(p / f).toFixed(2)}x; ${values.threads} threads; load ${loads.join(" | ")}`);
