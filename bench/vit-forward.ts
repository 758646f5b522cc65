// Ours: a 12-layer ViT-S/16-shaped forward pass (batch 8, 224 px, random weights) built with
// lib/graph and run by onnxruntime-node. Prints one JSON line for bench/run.ts.
import { parseArgs } from "node:util";
import * as G from "../lib/graph/index.ts";
import { vitForward, vitParamShapes, type ViTConfig } from "../lib/models/vit.ts";
import { MemorySource, Params } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { countFlops, flopFields } from "./flops.ts";
import { timeIt } from "./timing.ts";


export const VIT_S16: ViTConfig = {
  layout: "vit", hiddenSize: 384, numLayers: 12, numHeads: 6, intermediateSize: 1536, patchSize: 16,
  imageSize: 224, layerNormEps: 1e-6, numRegisters: 0, hiddenAct: "gelu",
};

/** Random weights: N(0, 0.02) like timm's init; LayerNorm weights 1, biases 0. */
export function randomVitWeights(c: ViTConfig, seed: number): MemorySource {
  const rng = new Rng(seed);
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of vitParamShapes(c)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNormWeight = /(norm\d?|layernorm(_before|_after)?)\.weight$/.test(name);
    const data = isNormWeight ? new Float32Array(n).fill(1) : name.endsWith(".bias") ? new Float32Array(n) : rng.normals(n, 0.02);
    m.set(name, { shape, data });
  }
  return new MemorySource(m, "random ViT-S/16 weights");
}

if (import.meta.main) {
  // --standard-ops: the attention in standard ops; the default is eval's (fused, lib/graph/fuse.ts).
  const { values } = parseArgs({ options: { threads: { type: "string", default: "2" }, iters: { type: "string", default: "5" }, batch: { type: "string", default: "8" }, "standard-ops": { type: "boolean", default: false } } });
  const batch = Number(values.batch);
  const g = new G.Graph();
  const images = g.input("images", [batch, 3, 224, 224]);
  const out = vitForward(new Params(g, randomVitWeights(VIT_S16, 0)), images, VIT_S16);
  const compiled = await G.compile({ hidden: out.lastHiddenState }, { threads: Number(values.threads), fusedOps: !values["standard-ops"] });
  const x = new Rng(1).normals(batch * 3 * 224 * 224);
  const seconds = await timeIt(() => compiled.run({ images: x }), Number(values.iters));
  // Forward FLOPs: 2 * MACs of the matmuls (attention included); norms and softmax are small.
  const L = 197, C = 384, F = 1536;
  const flops = batch * (12 * 2 * (L * C * 3 * C + 2 * L * L * C + L * C * C + 2 * L * C * F) + 2 * 196 * 768 * C);
  // The same count from the graph's own nodes (bench/flops.ts), as every bench reports it.
  console.log(JSON.stringify({ seconds, peakRssMB: process.resourceUsage().maxRSS / 1024, gflops: flops / 1e9, ...flopFields(countFlops({ hidden: out.lastHiddenState }), { forward: seconds }) }));
}
