// Memory profile of bench/dpo-step's training graph (issue 13 item 2): where the peak RSS goes.
// Builds the SD 1.5-sized UNet step (mse objective, 2 rows at 32x32 latents, IP projections
// trained) or its forward alone, creates the session with the ONNX Runtime options given, and
// prints VmRSS / RssAnon / RssFile / VmHWM (from /proc/self/status) after each stage.
//   bun bench/dpo-memory.ts [--graph train|forward] [--prepack 1|0] [--opt all|extended] [--recompute] [--attention-chunk rows] [--latent 32] [--iters 2] [--config key=value]
// (--prepack 0 sets session.disable_prepacking; --config adds other "session.<key>" entries.)
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import * as G from "../lib/graph/index.ts";
import type { Tensor } from "../lib/graph/index.ts";
import { unetConfigFromJson, unetForward } from "../lib/models/unet.ts";
import { Params, SafetensorsSource } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { objective } from "../lib/train/objectives.ts";

const { values } = parseArgs({
  options: {
    graph: { type: "string", default: "train" }, prepack: { type: "string", default: "1" }, latent: { type: "string", default: "32" },
    opt: { type: "string", default: "all" }, recompute: { type: "boolean", default: false }, "attention-chunk": { type: "string", default: "0" }, iters: { type: "string", default: "2" }, threads: { type: "string", default: "2" }, config: { type: "string", multiple: true, default: [] },
  },
});
const h = Number(values.latent), R = 2, L = 77, IP = 16;
const status = () => {
  const s = readFileSync("/proc/self/status", "utf8");
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0) / 1024 / 1024;
  return `rss ${kb("VmRSS").toFixed(2)} GB (anon ${kb("RssAnon").toFixed(2)}, file ${kb("RssFile").toFixed(2)}), hwm ${kb("VmHWM").toFixed(2)} GB`;
};
const log = (stage: string) => console.log(`${stage.padEnd(22)} ${status()}`);
// Extra session config entries (e.g. session.disable_prepacking) without touching lib/graph.
const extra: Record<string, string> = {};
if (values.prepack === "0") extra["disable_prepacking"] = "1";
for (const kv of values.config!) {
  const [k, v] = kv.split("=");
  extra[k!] = v!;
}
const create = ort.InferenceSession.create.bind(ort.InferenceSession);
(ort.InferenceSession as unknown as { create: unknown }).create = (bytes: Uint8Array, o: ort.InferenceSession.SessionOptions) =>
  create(bytes, { ...o, extra: { ...(o.extra ?? {}), session: { ...((o.extra as { session?: object })?.session ?? {}), ...extra } } });

log("start");
const config = unetConfigFromJson(JSON.parse(readFileSync("tests/fixtures/diffusers/sd15-unet.config.json", "utf8")));
const D = config.crossAttentionDim[0]!, C = config.inChannels;
const isIp = (n: string) => n.includes(".processor.to_k_ip.") || n.includes(".processor.to_v_ip.");
const source = new SafetensorsSource([resolve("bench/out/sd15-unet-random.safetensors"), resolve("bench/out/dpo-step-ip.safetensors")]);
const g = new G.Graph();
const p = new Params(g, source, { trainable: isIp });
const pred = unetForward(p, config, {
  sample: g.input("noisy", [R, C, h, h]), timestep: g.input("timestep", [R]),
  encoderHiddenStates: g.input("encoder_hidden_states", [R, L, D]), ipTokens: g.input("ip_tokens", [R, IP, D]), ipScale: 1,
  attentionChunk: Number(values["attention-chunk"]) || undefined,
});
const outputs: Record<string, Tensor> = {};
if (values.graph === "forward") outputs.pred = pred;
else {
  const o = objective("mse", { pred, target: g.input("target", [R, C, h, h]), qRef: g.input("q_ref", [1, h, h]), qGen: g.input("q_gen", [1, h, h]) }, { beta: 5000, lambda: 1 });
  const names = [...p.trainable.keys()];
  const grads = G.grad(o.loss, names.map((n) => p.trainable.get(n)!), undefined, values.recompute ? { recompute: true } : undefined);
  outputs.loss = o.loss;
  names.forEach((n, i) => (outputs[`grad:${n}`] = grads[i]!));
}
log("built");
const c = await G.compile(outputs, { threads: Number(values.threads), optimization: values.opt as "all" });
log("session created");
const rng = new Rng(1);
const all: Record<string, Float32Array> = {
  noisy: rng.normals(R * C * h * h), timestep: new Float32Array(R).fill(601), encoder_hidden_states: rng.normals(R * L * D),
  ip_tokens: rng.normals(R * IP * D), target: rng.normals(R * C * h * h),
};
for (const n of p.trainable.keys()) all[n] = source.float32(n);
const feeds = Object.fromEntries(c.inputs.map((i) => [i.name, all[i.name]!]));
log("feeds ready");
for (let i = 0; i < Number(values.iters); i++) {
  const t0 = performance.now();
  const r = await c.run(feeds);
  console.log(`run ${i + 1}: ${((performance.now() - t0) / 1000).toFixed(2)} s${r.loss ? `, loss ${(r.loss as Float32Array)[0]}` : ""}`);
  log(`after run ${i + 1}`);
}
console.log(JSON.stringify({ graph: values.graph, latent: h, attentionChunk: values["attention-chunk"], opt: values.opt, prepack: values.prepack, recompute: values.recompute, extra, maxRssGB: process.resourceUsage().maxRSS / 1024 / 1024 }));
