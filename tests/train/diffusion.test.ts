// The personalized-diffusion training step on a tiny random-weight model (the same code path a
// real SD/SDXL + IP-Adapter run takes): gradients reach exactly the trainable weights, AdamW on
// the IP-Adapter's decoupled cross-attention overfits a fixed batch, patch-dpo starts at
// log 2 + lambda * keep (theta = reference), and the trained weights save in the release layout.
// The pairing rules that no gradient check covers are checked exactly on the fed tensors: a pair's
// two rows share noise and timestep bit for bit, image-prompt dropout empties exactly the rows of
// the pairs it decides, and q_ref / q_gen reach the reference / generated half of the batch.

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import { Rng } from "../../lib/rng.ts";
import { AdamW } from "../../lib/train/adamw.ts";
import { type CfgDropout, DiffusionTrainer, type PairExample, cfgDecision, drawPairs, mapFeeds, saveIpAdapter } from "../../lib/train/diffusion.ts";
import { trainBpe } from "../../lib/models/bpe-train.ts";
import { ipAdapterKeyMap } from "../../lib/models/unet.ts";

setDefaultTimeout(120_000);

const vocab = trainBpe(["a red teapot on the beach"], 30);
const n = Object.keys(vocab.vocab).length;
const SPEC: ModelFolderSpec = {
  unet: { in_channels: 12, out_channels: 12, block_out_channels: [16, 32], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block: 1, cross_attention_dim: 32, attention_head_dim: 2, norm_num_groups: 8 },
  vae: { _class_name: "PixelUnshuffleVAE", factor: 2, in_channels: 3, scaling_factor: 1 },
  textEncoder: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: n, bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"] },
  tokenizer: vocab,
  scheduler: { _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 },
};

async function setup(objective: "mse" | "weighted" | "patch-dpo") {
  const dir = mkdtempSync(join(tmpdir(), "patchdpo-dtrain-"));
  await writeModelFolder(join(dir, "model"), SPEC, 1);
  await writeIpAdapter(join(dir, "ip.safetensors"), SPEC.unet, { kind: "resampler", embeddingDim: 1280, dim: 16, depth: 1, dimHead: 8, heads: 2, numQueries: 2, outputDim: 32, ffMult: 2 }, 2);
  const model = loadDiffusionModel(join(dir, "model"));
  const ip = loadIpAdapter(join(dir, "ip.safetensors"), "mobilenet_v2");
  const trainer = new DiffusionTrainer({ model, ip, pairs: 2, height: 16, width: 16, objective, dpo: { beta: 100, lambda: 0.5 }, trainable: (name) => name.includes("_ip."), threads: 1 });
  return { dir, model, ip, trainer };
}

const img = (r: number, g: number, b: number) => ({ width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).map((_, i) => [r, g, b][i % 3]!) });
const pairs = (): PairExample[] => [
  { reference: img(200, 30, 30), generated: img(180, 60, 40), prompt: "a red teapot", qRef: new Float32Array(64).fill(0.8), qGen: new Float32Array(64).fill(0.3) },
  { reference: img(30, 30, 200), generated: img(50, 40, 190), prompt: "a teapot on the beach", qRef: new Float32Array(64).fill(0.6), qGen: new Float32Array(64).fill(0.9) },
];

describe("DiffusionTrainer", () => {
  test("gradients for exactly the IP-Adapter projections; AdamW overfits a fixed batch (mse)", async () => {
    const { dir, model, ip, trainer } = await setup("mse");
    const names = [...trainer.shapes().keys()];
    expect(names.length).toBe(ipAdapterKeyMap(model.unet.config).size); // to_k_ip and to_v_ip of every cross-attention
    expect(names.every((x) => /attn2\.processor\.to_[kv]_ip\.0\.weight$/.test(x))).toBe(true);
    const weights = new Map([...trainer.initial].map(([k, v]) => [k, Float32Array.from(v)]));
    const feeds = await trainer.prepare(pairs(), new Rng(0), { image: 0, text: 0, both: 0 });
    const opt = new AdamW({ lr: 3e-3, weightDecay: 0 });
    const losses: number[] = [];
    for (let i = 0; i < 15; i++) {
      const r = await trainer.step(feeds, weights);
      expect([...r.grads.keys()].sort()).toEqual([...names].sort());
      losses.push(r.loss);
      opt.step(weights, r.grads);
    }
    expect(losses.at(-1)!).toBeLessThan(losses[0]!);
    // The trained weights save in the release layout and load back.
    await saveIpAdapter(join(dir, "trained.safetensors"), model, ip, weights);
    const back = loadIpAdapter(join(dir, "trained.safetensors"), "mobilenet_v2");
    expect(back.source.has("ip_adapter.1.to_k_ip.weight")).toBe(true);
    const first = names.find((x) => x.startsWith("down_blocks") && x.includes("to_k_ip"))!;
    expect(Array.from(back.source.float32("ip_adapter.1.to_k_ip.weight"))).toEqual(Array.from(weights.get(first)!));
  });

  test("patch-dpo at the starting weights: m_w = m_l = 0, so loss = log 2 + lambda * keep", async () => {
    const { trainer } = await setup("patch-dpo");
    const feeds = await trainer.prepare(pairs(), new Rng(1), { image: 0, text: 0, both: 0 });
    const r = await trainer.step(feeds, trainer.initial);
    expect(r.logs.dpoLoss!).toBeCloseTo(Math.log(2), 5);
    expect(r.loss).toBeCloseTo(Math.log(2) + 0.5 * r.logs.keep!, 5);
    expect(r.logs.mse!).toBeCloseTo(r.logs.refMse!, 5);
  });

  test("CFG dropout empties the prompt of a dropped pair in both of its rows", async () => {
    const { trainer } = await setup("mse");
    const feeds = await trainer.prepare(pairs(), new Rng(2), { image: 0, text: 1, both: 0 });
    const ids = feeds.te0_input_ids as BigInt64Array;
    // Every row is the empty prompt: bos, eos, padding.
    for (let r = 0; r < 4; r++) expect(Number(ids[r * 77 + 2])).toBe(Number(ids[r * 77 + 1]));
  });
});

const NO_DROPOUT: CfgDropout = { image: 0, text: 0, both: 0 };
const rowsOf = (a: ArrayLike<number>, rows: number) => {
  const per = a.length / rows;
  return Array.from({ length: rows }, (_, r) => Array.from(a).slice(r * per, (r + 1) * per));
};

describe("pairing rules, on the fed tensors", () => {
  test("drawPairs: rows i and B + i get bit-identical noise and the same timestep; pairs differ", () => {
    const B = 3, per = 40;
    const d = drawPairs(B, per, 1000, new Rng(11), NO_DROPOUT);
    const noise = rowsOf(d.noise, 2 * B);
    for (let i = 0; i < B; i++) {
      expect(noise[B + i]).toEqual(noise[i]!);
      expect(d.timesteps[B + i]).toBe(d.timesteps[i]!);
    }
    // Not one noise for the whole batch: the pairs themselves differ.
    expect(noise[1]).not.toEqual(noise[0]!);
    expect(new Set(d.timesteps).size).toBe(B);
  });

  test("prepare: a pair's reference and generated rows are fed bit-identical noise (the epsilon target) and timesteps", async () => {
    const { trainer } = await setup("mse");
    expect(trainer.schedule.predictionType).toBe("epsilon"); // so the fed target is the noise itself
    const feeds = await trainer.prepare(pairs(), new Rng(3), NO_DROPOUT);
    const target = rowsOf(feeds.target as Float32Array, 4);
    const t = Array.from(feeds.timestep as Float32Array);
    for (let i = 0; i < 2; i++) {
      expect(target[2 + i]).toEqual(target[i]!);
      expect(t[2 + i]).toBe(t[i]!);
    }
    expect(target[1]).not.toEqual(target[0]!);
    // The noisy rows are those latents noised at those timesteps: row i is pair i's reference
    // image, row B + i its generated image (pixel-unshuffle VAE: channel c holds colour c >> 2).
    const x0 = rowsOf(trainer.schedule.predictedX0(feeds.target as Float32Array, feeds.noisy as Float32Array, t), 4);
    const colours = [[200, 30, 30], [30, 30, 200], [180, 60, 40], [50, 40, 190]]; // [references ; generated]
    for (let r = 0; r < 4; r++) {
      const per = x0[r]!.length / 12;
      for (let c = 0; c < 12; c++) expect(x0[r]![c * per + 5]!).toBeCloseTo((colours[r]![c >> 2]! / 255 - 0.5) / 0.5, 3);
    }
  });

  test("cfgDecision: each share of pairs is exactly its probability; the intervals lie end to end", () => {
    const d: CfgDropout = { both: 0.05, image: 0.1, text: 0.2 };
    const N = 1000;
    const all = Array.from({ length: N }, (_, k) => cfgDecision((k + 0.5) / N, d));
    expect(all.filter((x) => x.image && x.text).length).toBe(50);
    expect(all.filter((x) => x.image && !x.text).length).toBe(100);
    expect(all.filter((x) => x.text && !x.image).length).toBe(200);
    expect(all.filter((x) => !x.image && !x.text).length).toBe(650);
    expect(cfgDecision(0.04, d)).toEqual({ image: true, text: true });
    expect(cfgDecision(0.06, d)).toEqual({ image: true, text: false });
    expect(cfgDecision(0.2, d)).toEqual({ image: false, text: true });
    expect(cfgDecision(0.36, d)).toEqual({ image: false, text: false });
  });

  test("image-prompt dropout empties the image prompt of exactly the dropped pairs, in both of their rows", async () => {
    const { trainer } = await setup("mse");
    const per = trainer.featureShape.reduce((a, b) => a * b, 1);
    // Each reference carries its own recognizable features; a dropped pair gets the empty image's.
    const batch = pairs().map((p, i) => ({ ...p, referenceFeatures: new Float32Array(per).fill(3 + i) }));
    const empty = Array.from((await trainer.encodeImages([null, null])).subarray(0, per));
    expect(empty).not.toEqual(Array.from(batch[0]!.referenceFeatures)); // the test can tell them apart
    const fed = async (rng: Rng, dropout: CfgDropout) => {
      const feeds = await trainer.prepare(batch, rng, dropout);
      return { rows: rowsOf(feeds.image_features as Float32Array, 4), ids: feeds.te0_input_ids as BigInt64Array };
    };
    const expectRows = (rows: number[][], dropped: boolean[]) => {
      for (let r = 0; r < 4; r++) expect(rows[r]).toEqual(dropped[r % 2] ? empty : Array.from(batch[r % 2]!.referenceFeatures));
    };
    expectRows((await fed(new Rng(0), { image: 1, text: 0, both: 0 })).rows, [true, true]);
    expectRows((await fed(new Rng(0), { image: 0, text: 0, both: 1 })).rows, [true, true]);
    expectRows((await fed(new Rng(0), NO_DROPOUT)).rows, [false, false]);
    expectRows((await fed(new Rng(0), { image: 0, text: 1, both: 0 })).rows, [false, false]); // text dropout keeps the image
    // A seeded draw that drops one pair and keeps the other: exactly that pair's two rows are empty.
    const d: CfgDropout = { image: 0.5, text: 0, both: 0 };
    const perRow = 12 * 8 * 8;
    const seed = Array.from({ length: 50 }, (_, s) => s).find((s) => new Set(drawPairs(2, perRow, 1000, new Rng(s), d).dropImage).size === 2)!;
    expect(seed).toBeDefined();
    const decided = drawPairs(2, perRow, 1000, new Rng(seed), d).dropImage;
    const { rows, ids } = await fed(new Rng(seed), d);
    expectRows(rows, decided);
    for (let r = 0; r < 4; r++) expect(Number(ids[r * 77 + 2])).not.toBe(Number(ids[r * 77 + 1])); // the text stays
  });

  test("quality maps: q_ref reaches the reference half, q_gen the generated half", async () => {
    // Feeds: each pair's own maps, in pair order.
    const ramp = (i: number, off: number) => Float32Array.from({ length: 64 }, (_, k) => off + (i * 64 + k) / 1000);
    const batch = pairs().map((p, i) => ({ ...p, qRef: ramp(i, 0), qGen: ramp(i, 0.5), fgRef: ramp(i, 0.2), fgGen: ramp(i, 0.3) }));
    const m = mapFeeds(batch, 8, 8);
    expect(Array.from(m.q_ref)).toEqual([...batch[0]!.qRef, ...batch[1]!.qRef]);
    expect(Array.from(m.q_gen)).toEqual([...batch[0]!.qGen, ...batch[1]!.qGen]);
    expect(Array.from(m.fg_ref)).toEqual([...batch[0]!.fgRef, ...batch[1]!.fgRef]);
    expect(Array.from(m.fg_gen)).toEqual([...batch[0]!.fgGen, ...batch[1]!.fgGen]);
    // Through the trainer (weighted: w = [1 - q_ref ; q_gen]): q_ref = 1, q_gen = 0 weighs every
    // row 0, so the loss is exactly 0 only if q_ref is fed to the reference rows' weights and q_gen
    // to the generated rows'; swapped, every weight would be 1.
    const { trainer } = await setup("weighted");
    const withMaps = (qRef: number, qGen: number) => pairs().map((p) => ({ ...p, qRef: new Float32Array(64).fill(qRef), qGen: new Float32Array(64).fill(qGen) }));
    const feeds = await trainer.prepare(withMaps(1, 0), new Rng(4), NO_DROPOUT);
    expect(Array.from(feeds.q_ref as Float32Array).every((v) => v === 1)).toBe(true);
    const zero = await trainer.step(feeds, trainer.initial);
    expect(zero.logs.mse!).toBeGreaterThan(0.1);
    expect(zero.loss).toBe(0);
    const ones = await trainer.step(await trainer.prepare(withMaps(0, 1), new Rng(4), NO_DROPOUT), trainer.initial);
    expect(ones.loss).toBeCloseTo(ones.logs.mse!, 6);
  });
});

