// The tiny generator's training loop, step for step against PyTorch: the loop of
// scripts/pretrain-tiny.ts (DiffusionTrainer.step with objective mse, clipGradNorm at 1, AdamW with
// weight decay 0.01, the cosine learningRate schedule) trains a small version of the tiny world's
// generator (tinySpec at UNet widths [16, 32], 32x32 images, pixel-unshuffle factor 2, CLIP text
// encoder + IP-Adapter Resampler + UNet with decoupled cross-attention, all trainable,
// v-prediction) from the starting weights and on the batches of tests/fixtures/parity/
// tiny_train.safetensors, and must follow the PyTorch run of the same model, loop and batches that
// the fixture records. Regenerate (tests never run Python):
//
//   bun bench/parity/make_tiny_train_fixture.ts
//   /usr/bin/python3 bench/parity/fetch_upstream.py
//   OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_tiny_train_fixture.py
//
// The PyTorch model is the upstream code itself (transformers' CLIPTextModel, IP-Adapter's Resampler,
// diffusers' UNet2DConditionModel with IPAdapterAttnProcessor; commits in the fixture's metadata).
// The reference ("torch64") is PyTorch in float64: the trajectory of exact arithmetic, except where
// upstream computes in float32 whatever the dtype (diffusers' timestep embedding, the Resampler's
// softmax). The fixture
// also records the same loop in float32 ("torch32"); its distance from torch64 is what float32
// rounding alone does to this loop. Tolerances (relative errors against torch64), set from our
// measured distance and torch32's, measured over the fixture's 300 steps (ORT 1.30 CPU,
// TINY_TRAIN_STEPS=300), with margin; every one also admits torch32 (checked):
//
//   loss at step s        <= 2e-6 + 2e-8 s. Ours: max 5.8e-7 (first 10 steps 1.2e-7), at most
//                         0.11 of the bound; torch32: max 1.4e-6, 0.26 of the bound.
//   gradient norm (before <= 5e-6 + 4e-7 s. Ours: max 2.1e-5 (first 50 steps 4.4e-7), 0.27 of the
//   clipping) at step s   bound; torch32: 0.42 of the bound.
//   gradients, steps 0-4  per weight, its L2 norm and its probe sum_i g_i ((i mod 7) - 3) within
//                         2e-3 of (its own scale + 1e-3 G / sqrt(#weights)), G the global norm.
//                         Ours: at most 0.09 of the bound; torch32 0.06. The floor is for gradients
//                         that are 0 in exact arithmetic, where float32 leaves noise of ~1e-8: CLIP's
//                         k_proj.bias (softmax ignores a shift) and, in this small config only, the
//                         biases and time_emb_proj of the 16-wide blocks (16 channels in 16 groups:
//                         GroupNorm removes any per-channel constant), whose noise AdamW turns into
//                         +-lr steps on both sides without effect on the output.
//   step 0, 9 weights     full gradients elementwise |d| <= 1e-4 (max|g| + |g|). Ours: 0.06.
//   9 weights after 200   ||ours - torch64|| / ||torch64 - start|| <= 2e-3 (IP-Adapter to_k_ip /
//   and 300 steps         to_v_ip, UNet self-attention, conv_out, time embedding, Resampler
//                         proj_out and latents, text encoder v_proj and final LayerNorm). Ours: max
//                         6.7e-5 (the rest <= 1.4e-5); torch32: max 6.9e-4.
//
// Ours is about half as far from torch64 as PyTorch's own float32 run, at every measure.
//
// A loss curve alone does not catch a wrong gradient scale: AdamW divides every weight's update by
// its own gradient's RMS. Measured with one gradient scaled by 0.9 at every step (in this file's
// loop): to_k_ip of down_blocks.0 keeps the loss within 2.1e-6 of torch64 over 300 steps (inside
// the bound, like torch32) and the trained weights within tolerance too; it fails the step-0
// gradients, the per-weight gradient statistics (50x the bound) and the gradient norms (from step 2).
// up_blocks.0.resnets.1.conv2.weight fails the loss curve (19x the bound), the gradient norms
// (53x) and the per-weight statistics. The last test keeps a check that the statistics reject such
// a mutation.
//
// The test runs TINY_TRAIN_STEPS steps (default 200 of the fixture's 300): 23 s here with another
// training job on both cores (300 steps: 31-39 s).

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import type { Feeds } from "../../lib/graph/index.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import type { BpeVocab } from "../../lib/models/bpe-train.ts";
import type { ResamplerConfig } from "../../lib/models/ip-adapter.ts";
import { ipAdapterKeyMap, unetConfigFromJson } from "../../lib/models/unet.ts";
import { MemorySource } from "../../lib/nn/params.ts";
import { AdamW, clipGradNorm } from "../../lib/train/adamw.ts";
import { DiffusionTrainer } from "../../lib/train/diffusion.ts";
import { learningRate, type ScheduleConfig } from "../../lib/train/schedule.ts";

setDefaultTimeout(300_000);

const FIXTURE = join(import.meta.dir, "../fixtures/parity/tiny_train.safetensors");
const f = openSafetensors(FIXTURE);
const cfg = JSON.parse(f.metadata.config!) as {
  pairs: number; size: number; batches: number; steps: number; snapshots: number[]; lr: number; warmup: number; minLrShare: number;
  weightDecay: number; beta1: number; beta2: number; eps: number; clip: number; ipScale: number;
};
const names = JSON.parse(f.metadata.weights!) as string[];
const snapshotWeights = JSON.parse(f.metadata.snapshotWeights!) as string[];
const GRAD_STEPS = Number(f.metadata.gradSteps);
const STEPS = Math.max(GRAD_STEPS, Math.min(cfg.steps, Number(process.env.TINY_TRAIN_STEPS ?? 200)));
const f64 = (name: string) => f.view(name) as Float64Array;

// Tolerances (see the header): relative errors at step s.
const lossTol = (s: number) => 2e-6 + 2e-8 * s;
const normTol = (s: number) => 5e-6 + 4e-7 * s;
const WEIGHT_TOL = 2e-3;
const GRAD_TOL = 2e-3;
const GRAD_FLOOR = 1e-3;

const sched: ScheduleConfig = { name: "cosine", lr: cfg.lr, warmupSteps: cfg.warmup, totalSteps: cfg.steps, minLr: cfg.lr * cfg.minLrShare };

/** Per weight: [L2 norm, sum_i g_i ((i mod 7) - 3)], as the generator computes them. */
function gradStats(grads: Map<string, Float32Array>): number[][] {
  return names.map((n) => {
    const g = grads.get(n)!;
    let s2 = 0, p = 0;
    for (let i = 0; i < g.length; i++) {
      s2 += g[i]! * g[i]!;
      p += g[i]! * ((i % 7) - 3);
    }
    return [Math.sqrt(s2), p];
  });
}

/**
 * Worst error of one step's per-weight statistics, in units of GRAD_TOL: |ours - torch| relative
 * to the weight's gradient scale (its norm; twice its norm for the probe, whose weights have RMS 2)
 * plus a floor of GRAD_FLOOR G / sqrt(n_weights), G the global norm (for gradients that are 0 in
 * exact arithmetic, e.g. attention key biases, where only float noise is left). Above 1 fails.
 */
function gradStatsRatio(ours: number[][], torch: Float64Array, offset: number): { ratio: number; where: string } {
  let G = 0;
  names.forEach((_, i) => (G += torch[offset + 2 * i]! ** 2));
  const floor = (GRAD_FLOOR * Math.sqrt(G)) / Math.sqrt(names.length);
  let ratio = 0, where = "";
  names.forEach((n, i) => {
    const norm = torch[offset + 2 * i]!;
    for (const k of [0, 1]) {
      const t = torch[offset + 2 * i + k]!;
      const r = Math.abs(ours[i]![k]! - t) / (GRAD_TOL * ((k ? 2 : 1) * norm + floor));
      if (!(r <= ratio)) (ratio = r), (where = `${n} ${k ? "probe" : "norm"}: ours ${ours[i]![k]}, torch ${t}`);
    }
  });
  return { ratio, where };
}

interface Run {
  loss: number[];
  gradNorm: number[];
  gradStats: number[][][];
  grad0: Map<string, Float32Array>;
  snapshots: Map<number, Map<string, Float32Array>>;
  seconds: number;
}

let dir = "";
let trainer: DiffusionTrainer;
let init: Map<string, Float32Array>;
let run: Run;

/** Batch b's feeds: the stored ones, and image_features gathered from the feature pool. */
function feedsOf(b: number): Feeds {
  const meta = JSON.parse(f.metadata.feeds!) as Record<string, { shape: number[]; dtype: string }>;
  const out: Feeds = {};
  for (const [name, { shape }] of Object.entries(meta)) {
    const n = shape.reduce((a, c) => a * c, 1);
    const all = f.view(`feed.${name}`) as Float32Array | BigInt64Array;
    out[name] = all.slice(b * n, (b + 1) * n);
  }
  const ref = f.float32("features.ref");
  const empty = f.float32("features.empty");
  const per = empty.length;
  const index = f.view("image_features.index") as BigInt64Array;
  const R = 2 * cfg.pairs;
  const x = new Float32Array(R * per);
  for (let r = 0; r < R; r++) {
    const i = Number(index[b * R + r]!);
    x.set(i * per < ref.length ? ref.subarray(i * per, (i + 1) * per) : empty, r * per);
  }
  out.image_features = x;
  return out;
}

/** The loop of scripts/pretrain-tiny.ts on the fixture's batches; `mutate` may alter the raw gradients. */
async function train(steps: number, mutate?: (step: number, grads: Map<string, Float32Array>) => void): Promise<Run> {
  const t0 = performance.now();
  const weights = new Map([...init].map(([k, v]) => [k, Float32Array.from(v)]));
  const opt = new AdamW({ lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay });
  const feeds = Array.from({ length: cfg.batches }, (_, b) => feedsOf(b));
  const r: Run = { loss: [], gradNorm: [], gradStats: [], grad0: new Map(), snapshots: new Map(), seconds: 0 };
  for (let s = 0; s < steps; s++) {
    const out = await trainer.step(feeds[s % cfg.batches]!, weights);
    mutate?.(s, out.grads);
    if (s < GRAD_STEPS) r.gradStats.push(gradStats(out.grads));
    if (s === 0) for (const n of snapshotWeights) r.grad0.set(n, Float32Array.from(out.grads.get(n)!));
    r.loss.push(out.loss);
    r.gradNorm.push(clipGradNorm(out.grads, cfg.clip));
    opt.step(weights, out.grads, learningRate(sched, s));
    if (cfg.snapshots.includes(s + 1)) r.snapshots.set(s + 1, new Map(snapshotWeights.map((n) => [n, Float32Array.from(weights.get(n)!)])));
  }
  r.seconds = (performance.now() - t0) / 1000;
  return r;
}

beforeAll(async () => {
  // A model folder and IP-Adapter file holding the fixture's starting weights, as pretrain-tiny has them.
  dir = mkdtempSync(join(tmpdir(), "patchdpo-tiny-parity-"));
  const spec = { ...JSON.parse(f.metadata.spec!), tokenizer: JSON.parse(f.metadata.tokenizer!) as BpeVocab } as ModelFolderSpec;
  const projection = JSON.parse(f.metadata.projection!) as ResamplerConfig;
  init = new Map(names.map((n) => [n, f.float32(`init.${n}`)]));
  const entry = (n: string) => ({ shape: f.info(`init.${n}`).shape, data: init.get(n)! });
  const toRelease = ipAdapterKeyMap(unetConfigFromJson(spec.unet));
  const text = new Map<string, { shape: number[]; data: Float32Array }>();
  const unet = new Map<string, { shape: number[]; data: Float32Array }>();
  const ipW = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const n of names) {
    if (n.startsWith("text_encoder/")) text.set(n.slice("text_encoder/".length), entry(n));
    else if (n.startsWith("image_proj.")) ipW.set(n, entry(n));
    else if (toRelease.has(n)) ipW.set(toRelease.get(n)!, entry(n));
    else unet.set(n, entry(n));
  }
  await writeModelFolder(join(dir, "model"), spec, 0, { unet: new MemorySource(unet), text_encoder: new MemorySource(text) });
  await writeIpAdapter(join(dir, "ip.safetensors"), spec.unet, projection, 0, new MemorySource(ipW));
  const model = loadDiffusionModel(join(dir, "model"));
  const ip = loadIpAdapter(join(dir, "ip.safetensors"), "mobilenet_v2", projection.dimHead);
  trainer = new DiffusionTrainer({
    model, ip, pairs: cfg.pairs, height: cfg.size, width: cfg.size, objective: "mse", trainable: () => true, ipScale: cfg.ipScale, threads: 1, memArena: true,
  });
  run = await train(STEPS);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe(`tiny generator training loop vs PyTorch (${STEPS} of ${cfg.steps} steps)`, () => {
  test("the trainer takes the fixture's weights, in its order, and the same learning rates", () => {
    expect([...trainer.initial.keys()]).toEqual(names);
    for (const [n, v] of trainer.initial) expect(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(init.get(n)!.buffer, init.get(n)!.byteOffset, init.get(n)!.byteLength)), n).toBe(true);
    const lr = f64("torch.lr");
    for (let s = 0; s < cfg.steps; s++) expect(Math.abs(learningRate(sched, s) - lr[s]!)).toBeLessThanOrEqual(1e-15);
  });

  test("step 0: full gradients of 9 weights match PyTorch elementwise", () => {
    for (const n of snapshotWeights) {
      const want = f.float32(`torch64.grad0.${n}`);
      const have = run.grad0.get(n)!;
      let scale = 0, worst = 0;
      for (const v of want) scale = Math.max(scale, Math.abs(v));
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(have[i]! - want[i]!) / (1e-4 * (scale + Math.abs(want[i]!))));
      console.log(`grad0 ${n}: worst |d| / 1e-4 (max|g| + |g|) = ${worst.toExponential(2)}`);
      expect(worst, n).toBeLessThanOrEqual(1);
    }
  });

  test(`steps 0-${GRAD_STEPS - 1}: every weight's gradient norm and probe match PyTorch`, () => {
    const torch = f64("torch64.grad_stats"), torch32 = f64("torch32.grad_stats");
    for (let s = 0; s < GRAD_STEPS; s++) {
      const offset = s * names.length * 2;
      const { ratio, where } = gradStatsRatio(run.gradStats[s]!, torch, offset);
      // The tolerance admits PyTorch's own float32 run.
      const r32 = gradStatsRatio(names.map((_, i) => [torch32[offset + 2 * i]!, torch32[offset + 2 * i + 1]!]), torch, offset).ratio;
      console.log(`gradient statistics, step ${s}: worst / tolerance ${ratio.toExponential(2)} (${where}); torch32 ${r32.toExponential(2)}`);
      expect(ratio, `step ${s}: ${where}`).toBeLessThanOrEqual(1);
      expect(r32).toBeLessThanOrEqual(1);
    }
  });

  test("the loss curve and gradient norms track PyTorch's within float32 drift", () => {
    const loss = f64("torch64.loss"), loss32 = f64("torch32.loss"), norm = f64("torch64.grad_norm");
    const norm32 = f64("torch32.grad_norm");
    let worst = 0, worst32 = 0, worstNorm = 0, worstNorm32 = 0, at = 0;
    for (let s = 0; s < STEPS; s++) {
      const d = Math.abs(run.loss[s]! - loss[s]!) / loss[s]!;
      const dn = Math.abs(run.gradNorm[s]! - norm[s]!) / norm[s]!;
      if (d / lossTol(s) > worst) (worst = d / lossTol(s)), (at = s);
      worstNorm = Math.max(worstNorm, dn / normTol(s));
      worst32 = Math.max(worst32, Math.abs(loss32[s]! - loss[s]!) / loss[s]! / lossTol(s));
      worstNorm32 = Math.max(worstNorm32, Math.abs(norm32[s]! - norm[s]!) / norm[s]! / normTol(s));
      expect(d, `step ${s}: loss ${run.loss[s]}, PyTorch ${loss[s]}`).toBeLessThanOrEqual(lossTol(s));
      expect(dn, `step ${s}: gradient norm ${run.gradNorm[s]}, PyTorch ${norm[s]}`).toBeLessThanOrEqual(normTol(s));
    }
    const rel = run.loss.map((l, s) => Math.abs(l - loss[s]!) / loss[s]!);
    console.log(`loss: ${loss[0]!.toFixed(4)} -> ${loss[STEPS - 1]!.toFixed(4)} over ${STEPS} steps (${run.seconds.toFixed(1)} s); ours vs torch64 max rel ${Math.max(...rel).toExponential(2)} (first 10 steps ${Math.max(...rel.slice(0, 10)).toExponential(2)}); worst / tolerance: ours ${worst.toExponential(2)} at step ${at}, gradient norm ${worstNorm.toExponential(2)}; torch32 ${worst32.toExponential(2)}, gradient norm ${worstNorm32.toExponential(2)}`);
    // The tolerances admit PyTorch's own float32 run over these steps.
    expect(worst32).toBeLessThanOrEqual(1);
    expect(worstNorm32).toBeLessThanOrEqual(1);
  });

  // (Skipped when TINY_TRAIN_STEPS stops short of the first snapshot.)
  test.skipIf(!cfg.snapshots.some((s) => s <= STEPS))("a few weights after training match PyTorch's", () => {
    const drift32 = f64("torch32.snapshot_drift");
    const done = cfg.snapshots.filter((s) => s <= STEPS);
    for (const s of done) {
      const k = cfg.snapshots.indexOf(s);
      for (const [j, n] of snapshotWeights.entries()) {
        const have = run.snapshots.get(s)!.get(n)!, want = f.float32(`torch64.at${s}.${n}`), start = init.get(n)!;
        let d2 = 0, m2 = 0;
        for (let i = 0; i < want.length; i++) {
          d2 += (have[i]! - want[i]!) ** 2;
          m2 += (want[i]! - start[i]!) ** 2;
        }
        const rel = Math.sqrt(d2 / m2);
        console.log(`after ${s} steps, ${n}: ||ours - torch64|| / ||torch64 - start|| = ${rel.toExponential(2)} (torch32 ${drift32[k * snapshotWeights.length + j]!.toExponential(2)})`);
        expect(rel, `${n} after ${s} steps`).toBeLessThanOrEqual(WEIGHT_TOL);
        expect(drift32[k * snapshotWeights.length + j]!).toBeLessThanOrEqual(WEIGHT_TOL);
      }
    }
  });

  test("the gradient check rejects a gradient scaled by 0.9 in one weight (negative control)", () => {
    const torch = f64("torch64.grad_stats");
    for (const n of ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight", "text_encoder/text_model.encoder.layers.0.mlp.fc1.bias"]) {
      const i = names.indexOf(n);
      const mutated = run.gradStats[0]!.map((row, j) => (j === i ? row.map((v) => 0.9 * v) : row));
      const { ratio } = gradStatsRatio(mutated, torch, 0);
      console.log(`${n} gradient x 0.9 at step 0: worst / tolerance ${ratio.toFixed(1)}`);
      expect(ratio, n).toBeGreaterThan(1);
    }
  });
});
