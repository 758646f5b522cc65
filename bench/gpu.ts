// The GPU box benchmark (bench/gpu.sh runs it; README "On a GPU box"): ours on every GPU
// execution provider present against PyTorch CUDA (bench/gpu.py: diffusers' UNet2DConditionModel,
// the model code ours mirrors, with IP-Adapter attention), fp32 and bf16, on the same weights file.
//   sample  one CFG sampling step of the SD 1.5 UNet: batch 2 ([uncond; cond]) at 64x64 latents
//           (512 px), text context [2, 77, 768], 16 IP-Adapter-Plus image tokens, then the combine;
//   dpo     one patch-dpo step on 1 pair at 64x64 latents: the frozen reference UNet's prediction,
//           the trained UNet's forward and backward to its to_k_ip / to_v_ip (the IP-Adapter
//           weights PatchDPO trains), the patch-dpo loss, AdamW. Text and image conditioning are
//           given (their frozen encoders are not part of the step being compared).
// Weights: random at initWeights' scales (N(0, 1/fan_in) matrices), written once to bench/out/
// (3.4 GB at full size) with the IP projections under diffusers' processor names, so ours reads
// them in place (external data) and PyTorch loads the same file with load_state_dict.
// --mode smoke: the same two steps on a small UNet at 16x16 latents, on the providers present here
// (lavapipe's webgpu, and cpu for reference), PyTorch on the CPU when CUDA is absent: proves the
// script end to end without a GPU in a minute or two.
// Prints a table, `ratio gpu-<task>-<device> vs torch-<dtype> speed=<torch s / ours s>
// memory=<ours peak / torch peak>` lines and the goal line; full runs append to bench/RESULTS.md.
// One measurement per subprocess (--side ours), so each has its own peak memory and compile cost.

import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { cfg as cfgCombine } from "../lib/diffusion/guidance.ts";
import * as G from "../lib/graph/index.ts";
import type { Device, Tensor } from "../lib/graph/index.ts";
import { openSafetensors, writeSafetensors } from "../lib/io/safetensors.ts";
import { type UNetConfig, unetConfigFromJson, unetForward, unetParamShapes } from "../lib/models/unet.ts";
import { Params, SafetensorsSource } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW } from "../lib/train/adamw.ts";
import { objective } from "../lib/train/objectives.ts";
import { median } from "./timing.ts";

const { values } = parseArgs({
  options: {
    mode: { type: "string", default: "full" },
    side: { type: "string", default: "all" },
    task: { type: "string" },
    device: { type: "string" },
    devices: { type: "string" },
    torch: { type: "string", default: "auto" },
    iters: { type: "string" },
    threads: { type: "string", default: "0" },
    timeout: { type: "string" },
    "no-record": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
const HELP = `bench/gpu.ts: ours on each GPU provider vs PyTorch CUDA (fp32, bf16), SD 1.5 UNet sample step and patch-dpo step

usage: bench/gpu.sh [--mode full|smoke] [--devices cuda,webgpu] [--torch auto|no] [--iters n] [--timeout s] [--no-record]

  --mode <m>      full: SD 1.5 at 64x64 latents (a GPU box, under 8 minutes); smoke: a small UNet at
                  16x16 (runs on lavapipe and the CPU) (default: full)
  --devices <l>   our providers to try, those whose preflight passes run (default: full cuda,webgpu;
                  smoke cpu,webgpu)
  --torch <t>     auto: PyTorch rows when /usr/bin/python3 (or python3) has torch and diffusers
                  (CUDA for full, else CPU); no: ours only (default: auto)
  --iters <n>     timed steps after one warm-up (default: full 5, smoke 3)
  --timeout <s>   per measurement (default: full 150, smoke 240)
  --no-record     do not append to bench/RESULTS.md (smoke never does)`;
if (values.help) {
  console.log(HELP);
  process.exit(0);
}

const MODE = values.mode === "smoke" ? "smoke" : "full";
if (values.mode !== "full" && values.mode !== "smoke") {
  console.error(`--mode must be full or smoke\n\n${HELP}`);
  process.exit(2);
}
const ITERS = Number(values.iters ?? (MODE === "full" ? 5 : 3));
const TIMEOUT_S = Number(values.timeout ?? (MODE === "full" ? 150 : 240));
const THREADS = Number(values.threads);

// ---------------------------------------------------------------- the model of each mode

interface Setup {
  /** diffusers config (as config.json), for ours and for PyTorch's from_config. */
  config: Record<string, unknown>;
  latent: number;
  textLen: number;
  ipTokens: number;
  weights: string;
  configFile: string;
}

function setup(): Setup {
  const sd15 = JSON.parse(readFileSync("tests/fixtures/diffusers/sd15-unet.config.json", "utf8")) as Record<string, unknown>;
  if (MODE === "full") return { config: sd15, latent: 64, textLen: 77, ipTokens: 16, weights: "bench/out/gpu-sd15-unet-ip.safetensors", configFile: "tests/fixtures/diffusers/sd15-unet.config.json" };
  const small = {
    ...sd15, block_out_channels: [32, 64], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block: 1, attention_head_dim: 8, cross_attention_dim: 64, norm_num_groups: 8, sample_size: 16,
  };
  return { config: small, latent: 16, textLen: 77, ipTokens: 4, weights: "bench/out/gpu-smoke-unet-ip.safetensors", configFile: "bench/out/gpu-smoke-unet.config.json" };
}

const S = setup();
const unetCfg: UNetConfig = unetConfigFromJson(S.config as never);
const shapes = unetParamShapes(unetCfg, { ipAdapter: true });
const isIp = (n: string) => n.includes(".processor.to_k_ip.") || n.includes(".processor.to_v_ip.");

/**
 * Random weights at initWeights' scales (biases 0, norm weights 1, matrices and kernels
 * N(0, 1/fan_in), other vectors N(0, 0.02)), the normals drawn once (2^20 of them) and read from a
 * per-tensor offset: 879M values in seconds instead of a minute and a half. Their values do not
 * matter for timing; their scale keeps activations finite in bf16.
 */
function benchWeights(): Map<string, { shape: number[]; data: Float32Array }> {
  const pool = new Rng(0).normals(1 << 20);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let k = 0;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (name.endsWith("bias")) {
      // zeros
    } else if (shape.length === 1 && /norm/.test(name)) data.fill(1);
    else {
      const scale = shape.length >= 2 ? 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1)) : 0.02;
      const start = (k++ * 7919) % pool.length;
      for (let i = 0; i < n; i++) data[i] = scale * pool[(start + i) & (pool.length - 1)]!;
    }
    out.set(name, { shape: [...shape], data });
  }
  return out;
}

/** Writes the random weights file once (complete and of the expected tensors, or rewritten). */
async function ensureWeights(): Promise<void> {
  mkdirSync(dirname(S.weights), { recursive: true });
  if (MODE === "smoke") writeFileSync(S.configFile, JSON.stringify(S.config, null, 2));
  if (existsSync(S.weights)) {
    try {
      const f = openSafetensors(S.weights);
      const bytes = [...shapes.values()].reduce((s, sh) => s + 4 * sh.reduce((a, b) => a * b, 1), 0);
      if (f.names().length === shapes.size && statSync(S.weights).size >= bytes && [...shapes].every(([n, sh]) => f.has(n) && f.info(n).shape.join() === sh.join())) return;
    } catch {}
  }
  const t0 = performance.now();
  const tensors = Object.fromEntries([...benchWeights()].map(([n, t]) => [n, { dtype: "F32" as const, shape: t.shape, data: t.data }]));
  await writeSafetensors(S.weights, tensors, { description: "random UNet weights with IP-Adapter processors (bench/gpu.ts benchWeights) for bench/gpu.ts" });
  console.log(`wrote ${S.weights} (${(statSync(S.weights).size / 2 ** 30).toFixed(2)} GiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

// ---------------------------------------------------------------- ours: one measurement

/** Fixed inputs, the same values PyTorch regenerates from the same seeds (see bench/gpu.py). */
function inputs(rows: number) {
  const rng = new Rng(1);
  const C = unetCfg.inChannels, h = S.latent;
  const D = unetCfg.crossAttentionDim[0]!;
  return {
    sample: rng.normals(rows * C * h * h),
    timestep: new Float32Array(rows).fill(601),
    context: rng.normals(rows * S.textLen * D),
    ip: rng.normals(rows * S.ipTokens * D),
    target: rng.normals(rows * C * h * h),
  };
}

async function oursSample(device: Device) {
  const B = 2, C = unetCfg.inChannels, h = S.latent, D = unetCfg.crossAttentionDim[0]!;
  const g = new G.Graph();
  const pred = unetForward(new Params(g, new SafetensorsSource([resolve(S.weights)])), unetCfg, {
    sample: g.input("sample", [B, C, h, h]), timestep: g.input("timestep", [B]),
    encoderHiddenStates: g.input("encoder_hidden_states", [B, S.textLen, D]), ipTokens: g.input("ip_tokens", [B, S.ipTokens, D]), ipScale: 1,
  });
  const t0 = performance.now();
  const c = await G.compile({ pred }, { device, threads: THREADS });
  const compileSeconds = (performance.now() - t0) / 1000;
  const x = inputs(B);
  const feeds = { sample: x.sample, timestep: x.timestep, encoder_hidden_states: x.context, ip_tokens: x.ip };
  return {
    compileSeconds,
    step: async () => {
      const p = (await c.run(feeds)).pred as Float32Array;
      return cfgCombine(p.subarray(0, p.length / 2), p.subarray(p.length / 2), 7.5)[0]!;
    },
  };
}

async function oursDpo(device: Device) {
  const R = 2, C = unetCfg.inChannels, h = S.latent, D = unetCfg.crossAttentionDim[0]!;
  const source = new SafetensorsSource([resolve(S.weights)]);
  const build = (training: boolean) => {
    const g = new G.Graph();
    const p = new Params(g, source, { trainable: isIp });
    const pred = unetForward(p, unetCfg, {
      sample: g.input("noisy", [R, C, h, h]), timestep: g.input("timestep", [R]),
      encoderHiddenStates: g.input("encoder_hidden_states", [R, S.textLen, D]), ipTokens: g.input("ip_tokens", [R, S.ipTokens, D]), ipScale: 1,
    });
    if (!training) return { outputs: { pred } as Record<string, Tensor>, trainables: p.trainable };
    const q = (name: string) => g.input(name, [1, h, h]);
    const o = objective("patch-dpo", { pred, target: g.input("target", [R, C, h, h]), qRef: q("q_ref"), qGen: q("q_gen"), refPred: g.input("ref_pred", [R, C, h, h]) }, { beta: 5000, lambda: 1 });
    const names = [...p.trainable.keys()];
    const grads = G.grad(o.loss, names.map((n) => p.trainable.get(n)!));
    const outputs: Record<string, Tensor> = { loss: o.loss };
    names.forEach((n, i) => (outputs[`grad:${n}`] = grads[i]!));
    return { outputs, trainables: p.trainable };
  };
  const t0 = performance.now();
  const ref = build(false), train = build(true);
  const [refC, trainC] = await Promise.all([G.compile(ref.outputs, { device, threads: THREADS }), G.compile(train.outputs, { device, threads: THREADS })]);
  const compileSeconds = (performance.now() - t0) / 1000;
  const initial = new Map([...train.trainables.keys()].map((n) => [n, source.float32(n)]));
  const weights = new Map([...initial].map(([n, v]) => [n, Float32Array.from(v)]));
  const x = inputs(R);
  const qRef = new Float32Array(h * h).map((_, i) => 0.5 + 0.4 * Math.sin(i));
  const qGen = new Float32Array(h * h).map((_, i) => 0.5 + 0.4 * Math.cos(i));
  const opt = new AdamW({ lr: 1e-5, weightDecay: 0.01 });
  const common = { noisy: x.sample, timestep: x.timestep, encoder_hidden_states: x.context, ip_tokens: x.ip };
  return {
    compileSeconds,
    step: async () => {
      const refPred = (await refC.run({ ...common, ...Object.fromEntries(initial) })).pred as Float32Array;
      const r = await trainC.run({ ...common, ...Object.fromEntries(weights), target: x.target, q_ref: qRef, q_gen: qGen, ref_pred: refPred });
      const grads = new Map([...weights.keys()].map((n) => [n, r[`grad:${n}`] as Float32Array]));
      opt.step(weights, grads);
      return (r.loss as Float32Array)[0]!;
    },
  };
}

async function oursSide(task: string, device: Device) {
  const m = task === "sample" ? await oursSample(device) : await oursDpo(device);
  let t0 = performance.now();
  const value = await m.step();
  const firstRunSeconds = (performance.now() - t0) / 1000;
  const times: number[] = [];
  for (let i = 0; i < ITERS; i++) {
    t0 = performance.now();
    await m.step();
    times.push((performance.now() - t0) / 1000);
  }
  console.log(JSON.stringify({ seconds: median(times), compileSeconds: m.compileSeconds, firstRunSeconds, value, peakRssMB: process.resourceUsage().maxRSS / 1024 }));
}

if (values.side === "ours") {
  await oursSide(values.task!, values.device as Device);
  process.exit(0);
}

// ---------------------------------------------------------------- the orchestrator

interface Row { task: string; who: string; seconds?: number; compileSeconds?: number; firstRunSeconds?: number; peakDeviceMB?: number | null; peakRssMB?: number; value?: number; error?: string }

const hasNvidiaSmi = Bun.spawnSync(["sh", "-c", "command -v nvidia-smi"]).exitCode === 0;

/** Device memory (MiB) a process holds, from nvidia-smi; null when it cannot be read. */
async function deviceMemoryOf(pid: number): Promise<number | null> {
  if (!hasNvidiaSmi) return null;
  const p = Bun.spawn(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"], { stdout: "pipe", stderr: "ignore" });
  const out = await new Response(p.stdout).text();
  for (const line of out.split("\n")) {
    const [a, b] = line.split(",").map((s) => s.trim());
    if (Number(a) === pid) return Number(b);
  }
  return 0;
}

/** Runs one measurement in its own process; samples its device memory every 200 ms. */
async function measure(task: string, who: string, cmd: string[], env: Record<string, string> = {}): Promise<Row> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  let peak: number | null = hasNvidiaSmi ? 0 : null;
  let done = false;
  const sampler = (async () => {
    while (!done) {
      const m = await deviceMemoryOf(p.pid);
      if (m !== null && peak !== null) peak = Math.max(peak, m);
      await Bun.sleep(200);
    }
  })();
  const timer = setTimeout(() => p.kill(9), TIMEOUT_S * 1000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  clearTimeout(timer);
  done = true;
  await sampler;
  const last = out.trim().split("\n").pop() ?? "";
  if (code !== 0) {
    const why = code === 137 || code === null ? `killed after ${TIMEOUT_S} s (--timeout)` : `exit ${code}: ${err.trim().split("\n").slice(-3).join(" | ").slice(0, 400)}`;
    return { task, who, error: why };
  }
  try {
    const r = JSON.parse(last) as Row & { peakDeviceMB?: number };
    // PyTorch reports its allocator's peak; the sampled process total (CUDA context included) is the comparable one.
    return { ...r, task, who, peakDeviceMB: peak ?? r.peakDeviceMB ?? null };
  } catch {
    return { task, who, error: `no JSON result line: ${last.slice(0, 200)}` };
  }
}

/** PyTorch: python with torch and diffusers (installed, or bench/parity/.upstream's); its CUDA. */
function findTorch(): { python: string; cuda: boolean; version: string } | string {
  for (const python of ["/usr/bin/python3", "python3"]) {
    const p = Bun.spawnSync([python, "bench/gpu.py", "--probe"], { stdout: "pipe", stderr: "pipe" });
    if (p.exitCode === 0) {
      const r = JSON.parse(p.stdout.toString().trim().split("\n").pop()!) as { cuda: boolean; torch: string; diffusers: string };
      return { python, cuda: r.cuda, version: `torch ${r.torch}, diffusers ${r.diffusers}` };
    }
  }
  return "no python3 with torch and diffusers (pip install torch diffusers, or /usr/bin/python3 bench/parity/fetch_upstream.py for diffusers)";
}

/** The inputs ours uses, for PyTorch (bench/gpu.py reads them). */
async function writeInputs(): Promise<void> {
  const x = inputs(2);
  const C = unetCfg.inChannels, h = S.latent, D = unetCfg.crossAttentionDim[0]!;
  await writeSafetensors(`bench/out/gpu-${MODE}-inputs.safetensors`, {
    sample: { dtype: "F32", shape: [2, C, h, h], data: x.sample },
    timestep: { dtype: "F32", shape: [2], data: x.timestep },
    context: { dtype: "F32", shape: [2, S.textLen, D], data: x.context },
    ip: { dtype: "F32", shape: [2, S.ipTokens, D], data: x.ip },
    target: { dtype: "F32", shape: [2, C, h, h], data: x.target },
  });
}

async function main() {
  const t0 = performance.now();
  await ensureWeights();
  await writeInputs();
  const wanted = (values.devices ?? (MODE === "full" ? "cuda,webgpu" : "cpu,webgpu")).split(",").map((d) => d.trim()) as Device[];
  const devices: Device[] = [];
  for (const d of wanted) {
    if (!G.DEVICES.includes(d)) throw new Error(`--devices: unknown device ${d}`);
    const problem = await G.deviceProblem(d);
    if (problem) console.log(`skip ours on ${d}: ${problem.split(". ")[0]}`);
    else devices.push(d);
  }
  let torch: ReturnType<typeof findTorch> = "--torch no";
  if (values.torch !== "no") torch = findTorch();
  const torchDevice = typeof torch === "string" ? null : torch.cuda ? "cuda" : MODE === "smoke" ? "cpu" : null;
  if (typeof torch === "string") console.log(`skip PyTorch: ${torch}`);
  else if (!torchDevice) console.log(`skip PyTorch: ${torch.version} sees no CUDA device (full mode compares against PyTorch CUDA)`);
  else console.log(`PyTorch: ${torch.python}, ${torch.version}, on ${torchDevice}`);

  const rows: Row[] = [];
  const print = (r: Row) => {
    const mem = r.peakDeviceMB ? `${r.peakDeviceMB.toFixed(0)} MiB device` : `${(r.peakRssMB ?? 0).toFixed(0)} MB RSS`;
    console.log(r.error ? `  ${r.task.padEnd(6)} ${r.who.padEnd(16)} FAILED: ${r.error}` : `  ${r.task.padEnd(6)} ${r.who.padEnd(16)} ${r.seconds!.toFixed(4)} s/step  (compile ${r.compileSeconds?.toFixed(1) ?? "-"} s, first run ${r.firstRunSeconds?.toFixed(1) ?? "-"} s)  peak ${mem}  [${r.task === "sample" ? "guided[0]" : "loss"} ${r.value?.toPrecision(6)}]`);
  };
  const common = ["--mode", MODE, "--iters", String(ITERS)];
  for (const task of ["sample", "dpo"]) {
    for (const d of devices) {
      const r = await measure(task, `ours-${d}`, ["bun", "bench/gpu.ts", "--side", "ours", "--task", task, "--device", d, "--threads", String(THREADS), ...common]);
      rows.push(r);
      print(r);
    }
    if (torchDevice && typeof torch !== "string") {
      for (const dtype of ["fp32", "bf16"]) {
        const r = await measure(task, `torch-${torchDevice}-${dtype}`, [torch.python, "bench/gpu.py", "--task", task, "--dtype", dtype, "--device", torchDevice, "--config", S.configFile, "--weights", S.weights, "--latent", String(S.latent), "--ip-tokens", String(S.ipTokens), ...common], { OMP_WAIT_POLICY: "PASSIVE" });
        rows.push(r);
        print(r);
      }
    }
  }

  // Ratio lines: ours on each provider against each PyTorch dtype, per task.
  const lines: string[] = [];
  for (const task of ["sample", "dpo"]) {
    for (const o of rows.filter((r) => r.task === task && r.who.startsWith("ours-") && !r.error)) {
      for (const t of rows.filter((r) => r.task === task && r.who.startsWith("torch-") && !r.error)) {
        const oursMem = o.peakDeviceMB || o.peakRssMB!, torchMem = t.peakDeviceMB || t.peakRssMB!;
        lines.push(`ratio gpu-${task}-${o.who.slice(5)} vs ${t.who} speed=${(t.seconds! / o.seconds!).toFixed(2)} memory=${(oursMem / torchMem).toFixed(2)}`);
      }
    }
  }
  for (const l of lines) console.log(l);
  const bf16 = rows.find((r) => r.task === "dpo" && r.who.endsWith("-bf16") && !r.error);
  const bestOurs = rows.filter((r) => r.task === "dpo" && r.who.startsWith("ours-") && !r.error).sort((a, b) => a.seconds! - b.seconds!)[0];
  if (MODE === "full") {
    console.log(bf16 && bestOurs
      ? `goal: our DPO step within 1.5x of PyTorch bf16: ${bestOurs.seconds! <= 1.5 * bf16.seconds! ? "met" : "not met"} (${bestOurs.who} ${bestOurs.seconds!.toFixed(3)} s vs ${bf16.seconds!.toFixed(3)} s)`
      : "goal: our DPO step within 1.5x of PyTorch bf16: not measured (needs ours on a GPU provider and PyTorch CUDA)");
  }
  const total = (performance.now() - t0) / 1000;
  console.log(`bench/gpu.ts --mode ${MODE}: ${rows.length} measurements in ${total.toFixed(0)} s`);
  if (MODE === "full" && !values["no-record"] && rows.some((r) => !r.error)) {
    const gpu = hasNvidiaSmi ? Bun.spawnSync(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]).stdout.toString().trim() : "no nvidia-smi";
    const when = new Date().toISOString().slice(0, 16);
    const table = rows.map((r) => `| ${when} | gpu-${r.task} | ${r.who} | ${r.error ? `failed: ${r.error}` : `${r.seconds!.toFixed(4)} s`} | ${r.peakDeviceMB ? `${r.peakDeviceMB.toFixed(0)} MiB device` : `${(r.peakRssMB ?? 0).toFixed(0)} MB RSS`} | ${gpu}; ${cpus().length}x ${cpus()[0]?.model ?? "?"} | \`bench/gpu.sh\` |`).join("\n");
    appendFileSync("bench/RESULTS.md", `\n${table}\n${lines.map((l) => `\n    ${l}`).join("")}\n`);
  }
}

await main();
