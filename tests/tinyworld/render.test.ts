import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { type RgbImage, writePng } from "../../lib/io/images.ts";
import { Rng } from "../../lib/rng.ts";
import { overlayMask, tileImages } from "../../lib/tinyworld/grid.ts";
import {
  CORRUPTION_KINDS,
  type Render,
  PART,
  REFERENCE_EXTENT,
  detailPart,
  referencePlacement,
  renderCorrupted,
  renderReference,
  renderScene,
} from "../../lib/tinyworld/render.ts";
import { SCENES } from "../../lib/tinyworld/scenes.ts";
import { COLORS, subjectFromSeed } from "../../lib/tinyworld/subjects.ts";

const same = (a: RgbImage, b: RgbImage) => Buffer.from(a.data).equals(Buffer.from(b.data));
const count = (m: Uint8Array) => m.reduce((a, b) => a + b, 0);

function changedPixels(a: RgbImage, b: RgbImage): Uint8Array {
  const out = new Uint8Array(a.width * a.height);
  for (let p = 0; p < out.length; p++) {
    out[p] = a.data[3 * p] !== b.data[3 * p] || a.data[3 * p + 1] !== b.data[3 * p + 1] || a.data[3 * p + 2] !== b.data[3 * p + 2] ? 1 : 0;
  }
  return out;
}

/** The mask grown by one pixel (8-neighbourhood). */
function dilate(m: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(m.length);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let v = 0;
      for (let dy = -1; dy <= 1 && !v; dy++) {
        for (let dx = -1; dx <= 1 && !v; dx++) {
          const xx = x + dx, yy = y + dy;
          if (xx >= 0 && yy >= 0 && xx < size && yy < size) v = m[yy * size + xx]!;
        }
      }
      out[y * size + x] = v;
    }
  }
  return out;
}

function checkPartsAgainstMask(r: Render): void {
  for (let p = 0; p < r.mask.length; p++) {
    expect(r.parts[p]! > 0).toBe(r.mask[p] === 1);
  }
}

describe("renderReference", () => {
  test("same subject, same bytes; different seeds, different images", () => {
    const a = renderReference(subjectFromSeed(1), 64);
    const b = renderReference(subjectFromSeed(1), 64);
    expect(same(a.image, b.image)).toBe(true);
    expect(Buffer.from(a.mask).equals(Buffer.from(b.mask))).toBe(true);
    expect(same(a.image, renderReference(subjectFromSeed(2), 64).image)).toBe(false);
  });

  test("white outside the subject, subject covers 15-60% of the image, parts agree with the mask", () => {
    for (let seed = 0; seed < 60; seed++) {
      const s = subjectFromSeed(seed);
      const size = seed % 2 === 0 ? 64 : 128;
      const r = renderReference(s, size);
      expect(r.image.width).toBe(size);
      expect(r.image.height).toBe(size);
      expect(r.image.data.length).toBe(size * size * 3);
      const coverage = count(r.mask) / (size * size);
      expect(coverage).toBeGreaterThan(0.15);
      expect(coverage).toBeLessThan(0.6);
      // Anti-aliased edge pixels lie near the mask (sharp tips: up to two pixels); everything
      // further is pure white.
      const near = dilate(dilate(r.mask, size), size);
      for (let p = 0; p < size * size; p++) {
        if (near[p]) continue;
        expect(r.image.data[3 * p]).toBe(255);
        expect(r.image.data[3 * p + 1]).toBe(255);
        expect(r.image.data[3 * p + 2]).toBe(255);
      }
      checkPartsAgainstMask(r);
      // Every detail is visible.
      s.details.forEach((_, i) => expect(r.parts.includes(detailPart(i))).toBe(true));
      expect(r.parts.includes(PART.body) || r.parts.includes(PART.pattern)).toBe(true);
    }
  });

  test("centred, longest side REFERENCE_EXTENT of the image", () => {
    const s = subjectFromSeed(11);
    const size = 128;
    const r = renderReference(s, size);
    let x0 = size, x1 = -1, y0 = size, y1 = -1;
    r.mask.forEach((m, p) => {
      if (!m) return;
      x0 = Math.min(x0, p % size);
      x1 = Math.max(x1, p % size);
      y0 = Math.min(y0, Math.floor(p / size));
      y1 = Math.max(y1, Math.floor(p / size));
    });
    expect(Math.abs((x0 + x1) / 2 - size / 2)).toBeLessThan(3);
    expect(Math.abs((y0 + y1) / 2 - size / 2)).toBeLessThan(3);
    expect(Math.abs(Math.max(x1 - x0 + 1, y1 - y0 + 1) - REFERENCE_EXTENT * size)).toBeLessThan(3);
    expect(r.placement).toEqual(referencePlacement(s));
  });

  test("a one-detail subject shows the detail's colour", () => {
    const s = subjectFromSeed(0);
    const r = renderReference(s, 128);
    const d = s.details[0]!;
    const c = COLORS[d.color];
    let hits = 0;
    r.parts.forEach((l, p) => {
      if (l !== detailPart(0)) return;
      const dd = r.image.data;
      if (dd[3 * p] === (c >>> 16) % 256 && dd[3 * p + 1] === (c >>> 8) % 256 && dd[3 * p + 2] === c % 256) hits++;
    });
    expect(hits).toBeGreaterThan(0);
  });

  test("bad sizes are refused", () => {
    expect(() => renderReference(subjectFromSeed(0), 0)).toThrow(/image size/);
    expect(() => renderReference(subjectFromSeed(0), 64.5)).toThrow(/image size/);
  });
});

describe("renderScene", () => {
  test("same seed, same bytes; another seed, another picture", () => {
    const s = subjectFromSeed(4);
    const a = renderScene(s, "beach", 64, new Rng(9));
    const b = renderScene(s, "on the beach", 64, new Rng(9));
    expect(same(a.image, b.image)).toBe(true);
    expect(Buffer.from(a.parts).equals(Buffer.from(b.parts))).toBe(true);
    expect(same(a.image, renderScene(s, "beach", 64, new Rng(10)).image)).toBe(false);
  });

  test("differs from the reference; the subject is smaller (0.5-0.9) and inside the image", () => {
    for (let seed = 0; seed < 40; seed++) {
      const s = subjectFromSeed(seed);
      const scene = SCENES[seed % SCENES.length]!;
      const ref = renderReference(s, 64);
      const r = renderScene(s, scene, 64, new Rng(100 + seed));
      expect(r.scene).toBe(scene);
      const changed = count(changedPixels(ref.image, r.image)) / (64 * 64);
      expect(changed).toBeGreaterThan(0.5);
      const k = r.placement.scale / ref.placement.scale;
      expect(k).toBeGreaterThanOrEqual(0.5);
      expect(k).toBeLessThanOrEqual(0.9);
      const cov = count(r.mask), refCov = count(ref.mask);
      expect(cov).toBeLessThan(refCov * 0.9);
      expect(cov).toBeGreaterThan(refCov * 0.15);
      checkPartsAgainstMask(r);
      // The subject stands below the horizon, fully in the picture.
      let bottom = 0;
      r.mask.forEach((m, p) => m && (bottom = Math.max(bottom, Math.floor(p / 64))));
      expect(bottom / 64).toBeGreaterThan(scene.horizon);
    }
  });

  test("mirrors some subjects", () => {
    const mirrored = Array.from({ length: 20 }, (_, k) => renderScene(subjectFromSeed(k), "snow", 32, new Rng(k)).placement.mirrored);
    expect(mirrored.some((m) => m)).toBe(true);
    expect(mirrored.some((m) => !m)).toBe(true);
  });
});

describe("renderCorrupted", () => {
  const noReflection = SCENES.filter((s) => s.reflection === 0);

  test("the clean half is exactly renderScene from the same rng state", () => {
    const s = subjectFromSeed(6);
    const c = renderCorrupted(s, "city", 64, new Rng(3), "detail-missing");
    expect(same(c.clean.image, renderScene(s, "city", 64, new Rng(3)).image)).toBe(true);
    expect(c.placement).toEqual(c.clean.placement);
    const again = renderCorrupted(s, "city", 64, new Rng(3), "detail-missing");
    expect(same(c.image, again.image)).toBe(true);
  });

  for (const kind of CORRUPTION_KINDS) {
    test(`${kind}: non-empty mask, pixels change there and only there`, () => {
      for (let seed = 0; seed < 24; seed++) {
        const s = subjectFromSeed(seed);
        const scene = noReflection[(seed * 7) % noReflection.length]!;
        const size = seed % 3 === 0 ? 128 : 64;
        const c = renderCorrupted(s, scene, size, new Rng(500 + seed), kind);
        expect(c.corruption.kind === kind || (kind === "detail-moved" && c.corruption.kind === "detail-recolored")).toBe(true);
        const m = count(c.corruptionMask);
        expect(m).toBeGreaterThan(0);
        const changed = changedPixels(c.clean.image, c.image);
        let inside = 0, outside = 0;
        changed.forEach((ch, p) => ch && (c.corruptionMask[p] ? inside++ : outside++));
        expect(outside).toBe(0);
        // Recoloured eyes change only the iris; a swapped pattern can agree with the old one in places.
        expect(inside / m).toBeGreaterThan(kind === "noise-blob" ? 0.9 : 0.2);
        // The error sits on the subject (a noise blob may spill over its edge a little).
        let onSubject = 0;
        const near = dilate(dilate(c.clean.mask, size), size);
        c.corruptionMask.forEach((v, p) => v && near[p] && onSubject++);
        if (kind !== "noise-blob") expect(onSubject).toBe(m);
      }
    });
  }

  test("detail-recolored paints the detail in another colour; detail-missing removes its label", () => {
    const s = subjectFromSeed(8);
    const rec = renderCorrupted(s, "wooden-floor", 64, new Rng(1), "detail-recolored");
    const i = rec.corruption.detail!;
    expect(rec.corruption.color).toBeDefined();
    expect(rec.corruption.color).not.toBe(s.details[i]!.color);
    const miss = renderCorrupted(s, "wooden-floor", 64, new Rng(1), "detail-missing");
    expect(miss.clean.parts.includes(detailPart(miss.corruption.detail!))).toBe(true);
    expect(miss.parts.includes(detailPart(miss.corruption.detail!))).toBe(false);
  });

  test("reflections show the error only below the subject", () => {
    for (const scene of SCENES.filter((x) => x.reflection > 0)) {
      const c = renderCorrupted(subjectFromSeed(2), scene, 64, new Rng(4), "detail-recolored");
      let bottom = 0;
      c.clean.mask.forEach((m, p) => m && (bottom = Math.max(bottom, Math.floor(p / 64))));
      changedPixels(c.clean.image, c.image).forEach((ch, p) => {
        if (ch && !c.corruptionMask[p]) expect(Math.floor(p / 64)).toBeGreaterThanOrEqual(bottom - 1);
      });
    }
  });

  test("random kinds and corrupted references (scene null)", () => {
    const kinds = new Set<string>();
    for (let seed = 0; seed < 30; seed++) {
      const c = renderCorrupted(subjectFromSeed(seed), null, 64, new Rng(seed), "random");
      kinds.add(c.corruption.kind);
      expect(c.scene).toBeNull();
      expect(same(c.clean.image, renderReference(subjectFromSeed(seed), 64).image)).toBe(true);
      expect(count(c.corruptionMask)).toBeGreaterThan(0);
    }
    expect(kinds.size).toBeGreaterThanOrEqual(4);
    expect(() => renderCorrupted(subjectFromSeed(0), "beach", 64, new Rng(0), "smudge" as never)).toThrow(/unknown corruption "smudge"/);
  });
});

describe("sample grid", () => {
  let dir = "";
  afterAll(async () => {
    // Kept for a person to look at when TINYWORLD_GRID is set; removed otherwise.
    if (dir && !process.env.TINYWORLD_GRID) await rm(dir, { recursive: true, force: true });
  });

  test("reference, scene, corrupted, corruption mask for a few subjects", async () => {
    dir = await mkdtemp(join(tmpdir(), "patchdpo-tinyworld-"));
    const tiles: RgbImage[] = [];
    for (let seed = 0; seed < 8; seed++) {
      const s = subjectFromSeed(seed);
      const scene = SCENES[(seed * 3) % SCENES.length]!;
      const c = renderCorrupted(s, scene, 96, new Rng(seed), CORRUPTION_KINDS[seed % CORRUPTION_KINDS.length]!);
      tiles.push(renderReference(s, 96).image, c.clean.image, c.image, overlayMask(c.image, c.corruptionMask));
    }
    const grid = tileImages(tiles, 8);
    const path = join(dir, "tinyworld-grid.png");
    await writePng(path, grid);
    const meta = await sharp(path).metadata();
    expect(meta.width).toBe(grid.width);
    expect(meta.height).toBe(grid.height);
    if (process.env.TINYWORLD_GRID) console.log(`tiny-world sample grid: ${path}`);
  });
});
