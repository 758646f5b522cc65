// A text-to-image model folder in the diffusers layout, and an IP-Adapter beside it.
//
//   <model>/model_index.json        which components exist
//   <model>/unet/                   config.json + diffusion_pytorch_model.safetensors (or sharded)
//   <model>/vae/                    AutoencoderKL, or our weightless PixelUnshuffleVAE (tiny world)
//   <model>/text_encoder/           CLIPTextModel            + <model>/tokenizer/
//   <model>/text_encoder_2/         CLIPTextModelWithProjection (SDXL) + <model>/tokenizer_2/
//   <model>/scheduler/scheduler_config.json
//
//   IP-Adapter: one .safetensors file in the release layout (image_proj.*, ip_adapter.<n>.*) and
//   an image encoder: a CLIP vision folder (config.json + model.safetensors), or "mobilenet_v2"
//   for the tiny world (the embedded MobileNetV2's 7x7 feature map as 49 tokens).
//
// `checkModels` compares every tensor each definition expects with what the files hold.

import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { UserError } from "../io/errors.ts";
import { assertFiniteWeights, openSafetensors } from "../io/safetensors.ts";
import { ClipTokenizer } from "../models/clip-tokenizer.ts";
import { type ClipTextConfig, clipTextConfigFromJson, clipTextParamShapes } from "../models/clip-text.ts";
import { type ClipVisionConfig, clipVisionConfigFromJson, clipVisionParamShapes } from "../models/clip-vision.ts";
import { type ImageProjectionConfig, imageProjConfigFromWeights, imageProjParamShapes } from "../models/ip-adapter.ts";
import { type PixelVAEConfig, latentChannels, pixelVaeConfigFromJson } from "../models/pixel-vae.ts";
import { type UNetConfig, ipAdapterKeyMap, unetConfigFromJson, unetParamShapes } from "../models/unet.ts";
import { type VAEConfig, vaeConfigFromJson, vaeParamShapes, withLegacyVaeNames } from "../models/vae.ts";
import { SafetensorsSource, type WeightSource, weightFiles } from "../nn/params.ts";
import type { SchedulerJson } from "./schedule.ts";

export interface TextEncoder {
  name: "text_encoder" | "text_encoder_2";
  config: ClipTextConfig;
  source: WeightSource;
  tokenizer: ClipTokenizer;
}

export type VaeComponent = { kind: "kl"; config: VAEConfig; source: WeightSource } | { kind: "pixel"; config: PixelVAEConfig };

export interface DiffusionModel {
  dir: string;
  /** SDXL-style: two text encoders, pooled text embeddings and time ids. */
  xl: boolean;
  unet: { config: UNetConfig; source: WeightSource };
  vae: VaeComponent;
  textEncoders: TextEncoder[];
  scheduler: SchedulerJson;
  latentChannels: number;
  /** Image pixels per latent pixel along each side. */
  vaeFactor: number;
  /** SDXL's force_zeros_for_empty_prompt: an empty negative prompt is all-zero embeddings. */
  zerosForEmptyPrompt: boolean;
}

export const MODEL_LAYOUT_HELP = `a model folder in the diffusers layout needs:
  model_index.json
  unet/config.json + unet/diffusion_pytorch_model.safetensors (or a sharded .safetensors.index.json)
  vae/config.json (+ vae/diffusion_pytorch_model.safetensors for AutoencoderKL)
  text_encoder/config.json + model.safetensors, tokenizer/vocab.json + merges.txt (or tokenizer.json)
  (SDXL also text_encoder_2/ and tokenizer_2/)
  scheduler/scheduler_config.json`;

function readJson(path: string): Record<string, unknown> {
  if (!existsSync(path)) throw new UserError(`${path} is missing; ${MODEL_LAYOUT_HELP}`);
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UserError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/** A component's weight files, checked for NaN / Inf once per file version (see assertFiniteWeights). */
function finiteWeightFiles(dir: string, bases: string[]): string[] {
  const files = weightFiles(dir, bases);
  for (const f of files) assertFiniteWeights(f);
  return files;
}

function loadTextEncoder(dir: string, name: TextEncoder["name"], tokenizerDir: string): TextEncoder {
  const config = clipTextConfigFromJson(readJson(join(dir, name, "config.json")), join(dir, name, "config.json"));
  const source = new SafetensorsSource(finiteWeightFiles(join(dir, name), ["model", "diffusion_pytorch_model"]));
  return { name, config, source, tokenizer: ClipTokenizer.fromFolder(join(dir, tokenizerDir)) };
}

export function loadDiffusionModel(spec: string): DiffusionModel {
  const dir = resolve(spec);
  const index = readJson(join(dir, "model_index.json"));
  const unetConfig = unetConfigFromJson(readJson(join(dir, "unet", "config.json")));
  const unet = { config: unetConfig, source: new SafetensorsSource(finiteWeightFiles(join(dir, "unet"), ["diffusion_pytorch_model", "model"])) };
  const vaeJson = readJson(join(dir, "vae", "config.json"));
  let vae: VaeComponent;
  if (vaeJson._class_name === "PixelUnshuffleVAE") vae = { kind: "pixel", config: pixelVaeConfigFromJson(vaeJson) };
  else {
    const config = vaeConfigFromJson(vaeJson);
    vae = { kind: "kl", config, source: withLegacyVaeNames(new SafetensorsSource(finiteWeightFiles(join(dir, "vae"), ["diffusion_pytorch_model", "model"]))) };
  }
  const textEncoders = [loadTextEncoder(dir, "text_encoder", "tokenizer")];
  const xl = "text_encoder_2" in index && index.text_encoder_2 !== null && existsSync(join(dir, "text_encoder_2"));
  if (xl) textEncoders.push(loadTextEncoder(dir, "text_encoder_2", "tokenizer_2"));
  const scheduler = readJson(join(dir, "scheduler", "scheduler_config.json")) as SchedulerJson;
  const lc = vae.kind === "pixel" ? latentChannels(vae.config) : vae.config.latentChannels;
  if (lc !== unetConfig.inChannels) throw new UserError(`${dir}: the VAE makes ${lc} latent channels but the UNet takes ${unetConfig.inChannels}`);
  const vaeFactor = vae.kind === "pixel" ? vae.config.factor : 2 ** (vae.config.blockOutChannels.length - 1);
  return {
    dir, xl, unet, vae, textEncoders, scheduler, latentChannels: lc, vaeFactor,
    zerosForEmptyPrompt: xl && index.force_zeros_for_empty_prompt !== false,
  };
}

/** The image side the model was trained at (UNet sample_size x VAE factor), when its config says. */
export function nativeSize(model: DiffusionModel): number | undefined {
  const s = model.unet.config.sampleSize;
  return s === undefined ? undefined : s * model.vaeFactor;
}

/**
 * Refuses an image size the model cannot take, before anything is allocated: not a multiple of
 * the VAE factor times the UNet's downsampling, or more than 2x off the size it was trained at
 * (attention memory grows with the fourth power of the side: the tiny world's 64 px model asked
 * for 512 px wants over 100 GB). `flag` names the option in the message.
 */
export function checkImageSize(model: DiffusionModel, width: number, height: number, flag = "--size"): void {
  const down = model.vaeFactor * 2 ** (model.unet.config.blockOutChannels.length - 1);
  const native = nativeSize(model);
  const fix = native ? `pass ${flag} ${native} (the size it was trained at)` : `pass a multiple of ${down}`;
  for (const side of [width, height]) {
    if (!Number.isInteger(side) || side < down || side % down !== 0) {
      throw new UserError(`${flag} ${side}: ${model.dir} needs a multiple of ${down} (VAE factor ${model.vaeFactor} x UNet downsampling ${down / model.vaeFactor}); ${fix}`);
    }
    if (native && (side > 2 * native || side < native / 2)) {
      throw new UserError(
        `${flag} ${side}: ${model.dir} was trained at ${native} px (unet sample_size ${model.unet.config.sampleSize} x VAE factor ${model.vaeFactor}); ` +
          `${side} px is ${side > native ? `${(side / native).toFixed(1)}x larger` : `${(native / side).toFixed(1)}x smaller`}, outside the 0.5x..2x it can draw. ${fix[0]!.toUpperCase()}${fix.slice(1)}`,
      );
    }
  }
}

// ------------------------------------------------------------------ IP-Adapter

export type ImageEncoder = { kind: "clip"; dir: string; config: ClipVisionConfig; source: WeightSource } | { kind: "mobilenet" };

export interface IpAdapter {
  file: string;
  source: WeightSource;
  projection: ImageProjectionConfig;
  encoder: ImageEncoder;
}

/**
 * `file`: the IP-Adapter .safetensors; `encoder`: a CLIP vision folder or "mobilenet_v2". Plus
 * models read the encoder's penultimate hidden states, base models its projected image_embeds.
 */
export function loadIpAdapter(file: string, encoderSpec: string, dimHead = 64): IpAdapter {
  const path = resolve(file);
  if (!existsSync(path)) throw new UserError(`IP-Adapter file ${path} does not exist`);
  const source = new SafetensorsSource([path]);
  assertFiniteWeights(path, "IP-Adapter");
  const meta = openSafetensors(path).metadata;
  const projection = imageProjConfigFromWeights((n) => (source.has(n) ? source.shape(n) : undefined), (n) => source.has(n), Number(meta.dim_head ?? dimHead));
  let encoder: ImageEncoder;
  if (encoderSpec === "mobilenet_v2" || encoderSpec === "default") encoder = { kind: "mobilenet" };
  else {
    const dir = resolve(encoderSpec);
    const config = clipVisionConfigFromJson(readJson(join(dir, "config.json")), join(dir, "config.json"));
    encoder = { kind: "clip", dir, config, source: new SafetensorsSource(finiteWeightFiles(dir, ["model"])) };
  }
  return { file: path, source, projection, encoder };
}

// ------------------------------------------------------------------ --check-models

export interface CheckReport {
  component: string;
  expected: number;
  missing: string[];
  mismatched: string[];
  unexpected: string[];
}

function compare(component: string, expected: Map<string, number[]>, source: WeightSource, ignore: (n: string) => boolean = () => false): CheckReport {
  const missing: string[] = [];
  const mismatched: string[] = [];
  for (const [name, shape] of expected) {
    if (!source.has(name)) missing.push(`${name} [${shape.join(", ")}]`);
    else {
      const have = source.shape(name);
      if (have.length !== shape.length || have.some((d, i) => d !== shape[i])) mismatched.push(`${name}: file [${have.join(", ")}], expected [${shape.join(", ")}]`);
    }
  }
  const unexpected = source.names().filter((n) => !expected.has(n) && !ignore(n));
  return { component, expected: expected.size, missing, mismatched, unexpected };
}

/** Every tensor each definition expects vs the files (the model, and an IP-Adapter when given). */
export function checkModels(model: DiffusionModel, ip?: IpAdapter): CheckReport[] {
  const out = [compare("unet", unetParamShapes(model.unet.config), model.unet.source)];
  if (model.vae.kind === "kl") out.push(compare("vae", vaeParamShapes(model.vae.config), model.vae.source));
  for (const te of model.textEncoders) {
    // position_ids is a buffer some transformers versions save; it is not a parameter.
    out.push(compare(te.name, clipTextParamShapes(te.config), te.source, (n) => n.endsWith("position_ids")));
  }
  if (ip) {
    const expected = imageProjParamShapes(ip.projection);
    const C = model.unet.config;
    const unetShapes = unetParamShapes(C, { ipAdapter: true });
    for (const [ours, release] of ipAdapterKeyMap(C)) {
      const s = unetShapes.get(ours);
      if (s) expected.set(release, s);
    }
    out.push(compare("ip-adapter", expected, ip.source));
    if (ip.encoder.kind === "clip") out.push(compare("image_encoder", clipVisionParamShapes(ip.encoder.config), ip.encoder.source, (n) => n.endsWith("position_ids") || n.startsWith("text_")));
  }
  return out;
}
