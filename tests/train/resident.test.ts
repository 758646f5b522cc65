// Device-resident training (lib/train/resident.ts): AdamW as a graph, weights and moments kept on
// the device between steps.
//   a. on cpu, the graph's AdamW follows lib/train/adamw.ts (torch's update) step for step, to
//      float32 rounding (the host version computes in float64);
//   b. on webgpu, the same steps agree with cpu, and the host transfers are counted: after the
//      first step (which uploads the starting weights and zero moments) a step sends only the
//      batch and three scalars and receives only the loss, logs, gradient norm and update flag;
//      the weights cross once more when read back. The host-AdamW loop on webgpu, for contrast,
//      moves weights and gradients every step;
//   c. what the host loop does around AdamW, in the graph: global-norm clipping, the NaN/Inf
//      guard (a step with a NaN batch leaves weights, moments and t alone) and gradient
//      accumulation over micro-batches, against lib/train/adamw.ts's clipGradNorm, allFinite and
//      GradAccumulator, on cpu and on webgpu.

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as G from "../../lib/graph/index.ts";
import type { Device, Tensor } from "../../lib/graph/index.ts";
import { AdamW, GradAccumulator, allFinite, clipGradNorm } from "../../lib/train/adamw.ts";
import { ResidentTrainer } from "../../lib/train/resident.ts";
import { mulberry32 } from "../graph/reference.ts";
import { NO_WEBGPU, expectClose, fmtDiff, noteWebgpuSkip, worst } from "../graph/webgpu-helpers.ts";

setDefaultTimeout(120_000);
noteWebgpuSkip("tests/train/resident.test.ts");

const normals = (seed: number, n: number, scale = 1) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()));
};

// A small conv + attention regressor: conv -> GroupNorm -> SiLU -> self-attention over positions -> linear.
const SHAPES: Record<string, number[]> = { "conv.weight": [8, 3, 3, 3], "conv.bias": [8], "norm.weight": [8], "q.weight": [8, 8], "k.weight": [8, 8], "v.weight": [8, 8], "out.weight": [4, 8], "out.bias": [4] };
const B = 2, H = 6;
const initial = () => new Map(Object.entries(SHAPES).map(([n, s], i) => [n, normals(10 + i, s.reduce((a, b) => a * b, 1), n.endsWith("bias") ? 0.1 : 0.4)]));

function build(g: G.Graph) {
  const params = new Map(Object.entries(SHAPES).map(([n, s]) => [n, g.param(n, s)]));
  const p = (n: string) => params.get(n)!;
  const x = g.input("x", [B, 3, H, H]);
  const target = g.input("target", [B, H * H, 4]);
  let h = G.conv(x, p("conv.weight"), p("conv.bias"), { padding: 1 });
  h = G.silu(G.groupNorm(h, 2, p("norm.weight"), null));
  const tokens = G.transpose(G.reshape(h, [B, 8, H * H]), [0, 2, 1]); // [B, 36, 8]
  const att = G.attention(G.splitHeads(G.linear(tokens, p("q.weight")), 2), G.splitHeads(G.linear(tokens, p("k.weight")), 2), G.splitHeads(G.linear(tokens, p("v.weight")), 2));
  const y = G.linear(G.add(tokens, G.mergeHeads(att)), p("out.weight"), p("out.bias"));
  const d = G.sub(y, target);
  const loss = G.reduceMean(G.mul(d, d), undefined, false);
  return { loss, logs: { abs: G.reduceMean(G.abs(d), undefined, false) }, params };
}

const batch = (step: number) => ({ x: normals(100 + step, B * 3 * H * H), target: normals(200 + step, B * H * H * 4, 0.5) });
const CFG = { lr: 1e-2, weightDecay: 0.05 };
const STEPS = 5;

/** The host loop: the graph's gradients, lib/train/adamw.ts on the host. */
async function hostLoop(device: Device) {
  const g = new G.Graph();
  const { loss, logs, params } = build(g);
  const names = [...params.keys()];
  const grads = G.grad(loss, names.map((n) => params.get(n)!));
  const outs: Record<string, Tensor> = { loss, "log:abs": logs.abs };
  names.forEach((n, i) => (outs[`grad:${n}`] = grads[i]!));
  const c = await G.compile(outs, { device, threads: 1 });
  const w = initial();
  const opt = new AdamW(CFG);
  const losses: number[] = [];
  for (let s = 0; s < STEPS; s++) {
    const r = await c.run({ ...batch(s), ...Object.fromEntries(w) });
    losses.push((r.loss as Float32Array)[0]!);
    opt.step(w, new Map(names.map((n) => [n, r[`grad:${n}`] as Float32Array])));
  }
  return { losses, weights: w };
}

async function residentLoop(device: Device) {
  const t = new ResidentTrainer(build, initial(), CFG, { device, threads: 1 });
  const losses: number[] = [];
  const perStep: { toDevice: number; toHost: number }[] = [];
  for (let s = 0; s < STEPS; s++) {
    const before = G.transferBytes();
    const r = await t.step(batch(s));
    const after = G.transferBytes();
    perStep.push({ toDevice: after.toDevice - before.toDevice, toHost: after.toHost - before.toHost });
    losses.push(r.loss);
    expect(Object.keys(r.logs)).toEqual(["abs"]);
  }
  const before = G.transferBytes();
  const weights = await t.weights();
  const after = G.transferBytes();
  return { losses, weights, perStep, readback: after.toHost - before.toHost };
}

const paramBytes = 4 * Object.values(SHAPES).reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0);
const batchBytes = 4 * (B * 3 * H * H + B * H * H * 4);

describe("AdamW as a graph, state kept between steps", () => {
  test("cpu: the graph's AdamW follows torch's update (lib/train/adamw.ts) for 5 steps, to float32 rounding", async () => {
    const host = await hostLoop("cpu");
    const res = await residentLoop("cpu");
    const d = worst([
      expectClose("losses", res.losses, host.losses, 1e-5),
      ...[...host.weights].map(([n, w]) => expectClose(n, res.weights.get(n)!, w, 1e-5)),
    ]);
    console.log(`resident AdamW graph vs host AdamW, cpu, ${STEPS} steps: ${fmtDiff(d)}`);
    // The weights moved (the update is not a no-op) and the loss fell.
    expect(res.losses.at(-1)!).toBeLessThan(res.losses[0]!);
    // Nothing is counted on the CPU: there is no device.
    expect(res.perStep.every((p) => p.toDevice === 0 && p.toHost === 0)).toBe(true);
  });

  test("cpu: 2 steps, then a new trainer restored from weights, moments and t, 3 more steps = 5 straight, bit for bit", async () => {
    const straight = await residentLoop("cpu");
    const first = new ResidentTrainer(build, initial(), CFG, { threads: 1 });
    for (let s = 0; s < 2; s++) await first.step(batch(s));
    const resumed = new ResidentTrainer(build, await first.weights(), CFG, { threads: 1 }, { ...(await first.moments()), t: first.t });
    const losses: number[] = [];
    for (let s = 2; s < STEPS; s++) losses.push((await resumed.step(batch(s))).loss);
    expect(losses).toEqual(straight.losses.slice(2));
    const w = await resumed.weights();
    for (const [n, v] of straight.weights) expect(Array.from(w.get(n)!)).toEqual(Array.from(v));
  });
});

describe.skipIf(NO_WEBGPU !== null)("on webgpu", () => {
  test("state stays on the GPU: per step only the batch and 3 scalars go, only loss and logs come back; equal to cpu", async () => {
    const cpu = await residentLoop("cpu");
    const gpu = await residentLoop("webgpu");
    const d = worst([
      expectClose("losses", gpu.losses, cpu.losses, 1e-4),
      ...[...cpu.weights].map(([n, w]) => expectClose(n, gpu.weights.get(n)!, w, 1e-4)),
    ]);
    // First step: batch + scalars + starting weights + zero moments up; loss and log back.
    // Down: loss, the one log, the gradient norm and the update flag (4 float32 values).
    expect(gpu.perStep[0]).toEqual({ toDevice: batchBytes + 12 + 3 * paramBytes, toHost: 16 });
    for (const p of gpu.perStep.slice(1)) expect(p).toEqual({ toDevice: batchBytes + 12, toHost: 16 });
    expect(gpu.readback).toBe(paramBytes);
    // The host-AdamW loop on the same device sends the weights and receives the gradients every step.
    const before = G.transferBytes();
    await hostLoop("webgpu");
    const after = G.transferBytes();
    const hostPerStep = (after.toDevice - before.toDevice) / STEPS;
    expect(hostPerStep).toBe(batchBytes + paramBytes);
    console.log(
      `resident AdamW on webgpu vs cpu, ${STEPS} steps: ${fmtDiff(d)}; bytes per step: resident ${gpu.perStep[1]!.toDevice} up / ${gpu.perStep[1]!.toHost} down, ` +
        `host AdamW ${hostPerStep} up / ${(after.toHost - before.toHost) / STEPS} down (${paramBytes} bytes of weights)`,
    );
  });
});

// ---- c. clipping, the NaN/Inf guard and accumulation, against the host loop's helpers

interface LoopOpts { clip: number; accum: number; nanStep: number; steps: number }
const OPTS: LoopOpts = { clip: 0.05, accum: 2, nanStep: 1, steps: 4 };
/** Micro-batch k of step s; step nanStep's second micro-batch holds a NaN. */
const microBatch = (s: number, k: number, o: LoopOpts) => {
  const b = batch(10 * s + k);
  if (s === o.nanStep && k === o.accum - 1) b.x[3] = Number.NaN;
  return b;
};

async function hostGuardedLoop(device: Device, o: LoopOpts) {
  const g = new G.Graph();
  const { loss, params } = build(g);
  const names = [...params.keys()];
  const grads = G.grad(loss, names.map((n) => params.get(n)!));
  const outs: Record<string, Tensor> = { loss };
  names.forEach((n, i) => (outs[`grad:${n}`] = grads[i]!));
  const c = await G.compile(outs, { device, threads: 1 });
  const w = initial();
  const opt = new AdamW(CFG);
  const rows: { loss: number; norm: number; updated: boolean }[] = [];
  for (let s = 0; s < o.steps; s++) {
    const acc = new GradAccumulator();
    let l = 0;
    for (let k = 0; k < o.accum; k++) {
      const r = await c.run({ ...microBatch(s, k, o), ...Object.fromEntries(w) });
      l += (r.loss as Float32Array)[0]! / o.accum;
      acc.add(new Map(names.map((n) => [n, r[`grad:${n}`] as Float32Array])));
    }
    const gr = acc.take();
    if (!Number.isFinite(l) || !allFinite(gr.values())) {
      rows.push({ loss: l, norm: Number.NaN, updated: false });
      continue;
    }
    const norm = clipGradNorm(gr, o.clip);
    opt.step(w, gr, CFG.lr * (1 - s / 10)); // a schedule: lr fed each step
    rows.push({ loss: l, norm, updated: true });
  }
  return { rows, weights: w, moments: { m: opt.m, v: opt.v }, t: opt.t };
}

async function residentGuardedLoop(device: Device, o: LoopOpts) {
  const t = new ResidentTrainer(build, initial(), CFG, { device, threads: 1 }, undefined, { clip: o.clip, gradAccum: o.accum });
  const rows: { loss: number; norm: number; updated: boolean }[] = [];
  for (let s = 0; s < o.steps; s++) {
    let l = 0, gate = true;
    let r!: Awaited<ReturnType<ResidentTrainer["step"]>>;
    for (let k = 0; k < o.accum; k++) {
      r = await t.step(microBatch(s, k, o), CFG.lr * (1 - s / 10), gate);
      l += r.loss / o.accum;
      gate &&= Number.isFinite(r.loss);
    }
    rows.push({ loss: l, norm: r.updated ? r.gradNorm : Number.NaN, updated: r.updated });
  }
  return { rows, weights: await t.weights(), moments: await t.moments(), t: t.t };
}

describe("in the graph: clipping, the NaN/Inf guard, gradient accumulation, an lr schedule", () => {
  for (const device of ["cpu", "webgpu"] as Device[]) {
    test.skipIf(device === "webgpu" && NO_WEBGPU !== null)(`${device}: ${OPTS.steps} steps of ${OPTS.accum} micro-batches, clip ${OPTS.clip}, a NaN in step ${OPTS.nanStep}: = the host loop`, async () => {
      const host = await hostGuardedLoop("cpu", OPTS);
      const res = await residentGuardedLoop(device, OPTS);
      expect(res.rows.map((r) => r.updated)).toEqual(host.rows.map((r) => r.updated));
      expect(res.rows.map((r) => r.updated)).toEqual([true, false, true, true]);
      expect(res.t).toBe(host.t);
      expect(res.t).toBe(3);
      const ok = host.rows.filter((r) => r.updated);
      // The clip binds (the norm is above it), so a missing clip would show.
      for (const r of ok) expect(r.norm).toBeGreaterThan(OPTS.clip * 2);
      const d = worst([
        expectClose("losses", res.rows.filter((r) => r.updated).map((r) => r.loss), ok.map((r) => r.loss), 1e-5),
        expectClose("grad norms", res.rows.filter((r) => r.updated).map((r) => r.norm), ok.map((r) => r.norm), 1e-5),
        ...[...host.weights].map(([n, w]) => expectClose(n, res.weights.get(n)!, w, 1e-5)),
        ...[...host.moments.m].map(([n, m]) => expectClose(`m ${n}`, res.moments.m.get(n)!, m, 1e-5)),
        ...[...host.moments.v].map(([n, v]) => expectClose(`v ${n}`, res.moments.v.get(n)!, v, 1e-4)),
      ]);
      expect(Number.isNaN(res.rows[OPTS.nanStep]!.loss)).toBe(true);
      console.log(`resident guarded loop (${device}) vs host loop (cpu): ${fmtDiff(d)}`);
    });
  }
});
