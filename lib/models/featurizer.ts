// One way to get patch features from any encoder a user points at:
//   --encoder default            the shipped SSL-finetuned patch encoder (checkpoints/patch-encoder:
//                                MobileNetV2 with its blocks under block_13_expand_relu finetuned)
//   --encoder mobilenet_v2       the embedded MobileNetV2 (nsfwjs) as pretrained, built with lib/graph
//   --encoder <folder>           detected from its files:
//     config.json (model_type vit | dinov2 | dinov2_with_registers) + model.safetensors
//                                -> ViT/DINO/DINOv2 built with lib/graph (weights read in place)
//     onnx/model.onnx + config.json + preprocessor_config.json (transformers.js layout)
//                                -> run by ONNX Runtime as exported (inference only)
//     weights.safetensors + state.json (a finetune-encoder checkpoint)
//                                -> its base encoder with the finetuned weights laid over it
// A featurizer takes a batch of RGB images and returns patch grids [B, C, h, w] and, where the
// model has one, a global embedding [B, D].

import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as G from "../graph/index.ts";
import { UserError } from "../io/errors.ts";
import { type RgbImage, resizeBicubic, toCHW } from "../io/images.ts";
import { assertFiniteWeights, refuseUnsafeWeights } from "../io/safetensors.ts";
import { OverlaySource, Params, SafetensorsSource, type WeightSource, weightFiles } from "../nn/params.ts";
import type { PatchEncoder } from "./encoder.ts";
import { loadMobileNetV2 } from "./mobilenet.ts";
import { type ViTConfig, vitConfigFromJson, vitForward } from "./vit.ts";

export interface Features {
  /** [B, C, h, w] row-major. */
  patches: Float32Array;
  patchShape: [number, number, number];
  /** [B, D] where available. */
  global?: Float32Array;
  globalDim?: number;
}

export interface Featurizer {
  readonly name: string;
  readonly imageSize: number;
  /** Normalized input [B, 3, S, S] for these images (each resized to S x S, bicubic, PIL-exact). */
  preprocess(images: RgbImage[]): Float32Array;
  features(images: RgbImage[]): Promise<Features>;
}

export interface FeaturizerOptions {
  device?: G.Device;
  threads?: number;
  /** Which patch grid (MobileNetV2: "out_relu" 7x7 or "block_13_expand_relu" 14x14). */
  featureLayer?: string;
  /** Images per compiled batch (the last batch is padded). */
  batchSize?: number;
  /** Fused contrib-op attention (com.microsoft.MultiHeadAttention; CompileOptions.fusedOps). */
  fusedOps?: boolean;
}

export const ENCODER_KINDS_HELP = `an encoder is one of:
  default                      the shipped SSL-finetuned patch encoder (checkpoints/patch-encoder)
  mobilenet_v2                 the embedded MobileNetV2 as pretrained (nsfwjs, no files needed)
  ViT / DINO / DINOv2          config.json (model_type "vit", "dinov2" or "dinov2_with_registers") + model.safetensors
  transformers.js ONNX export  onnx/model.onnx + config.json + preprocessor_config.json
  finetune-encoder checkpoint  weights.safetensors + state.json (written by scripts/finetune-encoder.ts)`;

/** A graph-built encoder plus its weights (what finetune-encoder trains). */
export interface GraphEncoder {
  encoder: PatchEncoder;
  source: WeightSource;
  /** A finetuned encoder: the feature layer its blocks were trained for (the scorer must read that one). */
  trainedLayer?: string;
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/**
 * The square input size an image processor config asks for: crop_size, else size (a number,
 * {height, width} or {shortest_edge}); undefined when it names none.
 */
function processorImageSize(pre: Record<string, unknown>): number | undefined {
  const size = pre.crop_size ?? pre.size;
  if (typeof size === "number") return size;
  const s = size as Record<string, unknown> | undefined;
  const v = s?.height ?? s?.shortest_edge;
  return typeof v === "number" ? v : undefined;
}

/** Pickled weight files a transformers folder may hold instead of model.safetensors. */
const PICKLED_WEIGHTS = ["pytorch_model.bin", "model.bin", "model.pt", "model.pth"];

/** A ViT/DINO/DINOv2 folder in the transformers layout as a graph encoder. */
export function loadVitFolder(dir: string): GraphEncoder {
  let weights: string[];
  try {
    weights = weightFiles(dir, ["model"]);
  } catch (e) {
    // refuseUnsafeWeights throws the message that explains why and how to convert.
    for (const f of PICKLED_WEIGHTS) if (existsSync(join(dir, f))) refuseUnsafeWeights(join(dir, f));
    throw new UserError(`${(e as Error).message}; ${ENCODER_KINDS_HELP}`);
  }
  const cfg = vitConfigFromJson(readJson(join(dir, "config.json")));
  const pre = existsSync(join(dir, "preprocessor_config.json")) ? readJson(join(dir, "preprocessor_config.json")) : {};
  const source = new SafetensorsSource(weights);
  // Checkpoints saved from a wrapping model prefix keys with the model name.
  const prefix = source.has("embeddings.cls_token") ? "" : source.names().find((n) => n.endsWith("embeddings.cls_token"))?.replace("embeddings.cls_token", "");
  if (prefix === undefined) throw new UserError(`${dir}/model.safetensors has no "embeddings.cls_token": not a transformers ViT/DINOv2 checkpoint`);
  const encoder: PatchEncoder & { config: ViTConfig } = {
    name: `${cfg.layout} (${dir})`,
    // DINOv2 interpolates its position embeddings, so it runs at the size its image processor
    // crops to (224 for facebook/dinov2-*, whose config says 518), as its ONNX export does; a
    // ViTModel only runs at config.image_size.
    imageSize: cfg.layout === "dinov2" ? (processorImageSize(pre) ?? cfg.imageSize) : cfg.imageSize,
    mean: (pre.image_mean as number[]) ?? [0.485, 0.456, 0.406],
    std: (pre.image_std as number[]) ?? [0.229, 0.224, 0.225],
    source,
    config: cfg,
    forward: (p, images) => vitForward(prefix ? p.scope(prefix.replace(/\.$/, "")) : p, images, cfg),
  };
  return { encoder, source };
}

/** The shipped patch encoder behind `--encoder default` (remade by `make patch-encoder`; its state.json records every setting). */
export const DEFAULT_PATCH_ENCODER = resolve(import.meta.dir, "../../checkpoints/patch-encoder");
/** The raw, pretrained encoder's name: one flag away from the default (`--encoder mobilenet_v2`). */
export const RAW_ENCODER = "mobilenet_v2";

/** The folder an `--encoder` spec names, or undefined for the embedded raw MobileNetV2. */
export function encoderFolder(spec: string): string | undefined {
  if (spec === RAW_ENCODER) return undefined;
  if (spec === "default" || spec === "patch-encoder") {
    if (!existsSync(join(DEFAULT_PATCH_ENCODER, "weights.safetensors"))) {
      throw new UserError(`the shipped patch encoder ${DEFAULT_PATCH_ENCODER} is missing (restore it with git checkout, remake it with make patch-encoder, or pass --encoder ${RAW_ENCODER} for the raw MobileNetV2)`);
    }
    return DEFAULT_PATCH_ENCODER;
  }
  return resolve(spec);
}

/** Resolves `--encoder` to a graph encoder (default, mobilenet_v2, ViT folder or finetuned checkpoint). */
export function loadGraphEncoder(spec: string): GraphEncoder {
  const dir = encoderFolder(spec);
  if (dir === undefined) {
    const { encoder, source } = loadMobileNetV2();
    return { encoder, source };
  }
  if (!existsSync(dir)) throw new UserError(`encoder folder ${dir} does not exist; ${ENCODER_KINDS_HELP}`);
  if (existsSync(join(dir, "weights.safetensors")) && existsSync(join(dir, "state.json"))) {
    const state = readJson(join(dir, "state.json")) as { config?: { encoder?: string; featureLayer?: string | null } };
    const base = state.config?.encoder;
    if (typeof base !== "string") throw new UserError(`${dir}/state.json does not name its base encoder (config.encoder)`);
    // Checkpoints written before the shipped encoder existed name the raw MobileNetV2 "default";
    // finetune-encoder now records "mobilenet_v2" or "patch-encoder", never "default".
    const b = loadGraphEncoder(base === "default" ? RAW_ENCODER : base);
    // A diverged finetune would score every patch NaN far from the cause: refuse it here, by name.
    assertFiniteWeights(join(dir, "weights.safetensors"), "finetuned encoder");
    const source = new OverlaySource(b.source, new SafetensorsSource([join(dir, "weights.safetensors")]));
    const trainedLayer = state.config?.featureLayer ?? b.encoder.defaultLayer;
    return { encoder: { ...b.encoder, name: `${b.encoder.name} finetuned (${dir})`, source }, source, ...(trainedLayer ? { trainedLayer } : {}) };
  }
  const weights = ["model.safetensors", "model.safetensors.index.json", ...PICKLED_WEIGHTS];
  if (existsSync(join(dir, "config.json")) && weights.some((f) => existsSync(join(dir, f)))) return loadVitFolder(dir);
  throw new UserError(`${dir} is not an encoder folder this graph builder can load; ${ENCODER_KINDS_HELP}`);
}

function stackImages(images: RgbImage[], size: number, mean: readonly number[], std: readonly number[], batch: number): Float32Array {
  const per = 3 * size * size;
  const out = new Float32Array(batch * per);
  images.forEach((img, i) => {
    const r = img.width === size && img.height === size ? img : resizeBicubic(img, size, size);
    toCHW(r, [...mean], [...std], out, i * per);
  });
  return out;
}

/** A featurizer over a graph encoder: one compiled session per batch size. */
export function graphFeaturizer(ge: GraphEncoder, opts: FeaturizerOptions = {}): Featurizer {
  const { encoder } = ge;
  const S = encoder.imageSize;
  const batch = opts.batchSize ?? 8;
  // A finetuned encoder is scored at the layer its blocks were trained for: another layer would
  // read weights the finetune never touched (or mix trained and untrained blocks).
  const layer = opts.featureLayer ?? ge.trainedLayer;
  if (ge.trainedLayer && layer !== ge.trainedLayer) {
    throw new UserError(`${encoder.name} was finetuned for feature layer ${ge.trainedLayer}, not ${layer}: drop --feature-layer (it defaults to the trained layer), use the raw encoder (--encoder ${RAW_ENCODER}) at ${layer}, or finetune with --feature-layer ${layer}`);
  }
  const g = new G.Graph();
  const x = g.input("images", [batch, 3, S, S]);
  const out = encoder.forward(new Params(g, ge.source), x, layer);
  const outputs: Record<string, G.Tensor> = { patches: out.patches };
  if (out.global) outputs.global = out.global;
  const compiled = G.compile(outputs, { device: opts.device, threads: opts.threads, fusedOps: opts.fusedOps });
  const [, C, h, w] = out.patches.shape as [number, number, number, number];
  return {
    name: encoder.name,
    imageSize: S,
    preprocess: (images) => stackImages(images, S, encoder.mean, encoder.std, images.length),
    async features(images) {
      const c = await compiled;
      const patches = new Float32Array(images.length * C * h * w);
      const D = out.global?.shape[1];
      const global = D ? new Float32Array(images.length * D) : undefined;
      for (let i = 0; i < images.length; i += batch) {
        const chunk = images.slice(i, i + batch);
        const r = await c.run({ images: stackImages(chunk, S, encoder.mean, encoder.std, batch) });
        patches.set((r.patches as Float32Array).subarray(0, chunk.length * C * h * w), i * C * h * w);
        if (global && D) global.set((r.global as Float32Array).subarray(0, chunk.length * D), i * D);
      }
      return { patches, patchShape: [C, h, w], global, globalDim: D };
    },
  };
}

/** A transformers.js ONNX export (onnx/model.onnx): last_hidden_state patch tokens, CLS as global. */
export async function onnxFeaturizer(dir: string, opts: FeaturizerOptions = {}): Promise<Featurizer> {
  const cfg = readJson(join(dir, "config.json"));
  const pre = readJson(join(dir, "preprocessor_config.json"));
  const S = processorImageSize(pre) ?? Number(cfg.image_size ?? 224);
  const mean = (pre.image_mean as number[]) ?? [0.485, 0.456, 0.406];
  const std = (pre.image_std as number[]) ?? [0.229, 0.224, 0.225];
  const patch = Number(cfg.patch_size ?? 16);
  const registers = Number(cfg.num_register_tokens ?? 0);
  // Through lib/graph: the same session cache and --device handling as the graph-built encoders.
  const session = await G.openOnnxFile(join(dir, "onnx", "model.onnx"), { device: opts.device, threads: opts.threads });
  const inputName = session.inputNames.includes("pixel_values") ? "pixel_values" : session.inputNames[0]!;
  const outputName = session.outputNames.includes("last_hidden_state") ? "last_hidden_state" : session.outputNames[0]!;
  const grid = S / patch;
  return {
    name: `onnx (${dir})`,
    imageSize: S,
    preprocess: (images) => stackImages(images, S, mean, std, images.length),
    async features(images) {
      const x = stackImages(images, S, mean, std, images.length);
      const r = await session.run({ [inputName]: { data: x, dims: [images.length, 3, S, S] } });
      const hidden = r[outputName]!;
      const [B, L, C] = hidden.dims as [number, number, number];
      const skip = 1 + registers;
      if (L !== skip + grid * grid) throw new UserError(`${dir}: ${outputName} has ${L} tokens; expected 1 CLS + ${registers} registers + ${grid}x${grid} patches (check patch_size / num_register_tokens in config.json)`);
      const data = hidden.data as Float32Array;
      const patches = new Float32Array(B * C * grid * grid);
      const global = new Float32Array(B * C);
      for (let b = 0; b < B; b++) {
        global.set(data.subarray(b * L * C, b * L * C + C), b * C);
        for (let t = 0; t < grid * grid; t++) {
          const src = (b * L + skip + t) * C;
          for (let c = 0; c < C; c++) patches[((b * C + c) * grid * grid) + t] = data[src + c]!;
        }
      }
      return { patches, patchShape: [C, grid, grid], global, globalDim: C };
    },
  };
}

/** `--encoder` -> a featurizer, whatever kind of folder it is. */
export async function loadFeaturizer(spec: string, opts: FeaturizerOptions = {}): Promise<Featurizer> {
  const dir = encoderFolder(spec);
  if (dir && existsSync(join(dir, "onnx", "model.onnx"))) {
    for (const f of ["config.json", "preprocessor_config.json"]) {
      if (!existsSync(join(dir, f))) throw new UserError(`${dir} has onnx/model.onnx but no ${f}; ${ENCODER_KINDS_HELP}`);
    }
    return onnxFeaturizer(dir, opts);
  }
  return graphFeaturizer(loadGraphEncoder(spec), opts);
}
