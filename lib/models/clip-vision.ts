// CLIP's vision transformer in transformers' key layout: CLIPVisionModel and
// CLIPVisionModelWithProjection (ViT-B/32 for CLIP-I evaluation, ViT-H/14 and ViT-bigG/14 as
// IP-Adapter image encoders), and CLIP's image preprocessing.
//
//   vision_model.embeddings.class_embedding            [C]
//   vision_model.embeddings.patch_embedding.weight     [C, 3, P, P], no bias
//   vision_model.embeddings.position_embedding.weight  [(S/P)^2 + 1, C]
//   vision_model.pre_layrnorm                          (sic: transformers' spelling)
//   vision_model.encoder.layers.{i}.*                  as the text tower (clip-text.ts), no mask
//   vision_model.post_layernorm
//   visual_projection.weight                           [projection_dim, C], no bias
//
// Outputs as transformers names them: hiddenStates[0] = pre_layrnorm(embeddings),
// hiddenStates[i + 1] = output of layer i; lastHiddenState = hiddenStates[-1] (NOT post-normed);
// pooled = post_layernorm(CLS of lastHiddenState); imageEmbeds = pooled @ visual_projection^T.
// IP-Adapter-Plus feeds hiddenStates[-2] (penultimate layer, all tokens) to its Resampler.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import { CLIP_MEAN, CLIP_STD, type RgbImage, centerCrop, resizeShortSide, toCHW } from "../io/images.ts";
import { UserError } from "../io/errors.ts";
import type { Params } from "../nn/params.ts";
import { type ClipEncoderConfig, activationFromConfig, clipEncoderLayer, clipLayerNorm, clipLayerParamShapes, clipLinear, configNumber } from "./clip-text.ts";

export interface ClipVisionConfig extends ClipEncoderConfig {
  imageSize: number;
  patchSize: number;
  numChannels: number;
  /** Width of visual_projection (CLIPVisionModelWithProjection / CLIPModel). */
  projectionDim: number;
  /** Whether the checkpoint has visual_projection.weight (from config.json's architectures). */
  withProjection: boolean;
}

type Json = Record<string, unknown>;

/**
 * Reads an image_encoder config.json: a CLIPVisionConfig, or a full CLIPConfig (its vision_config,
 * with the top-level projection_dim). Missing keys take CLIPVisionConfig's defaults (ViT-B/32).
 */
export function clipVisionConfigFromJson(json: Json, where = "config.json"): ClipVisionConfig {
  const arch = (json.architectures as string[] | undefined) ?? [];
  const full = json.vision_config !== undefined || json.model_type === "clip";
  const cfg: Json = full ? { ...((json.vision_config as Json) ?? {}) } : json;
  if (full && json.projection_dim !== undefined) cfg.projection_dim = json.projection_dim;
  const num = (k: string, d?: number) => configNumber(cfg, k, d, where);
  const c: ClipVisionConfig = {
    hiddenSize: num("hidden_size", 768),
    intermediateSize: num("intermediate_size", 3072),
    numLayers: num("num_hidden_layers", 12),
    numHeads: num("num_attention_heads", 12),
    hiddenAct: activationFromConfig(cfg.hidden_act ?? "quick_gelu", where),
    layerNormEps: num("layer_norm_eps", 1e-5),
    imageSize: num("image_size", 224),
    patchSize: num("patch_size", 32),
    numChannels: num("num_channels", 3),
    projectionDim: num("projection_dim", 512),
    withProjection: full || arch.some((a) => a.includes("WithProjection")),
  };
  if (c.hiddenSize % c.numHeads !== 0) throw new UserError(`${where}: hidden_size ${c.hiddenSize} is not divisible by num_attention_heads ${c.numHeads}`);
  if (c.imageSize % c.patchSize !== 0) throw new UserError(`${where}: image_size ${c.imageSize} is not a multiple of patch_size ${c.patchSize}`);
  return c;
}

/** Every weight a CLIPVisionModel(WithProjection) checkpoint holds, in transformers' module order. */
export function clipVisionParamShapes(c: ClipVisionConfig, withProjection = c.withProjection): Map<string, number[]> {
  const C = c.hiddenSize;
  const P = c.patchSize;
  const grid = c.imageSize / P;
  const m = new Map<string, number[]>();
  m.set("vision_model.embeddings.class_embedding", [C]);
  m.set("vision_model.embeddings.patch_embedding.weight", [C, c.numChannels, P, P]);
  m.set("vision_model.embeddings.position_embedding.weight", [grid * grid + 1, C]);
  m.set("vision_model.pre_layrnorm.weight", [C]);
  m.set("vision_model.pre_layrnorm.bias", [C]);
  for (let i = 0; i < c.numLayers; i++) for (const [k, s] of clipLayerParamShapes(c)) m.set(`vision_model.encoder.layers.${i}.${k}`, s);
  m.set("vision_model.post_layernorm.weight", [C]);
  m.set("vision_model.post_layernorm.bias", [C]);
  if (withProjection) m.set("visual_projection.weight", [c.projectionDim, C]);
  return m;
}

export interface ClipVisionOutputs {
  /** Output of the last layer [B, 1 + (S/P)^2, C] (no post_layernorm, as transformers). */
  lastHiddenState: Tensor;
  /** pre_layrnorm(embeddings), then the output of every layer (numLayers + 1 tensors); [-2] for IP-Adapter-Plus. */
  hiddenStates: Tensor[];
  /** post_layernorm of the CLS token [B, C]. */
  pooled: Tensor;
  /** pooled @ visual_projection^T [B, projectionDim] (WithProjection checkpoints). */
  imageEmbeds?: Tensor;
}

/**
 * The vision transformer on normalized images [B, 3, S, S] (clipPreprocess). `p` is at the
 * checkpoint's root (keys "vision_model.*", "visual_projection.weight"). Only the requested outputs
 * are computed: asking for hiddenStates[-2] alone leaves out the last layer.
 */
export function clipVisionForward(p: Params, pixels: Tensor, c: ClipVisionConfig, withProjection = c.withProjection): ClipVisionOutputs {
  const [B, ch, H, W] = pixels.shape as [number, number, number, number];
  if (pixels.rank !== 4 || ch !== c.numChannels || H !== c.imageSize || W !== c.imageSize) {
    throw new Error(`clipVisionForward: images must be [B, ${c.numChannels}, ${c.imageSize}, ${c.imageSize}] (the model's image_size), got ${pixels}`);
  }
  const C = c.hiddenSize;
  const P = c.patchSize;
  const n = (H / P) * (W / P);
  const v = p.scope("vision_model");
  const patches = G.conv(pixels, v.get("embeddings.patch_embedding.weight", [C, c.numChannels, P, P]), null, { stride: P });
  const tokens = G.transpose(G.reshape(patches, [B, C, n]), [0, 2, 1]); // [B, n, C]
  const cls = G.expand(G.reshape(v.get("embeddings.class_embedding", [C]), [1, 1, C]), [B, 1, C]);
  const emb = G.add(G.concat([cls, tokens], 1), v.get("embeddings.position_embedding.weight", [n + 1, C]));
  let x = clipLayerNorm(v, "pre_layrnorm", emb, c.layerNormEps);
  const hiddenStates = [x];
  for (let i = 0; i < c.numLayers; i++) {
    x = clipEncoderLayer(v.scope(`encoder.layers.${i}`), x, c);
    hiddenStates.push(x);
  }
  const clsOut = G.reshape(G.slice(x, [0], [1], [1]), [B, C]);
  const pooled = clipLayerNorm(v, "post_layernorm", clsOut, c.layerNormEps);
  const out: ClipVisionOutputs = { lastHiddenState: x, hiddenStates, pooled };
  if (withProjection) out.imageEmbeds = clipLinear(p, "visual_projection", pooled, c.projectionDim, false);
  return out;
}

/**
 * CLIP's image preprocessing, as OpenAI's `clip.load` transform (torchvision on a PIL image):
 * Resize(size, BICUBIC) of the shorter side (PIL's bicubic arithmetic, bit-exact), CenterCrop(size)
 * (offsets rounded half-to-even), ToTensor, Normalize(CLIP mean/std). Returns CHW float32 [3, size, size].
 * transformers' CLIPImageProcessor differs only in the crop offset when the excess is odd (it
 * floors); both resize with PIL bicubic.
 */
export function clipPreprocess(img: RgbImage, size = 224, out?: Float32Array, offset = 0): Float32Array {
  return toCHW(centerCrop(resizeShortSide(img, size), size, size), CLIP_MEAN, CLIP_STD, out, offset);
}
