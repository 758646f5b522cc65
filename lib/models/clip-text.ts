// CLIP's text transformer in transformers' key layout: CLIPTextModel (SD 1.x text_encoder, the
// CLIP-T half of evaluation) and CLIPTextModelWithProjection (SDXL text_encoder_2), and the
// encoder layer that clip-vision.ts shares.
//
//   text_model.embeddings.token_embedding.weight     [vocab, C]
//   text_model.embeddings.position_embedding.weight  [max_positions, C]
//   text_model.encoder.layers.{i}.layer_norm1 / self_attn.{q,k,v,out}_proj / layer_norm2 / mlp.fc1 / mlp.fc2
//   text_model.final_layer_norm
//   text_projection.weight                           [projection_dim, C], no bias (WithProjection)
//
// Pre-norm blocks with a causal mask. Outputs as transformers names them:
//   hiddenStates[0] = embeddings, hiddenStates[i + 1] = output of layer i (no final norm), so
//   hiddenStates[-2] (penultimate layer) is what SDXL conditions on;
//   lastHiddenState = final_layer_norm(hiddenStates[-1]) (what SD 1.x conditions on);
//   pooled = lastHiddenState at the eos position; textEmbeds = pooled @ text_projection^T.
// The eos position is a graph input (int64 per row) so the graph stays static for any prompt; the
// tokenizer computes it (ClipTokenizer.encode(...).eosIndex) or clipPoolingIndices below does,
// with transformers' rule.

import * as G from "../graph/index.ts";
import type { Graph, Tensor } from "../graph/index.ts";
import { UserError } from "../io/errors.ts";
import type { Params } from "../nn/params.ts";

export type ClipActivation = "quick_gelu" | "gelu" | "gelu_tanh";

/** What the encoder layers need (shared by the text and vision towers). */
export interface ClipEncoderConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  hiddenAct: ClipActivation;
  layerNormEps: number;
}

export interface ClipTextConfig extends ClipEncoderConfig {
  vocabSize: number;
  maxPositions: number;
  /** Width of text_projection (CLIPTextModelWithProjection / CLIPModel). */
  projectionDim: number;
  /** Whether the checkpoint has text_projection.weight (from config.json's architectures). */
  withProjection: boolean;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
}

type Json = Record<string, unknown>;

export function activationFromConfig(act: unknown, where: string): ClipActivation {
  switch (act) {
    case "quick_gelu": return "quick_gelu";
    case "gelu": return "gelu";
    case "gelu_new": case "gelu_pytorch_tanh": case "gelu_fast": return "gelu_tanh";
    default: throw new UserError(`${where}: hidden_act "${String(act)}" is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)`);
  }
}

/** A number from a config dict, or its default (transformers' defaults for a missing key). */
export function configNumber(cfg: Json, key: string, dflt: number | undefined, where: string): number {
  const v = cfg[key] ?? dflt;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new UserError(`${where}: "${key}" must be a number, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Reads a text_encoder config.json: a CLIPTextConfig, or a full CLIPConfig (its text_config, with
 * the top-level projection_dim). Missing keys take CLIPTextConfig's defaults.
 */
export function clipTextConfigFromJson(json: Json, where = "config.json"): ClipTextConfig {
  const arch = (json.architectures as string[] | undefined) ?? [];
  const full = json.text_config !== undefined || json.model_type === "clip";
  const cfg: Json = full ? { ...((json.text_config as Json) ?? {}) } : json;
  // CLIPModel projects with the top-level projection_dim.
  if (full && json.projection_dim !== undefined) cfg.projection_dim = json.projection_dim;
  const num = (k: string, d?: number) => configNumber(cfg, k, d, where);
  const c: ClipTextConfig = {
    vocabSize: num("vocab_size", 49408),
    hiddenSize: num("hidden_size", 512),
    intermediateSize: num("intermediate_size", 2048),
    numLayers: num("num_hidden_layers", 12),
    numHeads: num("num_attention_heads", 8),
    maxPositions: num("max_position_embeddings", 77),
    hiddenAct: activationFromConfig(cfg.hidden_act ?? "quick_gelu", where),
    layerNormEps: num("layer_norm_eps", 1e-5),
    projectionDim: num("projection_dim", 512),
    withProjection: full || arch.some((a) => a.includes("WithProjection")),
    bosTokenId: num("bos_token_id", 49406),
    eosTokenId: num("eos_token_id", 49407),
    padTokenId: num("pad_token_id", 1),
  };
  if (c.hiddenSize % c.numHeads !== 0) throw new UserError(`${where}: hidden_size ${c.hiddenSize} is not divisible by num_attention_heads ${c.numHeads}`);
  return c;
}

/** Weight names and shapes of one encoder layer, relative to `encoder.layers.{i}`. */
export function clipLayerParamShapes(c: ClipEncoderConfig): [string, number[]][] {
  const C = c.hiddenSize;
  const F = c.intermediateSize;
  const lin = (k: string, o: number, i: number): [string, number[]][] => [[`${k}.weight`, [o, i]], [`${k}.bias`, [o]]];
  const norm = (k: string): [string, number[]][] => [[`${k}.weight`, [C]], [`${k}.bias`, [C]]];
  return [
    ...lin("self_attn.k_proj", C, C),
    ...lin("self_attn.v_proj", C, C),
    ...lin("self_attn.q_proj", C, C),
    ...lin("self_attn.out_proj", C, C),
    ...norm("layer_norm1"),
    ...lin("mlp.fc1", F, C),
    ...lin("mlp.fc2", C, F),
    ...norm("layer_norm2"),
  ];
}

/** Every weight a CLIPTextModel(WithProjection) checkpoint holds, in transformers' module order. */
export function clipTextParamShapes(c: ClipTextConfig, withProjection = c.withProjection): Map<string, number[]> {
  const C = c.hiddenSize;
  const m = new Map<string, number[]>();
  m.set("text_model.embeddings.token_embedding.weight", [c.vocabSize, C]);
  m.set("text_model.embeddings.position_embedding.weight", [c.maxPositions, C]);
  for (let i = 0; i < c.numLayers; i++) for (const [k, s] of clipLayerParamShapes(c)) m.set(`text_model.encoder.layers.${i}.${k}`, s);
  m.set("text_model.final_layer_norm.weight", [C]);
  m.set("text_model.final_layer_norm.bias", [C]);
  if (withProjection) m.set("text_projection.weight", [c.projectionDim, C]);
  return m;
}

// ------------------------------------------------------------------------------------ layers

export const clipLinear = (p: Params, name: string, x: Tensor, out: number, bias = true): Tensor => {
  const inF = x.shape[x.rank - 1]!;
  return G.linear(x, p.get(`${name}.weight`, [out, inF]), bias ? p.get(`${name}.bias`, [out]) : undefined);
};

export const clipLayerNorm = (p: Params, name: string, x: Tensor, eps: number): Tensor => {
  const C = x.shape[x.rank - 1]!;
  return G.layerNorm(x, p.get(`${name}.weight`, [C]), p.get(`${name}.bias`, [C]), eps);
};

function activation(x: Tensor, act: ClipActivation): Tensor {
  return act === "quick_gelu" ? G.quickGelu(x) : act === "gelu" ? G.gelu(x) : G.geluTanh(x);
}

/** Additive causal mask [L, L]: 0 on and below the diagonal, float32's lowest value above (as transformers). */
export function causalMask(g: Graph, L: number): Tensor {
  const m = new Float32Array(L * L);
  for (let i = 0; i < L; i++) for (let j = i + 1; j < L; j++) m[i * L + j] = -3.4028234663852886e38;
  return g.constant(m, [L, L]);
}

/** CLIPAttention: softmax(q k^T / sqrt(d) + mask) v per head, then out_proj. */
function clipAttention(p: Params, x: Tensor, c: ClipEncoderConfig, mask?: Tensor): Tensor {
  const C = c.hiddenSize;
  const H = c.numHeads;
  const d = C / H;
  const q = G.splitHeads(clipLinear(p, "self_attn.q_proj", x, C), H);
  const k = G.splitHeads(clipLinear(p, "self_attn.k_proj", x, C), H);
  const v = G.splitHeads(clipLinear(p, "self_attn.v_proj", x, C), H);
  let scores = G.matmul(G.mul(q, 1 / Math.sqrt(d)), G.transpose(k, [0, 1, 3, 2])); // [B, H, L, L]
  if (mask) scores = G.add(scores, mask);
  const o = G.mergeHeads(G.matmul(G.softmax(scores, -1), v));
  return clipLinear(p, "self_attn.out_proj", o, C);
}

/** CLIPEncoderLayer: x + attn(layer_norm1(x)), then x + mlp(layer_norm2(x)). `p` is scoped to the layer. */
export function clipEncoderLayer(p: Params, x: Tensor, c: ClipEncoderConfig, mask?: Tensor): Tensor {
  x = G.add(x, clipAttention(p, clipLayerNorm(p, "layer_norm1", x, c.layerNormEps), c, mask));
  const h = clipLayerNorm(p, "layer_norm2", x, c.layerNormEps);
  return G.add(x, clipLinear(p, "mlp.fc2", activation(clipLinear(p, "mlp.fc1", h, c.intermediateSize), c.hiddenAct), c.hiddenSize));
}

// ------------------------------------------------------------------------------------ model

export interface ClipTextOutputs {
  /** final_layer_norm(output of the last layer) [B, L, C]. */
  lastHiddenState: Tensor;
  /** Embeddings, then the output of every layer (numLayers + 1 tensors [B, L, C]); [-2] for SDXL. */
  hiddenStates: Tensor[];
  /** lastHiddenState at each row's eos position [B, C]. */
  pooled: Tensor;
  /** pooled @ text_projection^T [B, projectionDim] (WithProjection checkpoints). */
  textEmbeds?: Tensor;
}

/** Graph inputs for a batch: input_ids [B, L] and eos_index [B], int64. */
export function clipTextInputs(g: Graph, batch: number, length = 77, prefix = ""): { inputIds: Tensor; eosIndex: Tensor } {
  return { inputIds: g.input(`${prefix}input_ids`, [batch, length], "int64"), eosIndex: g.input(`${prefix}eos_index`, [batch], "int64") };
}

/**
 * The text transformer. `p` is at the checkpoint's root (keys "text_model.*", "text_projection.weight").
 * inputIds [B, L] int64 with L <= maxPositions; eosIndex [B] int64. The graph only computes what the
 * caller asks for: requesting hiddenStates[-2] alone leaves out the last layer.
 */
export function clipTextForward(p: Params, inputIds: Tensor, eosIndex: Tensor, c: ClipTextConfig, withProjection = c.withProjection): ClipTextOutputs {
  if (inputIds.rank !== 2 || (inputIds.dtype !== "int64" && inputIds.dtype !== "int32")) throw new Error(`clipTextForward: input ids must be int64 [B, L], got ${inputIds}`);
  const [B, L] = inputIds.shape as [number, number];
  if (eosIndex.rank !== 1 || eosIndex.shape[0] !== B || eosIndex.dtype !== "int64") throw new Error(`clipTextForward: eos index must be int64 [${B}], got ${eosIndex}`);
  if (L > c.maxPositions) throw new Error(`clipTextForward: ${L} tokens, the model has ${c.maxPositions} positions`);
  const C = c.hiddenSize;
  const t = p.scope("text_model");
  const tokens = G.gather(t.get("embeddings.token_embedding.weight", [c.vocabSize, C]), inputIds, 0); // [B, L, C]
  const positions = G.slice(t.get("embeddings.position_embedding.weight", [c.maxPositions, C]), [0], [L], [0]);
  let x = G.add(tokens, positions);
  const hiddenStates = [x];
  const mask = causalMask(inputIds.graph, L);
  for (let i = 0; i < c.numLayers; i++) {
    x = clipEncoderLayer(t.scope(`encoder.layers.${i}`), x, c, mask);
    hiddenStates.push(x);
  }
  const lastHiddenState = clipLayerNorm(t, "final_layer_norm", x, c.layerNormEps);
  // Row b of the flattened [B*L, C] states is b*L + eos[b].
  const rowStart = inputIds.graph.constant(BigInt64Array.from({ length: B }, (_, b) => BigInt(b * L)), [B], "int64");
  const pooled = G.gather(G.reshape(lastHiddenState, [B * L, C]), G.add(eosIndex, rowStart), 0);
  const out: ClipTextOutputs = { lastHiddenState, hiddenStates, pooled };
  if (withProjection) out.textEmbeds = clipLinear(p, "text_projection", pooled, c.projectionDim, false);
  return out;
}

/**
 * The positions transformers' CLIPTextTransformer pools, for ids [B, L] (row-major): when every row's
 * largest id is 49407 (the real vocabulary's eos: configs from before transformers PR #24773 carry
 * eos_token_id 2), the first position of each row's largest id; otherwise the first position of
 * `eosTokenId` (0 when a row has none, as argmax of all zeros). Earlier versions tested
 * `config.eos_token_id == 2` instead of the ids; both pick the first eos of any sequence ClipTokenizer makes.
 */
export function clipPoolingIndices(ids: ArrayLike<number | bigint>, batch: number, length: number, eosTokenId: number): BigInt64Array {
  if (ids.length !== batch * length) throw new Error(`clipPoolingIndices: ${ids.length} ids for [${batch}, ${length}]`);
  const at = (b: number, i: number) => Number(ids[b * length + i]!);
  const rowMax = (b: number) => {
    let m = -Infinity;
    for (let i = 0; i < length; i++) m = Math.max(m, at(b, i));
    return m;
  };
  const legacy = Array.from({ length: batch }, (_, b) => rowMax(b)).every((m) => m === 49407);
  const out = new BigInt64Array(batch);
  for (let b = 0; b < batch; b++) {
    const target = legacy ? 49407 : eosTokenId;
    let idx = 0;
    for (let i = 0; i < length; i++) if (at(b, i) === target) { idx = i; break; }
    out[b] = BigInt(idx);
  }
  return out;
}
