// The tiny world's rasterizer: filled shapes (inside tests over a bounding box) painted into a
// supersampled canvas, then box-filtered down to pixels. Every layer writes a colour, a part label
// and a tag per sample, so the renderer knows exactly which pixels show which part of a subject
// (the ground truth that generated images of real models never come with).

import type { RgbImage } from "../io/images.ts";

/** Axis-aligned box `[u0, v0, u1, v1]` in a shape's own coordinates. */
export type Box = readonly [number, number, number, number];

/** A filled region: a bounding box and an inside test. */
export interface Shape {
  readonly box: Box;
  inside(u: number, v: number): boolean;
}

/**
 * Maps image coordinates (X, Y in [0, 1], left-to-right, top-to-bottom) to a layer's own
 * coordinates: `u = ax * X + bx`, `v = ay * Y + by`. Negative `ax` mirrors, negative `ay` flips.
 */
export interface Frame {
  ax: number;
  bx: number;
  ay: number;
  by: number;
}

export const IDENTITY: Frame = { ax: 1, bx: 0, ay: 1, by: 0 };

/**
 * `paint` returns a packed colour `0xRRGGBB + label * 2^24` (see `packed`). With `alpha < 1` the
 * colour is blended over what is there and neither label nor tag is written (shadows,
 * reflections). `tag` marks samples for the caller (e.g. the region a corruption touched); a
 * later opaque layer over a tagged sample clears its tag.
 */
export interface Layer {
  shape: Shape;
  frame: Frame;
  paint: (u: number, v: number, X: number, Y: number) => number;
  alpha?: number;
  tag?: boolean | ((u: number, v: number) => boolean);
}

// ---------------------------------------------------------------------------------------------
// Colours: packed 0xRRGGBB integers.

export function rgb(r: number, g: number, b: number): number {
  return (clamp255(r) << 16) | (clamp255(g) << 8) | clamp255(b);
}

function clamp255(x: number): number {
  return x <= 0 ? 0 : x >= 255 ? 255 : Math.round(x);
}

export function red(c: number): number {
  return (c >>> 16) & 255;
}
export function green(c: number): number {
  return (c >>> 8) & 255;
}
export function blue(c: number): number {
  return c & 255;
}

/** Multiply every channel by `f` (clamped). */
export function shade(c: number, f: number): number {
  return rgb(red(c) * f, green(c) * f, blue(c) * f);
}

/** Linear mix: `t = 0` gives `a`, `t = 1` gives `b`. */
export function mix(a: number, b: number, t: number): number {
  return rgb(
    red(a) + (red(b) - red(a)) * t,
    green(a) + (green(b) - green(a)) * t,
    blue(a) + (blue(b) - blue(a)) * t,
  );
}

/** Colour plus part label, the value a layer's `paint` returns. */
export function packed(colour: number, label: number): number {
  return colour + label * 0x1000000;
}

/** A paint function of one flat colour. */
export function solid(colour: number, label = 0): Layer["paint"] {
  const p = packed(colour, label);
  return () => p;
}

/** Integer hash of two sample coordinates and a seed, in [0, 1): cheap deterministic grain. */
export function hash2(x: number, y: number, seed: number): number {
  let h = Math.imul((x * 4096) | 0, 0x27d4eb2d) ^ Math.imul((y * 4096) | 0, 0x165667b1) ^ seed;
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

// ---------------------------------------------------------------------------------------------
// Shapes.

export function ellipse(cx: number, cy: number, rx: number, ry: number): Shape {
  const irx2 = 1 / (rx * rx);
  const iry2 = 1 / (ry * ry);
  return {
    box: [cx - rx, cy - ry, cx + rx, cy + ry],
    inside: (u, v) => (u - cx) * (u - cx) * irx2 + (v - cy) * (v - cy) * iry2 <= 1,
  };
}

export function circle(cx: number, cy: number, r: number): Shape {
  return ellipse(cx, cy, r, r);
}

export function rect(x0: number, y0: number, x1: number, y1: number): Shape {
  return { box: [x0, y0, x1, y1], inside: (u, v) => u >= x0 && u <= x1 && v >= y0 && v <= y1 };
}

export function roundRect(x0: number, y0: number, x1: number, y1: number, r: number): Shape {
  const rr = Math.min(r, (x1 - x0) / 2, (y1 - y0) / 2);
  const r2 = rr * rr;
  const ix0 = x0 + rr, ix1 = x1 - rr, iy0 = y0 + rr, iy1 = y1 - rr;
  return {
    box: [x0, y0, x1, y1],
    inside: (u, v) => {
      if (u < x0 || u > x1 || v < y0 || v > y1) return false;
      const dx = u < ix0 ? ix0 - u : u > ix1 ? u - ix1 : 0;
      const dy = v < iy0 ? iy0 - v : v > iy1 ? v - iy1 : 0;
      return dx * dx + dy * dy <= r2;
    },
  };
}

/** Polygon from flat `[u0, v0, u1, v1, ...]`, even-odd rule. */
export function polygon(pts: readonly number[]): Shape {
  const n = pts.length >> 1;
  const xs = new Float64Array(n);
  const ys = new Float64Array(n);
  let u0 = Infinity, v0 = Infinity, u1 = -Infinity, v1 = -Infinity;
  for (let i = 0; i < n; i++) {
    xs[i] = pts[2 * i]!;
    ys[i] = pts[2 * i + 1]!;
    u0 = Math.min(u0, xs[i]!);
    u1 = Math.max(u1, xs[i]!);
    v0 = Math.min(v0, ys[i]!);
    v1 = Math.max(v1, ys[i]!);
  }
  return {
    box: [u0, v0, u1, v1],
    inside: (u, v) => {
      let c = false;
      for (let i = 0, j = n - 1; i < n; j = i++) {
        const yi = ys[i]!, yj = ys[j]!;
        if (yi > v !== yj > v && u < ((xs[j]! - xs[i]!) * (v - yi)) / (yj - yi) + xs[i]!) c = !c;
      }
      return c;
    },
  };
}

/** A thick straight segment (square ends). */
export function line(x0: number, y0: number, x1: number, y1: number, width: number): Shape {
  const len = Math.hypot(x1 - x0, y1 - y0) || 1;
  const nx = (-(y1 - y0) / len) * (width / 2);
  const ny = ((x1 - x0) / len) * (width / 2);
  return polygon([x0 + nx, y0 + ny, x1 + nx, y1 + ny, x1 - nx, y1 - ny, x0 - nx, y0 - ny]);
}

/** Elliptical annulus of the given thickness (handles, rims, ripples). */
export function ring(cx: number, cy: number, rx: number, ry: number, thickness: number): Shape {
  const outer = ellipse(cx, cy, rx, ry);
  const inner = ellipse(cx, cy, Math.max(rx - thickness, 1e-6), Math.max(ry - thickness, 1e-6));
  return { box: outer.box, inside: (u, v) => outer.inside(u, v) && !inner.inside(u, v) };
}

/** Star with `n` points, outer radius `ro`, inner radius `ri`, first point straight up. */
export function star(cx: number, cy: number, ro: number, ri: number, n = 5): Shape {
  const pts: number[] = [];
  for (let k = 0; k < 2 * n; k++) {
    const a = -Math.PI / 2 + (k * Math.PI) / n;
    const r = k % 2 === 0 ? ro : ri;
    pts.push(cx + r * Math.cos(a), cy + r * Math.sin(a));
  }
  return polygon(pts);
}

/** Heart of half-width about `r`, point down (the classic parametric curve, 32 vertices). */
export function heart(cx: number, cy: number, r: number): Shape {
  const pts: number[] = [];
  for (let k = 0; k < 32; k++) {
    const t = (k / 32) * 2 * Math.PI;
    const x = 16 * Math.sin(t) ** 3;
    const y = 13 * Math.cos(t) - 5 * Math.cos(2 * t) - 2 * Math.cos(3 * t) - Math.cos(4 * t);
    pts.push(cx + (x / 16) * r, cy - ((y + 2.5) / 16) * r);
  }
  return polygon(pts);
}

/** Intersection of a shape with a box. */
export function clip(shape: Shape, b: Box): Shape {
  const [x0, y0, x1, y1] = b;
  const [s0, t0, s1, t1] = shape.box;
  return {
    box: [Math.max(x0, s0), Math.max(y0, t0), Math.min(x1, s1), Math.min(y1, t1)],
    inside: (u, v) => u >= x0 && u <= x1 && v >= y0 && v <= y1 && shape.inside(u, v),
  };
}

export function unionBox(boxes: readonly Box[]): Box {
  let u0 = Infinity, v0 = Infinity, u1 = -Infinity, v1 = -Infinity;
  for (const b of boxes) {
    u0 = Math.min(u0, b[0]);
    v0 = Math.min(v0, b[1]);
    u1 = Math.max(u1, b[2]);
    v1 = Math.max(v1, b[3]);
  }
  return [u0, v0, u1, v1];
}

// ---------------------------------------------------------------------------------------------
// The canvas.

export interface Resolved {
  image: RgbImage;
  /** 1 where at least half of a pixel's samples belong to a labelled (non-zero) part. */
  mask: Uint8Array;
  /** The most frequent non-zero label of a masked pixel, 0 elsewhere. */
  parts: Uint8Array;
  /** 1 where any sample of the pixel is tagged. */
  tagged: Uint8Array;
}

const MAX_LABEL = 32;

export class Canvas {
  /** Samples per side. */
  readonly w: number;
  readonly rgb: Uint8Array;
  readonly label: Uint8Array;
  readonly tag: Uint8Array;

  constructor(
    readonly size: number,
    readonly ss: number,
    background = 0xffffff,
  ) {
    if (!Number.isInteger(size) || size < 1 || !Number.isInteger(ss) || ss < 1) {
      throw new RangeError(`Canvas: size and supersampling must be positive integers, got ${size}, ${ss}`);
    }
    this.w = size * ss;
    const n = this.w * this.w;
    this.rgb = new Uint8Array(n * 3);
    this.label = new Uint8Array(n);
    this.tag = new Uint8Array(n);
    const r = red(background), g = green(background), b = blue(background);
    for (let i = 0; i < n; i++) {
      this.rgb[3 * i] = r;
      this.rgb[3 * i + 1] = g;
      this.rgb[3 * i + 2] = b;
    }
  }

  draw(layer: Layer): void {
    const { shape, frame, paint } = layer;
    const [u0, v0, u1, v1] = shape.box;
    if (!(u0 <= u1 && v0 <= v1)) return;
    const W = this.w;
    const xa = (u0 - frame.bx) / frame.ax, xb = (u1 - frame.bx) / frame.ax;
    const ya = (v0 - frame.by) / frame.ay, yb = (v1 - frame.by) / frame.ay;
    const i0 = Math.max(0, Math.floor(Math.min(xa, xb) * W - 0.5));
    const i1 = Math.min(W - 1, Math.ceil(Math.max(xa, xb) * W - 0.5));
    const j0 = Math.max(0, Math.floor(Math.min(ya, yb) * W - 0.5));
    const j1 = Math.min(W - 1, Math.ceil(Math.max(ya, yb) * W - 0.5));
    const alpha = layer.alpha ?? 1;
    const opaque = alpha >= 1;
    const tag = layer.tag;
    const tagFn = typeof tag === "function" ? tag : null;
    const tagConst = tag === true ? 1 : 0;
    const { rgb, label } = this;
    for (let j = j0; j <= j1; j++) {
      const Y = (j + 0.5) / W;
      const v = frame.ay * Y + frame.by;
      for (let i = i0; i <= i1; i++) {
        const X = (i + 0.5) / W;
        const u = frame.ax * X + frame.bx;
        if (!shape.inside(u, v)) continue;
        const p = paint(u, v, X, Y);
        const s = j * W + i;
        const c = p & 0xffffff;
        if (opaque) {
          rgb[3 * s] = (c >>> 16) & 255;
          rgb[3 * s + 1] = (c >>> 8) & 255;
          rgb[3 * s + 2] = c & 255;
          label[s] = p >>> 24;
          this.tag[s] = tagFn ? (tagFn(u, v) ? 1 : 0) : tagConst;
        } else {
          rgb[3 * s] = Math.round(rgb[3 * s]! + (((c >>> 16) & 255) - rgb[3 * s]!) * alpha);
          rgb[3 * s + 1] = Math.round(rgb[3 * s + 1]! + (((c >>> 8) & 255) - rgb[3 * s + 1]!) * alpha);
          rgb[3 * s + 2] = Math.round(rgb[3 * s + 2]! + ((c & 255) - rgb[3 * s + 2]!) * alpha);
        }
      }
    }
  }

  drawAll(layers: readonly Layer[]): void {
    for (const l of layers) this.draw(l);
  }

  /** 1 on every pixel with at least one sample of part label `l`. */
  pixelsWithLabel(l: number): Uint8Array {
    const { size, ss, w: W } = this;
    const out = new Uint8Array(size * size);
    for (let j = 0; j < W; j++) {
      const row = ((j / ss) | 0) * size;
      for (let i = 0; i < W; i++) if (this.label[j * W + i] === l) out[row + ((i / ss) | 0)] = 1;
    }
    return out;
  }

  /** Box-filter the samples down to pixels. */
  resolve(): Resolved {
    const { size, ss, w: W } = this;
    const n = ss * ss;
    const data = new Uint8Array(size * size * 3);
    const mask = new Uint8Array(size * size);
    const parts = new Uint8Array(size * size);
    const tagged = new Uint8Array(size * size);
    const counts = new Int32Array(MAX_LABEL);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        let r = 0, g = 0, b = 0, covered = 0, anyTag = 0;
        counts.fill(0);
        for (let dy = 0; dy < ss; dy++) {
          let s = (y * ss + dy) * W + x * ss;
          for (let dx = 0; dx < ss; dx++, s++) {
            r += this.rgb[3 * s]!;
            g += this.rgb[3 * s + 1]!;
            b += this.rgb[3 * s + 2]!;
            const l = this.label[s]!;
            if (l > 0) {
              covered++;
              counts[l < MAX_LABEL ? l : MAX_LABEL - 1]!++;
            }
            anyTag |= this.tag[s]!;
          }
        }
        const p = y * size + x;
        data[3 * p] = Math.floor((r + (n >> 1)) / n);
        data[3 * p + 1] = Math.floor((g + (n >> 1)) / n);
        data[3 * p + 2] = Math.floor((b + (n >> 1)) / n);
        tagged[p] = anyTag;
        if (2 * covered >= n) {
          mask[p] = 1;
          let best = 1;
          for (let l = 2; l < MAX_LABEL; l++) if (counts[l]! > counts[best]!) best = l;
          parts[p] = best;
        }
      }
    }
    return { image: { width: size, height: size, data }, mask, parts, tagged };
  }
}
