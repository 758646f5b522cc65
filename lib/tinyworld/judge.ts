// The tiny world's oracle judge: reads an image (a generated one, or a render) and says what it
// shows, using only the renderer's ground truth (class geometry, palette, lighting, pattern
// functions, detail shapes, scene backgrounds) and pixel analysis. It never touches the patch
// encoder or patch scores, so it can referee them, and nothing trains against it.
//
// How it decides, in order (each step uses what the previous ones found):
// - scene: the image border against each candidate background (white, or a flat scene rendered
//   empty). The subject keeps off the border and flat scenes are two known flat colours, so the
//   background nearest on the border is the scene.
// - subject mask: pixels unlike that background (near the horizon, unlike any sky-ground mix, so
//   a soft horizon does not become subject). The catalogue keeps subject colours away from scene
//   colours, so a plain colour distance separates them.
// - class: each class has exactly one silhouette in the catalogue. Each is fitted to the mask
//   (scale and offset; never mirrored, as flat scenes never mirror) and the class whose fit
//   overlaps best (IoU) wins. The fit also gives every pixel its canonical (u, v), which the later
//   steps need: lighting, pattern phase and detail position live in canonical units.
// - body: on the fitted body, away from outlines and accent parts, each pixel divided by the
//   renderer's light factor at its (u, v) votes for its nearest palette colour; black and white do
//   not vote (pattern / accent and logo colours, never a catalogue body).
// - pattern: each body pixel is projected on the segment from the shaded black pattern colour to
//   the shaded body colour: how much pattern it shows. plain / stripes / dots (the catalogue's
//   period and angle) are matched to that map over phases (and a percent or two of scale); the
//   smallest residual wins. The pattern is then checked locally: a window the size of the
//   smallest wrong-pattern patch renderCorrupted paints must not fit much worse than the body as a
//   whole, else `patternConsistent` is false.
// - detail: pixels that body and pattern do not explain (far from that segment; along the
//   outline, far from every mix of body, pattern and background) form blobs. The largest blob of
//   at least a third of a star's area is the detail: its kind is the best-overlapping detail shape
//   (star / heart / square, searched over position), its position that shape's centre in
//   canonical units, its colour the palette colour whose blends with the body and pattern (and,
//   for a square logo, its white centre) explain most of the blob. `purity` is the share of the
//   blob so explained: a logo's is near 1, random noise's is low. Every other blob that large is
//   counted in `strayBlobs`: catalogue subjects have exactly one detail.
//
// What "right" means (`verdictOf`): identity = class and body colour; pattern = kind, and
// consistent over the body; detail = exactly one detail blob (no strays), of the right colour and
// kind, shaped like a detail (shape IoU >= MIN_SHAPE_IOU), pure (>= MIN_PURITY) and centred within
// DETAIL_PLACE_TOLERANCE (one detail radius, canonical units) of where the subject has it. So a
// missing, recoloured or moved detail is wrong, and so is one smeared by noise. The kind is part of
// it because it is readable at the generator's 64 px (and at 48 px nearly always). The judge reads
// the catalogue (black pattern and accents, its pattern period, one detail of DETAIL_SIZE); other
// subjects are outside what it reads.

import type { RgbImage } from "../io/images.ts";
import { Rng } from "../rng.ts";
import { CATALOGUE, CATALOGUE_CLASSES, CATALOGUE_DETAILS, CATALOGUE_PATTERNS, DETAIL_SIZE, FLAT_SCENES } from "./catalogue.ts";
import { Canvas, type Shape, blue, green, red, rgb, shade } from "./raster.ts";
import { patternFn } from "./render.ts";
import { COLORS, COLOR_NAMES, type ClassNoun, type ColorName, type DetailKind, type PatternKind, type Subject, detailShapes, subjectGeometry } from "./subjects.ts";

export const WHITE_SCENE = "white";

export interface JudgedDetail {
  kind: DetailKind;
  color: ColorName;
  /** Centre in the subject's canonical coordinates (as `Detail.x`, `Detail.y`). */
  x: number;
  y: number;
  /** Unexplained pixels in the blob. */
  pixels: number;
  /** IoU of the blob with the best-fitting detail shape of `kind`. */
  shapeIoU: number;
  /** Share of the blob's pixels explained by `color` and its blends with the body, the pattern
   *  and (square) the white centre. */
  purity: number;
}

export interface Judgement {
  /** "white" or a FLAT_SCENE_NAMES entry. */
  scene: string;
  /** null when no subject is found. */
  classNoun: ClassNoun | null;
  body: ColorName | null;
  pattern: PatternKind | null;
  /** false when part of the body shows another pattern than `pattern`. */
  patternConsistent: boolean;
  detail: JudgedDetail | null;
  /** Unexplained blobs of detail size besides the detail (noise, a second logo). */
  strayBlobs: number;
  /** Diagnostics: the class fit (IoU; pixels per canonical unit; pixel position of canonical (0, 0)). */
  fit: { iou: number; scale: number; ox: number; oy: number } | null;
  /** Diagnostics: mean pattern residual, and its worst window. */
  patternResidual: number;
  patternLocalResidual: number;
}

export interface Verdict {
  /** Class and body colour right. */
  identity: boolean;
  /** Pattern kind right and consistent over the body. */
  pattern: boolean;
  /** The one detail present, right colour, place and kind, nothing stray (see the header). */
  detail: boolean;
  scene: boolean;
  /** identity && pattern && detail. */
  allDetails: boolean;
  judgement: Judgement;
}

// ---------------------------------------------------------------------------------------------
// Thresholds. Colour distances are Euclidean in 8-bit RGB.

/** A pixel farther than this from the background is subject. Black accents against the night
 *  sky are the closest pair the catalogue has (about 35). */
const BACKGROUND_DISTANCE = 24;
/** The mask takes a pixel as subject once the subject covers a fifth or so of it (the background
 *  threshold is far below a typical contrast), so in the class fit a template covers a pixel when
 *  it comes within SPREAD pixels of its centre; with plain point sampling the fit comes out a few
 *  percent too large, enough to misplace the pattern. */
const SPREAD = 0.35;
/** Stricter: a pixel within this of the background may be background, for finding enclosed holes. */
const ENCLOSURE_DISTANCE = 12;
/** A subject pixel farther than this from the black-to-body segment is not body or pattern.
 *  Catalogue detail colours keep >= 120 from the body, so this leaves a wide margin. */
const FOREIGN_DISTANCE = 50;
/** A detail pixel within this of a blend of its colours with the body or pattern is pure. */
const PURE_DISTANCE = 40;
/** Minimum blob area that counts as a detail, as a fraction of the smallest detail's (the star's) area. */
const MIN_BLOB_FRACTION = 1 / 3;
/** A detail is in place when its centre is within this (canonical units: one detail radius) of
 *  where it belongs, i.e. it still covers most of its own footprint. */
export const DETAIL_PLACE_TOLERANCE = DETAIL_SIZE;
/** A detail's blob must overlap its shape at least this well (noise blobs and smears do not). */
export const MIN_SHAPE_IOU = 0.6;
/** ... and its pixels must be explained by its colours and their blends (noise is not). */
export const MIN_PURITY = 0.8;
/** A window (radius in canonical units: the smallest wrong-pattern patch renderCorrupted paints)
 *  whose mean pattern residual exceeds the body's mean residual by LOCAL_EXCESS shows another
 *  pattern. Relative, so that an image that is merely blurred (every pixel off a little) passes. */
const LOCAL_RADIUS = 0.12;
const LOCAL_EXCESS = 0.15;

/** Mirrors `light()` in render.ts: the renderer shades subject parts (not details) by it. */
function light(u: number, v: number): number {
  return 1.1 - 0.22 * u - 0.1 * v;
}

// ---------------------------------------------------------------------------------------------
// Ground truth the judge compares against, built once.

const PATTERN_OF = CATALOGUE[0]!.subject.pattern;
const PATTERN_PERIOD = PATTERN_OF.period;
const PATTERN_ANGLE = PATTERN_OF.angle;

/** Canonical label grids of the class silhouettes: the unit square at GRID cells a side. */
const GRID = 256;
const LABEL = { none: 0, body: 1, accent: 2 } as const;

interface ClassTemplate {
  classNoun: ClassNoun;
  grid: Uint8Array;
  /** Per cell: distance in cells to the nearest silhouette cell (0 inside), capped at REACH. */
  reach: Uint8Array;
  /** Tight canonical box of the silhouette. */
  box: [number, number, number, number];
}

let templates: ClassTemplate[] | null = null;

function classTemplates(): ClassTemplate[] {
  if (templates) return templates;
  templates = CATALOGUE_CLASSES.map((classNoun) => {
    const subject = CATALOGUE.find((e) => e.subject.classNoun === classNoun)!.subject;
    const grid = new Uint8Array(GRID * GRID);
    for (const part of subjectGeometry(subject).parts) {
      const label = part.role === "body" ? LABEL.body : LABEL.accent;
      paintGrid(grid, part.shape, label);
    }
    let u0 = GRID, v0 = GRID, u1 = -1, v1 = -1;
    for (let j = 0; j < GRID; j++) {
      for (let i = 0; i < GRID; i++) {
        if (!grid[j * GRID + i]) continue;
        u0 = Math.min(u0, i);
        u1 = Math.max(u1, i);
        v0 = Math.min(v0, j);
        v1 = Math.max(v1, j);
      }
    }
    return { classNoun, grid, reach: reachOf(grid), box: [u0 / GRID, v0 / GRID, (u1 + 1) / GRID, (v1 + 1) / GRID] };
  });
  return templates;
}

const REACH = 8;

function reachOf(grid: Uint8Array): Uint8Array {
  const out = new Uint8Array(GRID * GRID).fill(REACH);
  const offsets: [number, number, number][] = [];
  for (let dj = -REACH; dj <= REACH; dj++) {
    for (let di = -REACH; di <= REACH; di++) offsets.push([di, dj, Math.min(REACH, Math.ceil(Math.hypot(di, dj)))]);
  }
  for (let j = 0; j < GRID; j++) {
    for (let i = 0; i < GRID; i++) {
      if (!grid[j * GRID + i]) continue;
      out[j * GRID + i] = 0;
      // Only the outline spreads outwards.
      const edge = i === 0 || j === 0 || i === GRID - 1 || j === GRID - 1 ||
        !grid[j * GRID + i - 1] || !grid[j * GRID + i + 1] || !grid[(j - 1) * GRID + i] || !grid[(j + 1) * GRID + i];
      if (!edge) continue;
      for (const [di, dj, d] of offsets) {
        const ii = i + di, jj = j + dj;
        if (ii < 0 || jj < 0 || ii >= GRID || jj >= GRID) continue;
        if (d < out[jj * GRID + ii]!) out[jj * GRID + ii] = d;
      }
    }
  }
  return out;
}

function paintGrid(grid: Uint8Array, shape: Shape, label: number): void {
  const [u0, v0, u1, v1] = shape.box;
  const i0 = Math.max(0, Math.floor(u0 * GRID)), i1 = Math.min(GRID - 1, Math.ceil(u1 * GRID));
  const j0 = Math.max(0, Math.floor(v0 * GRID)), j1 = Math.min(GRID - 1, Math.ceil(v1 * GRID));
  for (let j = j0; j <= j1; j++) {
    for (let i = i0; i <= i1; i++) if (shape.inside((i + 0.5) / GRID, (j + 0.5) / GRID)) grid[j * GRID + i] = label;
  }
}

function labelAt(t: ClassTemplate, u: number, v: number): number {
  if (u < 0 || v < 0 || u >= 1 || v >= 1) return LABEL.none;
  return t.grid[Math.floor(v * GRID) * GRID + Math.floor(u * GRID)]!;
}

/** Detail shapes as coverage grids around their centre, in units of the canonical detail size. */
const DGRID = 48;
const DEXTENT = 1.2 * DETAIL_SIZE;

let detailTemplates: Map<DetailKind, Float32Array> | null = null;

function detailTemplate(kind: DetailKind): Float32Array {
  if (!detailTemplates) {
    detailTemplates = new Map();
    for (const k of CATALOGUE_DETAILS) {
      const shapes = detailShapes({ kind: k, color: "red", x: 0, y: 0, size: DETAIL_SIZE }).map((s) => s.shape);
      const cov = new Float32Array(DGRID * DGRID);
      const sub = 4;
      for (let j = 0; j < DGRID; j++) {
        for (let i = 0; i < DGRID; i++) {
          let n = 0;
          for (let b = 0; b < sub; b++) {
            for (let a = 0; a < sub; a++) {
              const u = ((i + (a + 0.5) / sub) / DGRID) * 2 * DEXTENT - DEXTENT;
              const v = ((j + (b + 0.5) / sub) / DGRID) * 2 * DEXTENT - DEXTENT;
              if (shapes.some((s) => s.inside(u, v))) n++;
            }
          }
          cov[j * DGRID + i] = n / (sub * sub);
        }
      }
      detailTemplates.set(k, cov);
    }
  }
  return detailTemplates.get(kind)!;
}

/** Canonical area of the smallest catalogue detail shape. */
function smallestDetailArea(): number {
  let best = Infinity;
  for (const k of CATALOGUE_DETAILS) {
    const cov = detailTemplate(k);
    let s = 0;
    for (const c of cov) s += c;
    best = Math.min(best, (s * (2 * DEXTENT) ** 2) / (DGRID * DGRID));
  }
  return best;
}

const backgrounds = new Map<string, Uint8Array>();

/** The empty background of a scene at a size, exactly as the renderer paints it. */
function backgroundOf(sceneName: string, size: number): Uint8Array {
  const key = `${sceneName}@${size}`;
  let bg = backgrounds.get(key);
  if (!bg) {
    const canvas = new Canvas(size, 4, 0xffffff);
    const s = FLAT_SCENES.find((x) => x.name === sceneName);
    if (s) canvas.drawAll(s.background({ rng: new Rng(0), subject: { x0: 0.4, x1: 0.6, top: 0.5, bottom: 0.9 } }));
    bg = canvas.resolve().image.data;
    backgrounds.set(key, bg);
  }
  return bg;
}

// ---------------------------------------------------------------------------------------------
// Small pixel helpers.

const PALETTE = COLOR_NAMES.map((name) => ({ name, r: red(COLORS[name]), g: green(COLORS[name]), b: blue(COLORS[name]) }));

function nearestColor(r: number, g: number, b: number): { name: ColorName; distance: number } {
  let best = PALETTE[0]!, bd = Infinity;
  for (const c of PALETTE) {
    const d = (c.r - r) ** 2 + (c.g - g) ** 2 + (c.b - b) ** 2;
    if (d < bd) {
      bd = d;
      best = c;
    }
  }
  return { name: best.name, distance: Math.sqrt(bd) };
}

/** Euclidean norm of a colour difference (Math.hypot is several times slower in hot loops). */
function norm3(a: number, b: number, c: number): number {
  return Math.sqrt(a * a + b * b + c * c);
}

/** Distance of colour `c` from the RGB segment between packed colours `a` and `b`. */
function segmentDistance(c: readonly [number, number, number], a: number, b: number): number {
  const ar = red(a), ag = green(a), ab = blue(a);
  const dr = red(b) - ar, dg = green(b) - ag, db = blue(b) - ab;
  const cr = c[0] - ar, cg = c[1] - ag, cb = c[2] - ab;
  const len2 = dr * dr + dg * dg + db * db;
  const t = len2 ? Math.min(1, Math.max(0, (cr * dr + cg * dg + cb * db) / len2)) : 0;
  return norm3(cr - t * dr, cg - t * dg, cb - t * db);
}

/** Distance of colour `c` from the RGB triangle (all mixes) of packed colours `a`, `b`, `d`. */
function triangleDistance(c: readonly [number, number, number], a: number, b: number, d: number): number {
  const A = [red(a), green(a), blue(a)], B = [red(b), green(b), blue(b)], D = [red(d), green(d), blue(d)];
  const e1 = B.map((x, i) => x - A[i]!), e2 = D.map((x, i) => x - A[i]!), w = c.map((x, i) => x - A[i]!);
  const dot = (x: number[], y: number[]) => x[0]! * y[0]! + x[1]! * y[1]! + x[2]! * y[2]!;
  const a11 = dot(e1, e1), a12 = dot(e1, e2), a22 = dot(e2, e2), b1 = dot(w, e1), b2 = dot(w, e2);
  const det = a11 * a22 - a12 * a12;
  if (det > 1e-6 * a11 * a22) {
    const sa = (b1 * a22 - b2 * a12) / det, sb = (b2 * a11 - b1 * a12) / det;
    if (sa >= 0 && sb >= 0 && sa + sb <= 1) return norm3(w[0]! - sa * e1[0]! - sb * e2[0]!, w[1]! - sa * e1[1]! - sb * e2[1]!, w[2]! - sa * e1[2]! - sb * e2[2]!);
  }
  // Outside the triangle (or a degenerate one): the nearest point is on an edge.
  return Math.min(segmentDistance(c, a, b), segmentDistance(c, a, d), segmentDistance(c, b, d));
}

/** 8-connected components of a mask: a label per pixel (0 outside) and the component sizes (index = label - 1). */
function components(mask: Uint8Array, W: number, H: number): { labels: Int32Array; sizes: number[] } {
  const labels = new Int32Array(W * H);
  const sizes: number[] = [];
  const stack: number[] = [];
  for (let p0 = 0; p0 < W * H; p0++) {
    if (!mask[p0] || labels[p0]) continue;
    const id = sizes.length + 1;
    let n = 0;
    labels[p0] = id;
    stack.push(p0);
    while (stack.length) {
      const p = stack.pop()!;
      n++;
      const x = p % W, y = (p / W) | 0;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx, yy = y + dy;
          if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
          const q = yy * W + xx;
          if (mask[q] && !labels[q]) {
            labels[q] = id;
            stack.push(q);
          }
        }
      }
    }
    sizes.push(n);
  }
  return { labels, sizes };
}

/** The mask plus every unset pixel that the image border cannot reach through unset pixels (4-connected). */
function fillHoles(mask: Uint8Array, W: number, H: number): Uint8Array {
  const outside = new Uint8Array(W * H);
  const stack: number[] = [];
  for (let p = 0; p < W * H; p++) {
    const x = p % W, y = (p / W) | 0;
    if ((x === 0 || y === 0 || x === W - 1 || y === H - 1) && !mask[p]) {
      outside[p] = 1;
      stack.push(p);
    }
  }
  while (stack.length) {
    const p = stack.pop()!;
    const x = p % W, y = (p / W) | 0;
    for (const q of [x > 0 ? p - 1 : -1, x < W - 1 ? p + 1 : -1, y > 0 ? p - W : -1, y < H - 1 ? p + W : -1]) {
      if (q >= 0 && !mask[q] && !outside[q]) {
        outside[q] = 1;
        stack.push(q);
      }
    }
  }
  const out = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) out[p] = outside[p] ? 0 : 1;
  return out;
}

/** 1 where the pixel and its 8 neighbours are all set. */
function erode(mask: Uint8Array, W: number, H: number): Uint8Array {
  const out = new Uint8Array(W * H);
  for (let y = 1; y < H - 1; y++) {
    for (let x = 1; x < W - 1; x++) {
      let all = 1;
      for (let dy = -1; dy <= 1 && all; dy++) for (let dx = -1; dx <= 1 && all; dx++) all = mask[(y + dy) * W + x + dx]!;
      out[y * W + x] = all;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The steps.

function judgeScene(img: RgbImage): string {
  const { width: W, height: H, data } = img;
  let best = WHITE_SCENE, bestScore = Infinity;
  for (const name of [WHITE_SCENE, ...FLAT_SCENES.map((s) => s.name)]) {
    const bg = backgroundOf(name, W);
    let score = 0;
    for (let p = 0; p < W * H; p++) {
      const x = p % W, y = (p / W) | 0;
      if (x !== 0 && y !== 0 && x !== W - 1 && y !== H - 1) continue;
      const d = norm3(data[3 * p]! - bg[3 * p]!, data[3 * p + 1]! - bg[3 * p + 1]!, data[3 * p + 2]! - bg[3 * p + 2]!);
      // Clipped, so a subject (or an artefact) touching the border cannot outvote the rest.
      score += Math.min(d, 80);
    }
    if (score < bestScore) {
      bestScore = score;
      best = name;
    }
  }
  return best;
}

/** Rows above and below a pixel whose backgrounds bound what its background may look like. */
const HORIZON_SLACK = 2;

/**
 * The background colour (packed) nearest to `c` that pixel `p` may show: on the segment between
 * the scene's background HORIZON_SLACK rows above and below. Away from the horizon that is the
 * flat colour itself; at the horizon it is any mix of sky and ground, because a generated image's
 * horizon is not a razor-sharp line and must not turn into subject.
 */
function nearestBackground(bg: Uint8Array, W: number, H: number, p: number, c: readonly [number, number, number]): number {
  const x = p % W, y = (p / W) | 0;
  const a = 3 * (Math.max(0, y - HORIZON_SLACK) * W + x), b = 3 * (Math.min(H - 1, y + HORIZON_SLACK) * W + x);
  const dr = bg[b]! - bg[a]!, dg = bg[b + 1]! - bg[a + 1]!, db = bg[b + 2]! - bg[a + 2]!;
  const len2 = dr * dr + dg * dg + db * db;
  const t = len2 ? Math.min(1, Math.max(0, ((c[0] - bg[a]!) * dr + (c[1] - bg[a + 1]!) * dg + (c[2] - bg[a + 2]!) * db) / len2)) : 0;
  return rgb(bg[a]! + t * dr, bg[a + 1]! + t * dg, bg[a + 2]! + t * db);
}

/** Per pixel: colour distance from the scene's empty background. */
function backgroundDistance(img: RgbImage, scene: string): Float32Array {
  const { width: W, height: H, data } = img;
  const bg = backgroundOf(scene, W);
  const out = new Float32Array(W * H);
  for (let p = 0; p < W * H; p++) {
    const c = [data[3 * p]!, data[3 * p + 1]!, data[3 * p + 2]!] as const;
    const n = nearestBackground(bg, W, H, p, c);
    out[p] = norm3(c[0] - red(n), c[1] - green(n), c[2] - blue(n));
  }
  return out;
}

/** Pixels unlike the background, restricted to the largest blob and blobs not much smaller than it. */
function subjectMask(dist: Float32Array, W: number, H: number): Uint8Array {
  const raw = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) raw[p] = dist[p]! > BACKGROUND_DISTANCE ? 1 : 0;
  const { labels, sizes } = components(raw, W, H);
  const largest = sizes.reduce((a, b) => Math.max(a, b), 0);
  const out = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) {
    const l = labels[p]!;
    if (l && sizes[l - 1]! >= 0.03 * largest) out[p] = 1;
  }
  return out;
}

interface Fit {
  template: ClassTemplate;
  iou: number;
  /** Pixels per canonical unit; pixel position of canonical (0, 0). */
  s: number;
  ox: number;
  oy: number;
}

/** The silhouette of each class fitted to the mask by coordinate descent on IoU; the best class's fit. */
function fitClass(mask: Uint8Array, W: number, H: number): Fit | null {
  let x0 = W, x1 = -1, y0 = H, y1 = -1, area = 0;
  for (let p = 0; p < W * H; p++) {
    if (!mask[p]) continue;
    const x = p % W, y = (p / W) | 0;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
    area++;
  }
  // Fewer pixels than a detail at this size: nothing to judge.
  if (area < 16) return null;
  const m = 4;
  const rx0 = Math.max(0, x0 - m), rx1 = Math.min(W - 1, x1 + m), ry0 = Math.max(0, y0 - m), ry1 = Math.min(H - 1, y1 + m);
  let best: Fit | null = null;
  for (const t of classTemplates()) {
    const iou = (s: number, ox: number, oy: number) => {
      let inter = 0, union = 0;
      const reach = Math.min(REACH - 1, (SPREAD / s) * GRID);
      for (let y = ry0; y <= ry1; y++) {
        const v = (y + 0.5 - oy) / s;
        const row = Math.floor(v * GRID) * GRID;
        const rowIn = v >= 0 && v < 1;
        for (let x = rx0; x <= rx1; x++) {
          const a = mask[y * W + x]!;
          const u = (x + 0.5 - ox) / s;
          const b = rowIn && u >= 0 && u < 1 && t.reach[row + Math.floor(u * GRID)]! <= reach ? 1 : 0;
          inter += a & b;
          union += a | b;
        }
      }
      return union ? inter / union : 0;
    };
    const [tu0, tv0, tu1, tv1] = t.box;
    const s0 = Math.sqrt(((x1 - x0 + 1) / (tu1 - tu0)) * ((y1 - y0 + 1) / (tv1 - tv0)));
    const p = [s0, (x0 + x1 + 1) / 2 - (s0 * (tu0 + tu1)) / 2, (y0 + y1 + 1) / 2 - (s0 * (tv0 + tv1)) / 2];
    let score = iou(p[0]!, p[1]!, p[2]!);
    const step = [0.04 * s0, 1.5, 1.5];
    for (let level = 0; level < 4; level++) {
      for (let round = 0; round < 8; round++) {
        let improved = false;
        for (let k = 0; k < 3; k++) {
          for (const sign of [1, -1]) {
            const q = [...p];
            q[k]! += sign * step[k]!;
            // Scaling about the mask's centre keeps the other two parameters meaningful.
            if (k === 0) {
              const cx = (x0 + x1 + 1) / 2, cy = (y0 + y1 + 1) / 2;
              q[1] = cx - ((cx - p[1]!) * q[0]!) / p[0]!;
              q[2] = cy - ((cy - p[2]!) * q[0]!) / p[0]!;
            }
            const sc = iou(q[0]!, q[1]!, q[2]!);
            if (sc > score) {
              score = sc;
              p.splice(0, 3, ...q);
              improved = true;
            }
          }
        }
        if (!improved) break;
      }
      for (let k = 0; k < 3; k++) step[k]! /= 2;
    }
    if (!best || score > best.iou) best = { template: t, iou: score, s: p[0]!, ox: p[1]!, oy: p[2]! };
  }
  return best;
}

/** Judge a tiny-world image: what it shows, from pixels and the renderer's ground truth only. */
export function judgeImage(img: RgbImage): Judgement {
  const { width: W, height: H, data } = img;
  if (W !== H) throw new RangeError(`judgeImage: tiny-world images are square, got ${W}x${H}`);
  const scene = judgeScene(img);
  const none: Judgement = {
    scene,
    classNoun: null,
    body: null,
    pattern: null,
    patternConsistent: false,
    detail: null,
    strayBlobs: 0,
    fit: null,
    patternResidual: NaN,
    patternLocalResidual: NaN,
  };
  const dist = backgroundDistance(img, scene);
  const mask = subjectMask(dist, W, H);
  const fit = fitClass(mask, W, H);
  if (!fit) return none;
  const { template: t, s, ox, oy } = fit;
  const U = (x: number) => (x + 0.5 - ox) / s;
  const V = (y: number) => (y + 0.5 - oy) / s;

  // Where colours can be trusted: inside the fitted silhouette and inside the observed subject,
  // away from both outlines (edge pixels blend with the background). Holes count as subject: a
  // white logo on a white reference looks like background, but it is enclosed. Enclosure uses a
  // stricter background test than the mask, because a pattern's anti-aliased rows can come close
  // to a scene colour (blue-black blends vs the night sky, about 17 apart) and would open a hole
  // to the outside.
  const strict = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) strict[p] = dist[p]! > ENCLOSURE_DISTANCE ? 1 : 0;
  const inner = erode(fillHoles(strict, W, H), W, H);
  const off = 1.5 / s;
  const onSubject = new Uint8Array(W * H);
  const onBody = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const p = y * W + x;
      if (!inner[p]) continue;
      const u = U(x), v = V(y);
      const c = labelAt(t, u, v);
      const around = [labelAt(t, u - off, v), labelAt(t, u + off, v), labelAt(t, u, v - off), labelAt(t, u, v + off)];
      if (c && around.every((l) => l !== LABEL.none)) onSubject[p] = 1;
      // Pattern and body colour: body pixels away from accent parts too (those blend with black).
      if (c === LABEL.body && around.every((l) => l === LABEL.body)) onBody[p] = 1;
    }
  }

  // Body colour: votes of de-lit body pixels.
  const votes = new Map<ColorName, number>();
  for (let p = 0; p < W * H; p++) {
    if (!onBody[p]) continue;
    const L = light(U(p % W), V((p / W) | 0));
    const { name } = nearestColor(data[3 * p]! / L, data[3 * p + 1]! / L, data[3 * p + 2]! / L);
    if (name === "black" || name === "white") continue;
    votes.set(name, (votes.get(name) ?? 0) + 1);
  }
  let body: ColorName | null = null;
  for (const [name, n] of votes) if (!body || n > votes.get(body)!) body = name;
  if (!body) return { ...none, classNoun: t.classNoun, fit: { iou: fit.iou, scale: s, ox, oy } };

  // Per subject pixel: how much pattern it shows (0 body .. 1 black) and whether body and pattern
  // explain it at all.
  const onness = new Float32Array(W * H);
  const foreign = new Uint8Array(W * H);
  const bodyRgb = COLORS[body], blackRgb = COLORS.black;
  for (let p = 0; p < W * H; p++) {
    if (!onSubject[p]) continue;
    const L = light(U(p % W), V((p / W) | 0));
    const B = shade(bodyRgb, L), A = shade(blackRgb, L);
    const ar = red(A), ag = green(A), ab = blue(A);
    const dr = red(B) - ar, dg = green(B) - ag, db = blue(B) - ab;
    const cr = data[3 * p]! - ar, cg = data[3 * p + 1]! - ag, cb = data[3 * p + 2]! - ab;
    const tt = Math.min(1, Math.max(0, (cr * dr + cg * dg + cb * db) / (dr * dr + dg * dg + db * db)));
    onness[p] = 1 - tt;
    if (norm3(cr - tt * dr, cg - tt * dg, cb - tt * db) > FOREIGN_DISTANCE) foreign[p] = 1;
  }
  // Along the outline (and wherever the mask and the fitted silhouette disagree) pixels may also
  // blend with the background: there any mix of body, pattern and background is explained, and
  // what is not (noise smeared over an edge, a logo sticking out) is foreign too.
  const bg = backgroundOf(scene, W);
  for (let p = 0; p < W * H; p++) {
    if (!mask[p] || onSubject[p]) continue;
    const L = light(U(p % W), V((p / W) | 0));
    const c = [data[3 * p]!, data[3 * p + 1]!, data[3 * p + 2]!] as const;
    const back = nearestBackground(bg, W, H, p, c);
    if (triangleDistance(c, shade(bodyRgb, L), shade(blackRgb, L), back) > FOREIGN_DISTANCE) foreign[p] = 1;
  }

  const pat = judgePattern(W, H, onBody, foreign, onness, U, V, s);
  const { detail, strayBlobs } = judgeDetail(img, bodyRgb, foreign, U, V, s);
  return {
    scene,
    classNoun: t.classNoun,
    body,
    pattern: pat.kind,
    patternConsistent: pat.kind !== null && pat.localResidual - pat.residual <= LOCAL_EXCESS,
    detail,
    strayBlobs,
    fit: { iou: fit.iou, scale: s, ox, oy },
    patternResidual: pat.residual,
    patternLocalResidual: pat.localResidual,
  };
}

function judgePattern(
  W: number,
  H: number,
  onBody: Uint8Array,
  foreign: Uint8Array,
  onness: Float32Array,
  U: (x: number) => number,
  V: (y: number) => number,
  s: number,
): { kind: PatternKind | null; residual: number; localResidual: number } {
  // Body pixels not touching anything unexplained (a detail's anti-aliased rim is not pattern).
  const px: number[] = [];
  for (let y = 1; y < H - 1; y++) {
    for (let x = 1; x < W - 1; x++) {
      const p = y * W + x;
      if (!onBody[p]) continue;
      let clear = true;
      for (let dy = -1; dy <= 1 && clear; dy++) for (let dx = -1; dx <= 1 && clear; dx++) if (foreign[p + dy * W + dx]) clear = false;
      if (clear) px.push(p);
    }
  }
  // No body to read (a sliver of a subject): the pattern is unknown, not plain.
  if (px.length === 0) return { kind: null, residual: NaN, localResidual: NaN };
  const us = px.map((p) => U(p % W)), vs = px.map((p) => V((p / W) | 0));
  const obs = px.map((p) => onness[p]!);
  const P = PATTERN_PERIOD;
  // Coarse phase search at pixel centres, then the winner's phase and scale refined with pixel
  // coverage: the phase of a pattern is no attribute, only its kind is, and the silhouette fit's
  // scale can be off by a percent or two, enough to drift a stripe by a pixel over the body.
  let cu = 0, cv = 0;
  for (let k = 0; k < px.length; k++) {
    cu += us[k]! / px.length;
    cv += vs[k]! / px.length;
  }
  const expected = (fn: (u: number, v: number) => boolean, du: number, dv: number, scale: number, sub: number) => {
    const e = new Float32Array(px.length);
    for (let k = 0; k < px.length; k++) {
      let n = 0;
      for (let b = 0; b < sub; b++) {
        for (let a = 0; a < sub; a++) {
          const u = us[k]! + ((a + 0.5) / sub - 0.5) / s, v = vs[k]! + ((b + 0.5) / sub - 0.5) / s;
          if (fn(cu + (u - cu) * scale - du, cv + (v - cv) * scale - dv)) n++;
        }
      }
      e[k] = n / (sub * sub);
    }
    return e;
  };
  const residualOf = (e: Float32Array) => {
    let r = 0;
    for (let k = 0; k < px.length; k++) r += Math.abs(obs[k]! - e[k]!);
    return r / px.length;
  };
  let best = { kind: "plain" as PatternKind, du: 0, dv: 0, residual: Infinity };
  const phases = 8;
  for (const kind of CATALOGUE_PATTERNS) {
    const fn = patternFn({ kind, period: P, angle: PATTERN_ANGLE });
    const nu = kind === "dots" ? phases : 1, nv = kind === "plain" ? 1 : phases;
    for (let i = 0; i < nu; i++) {
      for (let j = 0; j < nv; j++) {
        const r = residualOf(expected(fn, (i / phases) * P, (j / phases) * P, 1, 1));
        if (r < best.residual) best = { kind, du: (i / phases) * P, dv: (j / phases) * P, residual: r };
      }
    }
  }
  const fn = patternFn({ kind: best.kind, period: P, angle: PATTERN_ANGLE });
  const q = [best.du, best.dv, 1];
  let e = expected(fn, q[0]!, q[1]!, q[2]!, 3);
  let residual = residualOf(e);
  if (best.kind !== "plain") {
    const step = [P / phases / 2, P / phases / 2, 0.01];
    for (let level = 0; level < 3; level++) {
      for (let round = 0; round < 4; round++) {
        let improved = false;
        for (let i = 0; i < 3; i++) {
          for (const sign of [1, -1]) {
            const t = [...q];
            t[i]! += sign * step[i]!;
            const e2 = expected(fn, t[0]!, t[1]!, t[2]!, 3);
            const r2 = residualOf(e2);
            if (r2 < residual) {
              residual = r2;
              e = e2;
              q.splice(0, 3, ...t);
              improved = true;
            }
          }
        }
        if (!improved) break;
      }
      for (let i = 0; i < 3; i++) step[i]! /= 2;
    }
  }
  // Local check: the worst window of the smallest wrong-pattern patch's size. Its mean counts at
  // least a third of the window's area as pixels, so windows where little body is visible (beside
  // a big logo, at the rim) still count, but a handful of stray pixels cannot raise an alarm.
  const res = new Float32Array(W * H).fill(NaN);
  for (let k = 0; k < px.length; k++) res[px[k]!] = Math.abs(obs[k]! - e[k]!);
  const R = LOCAL_RADIUS * s, R2 = R * R, Ri = Math.ceil(R);
  const minCount = (Math.PI * R2) / 3;
  let localResidual = 0;
  for (const p of px) {
    const cx = p % W, cy = (p / W) | 0;
    let sum = 0, n = 0;
    for (let dy = -Ri; dy <= Ri; dy++) {
      const y = cy + dy;
      if (y < 0 || y >= H) continue;
      for (let dx = -Ri; dx <= Ri; dx++) {
        const x = cx + dx;
        if (x < 0 || x >= W || dx * dx + dy * dy > R2) continue;
        const r = res[y * W + x]!;
        if (r === r) {
          sum += r;
          n++;
        }
      }
    }
    localResidual = Math.max(localResidual, sum / Math.max(n, minCount));
  }
  return { kind: best.kind, residual, localResidual };
}

function judgeDetail(
  img: RgbImage,
  bodyRgb: number,
  foreign: Uint8Array,
  U: (x: number) => number,
  V: (y: number) => number,
  s: number,
): { detail: JudgedDetail | null; strayBlobs: number } {
  const { width: W, height: H, data } = img;
  const { labels, sizes } = components(foreign, W, H);
  const minArea = Math.max(4, MIN_BLOB_FRACTION * smallestDetailArea() * s * s);
  const blobs = sizes.map((n, i) => ({ id: i + 1, n })).filter((b) => b.n >= minArea).sort((a, b) => b.n - a.n);
  if (blobs.length === 0) return { detail: null, strayBlobs: 0 };
  const main = blobs[0]!;
  const pixels: number[] = [];
  for (let p = 0; p < W * H; p++) if (labels[p] === main.id) pixels.push(p);
  let mx = 0, my = 0;
  for (const p of pixels) {
    mx += p % W;
    my += (p / W) | 0;
  }
  mx /= pixels.length;
  my /= pixels.length;

  // Kind and position: the detail shape (coverage template) that best overlaps the blob,
  // searched over centres around the blob's centroid (a heart's centroid is not its centre).
  const inBlob = (x: number, y: number) => x >= 0 && y >= 0 && x < W && y < H && labels[y * W + x] === main.id;
  const half = Math.ceil(DEXTENT * s) + 4;
  const overlap = (cov: Float32Array, cx: number, cy: number) => {
    let inter = 0, union = 0;
    for (let y = Math.floor(my) - half; y <= Math.floor(my) + half; y++) {
      for (let x = Math.floor(mx) - half; x <= Math.floor(mx) + half; x++) {
        const gu = ((x + 0.5 - cx) / s + DEXTENT) / (2 * DEXTENT), gv = ((y + 0.5 - cy) / s + DEXTENT) / (2 * DEXTENT);
        const c = gu < 0 || gv < 0 || gu >= 1 || gv >= 1 ? 0 : cov[Math.floor(gv * DGRID) * DGRID + Math.floor(gu * DGRID)]!;
        const a = inBlob(x, y) ? 1 : 0;
        inter += Math.min(a, c);
        union += Math.max(a, c);
      }
    }
    return union ? inter / union : 0;
  };
  let bestKind: DetailKind = CATALOGUE_DETAILS[0]!, bestIoU = -1, bx = mx, by = my;
  for (const kind of CATALOGUE_DETAILS) {
    const cov = detailTemplate(kind);
    // Whole pixels first, then half pixels around the best (centre in pixel-edge coordinates).
    let kx = mx + 0.5, ky = my + 0.5, kIoU = -1;
    for (let oy = -3; oy <= 3; oy++) {
      for (let ox = -3; ox <= 3; ox++) {
        const iou = overlap(cov, mx + 0.5 + ox, my + 0.5 + oy);
        if (iou > kIoU) [kIoU, kx, ky] = [iou, mx + 0.5 + ox, my + 0.5 + oy];
      }
    }
    const [cx0, cy0] = [kx, ky];
    for (const [ox, oy] of [[-0.5, -0.5], [0, -0.5], [0.5, -0.5], [-0.5, 0], [0.5, 0], [-0.5, 0.5], [0, 0.5], [0.5, 0.5]] as const) {
      const iou = overlap(cov, cx0 + ox, cy0 + oy);
      if (iou > kIoU) [kIoU, kx, ky] = [iou, cx0 + ox, cy0 + oy];
    }
    if (kIoU > bestIoU) [bestIoU, bestKind, bx, by] = [kIoU, kind, kx, ky];
  }

  // Colour: the palette colour whose blends with the body, the pattern and (for the square logo)
  // the white centre explain the most blob pixels, pixels of the colour itself counting extra. A
  // plain majority vote fails on thin rings: a red ring on a green body is mostly red-green
  // blends, and those are nearest to brown.
  const ctx = pixels.map((p) => {
    const L = light(U(p % W), V((p / W) | 0));
    return { c: [data[3 * p]!, data[3 * p + 1]!, data[3 * p + 2]!] as const, around: [shade(bodyRgb, L), shade(COLORS.black, L)] };
  });
  const explains = (x: ColorName) => {
    const own = [COLORS[x], ...(bestKind === "square" ? [COLORS.white] : [])];
    let explained = 0, near = 0;
    for (const { c, around } of ctx) {
      const others = [...own, ...around];
      if (own.some((a) => others.some((b) => segmentDistance(c, a, b) <= PURE_DISTANCE))) explained++;
      if (norm3(c[0] - red(COLORS[x]), c[1] - green(COLORS[x]), c[2] - blue(COLORS[x])) <= PURE_DISTANCE) near++;
    }
    return { explained, score: explained + 0.5 * near };
  };
  let color: ColorName = "white";
  let best = { explained: -1, score: -1 };
  for (const x of COLOR_NAMES) {
    // Black is the pattern's colour: a black logo would not stand out from the pattern at all.
    if (x === "black") continue;
    const e = explains(x);
    if (e.score > best.score) {
      best = e;
      color = x;
    }
  }
  // U and V take pixel indices (they add the half pixel).
  const detail: JudgedDetail = {
    kind: bestKind,
    color,
    x: U(bx - 0.5),
    y: V(by - 0.5),
    pixels: main.n,
    shapeIoU: bestIoU,
    purity: best.explained / pixels.length,
  };
  return { detail, strayBlobs: blobs.length - 1 };
}

/**
 * Verdicts on an image that should show catalogue subject `subject` in `expectedScene` (a flat
 * scene name, or null / "white" for the white reference background). See the header for what
 * "right" means for each attribute.
 */
export function judgeAgainst(img: RgbImage, subject: Subject, expectedScene: string | null): Verdict {
  return verdictOf(judgeImage(img), subject, expectedScene);
}

/** `judgeAgainst` on a judgement already made (one image read against several subjects). */
export function verdictOf(j: Judgement, subject: Subject, expectedScene: string | null): Verdict {
  const identity = j.classNoun === subject.classNoun && j.body === subject.body;
  const pattern = j.pattern === subject.pattern.kind && j.patternConsistent;
  const want = subject.details[0];
  let detail = false;
  if (want && subject.details.length === 1 && j.detail && j.strayBlobs === 0) {
    const d = j.detail;
    detail =
      d.color === want.color &&
      d.kind === want.kind &&
      d.shapeIoU >= MIN_SHAPE_IOU &&
      d.purity >= MIN_PURITY &&
      Math.hypot(d.x - want.x, d.y - want.y) <= DETAIL_PLACE_TOLERANCE;
  }
  const scene = j.scene === (expectedScene ?? WHITE_SCENE);
  return { identity, pattern, detail, scene, allDetails: identity && pattern && detail, judgement: j };
}
