import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { writeSafetensors } from "../../lib/io/safetensors.ts";
import { MemorySource, OverlaySource, Params, SafetensorsSource, weightFiles } from "../../lib/nn/params.ts";

const tmp = () => mkdtempSync(join(tmpdir(), "patchdpo-params-"));

describe("weightFiles", () => {
  test("a sharded checkpoint: the index's shards, every tensor reachable", async () => {
    const dir = tmp();
    await writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), { a: { dtype: "F32", shape: [2], data: Float32Array.from([1, 2]) } });
    await writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), { b: { dtype: "F16", shape: [1], data: Float32Array.from([3]) } });
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" } }));
    const files = weightFiles(dir, ["model"]);
    expect(files.length).toBe(2);
    const src = new SafetensorsSource(files);
    expect(src.names().sort()).toEqual(["a", "b"]);
    expect(Array.from(src.float32("b"))).toEqual([3]);
  });

  test("a shard the index names but the folder lacks, and pickle-only folders, are clear errors", () => {
    const dir = tmp();
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "gone.safetensors" } }));
    expect(() => weightFiles(dir, ["model"])).toThrow(/lists gone.safetensors, which is missing/);
    const d2 = tmp();
    writeFileSync(join(d2, "diffusion_pytorch_model.bin"), "x");
    expect(() => weightFiles(d2, ["diffusion_pytorch_model"])).toThrow(/pickle/i);
    expect(() => weightFiles(tmp(), ["model"])).toThrow(/no model.safetensors/);
  });

  test("an index may not point outside the folder", () => {
    const dir = tmp();
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "../elsewhere.safetensors" } }));
    expect(() => weightFiles(dir, ["model"])).toThrow(/escapes/);
  });
});

describe("Params", () => {
  const src = new MemorySource(new Map([["blk.w", { shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) }]]), "test weights");

  test("shape mismatches and missing names say which weight and what was expected", () => {
    const p = new Params(new G.Graph(), src);
    expect(() => p.get("blk.w", [3, 2])).toThrow(/"blk.w" has shape \[2, 2\], the model expects \[3, 2\]/);
    expect(() => p.scope("blk").get("v", [2])).toThrow(/missing weight "blk.v"/);
  });

  test("trainable weights become graph inputs; frozen ones constants; the same name binds once", () => {
    const g = new G.Graph();
    const p = new Params(g, src, { trainable: (n) => n === "blk.w" });
    const a = p.scope("blk").get("w", [2, 2]);
    expect(a.leaf?.kind).toBe("input");
    expect(a.trainable).toBe(true);
    expect(p.get("blk.w", [2, 2])).toBe(a);
    const frozen = new Params(new G.Graph(), src).get("blk.w", [2, 2]);
    expect(frozen.leaf?.kind).toBe("constant");
  });

  test("an overlay replaces some tensors of its base", () => {
    const over = new MemorySource(new Map([["blk.w", { shape: [2, 2], data: new Float32Array(4) }]]));
    const o = new OverlaySource(src, over);
    expect(Array.from(o.float32("blk.w"))).toEqual([0, 0, 0, 0]);
    expect(o.names()).toEqual(["blk.w"]);
  });
});
