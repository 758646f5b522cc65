// Writes a diffusers-layout model folder from configs and weights: how tests make tiny
// random-weight models of every kind, and how the tiny world's model is created before training.
// What `loadDiffusionModel` reads back is exactly what a user's downloaded folder looks like.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { type TensorInput, writeSafetensors } from "../io/safetensors.ts";
import { clipTextConfigFromJson, clipTextParamShapes } from "../models/clip-text.ts";
import { imageProjParamShapes, type ImageProjectionConfig } from "../models/ip-adapter.ts";
import { ipAdapterKeyMap, unetConfigFromJson, unetParamShapes } from "../models/unet.ts";
import { vaeConfigFromJson, vaeParamShapes } from "../models/vae.ts";
import { initWeights } from "../nn/init.ts";
import type { WeightSource } from "../nn/params.ts";
import { CLIP_EOS } from "../models/clip-tokenizer.ts";
import { type BpeVocab, mergesTxt } from "../models/bpe-train.ts";

type Json = Record<string, unknown>;

export interface ModelFolderSpec {
  unet: Json;
  /** AutoencoderKL config, or { _class_name: "PixelUnshuffleVAE", factor, in_channels, scaling_factor }. */
  vae: Json;
  textEncoder: Json;
  tokenizer: BpeVocab;
  /** SDXL: the second text encoder (CLIPTextModelWithProjection) and its tokenizer. */
  textEncoder2?: Json;
  tokenizer2?: BpeVocab;
  scheduler: Json;
}

/** Tensors of a weight source, for writing. */
export function tensorsOf(source: WeightSource, names: Iterable<string> = source.names()): Record<string, TensorInput> {
  const out: Record<string, TensorInput> = {};
  for (const n of names) out[n] = { dtype: "F32", shape: source.shape(n), data: source.float32(n) };
  return out;
}

async function writeTokenizer(dir: string, v: BpeVocab, padToken = CLIP_EOS) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "vocab.json"), JSON.stringify(v.vocab));
  writeFileSync(join(dir, "merges.txt"), mergesTxt(v));
  await writeJsonAtomic(join(dir, "tokenizer_config.json"), { model_max_length: 77, pad_token: padToken, bos_token: "<|startoftext|>", eos_token: CLIP_EOS, unk_token: CLIP_EOS });
}

/** A complete model folder with fresh (seeded) weights; `weights` overrides components (trained ones). */
export async function writeModelFolder(dir: string, spec: ModelFolderSpec, seed: number, weights: Partial<Record<"unet" | "vae" | "text_encoder" | "text_encoder_2", WeightSource>> = {}): Promise<void> {
  const xl = !!spec.textEncoder2;
  await writeJsonAtomic(join(dir, "model_index.json"), {
    _class_name: xl ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline",
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", String(spec.vae._class_name ?? "AutoencoderKL")],
    text_encoder: ["transformers", "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    ...(xl ? { text_encoder_2: ["transformers", "CLIPTextModelWithProjection"], tokenizer_2: ["transformers", "CLIPTokenizer"] } : {}),
    scheduler: ["diffusers", String(spec.scheduler._class_name ?? "DDIMScheduler")],
  });
  await writeJsonAtomic(join(dir, "unet", "config.json"), { _class_name: "UNet2DConditionModel", ...spec.unet });
  const unet = weights.unet ?? initWeights(unetParamShapes(unetConfigFromJson(spec.unet)), seed, 1, "unet");
  await writeSafetensors(join(dir, "unet", "diffusion_pytorch_model.safetensors"), tensorsOf(unet));
  await writeJsonAtomic(join(dir, "vae", "config.json"), spec.vae);
  if (spec.vae._class_name !== "PixelUnshuffleVAE") {
    const vae = weights.vae ?? initWeights(vaeParamShapes(vaeConfigFromJson(spec.vae)), seed + 1, 1, "vae");
    await writeSafetensors(join(dir, "vae", "diffusion_pytorch_model.safetensors"), tensorsOf(vae));
  }
  const encoders: [string, string, Json, BpeVocab | undefined, number][] = [["text_encoder", "tokenizer", spec.textEncoder, spec.tokenizer, seed + 2]];
  if (xl) encoders.push(["text_encoder_2", "tokenizer_2", spec.textEncoder2!, spec.tokenizer2 ?? spec.tokenizer, seed + 3]);
  for (const [name, tokName, cfg, vocab, s] of encoders) {
    await writeJsonAtomic(join(dir, name, "config.json"), cfg);
    const c = clipTextConfigFromJson(cfg);
    const w = weights[name as "text_encoder"] ?? initWeights(clipTextParamShapes(c), s, 1, name);
    await writeSafetensors(join(dir, name, "model.safetensors"), tensorsOf(w));
    // SDXL's second tokenizer pads with "!" (it is in every byte-level vocabulary).
    await writeTokenizer(join(dir, tokName), vocab!, name === "text_encoder_2" ? "!" : CLIP_EOS);
  }
  await writeJsonAtomic(join(dir, "scheduler", "scheduler_config.json"), spec.scheduler);
}

/** An IP-Adapter file in the release layout (image_proj.*, ip_adapter.<n>.to_k_ip/to_v_ip). */
export async function writeIpAdapter(path: string, unetJson: Json, projection: ImageProjectionConfig, seed: number, weights?: WeightSource): Promise<void> {
  const unetCfg = unetConfigFromJson(unetJson);
  const shapes = imageProjParamShapes(projection);
  const unetShapes = unetParamShapes(unetCfg, { ipAdapter: true });
  for (const [ours, release] of ipAdapterKeyMap(unetCfg)) shapes.set(release, unetShapes.get(ours)!);
  const w = weights ?? initWeights(shapes, seed, 1, "ip-adapter");
  const dimHead = projection.kind === "resampler" ? String(projection.dimHead) : "64";
  await writeSafetensors(path, tensorsOf(w, shapes.keys()), { format: "pt", dim_head: dimHead });
}
