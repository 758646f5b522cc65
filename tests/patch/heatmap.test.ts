// lib/patch/heatmap.ts: colour map, triptych layout, where the 'low' colour lands, PNG writing.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RgbImage, loadImage } from "../../lib/io/images.ts";
import { colormap, drawText, heatmapTriptych, textWidth, writeHeatmapPng } from "../../lib/patch/heatmap.ts";

function solid(w: number, h: number, rgb: [number, number, number]): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) data.set(rgb, i * 3);
  return { width: w, height: h, data };
}

const px = (img: RgbImage, x: number, y: number) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];

describe("colormap", () => {
  test("low is alarming red, high is blue, middle pale yellow", () => {
    expect(colormap(0)).toEqual([165, 0, 38]);
    expect(colormap(0.5)).toEqual([255, 255, 191]);
    expect(colormap(1)).toEqual([49, 54, 149]);
    expect(colormap(-3)).toEqual(colormap(0));
    expect(colormap(7)).toEqual(colormap(1));
    expect(colormap(NaN)).toEqual([128, 128, 128]);
    // Interpolated between stops: 0.05 is halfway between the first two.
    expect(colormap(0.05)).toEqual([190, 24, 39]);
  });

  test("red falls and blue rises monotonically along the map", () => {
    let prev = colormap(0);
    for (let i = 1; i <= 100; i++) {
      const c = colormap(i / 100);
      expect(c[0]).toBeLessThanOrEqual(prev[0] + (i <= 50 ? 90 : 0)); // red rises only into the yellow
      if (i > 50) expect(c[2]).toBeGreaterThanOrEqual(prev[2] - 100);
      prev = c;
    }
    expect(colormap(0.1)[0] - colormap(0.1)[2]).toBeGreaterThan(100);
    expect(colormap(0.9)[2] - colormap(0.9)[0]).toBeGreaterThan(80);
  });
});

describe("heatmapTriptych", () => {
  test("dimensions: three panels of the same height plus header and legend", () => {
    const ref = solid(100, 50, [255, 255, 255]); // 2:1 -> 256x128
    const gen = solid(64, 64, [10, 20, 30]); // 1:1 -> 128x128
    const q = new Float32Array(49).fill(0.7);
    const img = heatmapTriptych(ref, gen, q, 7, 7, { height: 128 });
    expect(img.width).toBe(8 + 256 + 8 + 128 + 8 + 128 + 8);
    expect(img.height).toBe(8 + 14 + 6 + 128 + 8 + 10 + 4 + 14 + 8);
    expect(img.data.length).toBe(img.width * img.height * 3);
    const bare = heatmapTriptych(ref, gen, q, 7, 7, { height: 128, labels: false });
    expect(bare.height).toBe(8 + 128 + 8 + 10 + 8);
    expect(() => heatmapTriptych(ref, gen, new Float32Array(3), 7, 7)).toThrow(/3 quality values for a 7x7 grid/);
  });

  test("a low-quality patch is drawn in the low colour at its place", () => {
    const grey: [number, number, number] = [128, 128, 128];
    const ref = solid(64, 64, [255, 255, 255]);
    const gen = solid(64, 64, grey);
    const q = new Float32Array(16).fill(1);
    q[1 * 4 + 2] = 0; // row 1, column 2 of a 4x4 grid
    const img = heatmapTriptych(ref, gen, q, 4, 4, { height: 256 });
    const panelX = 8 + 256 + 8 + 256 + 8;
    const panelY = 8 + 14 + 6;
    const blend = (c: number[]) => c.map((v, k) => 0.5 * grey[k]! + 0.5 * v);
    const low = px(img, panelX + 2 * 64 + 32, panelY + 64 + 32);
    const high = px(img, panelX + 0 * 64 + 32, panelY + 3 * 64 + 32);
    // Pixel 32 of a 64-px patch sits half a pixel off the patch centre, where the bilinear map
    // has moved 1.6% towards the neighbour: a few grey levels.
    blend(colormap(0)).forEach((v, k) => expect(Math.abs(low[k]! - v)).toBeLessThanOrEqual(6));
    blend(colormap(1)).forEach((v, k) => expect(Math.abs(high[k]! - v)).toBeLessThanOrEqual(6));
    expect(low[0]! - low[1]!).toBeGreaterThan(60); // reads red
    expect(high[2]! - high[0]!).toBeGreaterThan(40); // reads blue
    // The generated panel itself is untouched, the reference panel is the reference.
    expect(px(img, 8 + 256 + 8 + 160, panelY + 96)).toEqual(grey);
    expect(px(img, 8 + 100, panelY + 100)).toEqual([255, 255, 255]);
    // The colour bar under the overlay panel runs from the low to the high colour.
    const barY = panelY + 256 + 8 + 5;
    expect(px(img, panelX, barY)).toEqual(colormap(0));
    expect(px(img, panelX + 255, barY)).toEqual(colormap(1));
  });

  test("legend text is drawn", () => {
    const img = solid(40, 12, [255, 255, 255]);
    drawText(img, "low", 1, 1, [0, 0, 0], 1);
    let dark = 0;
    for (let i = 0; i < img.data.length; i += 3) if (img.data[i] === 0) dark++;
    expect(dark).toBeGreaterThan(15);
    expect(textWidth("high", 2)).toBe(46);
  });
});

describe("writeHeatmapPng", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "patchdpo-heatmap-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("writes the triptych as a PNG, atomically", async () => {
    const ref = solid(32, 32, [250, 250, 250]);
    const gen = solid(48, 32, [90, 140, 60]);
    const q = Float32Array.from([0, 0.25, 0.5, 0.75, 1, 0.6]);
    const path = join(dir, "sub", "a-0.png");
    await writeHeatmapPng(path, ref, gen, q, 2, 3, { height: 64, caption: "a-0 low 0.33" });
    const back = await loadImage(path);
    const direct = heatmapTriptych(ref, gen, q, 2, 3, { height: 64, caption: "a-0 low 0.33" });
    expect(back.width).toBe(direct.width);
    expect(back.height).toBe(direct.height);
    expect(Buffer.from(back.data).equals(Buffer.from(direct.data))).toBe(true);
    expect(await readdir(join(dir, "sub"))).toEqual(["a-0.png"]);
  });
});
