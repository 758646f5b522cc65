// The patch-dpo training step on the WebGPU provider against the CPU: a tiny random-weight SD UNet
// with an IP-Adapter-Plus (the shapes of tests/train/diffusion.test.ts), the IP-Adapter's
// to_k_ip / to_v_ip trainable as in dpo-epoch. The batch is prepared once on the CPU (text, image
// and VAE encoders: score-patches' and the sampler's tests cover those graphs on webgpu); then two
// steps run on each device, with an AdamW update between them, and their loss, logs and every
// gradient are compared.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import type { Device } from "../../lib/graph/index.ts";
import { Rng } from "../../lib/rng.ts";
import { AdamW } from "../../lib/train/adamw.ts";
import { DiffusionTrainer, type PairExample } from "../../lib/train/diffusion.ts";
import { type Diff, NO_WEBGPU, expectClose, fmtDiff, noteWebgpuSkip, timed, worst } from "../graph/webgpu-helpers.ts";
import { TINY_SD_SPEC } from "../graph/device-fixtures.ts";

setDefaultTimeout(300_000);
noteWebgpuSkip("tests/train/webgpu.test.ts");

const SPEC = TINY_SD_SPEC;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "patchdpo-webgpu-train-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const img = (r: number, g: number, b: number) => ({ width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).map((_, i) => [r, g, b][i % 3]! + (i % 7)) });
const PAIRS: PairExample[] = [
  { reference: img(200, 30, 30), generated: img(180, 60, 40), prompt: "a red teapot", qRef: new Float32Array(64).map((_, i) => 0.5 + 0.4 * Math.sin(i)), qGen: new Float32Array(64).map((_, i) => 0.5 + 0.4 * Math.cos(i)) },
  { reference: img(30, 30, 200), generated: img(50, 40, 190), prompt: "a teapot on the beach", qRef: new Float32Array(64).fill(0.6), qGen: new Float32Array(64).map((_, i) => (i % 5) / 5) },
];

describe.skipIf(NO_WEBGPU !== null)("patch-dpo training step on webgpu", () => {
  test("two steps with an AdamW update between: loss, logs and every IP-Adapter gradient, webgpu vs cpu", async () => {
    await writeModelFolder(join(dir, "model"), SPEC, 1);
    await writeIpAdapter(join(dir, "ip.safetensors"), SPEC.unet, { kind: "resampler", embeddingDim: 1280, dim: 16, depth: 1, dimHead: 8, heads: 2, numQueries: 2, outputDim: 32, ffMult: 2 }, 2);
    const model = loadDiffusionModel(join(dir, "model"));
    const ip = loadIpAdapter(join(dir, "ip.safetensors"), "mobilenet_v2");
    const trainer = (device: Device) =>
      new DiffusionTrainer({ model, ip, pairs: 2, height: 16, width: 16, objective: "patch-dpo", dpo: { beta: 100, lambda: 0.5 }, trainable: (n) => n.includes("_ip."), threads: 1, device });
    const cpu = trainer("cpu"), gpu = trainer("webgpu");
    const feeds = await cpu.prepare(PAIRS, new Rng(1), { image: 0, text: 0, both: 0 });
    // Away from theta = reference, so the DPO term and its gradient are not at their symmetric point.
    const start = new Map([...cpu.initial].map(([k, v]) => [k, Float32Array.from(v, (x, i) => x * (1 + 0.2 * Math.sin(i + k.length)))]));
    const diffs: Diff[] = [];
    const times: number[] = [];
    const weights = { cpu: new Map([...start].map(([k, v]) => [k, Float32Array.from(v)])), gpu: new Map([...start].map(([k, v]) => [k, Float32Array.from(v)])) };
    const opt = { cpu: new AdamW({ lr: 1e-3, weightDecay: 0.01 }), gpu: new AdamW({ lr: 1e-3, weightDecay: 0.01 }) };
    const TOL = 1e-3;
    for (let step = 0; step < 2; step++) {
      const a = await cpu.step(feeds, weights.cpu);
      const [b, seconds] = await timed(() => gpu.step(feeds, weights.gpu));
      times.push(seconds);
      diffs.push(expectClose(`step ${step} loss`, [b.loss], [a.loss], TOL));
      for (const k of Object.keys(a.logs)) diffs.push(expectClose(`step ${step} ${k}`, [b.logs[k]!], [a.logs[k]!], TOL, 1e-3));
      expect([...b.grads.keys()].sort()).toEqual([...a.grads.keys()].sort());
      // Gradients against the largest one's scale where a tensor's own is tiny (a deep block's).
      const largest = Math.max(...[...a.grads.values()].map((g) => g.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
      for (const [k, g] of a.grads) diffs.push(expectClose(`step ${step} grad ${k}`, b.grads.get(k)!, g, TOL, largest / 100));
      opt.cpu.step(weights.cpu, a.grads);
      opt.gpu.step(weights.gpu, b.grads);
    }
    const d = worst(diffs);
    console.log(`webgpu vs cpu: patch-dpo step x2 (${cpu.shapes().size} trainable tensors): ${fmtDiff(d)} (tolerance ${TOL}); webgpu step ${times.map((t) => t.toFixed(2)).join(" s, ")} s (the first compiles)`);
  });
});
