// A small tiny-world run made by the real steps, and a tiny random-weight model folder with an
// IP-Adapter (the same code path as SD), for the rerun and fault-injection tests.

import { cpSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../../../lib/diffusion/model-folder.ts";
import { readJsonlAll } from "../../../lib/io/manifest.ts";
import { PromptRow } from "../../../lib/io/schemas.ts";
import type { ImageProjectionConfig } from "../../../lib/models/ip-adapter.ts";
import { trainBpe } from "../../../lib/models/bpe-train.ts";
import { DEFAULTS as GEN_DEFAULTS, run as generate } from "../../../scripts/generate-images.ts";
import { run as score } from "../../../scripts/score-patches.ts";
import { DEFAULTS as PROMPT_DEFAULTS, run as synthesize } from "../../../scripts/synthesize-prompts.ts";

/** Image side of the tiny runs (the model's pixel-unshuffle factor 2 makes 16x16 latents). */
export const SIZE = 32;
export const PROJ: ImageProjectionConfig = { kind: "resampler", embeddingDim: 1280, dim: 16, depth: 1, dimHead: 8, heads: 2, numQueries: 2, outputDim: 32, ffMult: 2 };
export const UNET = {
  in_channels: 12, out_channels: 12, block_out_channels: [16, 32], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  layers_per_block: 1, cross_attention_dim: 32, attention_head_dim: 2, norm_num_groups: 8, sample_size: SIZE / 2,
};

/** prompts -> references -> generations (the renderer) -> patch scores (raw MobileNetV2, latent grid 16). */
export async function tinyRun(dir: string, o: { subjects?: number; perReference?: number; scores?: boolean } = {}): Promise<string> {
  await synthesize({ run: dir, subjects: o.subjects ?? 2, scenesPerSubject: 2, world: "tiny", log: () => {} });
  const gen = { run: dir, model: "tinyworld", width: SIZE, height: SIZE, threads: 1 };
  await generate({ ...gen, mode: "reference" });
  await generate({ ...gen, mode: "personalized", perReference: o.perReference ?? 2 });
  if (o.scores !== false) await score({ run: dir, encoder: "mobilenet_v2", latentGrid: SIZE / 2, threads: 1, batch: 4 });
  return dir;
}

/**
 * Prompts and 224 px white-background references of 2 catalogue subjects, and `size` px generations
 * with planted defects from the renderer (no ONNX): the pairs that score-patches and eval read in the
 * tests that run one step on two devices or precisions (tests/scripts/webgpu.test.ts, precision.test.ts).
 */
export async function tinyWorldPairs(dir: string, size: number): Promise<string> {
  await synthesize({ ...PROMPT_DEFAULTS, run: dir, subjects: 2, scenesPerSubject: 1, seed: 0, world: "tiny", tinySplit: "test", force: false, log: () => {} });
  const gen = { ...GEN_DEFAULTS, run: dir, model: "tinyworld", seed: 0, threads: 1 };
  await generate({ ...gen, mode: "reference", width: 224, height: 224 });
  await generate({ ...gen, mode: "personalized", width: size, height: size, perReference: 1, defectRate: 1 });
  return dir;
}

/** A tiny random-weight model folder at `dir` (native size SIZE) and its IP-Adapter file. */
export async function tinyModel(dir: string): Promise<{ model: string; ip: string }> {
  const vocab = trainBpe(["a photo of a teapot on a white background", "in the jungle on the beach", "duck cat robot purple dots stripes"], 60);
  const spec: ModelFolderSpec = {
    unet: UNET,
    vae: { _class_name: "PixelUnshuffleVAE", factor: 2, in_channels: 3, scaling_factor: 1 },
    textEncoder: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: Object.keys(vocab.vocab).length, bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"] },
    tokenizer: vocab,
    scheduler: { _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, clip_sample: false, set_alpha_to_one: false, steps_offset: 1 },
  };
  await writeModelFolder(join(dir, "model"), spec, 1);
  await writeIpAdapter(join(dir, "ip.safetensors"), UNET, PROJ, 2);
  return { model: join(dir, "model"), ip: join(dir, "ip.safetensors") };
}

export const copyRun = (from: string, to: string) => cpSync(from, to, { recursive: true });
export const prompts = (dir: string) => readJsonlAll(join(dir, "prompts.jsonl"), PromptRow);

/** Every file under `dir` (relative path -> bytes), leaving out what legitimately differs between runs. */
export function snapshot(dir: string, skip: (rel: string) => boolean = () => false): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      const rel = relative(dir, p);
      if (skip(rel)) continue;
      if (statSync(p).isDirectory()) walk(p);
      else out.set(rel, readFileSync(p));
    }
  };
  walk(dir);
  return out;
}
