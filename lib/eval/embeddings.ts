// Global image (and text) embeddings for the evaluation metrics, and their on-disk cache.
//
//   dino     DINO ViT-S/16 (v1) CLS token: resize 256 (bicubic, shorter side) + centre crop 224 +
//            ImageNet mean/std — the DINO evaluation preprocessing, NOT the featurizer's squash to a
//            square (lib/models/featurizer.ts), so the numbers are comparable with published ones.
//   feature  the embedded default encoder's global feature (GAP of MobileNetV2's out_relu), or any
//            encoder folder's global embedding, with the same protocol scaled to its input size
//            (resize round(S * 256 / 224), crop S) and the encoder's own normalization.
//   clipI / clipT  CLIP image / text embeddings (lib/models/clip-vision.ts, clip-text.ts).
//
// Encoder folders: a transformers ViT/DINO folder (config.json + model.safetensors, built with
// lib/graph), a finetune-encoder checkpoint, or a transformers.js ONNX export (onnx/model.onnx; the
// CLS token of last_hidden_state).
//
// Cache: <out>/eval/cache/<metric>-<hash of the embedder key>/<sha256 of the image file>.safetensors,
// one F32 tensor "embedding" [D]. The embedder key names the encoder, its weight files (size and
// modification time) and the preprocessing, so new weights or another protocol never hit old entries.

import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import * as G from "../graph/index.ts";
import { UserError } from "../io/errors.ts";
import { CLIP_MEAN, CLIP_STD, type PreprocessOptions, type RgbImage, preprocessImage } from "../io/images.ts";
import { openSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { ENCODER_KINDS_HELP, type GraphEncoder, RAW_ENCODER, encoderFolder, loadGraphEncoder, loadVitFolder } from "../models/featurizer.ts";
import { clipTextConfigFromJson, clipTextForward, clipTextInputs } from "../models/clip-text.ts";
import { ClipTokenizer } from "../models/clip-tokenizer.ts";
import { clipVisionConfigFromJson, clipVisionForward } from "../models/clip-vision.ts";
import { nsfwjsModelDir } from "../models/mobilenet.ts";
import { Params, SafetensorsSource } from "../nn/params.ts";

export interface EmbedderOptions {
  device?: G.Device;
  /** Intra-op threads, 0 = one per core. */
  threads?: number;
  /** Images per compiled batch (the last batch is zero-padded). */
  batch?: number;
  /** Fused contrib-op attention (com.microsoft.MultiHeadAttention; CompileOptions.fusedOps). */
  fusedOps?: boolean;
}

export interface ImageEmbedder {
  /** Which metric these embeddings feed. */
  readonly metric: "dino" | "clipI" | "feature";
  /** Cache identity: encoder, weight files, preprocessing. */
  readonly key: string;
  /** For messages and the report. */
  readonly label: string;
  /** The protocol's input tensor [3, crop, crop] for one image. */
  preprocess(img: RgbImage): Float32Array;
  /** One embedding per image (not normalized). */
  embed(images: RgbImage[]): Promise<Float32Array[]>;
}

export interface TextEmbedder {
  readonly key: string;
  readonly label: string;
  embed(texts: string[]): Promise<Float32Array[]>;
}

/** DINO's evaluation preprocessing. */
export const DINO_PREPROCESS: Required<PreprocessOptions> = { resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/** The DINO protocol scaled to an encoder's input size S: resize round(S * 256 / 224), crop S. */
export function protocolFor(S: number, mean: readonly number[], std: readonly number[]): Required<PreprocessOptions> {
  return { resize: Math.round((S * 256) / 224), crop: S, mean: [...mean], std: [...std] };
}

const sha256 = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex");

/** Content hash of an image file's bytes (the cache key of its embeddings). */
export function contentHash(bytes: Uint8Array): string {
  return sha256(bytes);
}

/** "name:size:mtime" of the regular files of a folder (not recursive), for cache keys. */
function folderStamp(dir: string): string {
  return readdirSync(dir)
    .sort()
    .map((f) => {
      const st = statSync(join(dir, f));
      return st.isFile() ? `${f}:${st.size}:${Math.round(st.mtimeMs)}` : "";
    })
    .filter(Boolean)
    .join(",");
}

function encoderKey(metric: string, spec: string, files: string, pre: Required<PreprocessOptions>, extra = ""): string {
  return JSON.stringify({ metric, spec, files, pre, extra });
}

function stack(pre: (img: RgbImage) => Float32Array, images: RgbImage[], batch: number, per: number): Float32Array {
  const x = new Float32Array(batch * per);
  images.forEach((img, i) => x.set(pre(img), i * per));
  return x;
}

/** The embedding output of a graph built on normalized images [B, 3, S, S]. */
export type EmbeddingForward = (g: G.Graph, images: G.Tensor) => G.Tensor;

/**
 * An embedder over a lib/graph model: protocol preprocessing, one compiled session of `batch`
 * images (built on first use), one [D] embedding per image.
 */
export function forwardEmbedder(metric: ImageEmbedder["metric"], label: string, forward: EmbeddingForward, pre: Required<PreprocessOptions>, key: string, opts: EmbedderOptions = {}): ImageEmbedder {
  const batch = opts.batch ?? 8;
  const S = pre.crop;
  const per = 3 * S * S;
  let compiled: Promise<{ run: (x: Float32Array) => Promise<Float32Array>; dim: number }> | undefined;
  const build = () => {
    const g = new G.Graph();
    const out = forward(g, g.input("images", [batch, 3, S, S]));
    const dim = out.shape[1]!;
    return G.compile({ embedding: out }, { device: opts.device, threads: opts.threads, fusedOps: opts.fusedOps }).then((c) => ({
      dim,
      run: async (feed: Float32Array) => (await c.run({ images: feed })).embedding as Float32Array,
    }));
  };
  const preprocess = (img: RgbImage) => preprocessImage(img, pre);
  return {
    metric,
    key,
    label,
    preprocess,
    async embed(images) {
      const c = await (compiled ??= build());
      const out: Float32Array[] = [];
      for (let i = 0; i < images.length; i += batch) {
        const chunk = images.slice(i, i + batch);
        const r = await c.run(stack(preprocess, chunk, batch, per));
        for (let k = 0; k < chunk.length; k++) out.push(Float32Array.from(r.subarray(k * c.dim, (k + 1) * c.dim)));
      }
      return out;
    },
  };
}

/** A graph encoder's global embedding (CLS token / pooled feature) on protocol-preprocessed input. */
export function graphEmbedder(metric: ImageEmbedder["metric"], ge: GraphEncoder, pre: Required<PreprocessOptions>, key: string, opts: EmbedderOptions = {}): ImageEmbedder {
  const forward: EmbeddingForward = (g, x) => {
    const out = ge.encoder.forward(new Params(g, ge.source), x);
    if (!out.global) throw new UserError(`${ge.encoder.name} has no global embedding (CLS token or pooled feature); it cannot be used for the ${metric} score`);
    return out.global;
  };
  return forwardEmbedder(metric, ge.encoder.name, forward, pre, key, opts);
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/**
 * A transformers.js ONNX export (onnx/model.onnx + config.json + preprocessor_config.json): the CLS
 * token of last_hidden_state (or a rank-2 output as is). `pre` overrides the folder's preprocessing.
 */
export async function onnxEmbedder(metric: ImageEmbedder["metric"], dir: string, pre: Required<PreprocessOptions> | undefined, opts: EmbedderOptions = {}): Promise<ImageEmbedder> {
  // The DINO protocol fixes its own preprocessing; otherwise the export's preprocessor_config.json says.
  const cfg = pre && !existsSync(join(dir, "preprocessor_config.json")) ? {} : readJson(join(dir, "preprocessor_config.json"));
  const size = cfg.crop_size ?? cfg.size;
  const S = typeof size === "number" ? size : Number((size as Record<string, number> | undefined)?.height ?? (size as Record<string, number> | undefined)?.shortest_edge ?? 224);
  const p = pre ?? protocolFor(S, (cfg.image_mean as number[]) ?? DINO_PREPROCESS.mean, (cfg.image_std as number[]) ?? DINO_PREPROCESS.std);
  // Through lib/graph: the same session cache and --device handling as the graph-built encoders.
  const session = await G.openOnnxFile(join(dir, "onnx", "model.onnx"), { device: opts.device, threads: opts.threads });
  const inputName = session.inputNames.includes("pixel_values") ? "pixel_values" : session.inputNames[0]!;
  const outputName = session.outputNames.includes("last_hidden_state") ? "last_hidden_state" : session.outputNames[0]!;
  const batch = opts.batch ?? 8;
  const per = 3 * p.crop * p.crop;
  const preprocess = (img: RgbImage) => preprocessImage(img, p);
  return {
    metric,
    key: encoderKey(metric, resolve(dir), folderStamp(join(dir, "onnx")), p, "onnx"),
    label: `onnx (${dir})`,
    preprocess,
    async embed(images) {
      const out: Float32Array[] = [];
      for (let i = 0; i < images.length; i += batch) {
        const chunk = images.slice(i, i + batch);
        const x = stack(preprocess, chunk, chunk.length, per);
        const r = (await session.run({ [inputName]: { data: x, dims: [chunk.length, 3, p.crop, p.crop] } }))[outputName]!;
        const data = r.data as Float32Array;
        const dims = r.dims as number[];
        const stride = dims.slice(1).reduce((a, b) => a * b, 1);
        const D = dims[dims.length - 1]!;
        for (let k = 0; k < chunk.length; k++) out.push(Float32Array.from(data.subarray(k * stride, k * stride + D)));
      }
      return out;
    },
  };
}

const hasOnnx = (dir: string) => existsSync(join(dir, "onnx", "model.onnx"));

/** `--dino <folder>`: DINO ViT-S/16 with the DINO evaluation preprocessing. */
export async function dinoEmbedder(dir: string, opts: EmbedderOptions = {}): Promise<ImageEmbedder> {
  const abs = resolve(dir);
  if (!existsSync(abs)) throw new UserError(`--dino ${dir}: no such folder; expected facebook/dino-vits16 in the transformers layout (config.json + model.safetensors) or a transformers.js ONNX export (onnx/model.onnx)`);
  if (hasOnnx(abs)) return onnxEmbedder("dino", abs, DINO_PREPROCESS, opts);
  if (!existsSync(join(abs, "config.json")) || !existsSync(join(abs, "model.safetensors"))) {
    throw new UserError(`--dino ${dir}: expected config.json + model.safetensors (facebook/dino-vits16, transformers layout) or onnx/model.onnx; ${ENCODER_KINDS_HELP}`);
  }
  const ge = loadVitFolder(abs);
  if (ge.encoder.imageSize !== DINO_PREPROCESS.crop) {
    throw new UserError(`--dino ${dir}: the model's image_size is ${ge.encoder.imageSize}; the DINO protocol crops 224 px (is this facebook/dino-vits16?)`);
  }
  return graphEmbedder("dino", ge, DINO_PREPROCESS, encoderKey("dino", abs, folderStamp(abs), DINO_PREPROCESS), opts);
}

/** `--encoder-feature default|<folder>`: the feature score's global embedding. */
export async function featureEmbedder(spec = "default", opts: EmbedderOptions = {}): Promise<ImageEmbedder> {
  const dir = encoderFolder(spec); // undefined: the embedded raw MobileNetV2
  if (dir && hasOnnx(dir)) return onnxEmbedder("feature", dir, undefined, opts);
  const ge = loadGraphEncoder(spec);
  const pre = protocolFor(ge.encoder.imageSize, ge.encoder.mean, ge.encoder.std);
  return graphEmbedder("feature", ge, pre, encoderKey("feature", dir ?? RAW_ENCODER, folderStamp(dir ?? nsfwjsModelDir()), pre), opts);
}

/**
 * `--clip <folder>`: a transformers CLIPModel folder (openai/clip-vit-base-patch32: config.json,
 * model.safetensors with text_model.* / vision_model.* / visual_projection / text_projection, and
 * the tokenizer files). Image embeddings use OpenAI's preprocessing (resize 224 bicubic, centre crop
 * 224, CLIP mean/std); text embeddings pool the eos token and project (what `encode_text` returns).
 */
export async function clipEmbedders(dir: string, opts: EmbedderOptions = {}): Promise<{ image: ImageEmbedder; text: TextEmbedder }> {
  const abs = resolve(dir);
  for (const f of ["config.json", "model.safetensors"]) {
    if (!existsSync(join(abs, f))) throw new UserError(`--clip ${dir}: ${f} is missing; expected a transformers CLIPModel folder (e.g. openai/clip-vit-base-patch32: config.json, model.safetensors, vocab.json + merges.txt or tokenizer.json)`);
  }
  const json = readJson(join(abs, "config.json"));
  const vcfg = clipVisionConfigFromJson(json, join(abs, "config.json"));
  const tcfg = clipTextConfigFromJson(json, join(abs, "config.json"));
  const source = new SafetensorsSource([join(abs, "model.safetensors")]);
  for (const k of ["visual_projection.weight", "text_projection.weight"]) {
    if (!source.has(k)) throw new UserError(`--clip ${dir}: model.safetensors has no "${k}"; CLIP-I / CLIP-T need the full CLIPModel (both towers with their projections), not a single tower`);
  }
  const tokenizer = ClipTokenizer.fromFolder(existsSync(join(abs, "tokenizer")) ? join(abs, "tokenizer") : abs);
  const S = vcfg.imageSize;
  const pre: Required<PreprocessOptions> = { resize: S, crop: S, mean: CLIP_MEAN, std: CLIP_STD };
  const stamp = folderStamp(abs);
  const image = forwardEmbedder("clipI", `CLIP (${dir})`, (g, x) => clipVisionForward(new Params(g, source), x, vcfg, true).imageEmbeds!, pre, encoderKey("clipI", abs, stamp, pre), opts);
  const batch = opts.batch ?? 8;
  const L = Math.min(tokenizer.maxLength, tcfg.maxPositions);
  let compiled: Promise<G.Compiled> | undefined;
  const build = () => {
    const g = new G.Graph();
    const { inputIds, eosIndex } = clipTextInputs(g, batch, L);
    return G.compile({ embedding: clipTextForward(new Params(g, source), inputIds, eosIndex, tcfg, true).textEmbeds! }, { device: opts.device, threads: opts.threads, fusedOps: opts.fusedOps });
  };
  const text: TextEmbedder = {
    key: encoderKey("clipT", abs, stamp, pre, `tokens:${L}`),
    label: `CLIP text (${dir})`,
    async embed(texts) {
      const c = await (compiled ??= build());
      const out: Float32Array[] = [];
      for (let i = 0; i < texts.length; i += batch) {
        const chunk = texts.slice(i, i + batch);
        const padded = [...chunk, ...Array<string>(batch - chunk.length).fill("")];
        const enc = tokenizer.encodeBatch(padded, { maxLength: L });
        const r = (await c.run({ input_ids: enc.ids, eos_index: enc.eosIndex })).embedding as Float32Array;
        const D = r.length / batch;
        for (let k = 0; k < chunk.length; k++) out.push(Float32Array.from(r.subarray(k * D, (k + 1) * D)));
      }
      return out;
    },
  };
  return { image, text };
}

// ------------------------------------------------------------------------------------------ cache

/** Embeddings on disk, one safetensors file per (embedder key, content hash). */
export class EmbeddingCache {
  constructor(readonly dir: string) {}

  /** The cache folder of an embedder: readable prefix + hash of the full key. */
  folder(key: string): string {
    const metric = (() => {
      try {
        return String((JSON.parse(key) as { metric?: string }).metric ?? "emb");
      } catch {
        return "emb";
      }
    })().replace(/[^A-Za-z0-9_-]/g, "_");
    return join(this.dir, `${metric}-${sha256(key).slice(0, 16)}`);
  }

  path(key: string, hash: string): string {
    return join(this.folder(key), `${hash}.safetensors`);
  }

  /** The cached embedding, or undefined (a damaged file counts as a miss and is rewritten later). */
  get(key: string, hash: string): Float32Array | undefined {
    const p = this.path(key, hash);
    if (!existsSync(p)) return undefined;
    try {
      return Float32Array.from(openSafetensors(p).float32("embedding"));
    } catch {
      return undefined;
    }
  }

  async put(key: string, hash: string, v: Float32Array): Promise<void> {
    await writeSafetensors(this.path(key, hash), { embedding: { dtype: "F32", shape: [v.length], data: v } }, { key });
  }
}

/** Text embeddings through the cache (key: sha256 of the UTF-8 text). */
export async function embedTexts(embedder: TextEmbedder, texts: string[], cache?: EmbeddingCache): Promise<Float32Array[]> {
  const out: (Float32Array | undefined)[] = texts.map((t) => cache?.get(embedder.key, sha256(`text:${t}`)));
  const todo = texts.map((t, i) => ({ t, i })).filter(({ i }) => !out[i]);
  if (todo.length) {
    const vs = await embedder.embed(todo.map((x) => x.t));
    for (let k = 0; k < todo.length; k++) {
      out[todo[k]!.i] = vs[k]!;
      await cache?.put(embedder.key, sha256(`text:${todo[k]!.t}`), vs[k]!);
    }
  }
  return out as Float32Array[];
}
