// Ours: ONE patch-dpo training step of an SD 1.5-sized UNet (the real 859.5M-parameter layout,
// random weights) with IP-Adapter-Plus attention (16 image tokens into every attn2, ip scale 1) on
// 1 pair at 32x32 latents (256 px): the frozen reference twin's forward on both images, the trained
// model's forward and backward on both images to its to_k_ip / to_v_ip (what `dpo-epoch --train ip`,
// the default, trains: 19.2M values), the patch-dpo loss (beta 5000, lambda 1), AdamW (lr 1e-5,
// weight decay 0.01) on the host. Text context and image tokens are given (the frozen encoders and
// the Resampler are not part of the step), as in bench/gpu.ts's dpo task.
// Weights: the frozen UNet is bench/sample-step.ts's bench/out/sd15-unet-random.safetensors (3.4 GB,
// written by it when missing), read in place as external data; the IP projections (initWeights
// scales, seed 2) are a small second file, bench/out/dpo-step-ip.safetensors. The reference
// (bench/dpo-step.py) loads the same two files and the inputs written to bench/out/dpo-step-io.safetensors.
// Timed: the whole step (both session runs, feeds, the outputs' copies, AdamW); compiling is not.
// Also measured: the share of the step spent outside ONNX Runtime's session.run (host side: feeds,
// output copies, AdamW), and the `mse` step (the trained model forward and backward on the same
// 2 rows, no twin) in a child process of its own (--objective mse), so that each has its own peak RSS.
// Prints one JSON line for bench/run.ts.
//   --latent <n>: latent size (default 32); --objective patch-dpo|mse; --mse-iters <n> (0: skip mse).
//   --recompute: gradient checkpointing (grad's recompute option; each ResnetBlock2D and
//   Transformer2DModel is rebuilt in the backward pass from its saved inputs).
//   --mapped-weights: compile with CompileOptions.mappedWeights (the frozen UNet stays mapped from
//   its file: no prepacked or NCHWc copies). --attention-chunk <rows>: attention in chunks of this
//   many query rows, each recomputed in the backward pass (0: unchunked). --twin-in-graph: the
//   frozen twin's forward inside the training graph (one session, one mapping of the weights)
//   instead of a session of its own.
// Peak memory is VmHWM of /proc/self/status (the high-water RSS of this process's own address
// space); getrusage's maxrss would also count the parent's RSS at the mse child's spawn (Linux
// keeps ru_maxrss across fork and exec), which is what the first recorded mse rows read.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as G from "../lib/graph/index.ts";
import type { Tensor } from "../lib/graph/index.ts";
import { openSafetensors, writeSafetensors } from "../lib/io/safetensors.ts";
import { unetConfigFromJson, unetParamShapes } from "../lib/models/unet.ts";
import { initWeights } from "../lib/nn/init.ts";
import { SafetensorsSource } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW } from "../lib/train/adamw.ts";
import { median } from "./timing.ts";
import { DPO_STEP_ROWS, IP_TOKENS, TEXT_TOKENS, buildDpoStepGraph, isIpProjection } from "./dpo-step-graph.ts";
import { countFlops, flopFields } from "./flops.ts";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "2" }, iters: { type: "string", default: "2" },
    latent: { type: "string", default: "32" }, objective: { type: "string", default: "patch-dpo" },
    "mse-iters": { type: "string", default: "1" },
    recompute: { type: "boolean", default: false }, "mapped-weights": { type: "boolean", default: false }, "attention-chunk": { type: "string", default: "0" },
    "twin-in-graph": { type: "boolean", default: false },
    // No forward-only timing session (the mse step that a patch-dpo run spawns for its mseSeconds).
    "skip-split": { type: "boolean", default: false },
  },
});
const threads = Number(values.threads);
const iters = Number(values.iters);
const h = Number(values.latent);
const kind = values.objective === "mse" ? "mse" : "patch-dpo";
const twinInGraph = values["twin-in-graph"]!;
const recompute = values.recompute!, mappedWeights = values["mapped-weights"]!, attentionChunk = Number(values["attention-chunk"]) || undefined;
/** Peak RSS of this address space in MB (VmHWM; see the header). */
const peakRssMB = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;
const R = DPO_STEP_ROWS, L = TEXT_TOKENS;
const WEIGHTS = "bench/out/sd15-unet-random.safetensors";
const IP_WEIGHTS = "bench/out/dpo-step-ip.safetensors";
const IO = "bench/out/dpo-step-io.safetensors";

const config = unetConfigFromJson(JSON.parse(readFileSync("tests/fixtures/diffusers/sd15-unet.config.json", "utf8")));
const D = config.crossAttentionDim[0]!;
const C = config.inChannels;
const isIp = isIpProjection;
const ipShapes = new Map([...unetParamShapes(config, { ipAdapter: true })].filter(([n]) => isIp(n)));

if (!existsSync(WEIGHTS)) {
  const p = Bun.spawnSync(["bun", "bench/sample-step.ts", "--iters", "0"], { stdout: "inherit", stderr: "inherit" });
  if (!existsSync(WEIGHTS)) throw new Error(`${WEIGHTS} is missing and bench/sample-step.ts did not write it (exit ${p.exitCode})`);
}
function ipReady(): boolean {
  try {
    const f = openSafetensors(IP_WEIGHTS);
    return f.names().length === ipShapes.size && [...ipShapes].every(([n, s]) => f.has(n) && f.info(n).shape.join() === s.join());
  } catch {
    return false;
  }
}
if (!ipReady()) {
  mkdirSync(dirname(IP_WEIGHTS), { recursive: true });
  const src = initWeights(ipShapes, 2, 1, "random IP-Adapter projections");
  await writeSafetensors(IP_WEIGHTS, Object.fromEntries([...src.tensors].map(([n, t]) => [n, { dtype: "F32" as const, shape: t.shape, data: t.data }])),
    { description: "random to_k_ip / to_v_ip (initWeights seed 2) for bench/dpo-step" });
}
const source = new SafetensorsSource([resolve(WEIGHTS), resolve(IP_WEIGHTS)]);

// ---------------------------------------------------------------- graphs
const build = (training: boolean, withRecompute = recompute) =>
  buildDpoStepGraph({ source, config, kind, latent: h, training, recompute: withRecompute, attentionChunk, twinInGraph });
/** FLOPs (2 x MACs) of a graph's Conv / ConvTranspose / MatMul / Gemm nodes (bench/flops.ts). */
const flops = (outputs: Record<string, Tensor>) => {
  const f = countFlops(outputs);
  return f.forward + f.backward;
};

const train = build(true);
const ref = kind === "patch-dpo" && !twinInGraph ? build(false) : null;
const trainC = await G.compile(train.outputs, { threads, mappedWeights });
const refC = ref ? await G.compile(ref.outputs, { threads, mappedWeights }) : null;
// The model's FLOPs (the same for PyTorch's step): with recompute, counted on the graph without it.
const stepFlops = flops(recompute ? build(true, false).outputs : train.outputs) + (ref ? flops(ref.outputs) : 0);
// Forward / backward of the training graph apart (bench/flops.ts). Time: the frozen twin's session
// is a forward-only session of the same model on the same rows, so its run time is the forward's;
// the backward's is the training session's run time minus it (patch-dpo only: mse has no twin).
const split = countFlops(train.outputs, [train.outputs.loss!]);
const refRun: number[] = [], trainRun: number[] = [];

// Time inside ONNX Runtime's session.run (the rest of a step is host-side work).
let inSession = 0;
for (const c of [trainC, refC]) {
  if (!c) continue;
  const s = c.session as unknown as { run: (...a: unknown[]) => Promise<unknown> };
  const orig = s.run.bind(s);
  s.run = async (...a: unknown[]) => {
    const t0 = performance.now();
    try {
      return await orig(...a);
    } finally {
      inSession += performance.now() - t0;
    }
  };
}

// ---------------------------------------------------------------- inputs (fixed; PyTorch reads them)
const rng = new Rng(1);
const x = {
  noisy: rng.normals(R * C * h * h), timestep: new Float32Array(R).fill(601),
  encoder_hidden_states: rng.normals(R * L * D), ip_tokens: rng.normals(R * IP_TOKENS * D), target: rng.normals(R * C * h * h),
  q_ref: new Float32Array(h * h).map((_, i) => 0.5 + 0.4 * Math.sin(i)), q_gen: new Float32Array(h * h).map((_, i) => 0.5 + 0.4 * Math.cos(i)),
};

const initial = new Map([...train.trainables.keys()].map((n) => [n, source.float32(n)]));
const weights = new Map([...initial].map(([n, v]) => [n, Float32Array.from(v)]));
const frozenIp = Object.fromEntries(initial);
const opt = new AdamW({ lr: 1e-5, weightDecay: 0.01 });
const common = { noisy: x.noisy, timestep: x.timestep, encoder_hidden_states: x.encoder_hidden_states, ip_tokens: x.ip_tokens };

const trainInputs = trainC.inputs.map((i) => i.name);
async function step(): Promise<number> {
  const extra: Record<string, Float32Array> = {};
  const t0 = performance.now();
  if (refC) extra.ref_pred = (await refC.run({ ...common, ...frozenIp })).pred as Float32Array;
  const t1 = performance.now();
  const all: Record<string, Float32Array> = { ...common, ...Object.fromEntries(Object.entries(frozenIp).map(([n, v]) => [`ref:${n}`, v])), ...Object.fromEntries(weights), target: x.target, q_ref: x.q_ref, q_gen: x.q_gen, ...extra };
  const r = await trainC.run(Object.fromEntries(trainInputs.map((n) => [n, all[n]!]))); // mse's graph has no q maps
  refRun.push((t1 - t0) / 1000);
  trainRun.push((performance.now() - t1) / 1000);
  const grads = new Map([...weights.keys()].map((n) => [n, r[`grad:${n}`] as Float32Array]));
  opt.step(weights, grads);
  return (r.loss as Float32Array)[0]!;
}

const losses: number[] = [];
losses.push(await step()); // warm-up; the loss at the initial weights
const times: number[] = [];
let hostMs = 0, totalMs = 0;
for (let i = 0; i < Math.max(1, iters); i++) {
  inSession = 0;
  const t0 = performance.now();
  losses.push(await step()); // after i + 1 AdamW updates
  const dt = performance.now() - t0;
  times.push(dt / 1000);
  totalMs += dt;
  hostMs += dt - inSession;
}
if (kind === "patch-dpo") {
  await writeSafetensors(IO, {
    noisy: { dtype: "F32", shape: [R, C, h, h], data: x.noisy }, timestep: { dtype: "F32", shape: [R], data: x.timestep },
    encoder_hidden_states: { dtype: "F32", shape: [R, L, D], data: x.encoder_hidden_states }, ip_tokens: { dtype: "F32", shape: [R, IP_TOKENS, D], data: x.ip_tokens },
    target: { dtype: "F32", shape: [R, C, h, h], data: x.target }, q_ref: { dtype: "F32", shape: [1, h, h], data: x.q_ref }, q_gen: { dtype: "F32", shape: [1, h, h], data: x.q_gen },
    losses: { dtype: "F32", shape: [losses.length], data: Float32Array.from(losses) },
  }, { latent: String(h) });
}
const result: Record<string, unknown> = {
  seconds: median(times), peakRssMB: peakRssMB(), gflops: stepFlops / 1e9,
  loss0: losses[0], loss1: losses[1], hostShare: hostMs / totalMs, latent: h,
};
// The forward's time: the frozen twin's run where it has its own session; otherwise (mse,
// --twin-in-graph) a forward-only session of the training graph's loss, timed after the peak RSS
// above was read and released before the mse child starts. The backward's: training run - forward.
let fwdSeconds = refC ? median(refRun.slice(1)) : NaN;
if (!refC && !values["skip-split"]) try {
  const fwdC = await G.compile({ loss: train.outputs.loss! }, { threads, mappedWeights });
  const all: Record<string, Float32Array> = { ...common, ...Object.fromEntries(Object.entries(frozenIp).map(([n, v]) => [`ref:${n}`, v])), ...Object.fromEntries(weights), target: x.target, q_ref: x.q_ref, q_gen: x.q_gen };
  const f = Object.fromEntries(fwdC.inputs.map((i) => [i.name, all[i.name]!]));
  await fwdC.run(f); // warm-up
  const ts: number[] = [];
  for (let i = 0; i < Math.max(1, iters); i++) {
    const t0 = performance.now();
    await fwdC.run(f);
    ts.push((performance.now() - t0) / 1000);
  }
  fwdSeconds = median(ts);
  await fwdC.session.release();
} catch (e) {
  // Not run at SD size by the session that wrote it: a failure here costs the split, not the result.
  process.stderr.write(`dpo-step: forward-only timing failed, no fwd/bwd split: ${(e as Error).message}\n`);
}
Object.assign(result, flopFields(split, { forward: fwdSeconds, backward: median(trainRun.slice(1)) - fwdSeconds }));
const mseIters = Number(values["mse-iters"]);
if (kind === "patch-dpo" && mseIters > 0) {
  await trainC.session.release();
  await refC?.session.release();
  const p = Bun.spawnSync(["bun", "bench/dpo-step.ts", "--objective", "mse", "--threads", String(threads), "--iters", String(mseIters), "--latent", String(h),
    ...(recompute ? ["--recompute"] : []), ...(mappedWeights ? ["--mapped-weights"] : []), "--attention-chunk", String(attentionChunk ?? 0), "--skip-split"], { stdout: "pipe", stderr: "inherit" });
  if (p.exitCode !== 0) throw new Error(`the mse step failed (exit ${p.exitCode})`);
  const m = JSON.parse(p.stdout.toString().trim().split("\n").pop()!) as Record<string, number>;
  Object.assign(result, { mseSeconds: m.seconds, msePeakRssMB: m.peakRssMB, mseLoss0: m.loss0, mseHostShare: m.hostShare });
}
console.log(JSON.stringify(result));
