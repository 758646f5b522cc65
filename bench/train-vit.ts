// Ours: one training step (forward + backward + AdamW) of a ViT-S/16-shaped model, batch 8,
// 224 px, every weight trainable. Loss: mean squared final hidden state (a stand-in objective
// with the same backward cost). Prints one JSON line for bench/run.ts.
//   --profile <file>: instead, one profiled training run (ONNX Runtime's profiler, arena off as in
//   training) and the top ops by time on stderr (bench/ort-profile.ts).
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import * as G from "../lib/graph/index.ts";
import { vitForward } from "../lib/models/vit.ts";
import { Params } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW } from "../lib/train/adamw.ts";
import { countFlops, flopFields } from "./flops.ts";
import { profileRun } from "./ort-profile.ts";
import { median, timeIt } from "./timing.ts";
import { VIT_S16, randomVitWeights } from "./vit-forward.ts";

const { values } = parseArgs({ options: { threads: { type: "string", default: "2" }, iters: { type: "string", default: "3" }, batch: { type: "string", default: "8" }, profile: { type: "string" } } });
const batch = Number(values.batch);
const source = randomVitWeights(VIT_S16, 0);
const g = new G.Graph();
const images = g.input("images", [batch, 3, 224, 224]);
const p = new Params(g, source, { trainable: () => true });
const h = vitForward(p, images, VIT_S16).lastHiddenState;
const loss = G.reduceMean(G.mul(h, h), undefined, false);
const names = [...p.trainable.keys()];
const grads = G.grad(loss, names.map((n) => p.trainable.get(n)!));
const outputs: Record<string, G.Tensor> = { loss };
names.forEach((n, i) => (outputs[`grad:${n}`] = grads[i]!));
const x = new Rng(1).normals(batch * 3 * 224 * 224);
if (values.profile) {
  const feeds: Record<string, ort.Tensor> = { images: new ort.Tensor("float32", x, [batch, 3, 224, 224]) };
  for (const n of names) feeds[n] = new ort.Tensor("float32", Float32Array.from(source.float32(n)), [...p.trainable.get(n)!.shape]);
  await profileRun(G.toOnnx(outputs, "cpu"), feeds, { file: values.profile, threads: Number(values.threads), memArena: false });
  process.exit(0);
}
const compiled = await G.compile(outputs, { threads: Number(values.threads) });

const weights = new Map(names.map((n) => [n, Float32Array.from(source.float32(n))]));
const opt = new AdamW({ lr: 1e-4, weightDecay: 0.01 });
const runTimes: number[] = [];
async function step() {
  const t0 = performance.now();
  const r = await compiled.run({ images: x, ...Object.fromEntries(weights) });
  runTimes.push((performance.now() - t0) / 1000);
  opt.step(weights, new Map(names.map((n) => [n, r[`grad:${n}`] as Float32Array])));
}
const seconds = await timeIt(step, Number(values.iters));
const peakRssMB = process.resourceUsage().maxRSS / 1024;
// Forward / backward split (bench/flops.ts): FLOPs from the graph's nodes; time of the forward
// from a forward-only session of the same model (loss only), after the step's peak RSS is read;
// the backward is the training session's run time minus that.
const split = countFlops(outputs, [loss]);
const fwd = await G.compile({ loss }, { threads: Number(values.threads) });
const fwdSeconds = await timeIt(() => fwd.run({ images: x, ...Object.fromEntries(weights) }), Number(values.iters));
const runSeconds = median(runTimes.slice(1));
console.log(JSON.stringify({ seconds, peakRssMB, gflops: (split.forward + split.backward) / 1e9, runSeconds, ...flopFields(split, { forward: fwdSeconds, backward: runSeconds - fwdSeconds }) }));
