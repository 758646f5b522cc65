// Heatmaps a person can look at: reference | generated | generated with its patch-quality map
// overlaid, with a colour bar legend. Written into heatmaps/<id>-<k>.png by the scoring step.
//
// Colour map: ColorBrewer RdYlBu (11 stops, linear interpolation in sRGB), low -> high:
// dark red -> orange -> pale yellow -> light blue -> dark blue. Low quality reads as an alarming
// red, high quality as a calm blue, and the map is diverging around 0.5 (the default lowShare
// threshold) and colour-blind safe, unlike red-green maps, and unlike turbo / jet whose *high*
// end is red.
//
// Text is drawn with a built-in 5x7 bitmap font, so the images look the same on every machine
// (SVG text through sharp would depend on which fonts fontconfig finds there).

import { type RgbImage, resizeBicubic, writePng } from "../io/images.ts";
import { resizeMap } from "./quality.ts";

// ---------------------------------------------------------------------------------------------
// Colour map.

/** ColorBrewer RdYlBu, 11 classes, from low (0) to high (1). */
const RDYLBU: readonly (readonly [number, number, number])[] = [
  [165, 0, 38],
  [215, 48, 39],
  [244, 109, 67],
  [253, 174, 97],
  [254, 224, 144],
  [255, 255, 191],
  [224, 243, 248],
  [171, 217, 233],
  [116, 173, 209],
  [69, 117, 180],
  [49, 54, 149],
];

/** Colour of a missing (NaN) value. */
export const NAN_COLOUR: readonly [number, number, number] = [128, 128, 128];

/**
 * Quality in [0, 1] -> sRGB [r, g, b] on the RdYlBu map: 0 (bad) is dark red [165, 0, 38],
 * 0.5 pale yellow, 1 (good) dark blue [49, 54, 149]. Values outside [0, 1] are clamped; NaN is grey.
 */
export function colormap(v: number): [number, number, number] {
  if (Number.isNaN(v)) return [...NAN_COLOUR];
  const x = Math.min(1, Math.max(0, v)) * (RDYLBU.length - 1);
  const i = Math.min(Math.floor(x), RDYLBU.length - 2);
  const t = x - i;
  const a = RDYLBU[i]!;
  const b = RDYLBU[i + 1]!;
  return [
    Math.round(a[0] + (b[0] - a[0]) * t),
    Math.round(a[1] + (b[1] - a[1]) * t),
    Math.round(a[2] + (b[2] - a[2]) * t),
  ];
}

// ---------------------------------------------------------------------------------------------
// A 5x7 bitmap font (lower case, digits, a little punctuation; upper case drawn as lower case).
// g, j, p, q, y have an eighth row: their descender hangs one row below the baseline.

// prettier-ignore
const GLYPHS: Record<string, readonly string[]> = {
  a: [".....", ".....", ".###.", "....#", ".####", "#...#", ".####"],
  b: ["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."],
  c: [".....", ".....", ".###.", "#....", "#....", "#...#", ".###."],
  d: ["....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"],
  e: [".....", ".....", ".###.", "#...#", "#####", "#....", ".###."],
  f: ["..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."],
  g: [".....", ".....", ".####", "#...#", "#...#", ".####", "....#", ".###."],
  h: ["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"],
  i: ["..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."],
  j: ["...#.", ".....", "..##.", "...#.", "...#.", "...#.", "#..#.", ".##.."],
  k: ["#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."],
  l: [".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
  m: [".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"],
  n: [".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"],
  o: [".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."],
  p: [".....", ".....", "####.", "#...#", "#...#", "####.", "#....", "#...."],
  q: [".....", ".....", ".####", "#...#", "#...#", ".####", "....#", "....#"],
  r: [".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."],
  s: [".....", ".....", ".###.", "#....", ".###.", "....#", "####."],
  t: [".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."],
  u: [".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"],
  v: [".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."],
  w: [".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."],
  x: [".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"],
  y: [".....", ".....", "#...#", "#...#", "#...#", ".####", "....#", ".###."],
  z: [".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"],
  "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
  "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
  "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
  "3": ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
  "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
  "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
  "6": ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
  "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
  "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
  "9": [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
  ".": [".....", ".....", ".....", ".....", ".....", ".##..", ".##.."],
  ",": [".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."],
  ":": [".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."],
  "-": [".....", ".....", ".....", "#####", ".....", ".....", "....."],
  _: [".....", ".....", ".....", ".....", ".....", ".....", "#####"],
  "(": ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."],
  ")": [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."],
  "/": [".....", "....#", "...#.", "..#..", ".#...", "#....", "....."],
  "=": [".....", ".....", "#####", ".....", "#####", ".....", "....."],
  "%": ["##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"],
  " ": [".....", ".....", ".....", ".....", ".....", ".....", "....."],
  "?": [".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."],
};

/** Width in pixels of `text` drawn at `scale` (6 columns per character: 5 + 1 spacing). */
export function textWidth(text: string, scale: number): number {
  return text.length === 0 ? 0 : (text.length * 6 - 1) * scale;
}

/** Draws `text` with its top-left corner at (x, y); pixels outside the image are skipped. */
export function drawText(img: RgbImage, text: string, x: number, y: number, colour: readonly number[], scale = 1): void {
  const { width: W, height: H, data } = img;
  let cx = x;
  for (const ch of text.toLowerCase()) {
    const glyph = GLYPHS[ch] ?? GLYPHS["?"]!;
    for (let gy = 0; gy < glyph.length; gy++) {
      const row = glyph[gy]!;
      for (let gx = 0; gx < 5; gx++) {
        if (row[gx] !== "#") continue;
        for (let sy = 0; sy < scale; sy++) {
          const py = y + gy * scale + sy;
          if (py < 0 || py >= H) continue;
          for (let sx = 0; sx < scale; sx++) {
            const px = cx + gx * scale + sx;
            if (px < 0 || px >= W) continue;
            const p = (py * W + px) * 3;
            data[p] = colour[0]!;
            data[p + 1] = colour[1]!;
            data[p + 2] = colour[2]!;
          }
        }
      }
    }
    cx += 6 * scale;
  }
}

// ---------------------------------------------------------------------------------------------
// The triptych.

export interface HeatmapOptions {
  /** Height of each panel in pixels; widths keep each image's aspect ratio (default 256). */
  height?: number;
  /** Opacity of the colour map over the generated image (default 0.5). */
  alpha?: number;
  /** Draw the patch grid lines on the overlay panel (default true). */
  gridLines?: boolean;
  /** Opacity of the (white) grid lines (default 0.25: faint). */
  gridAlpha?: number;
  /** Panel titles and legend text (default true; false draws the colour bar only). */
  labels?: boolean;
  /** An extra caption at the bottom left, e.g. an id and the low-patch share. */
  caption?: string;
  /** Pixel scale of the 5x7 font (default 2). */
  fontScale?: number;
}

const MARGIN = 8;
const GAP = 8;
const BAR_HEIGHT = 10;
const TEXT_COLOUR = [40, 40, 40] as const;

function fitHeight(img: RgbImage, height: number): RgbImage {
  const width = Math.max(1, Math.round((img.width * height) / img.height));
  return resizeBicubic(img, width, height);
}

function blit(dst: RgbImage, src: RgbImage, x0: number, y0: number): void {
  for (let y = 0; y < src.height; y++) {
    const s = y * src.width * 3;
    dst.data.set(src.data.subarray(s, s + src.width * 3), ((y0 + y) * dst.width + x0) * 3);
  }
}

/**
 * reference | generated | generated with the quality map overlaid, all `height` px tall, with a
 * colour bar (low .. high) under the overlay panel.
 * - qGen01: quality of the generated patches in [0, 1], row-major [h * w] (normalizeQuality's
 *   output). It is upsampled to the panel with resizeMap (bilinear, half-pixel centres), blended
 *   with the generated image at `alpha`, and the patch grid (the encoder's h x w) is drawn faintly.
 */
export function heatmapTriptych(ref: RgbImage, gen: RgbImage, qGen01: Float32Array, h: number, w: number, opts: HeatmapOptions = {}): RgbImage {
  const H = opts.height ?? 256;
  const alpha = opts.alpha ?? 0.5;
  const gridAlpha = opts.gridAlpha ?? 0.25;
  const labels = opts.labels ?? true;
  const s = opts.fontScale ?? 2;
  if (!Number.isInteger(H) || H < 8) throw new RangeError(`heatmapTriptych: height must be an integer >= 8, got ${H}`);
  if (qGen01.length !== h * w) throw new RangeError(`heatmapTriptych: ${qGen01.length} quality values for a ${h}x${w} grid`);

  const refP = fitHeight(ref, H);
  const genP = fitHeight(gen, H);
  const pw = genP.width;

  // Overlay panel: generated image blended with the colour map of the upsampled quality map.
  const q = resizeMap(qGen01, h, w, H, pw, "bilinear");
  const over: RgbImage = { width: pw, height: H, data: new Uint8Array(pw * H * 3) };
  for (let i = 0, p = 0; i < q.length; i++, p += 3) {
    const c = colormap(q[i]!);
    for (let k = 0; k < 3; k++) over.data[p + k] = Math.round((1 - alpha) * genP.data[p + k]! + alpha * c[k]!);
  }
  if (opts.gridLines ?? true) {
    const faint = (p: number) => {
      for (let k = 0; k < 3; k++) over.data[p + k] = Math.round((1 - gridAlpha) * over.data[p + k]! + gridAlpha * 255);
    };
    for (let k = 1; k < w; k++) {
      const x = Math.floor((k * pw) / w);
      for (let y = 0; y < H; y++) faint((y * pw + x) * 3);
    }
    for (let k = 1; k < h; k++) {
      const y = Math.floor((k * H) / h);
      for (let x = 0; x < pw; x++) faint((y * pw + x) * 3);
    }
  }

  const textH = 7 * s;
  const headerH = labels ? MARGIN + textH + 6 : MARGIN;
  const footerH = GAP + BAR_HEIGHT + (labels ? 4 + textH : 0) + MARGIN;
  const width = MARGIN + refP.width + GAP + pw + GAP + pw + MARGIN;
  const height = headerH + H + footerH;
  const out: RgbImage = { width, height, data: new Uint8Array(width * height * 3).fill(255) };

  const xs = [MARGIN, MARGIN + refP.width + GAP, MARGIN + refP.width + GAP + pw + GAP];
  blit(out, refP, xs[0]!, headerH);
  blit(out, genP, xs[1]!, headerH);
  blit(out, over, xs[2]!, headerH);

  // Colour bar under the overlay panel, low on the left.
  const barY = headerH + H + GAP;
  for (let x = 0; x < pw; x++) {
    const c = colormap(pw === 1 ? 0 : x / (pw - 1));
    for (let y = 0; y < BAR_HEIGHT; y++) out.data.set(c, ((barY + y) * width + xs[2]! + x) * 3);
  }
  if (labels) {
    const ty = MARGIN;
    drawText(out, "reference", xs[0]!, ty, TEXT_COLOUR, s);
    drawText(out, "generated", xs[1]!, ty, TEXT_COLOUR, s);
    drawText(out, "patch quality", xs[2]!, ty, TEXT_COLOUR, s);
    const ly = barY + BAR_HEIGHT + 4;
    drawText(out, "low", xs[2]!, ly, TEXT_COLOUR, s);
    drawText(out, "high", xs[2]! + pw - textWidth("high", s), ly, TEXT_COLOUR, s);
    if (opts.caption) drawText(out, opts.caption, xs[0]!, barY, TEXT_COLOUR, s);
  }
  return out;
}

/** heatmapTriptych written as a PNG, atomically (temp file + rename). */
export async function writeHeatmapPng(
  path: string,
  ref: RgbImage,
  gen: RgbImage,
  qGen01: Float32Array,
  h: number,
  w: number,
  opts: HeatmapOptions = {},
): Promise<void> {
  await writePng(path, heatmapTriptych(ref, gen, qGen01, h, w, opts));
}
