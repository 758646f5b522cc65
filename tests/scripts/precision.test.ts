// --precision on the scripts, on the tiny world (tests/graph/precision.test.ts checks the graphs):
//   a. generate-images --precision fp16 with the committed tiny generator, 3 DDIM steps, on webgpu
//      and on cpu, against fp32 on cpu: 8-bit images;
//   b. score-patches --precision fp16 (MobileNetV2 quality maps);
//   c. eval --precision fp16 (feature score);
//   d. --precision bf16 on cpu is refused before anything is written; the flag is recorded in run.json;
//   e. dpo-epoch --precision fp16 (patch-dpo, tiny random-weight SD + IP-Adapter; on webgpu with the
//      state on the device, AdamW in the graph) and finetune-encoder --precision fp16, 2 steps each:
//      losses and trained weights against fp32 on cpu.
// Tolerances are stated per test; the measured values are printed (and in the README's Precision paragraph).

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Device, Precision } from "../../lib/graph/index.ts";
import { currentPrecision } from "../../lib/graph/index.ts";
import { loadImage } from "../../lib/io/images.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { GenerationRow, PatchScoreRow } from "../../lib/io/schemas.ts";
import { EvalScoreRow } from "../../lib/eval/metrics.ts";
import { RAW_ENCODER } from "../../lib/models/featurizer.ts";
import { DEFAULTS as EVAL_DEFAULTS, run as evaluate } from "../../scripts/eval.ts";
import { DEFAULTS as GEN_DEFAULTS, run as generate } from "../../scripts/generate-images.ts";
import { DEFAULTS as SCORE_DEFAULTS, run as score } from "../../scripts/score-patches.ts";
import { DEFAULTS as DPO_DEFAULTS, epochFile, run as dpoEpoch } from "../../scripts/dpo-epoch.ts";
import { run as finetune } from "../../scripts/finetune-encoder.ts";
import { TrainLogRow } from "../../lib/io/schemas.ts";
import { runPaths } from "../../lib/io/rundir.ts";
import { SIZE, copyRun, tinyModel, tinyRun, tinyWorldPairs } from "./helpers/tiny-run.ts";
import { type Diff, NO_WEBGPU, expectClose, fmtDiff, noteWebgpuSkip, worst } from "../graph/webgpu-helpers.ts";

setDefaultTimeout(300_000);
noteWebgpuSkip("tests/scripts/precision.test.ts");

const MODEL = resolve(import.meta.dir, "../../checkpoints/tiny");
const TINY = 64;
let root: string;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-precision-steps-"));
  await tinyWorldPairs(join(root, "base"), TINY);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const copy = (name: string) => {
  const d = join(root, name);
  copyRun(join(root, "base"), d);
  return d;
};

interface Run { precision: Precision; device: Device }
const RUNS: Run[] = [{ precision: "fp32", device: "cpu" }, { precision: "fp16", device: "cpu" }, ...(NO_WEBGPU === null ? [{ precision: "fp16", device: "webgpu" } as Run] : [])];
const tag = (r: Run) => `${r.precision}-${r.device}`;

describe("--precision on the scripts", () => {
  test("generate-images: tiny SD + IP-Adapter-Plus, 3 DDIM steps, fp16 vs fp32 on cpu (tolerance: max 8 of 255 levels, mean 1.0; measured webgpu 3 / 0.34, cpu 1 / 0.05)", async () => {
    const runs: Record<string, string> = {};
    for (const r of RUNS) {
      const run = copy(`sample-${tag(r)}`);
      rmSync(join(run, "generations.jsonl"), { force: true });
      rmSync(join(run, "generated"), { recursive: true, force: true });
      await generate({
        ...GEN_DEFAULTS, run, mode: "personalized", model: MODEL, ipAdapter: join(MODEL, "ip-adapter.safetensors"), imageEncoder: "mobilenet_v2",
        width: TINY, height: TINY, steps: 3, guidance: 1.5, ipScale: 1, perReference: 1, batch: 2, seed: 0, device: r.device, precision: r.precision, threads: 1,
      });
      runs[tag(r)] = run;
      expect(currentPrecision()).toBe("fp32"); // restored after the step
      const logged = JSON.parse(readFileSync(join(run, "run.json"), "utf8")) as { steps: { options: { precision?: string } }[] };
      expect(logged.steps.at(-1)!.options.precision).toBe(r.precision);
    }
    const ref = await readJsonlAll(join(runs["fp32-cpu"]!, "generations.jsonl"), GenerationRow);
    expect(ref.length).toBe(2);
    for (const r of RUNS.slice(1)) {
      let maxLevels = 0, sum = 0, n = 0;
      for (const row of ref) {
        const a = await loadImage(join(runs["fp32-cpu"]!, row.image));
        const b = await loadImage(join(runs[tag(r)]!, row.image));
        for (let i = 0; i < a.data.length; i++) {
          const d = Math.abs(a.data[i]! - b.data[i]!);
          maxLevels = Math.max(maxLevels, d);
          sum += d;
          n++;
        }
      }
      console.log(`${r.precision} on ${r.device} vs fp32 on cpu: generate-images (3 DDIM steps, 2 images ${TINY} px): max |diff| ${maxLevels} of 255, mean ${(sum / n).toFixed(3)}`);
      expect(maxLevels).toBeLessThanOrEqual(8);
      expect(sum / n).toBeLessThan(1);
    }
  });

  test("score-patches: MobileNetV2 quality maps, fp16 vs fp32 on cpu (tolerance 2e-2 of the [0, 1] maps; measured webgpu 4.7e-3, cpu 2.2e-3)", async () => {
    const runs: Record<string, string> = {};
    for (const r of RUNS) {
      runs[tag(r)] = copy(`score-${tag(r)}`);
      await score({ ...SCORE_DEFAULTS, run: runs[tag(r)]!, encoder: RAW_ENCODER, featureLayer: "block_13_expand_relu", latentGrid: TINY / 4, batch: 2, device: r.device, precision: r.precision, threads: 1 });
    }
    const rows = await readJsonlAll(join(runs["fp32-cpu"]!, "patch-scores.jsonl"), PatchScoreRow);
    expect(rows.length).toBe(2);
    const TOL = 2e-2;
    for (const r of RUNS.slice(1)) {
      const other = new Map((await readJsonlAll(join(runs[tag(r)]!, "patch-scores.jsonl"), PatchScoreRow)).map((x) => [x.id, x]));
      const diffs: Diff[] = [];
      for (const row of rows) {
        const o = other.get(row.id)!;
        diffs.push(expectClose(`${row.id} means`, [o.qGenMean, o.qRefMean], [row.qGenMean, row.qRefMean], TOL, 1));
        const a = openSafetensors(join(runs["fp32-cpu"]!, row.scores));
        const b = openSafetensors(join(runs[tag(r)]!, o.scores));
        for (const k of a.names()) diffs.push(expectClose(`${row.id} ${k}`, b.float32(k), a.float32(k), TOL, 1));
      }
      console.log(`${r.precision} on ${r.device} vs fp32 on cpu: score-patches (2 pairs): ${fmtDiff(worst(diffs))} (tolerance ${TOL})`);
    }
  });

  test("eval: feature score, fp16 vs fp32 on cpu (tolerance 1e-2; cosines; measured webgpu 4.8e-4, cpu 1.4e-3)", async () => {
    const runs: Record<string, string> = {};
    for (const r of RUNS) {
      runs[tag(r)] = copy(`eval-${tag(r)}`);
      await evaluate({ ...EVAL_DEFAULTS, run: runs[tag(r)]!, encoderFeature: RAW_ENCODER, batch: 2, device: r.device, precision: r.precision, threads: 1 });
    }
    const rows = await readJsonlAll(join(runs["fp32-cpu"]!, "eval", "scores.jsonl"), EvalScoreRow);
    expect(rows.length).toBe(2);
    for (const r of RUNS.slice(1)) {
      const other = new Map((await readJsonlAll(join(runs[tag(r)]!, "eval", "scores.jsonl"), EvalScoreRow)).map((x) => [x.id, x]));
      const d = worst(rows.map((row) => expectClose(`${row.id} feature`, [other.get(row.id)!.feature!], [row.feature!], 1e-2, 1)));
      console.log(`${r.precision} on ${r.device} vs fp32 on cpu: eval feature score (2 images): ${fmtDiff(d)} (tolerance 1e-2)`);
    }
  });

  test("--precision bf16 on cpu: refused with what to use, before anything is written", async () => {
    const run = copy("bf16");
    rmSync(join(run, "generations.jsonl"), { force: true });
    rmSync(join(run, "run.json"), { force: true });
    await expect(
      generate({ ...GEN_DEFAULTS, run, mode: "personalized", model: MODEL, ipAdapter: join(MODEL, "ip-adapter.safetensors"), imageEncoder: "mobilenet_v2", width: TINY, height: TINY, steps: 1, device: "cpu", precision: "bf16", threads: 1 }),
    ).rejects.toThrow(/--precision bf16 is not supported on cpu.*use fp16 or fp32/);
    expect(existsSync(join(run, "generations.jsonl"))).toBe(false);
    expect(existsSync(join(run, "run.json"))).toBe(false);
    await expect(score({ ...SCORE_DEFAULTS, run, precision: "bf16" })).rejects.toThrow(/not supported on cpu/);
    await expect(score({ ...SCORE_DEFAULTS, run, precision: "fp8" as never })).rejects.toThrow(/--precision must be/);
  });

  // Step 1 starts at theta = the frozen reference, so patch-dpo's margins are 0 in exact arithmetic:
  // its loss checks that the trained pass and the reference twin round alike (without compile()'s
  // "basic" optimization level for half-precision training graphs, fp16 on webgpu was 23% off
  // here, beta 5000 multiplying a 1e-4 difference of two MSEs). After one AdamW update (about
  // +-lr per weight: Adam's first step is lr * sign(g), and fp16 flips the sign of gradient entries
  // near 0) the margins are beta/2 times differences of the updates, so step 2's loss gets a
  // tolerance only for scale, and the trained weights one of 2 lr per step.
  test("dpo-epoch patch-dpo, 2 steps: step 1 loss (tolerance 1e-3 of scale; measured webgpu 1.9e-4, cpu 1.1e-5), MSEs (1e-3), step 2 loss (3e-1; measured 1.8e-1 / 6.6e-2), trained weights within 6 lr (measured 3.9 lr / 2.6 lr)", async () => {
    const base = await tinyRun(join(root, "dpo-base"), { subjects: 2, perReference: 1 });
    const model = await tinyModel(root);
    const LR = 1e-3;
    const trained: Record<string, { loss: number[]; mse: number[]; weights: Map<string, Float32Array> }> = {};
    for (const r of RUNS) {
      const dir = join(root, `dpo-${tag(r)}`);
      cpSync(base, dir, { recursive: true });
      await dpoEpoch({ ...DPO_DEFAULTS, run: dir, model: model.model, ipAdapter: model.ip, imageEncoder: "mobilenet_v2", objective: "patch-dpo", size: SIZE, batch: 1, maxSteps: 2, lr: LR, threads: 1, saveEvery: 0, device: r.device, precision: r.precision });
      const rows = await readJsonlAll(runPaths(dir).trainLog, TrainLogRow);
      const f = openSafetensors(epochFile(runPaths(dir), 1));
      trained[tag(r)] = { loss: rows.map((x) => x.loss), mse: rows.map((x) => x.mse as number), weights: new Map(f.names().map((n) => [n, f.float32(n)])) };
    }
    const ref = trained["fp32-cpu"]!;
    expect(ref.loss.length).toBe(2);
    for (const r of RUNS.slice(1)) {
      const t = trained[tag(r)]!;
      const first = expectClose(`${tag(r)} step 1 loss`, [t.loss[0]!], [ref.loss[0]!], 1e-3);
      const mse = expectClose(`${tag(r)} MSEs`, t.mse, ref.mse, 1e-3);
      const second = expectClose(`${tag(r)} step 2 loss`, [t.loss[1]!], [ref.loss[1]!], 3e-1);
      let w = 0;
      for (const [n, v] of ref.weights) {
        const o = t.weights.get(n)!;
        for (let i = 0; i < v.length; i++) w = Math.max(w, Math.abs(o[i]! - v[i]!));
      }
      console.log(`${r.precision} on ${r.device} vs fp32 on cpu: dpo-epoch patch-dpo 2 steps: step 1 loss ${fmtDiff(first)}; MSEs ${fmtDiff(mse)}; step 2 loss ${fmtDiff(second)}; trained weights max |diff| ${w.toExponential(2)} (lr ${LR})`);
      expect(w).toBeLessThanOrEqual(6 * LR);
    }
  });

  test("finetune-encoder (MobileNetV2, 2 steps): fp16 losses (tolerance 5e-2 of scale; measured webgpu 9.0e-4, cpu 3.9e-4) and trained weights (1e-2; measured 7.0e-3 / 4.7e-3) vs fp32 on cpu", async () => {
    const images = join(root, "base", "references");
    const trained: Record<string, { loss: number[]; weights: Map<string, Float32Array> }> = {};
    for (const r of RUNS) {
      const out = join(root, `ft-${tag(r)}`);
      await finetune({ images, out, featureLayer: "block_13_expand_relu", imageSize: 64, trainBlocks: 1, steps: 2, batch: 2, holdout: 0, lr: 1e-3, warmup: 0, threads: 1, saveEvery: 0, device: r.device, precision: r.precision });
      const f = openSafetensors(join(out, "weights.safetensors"));
      trained[tag(r)] = { loss: (await readJsonlAll(join(out, "train-log.jsonl"), TrainLogRow)).map((x) => x.loss), weights: new Map(f.names().map((n) => [n, f.float32(n)])) };
    }
    const ref = trained["fp32-cpu"]!;
    expect(ref.loss.length).toBe(2);
    for (const r of RUNS.slice(1)) {
      const t = trained[tag(r)]!;
      const l = expectClose(`${tag(r)} loss`, t.loss, ref.loss, 5e-2);
      const w = worst([...ref.weights].map(([n, v]) => expectClose(`${tag(r)} ${n}`, t.weights.get(n)!, v, 1e-2)));
      console.log(`${r.precision} on ${r.device} vs fp32 on cpu: finetune-encoder 2 steps: losses ${fmtDiff(l)}; trained weights ${fmtDiff(w)}`);
    }
  });
});
