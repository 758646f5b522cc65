// finetune-encoder with the training state on the device (--state device, the default on webgpu):
// InfoNCE on MobileNetV2's block_13_expand_relu grid, the last block trainable, 3 steps of 2
// micro-batches of 2 view pairs, clipping at a norm that binds.
//   a. --device webgpu (AdamW, clip, guard and accumulation in the graph) against --device cpu
//      (host AdamW): losses, gradient norms and the trained weights within a stated tolerance;
//   b. host transfers (lib/graph transferBytes() between log rows): per step only the views and
//      patch indices go up and only the loss, gradient norm and update flag come back (12 bytes
//      per micro-batch); the weights and moments come back once, for the checkpoint;
//   c. stop after step 1 + --resume on webgpu ends where the uninterrupted webgpu run does.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { TrainLogRow } from "../../lib/io/schemas.ts";
import { type FinetuneOptions, type FinetuneResult, run as finetune } from "../../scripts/finetune-encoder.ts";
import { type Diff, NO_WEBGPU, expectClose, fmtDiff, noteWebgpuSkip, worst } from "../graph/webgpu-helpers.ts";
import { tinyRun } from "./helpers/tiny-run.ts";

setDefaultTimeout(600_000);
noteWebgpuSkip("tests/scripts/finetune-resident.test.ts");

let root: string, images: string;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-ft-resident-"));
  if (NO_WEBGPU) return;
  images = join(await tinyRun(join(root, "base"), { subjects: 2, perReference: 1, scores: false }), "references");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const STEPS = 3, GRAD_ACCUM = 2, B = 2;
// clip 0.5: below every step's gradient norm here (checked), so the in-graph clip is exercised.
const FLAGS = { featureLayer: "block_13_expand_relu", imageSize: 64, trainBlocks: 1, steps: STEPS, batch: B, gradAccum: GRAD_ACCUM, holdout: 0, lr: 1e-3, warmup: 0, clip: 0.5, threads: 1, saveEvery: 0 };

interface Trained { out: string; result: FinetuneResult; rows: TrainLogRow[]; start: { toDevice: number; toHost: number }; at: { toDevice: number; toHost: number }[]; end: { toDevice: number; toHost: number } }

let count = 0;
async function train(o: Partial<FinetuneOptions>, out = join(root, `ft-${count++}`)): Promise<Trained> {
  const at: Trained["at"] = [];
  const start = G.transferBytes();
  const result = await finetune({ ...FLAGS, images, out, ...o, onStep: () => at.push(G.transferBytes()) });
  return { out, result, rows: await readJsonlAll(join(out, "train-log.jsonl"), TrainLogRow), start, at, end: G.transferBytes() };
}

function compare(a: Trained, b: Trained, tol: number): Diff {
  expect(b.rows.map((r) => r.step)).toEqual(a.rows.map((r) => r.step));
  const diffs: Diff[] = [];
  a.rows.forEach((ra, i) => {
    diffs.push(expectClose(`step ${ra.step} loss`, [b.rows[i]!.loss], [ra.loss], tol));
    diffs.push(expectClose(`step ${ra.step} gradNorm`, [b.rows[i]!.gradNorm!], [ra.gradNorm!], tol));
  });
  const fa = openSafetensors(join(a.out, "weights.safetensors")), fb = openSafetensors(join(b.out, "weights.safetensors"));
  expect(fb.names().sort()).toEqual(fa.names().sort());
  for (const n of fa.names()) diffs.push(expectClose(`weight ${n}`, fb.float32(n), fa.float32(n), tol));
  return worst(diffs);
}

describe.skipIf(NO_WEBGPU !== null)("finetune-encoder --device webgpu keeps weights and AdamW state on the device", () => {
  let cpu: Trained, gpu: Trained;

  test("webgpu (state on the device) vs cpu (host AdamW): losses, gradient norms and weights within 1e-3 of scale", async () => {
    cpu = await train({ device: "cpu" });
    gpu = await train({ device: "webgpu" });
    expect(cpu.rows.length).toBe(STEPS);
    for (const r of cpu.rows) expect(r.gradNorm!).toBeGreaterThan(FLAGS.clip);
    const d = compare(cpu, gpu, 1e-3);
    console.log(`finetune-encoder webgpu (--state device) vs cpu (host), ${STEPS} steps x ${GRAD_ACCUM} micro-batches, clip ${FLAGS.clip}: ${fmtDiff(d)} (tolerance 1e-3)`);
  });

  test("per step the views go up and 12 bytes per micro-batch come back; the weights and moments come back at the checkpoint", async () => {
    const trainBytes = 4 * gpu.result.trainable.values;
    const step = (i: number) => ({ toDevice: gpu.at[i + 1]!.toDevice - gpu.at[i]!.toDevice, toHost: gpu.at[i + 1]!.toHost - gpu.at[i]!.toHost });
    expect(step(0)).toEqual(step(1));
    expect(step(1).toHost).toBe(GRAD_ACCUM * 12);
    expect(step(1).toHost).toBeLessThan(trainBytes);
    // Up: the views [2B, 3, 64, 64], the two index vectors [B * M] (int64; M matches per pair on the
    // 4x4 grid at 64 px: max(4, round(16 / 3)) = 5), the 3 AdamW scalars and 2 micro-batch flags.
    const M = 5;
    expect(step(1).toDevice).toBe(GRAD_ACCUM * (4 * 2 * B * 3 * 64 * 64 + 2 * 8 * B * M + 4 * 5));
    // The first step also uploads the weights, zero moments and zero accumulators (4x the weights).
    expect(gpu.at[0]!.toDevice - gpu.start.toDevice - step(1).toDevice).toBe(4 * trainBytes);
    expect(gpu.end.toHost - gpu.at.at(-1)!.toHost).toBe(3 * trainBytes);
    console.log(`finetune-encoder bytes per step on webgpu (--state device): up ${step(1).toDevice}, down ${step(1).toHost}; ${trainBytes} bytes of trainable weights; checkpoint readback ${gpu.end.toHost - gpu.at.at(-1)!.toHost}`);
  });

  test("stop after step 1 + --resume on webgpu = the uninterrupted webgpu run", async () => {
    const out = join(root, "ft-resume");
    await train({ device: "webgpu", stopAt: 1 }, out);
    const resumed = await train({ device: "webgpu", resume: true }, out);
    expect(resumed.result).toMatchObject({ finished: true, step: STEPS });
    const d = compare(gpu, resumed, 1e-5);
    console.log(`finetune-encoder webgpu stop at 1 + --resume vs straight: ${fmtDiff(d)} (tolerance 1e-5)`);
  });
});
