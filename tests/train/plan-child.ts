// A training run whose peak RSS tests/train/plan.test.ts compares with the planner's prediction:
// ViT-S/16-shaped model (--layers blocks), every weight trainable (random weights in memory and a trained copy),
// `--batch` images at 224 px, loss mean(h^2), 3 steps of AdamW (ORT's memory pattern starts at the
// second run). Prints {"peakMB": VmHWM} — VmHWM belongs to this process's own address space, so
// unlike ru_maxrss it is not inherited from a parent that spawned it.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as G from "../../lib/graph/index.ts";
import { type ViTConfig, vitForward, vitParamShapes } from "../../lib/models/vit.ts";
import { initWeights } from "../../lib/nn/init.ts";
import { Params } from "../../lib/nn/params.ts";
import { Rng } from "../../lib/rng.ts";
import { AdamW } from "../../lib/train/adamw.ts";
// What a training script loads (sharp, the dist layer, ...): the planner's process calibration is for that.
import "../../scripts/dpo-epoch.ts";

export const VIT_S16: ViTConfig = {
  layout: "vit", hiddenSize: 384, numLayers: 12, numHeads: 6, intermediateSize: 1536, patchSize: 16, imageSize: 224, layerNormEps: 1e-6, numRegisters: 0, hiddenAct: "gelu",
};

if (import.meta.main) {
  const { values } = parseArgs({ options: { batch: { type: "string", default: "4" }, layers: { type: "string", default: "12" } } });
  const batch = Number(values.batch);
  const cfg: ViTConfig = { ...VIT_S16, numLayers: Number(values.layers) };
  const source = initWeights(vitParamShapes(cfg), 0, 0.02);
  const g = new G.Graph();
  const p = new Params(g, source, { trainable: () => true });
  const h = vitForward(p, g.input("images", [batch, 3, 224, 224]), cfg).lastHiddenState;
  const loss = G.reduceMean(G.mul(h, h), undefined, false);
  const names = [...p.trainable.keys()];
  const grads = G.grad(loss, names.map((n) => p.trainable.get(n)!));
  const outputs: Record<string, G.Tensor> = { loss };
  names.forEach((n, i) => (outputs[`grad:${n}`] = grads[i]!));
  const compiled = await G.compile(outputs, { threads: 2 });
  const weights = new Map(names.map((n) => [n, Float32Array.from(source.float32(n))]));
  const opt = new AdamW({ lr: 1e-4 });
  const x = new Rng(1).normals(batch * 3 * 224 * 224);
  for (let s = 0; s < 3; s++) {
    const r = await compiled.run({ images: x, ...Object.fromEntries(weights) });
    opt.step(weights, new Map(names.map((n) => [n, r[`grad:${n}`] as Float32Array])));
  }
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))?.[1]);
  console.log(JSON.stringify({ peakMB: hwm / 1024 }));
}
