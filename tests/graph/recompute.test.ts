// Recompute (gradient checkpointing) and chunked attention (lib/graph/recompute.ts, grad's
// `recompute` option in lib/graph/autodiff.ts).
//
// - Gradients with recompute equal those without (a tiny SD-style UNet with IP-Adapter attention,
//   gradients of every weight and of the input; a tiny ViT likewise), to float rounding: the
//   recomputed copy runs the same ops on the same saved inputs.
// - Recompute really happens: no backward node reads an activation from inside a segment (only
//   the segments' inputs and outputs), while without it the backward does read them.
// - Chunked attention equals attention (outputs and gradients of q, k, v), never builds a
//   [.., Lq, Lk] score tensor, and its backward reads no chunk's scores.

import { describe, expect, test } from "bun:test";
import * as G from "../../lib/graph/index.ts";
import { Graph, type Node, type Tensor } from "../../lib/graph/index.ts";
import { chunkedAttention, graphSegments } from "../../lib/graph/recompute.ts";
import { unetConfigFromJson, unetForward, unetParamShapes } from "../../lib/models/unet.ts";
import { vitConfigFromJson, vitForward, vitParamShapes } from "../../lib/models/vit.ts";
import { initWeights } from "../../lib/nn/init.ts";
import { Params, type WeightSource } from "../../lib/nn/params.ts";
import { Rng } from "../../lib/rng.ts";

/** Largest |a - b| over all values, relative to 1 + the largest |b| of the tensor. */
function worst(a: Record<string, G.HostArray>, b: Record<string, G.HostArray>): { name: string; err: number } {
  let w = { name: "", err: 0 };
  for (const [k, va] of Object.entries(a)) {
    const x = va as Float32Array, y = b[k] as Float32Array;
    expect(y).toBeDefined();
    let diff = 0, mag = 0;
    for (let i = 0; i < y.length; i++) {
      diff = Math.max(diff, Math.abs(x[i]! - y[i]!));
      mag = Math.max(mag, Math.abs(y[i]!));
    }
    expect(Number.isFinite(diff)).toBe(true);
    if (diff / (1 + mag) > w.err) w = { name: k, err: diff / (1 + mag) };
  }
  return w;
}

/**
 * Backward nodes (those grad added) that read a tensor made inside a segment which is not one of
 * the segment's outputs (read by a forward node outside it, or a graph output).
 */
function innerReads(g: Graph, forwardEnd: number, outputs: Tensor[]): number {
  const consumers = new Map<Tensor, number[]>();
  g.nodes.forEach((n, i) => n.inputs.forEach((x) => x && consumers.set(x, [...(consumers.get(x) ?? []), i])));
  const outs = new Set(outputs);
  let reads = 0;
  for (const s of graphSegments(g)) {
    for (let i = s.start; i < s.end; i++) {
      for (const t of g.nodes[i]!.outputs) {
        const users = consumers.get(t) ?? [];
        const isOutput = outs.has(t) || users.some((u) => u < forwardEnd && (u < s.start || u >= s.end));
        if (!isOutput) reads += users.filter((u) => u >= forwardEnd).length;
      }
    }
  }
  return reads;
}

/** Builds the model's loss (sum of output * fixed random weights) and its gradients of every weight and input. */
async function gradients(build: (p: Params, g: Graph) => { out: Tensor; inputs: Record<string, [Tensor, Float32Array]> }, source: WeightSource, recompute: boolean) {
  const g = new Graph();
  const p = new Params(g, source, { trainable: () => true });
  const { out, inputs } = build(p, g);
  const w = g.constant(new Rng(9).normals(out.size), out.shape);
  const loss = G.reduceSum(G.mul(out, w), undefined, false);
  const forwardEnd = g.nodes.length;
  const wrt = [...p.trainable.values(), ...Object.values(inputs).map(([t]) => t)];
  const names = [...p.trainable.keys(), ...Object.keys(inputs)];
  const grads = G.grad(loss, wrt, undefined, { recompute });
  const outputs: Record<string, Tensor> = { loss };
  grads.forEach((gr, i) => {
    if (gr) outputs[`grad:${names[i]}`] = gr;
  });
  const c = await G.compile(outputs, { threads: 1 });
  const feeds: Record<string, Float32Array> = Object.fromEntries(Object.entries(inputs).map(([k, [, v]]) => [k, v]));
  for (const [name, t] of p.trainable) feeds[t.name] = source.float32(name);
  const r = await c.run(Object.fromEntries(c.inputs.map((i) => [i.name, feeds[i.name]!])));
  return { r, reads: innerReads(g, forwardEnd, [loss]), segments: graphSegments(g).length, nodes: g.nodes.length };
}

const TINY_UNET = unetConfigFromJson({
  _class_name: "UNet2DConditionModel", in_channels: 4, out_channels: 4, sample_size: 8, block_out_channels: [16, 32], layers_per_block: 1,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  attention_head_dim: 2, cross_attention_dim: 16, norm_num_groups: 8,
});

function tinyUnet(chunk?: number) {
  return (p: Params, g: Graph) => {
    const rng = new Rng(3);
    const sample = g.input("sample", [2, 4, 8, 8]), ehs = g.input("ehs", [2, 5, 16]), ip = g.input("ip", [2, 4, 16]);
    const out = unetForward(p, TINY_UNET, { sample, timestep: g.constant([601, 101], [2]), encoderHiddenStates: ehs, ipTokens: ip, ipScale: 0.7, attentionChunk: chunk });
    return { out, inputs: { sample: [sample, rng.normals(sample.size)], ehs: [ehs, rng.normals(ehs.size)], ip: [ip, rng.normals(ip.size)] } as Record<string, [Tensor, Float32Array]> };
  };
}

describe("recompute", () => {
  const unetWeights = initWeights(unetParamShapes(TINY_UNET, { ipAdapter: true }), 5, 1, "tiny UNet");

  test("tiny UNet with IP-Adapter: gradients of every weight and input equal those without recompute", async () => {
    const plain = await gradients(tinyUnet(), unetWeights, false);
    const re = await gradients(tinyUnet(), unetWeights, true);
    expect(re.segments).toBeGreaterThanOrEqual(8); // resnets and transformers of the down, mid and up blocks
    expect(Object.keys(re.r).length).toBe(Object.keys(plain.r).length);
    const w = worst(re.r, plain.r);
    console.log(`tiny UNet: ${Object.keys(plain.r).length - 1} gradients, worst relative difference ${w.err.toExponential(2)} (${w.name}); backward reads of segment activations: ${plain.reads} without recompute, ${re.reads} with`);
    expect(w.err).toBeLessThan(1e-5);
    expect(plain.reads).toBeGreaterThan(0);
    expect(re.reads).toBe(0);
    expect(re.nodes).toBeGreaterThan(plain.nodes); // the recomputed copies
  }, 120000);

  test("tiny UNet with chunked attention nested in recomputed blocks: same gradients", async () => {
    const plain = await gradients(tinyUnet(), unetWeights, false);
    const re = await gradients(tinyUnet(24), unetWeights, true); // 64 tokens: chunks of 24, 24, 16 query rows
    const w = worst(re.r, plain.r);
    console.log(`tiny UNet, attention in chunks of 24 rows + recompute: worst relative difference ${w.err.toExponential(2)} (${w.name})`);
    expect(w.err).toBeLessThan(1e-5);
    expect(re.reads).toBe(0);
  }, 120000);

  test("tiny ViT: gradients of every weight and of the image equal those without recompute", async () => {
    const cfg = vitConfigFromJson({ model_type: "vit", hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 4, intermediate_size: 48, patch_size: 8, image_size: 32 });
    const weights = initWeights(vitParamShapes(cfg), 7, 1, "tiny ViT");
    const build = (p: Params, g: Graph) => {
      const img = g.input("images", [2, 3, 32, 32]);
      const o = vitForward(p, img, cfg);
      return { out: G.concat([G.reshape(o.patches, [2, -1]), o.global!], 1), inputs: { images: [img, new Rng(4).normals(img.size)] } as Record<string, [Tensor, Float32Array]> };
    };
    const plain = await gradients(build, weights, false);
    const re = await gradients(build, weights, true);
    expect(re.segments).toBe(3);
    const w = worst(re.r, plain.r);
    console.log(`tiny ViT: worst relative difference ${w.err.toExponential(2)} (${w.name}); backward reads of segment activations: ${plain.reads} without recompute, ${re.reads} with`);
    expect(w.err).toBeLessThan(1e-5);
    expect(plain.reads).toBeGreaterThan(0);
    expect(re.reads).toBe(0);
  }, 120000);
});

describe("chunked attention", () => {
  async function run(chunk: number | undefined) {
    const g = new Graph();
    const q = g.param("q", [2, 3, 10, 4]), k = g.param("k", [2, 3, 7, 4]), v = g.param("v", [2, 3, 7, 5]);
    const y = chunkedAttention(q, k, v, chunk);
    const w = g.constant(new Rng(2).normals(y.size), y.shape);
    const loss = G.reduceSum(G.mul(y, w), undefined, false);
    const forwardEnd = g.nodes.length;
    const [gq, gk, gv] = G.grad(loss, [q, k, v]); // chunks are recomputed without the option
    const c = await G.compile({ y, gq: gq!, gk: gk!, gv: gv! }, { threads: 1 });
    const rng = new Rng(6);
    const r = await c.run({ q: rng.normals(q.size), k: rng.normals(k.size), v: rng.normals(v.size) });
    const scores = g.nodes.filter((n: Node) => n.outputs.some((o) => o.shape.join() === "2,3,10,7")).length;
    return { r, scores, reads: innerReads(g, forwardEnd, [y, loss]), segments: graphSegments(g).length };
  }

  test("equals attention (output and gradients of q, k, v) with 3-row chunks, and never builds the full score matrix", async () => {
    const plain = await run(undefined);
    const chunked = await run(3); // 10 rows: 3, 3, 3, 1
    expect(chunked.segments).toBe(4);
    const w = worst(chunked.r, plain.r);
    console.log(`chunked attention: worst relative difference ${w.err.toExponential(2)} (${w.name}); [2,3,10,7] tensors: ${plain.scores} unchunked, ${chunked.scores} chunked`);
    expect(w.err).toBeLessThan(1e-6);
    expect(plain.scores).toBeGreaterThan(0);
    expect(chunked.scores).toBe(0);
    expect(chunked.reads).toBe(0); // each chunk's scores are recomputed in the backward pass
  }, 60000);

  test("no chunk size, or one at least the query length, is plain attention", async () => {
    const g = new Graph();
    const q = g.input("q", [1, 2, 4, 3]), k = g.input("k", [1, 2, 5, 3]), v = g.input("v", [1, 2, 5, 3]);
    const before = g.nodes.length;
    chunkedAttention(q, k, v, 4);
    expect(graphSegments(g).length).toBe(0);
    expect(g.nodes.length - before).toBe(5); // Mul, Transpose, MatMul, Softmax, MatMul
    expect(() => chunkedAttention(q, k, v, 1.5)).toThrow(/positive integer/);
  });
});
