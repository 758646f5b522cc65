// The pasted-square test of a patch scorer: replace a square of a 224 px image with other content
// and ask whether the lowest-quality generated patches fall inside it. precision@k with k = the
// patches inside the square; chance is k / (patches in the grid), whatever the scorer.
// Shared by tests/scripts/score-patches.test.ts and bench/encoder-split.ts.

import type { RgbImage } from "../io/images.ts";
import { Rng } from "../rng.ts";

export interface Region { x0: number; y0: number; size: number }

/** Columns 96..223, rows 32..159 of 224: off the diagonal, so a transposed grid fails the test. */
export const PASTE_REGION: Region = { x0: 96, y0: 32, size: 128 };

/** `dst` with `region` replaced by the same pixels of `src` (same size) or by seeded uniform noise. */
export function pasteRegion(dst: RgbImage, src: RgbImage | "noise", seed = 1, region: Region = PASTE_REGION): RgbImage {
  if (src !== "noise" && (src.width !== dst.width || src.height !== dst.height)) throw new Error(`pasteRegion: ${src.width}x${src.height} into ${dst.width}x${dst.height}`);
  const out = { width: dst.width, height: dst.height, data: dst.data.slice() };
  const rng = new Rng(seed);
  for (let y = region.y0; y < region.y0 + region.size; y++) {
    for (let x = region.x0; x < region.x0 + region.size; x++) {
      for (let c = 0; c < 3; c++) {
        const i = (y * dst.width + x) * 3 + c;
        out.data[i] = src === "noise" ? Math.floor(rng.uniform() * 256) : src.data[i]!;
      }
    }
  }
  return out;
}

export interface Localization {
  /** Share of the k lowest-quality patches that lie inside the square. */
  precisionAtK: number;
  /** Mean quality inside and outside the square (masked patches left out). */
  insideMean: number;
  outsideMean: number;
  /** Patches inside the square, and in the grid: chance precision is k / n. */
  k: number;
  n: number;
}

/**
 * precision@k of a q_gen map [h, w] over an image of side `imageSize`: a patch is inside when its
 * top-left pixel is. Masked patches (NaN: near-white background) are no candidates and rank last.
 */
export function localization(q: Float32Array, h: number, w: number, imageSize = 224, region: Region = PASTE_REGION): Localization {
  const ph = imageSize / h, pw = imageSize / w;
  const inside = Array.from({ length: h * w }, (_, i) => {
    const py = Math.floor(i / w) * ph, px = (i % w) * pw;
    return px >= region.x0 && px < region.x0 + region.size && py >= region.y0 && py < region.y0 + region.size;
  });
  const k = inside.filter(Boolean).length;
  const rankOf = (i: number) => (Number.isNaN(q[i]!) ? Infinity : q[i]!);
  const lowest = [...q.keys()].sort((a, b) => rankOf(a) - rankOf(b) || a - b).slice(0, k);
  let si = 0, ni = 0, so = 0, no = 0;
  inside.forEach((isIn, i) => {
    if (Number.isNaN(q[i]!)) return;
    if (isIn) (si += q[i]!), ni++;
    else (so += q[i]!), no++;
  });
  return { precisionAtK: lowest.filter((i) => inside[i]).length / k, insideMean: si / ni, outsideMean: so / no, k, n: h * w };
}
