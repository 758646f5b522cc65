// AutoencoderKL (diffusers) on lib/graph: the Stable Diffusion / SDXL VAE.
//
//   encode: image [B, 3, H, W] in [-1, 1] -> Encoder (conv_in, DownEncoderBlock2D x n with a
//           right/bottom-padded stride-2 conv, mid block: resnet, attention, resnet,
//           conv_norm_out, SiLU, conv_out -> 2 * latent channels) -> quant_conv -> the mean half
//   decode: latents -> post_quant_conv -> Decoder (conv_in, mid block, UpDecoderBlock2D x n with
//           nearest x2 + conv, conv_norm_out, SiLU, conv_out) -> image
//
// `vaeEncode` returns the mean of the latent distribution (DiagonalGaussianDistribution.mode());
// `toLatents` / `fromLatents` apply the config's scaling_factor (and shift_factor, where set),
// which is how pipelines feed latents to the UNet.
//
// Weights bind by diffusers' names. The mid-block attention uses the current names
// (group_norm, to_q, to_k, to_v, to_out.0); checkpoints saved by diffusers before 0.14 use
// query/key/value/proj_attn, which `withLegacyVaeNames` maps.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import type { Params, WeightSource } from "../nn/params.ts";
import { downsample2D, resnetBlock2D, resnetParamShapes, upsample2D } from "./unet.ts";

export interface VAEConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  normNumGroups: number;
  scalingFactor: number;
  shiftFactor: number | null;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  midBlockAddAttention: boolean;
  sampleSize?: number;
}

/** Reads a diffusers `vae/config.json` (AutoencoderKL). */
export function vaeConfigFromJson(cfg: Record<string, unknown>): VAEConfig {
  const where = "vae config.json";
  const num = (k: string, d?: number): number => {
    const v = cfg[k] ?? d;
    if (typeof v !== "number") throw new Error(`${where}: "${k}" must be a number, got ${JSON.stringify(cfg[k])}`);
    return v;
  };
  const bool = (k: string, d: boolean): boolean => {
    const v = cfg[k] ?? d;
    if (typeof v !== "boolean") throw new Error(`${where}: "${k}" must be true or false`);
    return v;
  };
  const cls = cfg._class_name;
  if (cls !== undefined && cls !== "AutoencoderKL") throw new Error(`${where}: _class_name "${String(cls)}" is not supported (AutoencoderKL)`);
  const act = cfg.act_fn ?? "silu";
  if (act !== "silu" && act !== "swish") throw new Error(`${where}: act_fn "${String(act)}" is not supported (silu)`);
  const C = cfg.block_out_channels ?? [64];
  if (!Array.isArray(C) || C.some((c) => typeof c !== "number")) throw new Error(`${where}: "block_out_channels" must be a list of numbers`);
  const n = C.length;
  const types = (k: string, want: string) => {
    const v = cfg[k] ?? new Array(n).fill(want);
    if (!Array.isArray(v) || v.length !== n || v.some((t) => t !== want)) throw new Error(`${where}: "${k}" must be ${n} x "${want}" (other block types are not supported), got ${JSON.stringify(v)}`);
  };
  types("down_block_types", "DownEncoderBlock2D");
  types("up_block_types", "UpDecoderBlock2D");
  if (cfg.latents_mean != null || cfg.latents_std != null) throw new Error(`${where}: per-channel latents_mean/latents_std are not supported`);
  const c: VAEConfig = {
    inChannels: num("in_channels", 3),
    outChannels: num("out_channels", 3),
    latentChannels: num("latent_channels", 4),
    blockOutChannels: C as number[],
    layersPerBlock: num("layers_per_block", 1),
    normNumGroups: num("norm_num_groups", 32),
    scalingFactor: num("scaling_factor", 0.18215),
    shiftFactor: typeof cfg.shift_factor === "number" ? cfg.shift_factor : null,
    useQuantConv: bool("use_quant_conv", true),
    usePostQuantConv: bool("use_post_quant_conv", true),
    midBlockAddAttention: bool("mid_block_add_attention", true),
  };
  if (typeof cfg.sample_size === "number") c.sampleSize = cfg.sample_size;
  return c;
}

const EPS = 1e-6; // every norm of the SD VAE

const conv2d = (p: Params, name: string, x: Tensor, out: number, k: number): Tensor =>
  G.conv(x, p.get(`${name}.weight`, [out, x.shape[1]!, k, k]), p.get(`${name}.bias`, [out]), { padding: (k - 1) / 2 });

const groupNorm = (p: Params, name: string, x: Tensor, groups: number): Tensor => {
  const C = x.shape[1]!;
  return G.groupNorm(x, groups, p.get(`${name}.weight`, [C]), p.get(`${name}.bias`, [C]), EPS);
};

/**
 * The mid block's Attention (one head over all channels, biases everywhere, residual):
 * x + to_out(softmax(q k^T / sqrt(C)) v) with q, k, v from GroupNorm(x) as h*w tokens.
 */
export function vaeAttention(p: Params, x: Tensor, groups: number): Tensor {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const tokens = G.reshape(G.transpose(G.reshape(groupNorm(p, "group_norm", x, groups), [B, C, H * W]), [0, 2, 1]), [B, H * W, C]);
  const lin = (name: string, t: Tensor) => G.linear(t, p.get(`${name}.weight`, [C, C]), p.get(`${name}.bias`, [C]));
  const h = G.attention(lin("to_q", tokens), lin("to_k", tokens), lin("to_v", tokens));
  const out = G.reshape(G.transpose(lin("to_out.0", h), [0, 2, 1]), [B, C, H, W]);
  return G.add(out, x);
}

/** UNetMidBlock2D as the VAE uses it: resnet, attention, resnet (no time embedding). */
export function vaeMidBlock(p: Params, x: Tensor, c: VAEConfig): Tensor {
  const C = x.shape[1]!;
  const o = { outChannels: C, groups: c.normNumGroups, eps: EPS };
  x = resnetBlock2D(p.scope("resnets.0"), x, null, o);
  if (c.midBlockAddAttention) x = vaeAttention(p.scope("attentions.0"), x, c.normNumGroups);
  return resnetBlock2D(p.scope("resnets.1"), x, null, o);
}

/** UpDecoderBlock2D: `numLayers` resnets to `outChannels`, then (unless last) nearest x2 + conv. */
export function upDecoderBlock2D(p: Params, x: Tensor, o: { outChannels: number; numLayers: number; addUpsample: boolean; groups: number }): Tensor {
  for (let i = 0; i < o.numLayers; i++) x = resnetBlock2D(p.scope(`resnets.${i}`), x, null, { outChannels: o.outChannels, groups: o.groups, eps: EPS });
  return o.addUpsample ? upsample2D(p.scope("upsamplers.0"), x) : x;
}

/** DownEncoderBlock2D: resnets, then (unless last) the padded stride-2 conv. */
export function downEncoderBlock2D(p: Params, x: Tensor, o: { outChannels: number; numLayers: number; addDownsample: boolean; groups: number }): Tensor {
  for (let i = 0; i < o.numLayers; i++) x = resnetBlock2D(p.scope(`resnets.${i}`), x, null, { outChannels: o.outChannels, groups: o.groups, eps: EPS });
  return o.addDownsample ? downsample2D(p.scope("downsamplers.0"), x, 0) : x;
}

/** Encoder + quant_conv; returns the latent distribution's mean [B, latent, H/f, W/f] (unscaled). */
export function vaeEncode(p: Params, images: Tensor, c: VAEConfig): Tensor {
  if (images.rank !== 4 || images.shape[1] !== c.inChannels) throw new Error(`VAE: images must be [B, ${c.inChannels}, H, W], got [${images.shape.join(", ")}]`);
  const f = 2 ** (c.blockOutChannels.length - 1);
  if (images.shape[2]! % f !== 0 || images.shape[3]! % f !== 0) throw new Error(`VAE: image size ${images.shape[2]}x${images.shape[3]} must be a multiple of ${f}`);
  const e = p.scope("encoder");
  const n = c.blockOutChannels.length;
  let h = conv2d(e, "conv_in", images, c.blockOutChannels[0]!, 3);
  c.blockOutChannels.forEach((out, i) => {
    h = downEncoderBlock2D(e.scope(`down_blocks.${i}`), h, { outChannels: out, numLayers: c.layersPerBlock, addDownsample: i < n - 1, groups: c.normNumGroups });
  });
  h = vaeMidBlock(e.scope("mid_block"), h, c);
  h = conv2d(e, "conv_out", G.silu(groupNorm(e, "conv_norm_out", h, c.normNumGroups)), 2 * c.latentChannels, 3);
  if (c.useQuantConv) h = conv2d(p, "quant_conv", h, 2 * c.latentChannels, 1);
  const [mean] = G.split(h, [c.latentChannels, c.latentChannels], 1);
  return mean!;
}

/** post_quant_conv + Decoder: latents (unscaled) [B, latent, h, w] -> images [B, out, h*f, w*f]. */
export function vaeDecode(p: Params, latents: Tensor, c: VAEConfig): Tensor {
  if (latents.rank !== 4 || latents.shape[1] !== c.latentChannels) throw new Error(`VAE: latents must be [B, ${c.latentChannels}, h, w], got [${latents.shape.join(", ")}]`);
  const d = p.scope("decoder");
  const rc = [...c.blockOutChannels].reverse();
  let z = c.usePostQuantConv ? conv2d(p, "post_quant_conv", latents, c.latentChannels, 1) : latents;
  z = conv2d(d, "conv_in", z, rc[0]!, 3);
  z = vaeMidBlock(d.scope("mid_block"), z, c);
  rc.forEach((out, i) => {
    z = upDecoderBlock2D(d.scope(`up_blocks.${i}`), z, { outChannels: out, numLayers: c.layersPerBlock + 1, addUpsample: i < rc.length - 1, groups: c.normNumGroups });
  });
  return conv2d(d, "conv_out", G.silu(groupNorm(d, "conv_norm_out", z, c.normNumGroups)), c.outChannels, 3);
}

/** What the UNet sees: (mean - shift_factor) * scaling_factor. */
export function toLatents(mean: Tensor, c: VAEConfig): Tensor {
  return G.mul(c.shiftFactor !== null ? G.sub(mean, c.shiftFactor) : mean, c.scalingFactor);
}

/** Inverse of toLatents: latents / scaling_factor + shift_factor, ready for vaeDecode. */
export function fromLatents(latents: Tensor, c: VAEConfig): Tensor {
  const z = G.div(latents, c.scalingFactor);
  return c.shiftFactor !== null ? G.add(z, c.shiftFactor) : z;
}

/** Weight names and shapes in diffusers' state-dict order (encoder, decoder, quant_conv, post_quant_conv). */
export function vaeParamShapes(c: VAEConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const conv = (name: string, out: number, inC: number, k: number) => {
    m.set(`${name}.weight`, [out, inC, k, k]);
    m.set(`${name}.bias`, [out]);
  };
  const norm = (name: string, ch: number) => {
    m.set(`${name}.weight`, [ch]);
    m.set(`${name}.bias`, [ch]);
  };
  const mid = (prefix: string, ch: number) => {
    if (c.midBlockAddAttention) {
      const a = `${prefix}.attentions.0`;
      norm(`${a}.group_norm`, ch);
      for (const k of ["to_q", "to_k", "to_v", "to_out.0"]) {
        m.set(`${a}.${k}.weight`, [ch, ch]);
        m.set(`${a}.${k}.bias`, [ch]);
      }
    }
    resnetParamShapes(m, `${prefix}.resnets.0`, ch, ch, null);
    resnetParamShapes(m, `${prefix}.resnets.1`, ch, ch, null);
  };
  const C = c.blockOutChannels;
  const n = C.length;
  const last = C[n - 1]!;
  conv("encoder.conv_in", C[0]!, c.inChannels, 3);
  let prev = C[0]!;
  C.forEach((out, i) => {
    for (let j = 0; j < c.layersPerBlock; j++) resnetParamShapes(m, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? prev : out, out, null);
    if (i < n - 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
    prev = out;
  });
  mid("encoder.mid_block", last);
  norm("encoder.conv_norm_out", last);
  conv("encoder.conv_out", 2 * c.latentChannels, last, 3);
  // Decoder registers up_blocks before mid_block.
  conv("decoder.conv_in", last, c.latentChannels, 3);
  const rc = [...C].reverse();
  prev = rc[0]!;
  rc.forEach((out, i) => {
    for (let j = 0; j <= c.layersPerBlock; j++) resnetParamShapes(m, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : out, out, null);
    if (i < n - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
    prev = out;
  });
  mid("decoder.mid_block", last);
  norm("decoder.conv_norm_out", C[0]!);
  conv("decoder.conv_out", c.outChannels, C[0]!, 3);
  if (c.useQuantConv) conv("quant_conv", 2 * c.latentChannels, 2 * c.latentChannels, 1);
  if (c.usePostQuantConv) conv("post_quant_conv", c.latentChannels, c.latentChannels, 1);
  return m;
}

const LEGACY: [string, string][] = [
  [".to_q.", ".query."],
  [".to_k.", ".key."],
  [".to_v.", ".value."],
  [".to_out.0.", ".proj_attn."],
];

/**
 * Shows a VAE checkpoint saved with diffusers' pre-0.14 attention names (query, key, value,
 * proj_attn) under the current ones; a checkpoint that already has them passes through. Legacy
 * 1x1-conv-shaped projections ([C, C, 1, 1]) are presented as [C, C].
 */
export function withLegacyVaeNames(source: WeightSource): WeightSource {
  const legacy = (name: string): string | undefined => {
    if (source.has(name) || !name.includes(".attentions.")) return undefined;
    for (const [now, old] of LEGACY) if (name.includes(now)) return name.replace(now, old);
    return undefined;
  };
  const resolve = (name: string) => legacy(name) ?? name;
  const squeeze = (s: number[]) => (s.length === 4 && s[2] === 1 && s[3] === 1 ? s.slice(0, 2) : s);
  return {
    label: `${source.label} (legacy VAE attention names mapped)`,
    has: (name) => source.has(resolve(name)),
    names: () => source.names().map((n) => {
      for (const [now, old] of LEGACY) if (n.includes(".attentions.") && n.includes(old)) return n.replace(old, now);
      return n;
    }),
    shape: (name) => {
      const r = resolve(name);
      return r !== name ? squeeze(source.shape(r)) : source.shape(r);
    },
    float32: (name) => source.float32(resolve(name)),
    fileRange: source.fileRange ? (name) => source.fileRange!(resolve(name)) : undefined,
  };
}
