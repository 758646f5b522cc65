// lib/graph/session.ts: what crosses the boundary between the host and an ONNX Runtime session,
// and the one cache of sessions, for compiled graphs and for ONNX files exported elsewhere
// (transformers.js encoders: lib/models/featurizer.ts, lib/eval/embeddings.ts open them here).
//
// bfloat16: onnxruntime-node has no bfloat16 tensor type, so the session carries float32 at its
// edge and casts inside the graph; the host keeps bf16 bits (Uint16Array, as safetensors stores
// them). Values are chosen so that any other reading fails: bf16 bits read as float16 give other
// numbers (0x3fc0 is bf16 1.5 but float16 1.9375), and 1e20 / 1e-20 are outside float16's range.

import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { bf16ToF32, f32ToBf16Bits } from "../../lib/io/safetensors.ts";

const VALUES = [1.5, -2, 3.25, 1e20, -1e-20, 0.1, 65536, 0];
const bits = Uint16Array.from(VALUES, f32ToBf16Bits);

describe("bfloat16 feeds and outputs", () => {
  test("a bf16 input reaches the graph with its exact values", async () => {
    const g = new G.Graph();
    const x = g.input("x", [2, 4], "bfloat16");
    const c = await G.compile({ y: G.mul(G.cast(x, "float32"), 2) });
    expect(c.inputs).toEqual([{ name: "x", shape: [2, 4], dtype: "bfloat16" }]);
    const y = (await c.run({ x: bits })).y as Float32Array;
    expect(Array.from(y)).toEqual(Array.from(bits, (b) => 2 * bf16ToF32(b)));
    expect(y[0]).toBe(3); // 2 x 1.5: not 2 x 1.9375 (the bits read as float16)
    expect(y[3]).toBe(2 * bf16ToF32(f32ToBf16Bits(1e20))); // beyond float16's range
  });

  test("a bf16 output comes back as bf16 bits, rounded to nearest even by the graph's Cast", async () => {
    const g = new G.Graph();
    const x = g.input("x", [4]);
    const c = await G.compile({ y: G.cast(x, "bfloat16") });
    // 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: ties go to the even one, 1.
    const xs = Float32Array.from([1 + 2 ** -8, 3.2512, -1e20, 0.1]);
    const y = (await c.run({ x: xs })).y;
    expect(y).toBeInstanceOf(Uint16Array);
    expect(Array.from(y as Uint16Array)).toEqual(Array.from(xs, f32ToBf16Bits));
    expect((y as Uint16Array)[0]).toBe(0x3f80);
  });

  test("bf16 through a graph and out again; a bf16 input that is itself an output", async () => {
    const g = new G.Graph();
    const x = g.input("x", [8], "bfloat16");
    const y = G.cast(G.neg(G.cast(x, "float32")), "bfloat16");
    const r = await (await G.compile({ y, x })).run({ x: bits });
    expect(Array.from(r.y as Uint16Array)).toEqual(Array.from(bits, (b) => f32ToBf16Bits(-bf16ToF32(b))));
    expect(Array.from(r.x as Uint16Array)).toEqual(Array.from(bits));
  });

  test("a bf16 input fed float32 values is refused, saying what to pass", async () => {
    const g = new G.Graph();
    const x = g.input("x", [8], "bfloat16");
    const c = await G.compile({ y: G.cast(x, "float32") });
    await expect(c.run({ x: Float32Array.from(VALUES) })).rejects.toThrow(/feed "x" is bfloat16: pass its bits as a Uint16Array/);
  });
});

describe("ONNX files through the session cache (openOnnxFile)", () => {
  /** A model file y = x * k, as an exporter would leave it. */
  const writeScale = (path: string, k: number) => {
    const g = new G.Graph();
    writeFileSync(path, G.toOnnx({ y: G.mul(g.input("x", [2, 3]), k) }));
  };
  const x = { data: Float32Array.from([1, 2, 3, 4, 5, 6]), dims: [2, 3] };

  test("runs the file; the same file and options share one session, other options get their own", async () => {
    const dir = mkdtempSync(join(tmpdir(), "patchdpo-onnxfile-"));
    const file = join(dir, "model.onnx");
    writeScale(file, 3);
    const a = await G.openOnnxFile(file, { threads: 1 });
    expect(a.inputNames).toEqual(["x"]);
    expect(a.outputNames).toEqual(["y"]);
    const r = (await a.run({ x })).y!;
    expect(Array.from(r.data as Float32Array)).toEqual([3, 6, 9, 12, 15, 18]);
    expect(r.dims).toEqual([2, 3]);
    expect(await G.openOnnxFile(join(dir, ".", "model.onnx"), { threads: 1 })).toBe(a);
    expect(await G.openOnnxFile(file, { threads: 2 })).not.toBe(a);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a file replaced at the same path gets a new session; clearSessionCache drops them all", async () => {
    const dir = mkdtempSync(join(tmpdir(), "patchdpo-onnxfile-"));
    const file = join(dir, "model.onnx");
    writeScale(file, 3);
    const a = await G.openOnnxFile(file, { threads: 1 });
    writeScale(file, 5);
    utimesSync(file, new Date(), new Date(Date.now() + 10_000)); // a new mtime even on a coarse clock
    const b = await G.openOnnxFile(file, { threads: 1 });
    expect(b).not.toBe(a);
    expect(Array.from((await b.run({ x })).y!.data as Float32Array)).toEqual([5, 10, 15, 20, 25, 30]);
    await G.clearSessionCache();
    expect(await G.openOnnxFile(file, { threads: 1 })).not.toBe(b);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a missing file is named", async () => {
    await expect(G.openOnnxFile("/nonexistent/onnx/model.onnx")).rejects.toThrow(/\/nonexistent\/onnx\/model.onnx does not exist/);
  });
});
