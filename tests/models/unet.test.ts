// lib/models/unet.ts against diffusers.
//
// 1. Structure: the weight names and shapes of the standard SD 1.5 and SDXL UNets (config.json
//    fixtures transcribed from runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-
//    xl-base-1.0) equal, in state-dict order, the state_dict lists that
//    bench/parity/make_unet_param_lists.py takes from diffusers itself (v0.31.0), and the published sizes: SD 1.5 686 tensors /
//    859,520,964 parameters (the figure in diffusers' own `num_parameters` docstring), SD 2.x
//    865,910,724, SDXL 1680 tensors / 2,567,463,684 parameters.
// 2. Parity with diffusers itself (v0.31.0, run by bench/parity/make_unet_fixtures.py; fixtures in
//    tests/fixtures/diffusers/): a CrossAttnDownBlock2D with IPAdapterAttnProcessor and a
//    CrossAttnUpBlock2D (outputs and the gradients of every input and weight), a whole tiny
//    SD-style UNet (output with and without IP tokens, gradients of the IP weights, the release
//    key numbering that diffusers' own IP-Adapter loader reads) and a tiny SDXL-style UNet
//    (text_time conditioning, linear projections, 2 transformer layers; with and without IP
//    tokens). The fixtures' configs are the models' full diffusers configs.
//
// Tolerance, per element: |ours - torch| <= ATOL + RTOL |torch| with ATOL = RTOL = 1e-4 (as
// tests/train/parity.test.ts; the reference is diffusers in float64 on float32 inputs, except the
// timestep embedding, which diffusers computes in float32 whatever the model dtype, so the error is
// essentially our float32 arithmetic). Each test prints its worst errors.

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { Graph, type Tensor } from "../../lib/graph/index.ts";
import { openSafetensors, type SafetensorsFile } from "../../lib/io/safetensors.ts";
import {
  type DownBlockSpec,
  IpAdapterUNetSource,
  type UNetConfig,
  type UpBlockSpec,
  ipAdapterKeyMap,
  unetAttnProcessorNames,
  unetConfigFromJson,
  unetDownBlock,
  unetForward,
  unetParamShapes,
  unetUpBlock,
} from "../../lib/models/unet.ts";
import { MemorySource, Params, type WeightSource } from "../../lib/nn/params.ts";
import { type Worst, compare, report, sourceOf } from "./parity-helpers.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/diffusers");

const readJson = (name: string) => JSON.parse(readFileSync(join(FIXTURES, name), "utf8")) as Record<string, unknown>;
const readParams = (name: string): [string, number[]][] =>
  readFileSync(join(FIXTURES, name), "utf8").trim().split("\n").map((l) => {
    const [k, s] = l.split(" ");
    return [k!, s!.split(",").map(Number)];
  });
const count = (m: Iterable<[string, number[]]>) => {
  let n = 0;
  for (const [, s] of m) n += s.reduce((a, b) => a * b, 1);
  return n;
};



/**
 * Rebuilds a block with every weight trainable and the named inputs differentiable, takes
 * loss = sum over outputs of sum(out * R), compares outputs, loss and every gradient.
 */
async function checkBlock(file: string, inputs: string[], outs: [string, string][], build: (p: Params, x: Record<string, Tensor>) => Record<string, Tensor>): Promise<Worst> {
  const f = openSafetensors(join(FIXTURES, file));
  const leaves = JSON.parse(f.metadata.inputs!) as string[];
  const weights = leaves.filter((n) => !inputs.includes(n));
  const g = new Graph();
  const p = new Params(g, sourceOf(f, weights), { trainable: () => true });
  const xs = Object.fromEntries(inputs.map((n) => [n, g.param(n, f.info(n).shape)]));
  const ys = build(p, xs);
  // Every weight of the fixture is used, under the fixture's (diffusers) name, with its shape.
  expect([...p.trainable.keys()].sort()).toEqual([...weights].sort());
  let loss: Tensor | null = null;
  for (const [out, r] of outs) {
    expect(ys[out]!.shape).toEqual(f.info(out).shape);
    const term = G.reduceSum(G.mul(ys[out]!, g.constant(f.float32(r), f.info(r).shape)), undefined, false);
    loss = loss ? G.add(loss, term) : term;
  }
  const wrt = leaves.map((n) => xs[n] ?? p.trainable.get(n)!);
  const grads = G.grad(loss!, wrt);
  const outputs: Record<string, Tensor> = { loss: loss! };
  for (const [out] of outs) outputs[out] = ys[out]!;
  leaves.forEach((n, i) => {
    expect(grads[i], `gradient of ${n}`).not.toBeNull();
    outputs[`grad.${n}`] = grads[i]!;
  });
  const res = await (await G.compile(outputs)).run(Object.fromEntries(leaves.map((n) => [n, f.float32(n)])));
  const worst: Worst = { abs: 0, ratio: 0 };
  for (const [out] of outs) compare(out, res[out] as Float32Array, f.float32(out), worst);
  compare("loss", res.loss as Float32Array, f.float32("loss"), worst);
  for (const n of leaves) compare(`grad.${n}`, res[`grad.${n}`] as Float32Array, f.float32(`grad.${n}`), worst);
  report(file, worst);
  return worst;
}

// ------------------------------------------------------------------ structure

describe("UNet2DConditionModel structure (diffusers key names)", () => {
  test("SD 1.5: config.json reads with the attention_head_dim naming quirk (8 heads of 40)", () => {
    const c = unetConfigFromJson(readJson("sd15-unet.config.json"));
    expect(c.heads).toEqual([8, 8, 8, 8]);
    expect(c.blockOutChannels.map((ch, i) => ch / c.heads[i]!)).toEqual([40, 80, 160, 160]);
    expect(c.crossAttentionDim).toEqual([768, 768, 768, 768]);
    expect(c.useLinearProjection).toBe(false);
    expect(c.addition).toBeNull();
  });

  test("SD 1.5: names and shapes match the diffusers module tree; 686 tensors, 859,520,964 parameters", () => {
    const ours = [...unetParamShapes(unetConfigFromJson(readJson("sd15-unet.config.json")))];
    const want = readParams("sd15-unet.params.txt");
    expect(ours).toEqual(want);
    expect(ours.length).toBe(686);
    expect(count(ours)).toBe(859_520_964);
  });

  test("SDXL: names and shapes match; 1680 tensors, 2,567,463,684 parameters; heads 5/10/20 of 64", () => {
    const c = unetConfigFromJson(readJson("sdxl-unet.config.json"));
    expect(c.heads).toEqual([5, 10, 20]);
    expect(c.transformerLayersDown).toEqual([[1, 1], [2, 2], [10, 10]]);
    expect(c.transformerLayersUp).toEqual([[10, 10, 10], [2, 2, 2], [1, 1, 1]]);
    expect(c.addition).toEqual({ type: "text_time", timeEmbedDim: 256, inputDim: 2816 });
    const ours = [...unetParamShapes(c)];
    expect(ours).toEqual(readParams("sdxl-unet.params.txt"));
    expect(ours.length).toBe(1680);
    expect(count(ours)).toBe(2_567_463_684);
  });

  test("SD 2.x (linear projections, heads [5, 10, 20, 20], cross dim 1024): 686 tensors, 865,910,724 parameters", () => {
    const sd2 = { ...readJson("sd15-unet.config.json"), attention_head_dim: [5, 10, 20, 20], cross_attention_dim: 1024, use_linear_projection: true };
    const ours = [...unetParamShapes(unetConfigFromJson(sd2))];
    expect(ours.length).toBe(686);
    expect(count(ours)).toBe(865_910_724);
  });

  test("IP-Adapter key map: release numbering 1, 3, 5, ... over attn_processors (down, up, then mid)", () => {
    const sd15 = unetConfigFromJson(readJson("sd15-unet.config.json"));
    expect(unetAttnProcessorNames(sd15).length).toBe(32);
    const m = ipAdapterKeyMap(sd15);
    expect(m.size).toBe(32);
    const attn2 = (b: string) => `${b}.transformer_blocks.0.attn2.processor.to_k_ip.0.weight`;
    expect(m.get(attn2("down_blocks.0.attentions.0"))).toBe("ip_adapter.1.to_k_ip.weight");
    expect(m.get(attn2("down_blocks.2.attentions.1"))).toBe("ip_adapter.11.to_k_ip.weight");
    expect(m.get(attn2("up_blocks.1.attentions.0"))).toBe("ip_adapter.13.to_k_ip.weight");
    expect(m.get(attn2("up_blocks.3.attentions.2"))).toBe("ip_adapter.29.to_k_ip.weight");
    expect(m.get(attn2("mid_block.attentions.0"))).toBe("ip_adapter.31.to_k_ip.weight");
    expect(m.get(attn2("mid_block.attentions.0").replace("to_k_ip", "to_v_ip"))).toBe("ip_adapter.31.to_v_ip.weight");
    // Every IP weight of the shapes list is mapped, and to distinct release keys.
    const ipNames = [...unetParamShapes(sd15, { ipAdapter: true }).keys()].filter((k) => k.includes(".processor."));
    expect(ipNames.sort()).toEqual([...m.keys()].sort());
    expect(new Set(m.values()).size).toBe(32);

    const xl = ipAdapterKeyMap(unetConfigFromJson(readJson("sdxl-unet.config.json")));
    expect(xl.size).toBe(140); // 70 cross-attentions: ip_adapter.1 .. ip_adapter.139
    expect(xl.get("down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight")).toBe("ip_adapter.1.to_k_ip.weight");
    expect(xl.get("up_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight")).toBe("ip_adapter.49.to_k_ip.weight");
    expect(xl.get("mid_block.attentions.0.transformer_blocks.9.attn2.processor.to_v_ip.0.weight")).toBe("ip_adapter.139.to_v_ip.weight");
  });

  test("full-size SD 1.5 and SDXL graphs build (every op shape-checked) and ask for exactly unetParamShapes(..., ipAdapter)", () => {
    for (const [file, latent, extra] of [["sd15-unet.config.json", 64, false], ["sdxl-unet.config.json", 32, true]] as const) {
      const c = unetConfigFromJson(readJson(file));
      const shapes = unetParamShapes(c, { ipAdapter: true });
      // Weights that live "in a file" become external initializers: nothing is read to build the graph.
      const source: WeightSource = {
        label: file, has: (n) => shapes.has(n), names: () => [...shapes.keys()], shape: (n) => shapes.get(n)!,
        float32: () => { throw new Error("not read"); },
        fileRange: (n) => ({ file: "/dev/null", byteOffset: 0, byteLength: 4 * shapes.get(n)!.reduce((a, b) => a * b, 1), dtype: "float32" }),
      };
      const g = new Graph();
      const p = new Params(g, source);
      const D = c.crossAttentionDim[0]!;
      const out = unetForward(p, c, {
        sample: g.input("sample", [1, 4, latent, latent]), timestep: g.input("t", [1]),
        encoderHiddenStates: g.input("text", [1, 77, D]), ipTokens: g.input("ip", [1, 16, D]), ipScale: 0.6,
        ...(extra ? { textEmbeds: g.input("pooled", [1, 1280]), timeIds: g.input("time_ids", [1, 6]) } : {}),
      });
      expect(out.shape).toEqual([1, 4, latent, latent]);
      expect([...p.used.keys()].sort()).toEqual([...shapes.keys()].sort());
    }
  });

  test("unsupported configuration options are refused by name", () => {
    const base = readJson("sd15-unet.config.json");
    expect(() => unetConfigFromJson({ ...base, class_embed_type: "timestep" })).toThrow(/class_embed_type/);
    expect(() => unetConfigFromJson({ ...base, down_block_types: ["AttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"] })).toThrow(/AttnDownBlock2D/);
    expect(() => unetConfigFromJson({ ...base, addition_embed_type: "text" })).toThrow(/addition_embed_type/);
  });
});

// ------------------------------------------------------------------ blocks

describe("UNet blocks vs diffusers + autograd (forward + backward)", () => {
  test("CrossAttnDownBlock2D: resnet, Transformer2DModel (conv proj) with IP-Adapter attention, Downsample2D", async () => {
    const f = openSafetensors(join(FIXTURES, "unet_down_block.safetensors"));
    const cfg = JSON.parse(f.metadata.config!) as { heads: number; ip_scale: number; groups: number; eps: number };
    const spec: DownBlockSpec = {
      type: "CrossAttnDownBlock2D", inChannels: 8, outChannels: 16, numLayers: 1,
      transformers: [{ heads: cfg.heads, layers: 1, crossAttentionDim: 12, useLinearProjection: false, groups: cfg.groups }],
      addDownsample: true, downsamplePadding: 1, groups: cfg.groups, eps: cfg.eps,
    };
    const w = await checkBlock("unet_down_block.safetensors", ["x", "temb", "context", "ip_tokens"], [["out", "R"], ["skip.0", "R_skip"]], (p, x) => {
      const r = unetDownBlock(p, x.x!, x.temb!, spec, { encoderHiddenStates: x.context!, ip: { tokens: x.ip_tokens!, scale: cfg.ip_scale } });
      expect(r.skips.length).toBe(2);
      expect(r.skips[1]).toBe(r.hidden);
      return { out: r.hidden, "skip.0": r.skips[0]! };
    });
    expect(w.ratio).toBeLessThan(1);
  });

  test("CrossAttnUpBlock2D: skip concatenation, resnets, Transformer2DModel (linear proj, 2 blocks), Upsample2D", async () => {
    const f = openSafetensors(join(FIXTURES, "unet_up_block.safetensors"));
    const cfg = JSON.parse(f.metadata.config!) as { heads: number; groups: number; eps: number };
    const t = { heads: cfg.heads, layers: 2, crossAttentionDim: 12, useLinearProjection: true, groups: cfg.groups };
    const spec: UpBlockSpec = {
      type: "CrossAttnUpBlock2D", inChannels: 8, prevOutputChannel: 16, outChannels: 16, numLayers: 2,
      transformers: [t, t], addUpsample: true, groups: cfg.groups, eps: cfg.eps,
    };
    const w = await checkBlock("unet_up_block.safetensors", ["x", "skip0", "skip1", "temb", "context"], [["out", "R"]], (p, x) => {
      const skips = [x.skip0!, x.skip1!];
      const out = unetUpBlock(p, x.x!, skips, x.temb!, spec, { encoderHiddenStates: x.context! });
      expect(skips.length).toBe(0); // both consumed, last first
      return { out };
    });
    expect(w.ratio).toBeLessThan(1);
  });
});

// ------------------------------------------------------------------ whole models

/** Builds the UNet of a fixture with frozen weights (and the listed ones trainable), runs it. */
function tinyUNet(f: SafetensorsFile, c: UNetConfig, opts: { ip: boolean; trainable?: string[]; source?: MemorySource | IpAdapterUNetSource }) {
  const g = new Graph();
  const weights = f.names().filter((n) => !["sample", "timestep", "context", "ip_tokens", "text_embeds", "time_ids", "R", "out", "out_no_ip", "out_ip", "loss"].includes(n) && !n.startsWith("grad.") && (opts.ip || !n.includes(".processor.")));
  const trainable = new Set(opts.trainable ?? []);
  const p = new Params(g, opts.source ?? sourceOf(f, weights), { trainable: (n) => trainable.has(n) });
  const input = (n: string) => g.input(n, f.info(n).shape);
  const out = unetForward(p, c, {
    sample: input("sample"),
    timestep: input("timestep"),
    encoderHiddenStates: input("context"),
    ...(opts.ip ? { ipTokens: input("ip_tokens"), ipScale: (JSON.parse(f.metadata.config!) as { ip_scale: number }).ip_scale } : {}),
    ...(c.addition ? { textEmbeds: input("text_embeds"), timeIds: input("time_ids") } : {}),
  });
  return { g, p, out, weights };
}

describe("whole UNet2DConditionModel vs diffusers", () => {
  test("tiny SD-style UNet: output with and without IP tokens, gradients of every to_k_ip / to_v_ip", async () => {
    const f = openSafetensors(join(FIXTURES, "unet_tiny.safetensors"));
    const c = unetConfigFromJson(JSON.parse(f.metadata.config!) as Record<string, unknown>);
    const ipNames = JSON.parse(f.metadata.inputs!) as string[];
    expect(ipNames.length).toBe(8); // 4 cross-attentions (down 0, mid, up 1 x 2) x (k, v)
    const { g, p, out, weights } = tinyUNet(f, c, { ip: true, trainable: ipNames });
    // The model asks for exactly the fixture's weights (diffusers names, shapes) and unetParamShapes lists them.
    const shapes = unetParamShapes(c, { ipAdapter: true });
    expect([...p.used.keys()].sort()).toEqual([...weights].sort());
    expect([...shapes.keys()].sort()).toEqual([...weights].sort());
    for (const [n, s] of p.used) expect(shapes.get(n), n).toEqual(s);
    // ... and release keys for all IP weights, 1, 3, 5, 7 (mid block last), as diffusers' own
    // IP-Adapter loader (UNet2DConditionModel._load_ip_adapter_weights) reads them: the generator
    // loads the fixture's IP weights through it under these keys and gets the same output.
    const m = ipAdapterKeyMap(c);
    expect([...m.keys()].sort()).toEqual([...ipNames].sort());
    expect(Object.fromEntries(m)).toEqual(JSON.parse(f.metadata.ip_adapter_keys!));
    expect(m.get("mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight")).toBe("ip_adapter.7.to_k_ip.weight");

    const R = g.constant(f.float32("R"), f.info("R").shape);
    const loss = G.reduceSum(G.mul(out, R), undefined, false);
    const grads = G.grad(loss, ipNames.map((n) => p.trainable.get(n)!));
    const outputs: Record<string, Tensor> = { out };
    ipNames.forEach((n, i) => (outputs[`grad.${n}`] = grads[i]!));
    const feeds = Object.fromEntries(["sample", "timestep", "context", "ip_tokens", ...ipNames].map((n) => [n, f.float32(n)]));
    const res = await (await G.compile(outputs)).run(feeds);
    const worst: Worst = { abs: 0, ratio: 0 };
    compare("out", res.out as Float32Array, f.float32("out"), worst);
    for (const n of ipNames) compare(`grad.${n}`, res[`grad.${n}`] as Float32Array, f.float32(`grad.${n}`), worst);
    report("unet_tiny.safetensors (with IP)", worst);
    expect(worst.ratio).toBeLessThan(1);

    const plain = tinyUNet(f, c, { ip: false });
    expect([...plain.p.used.keys()].some((k) => k.includes(".processor."))).toBe(false);
    const res2 = await (await G.compile({ out: plain.out })).run(Object.fromEntries(["sample", "timestep", "context"].map((n) => [n, f.float32(n)])));
    const w2: Worst = { abs: 0, ratio: 0 };
    compare("out_no_ip", res2.out as Float32Array, f.float32("out_no_ip"), w2);
    report("unet_tiny.safetensors (no IP)", w2);
    expect(w2.ratio).toBeLessThan(1);
  });

  test("IP weights from a release-layout file (ip_adapter.<n>.to_k_ip.weight) bind through IpAdapterUNetSource", async () => {
    const f = openSafetensors(join(FIXTURES, "unet_tiny.safetensors"));
    const c = unetConfigFromJson(JSON.parse(f.metadata.config!) as Record<string, unknown>);
    const m = ipAdapterKeyMap(c);
    const all = tinyUNet(f, c, { ip: true }).weights;
    const base = sourceOf(f, all.filter((n) => !m.has(n)));
    const release = new MemorySource(new Map([...m].map(([ours, rel]) => [rel, { shape: f.info(ours).shape, data: f.float32(ours) }])), "ip-adapter.safetensors");
    const { out } = tinyUNet(f, c, { ip: true, source: new IpAdapterUNetSource(base, release, c) });
    const res = await (await G.compile({ out })).run(Object.fromEntries(["sample", "timestep", "context", "ip_tokens"].map((n) => [n, f.float32(n)])));
    const worst: Worst = { abs: 0, ratio: 0 };
    compare("out", res.out as Float32Array, f.float32("out"), worst);
    expect(worst.ratio).toBeLessThan(1);
  });

  test("tiny SDXL-style UNet (text_time, linear projections, transformer_layers_per_block [1, 2]): names, shapes, output with and without IP tokens", async () => {
    const f = openSafetensors(join(FIXTURES, "unet_tiny_sdxl.safetensors"));
    const c = unetConfigFromJson(JSON.parse(f.metadata.config!) as Record<string, unknown>);
    expect(c.transformerLayersDown).toEqual([[1], [2]]);
    expect(c.transformerLayersUp).toEqual([[2, 2], [1, 1]]);
    expect(Object.fromEntries(ipAdapterKeyMap(c))).toEqual(JSON.parse(f.metadata.ip_adapter_keys!));
    for (const ip of [false, true]) {
      const feeds = Object.fromEntries(["sample", "timestep", "context", "text_embeds", "time_ids", ...(ip ? ["ip_tokens"] : [])].map((n) => [n, f.float32(n)]));
      const { p, out, weights } = tinyUNet(f, c, { ip });
      const shapes = unetParamShapes(c, { ipAdapter: ip });
      expect([...p.used.keys()].sort()).toEqual([...weights].sort());
      expect([...shapes.keys()].sort()).toEqual([...weights].sort());
      for (const [n, s] of p.used) expect(shapes.get(n), n).toEqual(s);
      expect(shapes.get("add_embedding.linear_1.weight")).toEqual([32, 30]);
      expect(shapes.has("down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight")).toBe(true);
      const res = await (await G.compile({ out })).run(feeds);
      const worst: Worst = { abs: 0, ratio: 0 };
      compare(ip ? "out_ip" : "out", res.out as Float32Array, f.float32(ip ? "out_ip" : "out"), worst);
      report(`unet_tiny_sdxl.safetensors (${ip ? "with" : "no"} IP)`, worst);
      expect(worst.ratio).toBeLessThan(1);
    }
  });

  test("input checks name the shapes a caller must fix", () => {
    const f = openSafetensors(join(FIXTURES, "unet_tiny_sdxl.safetensors"));
    const c = unetConfigFromJson(JSON.parse(f.metadata.config!) as Record<string, unknown>);
    const g = new Graph();
    const p = new Params(g, new MemorySource(new Map()));
    const base = { sample: g.input("s", [2, 4, 8, 8]), timestep: g.input("t", [2]), encoderHiddenStates: g.input("e", [2, 5, 12]) };
    expect(() => unetForward(p, c, base)).toThrow(/textEmbeds/);
    expect(() => unetForward(p, c, { ...base, sample: g.input("s2", [2, 4, 7, 7]) })).toThrow(/multiple of 2/);
    expect(() => unetForward(p, c, { ...base, timestep: g.input("t2", [1]) })).toThrow(/timestep/);
  });
});
