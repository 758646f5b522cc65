// lib/models/vae.ts against diffusers' AutoencoderKL.
//
// 1. Structure: the SD VAE's weight names and shapes (config.json fixture transcribed from
//    runwayml/stable-diffusion-v1-5/vae) equal, in state-dict order, the list that
//    bench/parity/make_unet_param_lists.py takes from diffusers' own state_dict (v0.31.0): 248 tensors,
//    83,653,863 parameters (the published size of the SD / SDXL VAE).
// 2. Parity with diffusers itself (v0.31.0, run by bench/parity/make_unet_fixtures.py):
//    UpDecoderBlock2D and the mid block (resnet, attention, resnet) with gradients of every input
//    and weight, and a whole tiny AutoencoderKL (encode mean, decode), also through legacy
//    attention key names.
//
// Tolerance: |ours - torch| <= 1e-4 + 1e-4 |torch| per element (diffusers in float64, except the
// mid-block attention's softmax, which diffusers upcasts to float32).

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { Graph, type Tensor } from "../../lib/graph/index.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { fromLatents, toLatents, upDecoderBlock2D, vaeConfigFromJson, vaeDecode, vaeEncode, vaeMidBlock, vaeParamShapes, withLegacyVaeNames } from "../../lib/models/vae.ts";
import { MemorySource, Params, type WeightSource } from "../../lib/nn/params.ts";
import { type Worst, compare, report, sourceOf } from "./parity-helpers.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/diffusers");



/** Forward + backward of loss = sum(out * R) with every weight trainable; compares out, loss, all gradients. */
async function checkBlock(file: string, build: (p: Params, x: Tensor) => Tensor): Promise<Worst> {
  const f = openSafetensors(join(FIXTURES, file));
  const leaves = JSON.parse(f.metadata.inputs!) as string[];
  const weights = leaves.filter((n) => n !== "x");
  const g = new Graph();
  const p = new Params(g, sourceOf(f, weights), { trainable: () => true });
  const x = g.param("x", f.info("x").shape);
  const out = build(p, x);
  expect(out.shape).toEqual(f.info("out").shape);
  expect([...p.trainable.keys()].sort()).toEqual([...weights].sort());
  const loss = G.reduceSum(G.mul(out, g.constant(f.float32("R"), f.info("R").shape)), undefined, false);
  const grads = G.grad(loss, leaves.map((n) => (n === "x" ? x : p.trainable.get(n)!)));
  const outputs: Record<string, Tensor> = { out, loss };
  leaves.forEach((n, i) => (outputs[`grad.${n}`] = grads[i]!));
  const res = await (await G.compile(outputs)).run(Object.fromEntries(leaves.map((n) => [n, f.float32(n)])));
  const worst: Worst = { abs: 0, ratio: 0 };
  compare("out", res.out as Float32Array, f.float32("out"), worst);
  compare("loss", res.loss as Float32Array, f.float32("loss"), worst);
  for (const n of leaves) compare(`grad.${n}`, res[`grad.${n}`] as Float32Array, f.float32(`grad.${n}`), worst);
  report(file, worst);
  return worst;
}

describe("AutoencoderKL structure", () => {
  test("SD VAE: names and shapes match the diffusers module tree; 248 tensors, 83,653,863 parameters", () => {
    const c = vaeConfigFromJson(JSON.parse(readFileSync(join(FIXTURES, "sd-vae.config.json"), "utf8")));
    expect(c.scalingFactor).toBe(0.18215); // diffusers' default: the SD 1.5 config predates the field
    expect(c.shiftFactor).toBeNull();
    const ours = [...vaeParamShapes(c)];
    const want = readFileSync(join(FIXTURES, "sd-vae.params.txt"), "utf8").trim().split("\n").map((l): [string, number[]] => {
      const [k, s] = l.split(" ");
      return [k!, s!.split(",").map(Number)];
    });
    expect(ours).toEqual(want);
    expect(ours.length).toBe(248);
    expect(ours.reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)).toBe(83_653_863);
  });

  test("full-size SD VAE graphs build (every op shape-checked) and ask for exactly vaeParamShapes", () => {
    const c = vaeConfigFromJson(JSON.parse(readFileSync(join(FIXTURES, "sd-vae.config.json"), "utf8")));
    const shapes = vaeParamShapes(c);
    const source: WeightSource = {
      label: "sd-vae", has: (n) => shapes.has(n), names: () => [...shapes.keys()], shape: (n) => shapes.get(n)!,
      float32: () => { throw new Error("not read"); },
      fileRange: (n) => ({ file: "/dev/null", byteOffset: 0, byteLength: 4 * shapes.get(n)!.reduce((a, b) => a * b, 1), dtype: "float32" }),
    };
    const g = new Graph();
    const p = new Params(g, source);
    expect(vaeEncode(p, g.input("image", [1, 3, 64, 64]), c).shape).toEqual([1, 4, 8, 8]);
    expect(vaeDecode(p, g.input("latents", [1, 4, 8, 8]), c).shape).toEqual([1, 3, 64, 64]);
    expect([...p.used.keys()].sort()).toEqual([...shapes.keys()].sort());
  });

  test("unsupported configurations are refused by name", () => {
    const base = JSON.parse(readFileSync(join(FIXTURES, "sd-vae.config.json"), "utf8")) as Record<string, unknown>;
    expect(() => vaeConfigFromJson({ ...base, _class_name: "AutoencoderTiny" })).toThrow(/AutoencoderTiny/);
    expect(() => vaeConfigFromJson({ ...base, up_block_types: ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"] })).toThrow(/up_block_types/);
  });
});

describe("VAE blocks vs diffusers + autograd (forward + backward)", () => {
  test("UpDecoderBlock2D: resnets without time embedding (eps 1e-6), Upsample2D", async () => {
    const w = await checkBlock("vae_up_block.safetensors", (p, x) => upDecoderBlock2D(p, x, { outChannels: 8, numLayers: 2, addUpsample: true, groups: 4 }));
    expect(w.ratio).toBeLessThan(1);
  });

  test("mid block: resnet, single-head attention with group_norm and residual, resnet", async () => {
    const c = vaeConfigFromJson({ block_out_channels: [16], norm_num_groups: 4 });
    const w = await checkBlock("vae_mid_block.safetensors", (p, x) => vaeMidBlock(p, x, c));
    expect(w.ratio).toBeLessThan(1);
  });
});

describe("whole AutoencoderKL vs diffusers", () => {
  const f = openSafetensors(join(FIXTURES, "vae_tiny.safetensors"));
  const c = vaeConfigFromJson(JSON.parse(f.metadata.config!) as Record<string, unknown>);
  const weights = f.names().filter((n) => !["image", "latents", "mean", "decoded"].includes(n));

  async function run(source: WeightSource): Promise<{ mean: Float32Array; decoded: Float32Array; used: Map<string, number[]> }> {
    const g = new Graph();
    const p = new Params(g, source);
    const mean = vaeEncode(p, g.input("image", f.info("image").shape), c);
    const decoded = vaeDecode(p, g.input("latents", f.info("latents").shape), c);
    const res = await (await G.compile({ mean, decoded })).run({ image: f.float32("image"), latents: f.float32("latents") });
    return { mean: res.mean as Float32Array, decoded: res.decoded as Float32Array, used: p.used };
  }

  test("encode (latent mean) and decode of a tiny config; every weight used, as vaeParamShapes lists", async () => {
    const { mean, decoded, used } = await run(sourceOf(f, weights));
    const shapes = vaeParamShapes(c);
    expect([...used.keys()].sort()).toEqual([...weights].sort());
    expect([...shapes.keys()].sort()).toEqual([...weights].sort());
    for (const [n, s] of used) expect(shapes.get(n), n).toEqual(s);
    const worst: Worst = { abs: 0, ratio: 0 };
    compare("mean", mean, f.float32("mean"), worst);
    compare("decoded", decoded, f.float32("decoded"), worst);
    report("vae_tiny.safetensors", worst);
    expect(worst.ratio).toBeLessThan(1);
  });

  test("legacy attention names (query/key/value/proj_attn, 1x1-conv shapes) bind through withLegacyVaeNames", async () => {
    const legacy = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const n of weights) {
      const old = n.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.").replace(".to_out.0.", ".proj_attn.");
      const shape = f.info(n).shape;
      legacy.set(old, { shape: old !== n && shape.length === 2 ? [...shape, 1, 1] : shape, data: f.float32(n) });
    }
    const src = new MemorySource(legacy, "legacy vae");
    expect(src.has("encoder.mid_block.attentions.0.query.weight")).toBe(true);
    expect(() => new Params(new Graph(), src).get("encoder.mid_block.attentions.0.to_q.weight", [16, 16])).toThrow(/missing weight/);
    const mapped = withLegacyVaeNames(src);
    expect(mapped.shape("decoder.mid_block.attentions.0.to_out.0.weight")).toEqual([16, 16]);
    expect(mapped.names()).toContain("decoder.mid_block.attentions.0.to_out.0.bias");
    const { mean, decoded } = await run(mapped);
    const worst: Worst = { abs: 0, ratio: 0 };
    compare("mean", mean, f.float32("mean"), worst);
    compare("decoded", decoded, f.float32("decoded"), worst);
    expect(worst.ratio).toBeLessThan(1);
  });

  test("latent scaling: toLatents = (mean - shift) * scaling_factor, fromLatents inverts it", async () => {
    expect(c.scalingFactor).toBe(0.5);
    const shifted = { ...c, shiftFactor: 0.25 };
    const g = new Graph();
    const x = g.input("x", [4]);
    const a = toLatents(x, c), b = toLatents(x, shifted), back = fromLatents(toLatents(x, shifted), shifted);
    const res = await (await G.compile({ a, b, back })).run({ x: Float32Array.from([1, -2, 0.5, 4]) });
    expect([...(res.a as Float32Array)]).toEqual([0.5, -1, 0.25, 2]);
    expect([...(res.b as Float32Array)]).toEqual([0.375, -1.125, 0.125, 1.875]);
    expect([...(res.back as Float32Array)]).toEqual([1, -2, 0.5, 4]);
  });
});
