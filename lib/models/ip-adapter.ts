// IP-Adapter (Ye et al. 2023): the image prompt as extra cross-attention tokens. This file holds
// the image projections that turn CLIP image features into those tokens; the decoupled
// cross-attention that consumes them (to_k_ip, to_v_ip, scale) lives in the UNet's attention.
//
//   ImageProjModel ("IP-Adapter"):      CLIP image_embeds [B, E] -> proj -> [B, T, D] -> LayerNorm
//   Resampler      ("IP-Adapter-Plus"): penultimate CLIP hidden states [B, L, E] -> proj_in ->
//                  `depth` x (PerceiverAttention over [image features ; latents] + FeedForward)
//                  on `num_queries` learned latents -> proj_out -> norm_out -> [B, num_queries, D]
//
// Weight keys are those of the IP-Adapter release's safetensors (`image_proj.*`), which is also
// what diffusers' `load_ip_adapter` reads, so checkpoints we save load there and vice versa.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import type { Params } from "../nn/params.ts";

export interface ImageProjConfig {
  kind: "linear";
  /** CLIP image embedding size (image_embeds), e.g. 1024 for ViT-H/14. */
  embeddingDim: number;
  /** UNet cross-attention size, e.g. 768 (SD 1.5) or 2048 (SDXL). */
  crossAttentionDim: number;
  numTokens: number;
}

export interface ResamplerConfig {
  kind: "resampler";
  /** Width of the image features fed in (CLIP vision hidden size, 1280 for ViT-H/14). */
  embeddingDim: number;
  dim: number;
  depth: number;
  dimHead: number;
  heads: number;
  numQueries: number;
  outputDim: number;
  ffMult: number;
}

export type ImageProjectionConfig = ImageProjConfig | ResamplerConfig;

/** The authors' PatchDPO starting point: IP-Adapter-Plus SDXL (DESIGN.md section 1). */
export const IP_ADAPTER_PLUS_SDXL: ResamplerConfig = {
  kind: "resampler", embeddingDim: 1280, dim: 1280, depth: 4, dimHead: 64, heads: 20, numQueries: 16, outputDim: 2048, ffMult: 4,
};
/** IP-Adapter-Plus for SD 1.5 (ViT-H/14 image encoder). */
export const IP_ADAPTER_PLUS_SD15: ResamplerConfig = {
  kind: "resampler", embeddingDim: 1280, dim: 768, depth: 4, dimHead: 64, heads: 12, numQueries: 16, outputDim: 768, ffMult: 4,
};

/** Parameter names and shapes under `image_proj.` for a configuration. */
export function imageProjParamShapes(c: ImageProjectionConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  if (c.kind === "linear") {
    m.set("image_proj.proj.weight", [c.crossAttentionDim * c.numTokens, c.embeddingDim]);
    m.set("image_proj.proj.bias", [c.crossAttentionDim * c.numTokens]);
    m.set("image_proj.norm.weight", [c.crossAttentionDim]);
    m.set("image_proj.norm.bias", [c.crossAttentionDim]);
    return m;
  }
  const inner = c.dimHead * c.heads;
  const ff = c.dim * c.ffMult;
  m.set("image_proj.latents", [1, c.numQueries, c.dim]);
  m.set("image_proj.proj_in.weight", [c.dim, c.embeddingDim]);
  m.set("image_proj.proj_in.bias", [c.dim]);
  m.set("image_proj.proj_out.weight", [c.outputDim, c.dim]);
  m.set("image_proj.proj_out.bias", [c.outputDim]);
  m.set("image_proj.norm_out.weight", [c.outputDim]);
  m.set("image_proj.norm_out.bias", [c.outputDim]);
  for (let i = 0; i < c.depth; i++) {
    const a = `image_proj.layers.${i}.0`;
    const f = `image_proj.layers.${i}.1`;
    for (const n of ["norm1", "norm2"]) {
      m.set(`${a}.${n}.weight`, [c.dim]);
      m.set(`${a}.${n}.bias`, [c.dim]);
    }
    m.set(`${a}.to_q.weight`, [inner, c.dim]);
    m.set(`${a}.to_kv.weight`, [2 * inner, c.dim]);
    m.set(`${a}.to_out.weight`, [c.dim, inner]);
    m.set(`${f}.0.weight`, [c.dim]);
    m.set(`${f}.0.bias`, [c.dim]);
    m.set(`${f}.1.weight`, [ff, c.dim]);
    m.set(`${f}.3.weight`, [c.dim, ff]);
  }
  return m;
}

const layerNorm = (p: Params, name: string, x: Tensor) => {
  const C = x.shape[x.rank - 1]!;
  return G.layerNorm(x, p.get(`${name}.weight`, [C]), p.get(`${name}.bias`, [C]), 1e-5);
};
const linear = (p: Params, name: string, x: Tensor, out: number, bias = true) => {
  const inF = x.shape[x.rank - 1]!;
  return G.linear(x, p.get(`${name}.weight`, [out, inF]), bias ? p.get(`${name}.bias`, [out]) : undefined);
};

/**
 * Perceiver attention: the latents query [image features ; latents]. The softmax temperature is
 * split as 1/sqrt(sqrt(d)) on both q and k, as the reference does (same maths as 1/sqrt(d)).
 */
function perceiverAttention(p: Params, x: Tensor, latents: Tensor, c: ResamplerConfig): Tensor {
  const inner = c.dimHead * c.heads;
  const xn = layerNorm(p, "norm1", x);
  const ln = layerNorm(p, "norm2", latents);
  const q = linear(p, "to_q", ln, inner, false);
  const kv = linear(p, "to_kv", G.concat([xn, ln], 1), 2 * inner, false);
  const [k, v] = G.split(kv, [inner, inner], 2);
  const s = 1 / Math.sqrt(Math.sqrt(c.dimHead));
  const out = G.attention(G.mul(G.splitHeads(q, c.heads), s), G.mul(G.splitHeads(k!, c.heads), s), G.splitHeads(v!, c.heads), 1);
  return linear(p, "to_out", G.mergeHeads(out), c.dim, false);
}

function feedForward(p: Params, x: Tensor, c: ResamplerConfig): Tensor {
  const h = G.gelu(linear(p, "1", layerNorm(p, "0", x), c.dim * c.ffMult, false));
  return linear(p, "3", h, c.dim, false);
}

/**
 * Image prompt tokens [B, T, D]. `features`: image_embeds [B, E] for "linear", penultimate CLIP
 * hidden states [B, L, E] for "resampler". `p` is scoped at the checkpoint root (keys `image_proj.*`).
 */
export function imageProjection(p: Params, features: Tensor, c: ImageProjectionConfig): Tensor {
  const ip = p.scope("image_proj");
  if (c.kind === "linear") {
    if (features.rank !== 2) throw new Error(`ImageProjModel: expects image_embeds [B, ${c.embeddingDim}], got [${features.shape}]`);
    const B = features.shape[0]!;
    const tokens = G.reshape(linear(ip, "proj", features, c.crossAttentionDim * c.numTokens), [B, c.numTokens, c.crossAttentionDim]);
    return layerNorm(ip, "norm", tokens);
  }
  if (features.rank !== 3 || features.shape[2] !== c.embeddingDim) throw new Error(`Resampler: expects hidden states [B, L, ${c.embeddingDim}], got [${features.shape}]`);
  const B = features.shape[0]!;
  let latents = G.expand(ip.get("latents", [1, c.numQueries, c.dim]), [B, c.numQueries, c.dim]);
  const x = linear(ip, "proj_in", features, c.dim);
  for (let i = 0; i < c.depth; i++) {
    latents = G.add(perceiverAttention(ip.scope(`layers.${i}.0`), x, latents, c), latents);
    latents = G.add(feedForward(ip.scope(`layers.${i}.1`), latents, c), latents);
  }
  return layerNorm(ip, "norm_out", linear(ip, "proj_out", latents, c.outputDim));
}

/** Reads the projection's configuration from the shapes in a checkpoint (as diffusers does). */
export function imageProjConfigFromWeights(shape: (name: string) => number[] | undefined, has: (name: string) => boolean, dimHead = 64): ImageProjectionConfig {
  if (has("image_proj.latents")) {
    const [, numQueries, dim] = shape("image_proj.latents")!;
    const [, embeddingDim] = shape("image_proj.proj_in.weight")!;
    const [outputDim] = shape("image_proj.proj_out.weight")!;
    let depth = 0;
    while (has(`image_proj.layers.${depth}.0.to_q.weight`)) depth++;
    const [inner] = shape("image_proj.layers.0.0.to_q.weight")!;
    const [ff] = shape("image_proj.layers.0.1.1.weight")!;
    // The release uses 64-wide heads throughout (dim_head = 64); heads follow from the inner width.
    return { kind: "resampler", embeddingDim: embeddingDim!, dim: dim!, depth, dimHead, heads: inner! / dimHead, numQueries: numQueries!, outputDim: outputDim!, ffMult: ff! / dim! };
  }
  if (has("image_proj.proj.weight")) {
    const [rows, embeddingDim] = shape("image_proj.proj.weight")!;
    const [crossAttentionDim] = shape("image_proj.norm.weight")!;
    return { kind: "linear", embeddingDim: embeddingDim!, crossAttentionDim: crossAttentionDim!, numTokens: rows! / crossAttentionDim! };
  }
  throw new Error("not an IP-Adapter checkpoint: no image_proj.latents (Plus) or image_proj.proj.weight (base) tensor");
}
