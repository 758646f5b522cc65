// Encoder folders for patch scoring: lib/models/vit.ts and lib/models/featurizer.ts against
// transformers' own ViTModel (the v4.35 branch point) and Dinov2WithRegistersModel / Dinov2Model's
// position interpolation (the v4.48 branch point) (fixtures written by
// bench/parity/make_vit_fixtures.py into tests/fixtures/vit/, with random weights):
//   vit/         "vit" layout (DINO v1 style: LayerNorm eps 1e-12, pooler weights we ignore), 32 px
//   vit-onnx/    the same model exported to ONNX in the transformers.js layout
//   dinov2-reg/  "dinov2_with_registers" (2 registers, F16 weights, unused mask_token), position
//                grid 4x4 run at 48x48 (6x6) and 24x40 (3x5): interpolated position embeddings
// transformers computed the references in float64 on the float32 (or float16) values (the position
// grid interpolation in float32, as transformers casts it), so the error measured is essentially our
// float32 arithmetic on ONNX Runtime. Measured (ORT 1.30 CPU): printed per test.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { Graph } from "../../lib/graph/index.ts";
import { UserError } from "../../lib/io/errors.ts";
import type { RgbImage } from "../../lib/io/images.ts";
import { openSafetensors, writeSafetensors } from "../../lib/io/safetensors.ts";
import { ENCODER_KINDS_HELP, type GraphEncoder, loadFeaturizer, loadGraphEncoder, loadVitFolder } from "../../lib/models/featurizer.ts";
import { type ViTConfig, type ViTOutputs, antialiasedBicubicMatrix, interpolatePositionGrid, vitConfigFromJson, vitParamShapes } from "../../lib/models/vit.ts";
import { Params } from "../../lib/nn/params.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/vit");
const VIT = join(FIXTURES, "vit");
const VIT_ONNX = join(FIXTURES, "vit-onnx");
const DINOV2 = join(FIXTURES, "dinov2-reg");
/** Parity aim for last_hidden_state (values of order 1 after the final LayerNorm). */
const STATE_TOL = 1e-5;

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "patchdpo-vit-"));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates
  }
  return m;
};

/** Runs a folder's graph encoder on normalized pixels; returns last_hidden_state, CLS and patch grid. */
async function runEncoder(ge: GraphEncoder, pixels: Float32Array, shape: number[]) {
  const g = new Graph();
  const x = g.input("images", shape);
  const out = ge.encoder.forward(new Params(g, ge.source), x) as ViTOutputs;
  const c = await G.compile({ hidden: out.lastHiddenState, global: out.global!, patches: out.patches }, { threads: 1 });
  const r = await c.run({ images: pixels });
  return {
    hidden: r.hidden as Float32Array,
    hiddenShape: out.lastHiddenState.shape,
    global: r.global as Float32Array,
    patches: r.patches as Float32Array,
    patchShape: out.patches.shape,
  };
}

/** The CLS row and the patch tokens (laid out [B, C, h, w]) of a last_hidden_state [B, L, C]. */
function splitTokens(hidden: Float32Array, B: number, L: number, C: number, skip: number) {
  const global = new Float32Array(B * C);
  const patches = new Float32Array(B * C * (L - skip));
  const n = L - skip;
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) global[b * C + c] = hidden[b * L * C + c]!;
    for (let t = 0; t < n; t++) for (let c = 0; c < C; c++) patches[(b * C + c) * n + t] = hidden[(b * L + skip + t) * C + c]!;
  }
  return { global, patches };
}

describe("parity with transformers (PyTorch float64)", () => {
  test("vit (ViTModel, DINO v1 layout): last_hidden_state, CLS, patch grid", async () => {
    const ref = openSafetensors(join(VIT, "expected.safetensors"));
    const ge = loadVitFolder(VIT);
    const cfg = (ge.encoder as typeof ge.encoder & { config: ViTConfig }).config;
    expect(cfg.layout).toBe("vit");
    expect(cfg.layerNormEps).toBe(1e-12);
    const shape = ref.info("pixel_values").shape;
    const out = await runEncoder(ge, ref.float32("pixel_values"), shape);
    expect(out.hiddenShape).toEqual(ref.info("last_hidden_state").shape);
    const want = ref.float32("last_hidden_state");
    const err = maxAbsDiff(out.hidden, want);
    console.log(`vit: last_hidden_state max abs diff ${err.toExponential(2)}`);
    expect(err).toBeLessThan(STATE_TOL);
    const [B, L, C] = out.hiddenShape as [number, number, number];
    expect(out.patchShape).toEqual([B, C, 4, 4]);
    const split = splitTokens(want, B, L, C, 1);
    expect(maxAbsDiff(out.global, split.global)).toBeLessThan(STATE_TOL);
    expect(maxAbsDiff(out.patches, split.patches)).toBeLessThan(STATE_TOL);
  });

  test("dinov2_with_registers: registers after CLS, 4x4 position grid interpolated to 6x6 and 3x5", async () => {
    const ref = openSafetensors(join(DINOV2, "expected.safetensors"));
    const ge = loadGraphEncoder(DINOV2);
    const cfg = (ge.encoder as typeof ge.encoder & { config: ViTConfig }).config;
    expect(cfg.layout).toBe("dinov2");
    expect(cfg.numRegisters).toBe(2);
    for (const suffix of ["", "_24x40"]) {
      const shape = ref.info(`pixel_values${suffix}`).shape;
      const out = await runEncoder(ge, ref.float32(`pixel_values${suffix}`), shape);
      const want = ref.float32(`last_hidden_state${suffix}`);
      expect(out.hiddenShape).toEqual(ref.info(`last_hidden_state${suffix}`).shape);
      const err = maxAbsDiff(out.hidden, want);
      console.log(`dinov2_with_registers ${shape.slice(2).join("x")}: last_hidden_state max abs diff ${err.toExponential(2)}`);
      expect(err).toBeLessThan(STATE_TOL);
      const [B, L, C] = out.hiddenShape as [number, number, number];
      expect(out.patchShape).toEqual([B, C, shape[2]! / 8, shape[3]! / 8]);
      const split = splitTokens(want, B, L, C, 1 + 2);
      expect(maxAbsDiff(out.global, split.global)).toBeLessThan(STATE_TOL);
      expect(maxAbsDiff(out.patches, split.patches)).toBeLessThan(STATE_TOL);
    }
  });

  test("Dinov2Model's position interpolation (bicubic without antialias, size=) to 6x6 and 3x5", async () => {
    const ref = openSafetensors(join(DINOV2, "expected.safetensors"));
    const weights = openSafetensors(join(DINOV2, "model.safetensors"));
    const pos = weights.float32("embeddings.position_embeddings"); // [1, 17, 32]
    const C = 32;
    const grid = new Float32Array(C * 16); // [1, C, 4, 4]
    for (let t = 0; t < 16; t++) for (let c = 0; c < C; c++) grid[c * 16 + t] = pos[(1 + t) * C + c]!;
    for (const [h, w] of [[6, 6], [3, 5]] as const) {
      const g = new Graph();
      const out = interpolatePositionGrid(g.constant(grid, [1, C, 4, 4]), h, w, false);
      const r = await (await G.compile({ out }, { threads: 1 })).run({});
      const err = maxAbsDiff(r.out as Float32Array, ref.float32(`pos_bicubic_${h}x${w}`));
      console.log(`dinov2 position grid 4x4 -> ${h}x${w} (bicubic): max abs diff ${err.toExponential(2)}`);
      expect(err).toBeLessThan(1e-6);
    }
  });
});

describe("anti-aliased position interpolation", () => {
  test("rows are normalized filters; gradients reach trainable position embeddings (R_h^T dY R_w)", async () => {
    for (const [n, m] of [[4, 6], [4, 3], [37, 16], [5, 5]] as const) {
      const r = antialiasedBicubicMatrix(n, m);
      for (let o = 0; o < m; o++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += r[o * n + i]!;
        expect(Math.abs(s - 1)).toBeLessThan(1e-6);
      }
    }
    const [C, g0, h, w] = [2, 4, 3, 5];
    const g = new Graph();
    const grid = g.param("grid", [1, C, g0, g0]);
    const R = Float32Array.from({ length: C * h * w }, (_, i) => Math.sin(i * 1.7));
    const loss = G.reduceSum(G.mul(interpolatePositionGrid(grid, h, w, true), g.constant(R, [1, C, h, w])), undefined, false);
    const [dgrid] = G.grad(loss, [grid]);
    const res = await (await G.compile({ dgrid: dgrid! }, { threads: 1 })).run({}); // linear in the grid: the gradient does not depend on it
    const rh = antialiasedBicubicMatrix(g0, h);
    const rw = antialiasedBicubicMatrix(g0, w);
    const want = new Float32Array(C * g0 * g0);
    for (let c = 0; c < C; c++)
      for (let i = 0; i < g0; i++)
        for (let j = 0; j < g0; j++) {
          let s = 0;
          for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) s += rh[y * g0 + i]! * R[(c * h + y) * w + x]! * rw[x * g0 + j]!;
          want[(c * g0 + i) * g0 + j] = s;
        }
    expect(maxAbsDiff(res.dgrid as Float32Array, want)).toBeLessThan(1e-6);
  });
});

describe("weights", () => {
  test("vitParamShapes is the checkpoint's key set, minus the keys real checkpoints carry unused", () => {
    const cases: [string, string[]][] = [
      [VIT, ["pooler.dense.weight", "pooler.dense.bias"]],
      [DINOV2, ["embeddings.mask_token"]],
    ];
    for (const [dir, unused] of cases) {
      const cfg = vitConfigFromJson(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")));
      const file = openSafetensors(join(dir, "model.safetensors"));
      const expected = vitParamShapes(cfg);
      const have = new Map(file.names().filter((n) => !unused.includes(n)).map((n) => [n, file.info(n).shape]));
      expect([...expected.keys()].sort()).toEqual([...have.keys()].sort());
      for (const [k, s] of expected) expect(have.get(k), k).toEqual(s);
      for (const k of unused) expect(file.has(k)).toBe(true);
    }
  });

  test("the graph binds exactly vitParamShapes", () => {
    for (const dir of [VIT, DINOV2]) {
      const ge = loadGraphEncoder(dir);
      const cfg = (ge.encoder as typeof ge.encoder & { config: ViTConfig }).config;
      const g = new Graph();
      const p = new Params(g, ge.source);
      const S = cfg.layout === "vit" ? cfg.imageSize : 48; // DINOv2: with interpolated positions
      ge.encoder.forward(p, g.input("images", [1, 3, S, S]));
      expect(new Map(p.used)).toEqual(vitParamShapes(cfg));
    }
  });
});

/** Deterministic test images: two at the encoder's size, one that has to be resized. */
function images(size: number): RgbImage[] {
  const make = (w: number, h: number, seed: number): RgbImage => ({
    width: w,
    height: h,
    data: Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 37 + seed * 101 + ((i * i) % 53)) % 256),
  });
  return [make(size, size, 1), make(size, size, 2), make(size + 9, size + 5, 3)];
}

describe("transformers.js ONNX export", () => {
  test("patch tokens and CLS equal the graph-built model's on the same images", async () => {
    const onnx = await loadFeaturizer(VIT_ONNX, { threads: 1 });
    const graph = await loadFeaturizer(VIT, { threads: 1 });
    expect(onnx.name).toContain("onnx");
    expect(onnx.imageSize).toBe(32);
    expect(graph.imageSize).toBe(32);
    const imgs = images(32);
    const a = await onnx.features(imgs);
    const b = await graph.features(imgs);
    expect(a.patchShape).toEqual([32, 4, 4]);
    expect(b.patchShape).toEqual(a.patchShape);
    const dp = maxAbsDiff(a.patches, b.patches);
    const dg = maxAbsDiff(a.global!, b.global!);
    console.log(`vit-onnx vs graph: patches max abs diff ${dp.toExponential(2)}, CLS ${dg.toExponential(2)}`);
    expect(dp).toBeLessThan(1e-4);
    expect(dg).toBeLessThan(1e-4);
  });
});

describe("encoder folders", () => {
  const catchError = async (f: () => unknown): Promise<Error> => {
    try {
      await f();
    } catch (e) {
      return e as Error;
    }
    throw new Error("expected an error");
  };

  test("a folder that fits no kind: the error lists what each kind needs", async () => {
    const dir = join(tmp, "nothing");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "README.md"), "not a model\n");
    for (const f of [() => loadGraphEncoder(dir), () => loadFeaturizer(dir)]) {
      const e = await catchError(f);
      expect(e).toBeInstanceOf(UserError);
      expect(e.message).toContain(dir);
      expect(e.message).toContain(ENCODER_KINDS_HELP);
    }
    const missing = await catchError(() => loadGraphEncoder(join(tmp, "no-such-folder")));
    expect(missing.message).toContain("does not exist");
    expect(missing.message).toContain(ENCODER_KINDS_HELP);
  });

  test("a ViT folder with only a pickled pytorch_model.bin is refused, saying why", async () => {
    const dir = join(tmp, "pickled");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "config.json"), JSON.stringify({ model_type: "vit", hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 32, patch_size: 8, image_size: 32 }));
    writeFileSync(join(dir, "pytorch_model.bin"), new Uint8Array([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e])); // a pickle: {}
    for (const f of [() => loadVitFolder(dir), () => loadGraphEncoder(dir), () => loadFeaturizer(dir)]) {
      const e = await catchError(f);
      expect(e).toBeInstanceOf(UserError);
      expect(e.message).toContain(join(dir, "pytorch_model.bin"));
      expect(e.message).toContain("refusing to load a pickled PyTorch checkpoint");
      expect(e.message).toContain("model.safetensors");
    }
  });

  test("a DINOv2 folder runs at its image processor's crop size (interpolated positions), as its ONNX export would", async () => {
    const f = await loadFeaturizer(DINOV2, { threads: 1, batchSize: 2 });
    expect(f.imageSize).toBe(48);
    const feats = await f.features(images(48).slice(0, 2));
    expect(feats.patchShape).toEqual([32, 6, 6]);
    // The same numbers as the encoder run directly on the featurizer's own preprocessing.
    const ge = loadGraphEncoder(DINOV2);
    const direct = await runEncoder(ge, f.preprocess(images(48).slice(0, 2)), [2, 3, 48, 48]);
    expect(maxAbsDiff(feats.patches, direct.patches)).toBeLessThan(1e-6);
    expect(maxAbsDiff(feats.global!, direct.global)).toBeLessThan(1e-6);
  });

  test("a finetune-encoder checkpoint lays its weights over the base ViT folder", async () => {
    const dir = join(tmp, "finetuned");
    mkdirSync(dir, { recursive: true });
    // Shifting the final LayerNorm's bias by 0.25 shifts every output token by exactly 0.25.
    const base = openSafetensors(join(VIT, "model.safetensors"));
    const bias = Float32Array.from(base.float32("layernorm.bias"), (v) => v + 0.25);
    await writeSafetensors(join(dir, "weights.safetensors"), { "layernorm.bias": { dtype: "F32", shape: [32], data: bias } });
    writeFileSync(join(dir, "state.json"), JSON.stringify({ step: 1, config: { encoder: VIT } }));
    const ge = loadGraphEncoder(dir);
    expect(ge.encoder.name).toContain("finetuned");
    expect(ge.source.has("encoder.layer.0.attention.attention.query.weight")).toBe(true);
    const imgs = images(32);
    const before = await (await loadFeaturizer(VIT, { threads: 1 })).features(imgs);
    const after = await (await loadFeaturizer(dir, { threads: 1 })).features(imgs);
    expect(after.patchShape).toEqual(before.patchShape);
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < before.patches.length; i++) {
      const d = after.patches[i]! - before.patches[i]!;
      lo = Math.min(lo, d);
      hi = Math.max(hi, d);
    }
    for (let i = 0; i < before.global!.length; i++) {
      const d = after.global![i]! - before.global![i]!;
      lo = Math.min(lo, d);
      hi = Math.max(hi, d);
    }
    expect(lo).toBeGreaterThan(0.25 - 1e-5);
    expect(hi).toBeLessThan(0.25 + 1e-5);
    // A checkpoint without its base encoder named is an error a person can act on.
    const orphan = join(tmp, "orphan");
    mkdirSync(orphan, { recursive: true });
    await writeSafetensors(join(orphan, "weights.safetensors"), { "layernorm.bias": { dtype: "F32", shape: [32], data: bias } });
    writeFileSync(join(orphan, "state.json"), JSON.stringify({ step: 1, config: {} }));
    expect(() => loadGraphEncoder(orphan)).toThrow(/config\.encoder/);
  });
});
