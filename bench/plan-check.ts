// The memory planner (lib/train/plan.ts) against measured peaks. For each case: first the real run
// in a child process (its own peak RSS: spawned before this process builds any graph, because a
// child started by posix_spawn inherits its parent's peak RSS in ru_maxrss; median of --repeat runs),
// then the planner's prediction from shapes only, the ratio and the load average. One JSON line per case.
//
//   bun bench/plan-check.ts [train-tiny] [train-vit] [finetune-encoder] [dpo-epoch] [dpo-step] [--no-measure]
//       [--dpo-step-flags "--recompute --mapped-weights --attention-chunk 1024"]
//
// dpo-step (SD 1.5-sized UNet) is never run here: its measured peak is bench/RESULTS.md's newest
// dpo-step row (printed beside the prediction).
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as G from "../lib/graph/index.ts";
import type { Tensor } from "../lib/graph/index.ts";
import { writeModelFolder } from "../lib/diffusion/model-folder.ts";
import { loadGraphEncoder } from "../lib/models/featurizer.ts";
import { unetConfigFromJson, unetParamShapes } from "../lib/models/unet.ts";
import { vitForward, vitParamShapes } from "../lib/models/vit.ts";
import { Params } from "../lib/nn/params.ts";
import { ShapeSource } from "../lib/nn/shape-source.ts";
import { type MemoryPlan, diffusionSessions, encoderFromSpec, fmtBytes, modelShapesFromFolder, planDiffusionStep, planFinetuneStep, planStep, projectionFromFile } from "../lib/train/plan.ts";
import { tinyCorpus } from "../lib/tinyworld/catalogue.ts";
import { DEFAULTS as PRETRAIN, TINY_PROJECTION, TINY_SIZE, tinySpec } from "../scripts/pretrain-tiny.ts";
import { trainableWeights } from "../scripts/finetune-encoder.ts";
import { trainableFor } from "../scripts/dpo-epoch.ts";
import { buildDpoStepGraph } from "./dpo-step-graph.ts";
import { VIT_S16 } from "./vit-forward.ts";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { "no-measure": { type: "boolean", default: false }, "dpo-step-flags": { type: "string" }, repeat: { type: "string", default: "3" } } });
const cases = positionals.length ? positionals : ["train-tiny", "train-vit", "finetune-encoder", "dpo-epoch", "dpo-step"];
const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const MB = (b: number) => b / 2 ** 20;

/**
 * Runs a command in a child (before any graph is built here) --repeat times and returns the median
 * of its peak RSS in MB (GNU time), with the range: glibc's heap and ORT's threads make the peak of
 * the same run vary by several percent.
 */
function measure(cmd: string[]): { peakMB: number; load: string; range: [number, number] } {
  const l0 = load();
  const peaks: number[] = [];
  for (let i = 0; i < Math.max(1, Number(values.repeat)); i++) {
    const p = Bun.spawnSync(["/usr/bin/time", "-f", "PEAK_KB=%M", ...cmd], { stdout: "pipe", stderr: "pipe", env: { ...process.env, OMP_NUM_THREADS: "2" } });
    const err = p.stderr.toString();
    if (p.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${p.exitCode}):\n${err.slice(-2000)}`);
    // A bench's own peakRssMB (read before it times a forward-only session for bench/flops.ts), else the process's.
    let own: number | undefined;
    try {
      own = (JSON.parse(p.stdout.toString().trim().split("\n").pop() ?? "") as { peakRssMB?: number }).peakRssMB;
    } catch {
      own = undefined;
    }
    peaks.push(own ?? Number(/PEAK_KB=(\d+)/.exec(err)?.[1]) / 1024);
    // dpo-epoch / finetune-encoder write outputs: a rerun must start fresh.
    const out = cmd.indexOf("--out");
    if (out >= 0) rmSync(cmd[out + 1]!, { recursive: true, force: true });
    const run = cmd.indexOf("--run");
    if (run >= 0) for (const f of ["train", "train.lock"]) rmSync(join(cmd[run + 1]!, f), { recursive: true, force: true });
  }
  peaks.sort((a, b) => a - b);
  return { peakMB: peaks[Math.floor(peaks.length / 2)]!, load: `${l0} -> ${load()}`, range: [peaks[0]!, peaks.at(-1)!] };
}

function report(name: string, command: string, plan: MemoryPlan, measured: { peakMB: number; load: string; range?: [number, number] } | undefined, note = "") {
  const predictedMB = MB(plan.hostBytes);
  console.error(`\n== ${name}: ${command}`);
  for (const l of plan.lines) console.error(`   ${fmtBytes(l.bytes).padStart(10)}  ${l.what}`);
  console.log(JSON.stringify({ case: name, command, predictedMB: Math.round(predictedMB), measuredMB: measured ? Math.round(measured.peakMB) : null, measuredRangeMB: measured?.range?.map(Math.round) ?? null, ratio: measured ? Number((predictedMB / measured.peakMB).toFixed(3)) : null, load: measured?.load ?? null, note }));
}

const tmp = mkdtempSync(join(tmpdir(), "plan-check-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));

for (const c of cases) {
  if (c === "train-tiny") {
    // bench/train-tiny.ts: DiffusionTrainer (mse, every weight trainable, memArena), batch 8 pairs.
    const cmd = ["bun", "bench/train-tiny.ts", "--threads", "2", "--iters", "2"];
    const m = values["no-measure"] ? undefined : measure(cmd);
    const dir = join(tmp, "tiny");
    await writeModelFolder(dir, tinySpec(tinyCorpus(), PRETRAIN.prediction, PRETRAIN.channels), PRETRAIN.seed);
    const { sessions, trainableValues } = diffusionSessions({
      model: modelShapesFromFolder(dir), projection: TINY_PROJECTION, encoder: { kind: "mobilenet" }, pairs: PRETRAIN.batch, size: TINY_SIZE,
      objective: "mse", trainable: () => true, memArena: true, precision: "fp32",
    });
    // The bench keeps the weights it trains and the trainer's starting copy; one gradient copy (no accumulator).
    report(c, cmd.join(" "), planStep({ sessions, trainableValues, weightCopies: 2, gradCopies: 1, memArena: true, precision: "fp32" }), m);
  } else if (c === "train-vit") {
    // bench/train-vit.ts: ViT-S/16, batch 8, 224 px, every weight trainable, no arena (a training graph).
    const cmd = ["bun", "bench/train-vit.ts", "--threads", "2", "--iters", "2"];
    const m = values["no-measure"] ? undefined : measure(cmd);
    const g = new G.Graph();
    const p = new Params(g, new ShapeSource(vitParamShapes(VIT_S16)), { trainable: () => true });
    const h = vitForward(p, g.input("images", [8, 3, 224, 224]), VIT_S16).lastHiddenState;
    const loss = G.reduceMean(G.mul(h, h), undefined, false);
    const names = [...p.trainable.keys()];
    const grads = G.grad(loss, names.map((n) => p.trainable.get(n)!));
    const outputs: Record<string, Tensor> = { loss };
    names.forEach((n, i) => (outputs[`grad:${n}`] = grads[i]!));
    const values_ = names.reduce((s, n) => s + p.trainable.get(n)!.size, 0);
    // The random weights' MemorySource and the trained copy; one gradient copy.
    report(c, cmd.join(" "), planStep({ sessions: [{ name: "train graph", outputs }], trainableValues: values_, weightCopies: 2, gradCopies: 1, memArena: false, precision: "fp32" }), m);
  } else if (c === "finetune-encoder") {
    // scripts/finetune-encoder.ts on the raw MobileNetV2, its default 2 blocks, --batch 4 and 16.
    for (const batch of [4, 16]) {
      const out = join(tmp, `ft-${batch}`);
      const cmd = ["bun", "scripts/finetune-encoder.ts", "--images", "bench/out/encoder-split/renders", "--encoder", "mobilenet_v2", "--steps", "3", "--batch", String(batch), "--holdout", "2", "--holdout-views", "1", "--threads", "2", "--out", out];
      const m = values["no-measure"] ? undefined : measure(cmd);
      const ge = loadGraphEncoder("mobilenet_v2");
      const plan = planFinetuneStep({
        encoder: ge.encoder, source: ge.source, trainable: trainableWeights(ge.encoder, 2), batch, imageSize: ge.encoder.imageSize, matches: 0, temperature: 0.07, evalBatch: 8, precision: "fp32",
      });
      report(`${c} --batch ${batch}`, cmd.join(" "), plan, m);
    }
  } else if (c === "dpo-epoch") {
    // scripts/dpo-epoch.ts on a copy of the demo run (tiny world, patch-dpo, batch 4 pairs, 2 steps).
    if (!existsSync("data/runs/demo/patch-scores.jsonl")) {
      console.error("dpo-epoch: data/runs/demo is missing (make demo); skipped");
      continue;
    }
    const run = join(tmp, "demo");
    cpSync("data/runs/demo", run, { recursive: true, filter: (f) => !f.includes("/train") && !f.includes("/eval") });
    const cmd = ["bun", "scripts/dpo-epoch.ts", "--run", run, "--model", "checkpoints/tiny", "--ip-adapter", "checkpoints/tiny/ip-adapter.safetensors", "--image-encoder", "mobilenet_v2", "--objective", "patch-dpo", "--max-steps", "2", "--threads", "2"];
    const m = values["no-measure"] ? undefined : measure(cmd);
    const plan = planDiffusionStep({
      model: modelShapesFromFolder("checkpoints/tiny"), projection: projectionFromFile("checkpoints/tiny/ip-adapter.safetensors"), encoder: encoderFromSpec("mobilenet_v2"),
      pairs: 4, size: 64, objective: "patch-dpo", trainable: trainableFor("ip"), memArena: true, precision: "fp32",
    });
    report(c, cmd.join(" "), plan, m);
  } else if (c === "dpo-step") {
    // bench/dpo-step.ts's graphs (SD 1.5 UNet + IP-Adapter attention, 1 pair at 32x32 latents, text and
    // image tokens given), with the flags of bench/RESULTS.md's newest dpo-step row (--recompute,
    // --mapped-weights, --attention-chunk, --twin-in-graph, --latent when its command names them).
    const rows = readFileSync("bench/RESULTS.md", "utf8").split("\n").filter((l) => /^\| [^|]+ \| dpo-step \|/.test(l));
    const last = rows.at(-1) ?? "";
    const peak = Number(/\| ([\d.]+) MB \/ [\d.]+ MB = /.exec(last)?.[1]);
    // --dpo-step-flags "...": predict for these flags instead (nothing measured to compare with).
    const given = values["dpo-step-flags"];
    const cmdOf = given !== undefined ? `bun bench/dpo-step.ts ${given}` : /`([^`]*bench\/run\.ts dpo-step[^`]*)`/.exec(last)?.[1] ?? "";
    const flag = (name: string) => new RegExp(`--${name}(["'\\s]|$)`).test(cmdOf);
    const valueOf = (name: string) => new RegExp(`--${name}[ =](\\d+)`).exec(cmdOf)?.[1];
    const recompute = flag("recompute"), mappedWeights = flag("mapped-weights"), twinInGraph = flag("twin-in-graph");
    const attentionChunk = Number(valueOf("attention-chunk") ?? 0) || undefined;
    const h = Number(valueOf("latent") ?? 32);
    const config = unetConfigFromJson(JSON.parse(readFileSync("tests/fixtures/diffusers/sd15-unet.config.json", "utf8")));
    const source = new ShapeSource(unetParamShapes(config, { ipAdapter: true }));
    for (const kind of ["patch-dpo", "mse"] as const) {
      const build = (training: boolean) => {
        const b = buildDpoStepGraph({ source, config, kind, latent: h, training, recompute, attentionChunk, twinInGraph });
        return { outputs: b.outputs, values: [...b.trainables.values()].reduce((n, t) => n + t.size, 0) };
      };
      const train = build(true);
      const sessions = [{ name: "train graph", outputs: train.outputs }, ...(kind === "patch-dpo" && !twinInGraph ? [{ name: "frozen twin", outputs: build(false).outputs }] : [])];
      // Host: `initial` (views of the mapped IP file, touched) and `weights`; one gradient copy.
      const plan = planStep({ sessions, trainableValues: train.values, weightCopies: 2, gradCopies: 1, memArena: false, precision: "fp32", mappedWeights });
      // The row's msePeakRssMB is the mse step's own peak only since bench/dpo-step.ts reads VmHWM (rows after 16:21).
      const msePeak = Number(/msePeakRssMB ours ([\d.e+]+)/.exec(last)?.[1]);
      const rowPeak = kind === "patch-dpo" ? peak : /peak = VmHWM|T1[7-9]:|T2\d:/.test(last) ? msePeak : NaN;
      const measured = Number.isFinite(rowPeak) && given === undefined ? { peakMB: rowPeak, load: `bench/RESULTS.md: ${last.split("|")[1]!.trim()}` } : undefined;
      report(`dpo-step ${kind}`, `${cmdOf || "make bench-dpo-step"} (not run here; bench/RESULTS.md newest row)`, plan, measured,
        kind === "mse" && !measured ? "the mse step's own peak is not in this row (a child started by posix_spawn inherited its parent's ru_maxrss before bench/dpo-step.ts read VmHWM)" : "");
    }
  } else throw new Error(`unknown case ${c} (train-tiny, train-vit, finetune-encoder, dpo-epoch, dpo-step)`);
}
