// CLIP text and vision towers (lib/models/clip-text.ts, clip-vision.ts) against PyTorch, and the
// checkpoint layouts of the real configs we load.
//
// Parity fixtures come from bench/parity/make_clip_fixtures.py (transformers' own modeling_clip.py at
// the v4.35 branch point, evaluated in float64 on float32 weights and inputs): a tiny
// CLIPTextModelWithProjection (quick_gelu, causal mask, pooled at the first eos) and a tiny
// CLIPVisionModelWithProjection (erf gelu). Tolerance per element: |ours - torch| <= 1e-5 +
// 1e-5 |torch| (ONNX Runtime CPU, float32). Each test prints its worst error.
//
// Layouts: tests/fixtures/clip/<name>.params.txt lists the state_dict ("name d0,d1,...") of
// transformers' modules for ViT-B/32, ViT-H/14, ViT-bigG/14 (IP-Adapter image encoders), the SD 1.5
// text encoder and SDXL's text_encoder_2; clip{Text,Vision}ParamShapes must list the same, and
// building the graph must request exactly those weights with those shapes.

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { Graph, type Tensor } from "../../lib/graph/index.ts";
import { loadImage } from "../../lib/io/images.ts";
import { openSafetensors, type SafetensorsFile } from "../../lib/io/safetensors.ts";
import { type ClipActivation, clipPoolingIndices, clipTextConfigFromJson, clipTextForward, clipTextInputs, clipTextParamShapes } from "../../lib/models/clip-text.ts";
import { clipPreprocess, clipVisionConfigFromJson, clipVisionForward, clipVisionParamShapes } from "../../lib/models/clip-vision.ts";
import { MemorySource, Params, type WeightSource } from "../../lib/nn/params.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/clip");
const ATOL = 1e-5;
const RTOL = 1e-5;

/** Largest |have - want| / (ATOL + RTOL |want|) (must stay <= 1) and largest |have - want|. */
function compare(name: string, have: ArrayLike<number>, want: ArrayLike<number>): { ratio: number; abs: number } {
  expect(have.length, name).toBe(want.length);
  let ratio = 0, abs = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(have[i]! - want[i]!);
    const r = d / (ATOL + RTOL * Math.abs(want[i]!));
    if (!(r <= ratio)) (ratio = r), (at = i);
    abs = Math.max(abs, d);
  }
  if (!(ratio <= 1)) throw new Error(`${name}: element ${at} is ${have[at]}, PyTorch has ${want[at]}`);
  return { ratio, abs };
}

/** The fixture's weights (every float tensor that is not an input or an output). */
function weights(f: SafetensorsFile, notWeights: (n: string) => boolean): MemorySource {
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const n of f.names()) if (!notWeights(n)) m.set(n, { shape: f.info(n).shape, data: f.float32(n) });
  return new MemorySource(m, f.path);
}

const isOutput = (n: string) => n === "last_hidden_state" || n.startsWith("hidden_states.") || n === "pooled" || n.endsWith("_embeds");

async function runAndCompare(f: SafetensorsFile, outs: Record<string, Tensor>, feeds: G.Feeds, label: string): Promise<void> {
  const compiled = await G.compile(outs);
  const res = await compiled.run(feeds);
  let worst = { ratio: 0, abs: 0 };
  for (const name of Object.keys(outs)) {
    expect(outs[name]!.shape, name).toEqual(f.info(name).shape);
    const r = compare(name, res[name] as Float32Array, f.float32(name));
    worst = { ratio: Math.max(worst.ratio, r.ratio), abs: Math.max(worst.abs, r.abs) };
  }
  console.log(`parity ${label}: max abs ${worst.abs.toExponential(2)}, worst |diff|/(atol+rtol|ref|) ${worst.ratio.toExponential(2)}`);
}

describe("parity with PyTorch", () => {
  test("CLIPTextModelWithProjection (tiny, quick_gelu)", async () => {
    const f = openSafetensors(join(FIXTURES, "text_tiny.safetensors"));
    const c = clipTextConfigFromJson(JSON.parse(f.metadata.config!), "text_tiny config");
    expect(c.withProjection).toBe(true);
    expect(c.hiddenAct).toBe("quick_gelu");
    const source = weights(f, (n) => isOutput(n) || n === "input_ids" || n === "eos_index");
    const g = new Graph();
    const p = new Params(g, source);
    const [B, L] = f.info("input_ids").shape as [number, number];
    const { inputIds, eosIndex } = clipTextInputs(g, B, L);
    const o = clipTextForward(p, inputIds, eosIndex, c);
    // Every weight of the checkpoint is used, under its key.
    expect([...p.used.keys()].sort()).toEqual(source.names().sort());
    expect(o.hiddenStates).toHaveLength(c.numLayers + 1);
    const outs: Record<string, Tensor> = { last_hidden_state: o.lastHiddenState, pooled: o.pooled, text_embeds: o.textEmbeds! };
    o.hiddenStates.forEach((h, i) => (outs[`hidden_states.${i}`] = h));
    const ids = f.view("input_ids") as BigInt64Array;
    const eos = f.view("eos_index") as BigInt64Array;
    // The fixture pools the first eos; our host-side rule agrees.
    expect(Array.from(clipPoolingIndices(ids, B, L, c.eosTokenId))).toEqual(Array.from(eos));
    await runAndCompare(f, outs, { input_ids: ids, eos_index: eos }, "clip text");
  });

  test("CLIPVisionModelWithProjection (tiny, gelu)", async () => {
    const f = openSafetensors(join(FIXTURES, "vision_tiny.safetensors"));
    const c = clipVisionConfigFromJson(JSON.parse(f.metadata.config!), "vision_tiny config");
    expect(c.withProjection).toBe(true);
    expect(c.hiddenAct).toBe("gelu");
    const source = weights(f, (n) => isOutput(n) || n === "pixel_values");
    const g = new Graph();
    const p = new Params(g, source);
    const pixels = g.input("pixel_values", f.info("pixel_values").shape);
    const o = clipVisionForward(p, pixels, c);
    expect([...p.used.keys()].sort()).toEqual(source.names().sort());
    const outs: Record<string, Tensor> = { last_hidden_state: o.lastHiddenState, pooled: o.pooled, image_embeds: o.imageEmbeds! };
    o.hiddenStates.forEach((h, i) => (outs[`hidden_states.${i}`] = h));
    await runAndCompare(f, outs, { pixel_values: f.float32("pixel_values") }, "clip vision");
  });
});

/** A source that has every listed weight's shape and no data: with all weights trainable, Params never reads values. */
class ShapesOnly implements WeightSource {
  readonly label = "shapes only";
  constructor(readonly shapes: Map<string, number[]>) {}
  has(n: string) { return this.shapes.has(n); }
  names() { return [...this.shapes.keys()]; }
  shape(n: string) { return this.shapes.get(n)!; }
  float32(): Float32Array { throw new Error("ShapesOnly has no values"); }
}

function readParams(name: string): Map<string, number[]> {
  const lines = readFileSync(join(FIXTURES, `${name}.params.txt`), "utf8").trim().split("\n");
  return new Map(lines.map((l) => {
    const [k, s] = l.split(" ");
    return [k!, s!.split(",").map(Number)];
  }));
}

const readConfig = (name: string) => JSON.parse(readFileSync(join(FIXTURES, `${name}.config.json`), "utf8")) as Record<string, unknown>;

describe("checkpoint layouts of real configs", () => {
  const vision: [string, { C: number; layers: number; proj: number }][] = [
    ["vit-b-32", { C: 768, layers: 12, proj: 512 }],
    ["vit-h-14", { C: 1280, layers: 32, proj: 1024 }],
    ["vit-bigg-14", { C: 1664, layers: 48, proj: 1280 }],
  ];
  for (const [name, want] of vision) {
    test(`${name}: clipVisionParamShapes and the graph's requests match the transformers module structure`, () => {
      const expected = readParams(name);
      const c = clipVisionConfigFromJson(readConfig(name), name);
      expect([c.hiddenSize, c.numLayers, c.projectionDim]).toEqual([want.C, want.layers, want.proj]);
      const shapes = clipVisionParamShapes(c);
      expect([...shapes]).toEqual([...expected]); // same names, shapes and module order
      const g = new Graph();
      const p = new Params(g, new ShapesOnly(shapes), { trainable: () => true });
      const o = clipVisionForward(p, g.input("pixel_values", [1, 3, c.imageSize, c.imageSize]), c);
      expect(new Map([...p.used].sort())).toEqual(new Map([...expected].sort()));
      const tokens = (c.imageSize / c.patchSize) ** 2 + 1;
      expect(o.hiddenStates.at(-2)!.shape).toEqual([1, tokens, c.hiddenSize]);
      expect(o.imageEmbeds!.shape).toEqual([1, c.projectionDim]);
    });
  }

  const text: [string, { C: number; layers: number; act: ClipActivation; proj: boolean }][] = [
    ["sd15-text", { C: 768, layers: 12, act: "quick_gelu", proj: false }],
    ["sdxl-text2", { C: 1280, layers: 32, act: "gelu", proj: true }],
  ];
  for (const [name, want] of text) {
    test(`${name}: clipTextParamShapes and the graph's requests match the transformers module structure`, () => {
      const expected = readParams(name);
      const c = clipTextConfigFromJson(readConfig(name), name);
      expect([c.hiddenSize, c.numLayers, c.hiddenAct, c.withProjection]).toEqual([want.C, want.layers, want.act, want.proj]);
      const shapes = clipTextParamShapes(c);
      expect([...shapes]).toEqual([...expected]);
      const g = new Graph();
      const p = new Params(g, new ShapesOnly(shapes), { trainable: () => true });
      const { inputIds, eosIndex } = clipTextInputs(g, 2, 77);
      const o = clipTextForward(p, inputIds, eosIndex, c);
      expect(new Map([...p.used].sort())).toEqual(new Map([...expected].sort()));
      expect(o.hiddenStates.at(-2)!.shape).toEqual([2, 77, c.hiddenSize]);
      expect(o.pooled.shape).toEqual([2, c.hiddenSize]);
      expect(o.textEmbeds?.shape).toEqual(want.proj ? [2, c.hiddenSize] : undefined);
    });
  }

  test("a full CLIPConfig (openai/clip-vit-base-patch32 style) gives both towers with the top-level projection", () => {
    const cfg = {
      architectures: ["CLIPModel"], model_type: "clip", projection_dim: 512,
      text_config: { hidden_size: 512, intermediate_size: 2048, num_attention_heads: 8, num_hidden_layers: 12, projection_dim: 77 },
      vision_config: { hidden_size: 768, intermediate_size: 3072, num_attention_heads: 12, num_hidden_layers: 12, patch_size: 32 },
    };
    const t = clipTextConfigFromJson(cfg);
    const v = clipVisionConfigFromJson(cfg);
    expect([t.withProjection, t.projectionDim, t.maxPositions, t.vocabSize, t.hiddenAct]).toEqual([true, 512, 77, 49408, "quick_gelu"]);
    expect([v.withProjection, v.projectionDim, v.imageSize, v.patchSize]).toEqual([true, 512, 224, 32]);
    expect(clipTextParamShapes(t).get("text_projection.weight")).toEqual([512, 512]);
    expect(clipVisionParamShapes(v).get("visual_projection.weight")).toEqual([512, 768]);
  });

  test("config errors are clear", () => {
    expect(() => clipTextConfigFromJson({ hidden_act: "swish" })).toThrow(/hidden_act "swish" is not supported/);
    expect(() => clipVisionConfigFromJson({ hidden_size: 100, num_attention_heads: 12 })).toThrow(/not divisible/);
    expect(() => clipTextConfigFromJson({ hidden_size: "big" })).toThrow(/"hidden_size" must be a number/);
  });
});

describe("clipPreprocess", () => {
  test("matches openai/CLIP's clip._transform (torchvision Resize(BICUBIC) + CenterCrop + ToTensor + Normalize) on PIL images", async () => {
    const f = openSafetensors(join(FIXTURES, "preprocess.safetensors"));
    const sizes = JSON.parse(f.metadata.sizes!) as Record<string, number>;
    for (const [file, size] of Object.entries(sizes)) {
      const img = await loadImage(join(import.meta.dir, "../fixtures/images", file));
      const have = clipPreprocess(img, size);
      expect(f.info(file).shape).toEqual([3, size, size]);
      const { abs } = compare(file, have, f.float32(file));
      expect(abs).toBeLessThanOrEqual(1e-6);
    }
  });
});
