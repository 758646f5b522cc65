// Data-parallel training (issue 15): `mpirun -np 2` gives the same weights as one process with the
// same global batch, within float tolerance, for dpo-epoch (patch-dpo on a tiny random-weight SD +
// IP-Adapter, 3 steps of 2 micro-batches, and 2 steps of 4 micro-batches, 2 per rank) and finetune-encoder (InfoNCE, 3 steps of 2
// micro-batches); rank 0 alone writes the log and run.json; an epoch stopped under 2 ranks resumes
// in one process and ends where the uninterrupted run does; a rank count that does not divide
// --grad-accum is refused. Skipped with a line when mpirun is absent (CI installs Open MPI).

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { runPaths } from "../../lib/io/rundir.ts";
import { readRunJson } from "../../lib/io/runlog.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { TrainLogRow } from "../../lib/io/schemas.ts";
import { epochFile, run as dpoEpoch } from "../../scripts/dpo-epoch.ts";
import { run as finetune } from "../../scripts/finetune-encoder.ts";
import { MPIRUN, NO_MPIRUN, mpirun, runJob } from "../dist/helpers.ts";
import { SIZE, tinyModel, tinyRun } from "./helpers/tiny-run.ts";

setDefaultTimeout(400_000);
const REPO = resolve(import.meta.dir, "../..");

/** Largest |a - b| over every tensor of two safetensors files (same names required). */
function maxDiff(a: string, b: string): { max: number; scale: number; values: number } {
  const fa = openSafetensors(a), fb = openSafetensors(b);
  expect(fb.names().sort()).toEqual(fa.names().sort());
  let max = 0, scale = 0, values = 0;
  for (const n of fa.names()) {
    const x = fa.float32(n), y = fb.float32(n);
    for (let i = 0; i < x.length; i++) {
      max = Math.max(max, Math.abs(x[i]! - y[i]!));
      scale = Math.max(scale, Math.abs(x[i]!));
    }
    values += x.length;
  }
  return { max, scale, values };
}

if (!MPIRUN) console.log(`data-parallel tests: ${NO_MPIRUN}`);

describe.skipIf(!MPIRUN)("data-parallel training under mpirun -np 2", () => {
  let root: string, base: string, model: { model: string; ip: string };
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "patchdpo-dp-"));
    base = await tinyRun(join(root, "base"), { subjects: 2, perReference: 3 }); // 6 pairs: 3 steps of 2
    model = await tinyModel(root);
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const copy = (name: string) => {
    const d = join(root, name);
    cpSync(base, d, { recursive: true });
    return d;
  };

  // 1 pair per micro-batch, 2 micro-batches per step: rank r takes micro-batch r.
  const DPO = { objective: "patch-dpo", size: SIZE, batch: 1, gradAccum: 2, maxSteps: 3, lr: 1e-3, threads: 1, saveEvery: 0 } as const;
  const dpoFlags = (dir: string, extra: string[] = []) => [
    "--run", dir, "--model", model.model, "--ip-adapter", model.ip, "--image-encoder", "mobilenet_v2", "--objective", DPO.objective, "--size", String(SIZE),
    "--batch", "1", "--grad-accum", "2", "--max-steps", "3", "--lr", String(DPO.lr), "--threads", "1", "--save-every", "0", ...extra,
  ];
  const dpoOne = (dir: string, extra: object = {}) => dpoEpoch({ run: dir, model: model.model, ipAdapter: model.ip, imageEncoder: "mobilenet_v2", ...DPO, ...extra });
  const dpoTwo = (dir: string, extra: string[] = []) => runJob(mpirun(2, [process.execPath, join(REPO, "scripts/dpo-epoch.ts"), ...dpoFlags(dir, extra)]), 400_000);

  test("dpo-epoch: 2 ranks end with the weights of 1 process (same global batch); rank 0 alone writes", async () => {
    const one = copy("dpo-1"), two = copy("dpo-2");
    await dpoOne(one);
    const r = await dpoTwo(two);
    expect(r.code, r.stderr).toBe(0);
    const d = maxDiff(epochFile(runPaths(one), 1), epochFile(runPaths(two), 1));
    console.log(`dpo-epoch parity: max |w1 - w2| = ${d.max.toExponential(2)} over ${d.values} values (largest |w| ${d.scale.toFixed(3)})`);
    expect(d.max).toBeLessThanOrEqual(1e-5 * Math.max(1, d.scale));
    // The training itself moved the weights far more than that (the comparison can fail).
    expect(maxDiff(model.ip, epochFile(runPaths(one), 1)).max).toBeGreaterThan(1e-3);
    const [l1, l2] = [await readJsonlAll(runPaths(one).trainLog, TrainLogRow), await readJsonlAll(runPaths(two).trainLog, TrainLogRow)];
    expect(l2.map((x) => x.step)).toEqual([0, 1, 2]); // one row per step: only rank 0 logs
    l1.forEach((x, i) => {
      for (const k of ["loss", "gradNorm", "mse", "refMse", "implicitAcc"] as const) expect(Math.abs(l2[i]![k]! - x[k]!)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(x[k]!)));
    });
    const steps = (await readRunJson(two)).steps.filter((s) => s.step.startsWith("dpo-epoch"));
    expect(steps.map((s) => [s.step, s.status])).toEqual([["dpo-epoch (epoch 1, patch-dpo, 2 ranks)", "ok"]]);
    expect(r.stdout).toContain("epoch 1 finished at step 3");
    expect(r.stdout.match(/epoch 1 finished/g)!.length).toBe(1);
  });

  test("dpo-epoch: stopped under 2 ranks, resumed in 1 process, ends where the uninterrupted run does", async () => {
    const one = copy("dpo-resume-1"), mixed = copy("dpo-resume-mixed");
    await dpoOne(one);
    const r = await dpoTwo(mixed, ["--stop-at", "2"]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(runPaths(mixed).checkpointsDir)).toEqual(["step-2"]);
    const res = await dpoOne(mixed, { resume: true });
    expect(res.stepsRun).toBe(1);
    const d = maxDiff(epochFile(runPaths(one), 1), epochFile(runPaths(mixed), 1));
    console.log(`dpo-epoch resume 2 ranks -> 1: max |w1 - w| = ${d.max.toExponential(2)}`);
    expect(d.max).toBeLessThanOrEqual(1e-5 * Math.max(1, d.scale));
  });

  test("dpo-epoch: 2 micro-batches per rank (--grad-accum 4) agree with one process within float tolerance", async () => {
    const one = copy("dpo4-1"), two = copy("dpo4-2");
    await dpoOne(one, { gradAccum: 4 });
    const r = await dpoTwo(two, ["--grad-accum", "4"]);
    expect(r.code, r.stderr).toBe(0);
    const d = maxDiff(epochFile(runPaths(one), 1), epochFile(runPaths(two), 1));
    console.log(`dpo-epoch parity, 4 micro-batches over 2 ranks: max |w1 - w2| = ${d.max.toExponential(2)} (largest |w| ${d.scale.toFixed(3)})`);
    expect(d.max).toBeLessThanOrEqual(1e-5 * Math.max(1, d.scale));
    const [l1, l2] = [await readJsonlAll(runPaths(one).trainLog, TrainLogRow), await readJsonlAll(runPaths(two).trainLog, TrainLogRow)];
    expect(l2.length).toBe(2); // 6 pairs, 4 per step
    l1.forEach((x, i) => {
      for (const k of ["loss", "gradNorm", "mse", "implicitAcc"] as const) expect(Math.abs(l2[i]![k]! - x[k]!)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(x[k]!)));
    });
  });

  test("a rank count that does not divide --grad-accum is refused before anything runs", async () => {
    const dir = copy("dpo-uneven");
    const r = await runJob(mpirun(2, [process.execPath, join(REPO, "scripts/dpo-epoch.ts"), ...dpoFlags(dir).map((x) => (x === "2" ? "3" : x))]), 200_000);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("--grad-accum 3 cannot be split over 2 ranks");
    expect(existsSync(runPaths(dir).trainLog)).toBe(false);
  });

  test("finetune-encoder: 2 ranks end with the weights of 1 process (same global batch)", async () => {
    const images = join(base, "references");
    const flags = { images, featureLayer: "block_13_expand_relu", imageSize: 64, trainBlocks: 1, steps: 3, batch: 2, gradAccum: 2, holdout: 0, lr: 1e-3, warmup: 0, threads: 1, saveEvery: 0 };
    const one = join(root, "ssl-1"), two = join(root, "ssl-2");
    await finetune({ ...flags, out: one });
    const r = await runJob(mpirun(2, [
      process.execPath, join(REPO, "scripts/finetune-encoder.ts"), "--images", images, "--feature-layer", flags.featureLayer, "--image-size", "64", "--train-blocks", "1",
      "--steps", "3", "--batch", "2", "--grad-accum", "2", "--holdout", "0", "--lr", "1e-3", "--warmup", "0", "--threads", "1", "--save-every", "0", "--out", two,
    ]), 400_000);
    expect(r.code, r.stderr).toBe(0);
    const d = maxDiff(join(one, "weights.safetensors"), join(two, "weights.safetensors"));
    console.log(`finetune-encoder parity: max |w1 - w2| = ${d.max.toExponential(2)} over ${d.values} values (largest |w| ${d.scale.toFixed(3)})`);
    expect(d.max).toBeLessThanOrEqual(1e-5 * Math.max(1, d.scale));
    const [l1, l2] = [await readJsonlAll(join(one, "train-log.jsonl"), TrainLogRow), await readJsonlAll(join(two, "train-log.jsonl"), TrainLogRow)];
    expect(l2.map((x) => x.step)).toEqual([0, 1, 2]);
    l1.forEach((x, i) => expect(Math.abs(l2[i]!.gradNorm! - x.gradNorm!)).toBeLessThanOrEqual(1e-5 * Math.max(1, x.gradNorm!)));
  });
});
