// --precision (lib/graph/precision.ts) and half-precision frozen weights (session.ts keepHalfWeights):
//   a. autocast's choice of dtype per op, on the lowered model (everywhere);
//   b. which providers run which precision, and the refusals;
//   c. an fp16 checkpoint's frozen weights stay fp16 in the graph ONNX Runtime runs on webgpu (its
//      optimized model), where before they were folded into float32 copies (still so on the cpu);
//   d. parity of --precision fp16 against fp32 on the tiny models: a UNet forward and DDIM steps, a
//      ViT block forward and backward, a patch-dpo training step's loss, logs and gradients, on
//      webgpu (lavapipe) and on cpu, against fp32 on cpu.
// Tolerances: |fp16 - fp32| <= tol x the tensor's largest |fp32 value| (webgpu-helpers' expectClose);
// the measured errors are in the test names' comments and the README's Precision paragraph.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import { DDIMScheduler } from "../../lib/diffusion/ddim.ts";
import * as G from "../../lib/graph/index.ts";
import { type Device, Graph, type Precision, type Tensor } from "../../lib/graph/index.ts";
import { openSafetensors, writeSafetensors } from "../../lib/io/safetensors.ts";
import { unetConfigFromJson, unetForward } from "../../lib/models/unet.ts";
import { Params, SafetensorsSource } from "../../lib/nn/params.ts";
import { decodeModel } from "../../lib/onnx/index.ts";
import { Rng } from "../../lib/rng.ts";
import { DiffusionTrainer, type PairExample } from "../../lib/train/diffusion.ts";
import { mulberry32 } from "./reference.ts";
import { type Diff, NO_WEBGPU, expectClose, fmtDiff, noteWebgpuSkip, worst } from "./webgpu-helpers.ts";
import { TINY_SD_SPEC, dinov2LayerGraph } from "./device-fixtures.ts";

setDefaultTimeout(300_000);
noteWebgpuSkip("tests/graph/precision.test.ts");

const normals = (seed: number, n: number, scale = 1) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()));
};
const maxAbs = (x: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
  return m;
};

/** Runs `fn` with the process-wide precision set (what a script's --precision does). */
async function withPrecision<T>(p: Precision, device: Device, fn: () => Promise<T>): Promise<T> {
  const restore = G.usePrecision(p, device, () => {});
  try {
    return await fn();
  } finally {
    restore();
  }
}

const SPEC = TINY_SD_SPEC;

let dir: string;
let unet16: string; // the model folder's UNet, saved as F16 (an fp16 checkpoint)
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "patchdpo-precision-"));
  await writeModelFolder(join(dir, "model"), SPEC, 1);
  const f = openSafetensors(join(dir, "model", "unet", "diffusion_pytorch_model.safetensors"));
  unet16 = join(dir, "unet-fp16.safetensors");
  await writeSafetensors(unet16, Object.fromEntries(f.names().map((n) => [n, { dtype: "F16" as const, shape: f.info(n).shape, data: f.float32(n) }])));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const B = 2, L = 8, HW = 8;
/** The tiny UNet's forward over the fp16 checkpoint (its weights are frozen external initializers). */
function unetGraph(): { pred: Tensor } {
  const g = new Graph();
  const cfg = unetConfigFromJson(SPEC.unet);
  const sample = g.input("sample", [B, 12, HW, HW]);
  const timestep = g.input("timestep", [B]);
  const encoderHiddenStates = g.input("encoder_hidden_states", [B, L, 32]);
  return { pred: unetForward(new Params(g, new SafetensorsSource([unet16])), cfg, { sample, timestep, encoderHiddenStates }) };
}

// ------------------------------------------------------------------------------- a. autocast

describe("autocast: the dtype of each op", () => {
  test("matmuls in fp16, softmax / layer norm / reductions in float32, float32 at the edges, a stored fp16 weight used as it is", async () => {
    const file = join(dir, "w.safetensors");
    await writeSafetensors(file, { w: { dtype: "F16", shape: [8, 4], data: normals(1, 32) } });
    const g = new Graph();
    const x = g.input("x", [3, 4]);
    const frozen = new Params(g, new SafetensorsSource([file])).get("w", [8, 4]); // Cast(fp16 file weight -> float32)
    const trained = g.param("v", [8, 8]);
    const h = G.linear(x, frozen); // Gemm
    const s = G.softmax(G.matmul(h, trained), -1); // MatMul, then Softmax
    // The norms read fp16 matmul / conv outputs: autocast must cast them up, not let them follow.
    const y = G.layerNorm(G.matmul(s, trained), g.constant(new Float32Array(8).fill(1), [8]), null);
    const img = G.groupNorm(G.conv(G.reshape(y, [1, 3, 2, 4]), g.constant(normals(9, 4 * 3 * 9), [4, 3, 3, 3]), null, { padding: 1 }), 2, null, null);
    const loss = G.add(G.reduceMean(G.mul(y, y), undefined, false), G.reduceMean(img, undefined, false));
    const [dv] = G.grad(loss, [trained]);
    const m = G.lower(G.autocast({ loss, dv: dv! }, "fp16")).model;
    const dtype = new Map<string, number>();
    for (const t of m.graph.initializer) dtype.set(t.name, t.dataType as number);
    for (const v of [...m.graph.input, ...m.graph.output]) dtype.set(v.name, v.type!.tensorType!.elemType as number);
    // Follow every node's output dtype (Cast's "to", else its first input's).
    for (const n of m.graph.node) {
      const to = n.attribute.find((a) => a.name === "to")?.i;
      const d = n.opType === "Cast" ? Number(to) : n.opType === "Shape" ? 7 : (n.input.map((i) => dtype.get(i)).find((v) => v === 1 || v === 10) ?? dtype.get(n.input[0]!)!);
      for (const o of n.output) dtype.set(o, d);
    }
    const F16 = 10, F32 = 1;
    const inDType = (op: string) => m.graph.node.filter((n) => n.opType === op).map((n) => dtype.get(n.input[0]!));
    expect(inDType("Gemm")).toEqual([F16]);
    expect(new Set(inDType("MatMul"))).toEqual(new Set([F16])); // forward and backward matmuls
    expect(inDType("Softmax")).toEqual([F32]);
    expect(inDType("LayerNormalization")).toEqual([F32]);
    expect(inDType("InstanceNormalization")).toEqual([F32]);
    expect(inDType("Conv")).toContain(F16);
    expect(new Set(inDType("ReduceMean"))).toEqual(new Set([F32]));
    // The stored fp16 weight feeds the Gemm directly: no Cast reads it.
    const w = m.graph.initializer.find((t) => t.name === "w")!;
    expect(w.dataType).toBe(F16);
    expect(m.graph.node.filter((n) => n.input.includes("w")).map((n) => n.opType)).toEqual(["Gemm"]);
    // The edge: the fed input, the trainable weight, the loss and the gradient are float32.
    for (const v of [...m.graph.input, ...m.graph.output]) expect(`${v.name}:${v.type!.tensorType!.elemType}`).toBe(`${v.name}:${F32}`);
  });

  test("fp32 leaves the graph as it is; bf16 computes only MatMul and Gemm in bf16", () => {
    const g = new Graph();
    const x = g.input("x", [1, 2, 4, 4]);
    const y = G.matmul(G.reshape(G.conv(x, g.constant(normals(2, 2 * 2 * 9), [2, 2, 3, 3]), null, { padding: 1 }), [1, 2, 16]), g.constant(normals(3, 16 * 3), [16, 3]));
    expect(G.autocast({ y }, "fp32").y).toBe(y);
    const m = G.lower(G.autocast({ y }, "bf16")).model;
    const casts = m.graph.node.filter((n) => n.opType === "Cast").map((n) => Number(n.attribute.find((a) => a.name === "to")!.i));
    expect(casts.filter((t) => t === 16).length).toBe(2); // the MatMul's two inputs
    const conv = m.graph.node.find((n) => n.opType === "Conv")!;
    expect(conv.input.every((i) => m.graph.input.some((v) => v.name === i) || m.graph.initializer.some((t) => t.name === i && t.dataType === 1))).toBe(true);
  });
});

describe("the float32 list, where fp16 would go wrong", () => {
  // Inputs that come out of an fp16 matmul, and what the ops of the float32 list make of them,
  // checked against the same ops computed on the host (in float64) from those very fp16 inputs:
  // a sum of squares of 65536 values of size ~2 (~2.6e5, past fp16's largest finite value, 65504),
  // and a softmax over 4096 keys (fp16 alone would round each probability to 4.9e-4 of itself).
  const g = new Graph();
  const x = g.input("x", [128, 64]);
  const w = g.constant(normals(11, 64 * 512, 1 / 4), [64, 512]);
  const h = G.matmul(x, w); // [128, 512], fp16 under autocast
  const logits = G.reshape(G.mul(h, 4), [16, 4096]);
  const outs = { h, logits, sumSq: G.reduceSum(G.mul(h, h), undefined, false), probs: G.softmax(logits, -1) };
  const feeds = { x: normals(12, 128 * 64) };
  const devices: Device[] = NO_WEBGPU === null ? ["webgpu", "cpu"] : ["cpu"];
  test("a sum of squares past fp16's range and a 4096-key softmax, of fp16 inputs: float32-exact (tolerance 1e-4 of scale; measured below 1e-6 on webgpu and cpu)", async () => {
    for (const device of devices) {
      const got = await (await G.compile(outs, { device, precision: "fp16", threads: 1 })).run(feeds);
      const hv = got.h as Float32Array, lv = got.logits as Float32Array;
      let ss = 0;
      for (const v of hv) ss += v * v;
      expect(ss).toBeGreaterThan(65504);
      const probs = new Float64Array(lv.length);
      for (let r = 0; r < 16; r++) {
        const row = lv.subarray(r * 4096, (r + 1) * 4096);
        let m = -Infinity, z = 0;
        for (const v of row) m = Math.max(m, v);
        for (const v of row) z += Math.exp(v - m);
        for (let k = 0; k < 4096; k++) probs[r * 4096 + k] = Math.exp(row[k]! - m) / z;
      }
      judge(`fp16 on ${device}: float32-list ops against float64 on the host from the same fp16 inputs`, [["sum of squares", got.sumSq as Float32Array, [ss]], ["softmax over 4096 keys", got.probs as Float32Array, probs]], 1e-4);
    }
  });
});

describe("a weight's gradient leaves fp16 at once", () => {
  // What an in-graph AdamW does with a gradient (dpo-epoch --state device): v' = b2 v + (1 - b2) g^2.
  // A gradient of ~1e-4 squares to ~1e-8, below fp16's smallest subnormal (6e-8): in fp16 it is
  // flushed to 0 or kept to one or two bits. The gradient comes out of a matmul in fp16; autocast
  // must square it in float32.
  test("g * g of an fp16 matmul's gradient, in float32 (tolerance 1e-5 of scale; measured 5.6e-8 on webgpu and cpu; 1.0, all flushed to 0, when the square stays fp16)", async () => {
    const g = new Graph();
    const x = g.input("x", [4, 64]);
    const w = g.param("w", [64, 32]);
    const loss = G.reduceSum(G.mul(G.matmul(x, w), g.constant(normals(13, 4 * 32, 2e-5), [4, 32])), undefined, false);
    const [dw] = G.grad(loss, [w]);
    const v = g.input("v", [64, 32]);
    const vNext = G.add(G.mul(v, 0.999), G.mul(G.mul(dw!, dw!), 0.001));
    const feeds = { x: normals(14, 4 * 64), v: new Float32Array(64 * 32) }; // (dw does not depend on w)
    for (const device of NO_WEBGPU === null ? (["webgpu", "cpu"] as Device[]) : (["cpu"] as Device[])) {
      const got = await (await G.compile({ dw: dw!, vNext }, { device, precision: "fp16", threads: 1 })).run(feeds);
      const want = Float32Array.from(got.dw as Float32Array, (d) => 0.001 * d * d);
      expect(maxAbs(got.dw as Float32Array)).toBeLessThan(1e-3);
      judge(`fp16 on ${device}: (1 - b2) g^2 from the fp16 gradient`, [["v'", got.vNext as Float32Array, want]], 1e-5);
    }
  });
});

describe.skipIf(NO_WEBGPU !== null)("webgpu's lowering rules in fp16", () => {
  // lib/graph/webgpu.ts rewrites what the provider gets wrong; two rules emit float constants,
  // which must come in the node's dtype. The input gradient of a depthwise conv with a channel
  // multiplier is a grouped ConvTranspose (wrong values on webgpu unless rewritten), and MaxPool's
  // gradient reads its Indices output (refused on webgpu unless rewritten): MobileNetV2's backward.
  test("depthwise conv x2 multiplier + MaxPool, input gradient: fp16 on webgpu vs fp32 on cpu (tolerance 1e-2 of scale; measured 6.5e-4)", async () => {
    const g = new Graph();
    const x = g.param("x", [1, 4, 6, 6]);
    const y = G.maxPool(G.conv(x, g.constant(normals(16, 8 * 9), [8, 1, 3, 3]), null, { groups: 4, padding: 1 }), 2, { padding: [0, 0, 1, 1], stride: 2 });
    const loss = G.reduceSum(G.mul(y, g.constant(normals(17, y.size), y.shape)), undefined, false);
    const [dx] = G.grad(loss, [x]);
    const feeds = { x: normals(18, 4 * 36) };
    const ref = await (await G.compile({ y, dx: dx! }, { precision: "fp32", threads: 1 })).run(feeds);
    const got = await (await G.compile({ y, dx: dx! }, { device: "webgpu", precision: "fp16" })).run(feeds);
    judge("fp16 on webgpu vs fp32 on cpu, depthwise x2 + MaxPool", [["y", got.y as Float32Array, ref.y as Float32Array], ["dx", got.dx as Float32Array, ref.dx as Float32Array]], 1e-2);
  });
});

// ------------------------------------------------------------------------------- b. providers

describe("which provider runs which precision", () => {
  test("bf16 is refused on cpu and webgpu with what to use instead; fp16 on cpu runs with a note", async () => {
    for (const device of ["cpu", "webgpu"] as Device[]) {
      expect(() => G.usePrecision("bf16", device)).toThrow(/--precision bf16 is not supported on/);
      await expect(G.compile(unetGraph(), { device: "cpu", precision: "bf16" })).rejects.toThrow(/use fp16/);
    }
    const lines: string[] = [];
    G.usePrecision("fp16", "cpu", (l) => lines.push(l))();
    expect(lines.join()).toMatch(/computes them in float32 between Casts/);
    expect(G.precisionSupport("cuda", "bf16").problem).toBeNull();
    expect(G.currentPrecision()).toBe("fp32"); // restored
  });
});

// ------------------------------------------------------------------------------- c. frozen weights

/** Bytes of the optimized model's initializers by dtype (1 float32, 10 float16). */
function initializerBytes(path: string): Record<number, number> {
  const m = decodeModel(readFileSync(path));
  const out: Record<number, number> = {};
  const size: Record<number, number> = { 1: 4, 10: 2, 16: 2, 7: 8, 6: 4, 9: 1 };
  for (const t of m.graph.initializer) {
    const n = t.dims.reduce((a, b) => a * Number(b), 1);
    out[t.dataType as number] = (out[t.dataType as number] ?? 0) + n * (size[t.dataType as number] ?? 0);
  }
  return out;
}

describe("an fp16 checkpoint's frozen weights", () => {
  const fileBytes = () => {
    const f = openSafetensors(unet16);
    return f.names().reduce((s, n) => s + f.info(n).byteLength, 0);
  };

  test.skipIf(NO_WEBGPU !== null)("webgpu, fp32 compute: ORT keeps every weight fp16 (no float32 copy); the graph casts them when it runs", async () => {
    const out = join(dir, "opt-webgpu-fp32.onnx");
    const c = await G.compile(unetGraph(), { device: "webgpu", precision: "fp32", optimizedModelFilePath: out });
    const bytes = initializerBytes(out);
    const weights = fileBytes();
    console.log(`tiny UNet, fp16 checkpoint (${weights} bytes), webgpu fp32: optimized model holds ${bytes[10] ?? 0} bytes fp16, ${bytes[1] ?? 0} bytes float32 initializers`);
    expect(bytes[10]).toBe(weights);
    // What float32 remains is the model's own small constants (GroupNorm's ones and zeros, scalars), not weights.
    expect(bytes[1] ?? 0).toBeLessThan(weights / 20);
    // And it computes what the float32 weights compute.
    const feeds = { sample: normals(4, B * 12 * HW * HW), timestep: Float32Array.of(500, 20), encoder_hidden_states: normals(5, B * L * 32) };
    const cpu = await (await G.compile(unetGraph(), { threads: 1 })).run(feeds);
    expectClose("pred", (await c.run(feeds)).pred as Float32Array, cpu.pred as Float32Array, 1e-4);
  });

  test.skipIf(NO_WEBGPU !== null)("webgpu, fp16 compute: the same weights, fp16, read by the fp16 kernels", async () => {
    const out = join(dir, "opt-webgpu-fp16.onnx");
    await G.compile(unetGraph(), { device: "webgpu", precision: "fp16", optimizedModelFilePath: out });
    const bytes = initializerBytes(out);
    // GroupNorm's and LayerNorm's affine weights (float32 ops) may come out as small float32 copies.
    expect(bytes[10]).toBeGreaterThan(0.95 * fileBytes());
    expect(bytes[1] ?? 0).toBeLessThan(fileBytes() / 20);
  });

  test("cpu, fp32 compute: ORT folds the Casts into float32 copies (its kernels want float32; the CPU is not where the memory is short)", async () => {
    const out = join(dir, "opt-cpu-fp32.onnx");
    await G.compile(unetGraph(), { device: "cpu", precision: "fp32", optimizedModelFilePath: out, threads: 1 });
    const bytes = initializerBytes(out);
    expect(bytes[1]).toBeGreaterThanOrEqual(2 * fileBytes());
  });
});

describe("a forward computes alike in an inference graph and in a training graph", () => {
  // patch-dpo's reference prediction comes from a forward-only twin of the training graph; at
  // theta = reference its margins must be 0, so both must round alike. autocast decides each op's
  // dtype from its inputs only; compile() lowers ORT's optimization level for half-precision graphs
  // with trainable inputs ("basic" on GPUs, "disabled" on cpu), because ORT's extended fusions
  // depend on the consumers around a node (a backward pass blocks some) and round differently in fp16.
  const build = (train: boolean) => {
    const g = new Graph();
    const p = new Params(g, new SafetensorsSource([unet16]), { trainable: (n) => n.includes("attn2.to_k") || n.includes("attn2.to_v") });
    const sample = g.input("sample", [B, 12, HW, HW]), timestep = g.input("timestep", [B]), ehs = g.input("encoder_hidden_states", [B, L, 32]);
    const pred = unetForward(p, unetConfigFromJson(SPEC.unet), { sample, timestep, encoderHiddenStates: ehs });
    const names = [...p.trainable.keys()];
    if (!train) return { outs: { pred } as Record<string, Tensor>, names };
    const d = G.sub(pred, g.input("target", pred.shape));
    const loss = G.reduceMean(G.mul(d, d), undefined, false);
    const outs: Record<string, Tensor> = { pred, loss };
    G.grad(loss, [...p.trainable.values()]).forEach((gr, i) => (outs[`grad.${i}`] = gr!));
    return { outs, names };
  };
  test("fp16 UNet prediction: the forward-only graph = the training graph's, bit for bit, on every device (with ORT's \"all\" level: max abs 1.1e-2 on webgpu, 2.0e-3 on cpu)", async () => {
    const fwd = build(false), train = build(true);
    const src = new SafetensorsSource([unet16]);
    const feeds: Record<string, Float32Array> = { sample: normals(21, B * 12 * HW * HW), timestep: Float32Array.of(500, 20), encoder_hidden_states: normals(22, B * L * 32) };
    for (const n of fwd.names) feeds[n] = src.float32(n);
    for (const device of NO_WEBGPU === null ? (["webgpu", "cpu"] as Device[]) : (["cpu"] as Device[])) {
      const a = (await (await G.compile(fwd.outs, { device, precision: "fp16", threads: 1 })).run(feeds)).pred as Float32Array;
      const b = (await (await G.compile(train.outs, { device, precision: "fp16", threads: 1 })).run({ ...feeds, target: normals(23, a.length) })).pred as Float32Array;
      const d = expectClose(`${device} fp16: forward graph vs training graph`, b, a, 0);
      // What the default level would do: the reason for the choice (fails if ORT stops fusing differently).
      const c = (await (await G.compile(train.outs, { device, precision: "fp16", threads: 1, optimization: "all" })).run({ ...feeds, target: normals(23, a.length) })).pred as Float32Array;
      const all = expectClose(`${device} fp16, "all"`, c, a, 1e30);
      console.log(`fp16 on ${device}: forward-only vs training graph prediction ${fmtDiff(d)}; with ORT's "all" level ${fmtDiff(all)}`);
      expect(all.abs).toBeGreaterThan(0);
    }
  });
});

// ------------------------------------------------------------------------------- d. parity

/** |have - want| against max(max |want|, floor), printed per tensor, then checked against `tol`. */
function judge(label: string, pairs: [string, ArrayLike<number>, ArrayLike<number>, number?][], tol: number): Diff {
  const ds = pairs.map(([k, have, want, floor]) => ({ k, d: expectClose(k, have, want, 1e30, floor ?? 0) }));
  const bad = ds.filter(({ d }) => !(d.rel <= tol));
  console.log(`${label}: ${ds.map(({ k, d }) => `${k} ${d.rel.toExponential(1)}`).join(", ")}`);
  expect(bad.map(({ k, d }) => `${k}: ${fmtDiff(d)}`), `${label}: tolerance ${tol}`).toEqual([]);
  return worst(ds.map(({ d }) => d));
}

interface Run { precision: Precision; device: Device }
/**
 * A tolerance per run. WebGPU's fp16 MatMul accumulates in fp16: one [16, K] x [K, 16] product is
 * off by 1.4e-3 of scale at K = 64, 5.3e-3 at 1024, 1.8e-2 at 8192 on lavapipe. The CPU provider has
 * no fp16 MatMul or Conv: ORT computes them in float32 between Casts (and drops Cast pairs that
 * cancel), so fp16 on cpu only rounds some activations and errs far less.
 */
type Tol = Record<"webgpu" | "cpu", number>;
const tolOf = (t: Tol, r: Run) => t[r.device as "webgpu" | "cpu"];
const RUNS: Run[] = [
  ...(NO_WEBGPU === null ? [{ precision: "fp16", device: "webgpu" } as Run] : []),
  { precision: "fp16", device: "cpu" },
];

describe("parity of fp16 with fp32 (fp32 on cpu is the reference)", () => {
  // DDIM's x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) multiplies the prediction's error by up to
  // 1/sqrt(abar) = 14 at t = 981 (then clips x0 to [-1, 1]): the latents' tolerance is wider than
  // the forward's for that reason, not for another source of error.
  test("tiny UNet forward (tolerance webgpu 2e-2 / cpu 4e-3 of scale; measured 6.6e-3 / 1.0e-3) and 3 DDIM steps from t = 981 (1e-1 / 2e-2; measured 4.0e-2 / 6.3e-3)", async () => {
    const feeds = { sample: normals(6, B * 12 * HW * HW), timestep: Float32Array.of(981, 981), encoder_hidden_states: normals(7, B * L * 32) };
    const steps = async (p: Precision, device: Device) =>
      withPrecision(p, device, async () => {
        const c = await G.compile(unetGraph(), { device, threads: 1 });
        const sched = DDIMScheduler.fromConfig(SPEC.scheduler);
        sched.setTimesteps(3);
        let x: Float32Array = Float32Array.from(feeds.sample);
        const preds: Float32Array[] = [];
        for (const t of sched.timesteps) {
          const pred = (await c.run({ ...feeds, sample: x, timestep: new Float32Array(B).fill(t) })).pred as Float32Array;
          preds.push(pred);
          x = sched.step(pred, t, x).prevSample;
        }
        return { first: preds[0]!, last: x };
      });
    const ref = await steps("fp32", "cpu");
    const TOL: Tol = { webgpu: 2e-2, cpu: 4e-3 }, TOL_STEPS: Tol = { webgpu: 1e-1, cpu: 2e-2 };
    for (const r of RUNS) {
      const got = await steps(r.precision, r.device);
      judge(`${r.precision} on ${r.device} vs fp32 on cpu, tiny UNet forward`, [["forward", got.first, ref.first]], tolOf(TOL, r));
      judge(`${r.precision} on ${r.device} vs fp32 on cpu, tiny UNet + DDIM`, [["latents after 3 DDIM steps", got.last, ref.last]], tolOf(TOL_STEPS, r));
    }
  });

  // The key bias's gradient is zero in exact arithmetic (adding it shifts every score of a row
  // alike): it holds only rounding, judged against the largest gradient.
  test("ViT block (DINOv2 layer) forward and every gradient (tolerance webgpu 1e-2 / cpu 3e-3 of scale; measured 3.0e-3 / 1.0e-3)", async () => {
    const { outputs, feeds, leaves } = dinov2LayerGraph();
    const ref = await (await G.compile(outputs, { threads: 1, precision: "fp32" })).run(feeds);
    const largest = Math.max(...leaves.map((n) => maxAbs(ref[`grad.${n}`] as Float32Array)));
    const TOL: Tol = { webgpu: 1e-2, cpu: 3e-3 };
    for (const r of RUNS) {
      const got = await (await G.compile(outputs, { device: r.device, threads: 1, precision: r.precision })).run(feeds);
      // Outputs and gradients are float32 arrays at the edge, whatever the compute dtype.
      for (const k of Object.keys(outputs)) expect(got[k]).toBeInstanceOf(Float32Array);
      judge(`${r.precision} on ${r.device} vs fp32 on cpu, ViT block (gradients judged at least against a hundredth of the largest)`, Object.keys(outputs).map((k) => [k, got[k] as Float32Array, ref[k] as Float32Array, k === "grad.attention.attention.key.bias" ? largest : k.startsWith("grad.") ? largest / 100 : 0]), tolOf(TOL, r));
    }
  });

  // The DPO term is -log sigmoid(-beta/2 (m_w - m_l)), with margins that are differences of nearly
  // equal MSEs (theta's and the frozen reference's, each from its own fp16 UNet pass): beta (100
  // here; Diffusion-DPO uses thousands) multiplies their rounding, and its gradient is beta/2 times a
  // difference of two nearly equal MSE gradients (a pair's two images are alike). So the DPO loss
  // and gradients get wider tolerances than the MSEs and the mse objective's gradients, and the
  // implicit accuracy (a share of 2 pairs whose margins sit near 0) is not compared: it flips
  // between 0 and 0.5 on rounding.
  const img = (r: number, gr: number, b: number) => ({ width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).map((_, i) => [r, gr, b][i % 3]! + (i % 7)) });
  const PAIRS: PairExample[] = [
    { reference: img(200, 30, 30), generated: img(180, 60, 40), prompt: "a red teapot", qRef: new Float32Array(64).map((_, i) => 0.5 + 0.4 * Math.sin(i)), qGen: new Float32Array(64).map((_, i) => 0.5 + 0.4 * Math.cos(i)) },
    { reference: img(30, 30, 200), generated: img(50, 40, 190), prompt: "a teapot on the beach", qRef: new Float32Array(64).fill(0.6), qGen: new Float32Array(64).map((_, i) => (i % 5) / 5) },
  ];

  async function trainingStep(objective: "patch-dpo" | "mse", tol: { loss: Tol; mse: Tol; grads: Tol }) {
    const ipFile = join(dir, "ip.safetensors");
    if (!existsSync(ipFile)) await writeIpAdapter(ipFile, SPEC.unet, { kind: "resampler", embeddingDim: 1280, dim: 16, depth: 1, dimHead: 8, heads: 2, numQueries: 2, outputDim: 32, ffMult: 2 }, 2);
    const model = loadDiffusionModel(join(dir, "model"));
    const ip = loadIpAdapter(ipFile, "mobilenet_v2");
    const trainer = (device: Device) =>
      new DiffusionTrainer({ model, ip, pairs: 2, height: 16, width: 16, objective, dpo: { beta: 100, lambda: 0.5 }, trainable: (n) => n.includes("_ip."), threads: 1, device });
    const ref = trainer("cpu");
    const feeds = await ref.prepare(PAIRS, new Rng(1), { image: 0, text: 0, both: 0 });
    // Away from theta = reference, so the DPO term and its gradient are not at their symmetric point.
    const start = new Map([...ref.initial].map(([k, v]) => [k, Float32Array.from(v, (x, i) => x * (1 + 0.2 * Math.sin(i + k.length)))]));
    const a = await withPrecision("fp32", "cpu", () => ref.step(feeds, start));
    for (const r of RUNS) {
      const b = await withPrecision(r.precision, r.device, () => trainer(r.device).step(feeds, start));
      const label = `${r.precision} on ${r.device} vs fp32 on cpu, ${objective} step`;
      console.log(`${label}: fp32 loss ${a.loss} logs ${JSON.stringify(a.logs)}; ${r.precision} loss ${b.loss} logs ${JSON.stringify(b.logs)}`);
      const mseLogs = Object.keys(a.logs).filter((k) => k !== "dpoLoss" && k !== "implicitAcc");
      judge(`${label} MSE logs`, mseLogs.map((k) => [k, [b.logs[k]!], [a.logs[k]!]]), tolOf(tol.mse, r));
      judge(`${label} losses`, [["loss", [b.loss], [a.loss]], ...(a.logs.dpoLoss === undefined ? [] : [["dpoLoss", [b.logs.dpoLoss!], [a.logs.dpoLoss]] as [string, number[], number[]]])], tolOf(tol.loss, r));
      const largest = Math.max(...[...a.grads.values()].map(maxAbs));
      for (const [k] of a.grads) expect(b.grads.get(k)).toBeInstanceOf(Float32Array); // fp32 gradients for the fp32 master weights
      judge(`${label} gradients (at least against a hundredth of the largest)`, [...a.grads].map(([k, gr]) => [k.replace(/transformer_blocks.0.attn2.processor./, ""), b.grads.get(k)!, gr, largest / 100]), tolOf(tol.grads, r));
    }
  }

  test("mse training step: loss (tolerance webgpu / cpu 5e-4; measured 8.2e-5 / 1.3e-5) and every IP-Adapter gradient (1e-1 / 1e-2; measured 4.8e-2 / 2.1e-3), fp32 master weights", async () => {
    await trainingStep("mse", { loss: { webgpu: 5e-4, cpu: 5e-4 }, mse: { webgpu: 5e-4, cpu: 5e-4 }, grads: { webgpu: 1e-1, cpu: 1e-2 } });
  });

  test("patch-dpo training step: MSE logs (tolerance webgpu 1e-3 / cpu 5e-4; measured 3.6e-4 / 1.4e-5), loss and DPO loss (1e-2 / 1e-2; measured 3.3e-3 / 7.7e-4), every IP-Adapter gradient (2.5e-1 / 3e-2; measured 1.6e-1 / 1.2e-2), fp32 master weights", async () => {
    await trainingStep("patch-dpo", { loss: { webgpu: 1e-2, cpu: 1e-2 }, mse: { webgpu: 1e-3, cpu: 5e-4 }, grads: { webgpu: 2.5e-1, cpu: 3e-2 } });
  });
});
