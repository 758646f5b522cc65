// Inputs of the tiny generator's training-loop parity fixture (tests/train/tiny-train-parity.test.ts):
// the starting weights and the batches, exactly as DiffusionTrainer.prepare makes them, of a small
// version of the tiny world's generator (scripts/pretrain-tiny.ts): the same tinySpec (CLIP text
// encoder, UNet with IP-Adapter decoupled cross-attention, Resampler TINY_PROJECTION over
// MobileNetV2 features, pixel-unshuffle VAE, v-prediction, DDIM scaled_linear schedule), all of it
// trainable, objective mse, CFG dropout as in pretraining; only smaller: UNet widths [16, 32],
// 32x32 images with pixel-unshuffle factor 2 (12 latent channels at 16x16), 2 pairs per step.
// bench/parity/make_tiny_train_fixture.py then trains the same model in PyTorch on these inputs and
// adds its per-step losses, gradient norms and a few trained weights to the same file.
//
//   bun bench/parity/make_tiny_train_fixture.ts
//   OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_tiny_train_fixture.py
//
// Writes tests/fixtures/parity/tiny_train.safetensors (3.0 MB with the PyTorch results), which holds:
//   init.<weight>          every trainable weight at the start (the trainer's names), F16: the
//                          seeded fresh weights rounded to float16 so the file stays small; both
//                          sides start from exactly these values (as float32)
//   feed.<name>            [BATCHES, ...] every feed of prepare() that the mse training graph
//                          takes, except image_features: noisy, target, timestep, te0_input_ids
//                          (the quality / foreground maps are no inputs of mse; metadata
//                          "unusedFeeds" names them)
//   features.ref           [SUBJECTS, 49, 1280] F16: MobileNetV2 features of the subjects'
//                          references (computed by trainer.encodeImages, rounded to float16),
//                          handed to prepare() as PairExample.referenceFeatures
//   features.empty         [1, 49, 1280] F32: the empty image prompt's features, as prepare()
//                          computes them for a pair whose image is dropped
//   image_features.index   [BATCHES, 2 * PAIRS] I64: row r of batch b's image_features is
//                          features.ref[i] (i < SUBJECTS) or features.empty (i = SUBJECTS); checked
//                          here to reproduce prepare()'s image_features byte for byte
// Training step s (0-based) uses batch s % BATCHES: a fixed set of batches seen over and over
// (the feeds of hundreds of distinct steps would not fit a small committed file).
// Metadata: "config" (sizes, optimizer, schedule), "spec" (the model folder's configs),
// "tokenizer" (its BPE vocabulary, so the test can rebuild the folder), "projection", "weights"
// (trainable names in the trainer's order), "feeds" (names, per-batch shapes, dtypes).
//
// Deterministic: a rerun writes the same inputs byte for byte (checked). It reads the tiny world
// (catalogue subjects, renders, tinySpec's tokenizer corpus) from lib/tinyworld and
// scripts/pretrain-tiny.ts, so edits there change what a rerun writes; the test reads only the file.
//
// The batches follow scripts/pretrain-tiny.ts's `example`: a catalogue subject's reference with
// the "isolated on a white background" prompt, and as the generated row either the reference again
// (same prompt) or the subject in a flat scene (scene prompt), each with probability 1/2.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import { f16ArrayToF32, f32ArrayToF16, type TensorInput, writeSafetensors } from "../../lib/io/safetensors.ts";
import { Rng } from "../../lib/rng.ts";
import { DiffusionTrainer, type PairExample } from "../../lib/train/diffusion.ts";
import { CATALOGUE, FLAT_SCENES, tinyCorpus, tinyReferencePrompt, tinyScenePrompt } from "../../lib/tinyworld/catalogue.ts";
import { describeSubject, renderReference, renderScene } from "../../lib/tinyworld/index.ts";
import { TINY_PROJECTION, tinySpec } from "../../scripts/pretrain-tiny.ts";

export const FIXTURE = join(import.meta.dir, "../../tests/fixtures/parity/tiny_train.safetensors");

const CONFIG = {
  seed: 0,
  pairs: 2,
  size: 32,
  vaeFactor: 2,
  channels: [16, 32],
  prediction: "v_prediction",
  objective: "mse",
  subjects: 3,
  batches: 10,
  sceneShare: 0.5,
  /** Training steps of the PyTorch reference (the test runs a prefix of them). */
  steps: 300,
  /** Steps at which the reference saves the weights of SNAPSHOT_WEIGHTS (the test's default length and the end). */
  snapshots: [200, 300],
  // Optimizer and schedule as scripts/pretrain-tiny.ts: AdamW (torch defaults, weight decay 0.01),
  // global-norm clipping at 1, cosine schedule with linear warm-up down to 5% of the peak rate.
  lr: 5e-4,
  warmup: 30,
  minLrShare: 0.05,
  weightDecay: 0.01,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  clip: 1.0,
  ipScale: 1,
};

/** Spec of the small generator: tinySpec's model at [16, 32] widths, 32x32 images, factor 2. */
function spec(): ModelFolderSpec {
  const s = tinySpec(tinyCorpus(), CONFIG.prediction, CONFIG.channels);
  const latent = 3 * CONFIG.vaeFactor ** 2;
  s.unet = { ...s.unet, in_channels: latent, out_channels: latent, sample_size: CONFIG.size / CONFIG.vaeFactor };
  s.vae = { ...s.vae, factor: CONFIG.vaeFactor };
  return s;
}

const roundF16 = (x: Float32Array) => f16ArrayToF32(f32ArrayToF16(x));

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "tiny-train-fixture-"));
  try {
    const sp = spec();
    await writeModelFolder(join(dir, "model"), sp, CONFIG.seed);
    await writeIpAdapter(join(dir, "ip.safetensors"), sp.unet, TINY_PROJECTION, CONFIG.seed + 10);
    const model = loadDiffusionModel(join(dir, "model"));
    const ip = loadIpAdapter(join(dir, "ip.safetensors"), "mobilenet_v2", TINY_PROJECTION.dimHead);
    const B = CONFIG.pairs, R = 2 * B;
    const trainer = new DiffusionTrainer({
      model, ip, pairs: B, height: CONFIG.size, width: CONFIG.size, objective: "mse", trainable: () => true, threads: 1, memArena: true,
    });

    // Subjects: the first SUBJECTS catalogue entries of different classes, outside the held-out set.
    const chosen = CATALOGUE.filter((e) => !e.heldOut).filter((e, i, all) => all.findIndex((o) => o.subject.classNoun === e.subject.classNoun) === i).slice(0, CONFIG.subjects);
    const per = trainer.featureShape.reduce((a, b) => a * b, 1);
    const refFeatures: Float32Array[] = [];
    for (let i = 0; i < chosen.length; i += B) {
      const refs = chosen.slice(i, i + B).map((e) => renderReference(e.subject, 224).image);
      const f = await trainer.encodeImages([...refs, ...Array(B - refs.length).fill(null)]);
      refs.forEach((_, j) => refFeatures.push(roundF16(f.slice(j * per, (j + 1) * per))));
    }
    // The empty image prompt, computed as prepare() does (a batch of empty images, first row).
    const empty = (await trainer.encodeImages(Array(B).fill(null))).slice(0, per);
    const pool = [...refFeatures, empty];
    const known = chosen.map((e, i) => {
      const text = describeSubject(e.subject).text;
      return { subject: e.subject, text, small: renderReference(e.subject, CONFIG.size).image, features: refFeatures[i]! };
    });
    const example = (rng: Rng): PairExample => {
      const k = known[rng.int(known.length)]!;
      const referencePrompt = tinyReferencePrompt(k.text);
      const base = { reference: k.small, referenceFeatures: k.features, referencePrompt };
      if (rng.uniform() >= CONFIG.sceneShare) return { ...base, generated: k.small, prompt: referencePrompt };
      const scene = FLAT_SCENES[rng.int(FLAT_SCENES.length)]!;
      return { ...base, generated: renderScene(k.subject, scene, CONFIG.size, new Rng(rng.nextU32())).image, prompt: tinyScenePrompt(k.text, scene) };
    };

    const feeds: Record<string, { dtype: "F32" | "I64"; shape: number[]; parts: (Float32Array | BigInt64Array)[] }> = {};
    const index = new BigInt64Array(CONFIG.batches * R);
    let dropped = 0;
    const unused = new Set<string>();
    const shapes = new Map((await (trainer as unknown as { train: Promise<{ inputs: { name: string; shape: number[] }[] }> }).train).inputs.map((i) => [i.name, i.shape]));
    for (let b = 0; b < CONFIG.batches; b++) {
      const rng = new Rng((CONFIG.seed * 1_000_003 + b) >>> 0);
      const batch = Array.from({ length: B }, () => example(rng));
      const f = await trainer.prepare(batch, rng);
      for (const [name, v] of Object.entries(f)) {
        if (name === "image_features") continue;
        const shape = shapes.get(name);
        if (!shape) { unused.add(name); continue; } // step() passes only the graph's inputs
        const dtype = v instanceof BigInt64Array ? "I64" : v instanceof Float32Array ? "F32" : null;
        if (!dtype) throw new Error(`feed ${name}: unexpected array type ${v.constructor.name}`);
        (feeds[name] ??= { dtype, shape, parts: [] }).parts.push(v as Float32Array | BigInt64Array);
      }
      // image_features: every row is one of the pool's entries, byte for byte.
      const x = f.image_features as Float32Array;
      for (let r = 0; r < R; r++) {
        const row = x.subarray(r * per, (r + 1) * per);
        const i = pool.findIndex((p) => p.every((v, j) => Object.is(v, row[j])));
        if (i < 0) throw new Error(`batch ${b} row ${r}: image features match no pool entry`);
        index[b * R + r] = BigInt(i);
        if (i === pool.length - 1) dropped++;
      }
    }

    const out: Record<string, TensorInput> = {};
    const initShapes = trainer.shapes();
    for (const [name, v] of trainer.initial) out[`init.${name}`] = { dtype: "F16", shape: initShapes.get(name)!, data: f32ArrayToF16(v) };
    const feedMeta: Record<string, { shape: number[]; dtype: string }> = {};
    for (const [name, { dtype, shape, parts }] of Object.entries(feeds)) {
      const n = parts[0]!.length;
      const data = dtype === "I64" ? new BigInt64Array(n * parts.length) : new Float32Array(n * parts.length);
      parts.forEach((p, i) => (data as Float32Array).set(p as Float32Array, i * n));
      out[`feed.${name}`] = { dtype, shape: [CONFIG.batches, ...shape], data };
      feedMeta[name] = { shape, dtype };
    }
    const refs = new Float32Array(refFeatures.length * per);
    refFeatures.forEach((f, i) => refs.set(f, i * per));
    out["features.ref"] = { dtype: "F16", shape: [refFeatures.length, ...trainer.featureShape], data: f32ArrayToF16(refs) };
    out["features.empty"] = { dtype: "F32", shape: [1, ...trainer.featureShape], data: empty };
    out["image_features.index"] = { dtype: "I64", shape: [CONFIG.batches, R], data: index };
    const { tokenizer, ...configs } = sp;
    await writeSafetensors(FIXTURE, out, {
      generator: "bench/parity/make_tiny_train_fixture.ts (inputs), bench/parity/make_tiny_train_fixture.py (PyTorch results)",
      config: JSON.stringify(CONFIG),
      spec: JSON.stringify(configs),
      tokenizer: JSON.stringify(tokenizer),
      projection: JSON.stringify(TINY_PROJECTION),
      weights: JSON.stringify([...trainer.initial.keys()]),
      feeds: JSON.stringify(feedMeta),
      unusedFeeds: JSON.stringify([...unused]),
      subjects: JSON.stringify(chosen.map((e) => e.subject.id)),
    });
    const params = [...trainer.initial.values()].reduce((s, v) => s + v.length, 0);
    console.log(`wrote ${FIXTURE}: ${trainer.initial.size} weights (${params} values), ${CONFIG.batches} batches of ${B} pairs, ${dropped} of ${CONFIG.batches * R} rows with the empty image prompt`);
    console.log("next: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_tiny_train_fixture.py");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await main();
