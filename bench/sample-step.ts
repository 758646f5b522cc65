// Ours: ONE sampling step of an SD 1.5-shaped UNet with classifier-free guidance: the UNet on
// batch 2 ([uncond; cond]) at 64x64 latents (512 px), text context [2, 77, 768], then the CFG
// combine. Random float32 weights (N(0, 1/fan_in), lib/nn/init.ts) are written ONCE to
// bench/out/sd15-unet-random.safetensors (~3.4 GB) and bound with SafetensorsSource, so ONNX
// Runtime reads them in place as external data, the way real checkpoints load. The reference
// (bench/sample-step.py) loads the same file. Compiling is not timed; `run` + `cfg` is.
// Prints one JSON line for bench/run.ts; writes the inputs and outputs of its fixed input to
// bench/out/sample-step-io.safetensors, which the reference compares against (stderr).
//   --profile <file>: instead, one profiled run with ONNX Runtime's profiler (enableProfiling),
//   and a summary of the top ops by time on stderr.
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { cfg } from "../lib/diffusion/guidance.ts";
import * as G from "../lib/graph/index.ts";
import { openSafetensors, writeSafetensors } from "../lib/io/safetensors.ts";
import { unetConfigFromJson, unetForward, unetParamShapes } from "../lib/models/unet.ts";
import { initWeights } from "../lib/nn/init.ts";
import { Params, SafetensorsSource } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { countFlops, flopFields } from "./flops.ts";
import { profileRun } from "./ort-profile.ts";
import { timeIt } from "./timing.ts";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "2" }, iters: { type: "string", default: "2" },
    scale: { type: "string", default: "7.5" }, profile: { type: "string" },
    // generate-images' default is the fused attention (lib/graph/fuse.ts); this measures that path.
    "standard-ops": { type: "boolean", default: false },
  },
});
const threads = Number(values.threads);
const B = 2, S = 64, L = 77, D = 768;
export const WEIGHTS = "bench/out/sd15-unet-random.safetensors";
export const IO = "bench/out/sample-step-io.safetensors";

const config = unetConfigFromJson(JSON.parse(readFileSync("tests/fixtures/diffusers/sd15-unet.config.json", "utf8")));
const shapes = unetParamShapes(config);

/** True when the file holds exactly the expected tensors (names, shapes, F32) and is complete. */
function weightsReady(path: string): boolean {
  if (!existsSync(path)) return false;
  try {
    const f = openSafetensors(path);
    const dataBytes = [...shapes.values()].reduce((s, sh) => s + 4 * sh.reduce((a, b) => a * b, 1), 0);
    if (f.names().length !== shapes.size || statSync(path).size < dataBytes + 8) return false;
    for (const [n, sh] of shapes) {
      const i = f.info(n);
      if (i.dtype !== "F32" || i.shape.length !== sh.length || i.shape.some((d, k) => d !== sh[k])) return false;
    }
    return true;
  } catch {
    return false;
  }
}

if (!weightsReady(WEIGHTS)) {
  mkdirSync(dirname(WEIGHTS), { recursive: true });
  const t0 = performance.now();
  const src = initWeights(shapes, 0, 1, "random SD 1.5 UNet weights");
  const tensors = Object.fromEntries([...src.tensors].map(([n, t]) => [n, { dtype: "F32" as const, shape: t.shape, data: t.data }]));
  await writeSafetensors(WEIGHTS, tensors, { description: "random SD 1.5-shaped UNet weights (initWeights seed 0) for bench/sample-step" });
  console.error(`wrote ${WEIGHTS} (${(statSync(WEIGHTS).size / 2 ** 30).toFixed(2)} GiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

// ---------------------------------------------------------------- graph
const g = new G.Graph();
const sample = g.input("sample", [B, config.inChannels, S, S]);
const timestep = g.input("timestep", [B]);
const encoderHiddenStates = g.input("encoder_hidden_states", [B, L, D]);
const p = new Params(g, new SafetensorsSource([resolve(WEIGHTS)]));
const noisePred = unetForward(p, config, { sample, timestep, encoderHiddenStates });
const outputs = { noise_pred: noisePred };

/** Forward FLOPs (2 x MACs) of the Conv / MatMul / Gemm nodes; the rest is small. */
function forwardFlops(): number {
  let flops = 0;
  for (const n of g.nodes) {
    const y = n.outputs[0]!;
    if (n.op === "Conv") {
      const w = n.inputs[1]!.shape; // [O, I/group, kh, kw]
      flops += 2 * y.size * w[1]! * w[2]! * w[3]!;
    } else if (n.op === "MatMul" || n.op === "Gemm") {
      const a = n.inputs[0]!.shape;
      const k = n.op === "Gemm" && n.attrs.transA?.kind === "int" && n.attrs.transA.value ? a[0]! : a[a.length - 1]!;
      flops += 2 * y.size * k;
    }
  }
  return flops;
}

// Fixed inputs: uncond / cond halves share the latent and the timestep (as in a pipeline).
const rng = new Rng(1);
const half = rng.normals(config.inChannels * S * S);
const x = new Float32Array(B * half.length);
x.set(half, 0);
x.set(half, half.length);
const t = new Float32Array([601, 601]);
const ctx = rng.normals(B * L * D);
const scale = Number(values.scale);
const feeds = { sample: x, timestep: t, encoder_hidden_states: ctx };

if (values.profile) {
  // One profiled run on a session made from the same ONNX bytes, the weights read from their folder.
  await profileRun(G.toOnnx(outputs, "cpu", !values["standard-ops"]), {
    sample: new ort.Tensor("float32", x, [B, config.inChannels, S, S]),
    timestep: new ort.Tensor("float32", t, [B]),
    encoder_hidden_states: new ort.Tensor("float32", ctx, [B, L, D]),
  }, { file: values.profile, threads, weightsFolder: dirname(resolve(WEIGHTS)) });
  process.exit(0);
}

// ---------------------------------------------------------------- timed step
const compiled = await G.compile(outputs, { threads, fusedOps: !values["standard-ops"] });
let guided: Float32Array = new Float32Array(0);
let pred: Float32Array = new Float32Array(0);
async function step() {
  const r = await compiled.run(feeds);
  pred = r.noise_pred as Float32Array;
  const n = pred.length / 2;
  guided = cfg(pred.subarray(0, n), pred.subarray(n), scale);
}
const seconds = await timeIt(step, Number(values.iters));
await writeSafetensors(IO, {
  sample: { dtype: "F32", shape: [B, config.inChannels, S, S], data: x },
  timestep: { dtype: "F32", shape: [B], data: t },
  encoder_hidden_states: { dtype: "F32", shape: [B, L, D], data: ctx },
  noise_pred: { dtype: "F32", shape: [B, config.outChannels, S, S], data: pred },
  guided: { dtype: "F32", shape: [1, config.outChannels, S, S], data: guided },
}, { guidance_scale: String(scale) });
console.log(JSON.stringify({ seconds, peakRssMB: process.resourceUsage().maxRSS / 1024, gflops: forwardFlops() / 1e9, ...flopFields(countFlops(outputs), { forward: seconds }) }));
