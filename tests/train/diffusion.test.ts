// The personalized-diffusion training step on a tiny random-weight model (the same code path a
// real SD/SDXL + IP-Adapter run takes): gradients reach exactly the trainable weights, AdamW on
// the IP-Adapter's decoupled cross-attention overfits a fixed batch, patch-dpo starts at
// log 2 + lambda * keep (theta = reference), and the trained weights save in the release layout.

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import { Rng } from "../../lib/rng.ts";
import { AdamW } from "../../lib/train/adamw.ts";
import { DiffusionTrainer, type PairExample, saveIpAdapter } from "../../lib/train/diffusion.ts";
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

async function setup(objective: "mse" | "patch-dpo") {
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
