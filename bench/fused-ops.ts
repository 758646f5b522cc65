// Fused (com.microsoft.MultiHeadAttention) vs standard-op attention in inference graphs, on the
// CPU: the same graph compiled both ways (CompileOptions.fusedOps), alternating, medians.
//   attn-sd-self   SD 1.5's first transformer block self-attention: 2 rows (CFG), 4096 tokens, 8 heads of 40
//   attn-sd-cross  the same queries over 77 text tokens (768 wide)
//   vit-s          the vit-forward bench's model: ViT-S/16, batch 8, 224 px, 12 layers
// Usage: bun bench/fused-ops.ts [--threads 2] [--iters 3] [--rounds 3] [--only a,b]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as G from "../lib/graph/index.ts";
import { vitForward } from "../lib/models/vit.ts";
import { Params } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { median, timeIt } from "./timing.ts";
import { VIT_S16, randomVitWeights } from "./vit-forward.ts";

const { values } = parseArgs({ options: { threads: { type: "string", default: "2" }, iters: { type: "string", default: "3" }, rounds: { type: "string", default: "3" }, only: { type: "string" } } });
const threads = Number(values.threads);
const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

interface Case { name: string; build: () => { outputs: Record<string, G.Tensor>; feeds: G.Feeds } }

function attnCase(name: string, B: number, Lq: number, Lk: number, C: number, Ck: number, heads: number): Case {
  return {
    name,
    build: () => {
      const g = new G.Graph();
      const rng = new Rng(3);
      const x = g.input("x", [B, Lq, C]);
      const ctx = Lk === Lq && Ck === C ? x : g.input("ctx", [B, Lk, Ck]);
      const w = (o: number, i: number) => g.constant(rng.normals(o * i, 0.05), [o, i]);
      const q = G.splitHeads(G.linear(x, w(C, C)), heads);
      const k = G.splitHeads(G.linear(ctx, w(C, Ck)), heads);
      const v = G.splitHeads(G.linear(ctx, w(C, Ck)), heads);
      const out = G.linear(G.mergeHeads(G.attention(q, k, v)), w(C, C));
      const feeds: G.Feeds = { x: new Rng(1).normals(B * Lq * C) };
      if (ctx !== x) feeds.ctx = new Rng(2).normals(B * Lk * Ck);
      return { outputs: { out }, feeds };
    },
  };
}

const CASES: Case[] = [
  attnCase("attn-sd-self", 2, 4096, 4096, 320, 320, 8),
  attnCase("attn-sd-cross", 2, 4096, 77, 320, 768, 8),
  {
    name: "vit-s",
    build: () => {
      const g = new G.Graph();
      const images = g.input("images", [8, 3, 224, 224]);
      const out = vitForward(new Params(g, randomVitWeights(VIT_S16, 0)), images, VIT_S16);
      return { outputs: { hidden: out.lastHiddenState }, feeds: { images: new Rng(1).normals(8 * 3 * 224 * 224) } };
    },
  },
];

const only = values.only?.split(",");
for (const c of CASES.filter((c) => !only || only.includes(c.name))) {
  const { outputs, feeds } = c.build();
  const std = await G.compile(outputs, { threads });
  const fused = await G.compile(outputs, { threads, fusedOps: true });
  const a = await std.run(feeds), b = await fused.run(feeds);
  const k = Object.keys(outputs)[0]!;
  let maxDiff = 0, scale = 0;
  const x = a[k] as Float32Array, y = b[k] as Float32Array;
  for (let i = 0; i < x.length; i++) { maxDiff = Math.max(maxDiff, Math.abs(x[i]! - y[i]!)); scale = Math.max(scale, Math.abs(x[i]!)); }
  const ts: number[] = [], tf: number[] = [];
  const loads: string[] = [];
  for (let r = 0; r < Number(values.rounds); r++) {
    ts.push(await timeIt(() => std.run(feeds), Number(values.iters)));
    tf.push(await timeIt(() => fused.run(feeds), Number(values.iters)));
    loads.push(load());
  }
  const s = median(ts), f = median(tf);
  console.log(`${c.name}: standard ${(s * 1000).toFixed(1)} ms, fused ${(f * 1000).toFixed(1)} ms, standard/fused ${(s / f).toFixed(2)}x; max |fused - standard| ${maxDiff.toExponential(2)} (scale ${scale.toExponential(2)}); ${threads} threads; load ${loads.join(" | ")}`);
}
