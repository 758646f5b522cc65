// The tiny world's renderer: clean-background references (PatchDPO's reference images), the same
// subject in a scene (the ground truth of a scene prompt), and scenes with a known local error
// (the ground truth a patch scorer should find). Everything random comes from the caller's Rng,
// so the same seed gives byte-identical images.

import type { RgbImage } from "../io/images.ts";
import { Rng } from "../rng.ts";
import { type Box, type Frame, type Layer, Canvas, IDENTITY, ellipse, packed, rgb, shade } from "./raster.ts";
import { type Footprint, type Scene, getScene } from "./scenes.ts";
import {
  type ColorName,
  type Detail,
  type Pattern,
  type PatternKind,
  type Role,
  type Subject,
  COLORS,
  PATTERN_KINDS,
  detailBox,
  detailExtent,
  detailShapes,
  distinctColors,
  placeDetail,
  subjectBox,
  subjectGeometry,
} from "./subjects.ts";

/** Labels of the per-pixel part map. Detail `i` of a subject is `PART.firstDetail + i`. */
export const PART = { background: 0, body: 1, pattern: 2, accent: 3, firstDetail: 4 } as const;

export function detailPart(i: number): number {
  return PART.firstDetail + i;
}

/**
 * Where the subject's canonical unit square lands in the image (coordinates in [0, 1] of the image
 * side): `[x, x + scale] x [y, y + scale]`, mirrored left-right when `mirrored`.
 */
export interface Placement {
  scale: number;
  x: number;
  y: number;
  mirrored: boolean;
}

export interface Render {
  image: RgbImage;
  /** 1 where the subject covers at least half of the pixel (row-major, width * height). */
  mask: Uint8Array;
  /** Per pixel: `PART.background`, `.body`, `.pattern`, `.accent` or `detailPart(i)`. */
  parts: Uint8Array;
  placement: Placement;
}

export interface SceneRender extends Render {
  /** null: the white reference background. */
  scene: Scene | null;
}

export const CORRUPTION_KINDS = [
  "detail-missing",
  "detail-recolored",
  "detail-moved",
  "pattern-wrong",
  "noise-blob",
] as const;
export type CorruptionKind = (typeof CORRUPTION_KINDS)[number];

export interface Corruption {
  kind: CorruptionKind;
  /** The detail a detail-* corruption changed. */
  detail?: number;
  /** detail-recolored: the wrong colour. */
  color?: ColorName;
  /** detail-moved: the wrong centre (canonical). */
  to?: [number, number];
  /** pattern-wrong: the disc (canonical) whose body shows `pattern` (inverted when `invert`). */
  region?: { cx: number; cy: number; r: number };
  pattern?: Pattern;
  invert?: boolean;
  /** noise-blob: the ellipse in pixels. */
  blob?: { x: number; y: number; rx: number; ry: number };
}

export interface CorruptedRender extends SceneRender {
  /** The same scene, placement and background without the error. */
  clean: SceneRender;
  /** 1 on every pixel the error touches (any supersample of it): the ground truth to find. */
  corruptionMask: Uint8Array;
  corruption: Corruption;
}

export interface RenderOptions {
  /** Samples per pixel side; default 4 up to 64 px, 3 up to 128 px, 2 above. */
  supersample?: number;
}

/** Longest side of the subject in a reference image, as a fraction of the image side. */
export const REFERENCE_EXTENT = 0.8;

export function defaultSupersample(size: number): number {
  return size <= 64 ? 4 : size <= 128 ? 3 : 2;
}

// ---------------------------------------------------------------------------------------------
// Subject layers.

/** How a render departs from the subject as described (corruptions) and what to tag. */
interface Mods {
  hideDetail?: number;
  patternPatch?: { cx: number; cy: number; r: number; pattern: Pattern; invert: boolean };
  tagDetail?: number;
  tagDisc?: { cx: number; cy: number; r: number };
  alpha?: number;
}

const DARK = rgb(35, 35, 40);

/** Pattern as an on/off function of canonical coordinates (on = secondary colour). */
export function patternFn(p: Pattern): (u: number, v: number) => boolean {
  const P = p.period;
  const a = (p.angle * Math.PI) / 180;
  const ca = Math.cos(a), sa = Math.sin(a);
  switch (p.kind) {
    case "plain":
      return () => false;
    case "stripes":
      return (u, v) => {
        const t = (v * ca - u * sa) / P;
        return t - Math.floor(t) < 0.45;
      };
    case "dots":
      return (u, v) => {
        const fv = v / P, row = Math.floor(fv);
        const fu = u / P + (row & 1) * 0.5;
        const du = fu - Math.floor(fu) - 0.5, dv = fv - row - 0.5;
        return du * du + dv * dv < 0.09;
      };
    case "checks":
      return (u, v) => ((Math.floor(u / P) + Math.floor(v / P)) & 1) === 1;
    case "zigzag":
      return (u, v) => {
        const along = (u * ca + v * sa) / P;
        const tri = Math.abs(2 * (along - Math.floor(along)) - 1);
        const w = (v * ca - u * sa) / P + 0.5 * tri;
        return w - Math.floor(w) < 0.4;
      };
  }
}

/** Mild light from the upper left of the object (canonical coordinates). */
function light(u: number, v: number): number {
  return 1.1 - 0.22 * u - 0.1 * v;
}

function subjectLayers(s: Subject, frame: Frame, mods: Mods): Layer[] {
  const body = COLORS[s.body], sec = COLORS[s.secondary];
  const base = patternFn(s.pattern);
  const patch = mods.patternPatch;
  const patchFn = patch ? patternFn(patch.pattern) : null;
  const r2 = patch ? patch.r * patch.r : 0;
  const on = patch
    ? (u: number, v: number) =>
        (u - patch.cx) ** 2 + (v - patch.cy) ** 2 <= r2 ? patchFn!(u, v) !== patch.invert : base(u, v)
    : base;
  const disc = mods.tagDisc;
  const tagBody = disc ? (u: number, v: number) => (u - disc.cx) ** 2 + (v - disc.cy) ** 2 <= disc.r * disc.r : undefined;
  const paints: Record<Role, Layer["paint"]> = {
    body: (u, v) => {
      const o = on(u, v);
      return packed(shade(o ? sec : body, light(u, v)), o ? PART.pattern : PART.body);
    },
    accent: (u, v) => packed(shade(sec, light(u, v)), PART.accent),
    dark: (u, v) => packed(shade(DARK, light(u, v)), PART.accent),
    inner: () => packed(shade(body, 0.5), PART.accent),
  };
  const layers: Layer[] = [];
  const extra = mods.alpha === undefined ? {} : { alpha: mods.alpha };
  for (const part of subjectGeometry(s).parts) {
    const l: Layer = { shape: part.shape, frame, paint: paints[part.role], ...extra };
    if (part.role === "body" && tagBody) l.tag = tagBody;
    layers.push(l);
  }
  s.details.forEach((d, i) => {
    if (i === mods.hideDetail) return;
    for (const { shape, color } of detailShapes(d)) {
      const p = packed(color, detailPart(i));
      layers.push({ shape, frame, paint: () => p, tag: i === mods.tagDetail, ...extra });
    }
  });
  return layers;
}

function frameOf(p: Placement): Frame {
  const k = 1 / p.scale;
  return p.mirrored
    ? { ax: -k, bx: 1 + p.x * k, ay: k, by: -p.y * k }
    : { ax: k, bx: -p.x * k, ay: k, by: -p.y * k };
}

/** The frame of the subject's mirror image in a horizontal mirror line at image Y `yLine`. */
function reflectedFrameOf(p: Placement, yLine: number): Frame {
  const f = frameOf(p);
  return { ax: f.ax, bx: f.bx, ay: -f.ay, by: f.ay * 2 * yLine + f.by };
}

/** The image-space box of a canonical box under a placement. */
function footprintOf(b: Box, p: Placement): Footprint {
  const [u0, v0, u1, v1] = b;
  const x0 = p.mirrored ? p.x + p.scale * (1 - u1) : p.x + p.scale * u0;
  return { x0, x1: x0 + p.scale * (u1 - u0), top: p.y + p.scale * v0, bottom: p.y + p.scale * v1 };
}

// ---------------------------------------------------------------------------------------------
// Placement.

export function referencePlacement(subject: Subject): Placement {
  return placementOfBox(subjectBox(subject));
}

function placementOfBox(box: Box): Placement {
  const [u0, v0, u1, v1] = box;
  const scale = REFERENCE_EXTENT / Math.max(u1 - u0, v1 - v0);
  return { scale, x: 0.5 - (scale * (u0 + u1)) / 2, y: 0.5 - (scale * (v0 + v1)) / 2, mirrored: false };
}

/** Scaled as the scene says (DreamBench-like: 0.5-0.9 of the reference, maybe mirrored), standing on the ground below the horizon. */
function scenePlacement(box: Box, ref: Placement, scene: Scene, rng: Rng): Placement {
  const { minScale, maxScale, mirror } = scene.placement;
  const scale = ref.scale * (minScale + (maxScale - minScale) * rng.uniform());
  const mirrored = rng.uniform() < 0.5 && mirror;
  const [u0, v0, u1, v1] = box;
  const w = scale * (u1 - u0), h = scale * (v1 - v0);
  const cx = 0.5 + (rng.uniform() - 0.5) * Math.max(0, 1 - w - 0.04);
  const lo = Math.max(scene.horizon + 0.1, 0.02 + h), hi = 0.97;
  const bottom = lo >= hi ? hi : lo + (hi - lo) * rng.uniform();
  const left = cx - w / 2;
  const x = mirrored ? left - scale * (1 - u1) : left - scale * u0;
  return { scale, x, y: bottom - scale * v1, mirrored };
}

// ---------------------------------------------------------------------------------------------
// Rendering.

function resolveScene(scene: Scene | string | null): Scene | null {
  return scene === null ? null : typeof scene === "string" ? getScene(scene) : scene;
}

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 8 || size > 2048) {
    throw new RangeError(`tiny-world image size must be an integer in 8..2048, got ${size}`);
  }
}

/**
 * Draw `subject` (with `mods`) at the placement `box`/`rng` give, over the scene's background or
 * white. `box` is the canonical box the placement is computed from: the clean subject's, so a
 * corrupted variant lands on exactly the same pixels.
 */
function renderWith(
  subject: Subject,
  scene: Scene | null,
  size: number,
  rng: Rng,
  mods: Mods,
  box: Box,
  ss: number,
): { render: SceneRender; tagged: Uint8Array; canvas: Canvas } {
  checkSize(size);
  const canvas = new Canvas(size, ss, 0xffffff);
  const ref = placementOfBox(box);
  let placement: Placement;
  if (scene === null) {
    placement = ref;
  } else {
    placement = scenePlacement(box, ref, scene, rng);
    const fp = footprintOf(box, placement);
    canvas.drawAll(scene.background({ rng, subject: fp }));
    if (scene.shadow) {
      const w = fp.x1 - fp.x0;
      canvas.draw({
        shape: ellipse((fp.x0 + fp.x1) / 2, fp.bottom - 0.005, w * 0.5, Math.max(0.012, w * 0.07)),
        frame: IDENTITY,
        paint: () => 0,
        alpha: 0.28,
      });
    }
    if (scene.reflection > 0) {
      const { tagDetail: _d, tagDisc: _r, ...visual } = mods;
      canvas.drawAll(subjectLayers(subject, reflectedFrameOf(placement, fp.bottom), { ...visual, alpha: scene.reflection }));
    }
  }
  canvas.drawAll(subjectLayers(subject, frameOf(placement), mods));
  const { image, mask, parts, tagged } = canvas.resolve();
  return { render: { image, mask, parts, placement, scene }, tagged, canvas };
}

/** The subject centred on pure white, longest side `REFERENCE_EXTENT` of the image. */
export function renderReference(subject: Subject, size = 64, opts: RenderOptions = {}): Render {
  const { render } = renderWith(subject, null, size, new Rng(0), {}, subjectBox(subject), opts.supersample ?? defaultSupersample(size));
  const { image, mask, parts, placement } = render;
  return { image, mask, parts, placement };
}

/** The subject (scaled 0.5-0.9, shifted, maybe mirrored) in a scene given by object, name or phrase. */
export function renderScene(
  subject: Subject,
  scene: Scene | string,
  size: number,
  rng: Rng,
  opts: RenderOptions = {},
): SceneRender {
  const sc = resolveScene(scene);
  return renderWith(subject, sc, size, rng, {}, subjectBox(subject), opts.supersample ?? defaultSupersample(size)).render;
}

/**
 * The scene `renderScene` would draw from the same rng state (same placement, same background),
 * with one known local error; `clean` is exactly what `renderScene` returns. `scene` null
 * corrupts the white-background reference instead. The corruption's own random choices are drawn
 * after the scene's. In scenes with a reflection (mirror, water, milk) the reflection shows the
 * error too, faintly; `corruptionMask` covers the subject only.
 */
export function renderCorrupted(
  subject: Subject,
  scene: Scene | string | null,
  size: number,
  rng: Rng,
  corruption: CorruptionKind | "random" = "random",
  opts: RenderOptions = {},
): CorruptedRender {
  if (corruption !== "random" && !CORRUPTION_KINDS.includes(corruption)) {
    throw new RangeError(`unknown corruption "${corruption}" (known: ${CORRUPTION_KINDS.join(", ")}, random)`);
  }
  const sc = resolveScene(scene);
  const ss = opts.supersample ?? defaultSupersample(size);
  const box = subjectBox(subject);
  const start = rng.state();
  const clean = renderWith(subject, sc, size, rng, {}, box, ss);
  const kind = corruption === "random" ? CORRUPTION_KINDS[rng.int(CORRUPTION_KINDS.length)]! : corruption;
  const plan = planCorruption(subject, kind, rng);
  const bad = renderWith(plan.subject, sc, size, Rng.fromState(start), plan.mods, box, ss);
  const corruptionMask = bad.tagged;
  if (plan.cleanDetail !== undefined) {
    // Where the detail was: a missing or moved detail leaves no tag in the corrupted render.
    const was = clean.canvas.pixelsWithLabel(detailPart(plan.cleanDetail));
    for (let i = 0; i < corruptionMask.length; i++) corruptionMask[i]! |= was[i]!;
  }
  if (plan.info.kind === "noise-blob") {
    plan.info.blob = pasteNoise(bad.render.image, clean.render, corruptionMask, rng);
  }
  return { ...bad.render, clean: clean.render, corruptionMask, corruption: plan.info };
}

interface Plan {
  subject: Subject;
  mods: Mods;
  /** The detail whose clean-render pixels belong to the corruption mask. */
  cleanDetail?: number;
  info: Corruption;
}

function planCorruption(subject: Subject, kind: CorruptionKind, rng: Rng): Plan {
  const nd = subject.details.length;
  if (kind.startsWith("detail-") && nd === 0) kind = "pattern-wrong";
  switch (kind) {
    case "detail-missing": {
      const i = rng.int(nd);
      return { subject, mods: { hideDetail: i }, cleanDetail: i, info: { kind, detail: i } };
    }
    case "detail-moved": {
      const i = rng.int(nd);
      const d = subject.details[i]!;
      const [ex, ey] = detailExtent(d.kind, d.size);
      const pos = placeDetail(rng, subjectGeometry(subject).faces, ex, ey, subject.details.map(detailBox), 0.01);
      if (pos) {
        const moved = replaceDetail(subject, i, { ...d, x: pos[0], y: pos[1] });
        return { subject: moved, mods: { tagDetail: i }, cleanDetail: i, info: { kind, detail: i, to: pos } };
      }
      // No free spot on this subject: the detail changes colour instead.
      return recolor(subject, i, rng);
    }
    case "detail-recolored":
      return recolor(subject, rng.int(nd), rng);
    case "pattern-wrong":
      return wrongPattern(subject, rng);
    case "noise-blob":
      return { subject, mods: {}, info: { kind } };
  }
}

function replaceDetail(s: Subject, i: number, d: Detail): Subject {
  return { ...s, details: s.details.map((x, k) => (k === i ? d : x)) };
}

function recolor(subject: Subject, i: number, rng: Rng): Plan {
  const d = subject.details[i]!;
  let options = distinctColors([d.color, subject.body, subject.secondary]);
  if (options.length === 0) options = distinctColors([d.color]);
  const color = options[rng.int(options.length)]!;
  return {
    subject: replaceDetail(subject, i, { ...d, color }),
    mods: { tagDetail: i },
    cleanDetail: i,
    info: { kind: "detail-recolored", detail: i, color },
  };
}

function wrongPattern(subject: Subject, rng: Rng): Plan {
  const faces = subjectGeometry(subject).faces;
  const f = faces[rng.int(faces.length)]!;
  const cx = f[0] + (f[2] - f[0]) * rng.uniform();
  const cy = f[1] + (f[3] - f[1]) * rng.uniform();
  const r = 0.12 + 0.06 * rng.uniform();
  const region = { cx, cy, r };
  const original = patternFn(subject.pattern);
  // Another pattern that disagrees with the original on at least 30% of the disc; else the
  // original with its colours swapped (disagrees everywhere).
  let pattern: Pattern = subject.pattern;
  let invert = true;
  const others = PATTERN_KINDS.filter((k) => k !== subject.pattern.kind);
  for (let attempt = 0; attempt < 6; attempt++) {
    const kindTry: PatternKind = others[rng.int(others.length)]!;
    const cand: Pattern = { kind: kindTry, period: Math.round((0.08 + 0.06 * rng.uniform()) * 1e4) / 1e4, angle: [0, 90, 45][rng.int(3)]! };
    if (disagreement(original, patternFn(cand), region) >= 0.3) {
      pattern = cand;
      invert = false;
      break;
    }
  }
  const patch = { ...region, pattern, invert };
  return {
    subject,
    mods: { tagDisc: region, patternPatch: patch },
    info: { kind: "pattern-wrong", region, pattern, invert },
  };
}

function disagreement(a: (u: number, v: number) => boolean, b: (u: number, v: number) => boolean, d: { cx: number; cy: number; r: number }): number {
  let n = 0, diff = 0;
  for (let j = 0; j < 21; j++) {
    for (let i = 0; i < 21; i++) {
      const du = (i / 10 - 1) * d.r, dv = (j / 10 - 1) * d.r;
      if (du * du + dv * dv > d.r * d.r) continue;
      n++;
      if (a(d.cx + du, d.cy + dv) !== b(d.cx + du, d.cy + dv)) diff++;
    }
  }
  return diff / n;
}

/** Paste an ellipse of uniform random colours centred on a subject pixel; marks it in `mask`. */
function pasteNoise(img: RgbImage, clean: Render, mask: Uint8Array, rng: Rng): NonNullable<Corruption["blob"]> {
  const { width: W, height: H } = img;
  const candidates: number[] = [];
  let x0 = W, x1 = -1, y0 = H, y1 = -1;
  for (let p = 0; p < W * H; p++) {
    if (!clean.mask[p]) continue;
    const x = p % W, y = (p / W) | 0;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
    const part = clean.parts[p]!;
    if (part === PART.body || part === PART.pattern) candidates.push(p);
  }
  const pool = candidates.length > 0 ? candidates : [((H / 2) | 0) * W + ((W / 2) | 0)];
  const c = pool[rng.int(pool.length)]!;
  const cx = c % W, cy = (c / W) | 0;
  const extent = Math.max(x1 - x0 + 1, y1 - y0 + 1, 8);
  const rx = Math.max(2, extent * (0.08 + 0.06 * rng.uniform()));
  const ry = Math.max(2, rx * (0.7 + 0.6 * rng.uniform()));
  for (let y = Math.max(0, Math.floor(cy - ry)); y <= Math.min(H - 1, Math.ceil(cy + ry)); y++) {
    for (let x = Math.max(0, Math.floor(cx - rx)); x <= Math.min(W - 1, Math.ceil(cx + rx)); x++) {
      if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 > 1) continue;
      const p = y * W + x;
      mask[p] = 1;
      img.data[3 * p] = rng.int(256);
      img.data[3 * p + 1] = rng.int(256);
      img.data[3 * p + 2] = rng.int(256);
    }
  }
  return { x: cx, y: cy, rx, ry };
}
