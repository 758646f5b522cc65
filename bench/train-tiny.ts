// Ours: ONE pretraining step of the tiny world's generator, exactly as scripts/pretrain-tiny.ts
// takes it at its real size: tinySpec(tinyCorpus()) (UNet [64, 128] at 64x64 px, pixel-unshuffle
// factor 4 -> 48 latent channels at 16x16, CLIP text encoder, IP-Adapter-Plus Resampler
// TINY_PROJECTION over MobileNetV2 features), every weight trainable, v-prediction, objective mse,
// --batch pairs (2x as many UNet rows), DiffusionTrainer with memArena, image features precomputed
// (PairExample.referenceFeatures), then the NaN guard, clipGradNorm(1.0) and AdamW.step.
// The model folder is written once (writeModelFolder / writeIpAdapter, random init) into a temp dir.
// The image-feature pool holds the first --batch pretraining subjects (pretrain-tiny encodes all of
// them; the pool's size does not change a step's cost). Each step's pairs are made as pretrain-tiny
// makes them (scene renders included) but outside the timed step, as a data loader would.
// Timed: trainer.prepare (host-side feeds) + trainer.step (the ONNX Runtime session) + guard/clip +
// AdamW. The JSON line also holds the median of each part, hostShare = (prepare + clip + adamw) /
// total, batchSeconds (making the pairs, untimed) and the trainable parameter count.
// Writes bench/out/train-tiny-spec.json (configs and every trainable weight's shape), from which
// the reference (bench/train-tiny.py) builds the same model and checks it has the same weights.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadDiffusionModel, loadIpAdapter } from "../lib/diffusion/model.ts";
import { writeIpAdapter, writeModelFolder } from "../lib/diffusion/model-folder.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW, allFinite, clipGradNorm } from "../lib/train/adamw.ts";
import { DiffusionTrainer, type PairExample } from "../lib/train/diffusion.ts";
import { learningRate } from "../lib/train/schedule.ts";
import { catalogueSplit, tinyCorpus } from "../lib/tinyworld/catalogue.ts";
import { DEFAULTS, TINY_PROJECTION, TINY_SIZE, example, referencePool, tinySpec } from "../scripts/pretrain-tiny.ts";
import { median, timeIt } from "./timing.ts";
import { countFlops, flopFields } from "./flops.ts";
import * as G from "../lib/graph/index.ts";

const { values } = parseArgs({ options: { threads: { type: "string", default: "2" }, iters: { type: "string", default: "3" }, batch: { type: "string", default: String(DEFAULTS.batch) } } });
const threads = Number(values.threads);
const batch = Number(values.batch);
export const SPEC_OUT = "bench/out/train-tiny-spec.json";

// ---------------------------------------------------------------- model, as pretrain-tiny's init
const seed = DEFAULTS.seed;
const spec = tinySpec(tinyCorpus(), DEFAULTS.prediction, DEFAULTS.channels);
const dir = mkdtempSync(join(tmpdir(), "bench-train-tiny-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
await writeModelFolder(join(dir, "init"), spec, seed);
await writeIpAdapter(join(dir, "init", "ip-adapter.safetensors"), spec.unet, TINY_PROJECTION, seed + 10);
const model = loadDiffusionModel(join(dir, "init"));
const ip = loadIpAdapter(join(dir, "init", "ip-adapter.safetensors"), "mobilenet_v2", TINY_PROJECTION.dimHead);
const trainer = new DiffusionTrainer({ model, ip, pairs: batch, height: TINY_SIZE, width: TINY_SIZE, objective: "mse", trainable: () => true, threads, memArena: true });
const shapes = trainer.shapes();
const params = [...shapes.values()].reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0);
mkdirSync("bench/out", { recursive: true });
writeFileSync(SPEC_OUT, JSON.stringify({
  about: "bench/train-tiny.ts: the tiny generator's configs and trainable weights (name -> shape), for bench/train-tiny.py",
  unet: spec.unet, textEncoder: spec.textEncoder, projection: TINY_PROJECTION, prediction: spec.scheduler.prediction_type,
  size: TINY_SIZE, pairs: batch, maxLength: model.textEncoders[0]!.tokenizer.maxLength, featureShape: trainer.featureShape, params, shapes: Object.fromEntries(shapes),
}));

// ---------------------------------------------------------------- pool and pairs, as pretrain-tiny makes them
const pool = await referencePool(trainer, batch, catalogueSplit(false).slice(0, batch));

// ---------------------------------------------------------------- timed step
const weights = new Map<string, Float32Array>([...trainer.initial].map(([k, v]) => [k, Float32Array.from(v)]));
const opt = new AdamW({ lr: DEFAULTS.lr, weightDecay: 0.01 });
const sched = { name: "cosine" as const, lr: DEFAULTS.lr, warmupSteps: DEFAULTS.warmup, totalSteps: DEFAULTS.steps, minLr: DEFAULTS.lr * 0.05 };
const parts = { batch: [] as number[], prepare: [] as number[], run: [] as number[], clip: [] as number[], adamw: [] as number[] };
let step = 0;
let loss = NaN;
let pairs: PairExample[] = [];
let rng = new Rng(0);
let lastFeeds: G.Feeds = {};
function nextBatch() {
  const t0 = performance.now();
  rng = new Rng((seed * 1_000_003 + step) >>> 0);
  pairs = Array.from({ length: batch }, () => example(rng, pool, DEFAULTS.sceneShare));
  parts.batch.push((performance.now() - t0) / 1000);
}
async function trainStep() {
  const t0 = performance.now();
  const feeds = (lastFeeds = await trainer.prepare(pairs, rng));
  const t1 = performance.now();
  const r = await trainer.step(feeds, weights);
  const t2 = performance.now();
  if (!Number.isFinite(r.loss) || !allFinite(r.grads.values())) throw new Error(`step ${step}: non-finite loss or gradient`);
  clipGradNorm(r.grads, 1.0);
  const t3 = performance.now();
  opt.step(weights, r.grads, learningRate(sched, step));
  const t4 = performance.now();
  parts.prepare.push((t1 - t0) / 1000);
  parts.run.push((t2 - t1) / 1000);
  parts.clip.push((t3 - t2) / 1000);
  parts.adamw.push((t4 - t3) / 1000);
  loss = r.loss;
  step++;
  nextBatch(); // the next step's pairs (a data loader's work), outside the timed step
}
nextBatch();
const seconds = await timeIt(trainStep, Number(values.iters));
// Medians of each part over the timed steps (the warm-up step, first, is left out).
const med = (xs: number[]) => median(xs.slice(1));
const prepareSeconds = med(parts.prepare), runSeconds = med(parts.run), clipSeconds = med(parts.clip), adamwSeconds = med(parts.adamw);
console.error(`train-tiny (ours): ${params} trainable parameters, ${2 * batch} UNet rows, loss ${loss.toFixed(4)}; per step ${seconds.toFixed(3)} s = prepare ${prepareSeconds.toFixed(3)} + session ${runSeconds.toFixed(3)} + guard/clip ${clipSeconds.toFixed(3)} + AdamW ${adamwSeconds.toFixed(3)} s (pairs made outside: ${med(parts.batch).toFixed(3)} s)`);
const peakRssMB = process.resourceUsage().maxRSS / 1024;
// Forward / backward split (bench/flops.ts): FLOPs from the training graph's nodes (forward = what
// the loss needs); the forward's time from a forward-only session of the same graph (loss only,
// same feeds), run after the peak RSS is read; the backward's = the session's run time minus that.
const train = await (trainer as unknown as { train: Promise<G.Compiled> }).train;
const lossT = train.lowered.outputs.get("loss")!;
const split = countFlops(Object.fromEntries(train.lowered.outputs), [lossT]);
const fwd = await G.compile({ loss: lossT }, { threads, memArena: true });
const fwdFeeds: G.Feeds = { ...lastFeeds };
for (const t of trainer.trainables) fwdFeeds[t.tensor.name] = weights.get(t.name)!;
const wanted = new Set(fwd.inputs.map((i) => i.name));
const fwdSeconds = await timeIt(() => fwd.run(Object.fromEntries(Object.entries(fwdFeeds).filter(([k]) => wanted.has(k)))), Number(values.iters));
console.log(JSON.stringify({
  seconds, peakRssMB, params, rows: 2 * batch, gflops: (split.forward + split.backward) / 1e9,
  ...flopFields(split, { forward: fwdSeconds, backward: runSeconds - fwdSeconds }),
  prepareSeconds, runSeconds, clipSeconds, adamwSeconds, hostShare: (prepareSeconds + clipSeconds + adamwSeconds) / seconds, batchSeconds: med(parts.batch),
}));
