// The memory planner (lib/graph/memory.ts, lib/train/plan.ts): liveness on graphs whose answer is
// known by hand, the planner's graphs against the trainer's own, a prediction against a measured
// peak, --plan without weights or sessions, and its errors.
import { describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import * as G from "../../lib/graph/index.ts";
import { graphMemory } from "../../lib/graph/memory.ts";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { lower } from "../../lib/graph/lower.ts";
import { vitForward, vitParamShapes } from "../../lib/models/vit.ts";
import { Params } from "../../lib/nn/params.ts";
import { ShapeSource } from "../../lib/nn/shape-source.ts";
import { DiffusionTrainer } from "../../lib/train/diffusion.ts";
import { diffusionSessions, encoderFromSpec, modelShapesFromFolder, planDiffusionStep, planDpoEpoch, planStep, projectionFromFile } from "../../lib/train/plan.ts";
import { VIT_S16 } from "./plan-child.ts";

const TINY = "checkpoints/tiny";
const TINY_IP = "checkpoints/tiny/ip-adapter.safetensors";
const trainIp = (n: string) => n.includes("_ip.");

describe("liveness (lib/graph/memory.ts)", () => {
  const N = 1000; // floats: 4000 bytes per tensor
  test("a tensor lives from its producer to its last consumer; views cost nothing; in-place ops reuse", () => {
    // Transposes allocate: at each node its input and output are live, then the input is freed.
    const g = new G.Graph();
    const x = g.input("x", [10, 100]);
    const t1 = G.transpose(x, [1, 0]);
    const t2 = G.transpose(t1, [1, 0]);
    const t3 = G.transpose(t2, [1, 0]);
    const m = graphMemory({ y: t3 });
    expect(m.peakActivationBytes).toBe(2 * 4 * N);
    expect(m.totalActivationBytes).toBe(3 * 4 * N);
    expect(m.outputBytes).toBe(4 * N);
    expect(graphMemory({ y: t3 }, { neverFree: true }).peakActivationBytes).toBe(3 * 4 * N);
    // A tensor read again at the end stays live across the chain.
    const late = graphMemory({ y: G.add(G.transpose(G.transpose(t1, [1, 0]), [1, 0]), t1) });
    expect(late.peakActivationBytes).toBe(3 * 4 * N);
    // Reshape is a view of its input; Exp may run in place into an input that dies with it.
    const g2 = new G.Graph();
    const x2 = g2.input("x", [N]);
    const chain = G.exp(G.reshape(G.exp(G.reshape(G.exp(G.neg(x2)), [10, 100])), [N]));
    expect(graphMemory({ y: chain }).peakActivationBytes).toBe(4 * N);
    expect(graphMemory({ y: chain }).patternBytes).toBeGreaterThanOrEqual(4 * N);
  });

  test("constant folding: a float16 weight cast to float32 is held as float32; weights read by two kernels are packed twice", () => {
    const g = new G.Graph();
    const src = new ShapeSource(new Map([["w", [64, 32]]]), "float16");
    const w = new Params(g, src).get("w", [64, 32]);
    const x = g.input("x", [8, 32]);
    const y = G.linear(x, w);
    const m = graphMemory({ y });
    expect(m.externalBytes).toBe(64 * 32 * 2);
    expect(m.initializerBytes).toBe(64 * 32 * 4);
    expect(m.packedBytes).toBe(0);
    const g2 = new G.Graph();
    const p = new Params(g2, new ShapeSource(new Map([["w", [64, 32]]])), {});
    const w2 = p.get("w", [64, 32]);
    const xin = g2.param("x", [8, 32]);
    const y2 = G.linear(xin, w2);
    const loss = G.reduceSum(G.mul(y2, y2), undefined, false);
    const [gx] = G.grad(loss, [xin]);
    const m2 = graphMemory({ loss, gx: gx! });
    // The forward reads w (or its folded transpose), the backward reads it again: held twice in all.
    expect(m2.packedBytes).toBe(64 * 32 * 4);
    expect(m2.initializerBytes).toBeLessThan(64 * 32 * 4 + 4096); // w + small folded constants
    expect(m2.trainableInputBytes).toBe(8 * 32 * 4);
  });
});

describe("the planner's graphs are the trainer's", () => {
  test("dpo-epoch's train graph and frozen twin: same nodes, ops and inputs as DiffusionTrainer builds", async () => {
    const trainer = new DiffusionTrainer({ model: loadDiffusionModel(TINY), ip: loadIpAdapter(TINY_IP, "mobilenet_v2"), pairs: 2, height: 64, width: 64, objective: "patch-dpo", trainable: trainIp, memArena: true });
    const theirs = await (trainer as unknown as { train: Promise<G.Compiled> }).train;
    const twin = await (trainer as unknown as { forward: Promise<G.Compiled> }).forward;
    const { sessions, trainableValues } = diffusionSessions({
      model: modelShapesFromFolder(TINY), projection: projectionFromFile(TINY_IP), encoder: encoderFromSpec("mobilenet_v2"), pairs: 2, size: 64,
      objective: "patch-dpo", trainable: trainIp, memArena: true, precision: "fp32",
    });
    const ops = (nodes: { opType: string }[]) => nodes.map((n) => n.opType).sort().join();
    for (const [mine, c] of [[sessions[0]!, theirs], [sessions[1]!, twin]] as const) {
      const g = lower(mine.outputs).model.graph;
      const h = c.lowered.model.graph;
      expect(g.node.length).toBe(h.node.length);
      expect(ops(g.node)).toBe(ops(h.node));
      expect(g.input.map((i) => `${i.name}:${JSON.stringify(i.type)}`)).toEqual(h.input.map((i) => `${i.name}:${JSON.stringify(i.type)}`));
    }
    expect(trainableValues).toBe([...trainer.shapes().values()].reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0));
  }, 120_000);
});

// The training run the prediction is checked against (tests/train/plan-child.ts), 6 blocks.
const CHILD = { ...VIT_S16, numLayers: 6 };
function vitStepPlan(batch: number, neverFree = false) {
  const g = new G.Graph();
  const p = new Params(g, new ShapeSource(vitParamShapes(CHILD)), { trainable: () => true });
  const h = vitForward(p, g.input("images", [batch, 3, 224, 224]), CHILD).lastHiddenState;
  const loss = G.reduceMean(G.mul(h, h), undefined, false);
  const names = [...p.trainable.keys()];
  const grads = G.grad(loss, names.map((n) => p.trainable.get(n)!));
  const outputs: Record<string, G.Tensor> = { loss };
  names.forEach((n, i) => (outputs[`grad:${n}`] = grads[i]!));
  const values = names.reduce((s, n) => s + p.trainable.get(n)!.size, 0);
  // The child keeps initWeights' values and its trained copy, one gradient copy, no arena.
  return planStep({ sessions: [{ name: "train graph", outputs }], trainableValues: values, weightCopies: 2, gradCopies: 1, memArena: false, precision: "fp32" }, "cpu", { neverFree });
}

describe("prediction vs a measured peak", () => {
  test("a ViT training step (6 blocks, batch 4, 224 px): predicted within 25% of the measured peak RSS", () => {
    const p = Bun.spawnSync(["bun", "tests/train/plan-child.ts", "--batch", "4", "--layers", "6"], { stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    const measured = (JSON.parse(p.stdout.toString().trim().split("\n").pop()!) as { peakMB: number }).peakMB * 2 ** 20;
    const predicted = vitStepPlan(4).hostBytes;
    const ratio = predicted / measured;
    console.error(`plan.test: ViT 6 blocks batch 4: predicted ${(predicted / 2 ** 20).toFixed(0)} MB, measured ${(measured / 2 ** 20).toFixed(0)} MB, ratio ${ratio.toFixed(3)}`);
    expect(ratio).toBeGreaterThan(0.8);
    expect(ratio).toBeLessThan(1.25);
    // Without liveness (every intermediate kept to the end) the prediction is far off, and the
    // first run's peak is several times the liveness peak.
    expect(vitStepPlan(4, true).hostBytes / measured).toBeGreaterThan(1.5);
    const live = vitStepPlan(4).sessions[0]!.memory.peakActivationBytes;
    const kept = vitStepPlan(4, true).sessions[0]!.memory.peakActivationBytes;
    expect(live).toBeLessThan(0.5 * kept);
  }, 120_000);

  test("more pairs per step predict more memory", () => {
    const at = (batch: number) => planDpoEpoch({ model: TINY, ipAdapter: TINY_IP, imageEncoder: "mobilenet_v2", objective: "patch-dpo", batch, train: "ip", trainable: trainIp, device: "cpu", precision: "fp32" }).plan;
    const [b1, b2, b4] = [at(1), at(2), at(4)];
    expect(b2.hostBytes).toBeGreaterThan(b1.hostBytes);
    expect(b4.hostBytes).toBeGreaterThan(b2.hostBytes);
    // mse has no frozen twin: less than patch-dpo at the same batch.
    const mse = planDpoEpoch({ model: TINY, ipAdapter: TINY_IP, imageEncoder: "mobilenet_v2", objective: "mse", batch: 2, train: "ip", trainable: trainIp, device: "cpu", precision: "fp32" }).plan;
    expect(mse.hostBytes).toBeLessThan(b2.hostBytes);
    // fp16 halves the graphs' floating tensors.
    const half = planDpoEpoch({ model: TINY, ipAdapter: TINY_IP, imageEncoder: "mobilenet_v2", objective: "patch-dpo", batch: 2, train: "ip", trainable: trainIp, device: "cuda", precision: "fp16" }).plan;
    const full = planDpoEpoch({ model: TINY, ipAdapter: TINY_IP, imageEncoder: "mobilenet_v2", objective: "patch-dpo", batch: 2, train: "ip", trainable: trainIp, device: "cuda", precision: "fp32" }).plan;
    expect(half.deviceBytes!).toBeLessThan(full.deviceBytes!);
  }, 60_000);

  test("recompute (gradient checkpointing of the UNet blocks) predicts less activation memory", () => {
    const setup = {
      model: modelShapesFromFolder(TINY), projection: projectionFromFile(TINY_IP), encoder: encoderFromSpec("mobilenet_v2"), pairs: 4, size: 64,
      objective: "patch-dpo" as const, trainable: trainIp, memArena: false, precision: "fp32" as const,
    };
    const plain = planDiffusionStep(setup).sessions[0]!.memory;
    const recomputed = planDiffusionStep({ ...setup, recompute: true }).sessions[0]!.memory;
    expect(recomputed.nodes).toBeGreaterThan(plain.nodes); // the recomputed forward copies
    expect(recomputed.peakActivationBytes).toBeLessThan(plain.peakActivationBytes);
  }, 60_000);

  test("frozen weights kept only as mapped (CompileOptions.mappedWeights) drop the pre-packed copies", () => {
    const setup = {
      model: modelShapesFromFolder(TINY), projection: projectionFromFile(TINY_IP), encoder: encoderFromSpec("mobilenet_v2"), pairs: 2, size: 64,
      objective: "patch-dpo" as const, trainable: trainIp, memArena: false, precision: "fp32" as const,
    };
    const packed = planDiffusionStep(setup);
    const mapped = planDiffusionStep({ ...setup, mappedWeights: true });
    const prepacked = packed.sessions[0]!.memory.packedBytes;
    expect(prepacked).toBeGreaterThan(0);
    expect(packed.hostBytes - mapped.hostBytes).toBe(prepacked);
  }, 60_000);
});

describe("--plan reads no weights and runs nothing", () => {
  test("a model folder without weight files plans the same step as the folder with them, and no session is made", () => {
    const dir = mkdtempSync(join(tmpdir(), "plan-"));
    try {
      cpSync(TINY, dir, { recursive: true, filter: (f) => !f.endsWith(".safetensors") });
      const create = ort.InferenceSession.create;
      let sessions = 0;
      (ort.InferenceSession as { create: unknown }).create = (...a: unknown[]) => {
        sessions++;
        return (create as (...x: unknown[]) => unknown).apply(ort.InferenceSession, a);
      };
      try {
        const opts = { ipAdapter: TINY_IP, imageEncoder: "mobilenet_v2", objective: "patch-dpo" as const, batch: 2, train: "ip", trainable: trainIp, device: "cpu", precision: "fp32" as const };
        const without = planDpoEpoch({ ...opts, model: dir }).plan;
        const withWeights = planDpoEpoch({ ...opts, model: TINY }).plan;
        expect(without.stepHostBytes).toBe(withWeights.stepHostBytes);
        expect(sessions).toBe(0);
      } finally {
        (ort.InferenceSession as { create: unknown }).create = create;
      }
      // The CLI: no --run, no weights, exit 0.
      const p = Bun.spawnSync(["bun", "scripts/dpo-epoch.ts", "--plan", "--model", dir, "--ip-adapter", TINY_IP, "--image-encoder", "mobilenet_v2", "--batch", "2"], { stdout: "pipe", stderr: "pipe" });
      expect(p.stderr.toString()).toBe("");
      expect(p.exitCode).toBe(0);
      expect(p.stdout.toString()).toContain("predicted peak host RSS");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("the authors' setting plans from configs alone (SDXL, 1024 px, 4 pairs, IP-Adapter-Plus preset) and says whether it fits", () => {
    const p = Bun.spawnSync(["bun", "scripts/dpo-epoch.ts", "--plan", "--model", "examples/configs/sdxl-base", "--ip-adapter", "ip-adapter-plus-sdxl", "--image-encoder", "examples/configs/clip-vit-h-14", "--size", "1024", "--batch", "4", "--device", "cuda"], { stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    const out = p.stdout.toString();
    expect(out).toContain("128x128 latents");
    expect(out).toMatch(/80 GB GPU .*: (fits|does NOT fit)/);
    expect(out).toMatch(/141 GB GPU .*: (fits|does NOT fit)/);
    // --recompute reaches the plan through the CLI.
    const tiny = (...extra: string[]) => Bun.spawnSync(["bun", "scripts/dpo-epoch.ts", "--plan", "--model", TINY, "--ip-adapter", TINY_IP, "--image-encoder", "mobilenet_v2", "--batch", "4", ...extra], { stdout: "pipe", stderr: "pipe" }).stdout.toString();
    const peak = (s: string) => Number(/train graph: activations .*first run's peak ([\d.]+) MiB/.exec(s)?.[1]);
    const [plain, rc] = [tiny(), tiny("--recompute")];
    expect(rc).toContain("--recompute");
    expect(peak(rc)).toBeLessThan(peak(plain));
  }, 60_000);
});

describe("finetune-encoder --plan", () => {
  test("plans a ViT folder's step from its shapes; more view pairs predict more", () => {
    const plan = (...extra: string[]) => {
      const p = Bun.spawnSync(["bun", "scripts/finetune-encoder.ts", "--plan", "--encoder", "tests/fixtures/vit/vit", ...extra], { stdout: "pipe", stderr: "pipe" });
      expect(p.stderr.toString()).toBe("");
      expect(p.exitCode).toBe(0);
      return Number(/predicted peak host RSS: ([\d.]+) MiB/.exec(p.stdout.toString())?.[1]);
    };
    const [b2, b8] = [plan("--batch", "2"), plan("--batch", "8")];
    expect(b8).toBeGreaterThan(b2);
    const bad = Bun.spawnSync(["bun", "scripts/finetune-encoder.ts", "--plan", "--encoder", "mobilenet_v2", "--precision", "fp12"], { stdout: "pipe", stderr: "pipe" });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr.toString()).toContain("--precision fp12");
  }, 60_000);
});

describe("errors", () => {
  const base = { model: TINY, ipAdapter: TINY_IP, imageEncoder: "mobilenet_v2", objective: "patch-dpo" as const, batch: 2, train: "ip", trainable: trainIp, device: "cpu", precision: "fp32" as const };
  test("bad flags and missing files are named", () => {
    expect(() => planDpoEpoch({ ...base, size: 60 })).toThrow(/--size 60: .* needs a multiple of 8 \(VAE factor 4 x UNet downsampling 2\)/);
    expect(() => planDpoEpoch({ ...base, precision: "fp8" as never })).toThrow(/--precision fp8: expected fp32 \| fp16 \| bf16/);
    expect(() => planDpoEpoch({ ...base, batch: 0 })).toThrow(/--batch 0/);
    expect(() => planDpoEpoch({ ...base, trainable: undefined, train: "all" })).toThrow(/--train all: expected ip \| ip\+proj/);
    expect(() => planDpoEpoch({ ...base, ipAdapter: "nope.safetensors" })).toThrow(/--ip-adapter nope.safetensors: no such file; .*preset/);
    expect(() => planDpoEpoch({ ...base, model: "/nonexistent/model" })).toThrow(/\/nonexistent\/model\/model_index.json is missing/);
  });

  test("the CLI: bad usage exits 2, a missing model folder exits 1, each with a message", () => {
    const run = (...args: string[]) => Bun.spawnSync(["bun", "scripts/dpo-epoch.ts", "--plan", ...args], { stdout: "pipe", stderr: "pipe" });
    const bad = run("--model", TINY, "--ip-adapter", TINY_IP, "--image-encoder", "mobilenet_v2", "--precision", "fp8");
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr.toString()).toContain("--precision fp8");
    const missing = run("--model", "/nonexistent/model", "--ip-adapter", TINY_IP, "--image-encoder", "mobilenet_v2");
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr.toString()).toContain("model_index.json is missing");
    const noModel = run("--ip-adapter", TINY_IP, "--image-encoder", "mobilenet_v2");
    expect(noModel.exitCode).toBe(2);
    expect(noModel.stderr.toString()).toContain("--plan needs --model");
  }, 60_000);
});
