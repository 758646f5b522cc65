// lib/patch/quality.ts: quality maps (loops and ONNX graph), background mask, normalization,
// low-patch share and resizing to the latent grid, on hand-made inputs with known answers.

import { describe, expect, test } from "bun:test";
import type { RgbImage } from "../../lib/io/images.ts";
import { Rng } from "../../lib/rng.ts";
import {
  MASK_PENALTY,
  type FeatureGrid,
  backgroundMask,
  lowShare,
  maskPenalty,
  normalizeQuality,
  qualityMaps,
  qualityMapsBatch,
  resizeMap,
} from "../../lib/patch/quality.ts";

/** [C, h, w] grid from patch-major vectors (one C-vector per patch, row-major patches). */
function grid(patches: number[][], h: number, w: number): FeatureGrid {
  const c = patches[0]!.length;
  const n = h * w;
  const data = new Float32Array(c * n);
  patches.forEach((v, i) => v.forEach((x, k) => (data[k * n + i] = x)));
  return { data, c, h, w };
}

const e = (k: number, c = 4) => Array.from({ length: c }, (_, i) => (i === k ? 1 : 0));

function expectClose(a: Float32Array, b: ArrayLike<number>, tol = 1e-6) {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(b[i]!)) expect(Number.isNaN(a[i]!)).toBe(true);
    else expect(Math.abs(a[i]! - b[i]!)).toBeLessThan(tol);
  }
}

describe("qualityMaps (loops)", () => {
  test("identical features give quality 1 everywhere", () => {
    const rng = new Rng(1);
    const patches = Array.from({ length: 6 }, () => Array.from({ length: 5 }, () => rng.uniform() + 0.1));
    const f = grid(patches, 2, 3);
    const q = qualityMaps(f, f);
    expectClose(q.qGen, new Array(6).fill(1));
    expectClose(q.qRef, new Array(6).fill(1));
    expect(q.genGrid).toEqual([2, 3]);
    expect(q.refGrid).toEqual([2, 3]);
  });

  test("a generated patch orthogonal to every reference patch scores 0", () => {
    const ref = grid([e(0), e(1), [1, 1, 0, 0], [0, 1, 2, 0]], 2, 2);
    const gen = grid([e(3), e(1), [0, 0, 5, 0], [2, 2, 0, 0]], 2, 2);
    const q = qualityMaps(gen, ref);
    expectClose(q.qGen, [0, 1, 2 / Math.sqrt(5), 1]);
    // qRef[j] = max_i cos(r_j, g_i): r3 = (0,1,2,0)/sqrt5 best matches g2 = e2.
    expectClose(q.qRef, [Math.SQRT1_2, 1, 1, 2 / Math.sqrt(5)]);
  });

  test("scale does not matter and zero vectors match nothing", () => {
    const ref = grid([[3, 4], [0, 0]], 1, 2);
    const gen = grid([[0.3, 0.4], [0, 0]], 1, 2);
    const q = qualityMaps(gen, ref);
    expectClose(q.qGen, [1, 0]);
    expectClose(q.qRef, [1, 0]);
  });

  test("masked reference patches are left out of the matching", () => {
    // Reference patch 0 is background and identical to generated patch 0: it must not count.
    const ref = grid([e(0), e(1)], 1, 2);
    const gen = grid([e(0), e(1)], 1, 2);
    const unmasked = qualityMaps(gen, ref);
    expectClose(unmasked.qGen, [1, 1]);
    const masked = qualityMaps(gen, ref, Uint8Array.from([1, 0]));
    expectClose(masked.qGen, [0, 1]);
    expect(Number.isNaN(masked.qRef[0]!)).toBe(true);
    expect(masked.qRef[1]).toBeCloseTo(1, 6);
    expect([...masked.refMask]).toEqual([1, 0]);
  });

  test("an all-background reference masks nothing", () => {
    const ref = grid([e(0), e(1)], 1, 2);
    const gen = grid([e(0), e(2)], 1, 2);
    const q = qualityMaps(gen, ref, Uint8Array.from([1, 1]));
    expectClose(q.qGen, [1, 0]);
    expectClose(q.qRef, [1, 0]);
    expect([...q.refMask]).toEqual([0, 0]);
    expect([...maskPenalty(Uint8Array.from([1, 1]), 2)]).toEqual([0, 0]);
    expect([...maskPenalty(Uint8Array.from([1, 0]), 2)]).toEqual([MASK_PENALTY, 0]);
  });

  test("shape errors are named", () => {
    const a = grid([e(0)], 1, 1);
    const b = grid([[1, 0, 0]], 1, 1);
    expect(() => qualityMaps(a, b)).toThrow(/4 channels, reference features 3/);
    expect(() => qualityMaps({ data: new Float32Array(3), c: 2, h: 1, w: 2 }, a)).toThrow(/hold 3 values/);
    expect(() => qualityMaps(a, a, new Uint8Array(2))).toThrow(/mask has 2 entries/);
  });
});

describe("qualityGraph (ONNX Runtime) agrees with the loops", () => {
  test("batch of 3 pairs, partial / full / no masks, max abs diff < 1e-5", async () => {
    const rng = new Rng(7);
    const [B, C, h, w, h2, w2] = [3, 16, 3, 4, 4, 3];
    const gen = rng.normals(B * C * h * w);
    const ref = rng.normals(B * C * h2 * w2);
    // Post-ReLU-like features for the second pair (cosines in [0, 1]).
    for (let i = C * h * w; i < 2 * C * h * w; i++) gen[i] = Math.max(0, gen[i]!);
    for (let i = C * h2 * w2; i < 2 * C * h2 * w2; i++) ref[i] = Math.max(0, ref[i]!);
    const partial = new Uint8Array(h2 * w2);
    partial[0] = partial[5] = partial[11] = 1;
    const masks = [partial, new Uint8Array(h2 * w2).fill(1), undefined];
    const batch = await qualityMapsBatch(gen, ref, [B, C, h, w], [B, C, h2, w2], masks, { threads: 1 });
    let maxDiff = 0;
    for (let b = 0; b < B; b++) {
      const g: FeatureGrid = { data: gen.subarray(b * C * h * w, (b + 1) * C * h * w), c: C, h, w };
      const r: FeatureGrid = { data: ref.subarray(b * C * h2 * w2, (b + 1) * C * h2 * w2), c: C, h: h2, w: w2 };
      const loops = qualityMaps(g, r, masks[b]);
      const graph = batch[b]!;
      expect([...graph.refMask]).toEqual([...loops.refMask]);
      for (let i = 0; i < h * w; i++) maxDiff = Math.max(maxDiff, Math.abs(graph.qGen[i]! - loops.qGen[i]!));
      for (let j = 0; j < h2 * w2; j++) {
        expect(Number.isNaN(graph.qRef[j]!)).toBe(Number.isNaN(loops.qRef[j]!));
        if (!Number.isNaN(loops.qRef[j]!)) maxDiff = Math.max(maxDiff, Math.abs(graph.qRef[j]! - loops.qRef[j]!));
      }
    }
    expect(maxDiff).toBeLessThan(1e-5);
    // The masks did something: pair 0's masked columns are NaN, pair 1's full mask fell back.
    expect(Number.isNaN(batch[0]!.qRef[5]!)).toBe(true);
    expect(batch[1]!.qRef.some((v) => Number.isNaN(v))).toBe(false);
  });
});

describe("backgroundMask", () => {
  function white(w: number, h: number): RgbImage {
    return { width: w, height: h, data: new Uint8Array(w * h * 3).fill(255) };
  }
  function setPx(img: RgbImage, x: number, y: number, rgb: [number, number, number]) {
    img.data.set(rgb, (y * img.width + x) * 3);
  }

  test("near-white threshold and 95% share", () => {
    const img = white(8, 8); // 2x2 grid of 4x4 = 16-pixel patches
    setPx(img, 1, 1, [20, 20, 20]); // top-left: 15/16 = 93.75% white -> subject
    setPx(img, 5, 1, [240, 236, 250]); // top-right: near-white pixel -> still background
    setPx(img, 1, 5, [255, 255, 234]); // bottom-left: min channel 234 < 235 -> 15/16 -> subject
    expect([...backgroundMask(img, 2, 2)]).toEqual([0, 1, 0, 1]);
    expect([...backgroundMask(img, 2, 2, { whiteThreshold: 230 })]).toEqual([0, 1, 1, 1]);
    expect([...backgroundMask(img, 2, 2, { backgroundShare: 0.9 })]).toEqual([1, 1, 1, 1]);
  });

  test("uneven grids tile the whole image", () => {
    const img = white(10, 7);
    setPx(img, 9, 6, [0, 0, 0]); // the last pixel belongs to the last patch
    const m = backgroundMask(img, 3, 3, { backgroundShare: 1 });
    expect([...m]).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 0]);
    expect(() => backgroundMask(img, 8, 3)).toThrow(/finer than/);
  });
});

describe("normalization", () => {
  test("default clamp mode clamps cosines to [0, 1]; lo/hi rescale", () => {
    const q = Float32Array.from([-0.5, 0, 0.25, 1, NaN]);
    expectClose(normalizeQuality(q), [0, 0, 0.25, 1, NaN]);
    expectClose(normalizeQuality(q, { lo: -1, hi: 1 }), [0.25, 0.5, 0.625, 1, NaN]);
    expectClose(normalizeQuality(q, { lo: 0.2, hi: 0.6 }), [0, 0, 0.125, 1, NaN]);
    expectClose(normalizeQuality(q, { mode: "clamp", lo: -1, hi: 1 }), [0.25, 0.5, 0.625, 1, NaN]);
    expect(() => normalizeQuality(q, { mode: "range" as "clamp" })).toThrow(/unknown mode/);
    expect(() => normalizeQuality(q, { lo: 1, hi: 1 })).toThrow(/hi > lo/);
  });

  test("minmax rescales each map by its own unmasked min and max", () => {
    expectClose(normalizeQuality(Float32Array.from([0.2, 0.6, 0.4, NaN]), { mode: "minmax" }), [0, 1, 0.5, NaN]);
    expectClose(normalizeQuality(Float32Array.from([-0.3, 0.7]), { mode: "minmax" }), [0, 1]);
    expectClose(normalizeQuality(Float32Array.from([0.3, 0.3, NaN]), { mode: "minmax" }), [1, 1, NaN]);
  });

  test("lowShare counts unmasked patches below the threshold", () => {
    const q = Float32Array.from([0.1, 0.6, 0.4, NaN, 0.9]);
    expect(lowShare(q)).toBe(0.5);
    expect(lowShare(q, 0.2)).toBe(0.25);
    expect(lowShare(Float32Array.from([0.5]))).toBe(0); // at the threshold is not low
    expect(lowShare(new Float32Array(0))).toBe(0);
  });
});

describe("resizeMap", () => {
  test("bilinear upsampling matches torch F.interpolate(align_corners=False)", () => {
    // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=4, mode="bilinear")
    const up = resizeMap(Float32Array.from([0, 1, 2, 3]), 2, 2, 4, 4);
    expectClose(up, [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3]);
  });

  test("bilinear downsampling and non-integer factors", () => {
    expectClose(resizeMap(Float32Array.from([0, 1, 2, 3]), 1, 4, 1, 2), [0.5, 2.5]);
    // 3 -> 2: source coordinates 0.25 and 1.75.
    expectClose(resizeMap(Float32Array.from([0, 1, 2]), 1, 3, 1, 2), [0.25, 1.75]);
    // 3 -> 5: source coordinates max(0,-0.2)=0, 0.4, 1, 1.6, 2.2 (clamped to the last entry).
    expectClose(resizeMap(Float32Array.from([0, 10, 20]), 3, 1, 5, 1), [0, 4, 10, 16, 20]);
  });

  test("7x7 to the 64x64 latent grid keeps a constant map and the value range", () => {
    const rng = new Rng(3);
    const m = new Float32Array(49).map(() => rng.uniform());
    const out = resizeMap(m, 7, 7, 64, 64);
    expect(out.length).toBe(64 * 64);
    const lo = Math.min(...m);
    const hi = Math.max(...m);
    for (const v of out) {
      expect(v).toBeGreaterThanOrEqual(lo - 1e-6);
      expect(v).toBeLessThanOrEqual(hi + 1e-6);
    }
    expectClose(resizeMap(new Float32Array(49).fill(0.3), 7, 7, 64, 64), new Array(4096).fill(0.3));
  });

  test("masked (NaN) entries count as quality 1", () => {
    expectClose(resizeMap(Float32Array.from([NaN, 0]), 1, 2, 1, 2), [1, 0]);
    expectClose(resizeMap(Float32Array.from([NaN, 0]), 1, 2, 1, 4), [1, 0.75, 0.25, 0]);
  });

  test("nearest", () => {
    expectClose(resizeMap(Float32Array.from([0, 1, 2]), 1, 3, 1, 6, "nearest"), [0, 0, 1, 1, 2, 2]);
    expectClose(resizeMap(Float32Array.from([0, 1, 2, 3]), 1, 4, 1, 2, "nearest"), [0, 2]);
  });
});
