// Scenes of the tiny world: the twenty object contexts of DreamBench's prompt list, each a
// procedural background (sky gradient, ground, a few shapes) painted in image coordinates. The
// phrase is the ground truth of what a scene prompt means; `getScene` maps a phrase (or a whole
// prompt) back to its painter.

import type { Rng } from "../rng.ts";
import {
  type Layer,
  type Shape,
  IDENTITY,
  circle,
  clip,
  ellipse,
  hash2,
  line,
  mix,
  polygon,
  rect,
  rgb,
  ring,
  roundRect,
  shade,
  solid,
  star,
} from "./raster.ts";

/** Where the subject stands, in image coordinates (0..1), known before the background is painted. */
export interface Footprint {
  x0: number;
  x1: number;
  top: number;
  bottom: number;
}

export interface SceneContext {
  rng: Rng;
  subject: Footprint;
}

export interface ScenePlacement {
  minScale: number;
  maxScale: number;
  mirror: boolean;
}

/** DreamBench-style scenes: the subject at half to nine tenths of its reference size, either way round. */
export const DEFAULT_PLACEMENT: ScenePlacement = { minScale: 0.5, maxScale: 0.9, mirror: true };

export interface Scene {
  /** Short kebab-case key, e.g. "beach". */
  name: string;
  /** The DreamBench prompt context, e.g. "on the beach". */
  phrase: string;
  /** Image Y of the ground line: the subject stands below it. */
  horizon: number;
  /** Cast a soft shadow under the subject (false for things floating on a liquid). */
  shadow: boolean;
  /** Opacity of a mirror image of the subject below it (mirror, water), 0 for none. */
  reflection: number;
  /** The subject's scale range relative to its reference, and whether it may be mirrored. */
  placement: ScenePlacement;
  background(ctx: SceneContext): Layer[];
}

// ---------------------------------------------------------------------------------------------
// Painting helpers (image coordinates, label 0).

function layer(shape: Shape, paint: Layer["paint"], alpha?: number): Layer {
  return alpha === undefined ? { shape, frame: IDENTITY, paint } : { shape, frame: IDENTITY, paint, alpha };
}

export function fill(shape: Shape, colour: number, alpha?: number): Layer {
  return layer(shape, solid(colour), alpha);
}

/** Vertical gradient from `c0` at `y0` to `c1` at `y1`, with optional grain of relative `amp`. */
function vgrad(y0: number, y1: number, c0: number, c1: number, amp = 0, seed = 0): Layer["paint"] {
  const span = y1 - y0 || 1;
  // The rasterizer walks rows: remember the last row's colour.
  let lastV = NaN, lastC = 0;
  return (u, v) => {
    if (v !== lastV) {
      lastV = v;
      lastC = mix(c0, c1, Math.min(1, Math.max(0, (v - y0) / span)));
    }
    return amp > 0 ? shade(lastC, 1 + amp * (hash2(u, v, seed) - 0.5)) : lastC;
  };
}

function sky(horizon: number, top: number, bottom: number): Layer {
  return layer(rect(0, 0, 1, horizon), vgrad(0, horizon, top, bottom));
}

function ground(horizon: number, near: number, far: number, grain: number, seed: number): Layer {
  return layer(rect(0, horizon, 1, 1), vgrad(horizon, 1, far, near, grain, seed));
}

function between(rng: Rng, a: number, b: number): number {
  return a + (b - a) * rng.uniform();
}

function seedOf(rng: Rng): number {
  return rng.int(0x7fffffff);
}

/** Lens-shaped leaf of length `len` along direction `angle` (radians). */
function leaf(cx: number, cy: number, len: number, width: number, angle: number): Shape {
  const pts: number[] = [];
  const ca = Math.cos(angle), sa = Math.sin(angle);
  const pushPt = (a: number, b: number) => pts.push(cx + a * ca - b * sa, cy + a * sa + b * ca);
  for (let k = 0; k <= 8; k++) pushPt((k / 8 - 0.5) * len, (width / 2) * Math.sin((Math.PI * k) / 8));
  for (let k = 7; k > 0; k--) pushPt((k / 8 - 0.5) * len, -(width / 2) * Math.sin((Math.PI * k) / 8));
  return polygon(pts);
}

/** Horizontal sine band of half-thickness `th` around `y0`. */
function waveBand(y0: number, amp: number, freq: number, phase: number, th: number): Shape {
  return {
    box: [0, y0 - amp - th, 1, y0 + amp + th],
    inside: (u, v) => Math.abs(v - (y0 + amp * Math.sin(u * freq + phase))) <= th,
  };
}

function sun(rng: Rng, horizon: number): Layer[] {
  const x = between(rng, 0.1, 0.9), y = between(rng, 0.08, horizon * 0.45), r = between(rng, 0.05, 0.08);
  return [fill(circle(x, y, r * 1.5), rgb(255, 250, 210), 0.35), fill(circle(x, y, r), rgb(255, 225, 90))];
}

function tree(x: number, baseY: number, h: number, foliage: readonly number[], rng: Rng): Layer[] {
  const out: Layer[] = [fill(rect(x - h * 0.06, baseY - h * 0.6, x + h * 0.06, baseY), rgb(100, 70, 45))];
  for (let k = 0; k < 6; k++) {
    const c = foliage[rng.int(foliage.length)]!;
    out.push(fill(circle(x + between(rng, -0.25, 0.25) * h, baseY - h * between(rng, 0.6, 0.95), h * between(rng, 0.18, 0.28)), c));
  }
  return out;
}

function pine(x: number, baseY: number, h: number, colour: number): Layer[] {
  return [
    fill(rect(x - h * 0.04, baseY - h * 0.2, x + h * 0.04, baseY), rgb(90, 65, 45)),
    fill(polygon([x, baseY - h, x + h * 0.3, baseY - h * 0.15, x - h * 0.3, baseY - h * 0.15]), colour),
  ];
}

/** Rectangular building with a grid of windows, painted in one layer. */
function building(x0: number, x1: number, top: number, bottom: number, wall: number, lit: number, seed: number): Layer {
  const wx = 0.035, wy = 0.045;
  const dark = shade(wall, 0.6);
  return layer(rect(x0, top, x1, bottom), (u, v) => {
    const fu = (u - x0 - 0.012) / wx, fv = (v - top - 0.015) / wy;
    if (fu < 0 || fv < 0 || u > x1 - 0.012) return wall;
    const cu = fu - Math.floor(fu), cv = fv - Math.floor(fv);
    if (cu > 0.55 || cv > 0.55) return wall;
    return hash2(Math.floor(fu), Math.floor(fv), seed) < 0.45 ? lit : dark;
  });
}

/** Rows of planks from `y0` down, getting taller towards the viewer. */
function planks(rng: Rng, y0: number, colours: readonly number[]): Layer[] {
  const out: Layer[] = [];
  const seam = rgb(70, 45, 25);
  for (let y = y0, h = 0.035; y < 1; y += h, h *= 1.22) {
    let x = -between(rng, 0, 0.4);
    while (x < 1) {
      const w = between(rng, 0.35, 0.7);
      const c = colours[rng.int(colours.length)]!;
      const seed = seedOf(rng);
      out.push(
        layer(rect(Math.max(x, 0), y, Math.min(x + w, 1), Math.min(y + h, 1)), (u, v) =>
          shade(c, 0.93 + 0.1 * Math.sin(u * 90 + 6 * hash2(Math.floor(v * 400), 0, seed))),
        ),
      );
      out.push(fill(rect(Math.max(x, 0), y, Math.max(x, 0) + 0.004, Math.min(y + h, 1)), seam));
      x += w;
    }
    out.push(fill(rect(0, y, 1, y + 0.004), seam));
  }
  return out;
}

function ripples(f: Footprint, colour: number, alpha: number): Layer[] {
  const cx = (f.x0 + f.x1) / 2, w = (f.x1 - f.x0) / 2;
  return [0.7, 1.0, 1.35].map((k) => fill(ring(cx, f.bottom, w * k + 0.02, (w * k + 0.02) * 0.18, 0.008), colour, alpha));
}

function underRug(f: Footprint, extra: number): { cx: number; cy: number; rx: number; ry: number } {
  const cx = (f.x0 + f.x1) / 2;
  const rx = Math.min((f.x1 - f.x0) / 2 + extra, 0.48);
  return { cx: Math.min(Math.max(cx, rx), 1 - rx), cy: Math.min(f.bottom, 0.9), rx, ry: Math.min(0.09, 0.98 - f.bottom + 0.06) };
}

// ---------------------------------------------------------------------------------------------
// The scenes.

const SKY_TOP = rgb(95, 155, 230), SKY_LOW = rgb(190, 220, 245);
const GREENS = [rgb(40, 110, 45), rgb(60, 140, 50), rgb(30, 90, 40), rgb(85, 160, 60)];
const AUTUMN = [rgb(215, 90, 30), rgb(230, 150, 40), rgb(190, 50, 35), rgb(240, 190, 60)];

export function scene(
  name: string,
  phrase: string,
  horizon: number,
  background: Scene["background"],
  opts: { shadow?: boolean; reflection?: number; placement?: ScenePlacement } = {},
): Scene {
  return { name, phrase, horizon, shadow: opts.shadow ?? true, reflection: opts.reflection ?? 0, placement: opts.placement ?? DEFAULT_PLACEMENT, background };
}

export const SCENES: readonly Scene[] = [
  scene("jungle", "in the jungle", 0.62, ({ rng }) => {
    const h = 0.62;
    const out: Layer[] = [sky(h, rgb(140, 195, 130), rgb(70, 130, 65))];
    for (let k = 0; k < 3; k++) {
      const x = between(rng, 0, 1);
      out.push(fill(rect(x - 0.025, 0, x + 0.025, h + 0.02), rgb(85, 65, 40)));
    }
    for (let k = 0; k < 4; k++) {
      const x = between(rng, 0, 1);
      out.push(fill(line(x, 0, x + between(rng, -0.05, 0.05), between(rng, 0.2, 0.5), 0.008), rgb(40, 90, 35)));
    }
    out.push(ground(h, rgb(35, 75, 30), rgb(60, 110, 45), 0.25, seedOf(rng)));
    for (let k = 0; k < 22; k++) {
      const c = GREENS[rng.int(GREENS.length)]!;
      const y = k < 14 ? between(rng, 0, h + 0.05) : between(rng, 0.85, 1.02);
      out.push(fill(leaf(between(rng, -0.05, 1.05), y, between(rng, 0.12, 0.28), between(rng, 0.04, 0.09), between(rng, 0, Math.PI)), c));
    }
    return out;
  }),
  scene("snow", "in the snow", 0.55, ({ rng }) => {
    const h = 0.55;
    const out: Layer[] = [sky(h, rgb(185, 198, 215), rgb(228, 233, 240))];
    for (let k = 0; k < 3; k++) out.push(fill(ellipse(between(rng, 0, 1), h, between(rng, 0.25, 0.5), between(rng, 0.06, 0.14)), rgb(222, 230, 242)));
    for (let k = 0; k < 4; k++) out.push(...pine(between(rng, 0, 1), h + 0.01, between(rng, 0.12, 0.22), rgb(45, 85, 70)));
    out.push(ground(h, rgb(238, 243, 250), rgb(215, 224, 238), 0.04, seedOf(rng)));
    for (let k = 0; k < 60; k++) out.push(fill(circle(between(rng, 0, 1), between(rng, 0, 1), between(rng, 0.003, 0.009)), rgb(255, 255, 255)));
    return out;
  }),
  scene("beach", "on the beach", 0.5, ({ rng }) => {
    const out: Layer[] = [sky(0.5, SKY_TOP, SKY_LOW), ...sun(rng, 0.5)];
    const shore = between(rng, 0.6, 0.66);
    out.push(layer(rect(0, 0.5, 1, shore), vgrad(0.5, shore, rgb(35, 105, 175), rgb(70, 160, 200))));
    for (let k = 0; k < 4; k++) {
      out.push(fill(waveBand(between(rng, 0.52, shore - 0.02), 0.006, between(rng, 15, 40), between(rng, 0, 6.3), 0.003), rgb(225, 240, 250)));
    }
    out.push(layer(rect(0, shore, 1, 1), vgrad(shore, 1, rgb(225, 200, 145), rgb(240, 215, 160), 0.12, seedOf(rng))));
    out.push(fill(waveBand(shore, 0.008, between(rng, 10, 20), between(rng, 0, 6.3), 0.006), rgb(245, 245, 240)));
    for (let k = 0; k < 4; k++) out.push(fill(ellipse(between(rng, 0, 1), between(rng, shore + 0.05, 1), 0.012, 0.007), rgb(250, 235, 225)));
    return out;
  }),
  scene("cobblestone", "on a cobblestone street", 0.45, ({ rng }) => {
    const h = 0.45;
    const wall = rgb(180, 155, 130);
    const out: Layer[] = [building(0, 1, 0, h, wall, rgb(120, 140, 160), seedOf(rng))];
    out.push(fill(rect(0, h, 1, 1), rgb(85, 80, 75)));
    for (let y = h, rh = 0.03; y < 1; y += rh, rh *= 1.15) {
      const cw = rh * 1.6;
      for (let x = -between(rng, 0, cw); x < 1; x += cw) {
        const g = between(rng, 105, 160);
        out.push(fill(roundRect(x + 0.003, y + 0.003, x + cw - 0.003, y + rh - 0.003, rh * 0.3), rgb(g, g * 0.97, g * 0.93)));
      }
    }
    return out;
  }),
  scene("pink-fabric", "on top of pink fabric", 0.3, ({ rng }) => {
    const base = rgb(240, 165, 195);
    const f1 = between(rng, 25, 45), f2 = between(rng, 8, 16), ph = between(rng, 0, 6.3);
    return [
      layer(rect(0, 0, 1, 0.3), (u, v) => shade(base, 0.82 + 0.12 * Math.sin(u * f1 + ph + v * 4))),
      layer(rect(0, 0.3, 1, 1), (u, v) => shade(base, 0.97 + 0.08 * Math.sin(u * f2 + 3 * Math.sin(v * 5 + ph)))),
    ];
  }),
  scene("wooden-floor", "on top of a wooden floor", 0.42, ({ rng }) => {
    const h = 0.42;
    return [
      layer(rect(0, 0, 1, h), vgrad(0, h, rgb(232, 220, 198), rgb(212, 198, 172))),
      fill(rect(0, h - 0.035, 1, h), rgb(245, 242, 235)),
      ...planks(rng, h, [rgb(170, 115, 65), rgb(155, 100, 55), rgb(185, 130, 75), rgb(145, 95, 50)]),
    ];
  }),
  scene("city", "with a city in the background", 0.62, ({ rng }) => {
    const h = 0.62;
    const out: Layer[] = [sky(h, rgb(120, 160, 220), rgb(210, 220, 235))];
    for (let x = -between(rng, 0, 0.08); x < 1; ) {
      const w = between(rng, 0.08, 0.17);
      const g = between(rng, 90, 160);
      out.push(building(x, x + w, between(rng, 0.12, 0.45), h, rgb(g, g + 5, g + 15), rgb(250, 230, 150), seedOf(rng)));
      x += w + between(rng, 0, 0.02);
    }
    out.push(fill(rect(0, h, 1, h + 0.06), rgb(165, 165, 160)));
    out.push(ground(h + 0.06, rgb(95, 95, 100), rgb(80, 80, 85), 0.06, seedOf(rng)));
    return out;
  }),
  scene("mountain", "with a mountain in the background", 0.6, ({ rng }) => {
    const h = 0.6;
    const out: Layer[] = [sky(h, SKY_TOP, SKY_LOW)];
    for (let k = 0; k < 3; k++) {
      const px = between(rng, 0.1, 0.9), py = between(rng, 0.12, 0.32), w = between(rng, 0.35, 0.6);
      const g = between(rng, 100, 140);
      const body = polygon([px, py, px + w, h + 0.01, px - w, h + 0.01]);
      out.push(fill(body, rgb(g, g + 10, g + 30)));
      out.push(fill(clip(body, [0, 0, 1, py + (h - py) * 0.25]), rgb(245, 248, 252)));
    }
    out.push(ground(h, rgb(90, 150, 60), rgb(120, 170, 80), 0.15, seedOf(rng)));
    return out;
  }),
  scene("blue-house", "with a blue house in the background", 0.6, ({ rng }) => {
    const h = 0.6;
    const out: Layer[] = [sky(h, SKY_TOP, SKY_LOW), ...sun(rng, h)];
    const x0 = between(rng, 0.05, 0.45), w = between(rng, 0.35, 0.5), top = between(rng, 0.28, 0.38);
    const x1 = x0 + w;
    out.push(ground(h, rgb(80, 150, 60), rgb(110, 170, 75), 0.15, seedOf(rng)));
    out.push(fill(rect(x0, top, x1, h + 0.02), rgb(65, 110, 200)));
    out.push(fill(polygon([x0 - 0.04, top, (x0 + x1) / 2, top - 0.15, x1 + 0.04, top]), rgb(150, 45, 40)));
    out.push(fill(rect((x0 + x1) / 2 - 0.04, h - 0.12, (x0 + x1) / 2 + 0.04, h + 0.02), rgb(110, 70, 40)));
    for (const wx of [x0 + w * 0.2, x1 - w * 0.2]) {
      out.push(fill(rect(wx - 0.045, top + 0.06, wx + 0.045, top + 0.14), rgb(240, 240, 235)));
      out.push(fill(rect(wx - 0.035, top + 0.07, wx + 0.035, top + 0.13), rgb(150, 200, 235)));
    }
    return out;
  }),
  scene("purple-rug-forest", "on top of a purple rug in a forest", 0.5, ({ rng, subject }) => {
    const h = 0.5;
    const out: Layer[] = [sky(h, rgb(170, 205, 170), rgb(120, 165, 115))];
    for (let k = 0; k < 5; k++) out.push(...tree(between(rng, 0, 1), h + 0.02, between(rng, 0.3, 0.45), GREENS, rng));
    out.push(ground(h, rgb(55, 100, 45), rgb(75, 120, 55), 0.25, seedOf(rng)));
    const r = underRug(subject, 0.12);
    out.push(fill(ellipse(r.cx, r.cy, r.rx + 0.015, r.ry + 0.01), rgb(190, 150, 220)));
    out.push(fill(ellipse(r.cx, r.cy, r.rx, r.ry), rgb(120, 55, 160)));
    out.push(fill(ring(r.cx, r.cy, r.rx * 0.7, r.ry * 0.7, 0.01), rgb(160, 100, 200)));
    return out;
  }),
  scene("wheat-field", "with a wheat field in the background", 0.5, ({ rng }) => {
    const h = 0.5;
    const out: Layer[] = [sky(h, SKY_TOP, SKY_LOW), ...sun(rng, h)];
    out.push(ground(h, rgb(205, 160, 60), rgb(225, 190, 95), 0.15, seedOf(rng)));
    for (let k = 0; k < 70; k++) {
      const x = between(rng, 0, 1), y = between(rng, h, 1.02), len = 0.03 + (y - h) * 0.12;
      const c = mix(rgb(190, 140, 50), rgb(240, 205, 110), rng.uniform());
      out.push(fill(line(x, y, x + between(rng, -0.01, 0.01), y - len, 0.004), c));
      out.push(fill(ellipse(x, y - len, 0.006, len * 0.25), c));
    }
    return out;
  }),
  scene("autumn-tree", "with a tree and autumn leaves in the background", 0.62, ({ rng }) => {
    const h = 0.62;
    const out: Layer[] = [sky(h, SKY_TOP, SKY_LOW)];
    out.push(ground(h, rgb(140, 140, 60), rgb(120, 150, 70), 0.2, seedOf(rng)));
    const tx = rng.uniform() < 0.5 ? between(rng, 0.12, 0.35) : between(rng, 0.65, 0.88);
    out.push(fill(polygon([tx - 0.035, h + 0.02, tx - 0.02, 0.3, tx + 0.02, 0.3, tx + 0.035, h + 0.02]), rgb(95, 65, 40)));
    for (let k = 0; k < 10; k++) {
      out.push(fill(circle(tx + between(rng, -0.2, 0.2), between(rng, 0.1, 0.35), between(rng, 0.07, 0.12)), AUTUMN[rng.int(AUTUMN.length)]!));
    }
    for (let k = 0; k < 18; k++) {
      out.push(fill(leaf(between(rng, 0, 1), between(rng, 0.1, 1), 0.025, 0.012, between(rng, 0, Math.PI)), AUTUMN[rng.int(AUTUMN.length)]!));
    }
    return out;
  }),
  scene("eiffel-tower", "with the Eiffel Tower in the background", 0.65, ({ rng }) => {
    const h = 0.65;
    const out: Layer[] = [sky(h, rgb(150, 185, 230), rgb(225, 230, 240))];
    out.push(ground(h, rgb(120, 160, 80), rgb(100, 145, 70), 0.12, seedOf(rng)));
    const cx = between(rng, 0.2, 0.8), top = between(rng, 0.05, 0.12), foot = between(rng, 0.11, 0.16), base = h + 0.01;
    const iron = rgb(95, 80, 65);
    const pts = [cx - 0.006, top, cx + 0.006, top, cx + 0.03, top + (base - top) * 0.55, cx + foot, base, cx + foot * 0.55, base];
    for (let k = 1; k < 8; k++) {
      const a = (k / 8) * Math.PI;
      pts.push(cx + foot * 0.55 * Math.cos(a), base - (base - top) * 0.12 * Math.sin(a));
    }
    pts.push(cx - foot * 0.55, base, cx - foot, base, cx - 0.03, top + (base - top) * 0.55);
    out.push(fill(polygon(pts), iron));
    out.push(fill(rect(cx - foot * 0.62, base - (base - top) * 0.2, cx + foot * 0.62, base - (base - top) * 0.18), iron));
    out.push(fill(rect(cx - 0.04, top + (base - top) * 0.5, cx + 0.04, top + (base - top) * 0.52), iron));
    return out;
  }),
  scene(
    "water",
    "floating on top of water",
    0.4,
    ({ rng, subject }) => {
      const h = 0.4, seed = seedOf(rng);
      const deep = rgb(25, 75, 135), light = rgb(60, 135, 185);
      return [
        sky(h, SKY_TOP, SKY_LOW),
        layer(rect(0, h, 1, 1), (u, v) => {
          const t = (v - h) / (1 - h);
          const streak = Math.sin(v * 220 + 3 * Math.sin(u * 9 + seed)) > 0.85 ? 1.18 : 1;
          return shade(mix(light, deep, t), streak);
        }),
        ...ripples(subject, rgb(200, 225, 245), 0.6),
      ];
    },
    { shadow: false, reflection: 0.3 },
  ),
  scene(
    "milk",
    "floating in an ocean of milk",
    0.4,
    ({ rng, subject }) => {
      const h = 0.4, ph = between(rng, 0, 6.3);
      return [
        sky(h, rgb(205, 220, 235), rgb(240, 240, 238)),
        layer(rect(0, h, 1, 1), (u, v) => shade(rgb(250, 247, 238), 0.96 + 0.04 * Math.sin(v * 120 + 2 * Math.sin(u * 7 + ph)))),
        ...ripples(subject, rgb(225, 218, 200), 0.7),
      ];
    },
    { shadow: false, reflection: 0.12 },
  ),
  scene("sunflowers", "on top of green grass with sunflowers around it", 0.45, ({ rng, subject }) => {
    const h = 0.45;
    const out: Layer[] = [sky(h, SKY_TOP, SKY_LOW), ground(h, rgb(60, 145, 50), rgb(95, 170, 70), 0.25, seedOf(rng))];
    for (let k = 0; k < 40; k++) {
      const x = between(rng, 0, 1), y = between(rng, h, 1.02);
      out.push(fill(line(x, y, x + between(rng, -0.015, 0.015), y - 0.03 - (y - h) * 0.05, 0.005), rgb(45, 120, 40)));
    }
    const n = 4 + rng.int(4);
    for (let k = 0; k < n; k++) {
      // Around the subject: left of it, right of it, or behind it.
      const side = k % 3;
      const x = side === 0 ? between(rng, 0, subject.x0) : side === 1 ? between(rng, subject.x1, 1) : between(rng, subject.x0, subject.x1);
      const y = side === 2 ? between(rng, h, h + 0.08) : between(rng, h + 0.05, 0.95);
      const r = between(rng, 0.035, 0.06);
      out.push(fill(line(x, y + r, x, Math.min(1, y + r * 4), 0.01), rgb(50, 120, 40)));
      out.push(fill(star(x, y, r, r * 0.6, 12), rgb(250, 200, 30)));
      out.push(fill(circle(x, y, r * 0.45), rgb(110, 70, 30)));
    }
    return out;
  }),
  scene(
    "mirror",
    "on top of a mirror",
    0.55,
    ({ rng }) => {
      const h = 0.55, g = between(rng, -0.2, 0.2);
      return [
        layer(rect(0, 0, 1, h), vgrad(0, h, rgb(205, 205, 210), rgb(180, 182, 190))),
        layer(rect(0, h, 1, 1), (u, v) => {
          const c = mix(rgb(220, 225, 232), rgb(165, 172, 185), (v - h) / (1 - h));
          const d = u + (v - h) * 0.8 + g;
          return (d > 0.3 && d < 0.36) || (d > 0.42 && d < 0.45) ? shade(c, 1.1) : c;
        }),
        fill(rect(0, h - 0.006, 1, h + 0.004), rgb(120, 125, 135)),
      ];
    },
    { reflection: 0.45 },
  ),
  scene("crowded-street", "on top of the sidewalk in a crowded street", 0.55, ({ rng }) => {
    const h = 0.55;
    const out: Layer[] = [];
    for (let x = 0; x < 1; ) {
      const w = between(rng, 0.2, 0.35), g = between(rng, 130, 200);
      out.push(building(x, x + w, 0, h, rgb(g, g * 0.9, g * 0.8), rgb(160, 185, 210), seedOf(rng)));
      x += w;
    }
    const n = 6 + rng.int(5);
    for (let k = 0; k < n; k++) {
      const x = between(rng, 0, 1), s = between(rng, 0.16, 0.24), foot = h + between(rng, -0.02, 0.04);
      const coat = rgb(between(rng, 30, 220), between(rng, 30, 200), between(rng, 30, 220));
      out.push(fill(rect(x - s * 0.1, foot - s * 0.4, x + s * 0.1, foot), rgb(50, 50, 60)));
      out.push(fill(roundRect(x - s * 0.16, foot - s * 0.85, x + s * 0.16, foot - s * 0.35, s * 0.06), coat));
      out.push(fill(circle(x, foot - s * 0.95, s * 0.1), rgb(225, 185, 150)));
    }
    out.push(layer(rect(0, h + 0.04, 1, 1), (u, v) => {
      const fu = (u * 8) % 1, fv = ((v - h) * 10) % 1;
      return fu < 0.03 || fv < 0.05 ? rgb(140, 140, 138) : rgb(185, 183, 178);
    }));
    return out;
  }),
  scene("dirt-road", "on top of a dirt road", 0.5, ({ rng, subject }) => {
    const h = 0.5, cx = (subject.x0 + subject.x1) / 2, vx = between(rng, 0.35, 0.65);
    const out: Layer[] = [sky(h, SKY_TOP, SKY_LOW), ground(h, rgb(90, 150, 60), rgb(120, 165, 80), 0.2, seedOf(rng))];
    out.push(layer(polygon([vx - 0.01, h, vx + 0.01, h, cx + 0.55, 1.0, cx - 0.55, 1.0]), vgrad(h, 1, rgb(175, 140, 95), rgb(150, 110, 70), 0.25, seedOf(rng))));
    for (const d of [-0.2, 0.2]) out.push(fill(line(vx, h, cx + d, 1, 0.02), rgb(125, 90, 55), 0.5));
    return out;
  }),
  scene("white-rug", "on top of a white rug", 0.42, ({ rng, subject }) => {
    const h = 0.42;
    const out: Layer[] = [layer(rect(0, 0, 1, h), vgrad(0, h, rgb(200, 215, 205), rgb(180, 195, 185)))];
    out.push(...planks(rng, h, [rgb(150, 100, 60), rgb(135, 90, 50)]));
    const r = underRug(subject, 0.15);
    const seed = seedOf(rng);
    out.push(layer(roundRect(r.cx - r.rx, r.cy - r.ry, r.cx + r.rx, Math.min(1, r.cy + r.ry), 0.02), (u, v) =>
      shade(rgb(246, 243, 236), 0.95 + 0.08 * hash2(u, v, seed)),
    ));
    for (let x = r.cx - r.rx; x < r.cx + r.rx; x += 0.015) {
      out.push(fill(line(x, r.cy + r.ry, x, Math.min(1, r.cy + r.ry + 0.02), 0.004), rgb(235, 230, 220)));
    }
    return out;
  }),
];

const BY_KEY = new Map<string, Scene>();
for (const s of SCENES) {
  BY_KEY.set(s.name, s);
  BY_KEY.set(s.phrase.toLowerCase(), s);
}

export const SCENE_NAMES: readonly string[] = SCENES.map((s) => s.name);
export const SCENE_PHRASES: readonly string[] = SCENES.map((s) => s.phrase);

/** A scene by name ("beach") or phrase ("on the beach"). Throws with the known names otherwise. */
export function getScene(nameOrPhrase: string): Scene {
  const s = BY_KEY.get(nameOrPhrase.trim().toLowerCase());
  if (!s) {
    throw new RangeError(`unknown tiny-world scene "${nameOrPhrase}" (known: ${SCENE_NAMES.join(", ")})`);
  }
  return s;
}

/** The scene whose phrase a prompt ends with / contains (longest match), or null. */
export function sceneForPrompt(prompt: string): Scene | null {
  const p = prompt.toLowerCase();
  let best: Scene | null = null;
  for (const s of SCENES) {
    if (p.includes(s.phrase.toLowerCase()) && (!best || s.phrase.length > best.phrase.length)) best = s;
  }
  return best;
}

/** "a red striped teapot" + beach -> "a red striped teapot on the beach". */
export function scenePrompt(subjectText: string, scene: Scene | string): string {
  const s = typeof scene === "string" ? getScene(scene) : scene;
  return `${subjectText} ${s.phrase}`;
}
