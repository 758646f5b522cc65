// UNet2DConditionModel (diffusers) for the Stable Diffusion 1.x / 2.x and SDXL configurations, on
// lib/graph, with IP-Adapter's decoupled cross-attention in every attn2.
//
//   sample [B, 4, h, w] -> conv_in -> down blocks (ResnetBlock2D [+ Transformer2DModel] per layer,
//   Downsample2D) -> mid block (resnet, transformer, resnet) -> up blocks (skip concatenation,
//   resnets [+ transformers], Upsample2D) -> conv_norm_out -> SiLU -> conv_out
//   timestep [B] -> sinusoidal Timesteps -> time_embedding (linear_1, SiLU, linear_2) = temb,
//   plus, for SDXL ("text_time"), add_embedding([text_embeds ; Timesteps(time_ids)]).
//
// Weights bind by diffusers' state-dict names (`down_blocks.1.attentions.0.transformer_blocks.0.
// attn2.to_k.weight`, ...), so a diffusers `unet/diffusion_pytorch_model.safetensors` loads as is.
// The IP-Adapter projections are named as diffusers names them after `load_ip_adapter`
// (`<attn2>.processor.to_k_ip.0.weight`); `ipAdapterKeyMap` maps them to the IP-Adapter release's
// `ip_adapter.<n>.to_k_ip.weight` keys.
//
// The timestep is a float graph input [B], so one compiled graph serves every sampling step.
// All ops used here have gradient rules: DPO training backpropagates through this frozen UNet
// into the IP-Adapter weights.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import { checkpoint, chunkedAttention } from "../graph/recompute.ts";
import type { Params, WeightSource } from "../nn/params.ts";

export type DownBlockType = "CrossAttnDownBlock2D" | "DownBlock2D";
export type UpBlockType = "CrossAttnUpBlock2D" | "UpBlock2D";

export interface UNetConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  downBlockTypes: DownBlockType[];
  upBlockTypes: UpBlockType[];
  /** "UNetMidBlock2DCrossAttn", or null for no mid block. */
  midBlockType: "UNetMidBlock2DCrossAttn" | null;
  /** Resnets per down block (up blocks have one more). */
  layersPerBlock: number[];
  /** BasicTransformerBlocks in each Transformer2DModel, [down block][layer]. */
  transformerLayersDown: number[][];
  /** The same for the up blocks, [up block][layer] (diffusers' reversed list, or reverse_transformer_layers_per_block). */
  transformerLayersUp: number[][];
  transformerLayersMid: number;
  /**
   * Attention heads per down block. diffusers reads them from `attention_head_dim` (a naming
   * bug kept for compatibility: SD 1.5's `attention_head_dim: 8` means 8 heads of 40 channels);
   * the head size is the block's channels / heads.
   */
  heads: number[];
  crossAttentionDim: number[];
  /** Transformer2DModel proj_in/proj_out as Linear (SD 2.x, SDXL) instead of 1x1 Conv (SD 1.x). */
  useLinearProjection: boolean;
  normNumGroups: number;
  normEps: number;
  flipSinToCos: boolean;
  freqShift: number;
  timeEmbedDim: number;
  downsamplePadding: number;
  midBlockScaleFactor: number;
  centerInputSample: boolean;
  convInKernel: number;
  convOutKernel: number;
  /** SDXL's micro-conditioning: add_embedding([text_embeds ; Timesteps(time_ids)]). */
  addition: null | { type: "text_time"; timeEmbedDim: number; inputDim: number };
  sampleSize?: number;
}

type Json = Record<string, unknown>;

/**
 * Reads a diffusers `unet/config.json` (UNet2DConditionModel). Options that change the
 * architecture in ways this file does not implement are refused by name.
 */
export function unetConfigFromJson(cfg: Json): UNetConfig {
  const where = "unet config.json";
  const get = (k: string, d: unknown): unknown => cfg[k] ?? d; // null in config.json means "default"
  const num = (k: string, d?: number): number => {
    const v = get(k, d);
    if (typeof v !== "number") throw new Error(`${where}: "${k}" must be a number, got ${JSON.stringify(cfg[k])}`);
    return v;
  };
  const bool = (k: string, d: boolean): boolean => {
    const v = get(k, d);
    if (typeof v !== "boolean") throw new Error(`${where}: "${k}" must be true or false, got ${JSON.stringify(cfg[k])}`);
    return v;
  };
  const strs = (k: string, d: string[]): string[] => {
    const v = get(k, d);
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) throw new Error(`${where}: "${k}" must be a list of strings`);
    return v as string[];
  };
  const refuse = (k: string, allowed: unknown[]) => {
    const v = cfg[k] ?? null;
    if (!allowed.some((a) => a === v)) throw new Error(`${where}: "${k}": ${JSON.stringify(v)} is not supported (supported: ${allowed.map((a) => JSON.stringify(a)).join(", ")})`);
  };
  refuse("act_fn", [null, "silu", "swish"]);
  refuse("time_embedding_type", [null, "positional"]);
  refuse("class_embed_type", [null]);
  refuse("num_class_embeds", [null]);
  refuse("encoder_hid_dim_type", [null]);
  refuse("encoder_hid_dim", [null]);
  refuse("time_cond_proj_dim", [null]);
  refuse("time_embedding_act_fn", [null]);
  refuse("timestep_post_act", [null]);
  refuse("resnet_time_scale_shift", [null, "default"]);
  refuse("dual_cross_attention", [null, false]);
  refuse("only_cross_attention", [null, false]);
  refuse("attention_type", [null, "default"]);
  refuse("cross_attention_norm", [null]);
  refuse("class_embeddings_concat", [null, false]);
  refuse("addition_embed_type", [null, "text_time"]);
  // upcast_attention only changes the precision of fp16 runs (we compute attention in float32);
  // resnet_out_scale_factor / resnet_skip_time_act only reach block types we refuse anyway.

  const blockOut = cfg.block_out_channels;
  if (!Array.isArray(blockOut) || blockOut.some((c) => typeof c !== "number")) throw new Error(`${where}: "block_out_channels" must be a list of numbers`);
  const C = blockOut as number[];
  const n = C.length;
  const perBlock = (k: string, v: unknown, d: number): number[] => {
    const x = v ?? d;
    if (typeof x === "number") return new Array(n).fill(x);
    if (Array.isArray(x) && x.length === n && x.every((e) => typeof e === "number")) return x as number[];
    throw new Error(`${where}: "${k}" must be a number or a list of ${n} numbers (one per block), got ${JSON.stringify(v)}`);
  };
  const downTypes = strs("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]);
  const upTypes = strs("up_block_types", ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]);
  for (const t of downTypes) if (t !== "CrossAttnDownBlock2D" && t !== "DownBlock2D") throw new Error(`${where}: down block type "${t}" is not supported (CrossAttnDownBlock2D, DownBlock2D)`);
  for (const t of upTypes) if (t !== "CrossAttnUpBlock2D" && t !== "UpBlock2D") throw new Error(`${where}: up block type "${t}" is not supported (CrossAttnUpBlock2D, UpBlock2D)`);
  if (downTypes.length !== n || upTypes.length !== n) throw new Error(`${where}: ${n} block_out_channels but ${downTypes.length} down and ${upTypes.length} up block types`);
  const mid = cfg.mid_block_type === undefined ? "UNetMidBlock2DCrossAttn" : cfg.mid_block_type;
  if (mid !== null && mid !== "UNetMidBlock2DCrossAttn") throw new Error(`${where}: mid_block_type "${String(mid)}" is not supported (UNetMidBlock2DCrossAttn, or null for none)`);

  const layers = perBlock("layers_per_block", cfg.layers_per_block, 2);
  // transformer_layers_per_block: a number, one per block, or (asymmetric UNets) one list per block.
  const tl = cfg.transformer_layers_per_block ?? 1;
  const perLayer = (v: unknown, numLayers: number, what: string): number[] => {
    if (typeof v === "number") return new Array(numLayers).fill(v);
    if (Array.isArray(v) && v.length === numLayers && v.every((e) => typeof e === "number")) return v as number[];
    throw new Error(`${where}: ${what} must be a number or a list of ${numLayers} numbers, got ${JSON.stringify(v)}`);
  };
  const tlBlocks: unknown[] = typeof tl === "number" ? new Array(n).fill(tl) : Array.isArray(tl) && tl.length === n ? tl : [];
  if (tlBlocks.length !== n) throw new Error(`${where}: "transformer_layers_per_block" must be a number or a list of ${n} entries`);
  const transformerLayersDown = tlBlocks.map((v, i) => perLayer(v, layers[i]!, `transformer_layers_per_block[${i}]`));
  const reverse = cfg.reverse_transformer_layers_per_block;
  const upSource: unknown[] = reverse == null ? [...tlBlocks].reverse() : (reverse as unknown[]);
  if (reverse == null && tlBlocks.some((v) => Array.isArray(v))) throw new Error(`${where}: per-layer transformer_layers_per_block needs reverse_transformer_layers_per_block (as in diffusers)`);
  const revLayers = [...layers].reverse();
  const transformerLayersUp = upSource.map((v, i) => perLayer(v, revLayers[i]! + 1, `transformer layers of up block ${i}`));
  const lastTl = tlBlocks[n - 1];
  const transformerLayersMid = typeof lastTl === "number" ? lastTl : (lastTl as number[])[0]!;

  const headsRaw = cfg.num_attention_heads ?? cfg.attention_head_dim ?? 8; // diffusers: num_attention_heads or attention_head_dim
  const heads = perBlock("attention_head_dim", headsRaw, 8);
  const crossAttentionDim = perBlock("cross_attention_dim", cfg.cross_attention_dim, 1280);
  const addType = cfg.addition_embed_type ?? null;
  let addition: UNetConfig["addition"] = null;
  if (addType === "text_time") addition = { type: "text_time", timeEmbedDim: num("addition_time_embed_dim"), inputDim: num("projection_class_embeddings_input_dim") };
  const normGroups = num("norm_num_groups", 32);
  const c: UNetConfig = {
    inChannels: num("in_channels", 4),
    outChannels: num("out_channels", 4),
    blockOutChannels: C,
    downBlockTypes: downTypes as DownBlockType[],
    upBlockTypes: upTypes as UpBlockType[],
    midBlockType: mid === null ? null : "UNetMidBlock2DCrossAttn",
    layersPerBlock: layers,
    transformerLayersDown,
    transformerLayersUp,
    transformerLayersMid,
    heads,
    crossAttentionDim,
    useLinearProjection: bool("use_linear_projection", false),
    normNumGroups: normGroups,
    normEps: num("norm_eps", 1e-5),
    flipSinToCos: bool("flip_sin_to_cos", true),
    freqShift: num("freq_shift", 0),
    timeEmbedDim: num("time_embedding_dim", C[0]! * 4),
    downsamplePadding: num("downsample_padding", 1),
    midBlockScaleFactor: num("mid_block_scale_factor", 1),
    centerInputSample: bool("center_input_sample", false),
    convInKernel: num("conv_in_kernel", 3),
    convOutKernel: num("conv_out_kernel", 3),
    addition,
  };
  if (typeof cfg.sample_size === "number") c.sampleSize = cfg.sample_size;
  for (const [i, ch] of C.entries()) {
    if (ch % normGroups !== 0) throw new Error(`${where}: block ${i} has ${ch} channels, not divisible by norm_num_groups ${normGroups}`);
    const attends = downTypes[i] === "CrossAttnDownBlock2D" || upTypes[n - 1 - i] === "CrossAttnUpBlock2D" || (i === n - 1 && mid !== null);
    if (attends && ch % c.heads[i]! !== 0) throw new Error(`${where}: block ${i} has ${ch} channels, not divisible by its ${c.heads[i]} attention heads`);
  }
  return c;
}

// ------------------------------------------------------------------ block plan

export interface TransformerSpec {
  heads: number;
  /** BasicTransformerBlocks in this Transformer2DModel. */
  layers: number;
  crossAttentionDim: number;
  useLinearProjection: boolean;
  groups: number;
}

export interface DownBlockSpec {
  type: DownBlockType;
  inChannels: number;
  outChannels: number;
  numLayers: number;
  /** One Transformer2DModel per layer (CrossAttn blocks only). */
  transformers: TransformerSpec[];
  addDownsample: boolean;
  downsamplePadding: number;
  groups: number;
  eps: number;
}

export interface UpBlockSpec {
  type: UpBlockType;
  /** Channels of the skip taken by the block's last resnet (the previous down block's output). */
  inChannels: number;
  prevOutputChannel: number;
  outChannels: number;
  numLayers: number;
  transformers: TransformerSpec[];
  addUpsample: boolean;
  groups: number;
  eps: number;
}

export interface MidBlockSpec {
  channels: number;
  transformer: TransformerSpec;
  groups: number;
  eps: number;
  outputScaleFactor: number;
}

export interface UNetPlan {
  down: DownBlockSpec[];
  mid: MidBlockSpec | null;
  up: UpBlockSpec[];
}

/** The block structure diffusers builds for a config (UNet2DConditionModel.__init__). */
export function unetPlan(c: UNetConfig): UNetPlan {
  const n = c.blockOutChannels.length;
  const tspec = (heads: number, layers: number, cross: number): TransformerSpec => ({ heads, layers, crossAttentionDim: cross, useLinearProjection: c.useLinearProjection, groups: c.normNumGroups });
  const down: DownBlockSpec[] = [];
  let out = c.blockOutChannels[0]!;
  for (let i = 0; i < n; i++) {
    const inCh = out;
    out = c.blockOutChannels[i]!;
    const type = c.downBlockTypes[i]!;
    down.push({
      type, inChannels: inCh, outChannels: out, numLayers: c.layersPerBlock[i]!,
      transformers: type === "CrossAttnDownBlock2D" ? c.transformerLayersDown[i]!.map((l) => tspec(c.heads[i]!, l, c.crossAttentionDim[i]!)) : [],
      addDownsample: i < n - 1, downsamplePadding: c.downsamplePadding, groups: c.normNumGroups, eps: c.normEps,
    });
  }
  const last = c.blockOutChannels[n - 1]!;
  const mid: MidBlockSpec | null = c.midBlockType
    ? { channels: last, transformer: tspec(c.heads[n - 1]!, c.transformerLayersMid, c.crossAttentionDim[n - 1]!), groups: c.normNumGroups, eps: c.normEps, outputScaleFactor: c.midBlockScaleFactor }
    : null;
  const rc = [...c.blockOutChannels].reverse();
  const rHeads = [...c.heads].reverse();
  const rLayers = [...c.layersPerBlock].reverse();
  const rCross = [...c.crossAttentionDim].reverse();
  const up: UpBlockSpec[] = [];
  out = rc[0]!;
  for (let i = 0; i < n; i++) {
    const prev = out;
    out = rc[i]!;
    const type = c.upBlockTypes[i]!;
    const numLayers = rLayers[i]! + 1;
    up.push({
      type, inChannels: rc[Math.min(i + 1, n - 1)]!, prevOutputChannel: prev, outChannels: out, numLayers,
      transformers: type === "CrossAttnUpBlock2D" ? c.transformerLayersUp[i]!.map((l) => tspec(rHeads[i]!, l, rCross[i]!)) : [],
      addUpsample: i < n - 1, groups: c.normNumGroups, eps: c.normEps,
    });
  }
  return { down, mid, up };
}

// ------------------------------------------------------------------ layers

const linear = (p: Params, name: string, x: Tensor, out: number, bias = true): Tensor => {
  const inF = x.shape[x.rank - 1]!;
  return G.linear(x, p.get(`${name}.weight`, [out, inF]), bias ? p.get(`${name}.bias`, [out]) : undefined);
};

const conv2d = (p: Params, name: string, x: Tensor, out: number, k: number, stride = 1, padding = (k - 1) / 2): Tensor =>
  G.conv(x, p.get(`${name}.weight`, [out, x.shape[1]!, k, k]), p.get(`${name}.bias`, [out]), { stride, padding });

const groupNorm = (p: Params, name: string, x: Tensor, groups: number, eps: number): Tensor => {
  const C = x.shape[1]!;
  return G.groupNorm(x, groups, p.get(`${name}.weight`, [C]), p.get(`${name}.bias`, [C]), eps);
};

const layerNorm = (p: Params, name: string, x: Tensor, eps = 1e-5): Tensor => {
  const C = x.shape[x.rank - 1]!;
  return G.layerNorm(x, p.get(`${name}.weight`, [C]), p.get(`${name}.bias`, [C]), eps);
};

/**
 * diffusers Timesteps / get_timestep_embedding: for each value t, [sin(t f_i), cos(t f_i)] with
 * f_i = exp(-ln(10000) i / (dim/2 - shift)), i < dim/2; [cos, sin] when flipSinToCos.
 * Works on any shape: returns [...t.shape, dim].
 */
export function timestepProjection(t: Tensor, dim: number, flipSinToCos: boolean, freqShift: number, maxPeriod = 10000): Tensor {
  const half = Math.floor(dim / 2);
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp((-Math.log(maxPeriod) * i) / (half - freqShift));
  const args = G.mul(G.unsqueeze(t, [t.rank]), t.graph.constant(freqs, [half]));
  const parts = flipSinToCos ? [G.cos(args), G.sin(args)] : [G.sin(args), G.cos(args)];
  let emb = G.concat(parts, t.rank);
  if (dim % 2 === 1) {
    const pads = new Array(2 * emb.rank).fill(0);
    pads[2 * emb.rank - 1] = 1; // a zero column at the end, as diffusers pads odd sizes
    emb = G.pad(emb, pads);
  }
  return emb;
}

/** diffusers TimestepEmbedding: linear_1 -> SiLU -> linear_2. */
export function timestepEmbedding(p: Params, x: Tensor, dim: number): Tensor {
  return linear(p, "linear_2", G.silu(linear(p, "linear_1", x, dim)), dim);
}

export interface ResnetOptions {
  outChannels: number;
  groups: number;
  eps: number;
  outputScaleFactor?: number;
}

/**
 * diffusers ResnetBlock2D (time_embedding_norm "default", pre-norm, eval): GroupNorm -> SiLU ->
 * conv1 [+ time_emb_proj(SiLU(temb))] -> GroupNorm -> SiLU -> conv2, plus the input (through a
 * 1x1 conv_shortcut when the channel count changes), divided by output_scale_factor.
 * temb null: the VAE's resnets, which have no time_emb_proj.
 */
export function resnetBlock2D(p: Params, x: Tensor, temb: Tensor | null, o: ResnetOptions): Tensor {
  const [B, Cin] = x.shape as [number, number];
  const Cout = o.outChannels;
  let h = conv2d(p, "conv1", G.silu(groupNorm(p, "norm1", x, o.groups, o.eps)), Cout, 3);
  if (temb) h = G.add(h, G.reshape(linear(p, "time_emb_proj", G.silu(temb), Cout), [B, Cout, 1, 1]));
  h = conv2d(p, "conv2", G.silu(groupNorm(p, "norm2", h, o.groups, o.eps)), Cout, 3);
  const skip = Cin === Cout ? x : conv2d(p, "conv_shortcut", x, Cout, 1);
  const y = G.add(skip, h);
  return o.outputScaleFactor && o.outputScaleFactor !== 1 ? G.div(y, o.outputScaleFactor) : y;
}

/** The image prompt of IP-Adapter: tokens [B, N, crossAttentionDim] and their weight (a number, or a tensor broadcast to [B, L, C]). */
export interface IpAdapterInput {
  tokens: Tensor;
  scale: number | Tensor;
}

export interface CrossAttentionContext {
  encoderHiddenStates: Tensor;
  ip?: IpAdapterInput;
  /** Query rows per attention chunk (lib/graph/recompute.ts chunkedAttention); none: unchunked. */
  attentionChunk?: number;
}

/**
 * diffusers Attention (bias-free to_q/to_k/to_v, to_out.0 with bias). With `ip`, the decoupled
 * cross-attention of IP-Adapter (IPAdapterAttnProcessor2_0): the same queries attend separately
 * to the image tokens through `processor.to_k_ip.0` / `processor.to_v_ip.0`, and
 * scale * that result is added to the text attention's before to_out.
 */
export function attentionBlock(p: Params, x: Tensor, heads: number, context: Tensor | null, ip?: IpAdapterInput, chunk?: number): Tensor {
  const D = x.shape[2]!;
  const ctx = context ?? x;
  const Dc = ctx.shape[2]!;
  const q = G.splitHeads(G.linear(x, p.get("to_q.weight", [D, D])), heads);
  const attend = (kv: Tensor, k: string, v: string) => {
    const Dk = kv.shape[2]!;
    return G.mergeHeads(chunkedAttention(q, G.splitHeads(G.linear(kv, p.get(k, [D, Dk])), heads), G.splitHeads(G.linear(kv, p.get(v, [D, Dk])), heads), chunk));
  };
  let h = attend(ctx, "to_k.weight", "to_v.weight");
  if (ip) {
    if (ip.tokens.shape[2] !== Dc) throw new Error(`IP-Adapter: image tokens [${ip.tokens.shape.join(", ")}] have width ${ip.tokens.shape[2]}, the cross-attention expects ${Dc}`);
    h = G.add(h, G.mul(attend(ip.tokens, "processor.to_k_ip.0.weight", "processor.to_v_ip.0.weight"), ip.scale));
  }
  return linear(p, "to_out.0", h, D);
}

/** diffusers BasicTransformerBlock (layer_norm, GEGLU feed-forward): self-attention, cross-attention, FF, each pre-norm and residual. */
export function basicTransformerBlock(p: Params, x: Tensor, heads: number, ctx: CrossAttentionContext): Tensor {
  const D = x.shape[2]!;
  x = G.add(x, attentionBlock(p.scope("attn1"), layerNorm(p, "norm1", x), heads, null, undefined, ctx.attentionChunk));
  x = G.add(x, attentionBlock(p.scope("attn2"), layerNorm(p, "norm2", x), heads, ctx.encoderHiddenStates, ctx.ip, ctx.attentionChunk));
  const inner = 4 * D;
  const [h, gate] = G.split(linear(p, "ff.net.0.proj", layerNorm(p, "norm3", x), 2 * inner), [inner, inner], x.rank - 1);
  return G.add(x, linear(p, "ff.net.2", G.mul(h!, G.gelu(gate!)), D));
}

/**
 * diffusers Transformer2DModel on a feature map: GroupNorm (eps 1e-6) -> proj_in (Linear or 1x1
 * Conv) -> BasicTransformerBlocks over the h*w tokens -> proj_out -> + input.
 */
export function transformer2D(p: Params, x: Tensor, s: TransformerSpec, ctx: CrossAttentionContext): Tensor {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const norm = groupNorm(p, "norm", x, s.groups, 1e-6);
  const tokens = (t: Tensor) => G.reshape(G.transpose(t, [0, 2, 3, 1]), [B, H * W, C]);
  const grid = (t: Tensor) => G.transpose(G.reshape(t, [B, H, W, C]), [0, 3, 1, 2]);
  let h = s.useLinearProjection ? linear(p, "proj_in", tokens(norm), C) : tokens(conv2d(p, "proj_in", norm, C, 1));
  for (let i = 0; i < s.layers; i++) h = basicTransformerBlock(p.scope(`transformer_blocks.${i}`), h, s.heads, ctx);
  const out = s.useLinearProjection ? grid(linear(p, "proj_out", h, C)) : conv2d(p, "proj_out", grid(h), C, 1);
  return G.add(out, x);
}

/** diffusers Downsample2D (use_conv): 3x3 conv, stride 2; padding 0 means pad right/bottom by one first (VAE encoder). */
export function downsample2D(p: Params, x: Tensor, padding: number): Tensor {
  const C = x.shape[1]!;
  if (padding === 0) return conv2d(p, "conv", G.pad(x, [0, 0, 0, 0, 0, 0, 1, 1]), C, 3, 2, 0);
  return conv2d(p, "conv", x, C, 3, 2, padding);
}

/** diffusers Upsample2D (use_conv): nearest x2, then 3x3 conv. */
export function upsample2D(p: Params, x: Tensor): Tensor {
  return conv2d(p, "conv", G.upsampleNearest(x, 2), x.shape[1]!, 3);
}

/**
 * The recompute segments of the UNet (used by `grad(..., { recompute: true })`): each
 * ResnetBlock2D and each Transformer2DModel of the down, mid and up blocks.
 */
const checkpointTransformer = (p: Params, x: Tensor, s: TransformerSpec, ctx: CrossAttentionContext) =>
  checkpoint(x.graph, "transformer", () => transformer2D(p, x, s, ctx));

/** CrossAttnDownBlock2D / DownBlock2D. Returns the block output and the states it hands to the up path. */
export function unetDownBlock(p: Params, x: Tensor, temb: Tensor, s: DownBlockSpec, ctx: CrossAttentionContext): { hidden: Tensor; skips: Tensor[] } {
  const skips: Tensor[] = [];
  for (let i = 0; i < s.numLayers; i++) {
    const xi = x;
    x = checkpoint(x.graph, `resnets.${i}`, () => resnetBlock2D(p.scope(`resnets.${i}`), xi, temb, { outChannels: s.outChannels, groups: s.groups, eps: s.eps }));
    if (s.type === "CrossAttnDownBlock2D") x = checkpointTransformer(p.scope(`attentions.${i}`), x, s.transformers[i]!, ctx);
    skips.push(x);
  }
  if (s.addDownsample) {
    x = downsample2D(p.scope("downsamplers.0"), x, s.downsamplePadding);
    skips.push(x);
  }
  return { hidden: x, skips };
}

/**
 * CrossAttnUpBlock2D / UpBlock2D. `skips` is the down path's list; each resnet takes (and removes)
 * the last one, concatenated after the hidden state on the channel axis.
 */
export function unetUpBlock(p: Params, x: Tensor, skips: Tensor[], temb: Tensor, s: UpBlockSpec, ctx: CrossAttentionContext): Tensor {
  for (let i = 0; i < s.numLayers; i++) {
    const skip = skips.pop();
    if (!skip) throw new Error(`UNet up block: no skip state left for resnet ${i}`);
    const xi = G.concat([x, skip], 1);
    x = checkpoint(x.graph, `resnets.${i}`, () => resnetBlock2D(p.scope(`resnets.${i}`), xi, temb, { outChannels: s.outChannels, groups: s.groups, eps: s.eps }));
    if (s.type === "CrossAttnUpBlock2D") x = checkpointTransformer(p.scope(`attentions.${i}`), x, s.transformers[i]!, ctx);
  }
  return s.addUpsample ? upsample2D(p.scope("upsamplers.0"), x) : x;
}

/** UNetMidBlock2DCrossAttn: resnet, transformer, resnet. */
export function unetMidBlock(p: Params, x: Tensor, temb: Tensor, s: MidBlockSpec, ctx: CrossAttentionContext): Tensor {
  const o = { outChannels: s.channels, groups: s.groups, eps: s.eps, outputScaleFactor: s.outputScaleFactor };
  const x0 = x;
  const x1 = checkpoint(x.graph, "resnets.0", () => resnetBlock2D(p.scope("resnets.0"), x0, temb, o));
  const x2 = checkpointTransformer(p.scope("attentions.0"), x1, s.transformer, ctx);
  return checkpoint(x.graph, "resnets.1", () => resnetBlock2D(p.scope("resnets.1"), x2, temb, o));
}

// ------------------------------------------------------------------ the model

export interface UNetInputs {
  /** Noisy latents [B, in_channels, h, w]. */
  sample: Tensor;
  /** Timesteps as floats [B] (a graph input, so one graph serves every step). */
  timestep: Tensor;
  /** Text encoder hidden states [B, L, cross_attention_dim]. */
  encoderHiddenStates: Tensor;
  /** IP-Adapter image tokens [B, N, cross_attention_dim] (the image projection's output). */
  ipTokens?: Tensor;
  /** IP-Adapter scale (default 1): a number, or a tensor broadcastable to [B, L, C] (e.g. [B, 1, 1] per sample). */
  ipScale?: number | Tensor;
  /**
   * Attention in chunks of this many query rows, each recomputed in the backward pass (training
   * at 64x64 latents and up: 4096 tokens would otherwise keep [B, heads, 4096, 4096] scores).
   */
  attentionChunk?: number;
  /** SDXL: pooled text_encoder_2 output [B, 1280]. */
  textEmbeds?: Tensor;
  /** SDXL: [B, 6] rows [H, W, crop_top, crop_left, target_H, target_W]. */
  timeIds?: Tensor;
}

/** The time embedding temb [B, time_embed_dim] (with SDXL's added text/time conditioning). */
export function unetTimeEmbedding(p: Params, c: UNetConfig, x: UNetInputs): Tensor {
  const B = x.sample.shape[0]!;
  if (x.timestep.rank !== 1 || x.timestep.shape[0] !== B) throw new Error(`UNet: timestep must be [${B}] (one per sample), got [${x.timestep.shape.join(", ")}]`);
  if (c.addition) {
    const { textEmbeds, timeIds } = x;
    if (!textEmbeds || !timeIds) throw new Error("UNet: this config has addition_embed_type \"text_time\" (SDXL): pass textEmbeds [B, 1280] and timeIds [B, 6]");
    if (textEmbeds.rank !== 2 || textEmbeds.shape[0] !== B || timeIds.rank !== 2 || timeIds.shape[0] !== B) {
      throw new Error(`UNet: textEmbeds must be [${B}, P] and timeIds [${B}, K], got [${textEmbeds.shape.join(", ")}] and [${timeIds.shape.join(", ")}]`);
    }
    const want = c.addition.inputDim;
    const have = textEmbeds.shape[1]! + timeIds.shape[1]! * c.addition.timeEmbedDim;
    if (have !== want) throw new Error(`UNet: text_embeds (${textEmbeds.shape[1]}) + ${timeIds.shape[1]} time ids x ${c.addition.timeEmbedDim} = ${have}, but add_embedding expects ${want} (projection_class_embeddings_input_dim)`);
  }
  const C0 = c.blockOutChannels[0]!;
  let emb = timestepEmbedding(p.scope("time_embedding"), timestepProjection(x.timestep, C0, c.flipSinToCos, c.freqShift), c.timeEmbedDim);
  if (c.addition && x.textEmbeds && x.timeIds) {
    const { textEmbeds, timeIds } = x;
    const timeEmbeds = G.reshape(timestepProjection(timeIds, c.addition.timeEmbedDim, c.flipSinToCos, c.freqShift), [B, -1]);
    emb = G.add(emb, timestepEmbedding(p.scope("add_embedding"), G.concat([textEmbeds, timeEmbeds], 1), c.timeEmbedDim));
  }
  return emb;
}

/** The UNet's noise prediction [B, out_channels, h, w]. */
export function unetForward(p: Params, c: UNetConfig, x: UNetInputs): Tensor {
  const [B, Cin, H, W] = x.sample.shape as [number, number, number, number];
  if (x.sample.rank !== 4 || Cin !== c.inChannels) throw new Error(`UNet: sample must be [B, ${c.inChannels}, h, w], got [${x.sample.shape.join(", ")}]`);
  const factor = 2 ** (c.blockOutChannels.length - 1);
  if (H % factor !== 0 || W % factor !== 0) throw new Error(`UNet: latent size ${H}x${W} must be a multiple of ${factor} (the UNet halves it ${c.blockOutChannels.length - 1} times)`);
  const ehs = x.encoderHiddenStates;
  const crossDims = new Set(c.crossAttentionDim);
  if (ehs.rank !== 3 || ehs.shape[0] !== B || !crossDims.has(ehs.shape[2]!)) {
    throw new Error(`UNet: encoderHiddenStates must be [${B}, L, ${[...crossDims].join("|")}], got [${ehs.shape.join(", ")}]`);
  }
  if (x.ipTokens && (x.ipTokens.rank !== 3 || x.ipTokens.shape[0] !== B)) throw new Error(`UNet: ipTokens must be [${B}, N, D], got [${x.ipTokens.shape.join(", ")}]`);
  const plan = unetPlan(c);
  const ctx: CrossAttentionContext = { encoderHiddenStates: ehs, attentionChunk: x.attentionChunk };
  if (x.ipTokens) ctx.ip = { tokens: x.ipTokens, scale: x.ipScale ?? 1 };

  const temb = unetTimeEmbedding(p, c, x);
  let h = c.centerInputSample ? G.sub(G.mul(x.sample, 2), 1) : x.sample;
  h = conv2d(p, "conv_in", h, c.blockOutChannels[0]!, c.convInKernel);
  const skips: Tensor[] = [h];
  plan.down.forEach((s, i) => {
    const r = unetDownBlock(p.scope(`down_blocks.${i}`), h, temb, s, ctx);
    h = r.hidden;
    skips.push(...r.skips);
  });
  if (plan.mid) h = unetMidBlock(p.scope("mid_block"), h, temb, plan.mid, ctx);
  plan.up.forEach((s, i) => {
    h = unetUpBlock(p.scope(`up_blocks.${i}`), h, skips, temb, s, ctx);
  });
  h = G.silu(groupNorm(p, "conv_norm_out", h, c.normNumGroups, c.normEps));
  return conv2d(p, "conv_out", h, c.outChannels, c.convOutKernel);
}

// ------------------------------------------------------------------ weight names

type Shapes = Map<string, number[]>;

function addLinear(m: Shapes, name: string, out: number, inF: number, bias = true) {
  m.set(`${name}.weight`, [out, inF]);
  if (bias) m.set(`${name}.bias`, [out]);
}
function addConv(m: Shapes, name: string, out: number, inC: number, k: number) {
  m.set(`${name}.weight`, [out, inC, k, k]);
  m.set(`${name}.bias`, [out]);
}
function addNorm(m: Shapes, name: string, c: number) {
  m.set(`${name}.weight`, [c]);
  m.set(`${name}.bias`, [c]);
}

/** ResnetBlock2D's weights in state-dict order; temb null for the VAE's. */
export function resnetParamShapes(m: Shapes, prefix: string, cin: number, cout: number, temb: number | null): void {
  addNorm(m, `${prefix}.norm1`, cin);
  addConv(m, `${prefix}.conv1`, cout, cin, 3);
  if (temb !== null) addLinear(m, `${prefix}.time_emb_proj`, cout, temb);
  addNorm(m, `${prefix}.norm2`, cout);
  addConv(m, `${prefix}.conv2`, cout, cout, 3);
  if (cin !== cout) addConv(m, `${prefix}.conv_shortcut`, cout, cin, 1);
}

function attentionShapes(m: Shapes, prefix: string, dim: number, ctx: number, ip: boolean) {
  addLinear(m, `${prefix}.to_q`, dim, dim, false);
  addLinear(m, `${prefix}.to_k`, dim, ctx, false);
  addLinear(m, `${prefix}.to_v`, dim, ctx, false);
  addLinear(m, `${prefix}.to_out.0`, dim, dim);
  if (ip) {
    m.set(`${prefix}.processor.to_k_ip.0.weight`, [dim, ctx]);
    m.set(`${prefix}.processor.to_v_ip.0.weight`, [dim, ctx]);
  }
}

function transformerShapes(m: Shapes, prefix: string, C: number, s: TransformerSpec, ip: boolean) {
  addNorm(m, `${prefix}.norm`, C);
  if (s.useLinearProjection) addLinear(m, `${prefix}.proj_in`, C, C);
  else addConv(m, `${prefix}.proj_in`, C, C, 1);
  for (let i = 0; i < s.layers; i++) {
    const b = `${prefix}.transformer_blocks.${i}`;
    addNorm(m, `${b}.norm1`, C);
    attentionShapes(m, `${b}.attn1`, C, C, false);
    addNorm(m, `${b}.norm2`, C);
    attentionShapes(m, `${b}.attn2`, C, s.crossAttentionDim, ip);
    addNorm(m, `${b}.norm3`, C);
    addLinear(m, `${b}.ff.net.0.proj`, 8 * C, C);
    addLinear(m, `${b}.ff.net.2`, C, 4 * C);
  }
  if (s.useLinearProjection) addLinear(m, `${prefix}.proj_out`, C, C);
  else addConv(m, `${prefix}.proj_out`, C, C, 1);
}

export interface UNetShapeOptions {
  /** Include the IP-Adapter projections of every attn2 (`.processor.to_k_ip.0.weight`, ...). */
  ipAdapter?: boolean;
}

/**
 * Weight names and shapes of a config, in diffusers' state-dict order (module registration order:
 * down_blocks and up_blocks are registered before mid_block; within a block, attentions before
 * resnets; in Attention, to_q, to_k, to_v, to_out, then the processor's IP weights).
 */
export function unetParamShapes(c: UNetConfig, o: UNetShapeOptions = {}): Shapes {
  const m: Shapes = new Map();
  const plan = unetPlan(c);
  const T = c.timeEmbedDim;
  const ip = !!o.ipAdapter;
  addConv(m, "conv_in", c.blockOutChannels[0]!, c.inChannels, c.convInKernel);
  addLinear(m, "time_embedding.linear_1", T, c.blockOutChannels[0]!);
  addLinear(m, "time_embedding.linear_2", T, T);
  if (c.addition) {
    addLinear(m, "add_embedding.linear_1", T, c.addition.inputDim);
    addLinear(m, "add_embedding.linear_2", T, T);
  }
  plan.down.forEach((s, i) => {
    const b = `down_blocks.${i}`;
    s.transformers.forEach((t, j) => transformerShapes(m, `${b}.attentions.${j}`, s.outChannels, t, ip));
    for (let j = 0; j < s.numLayers; j++) resnetParamShapes(m, `${b}.resnets.${j}`, j === 0 ? s.inChannels : s.outChannels, s.outChannels, T);
    if (s.addDownsample) addConv(m, `${b}.downsamplers.0.conv`, s.outChannels, s.outChannels, 3);
  });
  plan.up.forEach((s, i) => {
    const b = `up_blocks.${i}`;
    s.transformers.forEach((t, j) => transformerShapes(m, `${b}.attentions.${j}`, s.outChannels, t, ip));
    for (let j = 0; j < s.numLayers; j++) {
      const skip = j === s.numLayers - 1 ? s.inChannels : s.outChannels;
      const cin = j === 0 ? s.prevOutputChannel : s.outChannels;
      resnetParamShapes(m, `${b}.resnets.${j}`, cin + skip, s.outChannels, T);
    }
    if (s.addUpsample) addConv(m, `${b}.upsamplers.0.conv`, s.outChannels, s.outChannels, 3);
  });
  if (plan.mid) {
    const s = plan.mid;
    transformerShapes(m, "mid_block.attentions.0", s.channels, s.transformer, ip);
    resnetParamShapes(m, "mid_block.resnets.0", s.channels, s.channels, T);
    resnetParamShapes(m, "mid_block.resnets.1", s.channels, s.channels, T);
  }
  addNorm(m, "conv_norm_out", c.blockOutChannels[0]!);
  addConv(m, "conv_out", c.outChannels, c.blockOutChannels[0]!, c.convOutKernel);
  return m;
}

// ------------------------------------------------------------------ IP-Adapter key layout

/**
 * The attention processors of a config in diffusers' `unet.attn_processors` order: a depth-first
 * walk of the modules in registration order, i.e. down_blocks, then up_blocks, then mid_block
 * (UNet2DConditionModel registers the two ModuleLists before it builds the mid block); inside a
 * BasicTransformerBlock attn1 (self) comes before attn2 (cross). Names end in ".processor".
 */
export function unetAttnProcessorNames(c: UNetConfig): string[] {
  const plan = unetPlan(c);
  const names: string[] = [];
  const walk = (prefix: string, ts: TransformerSpec[]) =>
    ts.forEach((t, j) => {
      for (let k = 0; k < t.layers; k++) {
        const b = `${prefix}.attentions.${j}.transformer_blocks.${k}`;
        names.push(`${b}.attn1.processor`, `${b}.attn2.processor`);
      }
    });
  plan.down.forEach((s, i) => walk(`down_blocks.${i}`, s.transformers));
  plan.up.forEach((s, i) => walk(`up_blocks.${i}`, s.transformers));
  if (plan.mid) walk("mid_block", [plan.mid.transformer]);
  return names;
}

/**
 * Our (diffusers') IP-Adapter weight names -> the IP-Adapter release's names.
 *
 * The release (`ip-adapter*.safetensors`, `ip_adapter.*` keys) numbers the weights by position in
 * a ModuleList over *all* of `unet.attn_processors.values()`; self-attention processors hold no
 * weights and take the even slots, so the cross-attention processors are 1, 3, 5, ... in
 * `attn_processors` order (see unetAttnProcessorNames) — SD 1.5: 1..31 (mid block last, 31),
 * SDXL: 1..139. diffusers' `load_ip_adapter` walks the same order with a counter starting at 1 and
 * stepping by 2 over the cross-attention processors.
 *
 * Example: "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight"
 * -> "ip_adapter.1.to_k_ip.weight".
 */
export function ipAdapterKeyMap(c: UNetConfig): Map<string, string> {
  const m = new Map<string, string>();
  let n = 1;
  for (const name of unetAttnProcessorNames(c)) {
    if (!name.endsWith("attn2.processor")) continue;
    m.set(`${name}.to_k_ip.0.weight`, `ip_adapter.${n}.to_k_ip.weight`);
    m.set(`${name}.to_v_ip.0.weight`, `ip_adapter.${n}.to_v_ip.weight`);
    n += 2;
  }
  return m;
}

/**
 * A weight source that shows an IP-Adapter release file (`ip_adapter.<n>.to_k_ip.weight`) under
 * our (diffusers) names, for a Params over the UNet; other names pass through to `base`.
 */
export class IpAdapterUNetSource implements WeightSource {
  private readonly toRelease: Map<string, string>;
  constructor(readonly base: WeightSource, readonly release: WeightSource, config: UNetConfig) {
    this.toRelease = ipAdapterKeyMap(config);
  }
  get label() { return `${this.release.label} (IP-Adapter) over ${this.base.label}`; }
  private pick(name: string): [WeightSource, string] {
    const r = this.toRelease.get(name);
    return r !== undefined && this.release.has(r) ? [this.release, r] : [this.base, name];
  }
  has(name: string) { const [s, n] = this.pick(name); return s.has(n); }
  names() { return [...new Set([...this.base.names(), ...[...this.toRelease].filter(([, r]) => this.release.has(r)).map(([d]) => d)])]; }
  shape(name: string) { const [s, n] = this.pick(name); return s.shape(n); }
  float32(name: string) { const [s, n] = this.pick(name); return s.float32(n); }
  fileRange(name: string) { const [s, n] = this.pick(name); return s.fileRange?.(n); }
}
