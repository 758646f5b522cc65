// AdamW microbench (issue 13 item 3): the host update of one step over a parameter set of the
// given sizes, old single-threaded loop (AdamW.stepLegacy) vs AdamW.step (the same loop as one
// kernel) vs AdamW.stepAsync (worker threads over shared memory; bit for bit the same results,
// tests/train/adamw-parallel.test.ts). Sizes: ViT-S (22.0M, train-vit), 19.2M, and the SDXL
// IP-Adapter's to_k_ip/to_v_ip (340.8M, issue 15). Parameters are split into tensors of
// 2.4M values at most (the largest IP-Adapter projection). Medians of --iters steps after one
// warm-up, with the load average beside each. Usage:
//   bun bench/adamw.ts [--sizes 22e6,19.2e6,340.8e6] [--iters 5] [--threads 2]
// Prints one table row per variant: size | variant | wall median | CPU time median (all threads) | speed vs old | load.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { AdamW } from "../lib/train/adamw.ts";
import { median } from "./timing.ts";

const { values } = parseArgs({ options: { sizes: { type: "string", default: "22e6,19.2e6,340.8e6" }, iters: { type: "string", default: "5" }, threads: { type: "string", default: String(navigator.hardwareConcurrency) } } });
const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const TENSOR = 2_457_600; // 1280 x 1920 (an SDXL to_k_ip)

for (const total of values.sizes!.split(",").map(Number)) {
  const params = new Map<string, Float32Array>(), grads = new Map<string, Float32Array>();
  for (let off = 0, k = 0; off < total; off += TENSOR, k++) {
    const n = Math.min(TENSOR, total - off);
    const p = new Float32Array(n), g = new Float32Array(n);
    for (let i = 0; i < n; i++) { p[i] = Math.sin(i + k) * 0.02; g[i] = Math.cos(3 * i + k) * 1e-3; }
    params.set(`w${k}`, p);
    grads.set(`w${k}`, g);
  }
  const opts = { lr: 1e-4, weightDecay: 0.01 };
  const threads = Number(values.threads);
  // One optimizer alive at a time (340.8M values: 2.7 GB of moments each), so variants run one
  // after the other, not alternating; the load is printed beside each.
  const variants: [string, (o: AdamW) => unknown, number][] = [
    ["old loop (stepLegacy)", (o) => o.stepLegacy(params, grads), 1],
    ["step (one kernel)", (o) => o.step(params, grads), 1],
    [`stepAsync, ${threads} threads`, (o) => o.stepAsync(params, grads), threads],
  ];
  let old = 0;
  for (const [n, f, th] of variants) {
    let o: AdamW | undefined = new AdamW(opts, { threads: th });
    await f(o); // warm-up: moments allocated, workers started
    const wall: number[] = [], cpu: number[] = [];
    for (let it = 0; it < Number(values.iters); it++) {
      const c0 = process.cpuUsage(), t0 = performance.now();
      await f(o);
      wall.push((performance.now() - t0) / 1000);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1e6);
    }
    const t = median(wall);
    if (!old) old = t;
    console.log(`| ${(total / 1e6).toFixed(1)}M | ${n} | ${(t * 1000).toFixed(0)} ms | ${(median(cpu) * 1000).toFixed(0)} ms | ${(old / t).toFixed(2)}x | ${load()} |`);
    o = undefined;
    Bun.gc(true);
  }
  params.clear(); grads.clear();
  Bun.gc(true);
}
process.exit(0);
