// Two augmented views of one image with an exactly known geometric map, for the self-supervised
// patch task (DESIGN.md section 1, item 2): random resized crop (torchvision RandomResizedCrop's
// sampling), horizontal flip and colour jitter (brightness, contrast, saturation), every draw from
// a seeded Rng. Because crop box and flip are known, every patch centre of view A maps to a point
// of the original image and from there into view B: those are the patch correspondences.
//
// Coordinates are continuous pixel coordinates: pixel i covers [i, i + 1), its centre is i + 0.5.
// A crop box (left, top, width, height) resized to S x S maps view point u to original
// x = left + u * width / S; this is exactly the mapping PIL's (and our) resize uses (output pixel
// centre (i + 0.5) samples input (i + 0.5) * in / out), so the map is exact, not approximate.

import { type RgbImage, crop, resizeBicubic } from "../io/images.ts";
import type { Rng } from "../rng.ts";

/** Where a view came from: crop box in original pixels, flip, colour jitter factors. */
export interface ViewGeometry {
  left: number;
  top: number;
  width: number;
  height: number;
  flip: boolean;
  /** Output side in pixels (views are square). */
  size: number;
}

export interface ColorJitter {
  brightness: number;
  contrast: number;
  saturation: number;
}

export interface View {
  image: RgbImage;
  geometry: ViewGeometry;
  /** The jitter factors applied (1 = unchanged), in the order they were applied. */
  jitter: { op: keyof ColorJitter; factor: number }[];
}

export interface ViewOptions {
  /** Side of each view in pixels (the encoder's input size). */
  size: number;
  /** Patch grid of the encoder's feature map [h, w] on a view. */
  grid: [number, number];
  /** Share of the image area a crop covers (torchvision's `scale`). */
  scale: [number, number];
  /** Aspect ratio range of a crop (width / height) (torchvision's `ratio`). */
  ratio: [number, number];
  /** Probability of a horizontal flip, per view. */
  flipProb: number;
  /** torchvision ColorJitter strengths: factors drawn from [max(0, 1 - s), 1 + s]. */
  jitter: ColorJitter;
  /** Fewest one-to-one correspondences a pair must have; crops are redrawn until it does. */
  minMatches: number;
  /** Crop pairs tried before falling back to two views of the same crop. */
  maxTries: number;
}

export const VIEW_DEFAULTS: Omit<ViewOptions, "size" | "grid"> = {
  scale: [0.25, 1],
  ratio: [3 / 4, 4 / 3],
  flipProb: 0.5,
  jitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4 },
  minMatches: 16,
  maxTries: 50,
};

/** Patch correspondences: patch `a[k]` of view A (row-major index in the h x w grid) is patch `b[k]` of view B. */
export interface Matches {
  a: Int32Array;
  b: Int32Array;
}

export interface ViewPair {
  a: View;
  b: View;
  matches: Matches;
  /** Crop pairs drawn before one had enough overlap (1 = the first). */
  tries: number;
  /** True when no crop pair had enough overlap and both views use one crop. */
  fallback: boolean;
}

/**
 * torchvision RandomResizedCrop.get_params: up to 10 draws of (area share, log-uniform aspect),
 * the first that fits wins; otherwise the whole image clamped to the ratio range, centred.
 */
export function randomResizedCropBox(rng: Rng, width: number, height: number, scale: [number, number], ratio: [number, number]): { left: number; top: number; width: number; height: number } {
  const area = width * height;
  const [lr0, lr1] = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let i = 0; i < 10; i++) {
    const target = area * (scale[0] + (scale[1] - scale[0]) * rng.uniform());
    const aspect = Math.exp(lr0 + (lr1 - lr0) * rng.uniform());
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      return { left: rng.int(width - w + 1), top: rng.int(height - h + 1), width: w, height: h };
    }
  }
  const inRatio = width / height;
  let w = width, h = height;
  if (inRatio < ratio[0]) h = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(h * ratio[1]);
  return { left: Math.floor((width - w) / 2), top: Math.floor((height - h) / 2), width: w, height: h };
}

/** A view point (continuous pixel coordinates) -> original image coordinates. */
export function viewToImage(g: ViewGeometry, u: number, v: number): [number, number] {
  const uu = g.flip ? g.size - u : u;
  return [g.left + (uu * g.width) / g.size, g.top + (v * g.height) / g.size];
}

/** Original image coordinates -> a view point (may lie outside [0, size)). */
export function imageToView(g: ViewGeometry, x: number, y: number): [number, number] {
  const u = ((x - g.left) * g.size) / g.width;
  return [g.flip ? g.size - u : u, ((y - g.top) * g.size) / g.height];
}

/** Centre of patch `index` of an h x w grid on a view, in view pixels. */
export function patchCentre(size: number, grid: [number, number], index: number): [number, number] {
  const [h, w] = grid;
  const i = Math.floor(index / w), j = index % w;
  return [((j + 0.5) * size) / w, ((i + 0.5) * size) / h];
}

/**
 * One-to-one patch correspondences between two views of one image: every patch centre of A is
 * mapped into B; it counts when it lands inside B. Where several A patches land in the same B
 * patch (B zoomed out relative to A), the one landing closest to that patch's centre is kept, so
 * every B patch has at most one partner (InfoNCE needs distinct positives).
 */
export function correspondences(a: ViewGeometry, b: ViewGeometry, grid: [number, number]): Matches {
  const [h, w] = grid;
  const S = b.size;
  const best = new Map<number, { a: number; d: number }>();
  for (let k = 0; k < h * w; k++) {
    const [u, v] = patchCentre(a.size, grid, k);
    const [x, y] = viewToImage(a, u, v);
    const [ub, vb] = imageToView(b, x, y);
    if (!(ub >= 0 && ub < S && vb >= 0 && vb < S)) continue;
    const j = Math.min(w - 1, Math.floor((ub * w) / S)), i = Math.min(h - 1, Math.floor((vb * h) / S));
    const kb = i * w + j;
    const [cu, cv] = patchCentre(S, grid, kb);
    const d = (ub - cu) ** 2 + (vb - cv) ** 2;
    const cur = best.get(kb);
    if (!cur || d < cur.d) best.set(kb, { a: k, d });
  }
  const pairs = [...best].map(([kb, { a: ka }]) => [ka, kb] as const).sort((p, q) => p[0] - q[0]);
  return { a: Int32Array.from(pairs, (p) => p[0]), b: Int32Array.from(pairs, (p) => p[1]) };
}

const luma = (r: number, g: number, b: number) => 0.299 * r + 0.587 * g + 0.114 * b;

/**
 * torchvision's ColorJitter on uint8 RGB (brightness, contrast, saturation; hue is not used):
 * each factor drawn uniformly from [max(0, 1 - s), 1 + s], the three applied in a random order.
 * Brightness scales, contrast blends with the mean grey level, saturation with the grey image.
 */
export function colorJitter(img: RgbImage, rng: Rng, s: ColorJitter): { image: RgbImage; applied: View["jitter"] } {
  const ops: (keyof ColorJitter)[] = rng.shuffle(["brightness", "contrast", "saturation"]);
  const applied: View["jitter"] = [];
  for (const op of ops) {
    const strength = s[op];
    if (strength <= 0) continue;
    const lo = Math.max(0, 1 - strength);
    applied.push({ op, factor: lo + (1 + strength - lo) * rng.uniform() });
  }
  if (applied.length === 0) return { image: img, applied };
  const n = img.width * img.height;
  const px = Float32Array.from(img.data);
  for (const { op, factor: f } of applied) {
    if (op === "brightness") {
      for (let i = 0; i < px.length; i++) px[i] = Math.min(255, Math.max(0, px[i]! * f));
    } else if (op === "contrast") {
      let mean = 0;
      for (let p = 0; p < n; p++) mean += luma(px[3 * p]!, px[3 * p + 1]!, px[3 * p + 2]!);
      mean /= n;
      for (let i = 0; i < px.length; i++) px[i] = Math.min(255, Math.max(0, mean + (px[i]! - mean) * f));
    } else {
      for (let p = 0; p < n; p++) {
        const grey = luma(px[3 * p]!, px[3 * p + 1]!, px[3 * p + 2]!);
        for (let c = 0; c < 3; c++) px[3 * p + c] = Math.min(255, Math.max(0, grey + (px[3 * p + c]! - grey) * f));
      }
    }
  }
  const out = new Uint8Array(px.length);
  for (let i = 0; i < px.length; i++) out[i] = Math.round(px[i]!);
  return { image: { width: img.width, height: img.height, data: out }, applied };
}

function flipHorizontal(img: RgbImage): RgbImage {
  const { width: W, height: H } = img;
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const s = (y * W + x) * 3, d = (y * W + (W - 1 - x)) * 3;
      out[d] = img.data[s]!;
      out[d + 1] = img.data[s + 1]!;
      out[d + 2] = img.data[s + 2]!;
    }
  }
  return { width: W, height: H, data: out };
}

/** Renders a view: crop, bicubic resize to size x size (PIL arithmetic), flip, colour jitter. */
export function renderView(img: RgbImage, g: ViewGeometry, rng: Rng, jitter: ColorJitter): View {
  let out = resizeBicubic(crop(img, g.left, g.top, g.width, g.height), g.size, g.size);
  if (g.flip) out = flipHorizontal(out);
  const j = colorJitter(out, rng, jitter);
  return { image: j.image, geometry: g, jitter: j.applied };
}

/**
 * Two augmented views of `img` and their patch correspondences. Crop pairs are redrawn (at most
 * `maxTries`) until they share at least `minMatches` one-to-one correspondences; if none does,
 * both views use the last crop of A (with their own flips and jitter), which always overlaps fully.
 * Every draw comes from `rng`, so a seed fixes the views.
 */
export function viewPairs(img: RgbImage, rng: Rng, options: Partial<ViewOptions> & Pick<ViewOptions, "size" | "grid">): ViewPair {
  const o: ViewOptions = { ...VIEW_DEFAULTS, ...options };
  const [h, w] = o.grid;
  if (o.minMatches > h * w) throw new RangeError(`viewPairs: minMatches ${o.minMatches} exceeds the ${h}x${w} patch grid`);
  const draw = (): ViewGeometry => ({ ...randomResizedCropBox(rng, img.width, img.height, o.scale, o.ratio), flip: rng.uniform() < o.flipProb, size: o.size });
  let ga: ViewGeometry | undefined, gb: ViewGeometry | undefined, matches: Matches | undefined;
  let tries = 0;
  let fallback = false;
  while (tries < o.maxTries) {
    tries++;
    ga = draw();
    gb = draw();
    matches = correspondences(ga, gb, o.grid);
    if (matches.a.length >= o.minMatches) break;
    matches = undefined;
  }
  if (!matches) {
    fallback = true;
    ga ??= draw();
    gb = { ...ga, flip: rng.uniform() < o.flipProb };
    matches = correspondences(ga, gb, o.grid);
  }
  return { a: renderView(img, ga!, rng, o.jitter), b: renderView(img, gb!, rng, o.jitter), matches, tries, fallback };
}
