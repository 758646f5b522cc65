// Vision Transformer (Dosovitskiy et al.) in the two Hugging Face layouts we read:
//   "vit"    — ViTModel, e.g. facebook/dino-vits16 (DINO v1): pre-norm blocks, learned position
//              embeddings for one resolution, final LayerNorm;
//   "dinov2" — Dinov2Model, e.g. facebook/dinov2-small, and Dinov2WithRegistersModel: the same
//              blocks plus LayerScale, optional register tokens, and position embeddings
//              interpolated (bicubic; anti-aliased for the register models) to the input grid.
// Keys follow transformers' module names so a downloaded model.safetensors binds as is.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import { checkpoint } from "../graph/recompute.ts";
import type { Params } from "../nn/params.ts";
import type { EncoderOutputs } from "./encoder.ts";

export interface ViTConfig {
  layout: "vit" | "dinov2";
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  patchSize: number;
  /** Resolution the position embeddings were trained at. */
  imageSize: number;
  layerNormEps: number;
  numRegisters: number;
  /** "gelu" (erf) as in every DINO/DINOv2 checkpoint we know of. */
  hiddenAct: "gelu" | "gelu_tanh";
  /**
   * Interpolate position embeddings with PyTorch's anti-aliased bicubic (Dinov2WithRegisters, as
   * the original DINOv2 register models) rather than plain bicubic (Dinov2Model). Default false.
   */
  positionAntialias?: boolean;
}

/** Reads a transformers config.json (ViTConfig / Dinov2Config / Dinov2WithRegistersConfig). */
export function vitConfigFromJson(cfg: Record<string, unknown>): ViTConfig {
  const type = String(cfg.model_type ?? "vit");
  const layout = type.startsWith("dinov2") ? "dinov2" : "vit";
  const num = (k: string, d?: number): number => {
    const v = cfg[k] ?? d;
    if (typeof v !== "number") throw new Error(`config.json: "${k}" must be a number (model_type ${type})`);
    return v;
  };
  const hidden = num("hidden_size");
  const act = String(cfg.hidden_act ?? "gelu");
  if (cfg.use_swiglu_ffn === true) throw new Error(`config.json: use_swiglu_ffn (DINOv2 giant's SwiGLU MLP) is not supported; use a small/base/large DINOv2`);
  return {
    layout,
    hiddenSize: hidden,
    numLayers: num("num_hidden_layers"),
    numHeads: num("num_attention_heads"),
    intermediateSize: layout === "dinov2" ? Math.round(hidden * num("mlp_ratio", 4)) : num("intermediate_size"),
    patchSize: num("patch_size"),
    imageSize: num("image_size"),
    layerNormEps: num("layer_norm_eps", layout === "dinov2" ? 1e-6 : 1e-12),
    numRegisters: num("num_register_tokens", 0),
    hiddenAct: act === "gelu" ? "gelu" : act.includes("tanh") || act === "gelu_new" || act === "gelu_pytorch_tanh" ? "gelu_tanh" : "gelu",
    positionAntialias: type === "dinov2_with_registers",
  };
}

/** Weight names and shapes a config expects (what `--check-models` compares against a file). */
export function vitParamShapes(c: ViTConfig): Map<string, number[]> {
  const C = c.hiddenSize;
  const grid = c.imageSize / c.patchSize;
  const m = new Map<string, number[]>();
  m.set("embeddings.cls_token", [1, 1, C]);
  m.set("embeddings.position_embeddings", [1, grid * grid + 1, C]);
  m.set("embeddings.patch_embeddings.projection.weight", [C, 3, c.patchSize, c.patchSize]);
  m.set("embeddings.patch_embeddings.projection.bias", [C]);
  if (c.numRegisters) m.set("embeddings.register_tokens", [1, c.numRegisters, C]);
  for (let i = 0; i < c.numLayers; i++) {
    for (const [k, s] of blockParamShapes(c)) m.set(`encoder.layer.${i}.${k}`, s);
  }
  m.set("layernorm.weight", [C]);
  m.set("layernorm.bias", [C]);
  return m;
}

function blockParamShapes(c: ViTConfig): [string, number[]][] {
  const C = c.hiddenSize;
  const F = c.intermediateSize;
  const lin = (k: string, o: number, i: number): [string, number[]][] => [[`${k}.weight`, [o, i]], [`${k}.bias`, [o]]];
  const norm = (k: string): [string, number[]][] => [[`${k}.weight`, [C]], [`${k}.bias`, [C]]];
  const v1 = c.layout === "vit";
  return [
    ...norm(v1 ? "layernorm_before" : "norm1"),
    ...lin("attention.attention.query", C, C),
    ...lin("attention.attention.key", C, C),
    ...lin("attention.attention.value", C, C),
    ...lin("attention.output.dense", C, C),
    ...(v1 ? [] : ([["layer_scale1.lambda1", [C]]] as [string, number[]][])),
    ...norm(v1 ? "layernorm_after" : "norm2"),
    ...lin(v1 ? "intermediate.dense" : "mlp.fc1", F, C),
    ...lin(v1 ? "output.dense" : "mlp.fc2", C, F),
    ...(v1 ? [] : ([["layer_scale2.lambda1", [C]]] as [string, number[]][])),
  ];
}

const linear = (p: Params, name: string, x: Tensor, out: number) => {
  const inF = x.shape[x.rank - 1]!;
  return G.linear(x, p.get(`${name}.weight`, [out, inF]), p.get(`${name}.bias`, [out]));
};
const layerNorm = (p: Params, name: string, x: Tensor, eps: number) => {
  const C = x.shape[x.rank - 1]!;
  return G.layerNorm(x, p.get(`${name}.weight`, [C]), p.get(`${name}.bias`, [C]), eps);
};

/** Multi-head self-attention with the query/key/value projections fused into one matmul. */
function selfAttention(p: Params, x: Tensor, c: ViTConfig): Tensor {
  const [B, L, C] = x.shape as [number, number, number];
  const H = c.numHeads;
  const proj = ["query", "key", "value"].map((k) => [p.get(`attention.attention.${k}.weight`, [C, C]), p.get(`attention.attention.${k}.bias`, [C])] as const);
  const qkv = G.linear(x, G.concat(proj.map((w) => w[0]), 0), G.concat(proj.map((w) => w[1]), 0)); // [B, L, 3C]
  const heads = G.transpose(G.reshape(qkv, [B, L, 3, H, C / H]), [2, 0, 3, 1, 4]); // [3, B, H, L, d]
  const [q, k, v] = G.split(heads, [1, 1, 1], 0).map((t) => G.reshape(t, [B, H, L, C / H]));
  const o = G.mergeHeads(G.attention(q!, k!, v!));
  return linear(p, "attention.output.dense", o, C);
}

/** One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)) (with LayerScale in DINOv2). */
export function vitBlock(p: Params, x: Tensor, c: ViTConfig): Tensor {
  const v1 = c.layout === "vit";
  const C = c.hiddenSize;
  const act = c.hiddenAct === "gelu" ? G.gelu : G.geluTanh;
  let h = selfAttention(p, layerNorm(p, v1 ? "layernorm_before" : "norm1", x, c.layerNormEps), c);
  if (!v1) h = G.mul(h, p.get("layer_scale1.lambda1", [C]));
  x = G.add(x, h);
  const n = layerNorm(p, v1 ? "layernorm_after" : "norm2", x, c.layerNormEps);
  h = v1
    ? linear(p, "output.dense", act(linear(p, "intermediate.dense", n, c.intermediateSize)), C)
    : linear(p, "mlp.fc2", act(linear(p, "mlp.fc1", n, c.intermediateSize)), C);
  if (!v1) h = G.mul(h, p.get("layer_scale2.lambda1", [C]));
  return G.add(x, h);
}

/** Position embeddings for an h x w patch grid: as stored, or bicubically interpolated (DINOv2). */
function positionEmbeddings(p: Params, c: ViTConfig, h: number, w: number): Tensor {
  const C = c.hiddenSize;
  const g0 = c.imageSize / c.patchSize;
  const pos = p.get("embeddings.position_embeddings", [1, g0 * g0 + 1, C]);
  if (h === g0 && w === g0) return pos;
  if (c.layout === "vit") throw new Error(`ViT: position embeddings are for ${c.imageSize}px (${g0}x${g0} patches); got a ${h}x${w} grid. Resize inputs to ${c.imageSize}px.`);
  const [cls, grid] = G.split(pos, [1, g0 * g0], 1);
  const img = G.transpose(G.reshape(grid!, [1, g0, g0, C]), [0, 3, 1, 2]);
  const resized = interpolatePositionGrid(img, h, w, c.positionAntialias ?? false);
  return G.concat([cls!, G.reshape(G.transpose(resized, [0, 2, 3, 1]), [1, h * w, C])], 1);
}

/**
 * Resizes a position-embedding grid [1, C, g0, g0] to [1, C, h, w] as transformers'
 * interpolate_pos_encoding does today: F.interpolate(size=(h, w), mode="bicubic",
 * align_corners=False), with antialias=False in Dinov2Model and antialias=True in
 * Dinov2WithRegistersModel. (Older transformers releases had Dinov2Model pass
 * scale_factor=(h + 0.1) / g0 instead of size=, as facebookresearch/dinov2's interpolate_offset
 * does, which moves the sampling points slightly; we follow the current code.) Both are linear
 * maps of the grid, so gradients flow to trainable position embeddings.
 */
export function interpolatePositionGrid(img: Tensor, h: number, w: number, antialias: boolean): Tensor {
  const [, , g0h, g0w] = img.shape as [number, number, number, number];
  // PyTorch's plain bicubic: Keys cubic a = -0.75, half-pixel centres, edge taps clamped.
  if (!antialias) return G.resize(img, [h, w], { mode: "cubic", coordinateTransform: "half_pixel", cubicA: -0.75 });
  // PyTorch's anti-aliased bicubic has no ONNX Resize equivalent at our opset: y = R_h x R_w^T.
  const g = img.graph;
  const rh = g.constant(antialiasedBicubicMatrix(g0h, h), [h, g0h]);
  const rwT = g.constant(transpose2d(antialiasedBicubicMatrix(g0w, w), w, g0w), [g0w, w]);
  return G.matmul(G.matmul(rh, img), rwT);
}

function transpose2d(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c]!;
  return t;
}

/**
 * The [out, in] weights of F.interpolate(mode="bicubic", antialias=True) along one axis (PyTorch's
 * separable anti-aliased kernel, itself Pillow's): Keys cubic with a = -0.5, its support widened by
 * in/out when shrinking, taps outside the input dropped and each row renormalized to sum 1. Unlike
 * plain bicubic it differs from a = -0.75 / clamped edges even when enlarging.
 */
export function antialiasedBicubicMatrix(inSize: number, outSize: number): Float32Array {
  const a = -0.5;
  const cubic = (x: number) => {
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0;
  };
  const scale = inSize / outSize;
  const support = scale >= 1 ? 2 * scale : 2;
  const inv = scale >= 1 ? 1 / scale : 1;
  const m = new Float32Array(outSize * inSize);
  const row = new Float64Array(inSize);
  for (let o = 0; o < outSize; o++) {
    const center = scale * (o + 0.5);
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    let total = 0;
    for (let j = lo; j < hi; j++) total += row[j] = cubic((j - center + 0.5) * inv);
    for (let j = lo; j < hi; j++) m[o * inSize + j] = total !== 0 ? row[j]! / total : row[j]!;
  }
  return m;
}

export interface ViTOutputs extends EncoderOutputs {
  /** Final normalized hidden states [B, 1 + registers + patches, C]. */
  lastHiddenState: Tensor;
}

/** images: normalized [B, 3, S, S]. Returns the CLS embedding (global) and the patch-token grid. */
export function vitForward(p: Params, images: Tensor, c: ViTConfig, layers = c.numLayers): ViTOutputs {
  const [B, , Hpx, Wpx] = images.shape as [number, number, number, number];
  const C = c.hiddenSize;
  const P = c.patchSize;
  if (Hpx % P || Wpx % P) throw new Error(`ViT: input ${Hpx}x${Wpx} is not a multiple of the patch size ${P}`);
  const h = Hpx / P;
  const w = Wpx / P;
  const patches = G.conv(images, p.get("embeddings.patch_embeddings.projection.weight", [C, 3, P, P]), p.get("embeddings.patch_embeddings.projection.bias", [C]), { stride: P });
  const tokens = G.transpose(G.reshape(patches, [B, C, h * w]), [0, 2, 1]); // [B, hw, C]
  const cls = G.expand(p.get("embeddings.cls_token", [1, 1, C]), [B, 1, C]);
  let x = G.add(G.concat([cls, tokens], 1), positionEmbeddings(p, c, h, w));
  if (c.numRegisters) {
    // Registers go after CLS and are added after the position embeddings (they have none).
    const [clsPart, rest] = G.split(x, [1, h * w], 1);
    const reg = G.expand(p.get("embeddings.register_tokens", [1, c.numRegisters, C]), [B, c.numRegisters, C]);
    x = G.concat([clsPart!, reg, rest!], 1);
  }
  // Each block is a recompute segment for grad(..., { recompute: true }).
  for (let i = 0; i < layers; i++) {
    const xi = x;
    x = checkpoint(x.graph, `encoder.layer.${i}`, () => vitBlock(p.scope(`encoder.layer.${i}`), xi, c));
  }
  x = layerNorm(p, "layernorm", x, c.layerNormEps);
  const parts = G.split(x, c.numRegisters ? [1, c.numRegisters, h * w] : [1, h * w], 1);
  const clsOut = parts[0]!;
  const patchOut = parts[parts.length - 1]!;
  const grid = G.reshape(G.transpose(patchOut, [0, 2, 1]), [B, C, h, w]);
  return { lastHiddenState: x, global: G.reshape(clsOut, [B, C]), patches: grid };
}
