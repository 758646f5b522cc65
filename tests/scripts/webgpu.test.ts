// The steps on the WebGPU provider against the CPU, on the tiny world (the demo's chain, short):
//   a. generate-images --mode personalized with the committed tiny generator (checkpoints/tiny:
//      text encoder, MobileNetV2 image encoder + IP-Adapter-Plus resampler, UNet, pixel VAE),
//      3 DDIM steps: the same images;
//   b. score-patches (MobileNetV2 at block_13_expand_relu, latent grid 16) on renderer pairs with
//      planted defects: the same quality maps;
//   c. eval (feature score, MobileNetV2): the same scores.
// Each step runs into its own copy of the run directory, once per device.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Device } from "../../lib/graph/index.ts";
import { loadImage } from "../../lib/io/images.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { GenerationRow, PatchScoreRow } from "../../lib/io/schemas.ts";
import { EvalScoreRow } from "../../lib/eval/metrics.ts";
import { RAW_ENCODER } from "../../lib/models/featurizer.ts";
import { DEFAULTS as EVAL_DEFAULTS, run as evaluate } from "../../scripts/eval.ts";
import { DEFAULTS as GEN_DEFAULTS, run as generate } from "../../scripts/generate-images.ts";
import { DEFAULTS as SCORE_DEFAULTS, run as score } from "../../scripts/score-patches.ts";
import { type Diff, NO_WEBGPU, expectClose, fmtDiff, noteWebgpuSkip, timed, worst } from "../graph/webgpu-helpers.ts";
import { copyRun, tinyWorldPairs } from "./helpers/tiny-run.ts";

setDefaultTimeout(300_000);
noteWebgpuSkip("tests/scripts/webgpu.test.ts");

const MODEL = resolve(import.meta.dir, "../../checkpoints/tiny");
const TINY = 64;
let root: string;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-webgpu-steps-"));
  if (NO_WEBGPU) return;
  await tinyWorldPairs(join(root, "base"), TINY);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A copy of the base run for one device's step. */
const copy = (name: string) => {
  const d = join(root, name);
  copyRun(join(root, "base"), d);
  return d;
};

describe.skipIf(NO_WEBGPU !== null)("the tiny world's steps on webgpu", () => {
  test("generate-images: tiny SD + IP-Adapter-Plus, 3 DDIM steps, webgpu vs cpu images", async () => {
    const runs: Record<string, string> = {};
    const seconds: Record<string, number> = {};
    for (const device of ["cpu", "webgpu"] as Device[]) {
      // A fresh run with only the references: the personalized images come from the model.
      const run = join(root, `sample-${device}`);
      cpSync(join(root, "base"), run, { recursive: true });
      rmSync(join(run, "generations.jsonl"), { force: true });
      rmSync(join(run, "generated"), { recursive: true, force: true });
      [, seconds[device]] = await timed(() =>
        generate({
          ...GEN_DEFAULTS, run, mode: "personalized", model: MODEL, ipAdapter: join(MODEL, "ip-adapter.safetensors"), imageEncoder: "mobilenet_v2",
          width: TINY, height: TINY, steps: 3, guidance: 1.5, ipScale: 1, perReference: 1, batch: 2, seed: 0, device, threads: 1,
        }),
      );
      runs[device] = run;
    }
    const rows = await readJsonlAll(join(runs.cpu!, "generations.jsonl"), GenerationRow);
    expect(rows.length).toBe(2);
    let maxLevels = 0, sum = 0, n = 0;
    for (const r of rows) {
      const a = await loadImage(join(runs.cpu!, r.image));
      const b = await loadImage(join(runs.webgpu!, r.image));
      expect([b.width, b.height]).toEqual([a.width, a.height]);
      for (let i = 0; i < a.data.length; i++) {
        const d = Math.abs(a.data[i]! - b.data[i]!);
        maxLevels = Math.max(maxLevels, d);
        sum += d;
        n++;
      }
    }
    // 8-bit pixels: float32 differences of ~1e-6 flip a rounding now and then.
    console.log(`webgpu vs cpu: generate-images (3 DDIM steps, 2 images ${TINY} px): max |diff| ${maxLevels} of 255, mean ${(sum / n).toFixed(4)}; cpu ${seconds.cpu!.toFixed(1)} s, webgpu ${seconds.webgpu!.toFixed(1)} s`);
    expect(maxLevels).toBeLessThanOrEqual(2);
    expect(sum / n).toBeLessThan(0.05);
  });

  test("score-patches: MobileNetV2 quality maps and means, webgpu vs cpu", async () => {
    const runs: Record<string, string> = {};
    const seconds: Record<string, number> = {};
    for (const device of ["cpu", "webgpu"] as Device[]) {
      runs[device] = copy(`score-${device}`);
      [, seconds[device]] = await timed(() => score({ ...SCORE_DEFAULTS, run: runs[device]!, encoder: RAW_ENCODER, featureLayer: "block_13_expand_relu", latentGrid: TINY / 4, batch: 2, device, threads: 1 }));
    }
    const rows = await readJsonlAll(join(runs.cpu!, "patch-scores.jsonl"), PatchScoreRow);
    const other = new Map((await readJsonlAll(join(runs.webgpu!, "patch-scores.jsonl"), PatchScoreRow)).map((r) => [r.id, r]));
    expect(rows.length).toBe(2);
    const diffs: Diff[] = [];
    const TOL = 1e-4;
    for (const r of rows) {
      const o = other.get(r.id)!;
      diffs.push(expectClose(`${r.id} means`, [o.qGenMean, o.qRefMean, o.lowShare], [r.qGenMean, r.qRefMean, r.lowShare], TOL, 1));
      const a = openSafetensors(join(runs.cpu!, r.scores));
      const b = openSafetensors(join(runs.webgpu!, o.scores));
      expect(b.names().sort()).toEqual(a.names().sort());
      for (const k of a.names()) diffs.push(expectClose(`${r.id} ${k}`, b.float32(k), a.float32(k), TOL, 1));
    }
    console.log(`webgpu vs cpu: score-patches (2 pairs): ${fmtDiff(worst(diffs))} (tolerance ${TOL} of the [0, 1] maps); cpu ${seconds.cpu!.toFixed(1)} s, webgpu ${seconds.webgpu!.toFixed(1)} s`);
  });

  test("eval: feature scores against the references, webgpu vs cpu", async () => {
    const runs: Record<string, string> = {};
    const seconds: Record<string, number> = {};
    for (const device of ["cpu", "webgpu"] as Device[]) {
      runs[device] = copy(`eval-${device}`);
      [, seconds[device]] = await timed(() => evaluate({ ...EVAL_DEFAULTS, run: runs[device]!, encoderFeature: RAW_ENCODER, batch: 2, device, threads: 1 }));
    }
    const rows = await readJsonlAll(join(runs.cpu!, "eval", "scores.jsonl"), EvalScoreRow);
    const other = new Map((await readJsonlAll(join(runs.webgpu!, "eval", "scores.jsonl"), EvalScoreRow)).map((r) => [r.id, r]));
    expect(rows.length).toBe(2);
    const TOL = 1e-5;
    const d = worst(rows.map((r) => expectClose(`${r.id} feature`, [other.get(r.id)!.feature!], [r.feature!], TOL, 1)));
    console.log(`webgpu vs cpu: eval feature score (2 images): ${fmtDiff(d)} (tolerance ${TOL}; cosines); cpu ${seconds.cpu!.toFixed(1)} s, webgpu ${seconds.webgpu!.toFixed(1)} s`);
  });
});
