// Subjects of the tiny world: a class noun with a parametric silhouette, a body colour, a
// secondary colour (pattern and accent parts), a pattern, and 1-3 small details at fixed
// positions on the body. Subjects are plain JSON data (they go into prompts.jsonl); the geometry
// is recomputed from them. Coordinates are canonical: the unit square, u to the right, v down,
// before the renderer scales, shifts and mirrors it.

import { Rng } from "../rng.ts";
import {
  type Box,
  type Shape,
  circle,
  clip,
  ellipse,
  heart,
  line,
  polygon,
  rect,
  rgb,
  ring,
  roundRect,
  shade,
  star,
  unionBox,
} from "./raster.ts";

export const CLASS_NOUNS = [
  "teapot",
  "mug",
  "vase",
  "backpack",
  "robot",
  "duck",
  "clock",
  "can",
  "bowl",
  "plushie",
] as const;
export type ClassNoun = (typeof CLASS_NOUNS)[number];

/** Named colours; a subject's colours are names so that descriptions and pixels agree. */
export const COLORS = {
  red: rgb(205, 40, 45),
  orange: rgb(240, 130, 30),
  yellow: rgb(245, 205, 40),
  green: rgb(55, 160, 70),
  teal: rgb(30, 150, 150),
  blue: rgb(45, 95, 205),
  purple: rgb(130, 65, 175),
  pink: rgb(240, 125, 175),
  brown: rgb(125, 80, 45),
  black: rgb(40, 40, 45),
  grey: rgb(135, 135, 140),
  white: rgb(248, 248, 244),
} as const;
export type ColorName = keyof typeof COLORS;
export const COLOR_NAMES = Object.keys(COLORS) as ColorName[];
/** White bodies would vanish into the white reference background. */
export const BODY_COLOR_NAMES = COLOR_NAMES.filter((c) => c !== "white");

export const PATTERN_KINDS = ["plain", "stripes", "dots", "checks", "zigzag"] as const;
export type PatternKind = (typeof PATTERN_KINDS)[number];

export interface Pattern {
  kind: PatternKind;
  /** Cell size in canonical units. */
  period: number;
  /** Stripe / zigzag direction in degrees (0: horizontal bands). */
  angle: number;
}

export const DETAIL_KINDS = ["star", "square", "heart", "button", "eyes"] as const;
export type DetailKind = (typeof DETAIL_KINDS)[number];

export interface Detail {
  kind: DetailKind;
  color: ColorName;
  /** Centre, canonical coordinates. */
  x: number;
  y: number;
  /** Radius-like size, canonical units. */
  size: number;
}

export interface Subject {
  /** `<class>-<colour>-<pattern>-<8 hex of a hash of everything else>`: stable, file-name safe. */
  id: string;
  classNoun: ClassNoun;
  /** Class silhouette parameters, each in [0, 1). */
  shape: number[];
  body: ColorName;
  secondary: ColorName;
  pattern: Pattern;
  details: Detail[];
}

export interface Description {
  classNoun: ClassNoun;
  attributes: string[];
  text: string;
}

// ---------------------------------------------------------------------------------------------
// Class geometry.

/** How a part is coloured: body colour with the pattern, secondary colour, near-black, or the
 *  body colour in shadow (the inside of a bowl). */
export type Role = "body" | "accent" | "dark" | "inner";

export interface SubjectPart {
  shape: Shape;
  role: Role;
}

export interface Geometry {
  /** Parts in paint order (back to front), details excluded. */
  parts: SubjectPart[];
  /** Boxes on the body (inside the silhouette) where details may sit. */
  faces: Box[];
}

const lerp = (t: number, a: number, b: number) => a + (b - a) * t;

function teapot(p: readonly number[]): Geometry {
  const cx = 0.48, cy = 0.6;
  const rx = lerp(p[0]!, 0.26, 0.32), ry = lerp(p[1]!, 0.19, 0.24);
  const reach = lerp(p[2]!, 0.1, 0.15);
  const tx = cx + rx + reach, ty = cy - ry * 0.85;
  const hx = cx - rx, hr = lerp(p[3]!, 0.09, 0.12);
  return {
    parts: [
      { role: "accent", shape: clip(ring(hx, cy - ry * 0.05, hr, ry * 0.62, 0.035), [0, 0, hx + 0.02, 1]) },
      {
        role: "body",
        shape: polygon([cx + rx * 0.7, cy - ry * 0.1, tx, ty, tx + 0.03, ty + 0.035, cx + rx * 0.8, cy + ry * 0.5]),
      },
      { role: "accent", shape: roundRect(cx - rx * 0.55, cy + ry * 0.8, cx + rx * 0.55, cy + ry + 0.04, 0.015) },
      { role: "body", shape: ellipse(cx, cy, rx, ry) },
      { role: "accent", shape: clip(ellipse(cx, cy - ry * 0.88, rx * 0.5, ry * 0.3), [0, 0, 1, cy - ry * 0.75]) },
      { role: "accent", shape: circle(cx, cy - ry * 0.88 - ry * 0.3, 0.03) },
    ],
    faces: [[cx - rx * 0.65, cy - ry * 0.5, cx + rx * 0.65, cy + ry * 0.6]],
  };
}

function mug(p: readonly number[]): Geometry {
  const cx = 0.45, hw = lerp(p[0]!, 0.17, 0.23);
  const x0 = cx - hw, x1 = cx + hw;
  const top = lerp(p[1]!, 0.3, 0.38), bottom = 0.82;
  const hr = lerp(p[2]!, 0.11, 0.15);
  return {
    parts: [
      { role: "accent", shape: clip(ring(x1, (top + bottom) / 2, hr, (bottom - top) * 0.3, 0.04), [x1 - 0.02, 0, 1, 1]) },
      { role: "body", shape: roundRect(x0, top, x1, bottom, 0.04) },
      { role: "accent", shape: roundRect(x0 - 0.01, top - 0.015, x1 + 0.01, top + 0.03, 0.015) },
    ],
    faces: [[x0 + 0.04, top + 0.07, x1 - 0.04, bottom - 0.05]],
  };
}

function vase(p: readonly number[]): Geometry {
  const cx = 0.5, cy = 0.62;
  const rx = lerp(p[0]!, 0.22, 0.28), ry = lerp(p[1]!, 0.2, 0.24);
  const nw = lerp(p[2]!, 0.07, 0.1), top = lerp(p[3]!, 0.14, 0.22);
  return {
    parts: [
      { role: "accent", shape: roundRect(cx - rx * 0.5, cy + ry - 0.03, cx + rx * 0.5, cy + ry + 0.03, 0.015) },
      { role: "body", shape: roundRect(cx - nw, top, cx + nw, cy, 0.02) },
      { role: "body", shape: ellipse(cx, cy, rx, ry) },
      { role: "accent", shape: ellipse(cx, top, nw + 0.04, 0.035) },
      { role: "inner", shape: ellipse(cx, top, nw, 0.018) },
    ],
    faces: [[cx - rx * 0.62, cy - ry * 0.5, cx + rx * 0.62, cy + ry * 0.6]],
  };
}

function backpack(p: readonly number[]): Geometry {
  const hw = lerp(p[0]!, 0.2, 0.25);
  const x0 = 0.5 - hw, x1 = 0.5 + hw;
  const top = lerp(p[1]!, 0.18, 0.25), bottom = 0.86;
  const pocketTop = bottom - lerp(p[2]!, 0.22, 0.28);
  return {
    parts: [
      { role: "accent", shape: clip(ring(0.5, top, 0.08, 0.07, 0.025), [0, 0, 1, top + 0.01]) },
      { role: "accent", shape: roundRect(x0 - 0.035, top + 0.1, x0 + 0.02, bottom - 0.12, 0.02) },
      { role: "accent", shape: roundRect(x1 - 0.02, top + 0.1, x1 + 0.035, bottom - 0.12, 0.02) },
      { role: "body", shape: roundRect(x0, top, x1, bottom, 0.09) },
      { role: "accent", shape: roundRect(x0 + 0.06, pocketTop, x1 - 0.06, bottom - 0.05, 0.05) },
      { role: "dark", shape: rect(x0 + 0.09, pocketTop + 0.03, x1 - 0.09, pocketTop + 0.04) },
    ],
    faces: [[x0 + 0.06, top + 0.07, x1 - 0.06, pocketTop - 0.02]],
  };
}

function robot(p: readonly number[]): Geometry {
  const hw = lerp(p[0]!, 0.14, 0.18), hh = lerp(p[1]!, 0.17, 0.21), tw = lerp(p[2]!, 0.18, 0.23);
  const headTop = 0.13, headBottom = headTop + hh;
  const torsoTop = headBottom + 0.035, torsoBottom = 0.78;
  const armLen = lerp(p[3]!, 0.24, 0.32);
  const legX = tw * 0.55;
  return {
    parts: [
      { role: "dark", shape: line(0.5, headTop, 0.5, 0.06, 0.02) },
      { role: "accent", shape: circle(0.5, 0.055, 0.03) },
      { role: "dark", shape: rect(0.46, headBottom - 0.01, 0.54, torsoTop + 0.01) },
      { role: "accent", shape: roundRect(0.5 - tw - 0.07, torsoTop + 0.03, 0.5 - tw + 0.01, torsoTop + armLen, 0.03) },
      { role: "accent", shape: roundRect(0.5 + tw - 0.01, torsoTop + 0.03, 0.5 + tw + 0.07, torsoTop + armLen, 0.03) },
      { role: "accent", shape: roundRect(0.5 - legX - 0.05, torsoBottom - 0.02, 0.5 - legX + 0.05, 0.92, 0.02) },
      { role: "accent", shape: roundRect(0.5 + legX - 0.05, torsoBottom - 0.02, 0.5 + legX + 0.05, 0.92, 0.02) },
      { role: "body", shape: roundRect(0.5 - hw, headTop, 0.5 + hw, headBottom, 0.04) },
      { role: "body", shape: roundRect(0.5 - tw, torsoTop, 0.5 + tw, torsoBottom, 0.04) },
    ],
    faces: [
      [0.5 - tw + 0.04, torsoTop + 0.04, 0.5 + tw - 0.04, torsoBottom - 0.04],
      [0.5 - hw + 0.03, headTop + 0.03, 0.5 + hw - 0.03, headBottom - 0.03],
    ],
  };
}

function duck(p: readonly number[]): Geometry {
  const bx = 0.54, by = 0.64;
  const rx = lerp(p[0]!, 0.28, 0.33), ry = lerp(p[1]!, 0.18, 0.22);
  const hx = 0.34, hy = 0.34, hr = lerp(p[2]!, 0.13, 0.16);
  const beak = lerp(p[3]!, 0.07, 0.11);
  return {
    parts: [
      { role: "body", shape: polygon([bx + rx * 0.75, by - ry * 0.3, bx + rx + 0.07, by - ry * 1.0, bx + rx * 0.95, by + ry * 0.2]) },
      { role: "body", shape: ellipse(bx, by, rx, ry) },
      { role: "body", shape: circle(hx, hy, hr) },
      { role: "accent", shape: polygon([hx - hr * 0.7, hy - 0.005, hx - hr - beak, hy + 0.03, hx - hr * 0.7, hy + 0.07]) },
    ],
    faces: [
      [bx - rx * 0.62, by - ry * 0.45, bx + rx * 0.62, by + ry * 0.6],
      [hx - hr * 0.55, hy - hr * 0.55, hx + hr * 0.55, hy + hr * 0.45],
    ],
  };
}

function clock(p: readonly number[]): Geometry {
  const cx = 0.5, cy = 0.52, R = lerp(p[0]!, 0.31, 0.35);
  const a1 = p[1]! * 2 * Math.PI, a2 = p[2]! * 2 * Math.PI;
  return {
    parts: [
      { role: "accent", shape: line(cx - R * 0.6, cy + R * 0.7, cx - R * 0.85, cy + R + 0.07, 0.04) },
      { role: "accent", shape: line(cx + R * 0.6, cy + R * 0.7, cx + R * 0.85, cy + R + 0.07, 0.04) },
      { role: "dark", shape: line(cx, cy - R, cx, cy - R - 0.06, 0.025) },
      { role: "accent", shape: circle(cx - R * 0.68, cy - R * 0.85, 0.085) },
      { role: "accent", shape: circle(cx + R * 0.68, cy - R * 0.85, 0.085) },
      { role: "body", shape: circle(cx, cy, R) },
      { role: "accent", shape: ring(cx, cy, R, R, 0.03) },
      { role: "dark", shape: line(cx, cy, cx + R * 0.5 * Math.cos(a1), cy + R * 0.5 * Math.sin(a1), 0.03) },
      { role: "dark", shape: line(cx, cy, cx + R * 0.8 * Math.cos(a2), cy + R * 0.8 * Math.sin(a2), 0.02) },
      { role: "accent", shape: circle(cx, cy, 0.025) },
    ],
    faces: [[cx - R * 0.62, cy - R * 0.62, cx + R * 0.62, cy + R * 0.62]],
  };
}

function can(p: readonly number[]): Geometry {
  const hw = lerp(p[0]!, 0.16, 0.2);
  const x0 = 0.5 - hw, x1 = 0.5 + hw;
  const top = lerp(p[1]!, 0.14, 0.2), bottom = 0.86;
  return {
    parts: [
      { role: "accent", shape: ellipse(0.5, bottom - 0.02, hw, 0.035) },
      { role: "body", shape: rect(x0, top + 0.02, x1, bottom - 0.02) },
      { role: "accent", shape: ellipse(0.5, top + 0.02, hw, 0.035) },
      { role: "inner", shape: ellipse(0.5, top + 0.02, hw - 0.02, 0.022) },
      { role: "dark", shape: roundRect(0.47, top + 0.005, 0.56, top + 0.03, 0.01) },
    ],
    faces: [[x0 + 0.03, top + 0.08, x1 - 0.03, bottom - 0.08]],
  };
}

function bowl(p: readonly number[]): Geometry {
  const rx = lerp(p[0]!, 0.36, 0.41), cy = lerp(p[1]!, 0.4, 0.46), ry = lerp(p[2]!, 0.3, 0.36);
  return {
    parts: [
      { role: "accent", shape: roundRect(0.5 - rx * 0.35, cy + ry - 0.04, 0.5 + rx * 0.35, cy + ry + 0.04, 0.02) },
      { role: "body", shape: clip(ellipse(0.5, cy, rx, ry), [0, cy, 1, 1]) },
      { role: "accent", shape: ellipse(0.5, cy, rx, 0.055) },
      { role: "inner", shape: ellipse(0.5, cy, rx - 0.025, 0.038) },
    ],
    faces: [[0.5 - rx * 0.55, cy + 0.08, 0.5 + rx * 0.55, cy + ry * 0.62]],
  };
}

function plushie(p: readonly number[]): Geometry {
  const hr = lerp(p[0]!, 0.15, 0.17), bw = lerp(p[1]!, 0.19, 0.23), ear = lerp(p[2]!, 0.06, 0.08);
  const hy = 0.3;
  return {
    parts: [
      { role: "body", shape: circle(0.5 - hr * 0.8, hy - hr * 0.8, ear) },
      { role: "body", shape: circle(0.5 + hr * 0.8, hy - hr * 0.8, ear) },
      { role: "accent", shape: circle(0.5 - hr * 0.8, hy - hr * 0.8, ear * 0.55) },
      { role: "accent", shape: circle(0.5 + hr * 0.8, hy - hr * 0.8, ear * 0.55) },
      { role: "body", shape: ellipse(0.5 - bw - 0.02, 0.58, 0.08, 0.12) },
      { role: "body", shape: ellipse(0.5 + bw + 0.02, 0.58, 0.08, 0.12) },
      { role: "body", shape: ellipse(0.5, 0.64, bw, 0.22) },
      { role: "body", shape: circle(0.5, hy, hr) },
      { role: "accent", shape: ellipse(0.5, hy + hr * 0.45, 0.07, 0.05) },
      { role: "dark", shape: ellipse(0.5, hy + hr * 0.33, 0.025, 0.018) },
      { role: "accent", shape: ellipse(0.5 - bw * 0.55, 0.86, 0.09, 0.055) },
      { role: "accent", shape: ellipse(0.5 + bw * 0.55, 0.86, 0.09, 0.055) },
    ],
    faces: [
      [0.5 - bw * 0.62, 0.52, 0.5 + bw * 0.62, 0.78],
      [0.5 - hr * 0.6, hy - hr * 0.6, 0.5 + hr * 0.6, hy + hr * 0.1],
    ],
  };
}

const GEOMETRY: Record<ClassNoun, (p: readonly number[]) => Geometry> = {
  teapot,
  mug,
  vase,
  backpack,
  robot,
  duck,
  clock,
  can,
  bowl,
  plushie,
};
const SHAPE_PARAMS = 4;

export function subjectGeometry(s: Pick<Subject, "classNoun" | "shape">): Geometry {
  const g = GEOMETRY[s.classNoun];
  if (!g) throw new RangeError(`unknown tiny-world class noun "${s.classNoun}" (known: ${CLASS_NOUNS.join(", ")})`);
  return g(s.shape);
}

// ---------------------------------------------------------------------------------------------
// Details.

/** Half-width and half-height of a detail's footprint. */
export function detailExtent(kind: DetailKind, size: number): [number, number] {
  switch (kind) {
    case "eyes":
      return [size * 1.4, size * 0.65];
    case "button":
      return [size * 0.8, size * 0.8];
    default:
      return [size, size];
  }
}

/** The shapes of a detail, back to front, each with its colour. */
export function detailShapes(d: Detail): { shape: Shape; color: number }[] {
  const c = COLORS[d.color];
  const { x, y, size: r } = d;
  switch (d.kind) {
    case "star":
      return [{ shape: star(x, y, r, r * 0.45), color: c }];
    case "square":
      return [
        { shape: roundRect(x - r * 0.85, y - r * 0.85, x + r * 0.85, y + r * 0.85, r * 0.15), color: c },
        { shape: roundRect(x - r * 0.4, y - r * 0.4, x + r * 0.4, y + r * 0.4, r * 0.1), color: COLORS.white },
      ];
    case "heart":
      return [{ shape: heart(x, y, r), color: c }];
    case "button":
      return [
        { shape: circle(x, y, r * 0.8), color: c },
        { shape: ring(x, y, r * 0.55, r * 0.55, r * 0.12), color: shade(c, 0.6) },
      ];
    case "eyes": {
      const er = r * 0.62, dx = r * 0.76;
      const out: { shape: Shape; color: number }[] = [];
      for (const ex of [x - dx, x + dx]) {
        out.push({ shape: circle(ex, y, er), color: COLORS.white });
        out.push({ shape: circle(ex + er * 0.15, y + er * 0.1, er * 0.6), color: c });
        out.push({ shape: circle(ex + er * 0.2, y + er * 0.12, er * 0.28), color: rgb(15, 15, 20) });
      }
      return out;
    }
  }
}

/** Canonical bounding box of the whole subject (silhouette and details). */
export function subjectBox(s: Subject): Box {
  const boxes: Box[] = subjectGeometry(s).parts.map((p) => p.shape.box);
  for (const d of s.details) {
    const [ex, ey] = detailExtent(d.kind, d.size);
    boxes.push([d.x - ex, d.y - ey, d.x + ex, d.y + ey]);
  }
  return unionBox(boxes);
}

// ---------------------------------------------------------------------------------------------
// Colours and sampling.

export function colorDistance(a: ColorName, b: ColorName): number {
  const ca = COLORS[a], cb = COLORS[b];
  return Math.hypot(
    ((ca >>> 16) & 255) - ((cb >>> 16) & 255),
    ((ca >>> 8) & 255) - ((cb >>> 8) & 255),
    (ca & 255) - ((cb & 255)),
  );
}

/** Colours far enough from all of `avoid` to read as different (min RGB distance 90). */
export function distinctColors(avoid: readonly ColorName[], from: readonly ColorName[] = COLOR_NAMES): ColorName[] {
  return from.filter((c) => avoid.every((a) => colorDistance(c, a) >= 90));
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)]!;
}

const round4 = (x: number) => Math.round(x * 10000) / 10000;

function boxesOverlap(a: Box, b: Box, margin: number): boolean {
  return a[0] < b[2] + margin && b[0] < a[2] + margin && a[1] < b[3] + margin && b[1] < a[3] + margin;
}

/**
 * A position for a detail of the given footprint inside one of the faces, not within `margin`
 * of any box in `avoid`; null after 40 tries.
 */
export function placeDetail(
  rng: Rng,
  faces: readonly Box[],
  ex: number,
  ey: number,
  avoid: readonly Box[],
  margin = 0.02,
): [number, number] | null {
  const fits = faces.filter((f) => f[2] - f[0] >= 2 * ex && f[3] - f[1] >= 2 * ey);
  if (fits.length === 0) return null;
  const weights = fits.map((f) => (f[2] - f[0] - 2 * ex + 0.01) * (f[3] - f[1] - 2 * ey + 0.01));
  const total = weights.reduce((a, b) => a + b, 0);
  for (let attempt = 0; attempt < 40; attempt++) {
    let t = rng.uniform() * total, k = 0;
    while (k < fits.length - 1 && t >= weights[k]!) t -= weights[k++]!;
    const f = fits[k]!;
    const x = round4(lerp(rng.uniform(), f[0] + ex, f[2] - ex));
    const y = round4(lerp(rng.uniform(), f[1] + ey, f[3] - ey));
    const b: Box = [x - ex, y - ey, x + ex, y + ey];
    if (avoid.every((a) => !boxesOverlap(a, b, margin))) return [x, y];
  }
  return null;
}

export function detailBox(d: Detail): Box {
  const [ex, ey] = detailExtent(d.kind, d.size);
  return [d.x - ex, d.y - ey, d.x + ex, d.y + ey];
}

/** A random subject; every choice comes from `rng`. */
export function randomSubject(rng: Rng): Subject {
  const classNoun = pick(rng, CLASS_NOUNS);
  const shape = Array.from({ length: SHAPE_PARAMS }, () => round4(rng.uniform()));
  const body = pick(rng, BODY_COLOR_NAMES);
  const secondary = pick(rng, distinctColors([body]));
  const kind = pick(rng, PATTERN_KINDS);
  const pattern: Pattern = {
    kind,
    period: round4(lerp(rng.uniform(), 0.08, 0.14)),
    angle: kind === "stripes" || kind === "zigzag" ? pick(rng, [0, 0, 90, 45]) : 0,
  };
  const geometry = subjectGeometry({ classNoun, shape });
  const kinds = rng.shuffle([...DETAIL_KINDS]);
  const count = 1 + rng.int(3);
  const details: Detail[] = [];
  for (const k of kinds.slice(0, count)) {
    const color = pick(rng, distinctColors([body, secondary]));
    let size = round4(lerp(rng.uniform(), 0.05, 0.075));
    let pos = placeDetail(rng, geometry.faces, ...detailExtent(k, size), details.map(detailBox));
    if (!pos && details.length === 0) {
      // The first detail always fits: shrink it until it does.
      for (size = 0.045; !pos && size >= 0.02; size -= 0.005) {
        size = round4(size);
        pos = placeDetail(rng, geometry.faces, ...detailExtent(k, size), []);
      }
    }
    if (pos) details.push({ kind: k, color, x: pos[0], y: pos[1], size });
  }
  return withId({ classNoun, shape, body, secondary, pattern, details });
}

/** `randomSubject(new Rng(seed))`: subject number `seed` of the tiny world. */
export function subjectFromSeed(seed: number): Subject {
  return randomSubject(new Rng(seed));
}

/** Attach the stable id derived from the subject's content. */
export function withId(s: Omit<Subject, "id"> | Subject): Subject {
  const { classNoun, shape, body, secondary, pattern, details } = s;
  const content = { classNoun, shape, body, secondary, pattern, details };
  const hash = fnv1a(JSON.stringify(content)).toString(16).padStart(8, "0");
  return { id: `${classNoun}-${body}-${pattern.kind}-${hash}`, ...content };
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Descriptions.

const PATTERN_ADJECTIVE: Record<PatternKind, string | null> = {
  plain: null,
  stripes: "striped",
  dots: "polka-dot",
  checks: "checkered",
  zigzag: "zigzag",
};

function detailNounPhrase(d: Detail): string {
  switch (d.kind) {
    case "star":
      return `${article(d.color)} ${d.color} star logo`;
    case "square":
      return `${article(d.color)} ${d.color} square logo`;
    case "heart":
      return `${article(d.color)} ${d.color} heart`;
    case "button":
      return `${article(d.color)} ${d.color} button`;
    case "eyes":
      return `${d.color} eyes`;
  }
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? "an" : "a";
}

/**
 * `{ classNoun, attributes: ["red", "striped", "with a yellow star logo"],
 *    text: "a red striped teapot with a yellow star logo" }`.
 */
export function describeSubject(s: Subject): Description {
  const adjectives: string[] = [s.body];
  const adj = PATTERN_ADJECTIVE[s.pattern.kind];
  if (adj) adjectives.push(adj);
  const phrases = s.details.map(detailNounPhrase);
  const attributes = [...adjectives, ...phrases.map((p) => `with ${p}`)];
  let text = `${article(s.body)} ${adjectives.join(" ")} ${s.classNoun}`;
  if (phrases.length > 0) {
    const list =
      phrases.length === 1 ? phrases[0]! : `${phrases.slice(0, -1).join(", ")} and ${phrases[phrases.length - 1]!}`;
    text += ` with ${list}`;
  }
  return { classNoun: s.classNoun, attributes, text };
}
