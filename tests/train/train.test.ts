// The training loop's pieces: AdamW and gradient clipping against torch.optim.AdamW /
// clip_grad_norm_ (tests/fixtures/parity/adamw.safetensors from bench/parity/make_train_fixtures.py),
// learning-rate schedules, gradient accumulation, the NaN/Inf guard, and checkpoints.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { Graph } from "../../lib/graph/index.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { Rng } from "../../lib/rng.ts";
import { AdamW, GradAccumulator, allFinite, clipGradNorm, globalNorm } from "../../lib/train/adamw.ts";
import { latestCheckpoint, loadCheckpoint, restoreOptimizer, saveCheckpoint } from "../../lib/train/checkpoint.ts";
import { type ScheduleConfig, learningRate } from "../../lib/train/schedule.ts";

const fixture = openSafetensors(join(import.meta.dir, "../fixtures/parity/adamw.safetensors"));
const CONFIG = JSON.parse(fixture.metadata.config!) as { lr: number; betas: [number, number]; eps: number; weight_decay: number; steps: number; max_norm: number };
const NAMES = ["w", "b"] as const;
const SHAPES = { w: [3, 4], b: [5] } as const;
const adamw = () => new AdamW({ lr: CONFIG.lr, beta1: CONFIG.betas[0], beta2: CONFIG.betas[1], eps: CONFIG.eps, weightDecay: CONFIG.weight_decay });

const initParams = () => new Map(NAMES.map((n) => [n as string, Float32Array.from(fixture.float32(`init.${n}`))]));
/** The (fresh, mutable) gradients torch was fed at step s. */
const gradsAt = (s: number) =>
  new Map(NAMES.map((n) => {
    const size = SHAPES[n].reduce((a, b) => a * b, 1);
    return [n as string, Float32Array.from(fixture.float32(`grads.${n}`).subarray(s * size, (s + 1) * size))];
  }));
const expectedAt = (tag: "params" | "clipped", n: string, s: number) => {
  const size = SHAPES[n as "w" | "b"].reduce((a, b) => a * b, 1);
  return fixture.float32(`${tag}.${n}`).subarray(s * size, (s + 1) * size);
};
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe("AdamW vs torch.optim.AdamW (lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight decay 0.01)", () => {
  // torch runs in float32; we update in float64 arithmetic on float32 storage. Measured worst
  // difference over 10 steps (parameters are O(1)): 2.4e-7 plain, 6.0e-7 clipped; tolerance 1e-6.
  const TOL = 1e-6;

  test("10 steps without clipping", () => {
    const opt = adamw();
    const params = initParams();
    let worst = 0;
    for (let s = 0; s < CONFIG.steps; s++) {
      opt.step(params, gradsAt(s));
      for (const n of NAMES) worst = Math.max(worst, maxAbs(params.get(n)!, expectedAt("params", n, s)));
    }
    console.log(`adamw parity: max abs ${worst.toExponential(2)} over ${CONFIG.steps} steps`);
    expect(opt.t).toBe(CONFIG.steps);
    expect(worst).toBeLessThan(TOL);
  });

  test("10 steps with clip_grad_norm_(max_norm=1.0)", () => {
    const opt = adamw();
    const params = initParams();
    const norms = fixture.float32("clip_norm");
    let worst = 0, worstNorm = 0, unclipped = 0;
    for (let s = 0; s < CONFIG.steps; s++) {
      const grads = gradsAt(s);
      const before = globalNorm(grads.values());
      const norm = clipGradNorm(grads, CONFIG.max_norm);
      expect(norm).toBe(before);
      worstNorm = Math.max(worstNorm, Math.abs(norm - norms[s]!) / norms[s]!);
      if (norm < CONFIG.max_norm) {
        unclipped++;
        expect(maxAbs(grads.get("w")!, gradsAt(s).get("w")!)).toBe(0); // left alone
      } else expect(globalNorm(grads.values())).toBeCloseTo(CONFIG.max_norm, 5);
      opt.step(params, grads);
      for (const n of NAMES) worst = Math.max(worst, maxAbs(params.get(n)!, expectedAt("clipped", n, s)));
    }
    console.log(`adamw+clip parity: max abs ${worst.toExponential(2)}, total norm rel ${worstNorm.toExponential(2)}`);
    expect(unclipped).toBe(1); // the fixture's step 3 has small gradients
    expect(worstNorm).toBeLessThan(1e-6);
    expect(worst).toBeLessThan(TOL);
  });

  test("a parameter without a gradient is left alone (torch skips grad=None)", () => {
    const opt = adamw();
    const params = initParams();
    const grads = gradsAt(0);
    grads.delete("b");
    opt.step(params, grads);
    expect(Array.from(params.get("b")!)).toEqual(Array.from(fixture.float32("init.b")));
    expect(opt.m.has("b")).toBe(false);
  });
});

describe("learning-rate schedules", () => {
  const base: ScheduleConfig = { name: "constant", lr: 1, warmupSteps: 4, totalSteps: 12, minLr: 0.1 };

  test("constant", () => {
    for (const s of [0, 3, 100]) expect(learningRate(base, s)).toBe(1);
  });

  test("linear warm-up, first step at lr / warmupSteps, then flat", () => {
    const c = { ...base, name: "warmup" as const };
    expect([0, 1, 2, 3, 4, 50].map((s) => learningRate(c, s))).toEqual([0.25, 0.5, 0.75, 1, 1, 1]);
  });

  test("cosine after warm-up, down to minLr at totalSteps and held there", () => {
    const c = { ...base, name: "cosine" as const };
    const lr = (s: number) => learningRate(c, s);
    expect(lr(0)).toBeCloseTo(0.25, 12);
    expect(lr(4)).toBeCloseTo(1, 12); // progress 0
    expect(lr(6)).toBeCloseTo(0.1 + 0.45 * (1 + Math.cos(Math.PI / 4)), 12); // progress 2/8
    expect(lr(8)).toBeCloseTo(0.55, 12); // halfway
    expect(lr(12)).toBeCloseTo(0.1, 12);
    expect(lr(40)).toBeCloseTo(0.1, 12);
    for (let s = 4; s < 12; s++) expect(lr(s + 1)).toBeLessThan(lr(s));
  });
});

describe("gradient accumulation", () => {
  /** Gradient of mean((x W^T + bias - y)^2) for a batch of `n` rows. */
  async function linearGrads(n: number, x: Float32Array, y: Float32Array, W: Float32Array, bias: Float32Array) {
    const g = new Graph();
    const w = g.param("W", [3, 4]);
    const b = g.param("bias", [3]);
    const xs = g.input("x", [n, 4]);
    const ys = g.input("y", [n, 3]);
    const d = G.sub(G.linear(xs, w, b), ys);
    const loss = G.reduceMean(G.mul(d, d), undefined, false);
    const [gw, gb] = G.grad(loss, [w, b]);
    const out = await (await G.compile({ gw: gw!, gb: gb! })).run({ W, bias, x, y });
    return new Map([["W", Float32Array.from(out.gw as Float32Array)], ["bias", Float32Array.from(out.gb as Float32Array)]]);
  }

  test("the mean of equal micro-batch gradients is the full-batch gradient of the mean loss", async () => {
    const rng = new Rng(7);
    const x = rng.normals(8 * 4), y = rng.normals(8 * 3), W = rng.normals(12), bias = rng.normals(3);
    const full = await linearGrads(8, x, y, W, bias);
    const acc = new GradAccumulator();
    for (let k = 0; k < 4; k++) acc.add(await linearGrads(2, x.subarray(k * 8, (k + 1) * 8), y.subarray(k * 6, (k + 1) * 6), W, bias));
    expect(acc.count).toBe(4);
    const mean = acc.take();
    for (const n of ["W", "bias"]) expect(maxAbs(mean.get(n)!, full.get(n)!)).toBeLessThan(1e-6);
    // take() resets; one micro-batch is returned as is (a copy, not the caller's array).
    expect(acc.count).toBe(0);
    expect(acc.sum.size).toBe(0);
    const one = new Map([["W", Float32Array.from([1, 2])]]);
    acc.add(one);
    one.get("W")![0] = 99;
    expect(Array.from(acc.take().get("W")!)).toEqual([1, 2]);
  });
});

describe("NaN/Inf guard", () => {
  test("allFinite", () => {
    expect(allFinite([])).toBe(true);
    expect(allFinite([new Float32Array(0), Float32Array.from([0, -1, 3.4e38])])).toBe(true);
    expect(allFinite([Float32Array.from([1]), Float32Array.from([2, NaN])])).toBe(false);
    expect(allFinite([Float32Array.from([Infinity])])).toBe(false);
    expect(allFinite(new Map([["a", Float32Array.from([-Infinity])]]).values())).toBe(false);
  });
});

describe("checkpoints", () => {
  const root = mkdtempSync(join(tmpdir(), "patchdpo-ckpt-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  const withShapes = (params: Map<string, Float32Array>) =>
    new Map([...params].map(([n, data]) => [n, { shape: [...SHAPES[n as "w" | "b"]], data }]));

  test("save -> load -> restoreOptimizer gives the identical next step", async () => {
    const opt = adamw();
    const params = initParams();
    for (let s = 0; s < 3; s++) opt.step(params, gradsAt(s));
    const rng = new Rng(123);
    rng.normal(); // leaves a spare normal in the state
    const dir = join(root, "run", "step-3");
    await saveCheckpoint(dir, withShapes(params), opt, { step: 3, rng: rng.state(), config: { lr: CONFIG.lr, note: "test" } });

    const ck = await loadCheckpoint(dir);
    expect(ck.adamStep).toBe(3);
    expect(ck.state.step).toBe(3);
    expect(ck.state.config).toEqual({ lr: CONFIG.lr, note: "test" });
    expect(ck.shapes.get("w")).toEqual([3, 4]);
    expect(ck.shapes.get("b")).toEqual([5]);
    const resumedRng = Rng.fromState(ck.state.rng);
    expect(resumedRng.normal()).toBe(rng.normal());
    expect(resumedRng.nextU32()).toBe(rng.nextU32());

    const opt2 = adamw();
    restoreOptimizer(opt2, ck);
    const resumed = ck.params;
    for (let s = 3; s < 5; s++) {
      opt.step(params, gradsAt(s));
      opt2.step(resumed, gradsAt(s));
    }
    for (const n of NAMES) {
      expect(Array.from(resumed.get(n)!)).toEqual(Array.from(params.get(n)!));
      expect(Array.from(opt2.m.get(n)!)).toEqual(Array.from(opt.m.get(n)!));
      expect(Array.from(opt2.v.get(n)!)).toEqual(Array.from(opt.v.get(n)!));
      // And both still follow torch.
      expect(maxAbs(resumed.get(n)!, expectedAt("params", n, 4))).toBeLessThan(1e-6);
    }
  });

  test("latestCheckpoint picks the highest complete step-N and ignores folders without state.json", async () => {
    const dir = join(root, "latest");
    expect(latestCheckpoint(dir)).toBeUndefined(); // no folder yet
    const opt = adamw();
    const params = initParams();
    opt.step(params, gradsAt(0));
    for (const step of [9, 10]) await saveCheckpoint(join(dir, `step-${step}`), withShapes(params), opt, { step, rng: new Rng(1).state(), config: {} });
    // An interrupted save: weights written, state.json (written last) missing.
    const partial = join(dir, "step-11");
    await saveCheckpoint(partial, withShapes(params), opt, { step: 11, rng: new Rng(1).state(), config: {} });
    rmSync(join(partial, "state.json"));
    mkdirSync(join(dir, "step-12"));
    mkdirSync(join(dir, "best"));
    expect(latestCheckpoint(dir)).toBe(join(dir, "step-10")); // numeric order: 10 > 9
    rmSync(join(dir, "step-9"), { recursive: true });
    rmSync(join(dir, "step-10"), { recursive: true });
    expect(latestCheckpoint(dir)).toBeUndefined();
  });
});
