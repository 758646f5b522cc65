// Patch quality estimation (DESIGN.md section 1, item 2).
//
// An encoder maps the reference image and a generated image to patch feature grids. With each
// patch feature vector L2-normalized over channels, g_i (generated) and r_j (reference):
//   q_gen[i] = max_j cos(g_i, r_j)   is this generated patch a faithful copy of some part of the subject?
//   q_ref[j] = max_i cos(r_j, g_i)   was this part of the subject reproduced anywhere?
// Reference background patches (near-white, see backgroundMask) are left out of the matching:
// they are never a candidate match for q_gen, and their q_ref is NaN ("masked", not a score).
//
// Two implementations of the same maths:
// - qualityMaps: plain typed-array loops, one pair at a time (reference; small inputs, tests).
// - qualityGraph: a lib/graph builder function over batches [B, C, h, w] (MatMul for the cosine
//   matrices, ReduceMax for the maxima), so scoring runs inside ONNX Runtime, on the GPU where
//   there is one, and can be appended to the encoder's own graph. The tests check they agree.
//
// Normalization to [0, 1] (see NORMALIZATION): cosines of post-ReLU CNN features are >= 0, but
// ViT tokens (and anything with negative components) give cosines in [-1, 1]. So raw cosines are
// mapped with q01 = clamp((cos - lo) / (hi - lo), 0, 1), default lo = 0, hi = 1 (mode "clamp",
// the default: cosines clamped to [0, 1]), or rescaled per image by its own min / max over
// unmasked patches (mode "minmax"). qualityMaps / qualityGraph return raw cosines;
// normalizeQuality makes the [0, 1] maps the objectives and heatmaps consume.
//
// Latent-grid maps: resizeMap resizes a patch map (e.g. 7x7 MobileNetV2 or 16x16 DINOv2 grid) to
// the latent grid (64x64 for a 512 px SD image) with torch's bilinear, align_corners=False.
// Masked reference entries are filled with 1 first: background is not a failure, so the
// `weighted` objective's reference weight 1 - q_ref is 0 there and `patch-dpo`'s preferred weight
// a = 1 - q_ref puts no mass on the white background.

import type { RgbImage } from "../io/images.ts";
import * as G from "../graph/index.ts";

// ---------------------------------------------------------------------------------------------
// Background mask.

/**
 * A pixel is near-white when min(R, G, B) >= 235. The reference generator is prompted for "a white
 * background"; diffusion models paint that as 240..255 with faint JPEG-like noise and soft shadows,
 * so 235 keeps the background while a light-grey or pastel subject (min channel usually < 230)
 * stays foreground.
 */
export const WHITE_THRESHOLD = 235;
/**
 * A patch is background when at least 95% of its pixels are near-white: a patch that holds even a
 * thin sliver of the subject's outline (> 5% of its area) still takes part in the matching.
 */
export const BACKGROUND_SHARE = 0.95;

export interface BackgroundMaskOptions {
  /** min(R,G,B) at or above which a pixel counts as near-white (default 235). */
  whiteThreshold?: number;
  /** Share of near-white pixels at or above which a patch is background (default 0.95). */
  backgroundShare?: number;
}

/**
 * Per patch of a reference image, whether it is background (1) or subject (0), row-major
 * [gridH * gridW]. Pass the image exactly as the encoder saw it (after resize / crop), so the
 * grid lines up with the feature grid. Patch (py, px) covers rows floor(py*H/gridH) up to
 * floor((py+1)*H/gridH) and likewise columns, so sizes that do not divide evenly still tile the
 * image with no pixel left out.
 */
export function backgroundMask(img: RgbImage, gridH: number, gridW: number, opts: BackgroundMaskOptions = {}): Uint8Array {
  const white = opts.whiteThreshold ?? WHITE_THRESHOLD;
  const share = opts.backgroundShare ?? BACKGROUND_SHARE;
  const { width: W, height: H, data } = img;
  if (!Number.isInteger(gridH) || !Number.isInteger(gridW) || gridH < 1 || gridW < 1) {
    throw new RangeError(`backgroundMask: grid must be positive integers, got ${gridH}x${gridW}`);
  }
  if (gridH > H || gridW > W) throw new RangeError(`backgroundMask: grid ${gridH}x${gridW} is finer than the ${W}x${H} image`);
  if (data.length !== W * H * 3) throw new RangeError(`backgroundMask: ${data.length} bytes for a ${W}x${H} RGB image`);
  if (!(share > 0 && share <= 1)) throw new RangeError(`backgroundMask: backgroundShare must be in (0, 1], got ${share}`);
  const mask = new Uint8Array(gridH * gridW);
  for (let py = 0; py < gridH; py++) {
    const y0 = Math.floor((py * H) / gridH);
    const y1 = Math.floor(((py + 1) * H) / gridH);
    for (let px = 0; px < gridW; px++) {
      const x0 = Math.floor((px * W) / gridW);
      const x1 = Math.floor(((px + 1) * W) / gridW);
      let nearWhite = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0, p = (y * W + x0) * 3; x < x1; x++, p += 3) {
          if (data[p]! >= white && data[p + 1]! >= white && data[p + 2]! >= white) nearWhite++;
        }
      }
      mask[py * gridW + px] = nearWhite >= share * (y1 - y0) * (x1 - x0) ? 1 : 0;
    }
  }
  return mask;
}

/**
 * The mask actually applied: when every reference patch is background (a blank or failed
 * reference) masking would leave nothing to match against, so nothing is masked. Both the loops
 * and the graph (through maskPenalty) use this rule, so they agree.
 */
export function effectiveMask(refMask: Uint8Array | undefined, n: number): Uint8Array {
  if (!refMask) return new Uint8Array(n);
  if (refMask.length !== n) throw new RangeError(`reference mask has ${refMask.length} entries, the reference grid has ${n} patches`);
  return refMask.every((v) => v !== 0) ? new Uint8Array(n) : refMask;
}

/** Added to the cosines of masked reference columns before the max: far below any cosine. */
export const MASK_PENALTY = -1e4;

/** The refMaskPenalty feed of qualityGraph for one reference: 0 (kept) or MASK_PENALTY (masked). */
export function maskPenalty(refMask: Uint8Array | undefined, n: number): Float32Array {
  const m = effectiveMask(refMask, n);
  const out = new Float32Array(n);
  for (let j = 0; j < n; j++) out[j] = m[j] ? MASK_PENALTY : 0;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Quality maps, loops.

/** A patch feature grid of one image: `data` is [c, h, w] row-major (channel-major). */
export interface FeatureGrid {
  data: Float32Array;
  c: number;
  h: number;
  w: number;
}

export interface QualityMaps {
  /** Raw max cosine per generated patch, [h * w] row-major. */
  qGen: Float32Array;
  /** Raw max cosine per reference patch, [h2 * w2]; NaN where masked. */
  qRef: Float32Array;
  genGrid: [number, number];
  refGrid: [number, number];
  /** 1 where the reference patch was masked (background) and left out of the matching. */
  refMask: Uint8Array;
}

/** Norms below this are treated as this (a zero feature vector normalizes to zero, cos 0). */
export const NORM_EPS = 1e-8;

function gridDims(what: string, f: FeatureGrid): [number, number, number] {
  const { c, h, w } = f;
  for (const v of [c, h, w]) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${what} features: [c, h, w] must be positive integers, got [${c}, ${h}, ${w}]`);
  }
  if (f.data.length !== c * h * w) throw new RangeError(`${what} features hold ${f.data.length} values, shape [${c}, ${h}, ${w}] needs ${c * h * w}`);
  return [c, h, w];
}

/** [C, n] channel-major features -> [n, C] patch-major, each row L2-normalized (x / max(|x|, eps)). */
function normalizedRows(data: Float32Array, c: number, n: number): Float32Array {
  const out = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    let ss = 0;
    for (let k = 0; k < c; k++) {
      const v = data[k * n + i]!;
      ss += v * v;
    }
    const inv = 1 / Math.max(Math.sqrt(ss), NORM_EPS);
    for (let k = 0; k < c; k++) out[i * c + k] = data[k * n + i]! * inv;
  }
  return out;
}

/**
 * Patch quality of one (generated, reference) pair with plain loops: O(h*w * h2*w2 * C). Use
 * qualityGraph for batches and real feature sizes.
 */
export function qualityMaps(gen: FeatureGrid, ref: FeatureGrid, refMask?: Uint8Array): QualityMaps {
  const [c, h, w] = gridDims("generated", gen);
  const [c2, h2, w2] = gridDims("reference", ref);
  if (c !== c2) throw new RangeError(`generated features have ${c} channels, reference features ${c2}`);
  const n = h * w;
  const m = h2 * w2;
  const mask = effectiveMask(refMask, m);
  const g = normalizedRows(gen.data, c, n);
  const r = normalizedRows(ref.data, c, m);
  const qGen = new Float32Array(n).fill(-Infinity);
  const qRef = new Float32Array(m).fill(-Infinity);
  for (let i = 0; i < n; i++) {
    const gi = i * c;
    for (let j = 0; j < m; j++) {
      const rj = j * c;
      let s = 0;
      for (let k = 0; k < c; k++) s += g[gi + k]! * r[rj + k]!;
      if (!mask[j] && s > qGen[i]!) qGen[i] = s;
      if (s > qRef[j]!) qRef[j] = s;
    }
  }
  for (let j = 0; j < m; j++) if (mask[j]) qRef[j] = NaN;
  return { qGen, qRef, genGrid: [h, w], refGrid: [h2, w2], refMask: mask };
}

// ---------------------------------------------------------------------------------------------
// Quality maps, graph.

/** x [B, C, n] -> x / max(sqrt(sum_c x^2), eps), over C. */
function l2NormalizeChannels(x: G.Tensor): G.Tensor {
  const norm = G.sqrt(G.reduceSumSquare(x, [1], true));
  return G.div(x, G.maximum(norm, NORM_EPS));
}

/**
 * Builds the quality maps of a batch of pairs into `genFeats`' graph.
 * - genFeats [B, C, h, w], refFeats [B, C, h2, w2]: patch features of pair b's generated and
 *   reference image (e.g. an encoder's `patches` output, or graph inputs).
 * - refMaskPenalty [B, h2*w2]: 0 for kept reference patches, MASK_PENALTY for masked ones (build
 *   each row with maskPenalty). Added to the masked columns of the cosine matrix before the max
 *   over reference patches; masked qRef entries come out NaN, as in qualityMaps.
 * Returns qGen [B, h*w] and qRef [B, h2*w2] (raw cosines).
 */
export function qualityGraph(genFeats: G.Tensor, refFeats: G.Tensor, refMaskPenalty: G.Tensor): { qGen: G.Tensor; qRef: G.Tensor } {
  if (genFeats.rank !== 4 || refFeats.rank !== 4) {
    throw new Error(`qualityGraph: features must be [B, C, h, w], got ${genFeats} and ${refFeats}`);
  }
  const [b, c, h, w] = genFeats.shape as [number, number, number, number];
  const [b2, c2, h2, w2] = refFeats.shape as [number, number, number, number];
  if (b !== b2 || c !== c2) throw new Error(`qualityGraph: batch/channels differ: ${genFeats} vs ${refFeats}`);
  if (refMaskPenalty.rank !== 2 || refMaskPenalty.shape[0] !== b || refMaskPenalty.shape[1] !== h2 * w2) {
    throw new Error(`qualityGraph: refMaskPenalty must be [${b}, ${h2 * w2}], got ${refMaskPenalty}`);
  }
  const g = l2NormalizeChannels(G.reshape(genFeats, [b, c, h * w])); // [B, C, n]
  const r = l2NormalizeChannels(G.reshape(refFeats, [b, c, h2 * w2])); // [B, C, m]
  const s = G.matmul(G.transpose(g, [0, 2, 1]), r); // [B, n, m]: S[i, j] = cos(g_i, r_j)
  const penalty = G.unsqueeze(refMaskPenalty, [1]); // [B, 1, m]
  const qGen = G.reduceMax(G.add(s, penalty), [2], false); // [B, n]
  const qRefRaw = G.reduceMax(s, [1], false); // [B, m]
  const qRef = G.where(G.less(refMaskPenalty, 0), NaN, qRefRaw);
  return { qGen, qRef };
}

/**
 * Runs qualityGraph on host arrays: gen [B, C, h, w] and ref [B, C, h2, w2] flat, one optional
 * mask per pair. Compiled sessions are cached by shape, so calling it batch after batch compiles
 * once. Returns one QualityMaps per pair.
 */
export async function qualityMapsBatch(
  gen: Float32Array,
  ref: Float32Array,
  genShape: readonly [number, number, number, number],
  refShape: readonly [number, number, number, number],
  refMasks?: (Uint8Array | undefined)[],
  compileOpts: G.CompileOptions = {},
): Promise<QualityMaps[]> {
  const [b, , h, w] = genShape;
  const [, , h2, w2] = refShape;
  const m = h2 * w2;
  const graph = new G.Graph();
  const gIn = graph.input("gen", genShape);
  const rIn = graph.input("ref", refShape);
  const pIn = graph.input("penalty", [b, m]);
  const out = qualityGraph(gIn, rIn, pIn);
  const compiled = await G.compile(out, compileOpts);
  const penalty = new Float32Array(b * m);
  const masks: Uint8Array[] = [];
  for (let i = 0; i < b; i++) {
    masks.push(effectiveMask(refMasks?.[i], m));
    penalty.set(maskPenalty(refMasks?.[i], m), i * m);
  }
  const res = await compiled.run({ gen, ref, penalty });
  const qg = res.qGen as Float32Array;
  const qr = res.qRef as Float32Array;
  return masks.map((mask, i) => ({
    qGen: qg.slice(i * h * w, (i + 1) * h * w),
    qRef: qr.slice(i * m, (i + 1) * m),
    genGrid: [h, w],
    refGrid: [h2, w2],
    refMask: mask,
  }));
}

// ---------------------------------------------------------------------------------------------
// Normalization.

export const NORMALIZATION = `Quality maps are raw cosine similarities of L2-normalized patch features. Cosines of post-ReLU CNN features (MobileNetV2's feature maps) lie in [0, 1] already; ViT tokens and other features with negative components give cosines in [-1, 1]. The [0, 1] maps the objectives consume are, in mode "clamp" (the default), q01 = clamp((cos - lo) / (hi - lo), 0, 1), default lo = 0, hi = 1 (i.e. cos clamped to [0, 1]: anti-correlated patches count as no match at all). Mode "minmax" rescales each map by its own min and max over unmasked patches (a constant map becomes all 1); it spreads scores of encoders whose cosines crowd into a narrow band, at the price of always calling some patch of every image the worst (0). Masked reference patches stay NaN; resizeMap fills them with 1 (background is not a failure).`;

export interface NormalizeOptions {
  /** "clamp" (default): clamp((cos - lo) / (hi - lo), 0, 1). "minmax": per map, lo/hi ignored. */
  mode?: "clamp" | "minmax";
  /** Cosine mapped to 0 in "clamp" mode (default 0). */
  lo?: number;
  /** Cosine mapped to 1 in "clamp" mode (default 1). */
  hi?: number;
}

/** Maps raw cosines to [0, 1] (see NORMALIZATION). NaN (masked) entries stay NaN. */
export function normalizeQuality(q: Float32Array, opts: NormalizeOptions = {}): Float32Array {
  const out = new Float32Array(q.length);
  let lo: number;
  let hi: number;
  if (opts.mode === "minmax") {
    lo = Infinity;
    hi = -Infinity;
    for (const v of q) {
      if (Number.isNaN(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (!(hi - lo > 1e-12)) {
      for (let i = 0; i < q.length; i++) out[i] = Number.isNaN(q[i]!) ? NaN : 1;
      return out;
    }
  } else {
    if (opts.mode !== undefined && opts.mode !== "clamp") throw new RangeError(`normalizeQuality: unknown mode "${opts.mode as string}" (clamp, minmax)`);
    lo = opts.lo ?? 0;
    hi = opts.hi ?? 1;
    if (!(hi > lo)) throw new RangeError(`normalizeQuality: need hi > lo, got lo=${lo} hi=${hi}`);
  }
  const scale = 1 / (hi - lo);
  for (let i = 0; i < q.length; i++) {
    const v = q[i]!;
    out[i] = Number.isNaN(v) ? NaN : Math.min(1, Math.max(0, (v - lo) * scale));
  }
  return out;
}

/** Share of (non-NaN) patches with quality below `threshold`; 0 for an empty map. */
export function lowShare(q01: Float32Array, threshold = 0.5): number {
  let low = 0;
  let n = 0;
  for (const v of q01) {
    if (Number.isNaN(v)) continue;
    n++;
    if (v < threshold) low++;
  }
  return n === 0 ? 0 : low / n;
}

// ---------------------------------------------------------------------------------------------
// Resizing to the latent grid.

export type ResizeMode = "bilinear" | "nearest";

/** Masked (NaN) entries count as perfect quality when a map is resized. */
export const MASKED_FILL = 1;

/**
 * Resizes a row-major [h, w] map to [outH, outW].
 * - "bilinear": torch F.interpolate(mode="bilinear", align_corners=False): source coordinate
 *   (dst + 0.5) * in/out - 0.5, clamped at 0, neighbours clamped at the last index.
 * - "nearest": torch mode="nearest": source index floor(dst * in/out).
 * NaN entries (masked reference patches) are filled with MASKED_FILL = 1 before resizing, so the
 * background reads as "reproduced perfectly" and carries no weight as a failure.
 */
export function resizeMap(map: Float32Array, h: number, w: number, outH: number, outW: number, mode: ResizeMode = "bilinear"): Float32Array {
  for (const [k, v] of [["h", h], ["w", w], ["outH", outH], ["outW", outW]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`resizeMap: ${k} must be a positive integer, got ${v}`);
  }
  if (map.length !== h * w) throw new RangeError(`resizeMap: ${map.length} values for a ${h}x${w} map`);
  const src = new Float32Array(h * w);
  for (let i = 0; i < src.length; i++) src[i] = Number.isNaN(map[i]!) ? MASKED_FILL : map[i]!;
  const out = new Float32Array(outH * outW);
  if (mode === "nearest") {
    for (let y = 0; y < outH; y++) {
      const sy = Math.min(h - 1, Math.floor((y * h) / outH));
      for (let x = 0; x < outW; x++) out[y * outW + x] = src[sy * w + Math.min(w - 1, Math.floor((x * w) / outW))]!;
    }
    return out;
  }
  if (mode !== "bilinear") throw new RangeError(`resizeMap: unknown mode "${mode as string}" (bilinear, nearest)`);
  const axis = (inSize: number, outSize: number) => {
    const i0 = new Int32Array(outSize);
    const i1 = new Int32Array(outSize);
    const t = new Float64Array(outSize);
    const scale = inSize / outSize;
    for (let d = 0; d < outSize; d++) {
      const s = Math.max(0, (d + 0.5) * scale - 0.5);
      const f = Math.min(Math.floor(s), inSize - 1);
      i0[d] = f;
      i1[d] = Math.min(f + 1, inSize - 1);
      t[d] = s - f;
    }
    return { i0, i1, t };
  };
  const ay = axis(h, outH);
  const ax = axis(w, outW);
  for (let y = 0; y < outH; y++) {
    const r0 = ay.i0[y]! * w;
    const r1 = ay.i1[y]! * w;
    const ty = ay.t[y]!;
    for (let x = 0; x < outW; x++) {
      const c0 = ax.i0[x]!;
      const c1 = ax.i1[x]!;
      const tx = ax.t[x]!;
      const top = src[r0 + c0]! * (1 - tx) + src[r0 + c1]! * tx;
      const bottom = src[r1 + c0]! * (1 - tx) + src[r1 + c1]! * tx;
      out[y * outW + x] = top * (1 - ty) + bottom * ty;
    }
  }
  return out;
}

/**
 * Foreground share of each cell of the L x L latent grid, from a quality map whose masked
 * (background) patches are NaN: 1 where every overlapping patch is subject, 0 where all are masked,
 * bilinear (align_corners=False) in between, as resizeMap resizes the maps themselves. The
 * objectives multiply their patch weights by it, so masked patches are neutral.
 */
export function foregroundMap(q: Float32Array, h: number, w: number, outH: number, outW: number): Float32Array {
  return resizeMap(Float32Array.from(q, (v) => (Number.isNaN(v) ? 0 : 1)), h, w, outH, outW);
}
