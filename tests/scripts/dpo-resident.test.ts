// dpo-epoch with the training state on the device (--state device, the default on webgpu):
// patch-dpo on the tiny random-weight SD + IP-Adapter of tests/scripts/helpers/tiny-run.ts,
// 3 steps of 2 micro-batches of 1 pair, clipping at a norm that binds.
//   a. --device webgpu (state on the device: AdamW, clip, guard and accumulation in the graph)
//      against --device cpu (host AdamW): losses, logs and gradient norms of every step and the
//      trained IP-Adapter file, within stated tolerances;
//   b. host transfers, counted by lib/graph's transferBytes() between the log rows of steps 2 and
//      3: with the state on the device, what comes back per step beyond the batch's encoder
//      outputs (latents and image features) is the loss and logs only, fewer bytes than the
//      trainable weights; with --state host on the same device it is the gradients and the
//      reference prediction too. The weights, moments and accumulators go up once (step 1) and
//      come back once (weights + moments, for the checkpoint at the end);
//   c. stop after step 1 + --resume on webgpu ends where the uninterrupted webgpu run does;
//   d. --state device with --device cpu: the same graph, the state round-tripping through the
//      host, matches the host path (to float32 rounding, magnified by patch-dpo's beta) and
//      resumes bit for bit.
//   e. under mpirun -np 2 (ranks all-reduce host gradients) --state device is refused, and
//      --device webgpu with the default --state auto trains on the host path and says so.
// (cpu's default host path keeps its byte-identical resume: tests/scripts/dpo-epoch.test.ts.)

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { runPaths } from "../../lib/io/rundir.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { TrainLogRow } from "../../lib/io/schemas.ts";
import { DEFAULTS, type DpoEpochOptions, type DpoEpochResult, epochFile, run } from "../../scripts/dpo-epoch.ts";
import { type Diff, NO_WEBGPU, expectClose, fmtDiff, noteWebgpuSkip, worst } from "../graph/webgpu-helpers.ts";
import { MPIRUN, mpirun, runJob } from "../dist/helpers.ts";
import { SIZE, UNET, tinyModel, tinyRun } from "./helpers/tiny-run.ts";

setDefaultTimeout(600_000);
noteWebgpuSkip("tests/scripts/dpo-resident.test.ts");

let root: string, base: string, model: { model: string; ip: string };
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-resident-"));
  base = await tinyRun(join(root, "base"), { subjects: 2, perReference: 3 }); // 6 pairs: 3 steps of 2 micro-batches
  model = await tinyModel(root);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

let count = 0;
const copy = () => {
  const d = join(root, `run-${count++}`);
  cpSync(base, d, { recursive: true });
  return d;
};

const GRAD_ACCUM = 2;
const STEPS = 3;
// clip 0.05: below every step's gradient norm here (checked), so the in-graph clip is exercised.
const O = { objective: "patch-dpo", size: SIZE, batch: 1, gradAccum: GRAD_ACCUM, maxSteps: STEPS, lr: 1e-3, clip: 0.05, threads: 1, saveEvery: 0 } as const;

interface Trained {
  dir: string;
  result: DpoEpochResult;
  rows: TrainLogRow[];
  /** transferBytes() before run(), at each logged step, and after run() returned. */
  start: { toDevice: number; toHost: number };
  at: { toDevice: number; toHost: number }[];
  end: { toDevice: number; toHost: number };
}

async function train(dir: string, o: Partial<DpoEpochOptions>): Promise<Trained> {
  const at: Trained["at"] = [];
  const start = G.transferBytes();
  const result = await run({ ...DEFAULTS, run: dir, model: model.model, ipAdapter: model.ip, imageEncoder: "mobilenet_v2", ...O, ...o, onStep: () => at.push(G.transferBytes()) });
  const end = G.transferBytes();
  return { dir, result, rows: await readJsonlAll(runPaths(dir).trainLog, TrainLogRow), start, at, end };
}

const weightsOf = (dir: string) => {
  const f = openSafetensors(epochFile(runPaths(dir), 1));
  return new Map(f.names().sort().map((n) => [n, f.float32(n)]));
};

/** Losses, logs, gradient norms and the epoch file of `b` against `a`, within `tol` (see expectClose). */
function compare(a: Trained, b: Trained, tol: number): Diff {
  expect(b.rows.map((r) => r.step)).toEqual(a.rows.map((r) => r.step));
  const diffs: Diff[] = [];
  a.rows.forEach((ra, i) => {
    const rb = b.rows[i]!;
    diffs.push(expectClose(`step ${ra.step} loss`, [rb.loss], [ra.loss], tol));
    diffs.push(expectClose(`step ${ra.step} gradNorm`, [rb.gradNorm!], [ra.gradNorm!], tol));
    for (const k of ["mse", "refMse", "dpoLoss", "keep"] as const) diffs.push(expectClose(`step ${ra.step} ${k}`, [rb[k] as number], [ra[k] as number], tol, 1e-3));
  });
  const wa = weightsOf(a.dir), wb = weightsOf(b.dir);
  expect([...wb.keys()]).toEqual([...wa.keys()]);
  for (const [n, w] of wa) diffs.push(expectClose(`weight ${n}`, wb.get(n)!, w, tol));
  return worst(diffs);
}

/** Bytes of one step (between the log rows of steps i and i + 1). */
const stepBytes = (t: Trained, i: number) => ({ toDevice: t.at[i + 1]!.toDevice - t.at[i]!.toDevice, toHost: t.at[i + 1]!.toHost - t.at[i]!.toHost });

describe("dpo-epoch --state device on cpu (the resident graph without a device)", () => {
  test("matches the host path within float32 rounding; stop + --resume is bit for bit", async () => {
    const host = await train(copy(), { device: "cpu" });
    const dev = await train(copy(), { device: "cpu", state: "device" });
    // float32 AdamW in the graph against the host's float64 one; patch-dpo's beta magnifies the
    // weights' rounding differences in the loss (measured: 2.2e-4 of scale at step 3).
    const d = compare(host, dev, 1e-3);
    console.log(`dpo-epoch --state device vs host, cpu, ${STEPS} steps x ${GRAD_ACCUM} micro-batches: ${fmtDiff(d)} (tolerance 1e-3)`);
    for (const r of host.rows) expect(r.gradNorm!).toBeGreaterThan(O.clip);
    // Nothing crosses on the cpu.
    expect(dev.end).toEqual(dev.start);
    const b = copy();
    await train(b, { device: "cpu", state: "device", stopAt: 1 });
    await train(b, { device: "cpu", state: "device", resume: true });
    expect(Buffer.compare(readFileSync(epochFile(runPaths(b), 1)), readFileSync(epochFile(runPaths(dev.dir), 1)))).toBe(0);
  });
});

describe.skipIf(NO_WEBGPU !== null)("dpo-epoch --device webgpu keeps weights and AdamW state on the device", () => {
  let cpu: Trained, gpu: Trained;
  const TOL = 1e-3;

  test(`webgpu (state on the device) vs cpu (host AdamW): ${STEPS} steps, losses, logs, grad norms and weights within ${TOL} of scale`, async () => {
    cpu = await train(copy(), { device: "cpu" });
    gpu = await train(copy(), { device: "webgpu" });
    for (const r of cpu.rows) expect(r.gradNorm!).toBeGreaterThan(O.clip);
    // The weights moved: a run that never updated them would still match the start.
    const start = openSafetensors(model.ip);
    const moved = [...weightsOf(gpu.dir)].reduce((m, [n, w]) => Math.max(m, ...Array.from(w, (x, i) => Math.abs(x - start.float32(n)[i]!))), 0);
    expect(moved).toBeGreaterThan(1e-4);
    const d = compare(cpu, gpu, TOL);
    console.log(`dpo-epoch webgpu (--state device) vs cpu (host), patch-dpo ${STEPS} steps x ${GRAD_ACCUM} micro-batches, clip ${O.clip}: ${fmtDiff(d)} (tolerance ${TOL}); weights moved up to ${moved.toExponential(2)}`);
  });

  test("per step only the batch and the loss/logs cross; weights and moments come back at the checkpoint", async () => {
    const host = await train(copy(), { device: "webgpu", state: "host" });
    const trainBytes = 4 * gpu.result.trainable.values;
    // What prepare() moves per micro-batch, on either path: its VAE (pixel-unshuffle) and image
    // encoder (MobileNetV2) outputs come down: latents [2, 12, 16, 16] and features [1, 49, 1280].
    const C = UNET.in_channels, L = SIZE / 2;
    const latents = 4 * 2 * C * L * L, features = 4 * 49 * 1280;
    const encoderDown = GRAD_ACCUM * (latents + features);
    // The training graph's host outputs: loss, 5 logs (mse, refMse, dpoLoss, keep, implicitAcc),
    // and with the state on the device the gradient norm and the update flag.
    const lossLogs = 4 * (1 + 5);
    const dev = stepBytes(gpu, 1), hst = stepBytes(host, 1);
    expect(stepBytes(gpu, 0)).toEqual(dev); // steps 2 and 3 move the same
    expect(dev.toHost - encoderDown).toBe(GRAD_ACCUM * (lossLogs + 8));
    expect(dev.toHost - encoderDown).toBeLessThan(trainBytes);
    // The host path brings the gradients down, and patch-dpo's reference prediction.
    expect(hst.toHost - encoderDown).toBe(GRAD_ACCUM * (lossLogs + trainBytes + latents));
    // Up: the host path sends the weights (to the training graph) and the reference weights (to
    // the reference model's graph) with every micro-batch, and the batch to both graphs.
    expect(hst.toDevice - dev.toDevice).toBeGreaterThanOrEqual(GRAD_ACCUM * 2 * trainBytes);
    // The first step uploads the weights, zero moments, zero accumulators and the reference
    // weights once (5 x the trainable bytes), the later ones none of them.
    expect(gpu.at[0]!.toDevice - gpu.start.toDevice - dev.toDevice).toBe(5 * trainBytes);
    expect(gpu.at[0]!.toHost - gpu.start.toHost).toBe(dev.toHost);
    // The checkpoint at the end reads back the weights and both moments, and nothing else crosses.
    expect(gpu.end.toHost - gpu.at.at(-1)!.toHost).toBe(3 * trainBytes);
    expect(gpu.end.toDevice - gpu.at.at(-1)!.toDevice).toBe(0);
    console.log(
      `bytes per step (patch-dpo, ${GRAD_ACCUM} micro-batches of 1 pair, ${trainBytes} bytes of trainable weights): ` +
        `--state device up ${dev.toDevice} / down ${dev.toHost} (of which ${dev.toHost - encoderDown} from the training graph); ` +
        `--state host up ${hst.toDevice} / down ${hst.toHost} (${hst.toHost - encoderDown} from the training graph); checkpoint readback ${gpu.end.toHost - gpu.at.at(-1)!.toHost}`,
    );
  });

  test("stop after step 1 + --resume on webgpu ends where the uninterrupted webgpu run does", async () => {
    const b = copy();
    const first = await train(b, { device: "webgpu", stopAt: 1 });
    expect(first.result).toMatchObject({ finished: false, endStep: 1 });
    const resumed = await train(b, { device: "webgpu", resume: true });
    expect(resumed.result).toMatchObject({ finished: true, endStep: STEPS, stepsRun: STEPS - 1 });
    const d = compare(gpu, resumed, 1e-5);
    console.log(`dpo-epoch webgpu stop at 1 + --resume vs straight: ${fmtDiff(d)} (tolerance 1e-5)`);
  });
});

describe.skipIf(!MPIRUN)("dpo-epoch under mpirun -np 2: gradients are all-reduced on the host", () => {
  const script = join(resolve(import.meta.dir, "../.."), "scripts/dpo-epoch.ts");
  const flags = (dir: string) => [
    process.execPath, script, "--run", dir, "--model", model.model, "--ip-adapter", model.ip, "--image-encoder", "mobilenet_v2", "--size", String(SIZE),
    "--batch", "1", "--grad-accum", "2", "--max-steps", "1", "--threads", "1", "--save-every", "0",
  ];
  test("--state device is refused with what to do; --device webgpu (auto) keeps the host path and says so", async () => {
    const r = await runJob(mpirun(2, [...flags(copy()), "--state", "device"]), 300_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--state device keeps the weights and AdamW on the device, but 2 ranks average their gradients on the host");
    if (NO_WEBGPU) return;
    const ok = await runJob(mpirun(2, [...flags(copy()), "--device", "webgpu"]), 300_000);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain("2 ranks all-reduce gradients on the host, so the weights and AdamW state stay on the host");
  });
});
