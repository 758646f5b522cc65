// scripts/score-patches.ts end to end, with the default encoder (nsfwjs' MobileNetV2):
//   a. real photos (DreamBench subset in ../shared/data/dreambench): a second photo of the same
//      subject scores a higher qGenMean than photos of the other nine subjects;
//   b. localization: a grid-aligned square of a photo replaced with other content holds the
//      lowest-quality generated patches;
//   c. bad inputs fail with a UserError that says where, leaving only complete rows behind;
//   d. resume, --force, --shard + merge;
//   e. the CLI's --help and exit codes.
// Images are resized to the encoder's 224 px once and written as PNGs, so the encoder sees exactly
// the pixels it would see from the JPEGs (the featurizer's own resize is the same bicubic) and the
// suite stays fast.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import { type RgbImage, loadImage, resizeBicubic, writePng } from "../../lib/io/images.ts";
import { ManifestError, readJsonlAll } from "../../lib/io/manifest.ts";
import { inShard, shardPath } from "../../lib/io/rundir.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { PatchScoreRow } from "../../lib/io/schemas.ts";
import { type Featurizer, RAW_ENCODER, loadFeaturizer } from "../../lib/models/featurizer.ts";
import { type Localization as PatchLocalization, PASTE_REGION as REGION, localization as localize, pasteRegion } from "../../lib/patch/localization.ts";
import { Rng } from "../../lib/rng.ts";
import { expectRejects } from "../helpers/rejects.ts";
import { DEFAULTS, type ScoreOptions, merge, run } from "../../scripts/score-patches.ts";

const REPO = resolve(import.meta.dir, "../..");
const SCRIPT = join(REPO, "scripts/score-patches.ts");
/** The DreamBench subset; PATCHDPO_DREAMBENCH points elsewhere (a missing folder exercises the fallbacks). */
const DREAMBENCH = resolve(process.env.PATCHDPO_DREAMBENCH ?? join(REPO, "../shared/data/dreambench"));
const SUBJECTS = ["backpack", "bear_plushie", "berry_bowl", "can", "cat", "clock", "dog", "duck_toy", "robot_toy", "teapot"];
const HAVE_PHOTOS = SUBJECTS.every((s) => existsSync(join(DREAMBENCH, s, "00.jpg")) && existsSync(join(DREAMBENCH, s, "01.jpg")));
if (!HAVE_PHOTOS) console.log(`score-patches tests: ${DREAMBENCH} is absent; skipping the DreamBench photo tests`);

const S = 224;
/** Per-test limit for the tests that score many pairs (a shared 2-core machine). */
const SLOW = 60_000;
setDefaultTimeout(20_000); // the first test of a layer compiles its encoder session
const OUT_RELU = "out_relu"; // 7x7, the default
const BLOCK13 = "block_13_expand_relu"; // 14x14

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-score-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (name: string) => {
  const d = join(root, `${dirCount++}-${name}`);
  mkdirSync(d, { recursive: true });
  return d;
};

// One compiled featurizer per (encoder, layer, batch), shared by every test. Most tests pin the raw
// MobileNetV2 at a chosen layer; the shipped default is read at the layer it was trained for.
const featurizers = new Map<string, Promise<Featurizer>>();
function featurizer(encoder: string, layer: string | undefined, batch: number): Promise<Featurizer> {
  const key = `${encoder}/${layer}/${batch}`;
  if (!featurizers.has(key)) featurizers.set(key, loadFeaturizer(encoder, { featureLayer: layer, batchSize: batch, threads: 2 }));
  return featurizers.get(key)!;
}

async function options(o: Partial<ScoreOptions> & { layer?: string }): Promise<ScoreOptions> {
  const { layer = OUT_RELU, ...rest } = o;
  const batch = rest.batch ?? 4;
  const encoder = rest.encoder ?? RAW_ENCODER;
  const featureLayer = encoder === RAW_ENCODER ? layer : undefined;
  return { ...DEFAULTS, latentGrid: 16, batch, threads: 2, encoder, featureLayer, featurizer: await featurizer(encoder, featureLayer, batch), ...rest };
}

const writePairs = (file: string, rows: { id: string; reference: string; generated: string }[]) =>
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");

async function photo224(path: string): Promise<RgbImage> {
  const img = await loadImage(path);
  return img.width === S && img.height === S ? img : resizeBicubic(img, S, S);
}

/** q_gen [h, w] (normalized) of a scored pair, from its safetensors file. */
function qGenOf(outDir: string, id: string): { q: Float32Array; h: number; w: number } {
  const f = openSafetensors(join(outDir, "patch-scores", `${id}.safetensors`));
  const [h, w] = f.info("q_gen").shape as [number, number];
  return { q: Float32Array.from(f.float32("q_gen")), h, w };
}

// ---------------------------------------------------------------------------------------------
// a. Same subject vs other subjects.

describe("real photos (DreamBench)", () => {
  /**
   * For each subject s: pair s/00 (reference) with s/01 (same subject) and with o/00 for the nine
   * other subjects o. Returns per subject the same-subject qGenMean and the cross-subject ones.
   */
  let pairsFile: string | undefined;
  /** The 20 photos at 224 px and the 100 pairs, written once for both layers. */
  async function dreambenchPairs(): Promise<string> {
    if (pairsFile) return pairsFile;
    const dir = freshDir("dreambench");
    for (const s of SUBJECTS) {
      for (const n of ["00", "01"]) await writePng(join(dir, `${s}_${n}.png`), await photo224(join(DREAMBENCH, s, `${n}.jpg`)));
    }
    const pairs: { id: string; reference: string; generated: string }[] = [];
    for (const s of SUBJECTS) {
      pairs.push({ id: `${s}.same`, reference: `${s}_00.png`, generated: `${s}_01.png` });
      for (const o of SUBJECTS) if (o !== s) pairs.push({ id: `${s}.vs.${o}`, reference: `${s}_00.png`, generated: `${o}_00.png` });
    }
    writePairs(join(dir, "pairs.jsonl"), pairs);
    return (pairsFile = join(dir, "pairs.jsonl"));
  }

  const measured = new Map<string, Promise<{ shareEvery: number; shareMean: number }>>();
  /** Each (encoder, layer) is scored once, whichever test asks first. */
  function sameVsOther(layer: string, encoder = RAW_ENCODER) {
    const key = `${encoder}-${layer}`;
    if (!measured.has(key)) measured.set(key, measureSameVsOther(layer, encoder));
    return measured.get(key)!;
  }

  async function measureSameVsOther(layer: string, encoder: string) {
    const pairs = await dreambenchPairs();
    const res = await run(await options({ pairs, out: join(dirname(pairs), `${encoder}-${layer}`), layer, batch: 10, encoder }));
    expect(res).toMatchObject({ scored: 100, skipped: 0 });
    const rows = new Map((await readJsonlAll(res.manifest, PatchScoreRow)).map((r) => [r.id, r]));
    const table = SUBJECTS.map((s) => {
      const same = rows.get(`${s}.same`)!.qGenMean;
      const cross = SUBJECTS.filter((o) => o !== s).map((o) => rows.get(`${s}.vs.${o}`)!.qGenMean);
      const crossMean = cross.reduce((a, b) => a + b, 0) / cross.length;
      const crossMax = Math.max(...cross);
      return { s, same, crossMean, crossMax, beatsEvery: same > crossMax, beatsMean: same > crossMean };
    });
    const shareEvery = table.filter((r) => r.beatsEvery).length / table.length;
    const shareMean = table.filter((r) => r.beatsMean).length / table.length;
    console.log(
      [
        `score-patches, DreamBench, ${encoder} at ${layer}: qGenMean of s/00 vs s/01 (same) and vs o/00 (9 other subjects)`,
        `  subject        same   other-mean  other-max  same>every  same>mean`,
        ...table.map(
          (r) =>
            `  ${r.s.padEnd(13)} ${r.same.toFixed(3)}  ${r.crossMean.toFixed(3)}       ${r.crossMax.toFixed(3)}      ${r.beatsEvery ? "yes" : "no "}         ${r.beatsMean ? "yes" : "no"}`,
        ),
        `  share same > every other-subject pair: ${shareEvery.toFixed(2)}; same > their mean: ${shareMean.toFixed(2)}`,
      ].join("\n"),
    );
    return { shareEvery, shareMean };
  }

  // Measured (2 threads, ORT CPU): out_relu every 0.80 (teapot and berry_bowl miss), mean 0.90;
  // block_13_expand_relu every 0.70, mean 1.00. Thresholds leave one subject of slack.
  test.skipIf(!HAVE_PHOTOS)("default layer (out_relu 7x7): same subject beats every other subject in >= 70% of subjects", async () => {
    const { shareEvery, shareMean } = await sameVsOther(OUT_RELU);
    expect(shareEvery).toBeGreaterThanOrEqual(0.7);
    expect(shareMean).toBeGreaterThanOrEqual(0.8);
  }, SLOW);

  test.skipIf(!HAVE_PHOTOS)("block_13_expand_relu (14x14): same subject beats the other-subject mean in >= 90% of subjects", async () => {
    const { shareEvery, shareMean } = await sameVsOther(BLOCK13);
    expect(shareEvery).toBeGreaterThanOrEqual(0.6);
    expect(shareMean).toBeGreaterThanOrEqual(0.9);
  }, SLOW);

  // The shipped default (checkpoints/patch-encoder) was finetuned on these very photos (and renders),
  // so this is no test of generalization (bench/encoder-split.ts measures that on unseen subjects):
  // it guards against shipping an encoder that tells subjects apart worse than the raw one it came from.
  test.skipIf(!HAVE_PHOTOS)("the shipped default encoder tells subjects apart at least as well as the raw MobileNetV2 at its layer", async () => {
    const raw = await sameVsOther(BLOCK13);
    const shipped = await sameVsOther(BLOCK13, "default");
    // Issue 10's measure: the share of subjects whose same-subject pair scores highest (both shares are printed above).
    expect(shipped.shareEvery).toBeGreaterThanOrEqual(raw.shareEvery);
  }, 2 * SLOW);
});

// ---------------------------------------------------------------------------------------------
// b. Localization.

/** A full-frame procedural texture (smooth random colour waves): a tiny-world-like stand-in for a photo. */
function plasma(seed: number): RgbImage {
  const rng = new Rng(seed);
  const waves = Array.from({ length: 3 }, () =>
    Array.from({ length: 4 }, () => ({ fx: (rng.uniform() - 0.5) * 0.12, fy: (rng.uniform() - 0.5) * 0.12, ph: rng.uniform() * 2 * Math.PI })),
  );
  const data = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (const w of waves[c]!) v += Math.sin(w.fx * x + w.fy * y + w.ph);
        data[(y * S + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(128 + 40 * v)));
      }
    }
  }
  return { width: S, height: S, data };
}

/** Fine two-colour stripes at a random angle: content the plasma has nowhere. */
function stripes(seed: number): RgbImage {
  const rng = new Rng(seed);
  const a = rng.uniform() * Math.PI;
  const col = [rng.uniform() * 255, rng.uniform() * 255, rng.uniform() * 255];
  const data = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const on = Math.sin((x * Math.cos(a) + y * Math.sin(a)) / 3) > 0;
      for (let c = 0; c < 3; c++) data[(y * S + x) * 3 + c] = Math.round(on ? col[c]! : 255 - col[c]!);
    }
  }
  return { width: S, height: S, data };
}

type Localization = PatchLocalization & { id: string };
const localization = (id: string, q: Float32Array, h: number, w: number): Localization => ({ id, ...localize(q, h, w, S) });

describe("localization: a replaced square holds the lowest-quality patches", () => {
  /** Scores ref vs pasted copies with both layers; returns the 14x14 and 7x7 localizations. */
  async function scoreCases(name: string, cases: { id: string; ref: RgbImage; gen: RgbImage }[]) {
    const dir = freshDir(`loc-${name}`);
    for (const c of cases) {
      await writePng(join(dir, `${c.id}-ref.png`), c.ref);
      await writePng(join(dir, `${c.id}-gen.png`), c.gen);
    }
    writePairs(join(dir, "pairs.jsonl"), cases.map((c) => ({ id: c.id, reference: `${c.id}-ref.png`, generated: `${c.id}-gen.png` })));
    const result: Record<string, Localization[]> = {};
    for (const layer of [BLOCK13, OUT_RELU]) {
      const out = join(dir, layer);
      await run(await options({ pairs: join(dir, "pairs.jsonl"), out, layer, batch: 10 }));
      result[layer] = cases.map((c) => {
        const { q, h, w } = qGenOf(out, c.id);
        return localization(c.id, q, h, w);
      });
    }
    const fmt = (l: Localization) => `p@${l.k}=${l.precisionAtK.toFixed(2)} in=${l.insideMean.toFixed(3)} out=${l.outsideMean.toFixed(3)}`;
    console.log(
      [
        `score-patches localization (${name}): square x ${REGION.x0}..${REGION.x0 + REGION.size - 1}, y ${REGION.y0}..${REGION.y0 + REGION.size - 1} of 224 replaced; chance p@k = ${(16 / 49).toFixed(2)}`,
        ...cases.map((c, i) => `  ${c.id.padEnd(22)} 14x14 ${fmt(result[BLOCK13]![i]!)}   7x7 ${fmt(result[OUT_RELU]![i]!)}`),
      ].join("\n"),
    );
    return result as Record<typeof BLOCK13 | typeof OUT_RELU, Localization[]>;
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

  // Photos: DreamBench s/00 with the square taken from the next subject's photo 00 (or noise);
  // without ../shared, the three 224 px DreamBench photos committed as MobileNetV2 fixtures.
  // Measured (2 threads, ORT CPU), p@64 on the 14x14 grid with a photo pasted: 0.73..0.89, mean
  // 0.80 over the 10 DreamBench subjects (fixtures: 0.77..0.91, mean 0.83); noise pasted: mean
  // 0.68 (0.58..0.78). The default 7x7 out_relu grid localizes worse (each of its cells sees most
  // of the image): p@16 0.44..0.88, mean 0.64 (fixtures 0.63). Chance is 0.33.
  // Thresholds: 14x14 mean >= 0.75 and every photo >= 0.6; 7x7 mean >= 0.45; inside < outside always.
  test("photos with a pasted square (block_13_expand_relu 14x14)", async () => {
    let photos: RgbImage[];
    let names: string[];
    if (HAVE_PHOTOS) {
      photos = [];
      for (const s of SUBJECTS) photos.push(await photo224(join(DREAMBENCH, s, "00.jpg")));
      names = SUBJECTS;
    } else {
      names = ["0_dog", "1_teapot", "2_can"];
      photos = [];
      for (const n of names) photos.push(await photo224(join(REPO, "tests/fixtures/mobilenet", `${n}.png`)));
    }
    const cases = photos.flatMap((ref, i) => [
      { id: `${names[i]}.photo`, ref, gen: pasteRegion(ref, photos[(i + 1) % photos.length]!) },
      { id: `${names[i]}.noise`, ref, gen: pasteRegion(ref, "noise", i + 1) },
    ]);
    const res = await scoreCases("photos", cases);
    const fine = res[BLOCK13];
    const photo = fine.filter((l) => l.id.endsWith(".photo"));
    const noise = fine.filter((l) => l.id.endsWith(".noise"));
    console.log(
      `  mean p@k 14x14: photo paste ${mean(photo.map((l) => l.precisionAtK)).toFixed(2)}, noise paste ${mean(noise.map((l) => l.precisionAtK)).toFixed(2)}; ` +
        `7x7: photo paste ${mean(res[OUT_RELU].filter((l) => l.id.endsWith(".photo")).map((l) => l.precisionAtK)).toFixed(2)}`,
    );
    expect(fine[0]!.k).toBe(64);
    expect(fine[0]!.n).toBe(196);
    expect(mean(photo.map((l) => l.precisionAtK))).toBeGreaterThanOrEqual(0.75);
    for (const l of photo) expect(l.precisionAtK).toBeGreaterThanOrEqual(0.6);
    for (const l of fine) expect(l.insideMean).toBeLessThan(l.outsideMean);
    const coarse = res[OUT_RELU].filter((l) => l.id.endsWith(".photo"));
    expect(coarse[0]!.k).toBe(16);
    expect(mean(coarse.map((l) => l.precisionAtK))).toBeGreaterThanOrEqual(0.45);
    for (const l of coarse) expect(l.insideMean).toBeLessThan(l.outsideMean);
  }, SLOW);

  // Synthetic (always runs): a full-frame procedural texture with fine stripes pasted in.
  // Measured (14x14): p@64 0.80, 0.81, 0.81 on seeds 1..3; threshold >= 0.7 each (chance 0.33).
  test("synthetic texture with pasted stripes (always runs)", async () => {
    const cases = [1, 2, 3].map((seed) => {
      const ref = plasma(seed);
      return { id: `plasma${seed}.stripes`, ref, gen: pasteRegion(ref, stripes(seed)) };
    });
    const res = await scoreCases("synthetic", cases);
    for (const l of res[BLOCK13]) {
      expect(l.precisionAtK).toBeGreaterThanOrEqual(0.7);
      expect(l.insideMean).toBeLessThan(l.outsideMean);
    }
  }, SLOW);
});

describe("the default encoder", () => {
  // What `bun scripts/score-patches.ts --run R` does without --encoder: the shipped SSL-finetuned
  // patch encoder, read at the 14x14 layer it was trained for (no ../shared needed).
  test("is the shipped finetuned patch encoder at block_13_expand_relu", async () => {
    const dir = freshDir("default-encoder");
    await writePng(join(dir, "ref.png"), await photo224(join(REPO, "tests/fixtures/mobilenet/0_dog.png")));
    await writePng(join(dir, "gen.png"), pasteRegion(await photo224(join(REPO, "tests/fixtures/mobilenet/0_dog.png")), "noise"));
    writePairs(join(dir, "pairs.jsonl"), [{ id: "dog", reference: "ref.png", generated: "gen.png" }]);
    const res = await run({ ...DEFAULTS, pairs: join(dir, "pairs.jsonl"), latentGrid: 16, threads: 2 });
    const [row] = await readJsonlAll(res.manifest, PatchScoreRow);
    expect(row!.encoder).toBe("default");
    const f = openSafetensors(join(dir, "patch-scores", "dog.safetensors"));
    expect(f.metadata.encoder).toContain("checkpoints/patch-encoder");
    expect(f.info("q_gen").shape).toEqual([14, 14]);
  }, SLOW);
});

describe("an identical copy", () => {
  // q_gen and q_ref are 1 wherever the patch is subject. The copy's white background patches are
  // masked on both sides (NaN): neutral, neither a faithful copy nor a failure (DESIGN.md 1.1).
  test("scores 1 on subject patches; masked background is NaN in q_gen and q_ref and 1 at the latent grid", async () => {
    const dir = freshDir("identity");
    await writePng(join(dir, "cartoon.png"), await photo224(join(REPO, "tests/fixtures/mobilenet/3_synthetic.png")));
    writePairs(join(dir, "pairs.jsonl"), [{ id: "same", reference: "cartoon.png", generated: "cartoon.png" }]);
    const res = await run(await options({ pairs: join(dir, "pairs.jsonl") }));
    const [row] = await expectCompleteRows(dir, res.manifest);
    const f = openSafetensors(join(dir, row!.scores));
    const mask = f.view("ref_mask") as Uint8Array;
    const qGen = f.float32("q_gen");
    const qRef = f.float32("q_ref");
    const masked = [...mask].filter((m) => m).length;
    expect(masked).toBeGreaterThan(0);
    expect(masked).toBeLessThan(49);
    for (let i = 0; i < 49; i++) {
      if (mask[i]) {
        expect(Number.isNaN(qRef[i]!)).toBe(true);
        expect(Number.isNaN(qGen[i]!)).toBe(true); // the same image: its generated background is masked too
      } else {
        expect(qGen[i]!).toBeCloseTo(1, 5);
        expect(qRef[i]!).toBeCloseTo(1, 5);
      }
    }
    expect(Math.min(...f.float32("q_ref_latent"))).toBeCloseTo(1, 5); // masked entries filled with 1
    expect(Math.min(...f.float32("q_gen_latent"))).toBeCloseTo(1, 5);
    expect(row!.qRefMean).toBeCloseTo(1, 5);
    expect(row!.qGenMean).toBeCloseTo(1, 5);
    expect(row!.lowShare).toBe(0);
    expect([...(f.view("gen_mask") as Uint8Array)]).toEqual([...mask]);
  });
});

// ---------------------------------------------------------------------------------------------
// Small synthetic images for the plumbing tests.

function smallImage(seed: number, size = 48): RgbImage {
  const rng = new Rng(seed);
  const data = new Uint8Array(size * size * 3);
  const base = [rng.uniform() * 200, rng.uniform() * 200, rng.uniform() * 200];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const on = ((x >> 3) + (y >> 3) + seed) & 1;
      for (let c = 0; c < 3; c++) data[(y * size + x) * 3 + c] = Math.round(base[c]! + (on ? 50 : 0) + rng.uniform() * 5);
    }
  }
  return { width: size, height: size, data };
}

/** A run directory with `n` generations of `n` references (images references/r<i>.png, generations/g<i>-0.png). */
async function makeRun(name: string, ids: string[]): Promise<string> {
  const dir = freshDir(name);
  mkdirSync(join(dir, "references"));
  mkdirSync(join(dir, "generations"));
  const refs: string[] = [];
  const gens: string[] = [];
  for (const [i, id] of ids.entries()) {
    await writePng(join(dir, "references", `r${i}.png`), smallImage(i));
    await writePng(join(dir, "generations", `${id}-0.png`), smallImage(i + 100));
    refs.push(JSON.stringify({ id: `r${i}`, subjectId: `s${i}`, prompt: "a photo of a thing", image: `references/r${i}.png`, seed: i, settings: {} }));
    gens.push(JSON.stringify({ id, referenceId: `r${i}`, subjectId: `s${i}`, prompt: "a thing on a beach", image: `generations/${id}-0.png`, seed: i, k: 0, settings: {} }));
  }
  writeFileSync(join(dir, "references.jsonl"), refs.join("\n") + "\n");
  writeFileSync(join(dir, "generations.jsonl"), gens.join("\n") + "\n");
  return dir;
}


/** Every manifest line is a complete, valid row whose files exist. */
async function expectCompleteRows(dir: string, manifest: string): Promise<PatchScoreRow[]> {
  const text = readFileSync(manifest, "utf8");
  expect(text.endsWith("\n")).toBe(true);
  const rows = await readJsonlAll(manifest, PatchScoreRow);
  expect(rows.length).toBe(text.split("\n").filter((l) => l.trim()).length);
  for (const r of rows) {
    expect(existsSync(join(dir, r.scores))).toBe(true);
    expect(existsSync(join(dir, r.heatmap))).toBe(true);
    const f = openSafetensors(join(dir, r.scores));
    expect(f.names().sort()).toEqual(["gen_mask", "q_gen", "q_gen_latent", "q_ref", "q_ref_latent", "ref_mask"]);
    expect(f.info("q_gen_latent").shape).toEqual([16, 16]);
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// c. Bad inputs.

describe("bad inputs", () => {
  test("an undecodable image: UserError naming the file; rows of earlier pairs are complete; a rerun resumes", async () => {
    const dir = freshDir("garbage");
    for (let i = 0; i < 3; i++) {
      await writePng(join(dir, `ref${i}.png`), smallImage(i));
      await writePng(join(dir, `gen${i}.png`), smallImage(i + 10));
    }
    writeFileSync(join(dir, "gen2.png"), new TextEncoder().encode("this is not a PNG, just garbage bytes \x00\x01\x02"));
    writePairs(join(dir, "pairs.jsonl"), [0, 1, 2].map((i) => ({ id: `p${i}`, reference: `ref${i}.png`, generated: `gen${i}.png` })));
    await expectRejects(run(await options({ pairs: join(dir, "pairs.jsonl"), batch: 1 })), UserError, "cannot read image", join(dir, "gen2.png"));
    const rows = await expectCompleteRows(dir, join(dir, "patch-scores.jsonl"));
    expect(rows.map((r) => r.id)).toEqual(["p0", "p1"]);
    expect(existsSync(join(dir, "patch-scores", "p2.safetensors"))).toBe(false);
    // Fix the file and rerun: only the failed pair is scored.
    await writePng(join(dir, "gen2.png"), smallImage(12));
    expect(await run(await options({ pairs: join(dir, "pairs.jsonl"), batch: 1 }))).toMatchObject({ scored: 1, skipped: 2 });
    expect((await expectCompleteRows(dir, join(dir, "patch-scores.jsonl"))).map((r) => r.id)).toEqual(["p0", "p1", "p2"]);
  });

  test("a missing image: UserError naming pair and file before anything is written", async () => {
    const dir = freshDir("missing");
    await writePng(join(dir, "ref0.png"), smallImage(0));
    await writePng(join(dir, "gen0.png"), smallImage(1));
    writePairs(join(dir, "pairs.jsonl"), [
      { id: "ok", reference: "ref0.png", generated: "gen0.png" },
      { id: "typo", reference: "ref0.png", generated: "gen1.png" },
    ]);
    await expectRejects(run(await options({ pairs: join(dir, "pairs.jsonl") })), UserError, 'pair "typo"', join(dir, "gen1.png"), "does not exist");
    for (const f of ["patch-scores.jsonl", "patch-scores", "heatmaps"]) expect(existsSync(join(dir, f))).toBe(false);
  });

  test("a missing pairs file", async () => {
    const dir = freshDir("nopairs");
    await expectRejects(run(await options({ pairs: join(dir, "nope.jsonl") })), UserError, join(dir, "nope.jsonl"), "does not exist");
  });

  test("mismatched manifests: a referenceId missing from references.jsonl", async () => {
    const dir = await makeRun("mismatch", ["g0", "g1"]);
    const gens = readFileSync(join(dir, "generations.jsonl"), "utf8").replace('"referenceId":"r1"', '"referenceId":"r9"');
    writeFileSync(join(dir, "generations.jsonl"), gens);
    await expectRejects(run(await options({ run: dir })), UserError, `${join(dir, "generations.jsonl")}:2`, '"r9"', "references.jsonl");
    expect(existsSync(join(dir, "patch-scores.jsonl"))).toBe(false);
  });

  test("duplicate generation ids in a run: error with file:line", async () => {
    const dir = await makeRun("dupgen", ["g0", "g1"]);
    writeFileSync(join(dir, "generations.jsonl"), readFileSync(join(dir, "generations.jsonl"), "utf8").replace('"id":"g1"', '"id":"g0"'));
    await expectRejects(run(await options({ run: dir })), UserError, `${join(dir, "generations.jsonl")}:2`, 'duplicate id "g0"');
    expect(existsSync(join(dir, "patch-scores.jsonl"))).toBe(false);
  });

  test("a run without generations.jsonl / references.jsonl", async () => {
    const dir = await makeRun("nogen", ["g0"]);
    rmSync(join(dir, "generations.jsonl"));
    await expectRejects(run(await options({ run: dir })), UserError, "generations.jsonl is missing");
  });

  test("an empty run: nothing to score", async () => {
    const dir = await makeRun("empty", ["g0"]);
    writeFileSync(join(dir, "generations.jsonl"), "");
    await expectRejects(run(await options({ run: dir })), UserError, "nothing to score", "generations.jsonl");
    writeFileSync(join(dir, "pairs.jsonl"), "\n");
    await expectRejects(run(await options({ pairs: join(dir, "pairs.jsonl") })), UserError, "nothing to score", "pairs.jsonl");
  });

  test("a bad manifest row: error with file:line", async () => {
    const dir = await makeRun("badrow", ["g0", "g1", "g2"]);
    const lines = readFileSync(join(dir, "generations.jsonl"), "utf8").split("\n");
    lines[2] = lines[2]!.replace('"seed":2', '"seed":-1');
    writeFileSync(join(dir, "generations.jsonl"), lines.join("\n"));
    await expectRejects(run(await options({ run: dir })), ManifestError, `${join(dir, "generations.jsonl")}:3`, "seed");
    // Invalid JSON, and a pairs row with an unsafe id / a duplicate id.
    writeFileSync(join(dir, "generations.jsonl"), `${lines[0]}\n{"id": "g1",\n`);
    await expectRejects(run(await options({ run: dir })), ManifestError, `${join(dir, "generations.jsonl")}:2`, "invalid JSON");
    writeFileSync(join(dir, "pairs.jsonl"), `{"id":"a","reference":"x.png","generated":"y.png"}\n{"id":"../b","reference":"x.png","generated":"y.png"}\n`);
    await expectRejects(run(await options({ pairs: join(dir, "pairs.jsonl") })), ManifestError, `${join(dir, "pairs.jsonl")}:2`, "id");
    writeFileSync(join(dir, "pairs.jsonl"), `{"id":"a","reference":"x.png","generated":"y.png"}\n{"id":"a","reference":"x.png","generated":"y.png"}\n`);
    await expectRejects(run(await options({ pairs: join(dir, "pairs.jsonl") })), UserError, `${join(dir, "pairs.jsonl")}:2`, 'duplicate id "a"');
    // A reference path that leaves the run directory.
    const escaped = await makeRun("escape", ["g0"]);
    writeFileSync(join(escaped, "references.jsonl"), readFileSync(join(escaped, "references.jsonl"), "utf8").replace("references/r0.png", "../r0.png"));
    await expectRejects(run(await options({ run: escaped })), UserError, `${join(escaped, "references.jsonl")}:1`, "image");
  });

  test("neither or both of run / pairs: UsageError", async () => {
    await expectRejects(run(await options({})), UsageError, "exactly one of --run");
  });
});

// ---------------------------------------------------------------------------------------------
// d. Resume, --force, shards.

describe("resume, --force, --shard + merge", () => {
  // Three ids with at least one in each half of --shard i/2.
  const candidates = Array.from({ length: 20 }, (_, i) => `g${i}`);
  const half0 = candidates.filter((id) => inShard(id, { index: 0, count: 2 }));
  const half1 = candidates.filter((id) => !inShard(id, { index: 0, count: 2 }));
  const ids = [half0[0]!, half1[0]!, half0[1]!];

  test("a rerun skips everything and leaves the manifest unchanged; --force rescores", async () => {
    const dir = await makeRun("resume", ids);
    const first = await run(await options({ run: dir }));
    expect(first).toEqual({ scored: 3, skipped: 0, manifest: join(dir, "patch-scores.jsonl") });
    const rows = await expectCompleteRows(dir, first.manifest);
    expect(rows.map((r) => r.id).sort()).toEqual([...ids].sort());
    for (const [i, r] of rows.entries()) {
      // Run-relative paths, as the manifests store them.
      expect(r.reference).toBe(`references/r${ids.indexOf(r.id)}.png`);
      expect(r.generated).toBe(`generations/${r.id}-0.png`);
      expect(r.referenceId).toBe(`r${ids.indexOf(r.id)}`);
      expect(r.scores).toBe(`patch-scores/${r.id}.safetensors`);
      expect(r.heatmap).toBe(`heatmaps/${r.id}.png`);
      expect(i).toBeLessThan(3);
    }
    const before = readFileSync(first.manifest);
    const again = await run(await options({ run: dir }));
    expect(again).toEqual({ scored: 0, skipped: 3, manifest: first.manifest });
    expect(Buffer.compare(readFileSync(first.manifest), before)).toBe(0);

    const forced = await run(await options({ run: dir, force: true }));
    expect(forced).toMatchObject({ scored: 3, skipped: 0 });
    const rescored = await expectCompleteRows(dir, first.manifest);
    expect(rescored.length).toBe(3);
    // Same inputs, same scores.
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const r of rescored) expect(r.qGenMean).toBeCloseTo(byId.get(r.id)!.qGenMean, 6);
  });

  test("resuming with another encoder or feature layer is refused (scores would mix)", async () => {
    const dir = await makeRun("resume-encoder", ids.slice(0, 1));
    await run(await options({ run: dir }));
    await expectRejects(run(await options({ run: dir, layer: "block_13_expand_relu" })), UserError, "other settings", "--encoder", "block_13_expand_relu", "--force");
  });

  test("--shard 0/2 and 1/2 cover every pair once; merge joins them", async () => {
    const dir = await makeRun("shards", ids);
    const a = await run(await options({ run: dir, shard: { index: 0, count: 2 } }));
    const b = await run(await options({ run: dir, shard: { index: 1, count: 2 } }));
    expect(a.manifest).toBe(shardPath(join(dir, "patch-scores.jsonl"), { index: 0, count: 2 }));
    expect(a.scored).toBeGreaterThan(0);
    expect(b.scored).toBeGreaterThan(0);
    expect(a.scored + b.scored).toBe(3);
    expect(existsSync(join(dir, "patch-scores.jsonl"))).toBe(false);
    expect(await merge(dir, 2)).toBe(3);
    const rows = await expectCompleteRows(dir, join(dir, "patch-scores.jsonl"));
    expect(rows.map((r) => r.id).sort()).toEqual([...ids].sort());
    // A shard rerun resumes too.
    expect(await run(await options({ run: dir, shard: { index: 1, count: 2 } }))).toMatchObject({ scored: 0, skipped: b.scored });
    // merge refuses a missing shard and a count that is not a positive integer (it would write an empty manifest).
    await expectRejects(merge(dir, 3), UserError, "shard-0-of-3");
    for (const bad of [0, Number.NaN, 1.5]) await expectRejects(merge(dir, bad), UsageError, "--merge");
    expect((await readJsonlAll(join(dir, "patch-scores.jsonl"), PatchScoreRow)).length).toBe(3);
  });

  test("more shards than pairs: an empty shard leaves an empty manifest and the merge goes through", async () => {
    const dir = await makeRun("many-shards", ids);
    const count = 8; // 3 pairs over 8 shards: most shards get none
    let scored = 0;
    for (let index = 0; index < count; index++) {
      const r = await run(await options({ run: dir, shard: { index, count } }));
      expect(existsSync(r.manifest)).toBe(true);
      scored += r.scored;
    }
    expect(scored).toBe(3);
    expect(await merge(dir, count)).toBe(3);
  });
});

// ---------------------------------------------------------------------------------------------
// e. The command line.

describe("CLI", () => {
  const cli = (...args: string[]) => {
    const p = Bun.spawnSync(["bun", SCRIPT, ...args], { cwd: root, stdout: "pipe", stderr: "pipe", env: { ...process.env, PATCHDPO_DEBUG: "" } });
    return { code: p.exitCode, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
  };

  test("--help exits 0 and lists the defaults", () => {
    const r = cli("--help");
    expect(r.code).toBe(0);
    for (const s of ["--run <dir>", "--pairs <file>", "--feature-layer", "(default: default)", "(default: 64;", "(default: 0.5)", "(default: clamp;", "(default: 8)", "(default: cpu)", "--shard <i/n>", "--merge <n>", "--force"]) {
      expect(r.stdout).toContain(s);
    }
  });

  test("bad flags exit 2 with a message and no stack", () => {
    for (const args of [["--pairs", "p.jsonl", "--low-threshold", "2"], ["--pairs", "p.jsonl", "--normalization", "zscore"], ["--pairs", "p.jsonl", "--shard", "2/2"], ["--bogus"], ["--pairs", "p.jsonl", "extra"]]) {
      const r = cli(...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).not.toContain("    at ");
    }
    expect(cli("--pairs", "p.jsonl", "--low-threshold", "2").stderr).toMatch(/lowThreshold|low-threshold/);
    expect(cli("--bogus").stderr).toContain("--bogus");
  });

  test("--merge with a bad count exits 2 and leaves patch-scores.jsonl alone", async () => {
    const dir = freshDir("cli-merge");
    writeFileSync(join(dir, "patch-scores.jsonl"), '{"keep":"me"}\n');
    for (const n of ["abc", "0"]) {
      const r = cli("--run", dir, "--merge", n);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("--merge");
    }
    expect(readFileSync(join(dir, "patch-scores.jsonl"), "utf8")).toBe('{"keep":"me"}\n');
  });

  test("a missing image exits 1 with the pair and path, writing no manifest", async () => {
    const dir = freshDir("cli-missing");
    writePairs(join(dir, "pairs.jsonl"), [{ id: "p0", reference: "nope-ref.png", generated: "nope-gen.png" }]);
    const r = cli("--pairs", join(dir, "pairs.jsonl"));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('error: pair "p0": image');
    expect(r.stderr).not.toContain("    at ");
    expect(existsSync(join(dir, "patch-scores.jsonl"))).toBe(false);
  });
});
