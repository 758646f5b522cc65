// MobileNetV2 (Sandler et al. 2018) as shipped by the nsfwjs npm package: an ImageNet-pretrained
// Keras 2.2.4 MobileNetV2 (alpha 1.0, 224px) finetuned by nsfwjs into a 5-class image classifier
// (GAP -> Dense 256 -> Dense 128 -> Dense 5 softmax). It is the tiny world's default patch encoder:
// `out_relu` [B, 1280, 7, 7] and `block_13_expand_relu` [B, 576, 14, 14] are real patch features.
//
// Files (node_modules/nsfwjs/dist/models/mobilenet_v2/):
//   model.min.js            a browserify UMD bundle whose module.exports is the TensorFlow.js
//                           model.json object: { modelTopology (Keras model_config), weightsManifest }
//   group1-shard1of1.min.js a UMD bundle whose module.exports is the weight shard as one base64 string
// Every weight is uint8-quantized: quantization = { dtype: "uint8", min, scale }; tfjs dequantizes
// as value = q * scale + min (computed in double, stored as float32), and so do we, bit for bit.
//
// The network is built by interpreting the Keras topology (layer list + inbound nodes), so the graph
// is exactly the one tfjs runs; it supports the layer classes Keras' MobileNetV2 uses. NCHW throughout.
//
// Weight keys are the Keras weight names, values transposed to PyTorch/ONNX layouts:
//   <conv>/kernel                 Conv2D          [kh, kw, in, out]  -> [out, in, kh, kw]
//   <dw>/depthwise_kernel         DepthwiseConv2D [kh, kw, in, mult] -> [in * mult, 1, kh, kw]
//                                 (output channel i * mult + m, the order of ONNX's grouped Conv)
//   <dense>/kernel                Dense           [in, out]          -> [out, in]
//   <layer>/bias, <bn>/gamma, <bn>/beta, <bn>/moving_mean, <bn>/moving_variance   [C], unchanged
// so a finetuned checkpoint (safetensors with these keys) binds to the same definition.
// BatchNormalization runs in inference form as a per-channel affine computed *in the graph* from its
// four parameters (scale = gamma / sqrt(var + eps), shift = beta - mean * scale): gamma/beta (and the
// statistics, if one wants) stay differentiable for finetuning, and ONNX Runtime folds it all into
// the convolutions when they are frozen.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import { MemorySource, type Params } from "../nn/params.ts";
import type { EncoderOutputs, PatchEncoder } from "./encoder.ts";

/** nsfwjs' class order (dist/esm/nsfw_classes.js). */
export const NSFW_CLASSES = ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"] as const;

/** Feature layers worth returning as patch grids (any 4-D Keras layer name works). */
export const MOBILENET_FEATURE_LAYERS = { out_relu: [1280, 7, 7], block_13_expand_relu: [576, 14, 14] } as const;

// ------------------------------------------------------------------------------------ file formats

export interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  /** Keras functional-API links: [[[layerName, nodeIndex, tensorIndex, kwargs], ...]]. */
  inbound_nodes: [string, number, number, unknown][][];
}

export interface KerasModelConfig {
  name: string;
  layers: KerasLayer[];
  input_layers: [string, number, number][];
  output_layers: [string, number, number][];
}

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype?: string; original_dtype?: string; min?: number; scale?: number };
}

/** The raw TensorFlow.js artifacts (what an IOHandler hands to tf.loadLayersModel). */
export interface TfjsArtifacts {
  /** The model.json object: { modelTopology, weightsManifest: [{ paths, weights }] }. */
  modelJson: { modelTopology: { keras_version?: string; model_config: { class_name: string; config: KerasModelConfig } } & Record<string, unknown>; weightsManifest: { paths: string[]; weights: WeightSpec[] }[] };
  weightSpecs: WeightSpec[];
  /** All shards concatenated, in manifest order. */
  weightData: Uint8Array;
  /** Folder the files were read from. */
  dir: string;
}

/** node_modules/nsfwjs/dist/models/<model>/, resolved from this module. */
export function nsfwjsModelDir(model = "mobilenet_v2"): string {
  let root: string;
  try {
    root = dirname(createRequire(import.meta.url).resolve("nsfwjs/package.json"));
  } catch {
    try {
      // ESM resolution gives dist/esm/index.js.
      root = join(dirname(fileURLToPath(import.meta.resolve("nsfwjs"))), "..", "..");
    } catch (e) {
      throw new Error(`cannot find the nsfwjs package (it carries the MobileNetV2 weights): run \`bun install\` in the project folder`, { cause: e });
    }
  }
  return join(root, "dist", "models", model);
}

/**
 * Evaluates one of nsfwjs' UMD .min.js bundles with a private `module` object and returns its
 * module.exports. (These bundles are what nsfwjs itself imports; they only build a literal.)
 */
function umdExport(file: string): unknown {
  let src: string;
  try {
    src = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message} (is nsfwjs installed? run \`bun install\`)`, { cause: e });
  }
  const module = { exports: {} as unknown };
  new Function("module", "exports", "define", "require", src)(module, module.exports, undefined, undefined);
  return module.exports;
}

const artifactCache = new Map<string, TfjsArtifacts>();

/** Reads model.min.js and its weight shards (group1-shard<i>of<n>.min.js) from `dir`. */
export function readTfjsArtifacts(dir = nsfwjsModelDir()): TfjsArtifacts {
  const hit = artifactCache.get(dir);
  if (hit) return hit;
  const modelJson = umdExport(join(dir, "model.min.js")) as TfjsArtifacts["modelJson"];
  if (!modelJson?.modelTopology?.model_config || !Array.isArray(modelJson.weightsManifest)) {
    throw new Error(`${join(dir, "model.min.js")}: not a TensorFlow.js layers model (no modelTopology.model_config / weightsManifest)`);
  }
  const weightSpecs: WeightSpec[] = [];
  const shards: Uint8Array[] = [];
  for (const group of modelJson.weightsManifest) {
    for (const path of group.paths) {
      const b64 = umdExport(join(dir, `${path}.min.js`));
      if (typeof b64 !== "string") throw new Error(`${join(dir, `${path}.min.js`)}: expected a base64 string export, got ${typeof b64}`);
      const buf = Buffer.from(b64, "base64");
      shards.push(new Uint8Array(buf.buffer, buf.byteOffset, buf.length));
    }
    weightSpecs.push(...group.weights);
  }
  const weightData = new Uint8Array(shards.reduce((s, b) => s + b.length, 0));
  let off = 0;
  for (const s of shards) {
    weightData.set(s, off);
    off += s.length;
  }
  const art = { modelJson, weightSpecs, weightData, dir };
  artifactCache.set(dir, art);
  return art;
}

// ------------------------------------------------------------------------------------ weights

const BYTES: Record<string, number> = { float32: 4, int32: 4, uint8: 1, uint16: 2, float16: 2, bool: 1 };

/** Decodes the weight manifest to float32 tensors in their Keras (TF) layouts, as tfjs does. */
export function decodeTfjsWeights(specs: WeightSpec[], data: Uint8Array): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let off = 0;
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const q = s.quantization;
    const stored = q?.dtype ?? s.dtype;
    const width = BYTES[stored];
    if (!width) throw new Error(`weight "${s.name}": unsupported stored dtype ${stored}`);
    if (off + n * width > data.length) throw new Error(`weight "${s.name}": needs bytes ${off}..${off + n * width}, the shards hold ${data.length}`);
    const v = new Float32Array(n);
    if (q && (stored === "uint8" || stored === "uint16")) {
      const min = q.min ?? 0;
      const scale = q.scale ?? 1;
      for (let i = 0; i < n; i++) v[i] = (stored === "uint8" ? view.getUint8(off + i) : view.getUint16(off + 2 * i, true)) * scale + min;
    } else if (stored === "float32") {
      for (let i = 0; i < n; i++) v[i] = view.getFloat32(off + 4 * i, true);
    } else {
      throw new Error(`weight "${s.name}": stored as ${stored}${q ? " (quantized)" : ""}, which this loader does not read`);
    }
    out.set(s.name, { shape: [...s.shape], data: v });
    off += n * width;
  }
  if (off !== data.length) throw new Error(`weight shards hold ${data.length} bytes, the manifest describes ${off}`);
  return out;
}

/** Keras layout -> PyTorch/ONNX layout (see the key table at the top of this file). */
export function kerasToTorchLayout(name: string, shape: number[], v: Float32Array): { shape: number[]; data: Float32Array } {
  const leaf = name.slice(name.lastIndexOf("/") + 1);
  if (leaf === "depthwise_kernel" && shape.length === 4) {
    const [kh, kw, cin, mult] = shape as [number, number, number, number];
    const d = new Float32Array(v.length);
    for (let y = 0; y < kh; y++)
      for (let x = 0; x < kw; x++)
        for (let i = 0; i < cin; i++)
          for (let m = 0; m < mult; m++) d[((i * mult + m) * kh + y) * kw + x] = v[((y * kw + x) * cin + i) * mult + m]!;
    return { shape: [cin * mult, 1, kh, kw], data: d };
  }
  if (leaf === "kernel" && shape.length === 4) {
    const [kh, kw, cin, cout] = shape as [number, number, number, number];
    const d = new Float32Array(v.length);
    for (let y = 0; y < kh; y++)
      for (let x = 0; x < kw; x++)
        for (let i = 0; i < cin; i++)
          for (let o = 0; o < cout; o++) d[((o * cin + i) * kh + y) * kw + x] = v[((y * kw + x) * cin + i) * cout + o]!;
    return { shape: [cout, cin, kh, kw], data: d };
  }
  if (leaf === "kernel" && shape.length === 2) {
    const [cin, cout] = shape as [number, number];
    const d = new Float32Array(v.length);
    for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) d[o * cin + i] = v[i * cout + o]!;
    return { shape: [cout, cin], data: d };
  }
  if (shape.length === 1) return { shape: [...shape], data: v };
  throw new Error(`weight "${name}" [${shape.join(", ")}]: no known Keras -> PyTorch layout for it`);
}

// ------------------------------------------------------------------------------------ the graph

/** A value flowing between Keras layers: a tensor plus a ZeroPadding2D not yet applied [t, l, b, r]. */
interface Value {
  t: Tensor;
  pad?: [number, number, number, number];
}

const pair = (v: unknown, what: string): [number, number] => {
  if (typeof v === "number") return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number")) return v as [number, number];
  throw new Error(`${what}: expected a number or a pair, got ${JSON.stringify(v)}`);
};

function materialize(v: Value): Tensor {
  if (!v.pad || v.pad.every((p) => p === 0)) return v.t;
  const [t, l, b, r] = v.pad;
  return G.pad(v.t, [0, 0, t, l, 0, 0, b, r]);
}

/** TF "same" padding: output ceil(in / stride), the extra pixel (if odd) at the end. */
function samePads(size: number, k: number, s: number, d: number): [number, number] {
  const out = Math.ceil(size / s);
  const total = Math.max((out - 1) * s + (k - 1) * d + 1 - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

function activation(x: Tensor, act: unknown, where: string): Tensor {
  switch (act ?? "linear") {
    case "linear": return x;
    case "relu": return G.relu(x);
    case "relu6": return G.clip(x, 0, 6);
    case "softmax": return G.softmax(x, 1);
    case "sigmoid": return G.sigmoid(x);
    default: throw new Error(`${where}: activation "${String(act)}" is not supported`);
  }
}

/** Interprets a Keras functional model on NCHW tensors, building graph nodes on demand. */
export class KerasGraph {
  private readonly byName = new Map<string, KerasLayer>();

  constructor(readonly config: KerasModelConfig) {
    for (const l of config.layers) this.byName.set(l.name, l);
  }

  layer(name: string): KerasLayer {
    const l = this.byName.get(name);
    if (!l) throw new Error(`MobileNetV2: no Keras layer "${name}" (layers: ${[...this.byName.keys()].filter((n) => /relu|dense|add/.test(n)).join(", ")}, ...)`);
    return l;
  }

  /** Builds the tensors of the named layers from `inputs` (input layer name -> NCHW tensor). */
  run(p: Params, inputs: Record<string, Tensor>, names: string[]): Tensor[] {
    const memo = new Map<string, Value>();
    for (const [k, t] of Object.entries(inputs)) memo.set(k, { t });
    const evalLayer = (name: string): Value => {
      const hit = memo.get(name);
      if (hit) return hit;
      const l = this.layer(name);
      const nodes = l.inbound_nodes;
      if (nodes.length !== 1) throw new Error(`MobileNetV2: layer "${name}" is ${nodes.length === 0 ? "an input that was not fed" : "shared between several call sites"}, which this interpreter does not support`);
      const ins = nodes[0]!.map((n) => evalLayer(n[0]));
      const v = this.apply(p, l, ins);
      memo.set(name, v);
      return v;
    };
    return names.map((n) => materialize(evalLayer(n)));
  }

  private apply(p: Params, l: KerasLayer, ins: Value[]): Value {
    const c = l.config;
    const where = `MobileNetV2 layer "${l.name}" (${l.class_name})`;
    const one = (): Value => {
      if (ins.length !== 1) throw new Error(`${where}: expected one input, got ${ins.length}`);
      return ins[0]!;
    };
    if (c.data_format !== undefined && c.data_format !== "channels_last") throw new Error(`${where}: data_format ${String(c.data_format)} is not supported`);
    switch (l.class_name) {
      case "ZeroPadding2D": {
        const v = one();
        const raw = c.padding;
        let tb: [number, number];
        let lr: [number, number];
        if (typeof raw === "number") tb = lr = [raw, raw];
        else if (Array.isArray(raw) && raw.length === 2 && raw.every((x) => typeof x === "number")) {
          tb = [raw[0] as number, raw[0] as number];
          lr = [raw[1] as number, raw[1] as number];
        } else if (Array.isArray(raw) && raw.length === 2) {
          tb = pair(raw[0], where);
          lr = pair(raw[1], where);
        } else throw new Error(`${where}: padding ${JSON.stringify(raw)} is not understood`);
        const [t, left, b, r] = v.pad ?? [0, 0, 0, 0];
        return { t: v.t, pad: [t + tb[0], left + lr[0], b + tb[1], r + lr[1]] };
      }
      case "Conv2D":
      case "DepthwiseConv2D": {
        const v = one();
        const dw = l.class_name === "DepthwiseConv2D";
        const [kh, kw] = pair(c.kernel_size, where);
        const [sh, sw] = pair(c.strides ?? 1, where);
        const [dh, dwl] = pair(c.dilation_rate ?? 1, where);
        const [, C, H, W] = v.t.shape as [number, number, number, number];
        const explicit = v.pad ?? [0, 0, 0, 0];
        let pads = [...explicit];
        if (c.padding === "same") {
          const [pt, pb] = samePads(H + explicit[0] + explicit[2], kh, sh, dh);
          const [pl, pr] = samePads(W + explicit[1] + explicit[3], kw, sw, dwl);
          pads = [explicit[0] + pt, explicit[1] + pl, explicit[2] + pb, explicit[3] + pr];
        } else if (c.padding !== "valid") throw new Error(`${where}: padding "${String(c.padding)}" is not supported`);
        let w: Tensor;
        let groups = 1;
        let out: number;
        if (dw) {
          const mult = (c.depth_multiplier as number | undefined) ?? 1;
          out = C * mult;
          groups = C;
          w = p.get(`${l.name}/depthwise_kernel`, [out, 1, kh, kw]);
        } else {
          out = c.filters as number;
          w = p.get(`${l.name}/kernel`, [out, C, kh, kw]);
        }
        const b = c.use_bias ? p.get(`${l.name}/bias`, [out]) : null;
        const y = G.conv(v.t, w, b, { stride: [sh, sw], dilation: [dh, dwl], padding: pads, groups });
        return { t: activation(y, c.activation, where) };
      }
      case "BatchNormalization": {
        const x = materialize(one());
        const axis = c.axis as number | number[];
        if (!(axis === -1 || axis === 3 || (Array.isArray(axis) && axis.length === 1 && (axis[0] === -1 || axis[0] === 3)))) {
          throw new Error(`${where}: only channel-axis batch norm is supported, got axis ${JSON.stringify(axis)}`);
        }
        const C = x.shape[1]!;
        const eps = (c.epsilon as number | undefined) ?? 1e-3;
        const mean = p.get(`${l.name}/moving_mean`, [C]);
        const variance = p.get(`${l.name}/moving_variance`, [C]);
        let scale = G.reciprocal(G.sqrt(G.add(variance, eps)));
        if (c.scale !== false) scale = G.mul(p.get(`${l.name}/gamma`, [C]), scale);
        let shift = G.neg(G.mul(mean, scale));
        if (c.center !== false) shift = G.add(p.get(`${l.name}/beta`, [C]), shift);
        const bc = [C, ...x.shape.slice(2).map(() => 1)];
        return { t: G.add(G.mul(x, G.reshape(scale, bc)), G.reshape(shift, bc)) };
      }
      case "ReLU": {
        const x = materialize(one());
        const max = c.max_value as number | null | undefined;
        if ((c.negative_slope ?? 0) !== 0 || (c.threshold ?? 0) !== 0) throw new Error(`${where}: leaky/thresholded ReLU is not supported`);
        return { t: max === null || max === undefined ? G.relu(x) : G.clip(x, 0, max) };
      }
      case "Activation":
        return { t: activation(materialize(one()), c.activation, where) };
      case "Add": {
        const xs = ins.map(materialize);
        return { t: xs.slice(1).reduce((a, b) => G.add(a, b), xs[0]!) };
      }
      case "AveragePooling2D":
      case "MaxPooling2D": {
        const x = materialize(one());
        const k = pair(c.pool_size, where);
        const s = pair(c.strides ?? c.pool_size, where);
        let pads = [0, 0, 0, 0];
        if (c.padding === "same") {
          const [pt, pb] = samePads(x.shape[2]!, k[0], s[0], 1);
          const [pl, pr] = samePads(x.shape[3]!, k[1], s[1], 1);
          pads = [pt, pl, pb, pr];
        } else if (c.padding !== "valid") throw new Error(`${where}: padding "${String(c.padding)}" is not supported`);
        const opts = { stride: s, padding: pads, countIncludePad: false };
        return { t: l.class_name === "AveragePooling2D" ? G.avgPool(x, k, opts) : G.maxPool(x, k, opts) };
      }
      case "GlobalAveragePooling2D": {
        const x = materialize(one());
        return { t: G.reshape(G.globalAvgPool(x), x.shape.slice(0, 2)) };
      }
      case "Flatten": {
        const x = materialize(one());
        // Keras flattens channels-last (h, w, c) order; with a 1x1 map that is the NCHW order too.
        const hwc = x.rank === 4 && (x.shape[2] !== 1 || x.shape[3] !== 1) ? G.transpose(x, [0, 2, 3, 1]) : x;
        return { t: G.flatten(hwc, 1) };
      }
      case "Dense": {
        const x = materialize(one());
        if (x.rank !== 2) throw new Error(`${where}: expected a [B, features] input, got [${x.shape.join(", ")}]`);
        const units = c.units as number;
        const w = p.get(`${l.name}/kernel`, [units, x.shape[1]!]);
        const b = c.use_bias ? p.get(`${l.name}/bias`, [units]) : undefined;
        return { t: activation(G.linear(x, w, b), c.activation, where) };
      }
      case "Dropout":
        return one(); // inference
      default:
        throw new Error(`${where}: layer class ${l.class_name} is not supported by the MobileNetV2 interpreter`);
    }
  }
}

// ------------------------------------------------------------------------------------ the encoder

export interface MobileNetV2 extends PatchEncoder {
  /** The Keras model (topology) the graph is built from. */
  readonly keras: KerasGraph;
  /** Class names of `classify`'s outputs, in order. */
  readonly classes: readonly string[];
  /** nsfwjs' class probabilities [B, 5] (softmax of the dense_3 head). */
  classify(p: Params, images: Tensor): Tensor;
  /** Any Keras layers by name (NCHW for feature maps), e.g. ["block_6_expand_relu", "dense_1"]. */
  layers(p: Params, images: Tensor, names: string[]): Tensor[];
}

export interface LoadMobileNetV2Options {
  /** Folder with model.min.js and the weight shards (default: nsfwjs' mobilenet_v2). */
  dir?: string;
}

/** Reads nsfwjs' MobileNetV2: the encoder (graph definition) and its weights (Keras keys, PyTorch layouts). */
export function loadMobileNetV2(opts: LoadMobileNetV2Options = {}): { encoder: MobileNetV2; source: MemorySource } {
  const art = readTfjsArtifacts(opts.dir);
  const cfg = art.modelJson.modelTopology.model_config.config;
  const keras = new KerasGraph(cfg);
  for (const name of Object.keys(MOBILENET_FEATURE_LAYERS)) keras.layer(name); // fail early on another model
  const decoded = decodeTfjsWeights(art.weightSpecs, art.weightData);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of decoded) tensors.set(name, kerasToTorchLayout(name, t.shape, t.data));
  const source = new MemorySource(tensors, `nsfwjs MobileNetV2 (${art.dir})`);

  const inputName = cfg.input_layers[0]![0];
  const outputName = cfg.output_layers[0]![0];
  const inputShape = (keras.layer(inputName).config.batch_input_shape as (number | null)[] | undefined) ?? [null, 224, 224, 3];
  const imageSize = inputShape[1] ?? 224;
  const check = (images: Tensor) => {
    if (images.rank !== 4 || images.shape[1] !== 3) throw new Error(`MobileNetV2: images must be [B, 3, H, W], got [${images.shape.join(", ")}]`);
  };
  const layers = (p: Params, images: Tensor, names: string[]) => {
    check(images);
    return keras.run(p, { [inputName]: images }, names);
  };
  const encoder: MobileNetV2 = {
    name: "mobilenet_v2 (nsfwjs)",
    imageSize,
    // nsfwjs feeds x / 255 (dist/esm/core.js: img.toFloat().div(255)), no mean offset.
    mean: [0, 0, 0],
    std: [1, 1, 1],
    defaultLayer: "out_relu",
    source,
    keras,
    classes: NSFW_CLASSES,
    layers,
    forward(p: Params, images: Tensor, featureLayer = "out_relu"): EncoderOutputs {
      const [patches, last] = layers(p, images, [featureLayer, "out_relu"]);
      if (patches!.rank !== 4) throw new Error(`MobileNetV2: layer "${featureLayer}" is not a feature map ([${patches!.shape.join(", ")}])`);
      return { patches: patches!, global: G.reshape(G.globalAvgPool(last!), last!.shape.slice(0, 2)) };
    },
    classify(p: Params, images: Tensor): Tensor {
      return layers(p, images, [outputName])[0]!;
    },
  };
  return { encoder, source };
}
