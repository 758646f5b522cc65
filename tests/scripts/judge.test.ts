// scripts/judge.ts: the oracle judge over a tiny-world run. On the renderer's own truth it must call
// nearly everything right, far above its measured chance; planted defects must cost detail
// accuracy; the patch AUC must rank truly wrong patches; rocAuc must be the Mann-Whitney statistic.

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULTS as GEN, run as generate } from "../../scripts/generate-images.ts";
import { rocAuc, run as judge } from "../../scripts/judge.ts";
import { DEFAULTS as SCORE, run as score } from "../../scripts/score-patches.ts";
import { DEFAULTS as PROMPTS, run as synthesize } from "../../scripts/synthesize-prompts.ts";

setDefaultTimeout(120_000);

async function truthRun(defectRate: number, pairPrompt: "reference" | "scene", seed = 1): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "patchdpo-judge-"));
  await synthesize({ ...PROMPTS, run: dir, subjects: 8, scenesPerSubject: 2, world: "tiny", seed, log: () => {} });
  const base = { ...GEN, run: dir, model: "tinyworld", threads: 1, seed };
  await generate({ ...base, mode: "reference", width: 224, height: 224 });
  await generate({ ...base, mode: "personalized", width: 64, height: 64, perReference: 2, pairPrompt, defectRate });
  return dir;
}

describe("rocAuc", () => {
  test("perfect, reversed, tied and mixed rankings", () => {
    expect(rocAuc([0.1, 0.2, 0.8, 0.9], [false, false, true, true])).toBe(1);
    expect(rocAuc([0.9, 0.8, 0.2, 0.1], [false, false, true, true])).toBe(0);
    expect(rocAuc([0.5, 0.5, 0.5, 0.5], [false, true, false, true])).toBe(0.5);
    expect(rocAuc([0.1, 0.4, 0.35, 0.8], [false, false, true, true])).toBe(0.75);
    expect(rocAuc([1, 2], [true, true])).toBeNaN();
  });
});

describe("judge on the renderer's truth", () => {
  test("clean renders: nearly all right, far above chance, on white and in scenes", async () => {
    for (const pairPrompt of ["reference", "scene"] as const) {
      const s = await judge({ run: await truthRun(0, pairPrompt) });
      expect(s.images).toBe(16);
      for (const k of ["identity", "pattern", "detail", "scene", "allDetails"]) {
        expect(s.accuracy[k]!).toBeGreaterThanOrEqual(0.95);
        expect(s.chance[k]! < 0.6 || k === "pattern").toBe(true);
      }
      expect(s.chance.identity!).toBeLessThan(0.1);
    }
  });

  test("planted defects cost accuracy; the patch scorer's AUC finds the wrong patches above chance", async () => {
    const dir = await truthRun(1, "reference", 2);
    await score({ ...SCORE, run: dir, featureLayer: "block_13_expand_relu", latentGrid: 16, threads: 1 });
    const s = await judge({ run: dir });
    expect(s.accuracy.identity!).toBeGreaterThanOrEqual(0.8); // a defect is local: the subject stays itself
    expect(s.accuracy.allDetails!).toBeLessThan(0.5);
    expect(s.patchAuc!.wrong).toBeGreaterThan(0);
    expect(s.patchAuc!.auc).toBeGreaterThan(0.6);
  });
});
