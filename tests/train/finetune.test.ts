// The self-supervised patch task: view pairs with exactly known patch correspondences
// (lib/train/views.ts) and the encoder finetuning script (scripts/finetune-encoder.ts): exact
// resume, held-out patch-matching accuracy on real photos, checkpoints that load as encoders, and
// clear errors for bad inputs.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type RgbImage, writePng } from "../../lib/io/images.ts";
import { appendJsonl, readJsonlAll } from "../../lib/io/manifest.ts";
import { type TensorInput, writeSafetensors } from "../../lib/io/safetensors.ts";
import { TrainLogRow } from "../../lib/io/schemas.ts";
import { DEFAULT_PATCH_ENCODER, RAW_ENCODER, loadFeaturizer, loadGraphEncoder } from "../../lib/models/featurizer.ts";
import { vitConfigFromJson, vitParamShapes } from "../../lib/models/vit.ts";
import { Rng } from "../../lib/rng.ts";
import { correspondences, imageToView, patchCentre, viewPairs, viewToImage } from "../../lib/train/views.ts";
import { DEFAULTS, type FinetuneOptions, run, trainableWeights } from "../../scripts/finetune-encoder.ts";

const ROOT = resolve(import.meta.dir, "../..");
const tmp = mkdtempSync(join(tmpdir(), "finetune-test-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** R = x, G = y: every pixel of a 256 x 256 image has its own colour, which names its position. */
function coordinateImage(): RgbImage {
  const W = 256, H = 256;
  const data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) data.set([x, y, 128], (y * W + x) * 3);
  return { width: W, height: H, data };
}

/** Bilinear sample of channels R, G at a continuous point (pixel centres at i + 0.5). */
function sample(img: RgbImage, u: number, v: number): [number, number] {
  const fx = Math.min(img.width - 1, Math.max(0, u - 0.5)), fy = Math.min(img.height - 1, Math.max(0, v - 0.5));
  const x0 = Math.floor(fx), y0 = Math.floor(fy);
  const x1 = Math.min(img.width - 1, x0 + 1), y1 = Math.min(img.height - 1, y0 + 1);
  const tx = fx - x0, ty = fy - y0;
  const at = (x: number, y: number, c: number) => img.data[(y * img.width + x) * 3 + c]!;
  const ch = (c: number) => (1 - ty) * ((1 - tx) * at(x0, y0, c) + tx * at(x1, y0, c)) + ty * ((1 - tx) * at(x0, y1, c) + tx * at(x1, y1, c));
  return [ch(0), ch(1)];
}

describe("view pairs", () => {
  const img = coordinateImage();
  const size = 128;
  const grid: [number, number] = [8, 8];
  const noJitter = { brightness: 0, contrast: 0, saturation: 0 };

  test("corresponding points of the two views see the same original pixel (within a pixel)", () => {
    const rng = new Rng(3);
    let worstMap = 0, worstPair = 0, worstCell = 0, matches = 0, flips = 0;
    for (let trial = 0; trial < 40; trial++) {
      const vp = viewPairs(img, rng, { size, grid, jitter: noJitter, minMatches: 8 });
      expect(vp.matches.a.length).toBeGreaterThanOrEqual(8);
      flips += Number(vp.a.geometry.flip) + Number(vp.b.geometry.flip);
      // B patches are distinct (one-to-one correspondences).
      expect(new Set(vp.matches.b).size).toBe(vp.matches.b.length);
      for (let m = 0; m < vp.matches.a.length; m++) {
        const [u, v] = patchCentre(size, grid, vp.matches.a[m]!);
        // The pixels of view A at a patch centre show the original point the map names
        // (a pixel value k is the colour of original pixel k, whose centre is k + 0.5).
        const [x, y] = viewToImage(vp.a.geometry, u, v);
        const [ra, ga] = sample(vp.a.image, u, v);
        worstMap = Math.max(worstMap, Math.abs(ra + 0.5 - x), Math.abs(ga + 0.5 - y));
        // ... and view B shows the same original pixel at the mapped point.
        const [ub, vb] = imageToView(vp.b.geometry, x, y);
        expect(ub).toBeGreaterThanOrEqual(0);
        expect(ub).toBeLessThan(size);
        expect(vb).toBeGreaterThanOrEqual(0);
        expect(vb).toBeLessThan(size);
        const [rb, gb] = sample(vp.b.image, ub, vb);
        // Within 2 view pixels of B's border the bicubic kernel is cut off by the crop: skip those.
        if (ub > 2 && ub < size - 2 && vb > 2 && vb < size - 2) worstPair = Math.max(worstPair, Math.abs(ra - rb), Math.abs(ga - gb));
        // The matched B patch is the one whose cell holds that point: its centre shows a pixel
        // at most half a cell (in original pixels) away.
        const [cu, cv] = patchCentre(size, grid, vp.matches.b[m]!);
        const [rc, gc] = sample(vp.b.image, cu, cv);
        const halfX = (vp.b.geometry.width / grid[1]) / 2, halfY = (vp.b.geometry.height / grid[0]) / 2;
        worstCell = Math.max(worstCell, Math.abs(rc - ra) - halfX, Math.abs(gc - ga) - halfY);
        matches++;
      }
    }
    console.log(`view correspondences: ${matches} matches over 40 pairs (${flips} flipped views); worst |map - pixel| ${worstMap.toFixed(2)} px, worst |A - B| ${worstPair.toFixed(2)} px, cell excess ${worstCell.toFixed(2)} px`);
    expect(flips).toBeGreaterThan(10);
    expect(worstMap).toBeLessThanOrEqual(1);
    expect(worstPair).toBeLessThanOrEqual(1);
    expect(worstCell).toBeLessThanOrEqual(1);
  });

  test("every patch with a correspondence is found; none outside view B", () => {
    const rng = new Rng(11);
    for (let trial = 0; trial < 20; trial++) {
      const vp = viewPairs(img, rng, { size, grid, jitter: noJitter, minMatches: 1 });
      const claimed = new Set(vp.matches.b);
      const listed = new Set(vp.matches.a);
      for (let k = 0; k < grid[0] * grid[1]; k++) {
        const [x, y] = viewToImage(vp.a.geometry, ...patchCentre(size, grid, k));
        const [ub, vb] = imageToView(vp.b.geometry, x, y);
        const inside = ub >= 0 && ub < size && vb >= 0 && vb < size;
        if (!inside) expect(listed.has(k)).toBe(false);
        // A point inside B is listed unless a closer A patch already claimed its B patch.
        else if (!listed.has(k)) expect(claimed.has(Math.floor((vb * grid[0]) / size) * grid[1] + Math.floor((ub * grid[1]) / size))).toBe(true);
      }
    }
  });

  test("same seed, same views; crops are redrawn until they overlap enough, then fall back", () => {
    const a = viewPairs(img, new Rng(5), { size: 64, grid: [4, 4] });
    const b = viewPairs(img, new Rng(5), { size: 64, grid: [4, 4] });
    expect(Buffer.from(a.a.image.data).equals(Buffer.from(b.a.image.data))).toBe(true);
    expect(Array.from(a.matches.b)).toEqual(Array.from(b.matches.b));
    // Tiny crops almost never overlap in 16 patches: the fallback uses one crop for both views.
    const f = viewPairs(img, new Rng(1), { size: 64, grid: [4, 4], scale: [0.02, 0.03], minMatches: 16, maxTries: 5 });
    expect(f.fallback).toBe(true);
    expect(f.tries).toBe(5);
    expect(f.matches.a.length).toBe(16);
    // Same crop, one flipped: patch (i, j) matches (i, 3 - j).
    const flipped = f.a.geometry.flip !== f.b.geometry.flip;
    for (let m = 0; m < 16; m++) {
      const ka = f.matches.a[m]!, kb = f.matches.b[m]!;
      expect(kb).toBe(flipped ? Math.floor(ka / 4) * 4 + (3 - (ka % 4)) : ka);
    }
    // The correspondence of a view with itself is the identity.
    const id = correspondences(a.a.geometry, a.a.geometry, [4, 4]);
    expect(Array.from(id.b)).toEqual(Array.from({ length: 16 }, (_, i) => i));
  });
});

/** A few synthetic photos: coloured discs and stripes on a gradient, each different. */
async function syntheticImages(dir: string, n: number): Promise<void> {
  mkdirSync(join(dir, "sub"), { recursive: true });
  const rng = new Rng(42);
  for (let k = 0; k < n; k++) {
    const W = 160, H = 144;
    const data = new Uint8Array(W * H * 3);
    const discs = Array.from({ length: 6 }, () => ({ x: rng.int(W), y: rng.int(H), r: 8 + rng.int(24), c: [rng.int(256), rng.int(256), rng.int(256)] }));
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        let c = [x, y, ((x >> 3) & 1) * 200];
        for (const d of discs) if ((x - d.x) ** 2 + (y - d.y) ** 2 < d.r * d.r) c = d.c;
        data.set(c, (y * W + x) * 3);
      }
    }
    await writePng(join(dir, k % 2 ? "sub" : "", `img-${k}.png`), { width: W, height: H, data });
  }
}

describe("finetune-encoder", () => {
  beforeAll(() => syntheticImages(join(tmp, "synthetic"), 4));
  const tiny = (over: Partial<FinetuneOptions>): FinetuneOptions => ({
    ...DEFAULTS, cropScale: [0.3, 1], images: join(tmp, "synthetic"), imageSize: 128, trainBlocks: 1, batch: 1, steps: 6, warmup: 2,
    holdout: 1, holdoutViews: 1, saveEvery: 3, lr: 1e-3, ...over,
  });

  test("a finetuned encoder is read at the layer it was trained for; another layer is refused", async () => {
    const out = join(tmp, "layer13");
    await run(tiny({ out, featureLayer: "block_13_expand_relu", steps: 2, saveEvery: 0 }));
    const f = await loadFeaturizer(out, { batchSize: 1 });
    const img = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).fill(128) };
    expect((await f.features([img])).patchShape).toEqual([576, 14, 14]);
    await expect(loadFeaturizer(out, { featureLayer: "out_relu" })).rejects.toThrow(/finetuned for feature layer block_13_expand_relu, not out_relu/);
  });

  test("--images takes several folders; --encoder default records its base as patch-encoder; the shipped encoder is never overwritten", async () => {
    await syntheticImages(join(tmp, "more"), 2);
    const out = join(tmp, "two-folders");
    const r = await run(tiny({ images: [join(tmp, "synthetic"), join(tmp, "more")], out, encoder: "default", featureLayer: "block_13_expand_relu", steps: 1, saveEvery: 0 }));
    expect(r.trainImages + r.holdoutImages).toBe(6);
    const state = JSON.parse(readFileSync(join(out, "state.json"), "utf8"));
    // "default" would follow the shipped encoder when it is remade; the name of the checkpoint does not move.
    expect(state.config.encoder).toBe("patch-encoder");
    // Recorded relative to <out> (a copied run folder resumes) and absolute (an <out> moved alone resumes).
    expect(state.config.images).toEqual(["../synthetic", "../more"]);
    expect(state.config.imagesAbsolute).toEqual([join(tmp, "synthetic"), join(tmp, "more")]);
    expect((await loadFeaturizer(out, { batchSize: 1 })).name).toContain("patch-encoder");
    await expect(run(tiny({ out: DEFAULT_PATCH_ENCODER, steps: 1 }))).rejects.toThrow(/shipped patch encoder/);
  });

  test("resume: 3 steps + --resume to 6 gives byte-identical weights to 6 uninterrupted steps", async () => {
    const whole = await run(tiny({ out: join(tmp, "whole") }));
    expect(whole.finished).toBe(true);
    expect(whole.step).toBe(6);
    const part = await run(tiny({ out: join(tmp, "part"), stopAt: 3 }));
    expect(part.finished).toBe(false);
    expect(existsSync(join(tmp, "part", "step-3", "state.json"))).toBe(true);
    expect(existsSync(join(tmp, "part", "weights.safetensors"))).toBe(false);
    // Without --resume an existing checkpoint is refused rather than overwritten.
    await expect(run(tiny({ out: join(tmp, "part") }))).rejects.toThrow(/--resume/);
    // A crash after logging step 3 but before the next checkpoint leaves rows the resumed run redoes.
    await appendJsonl(join(tmp, "part", "train-log.jsonl"), { step: 3, loss: 99, lr: 0 }, TrainLogRow);
    const rest = await run(tiny({ out: join(tmp, "part"), resume: true }));
    expect(rest.finished).toBe(true);
    expect(rest.accuracyBefore).toBe(whole.accuracyBefore!);
    for (const f of ["weights.safetensors", "optimizer.safetensors"]) {
      expect(readFileSync(join(tmp, "part", f)).equals(readFileSync(join(tmp, "whole", f)))).toBe(true);
    }
    const strip = (rows: TrainLogRow[]) => rows.map(({ seconds: _, ...r }) => r);
    const logWhole = await readJsonlAll(join(tmp, "whole", "train-log.jsonl"), TrainLogRow);
    const logPart = await readJsonlAll(join(tmp, "part", "train-log.jsonl"), TrainLogRow);
    expect(logWhole.map((r) => r.step)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(strip(logPart)).toEqual(strip(logWhole));
    // Resuming with other settings is refused.
    await expect(run(tiny({ out: join(tmp, "part"), resume: true, lr: 5e-4 }))).rejects.toThrow(/other settings.*lr/);

    // The output folder is an encoder: the base with the trained block laid over it.
    const state = JSON.parse(readFileSync(join(tmp, "whole", "state.json"), "utf8"));
    expect(state.config.encoder).toBe(RAW_ENCODER);
    expect(state.step).toBe(6);
    expect(state.config.trained.every((n: string) => /^(block_16_|Conv_1)/.test(n))).toBe(true);
    const probe: RgbImage = { width: 224, height: 224, data: new Uint8Array(224 * 224 * 3).fill(90) };
    const base = await (await loadFeaturizer(RAW_ENCODER, { batchSize: 1 })).features([probe]);
    const tuned = await (await loadFeaturizer(join(tmp, "whole"), { batchSize: 1 })).features([probe]);
    expect(tuned.patchShape).toEqual(base.patchShape);
    let diff = 0;
    for (let i = 0; i < base.patches.length; i++) diff = Math.max(diff, Math.abs(base.patches[i]! - tuned.patches[i]!));
    expect(diff).toBeGreaterThan(0);
  }, 60_000);

  test("ViT/DINOv2: trains encoder.layer.{L-K..L-1} + the final layernorm; the result loads as an encoder", async () => {
    // A tiny random DINOv2 (3 layers, hidden 32, 8 px patches on 32 px views: a 4x4 grid).
    const dir = join(tmp, "tiny-dinov2");
    const cfgJson = { model_type: "dinov2", hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 2, mlp_ratio: 2, patch_size: 8, image_size: 32, layer_norm_eps: 1e-6 };
    await Bun.write(join(dir, "config.json"), JSON.stringify(cfgJson));
    const rng = new Rng(9);
    const tensors: Record<string, TensorInput> = {};
    for (const [name, shape] of vitParamShapes(vitConfigFromJson(cfgJson))) {
      const n = shape.reduce((a, b) => a * b, 1);
      const ones = /(norm\d?|layernorm)\.weight$|lambda1$/.test(name);
      tensors[name] = { dtype: "F32", shape, data: ones ? new Float32Array(n).fill(1) : rng.normals(n, 0.1) };
    }
    await writeSafetensors(join(dir, "model.safetensors"), tensors);
    const pick = trainableWeights(loadGraphEncoder(dir).encoder, 1);
    expect(pick("encoder.layer.2.mlp.fc1.weight")).toBe(true);
    expect(pick("encoder.layer.1.mlp.fc1.weight")).toBe(false);
    expect(pick("layernorm.weight")).toBe(true);
    expect(pick("encoder.layer.2.norm1.weight")).toBe(true);
    expect(pick("embeddings.cls_token")).toBe(false);

    const res = await run(tiny({ encoder: dir, imageSize: 32, out: join(tmp, "vit-out"), matches: 4, lr: 1e-3 }));
    expect(res.finished).toBe(true);
    const state = JSON.parse(readFileSync(join(tmp, "vit-out", "state.json"), "utf8"));
    expect(state.config.encoder).toBe(dir);
    expect(state.config.patchGrid).toEqual([32, 4, 4]);
    expect((state.config.trained as string[]).every((n) => n.startsWith("encoder.layer.2.") || n.startsWith("layernorm."))).toBe(true);
    expect((state.config.trained as string[]).length).toBe(20); // 18 tensors of a DINOv2 block (with LayerScale) + the final layernorm (2)
    const img: RgbImage = { width: 32, height: 32, data: Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * 37) % 256) };
    const base = await (await loadFeaturizer(dir, { batchSize: 1 })).features([img]);
    const tuned = await (await loadFeaturizer(join(tmp, "vit-out"), { batchSize: 1 })).features([img]);
    let diff = 0;
    for (let i = 0; i < base.patches.length; i++) diff = Math.max(diff, Math.abs(base.patches[i]! - tuned.patches[i]!));
    expect(diff).toBeGreaterThan(0);
  }, 60_000);

  test("--run trains on the run's reference images", async () => {
    const runDir = join(tmp, "run");
    await expect(run(tiny({ images: undefined, run: runDir }))).rejects.toThrow(/run directory .* does not exist/);
    mkdirSync(runDir, { recursive: true });
    await expect(run(tiny({ images: undefined, run: runDir }))).rejects.toThrow(/references.jsonl is missing/);
    const rows = [];
    for (let k = 0; k < 3; k++) {
      const image = `references/ref-${k}.png`;
      mkdirSync(join(runDir, "references"), { recursive: true });
      await Bun.write(join(runDir, image), Bun.file(join(tmp, "synthetic", k % 2 ? "sub" : "", `img-${k}.png`)));
      rows.push(JSON.stringify({ id: `ref-${k}`, subjectId: `s${k}`, prompt: "a photo of a thing", image, seed: k, settings: {} }));
    }
    await Bun.write(join(runDir, "references.jsonl"), `${rows.join("\n")}\n`);
    const res = await run(tiny({ images: undefined, run: runDir, out: join(tmp, "run-out"), steps: 2 }));
    expect(res.finished).toBe(true);
    expect([res.trainImages, res.holdoutImages]).toEqual([2, 1]);
  }, 60_000);

  const dreambench = join(ROOT, "..", "shared", "data", "dreambench");
  test("a short run raises held-out patch-matching accuracy on DreamBench photos", async () => {
    if (!existsSync(dreambench)) return console.log(`skipped: ${dreambench} is absent`);
    const t0 = performance.now();
    const res = await run({ ...DEFAULTS, cropScale: [0.25, 1], images: dreambench, out: join(tmp, "dreambench"), steps: 60, batch: 4, warmup: 5, lr: 3e-4 });
    console.log(
      `dreambench: held-out patch matching top-1 ${(100 * res.accuracyBefore!).toFixed(1)}% before -> ${(100 * res.accuracyAfter!).toFixed(1)}% after ` +
        `(${res.step} steps, ${res.secondsPerStep.toFixed(3)} s/step, ${((performance.now() - t0) / 1000).toFixed(1)} s, ${res.trainImages} train / ${res.holdoutImages} held-out images)`,
    );
    expect(res.accuracyAfter!).toBeGreaterThan(res.accuracyBefore!);
    const log = await readJsonlAll(join(tmp, "dreambench", "train-log.jsonl"), TrainLogRow);
    expect(log.length).toBe(60);
    const mean = (rows: TrainLogRow[]) => rows.reduce((s, r) => s + r.loss, 0) / rows.length;
    expect(mean(log.slice(-15))).toBeLessThan(mean(log.slice(0, 15)));
  }, 90_000);

  test("bad inputs: an empty folder, too few images, missing flags", async () => {
    mkdirSync(join(tmp, "empty", "nested"), { recursive: true });
    await Bun.write(join(tmp, "empty", "notes.txt"), "not an image");
    await expect(run(tiny({ images: join(tmp, "empty") }))).rejects.toThrow(/no images \(jpg, jpeg, png, webp\) found under/);
    await expect(run(tiny({ holdout: 4 }))).rejects.toThrow(/--holdout 4 leaves no training images/);
    await expect(run(tiny({ images: undefined }))).rejects.toThrow(/exactly one of --images/);
    await expect(run(tiny({ images: join(tmp, "missing") }))).rejects.toThrow(/is not a folder/);
    // A temperature that overflows float32 logits makes every loss NaN: 5 skipped steps, then a clear stop.
    await expect(run(tiny({ out: join(tmp, "nan"), temperature: 1e-45, steps: 8 }))).rejects.toThrow(/5 steps in a row had NaN\/Inf/);
    expect(existsSync(join(tmp, "nan", "train-log.jsonl"))).toBe(false);
    // The trained blocks are the last ones under the feature layer the scorer reads.
    const mobilenet = loadGraphEncoder(RAW_ENCODER).encoder;
    const under13 = trainableWeights(mobilenet, 2, "block_13_expand_relu");
    const names = mobilenet.source.names();
    expect(names.filter(under13).every((n) => /^block_1[23]_/.test(n))).toBe(true);
    expect(names.some((n) => /^block_13_/.test(n) && under13(n))).toBe(true);
    expect(names.some((n) => /^block_12_/.test(n) && under13(n))).toBe(true);
    const atTop = trainableWeights(mobilenet, 1);
    expect(names.filter(atTop).every((n) => /^(block_16_|Conv_1)/.test(n))).toBe(true);
    expect(() => trainableWeights(mobilenet, 14, "block_13_expand_relu")).toThrow(/13 blocks up to block_13_expand_relu/);
    expect(() => trainableWeights(mobilenet, 1, "dense_1")).toThrow(/feature-layer dense_1/);
    const cli = (args: string[]) => Bun.spawnSync(["bun", join(ROOT, "scripts/finetune-encoder.ts"), ...args], { cwd: tmp, stderr: "pipe", stdout: "pipe" });
    const empty = cli(["--images", join(tmp, "empty")]);
    expect(empty.exitCode).toBe(1);
    expect(empty.stderr.toString()).toMatch(/^error: no images/);
    const bad = cli(["--images", join(tmp, "empty"), "--steps", "0"]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr.toString()).toContain("steps");
    const help = cli(["--help"]);
    expect(help.exitCode).toBe(0);
    for (const flag of ["--train-blocks", "--temperature", "--lr", "--weight-decay", "--clip", "--holdout", "--save-every", "--resume", "--device", "--threads"]) {
      expect(help.stdout.toString()).toContain(flag);
    }
  }, 60_000);
});
