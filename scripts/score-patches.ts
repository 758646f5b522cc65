// Patch quality estimation (PatchDPO, DESIGN.md section 1 item 2): for every (reference,
// generated) pair, patch features from a vision encoder, q_gen / q_ref quality maps, the maps at
// the latent grid the trainer uses, and a heatmap a person can look at.
//
//   bun scripts/score-patches.ts --run data/runs/r1                  # references + generations
//   bun scripts/score-patches.ts --pairs pairs.jsonl --out scores/   # {"id","reference","generated"}
//
// Writes patch-scores.jsonl, patch-scores/<id>.safetensors (q_gen, q_ref at encoder resolution and
// at the latent grid) and heatmaps/<id>.png. Resumable: rows already in patch-scores.jsonl are
// skipped; a row is appended only after its files are written. The settings that decide the maps
// (encoder, feature layer, latent grid, threshold, normalization) are kept in
// patch-scores.settings.json and a resume with others is refused. --force checks everything first
// (pairs, images, encoder) and swaps the new scores in only when all are written.

import { existsSync, mkdirSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { type } from "arktype";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { OPS_FLAGS, OPS_HELP, fusedOpsFlag, parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { type RgbImage, loadImage } from "../lib/io/images.ts";
import { withLockFile } from "../lib/io/lock.ts";
import { appendJsonl, byUniqueId, readJsonlAll, repairJsonlTail, writeJsonl } from "../lib/io/manifest.ts";
import { progress } from "../lib/io/progress.ts";
import { type Shard, existingRunDir, inShard, parseShard, portablePath, runPaths, shardPath } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { writeSafetensors } from "../lib/io/safetensors.ts";
import { GenerationRow, PairRow, PatchScoreRow, ReferenceRow } from "../lib/io/schemas.ts";
import { checkResumeSettings, describeDiff, readSettings, settingsDiff, settingsPath, writeSettings } from "../lib/io/settings.ts";
import { Staging } from "../lib/io/staging.ts";
import { checkShards } from "./generate-images.ts";
import { type Featurizer, loadFeaturizer } from "../lib/models/featurizer.ts";
import { writeHeatmapPng } from "../lib/patch/heatmap.ts";
import { PRECISIONS, PRECISION_FLAG, PRECISION_HELP, type Precision, withPrecision } from "../lib/graph/precision.ts";
import { backgroundMask, lowShare, normalizeQuality, qualityMaps, resizeMap } from "../lib/patch/quality.ts";

export interface ScoreOptions {
  /** Run directory (reads references.jsonl + generations.jsonl, writes there). */
  run?: string;
  /** Explicit pairs file; image paths relative to it. */
  pairs?: string;
  /** Output folder for --pairs (default: the pairs file's folder). */
  out?: string;
  /** "default" (the shipped SSL-finetuned patch encoder), "mobilenet_v2" (raw) or an encoder folder. */
  encoder: string;
  featureLayer?: string;
  /** Side of the square latent grid the maps are resized to (64 for 512 px SD). */
  latentGrid: number;
  /** Generated patches below this [0,1] quality count as low quality. */
  lowThreshold: number;
  normalization: "clamp" | "minmax";
  batch: number;
  shard?: Shard;
  /** Compute dtype of the graphs lib/graph builds (lib/graph/precision.ts; default fp32); exported ONNX encoders run as exported. */
  precision?: Precision;
  device: Device;
  threads: number;
  /** Attention as the fused contrib op (default) or in standard ops (lib/graph/fuse.ts). */
  fusedOps: boolean;
  force: boolean;
  /** Featurizer to reuse across calls (notebooks, tests). */
  featurizer?: Featurizer;
}

export const DEFAULTS = {
  encoder: "default", latentGrid: 64, lowThreshold: 0.5, normalization: "clamp", batch: 8, device: "cpu", threads: 0, fusedOps: true, force: false,
} as const satisfies Partial<ScoreOptions>;

/** What run() takes: the options a caller changes (a run or a pairs file at least); the rest are DEFAULTS. */
export type ScoreInput = Partial<ScoreOptions>;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  "precision?": type.enumerated(...PRECISIONS),
  "run?": "string > 0", "pairs?": "string > 0", "out?": "string > 0", encoder: "string > 0", "featureLayer?": "string > 0",
  latentGrid: "number.integer > 0", lowThreshold: "0 <= number <= 1", normalization: "'clamp' | 'minmax'", batch: "number.integer > 0",
  "shard?": { index: "number.integer >= 0", count: "number.integer > 0" }, device: type.enumerated(...DEVICES), threads: "number.integer >= 0", fusedOps: "boolean", force: "boolean",
});

interface Pair { id: string; referenceId?: string; reference: string; generated: string; refAbs: string; genAbs: string }

/** Pairs from a run directory: every generation with its reference. Fails on mismatched manifests. */
async function pairsFromRun(run: string): Promise<Pair[]> {
  const paths = runPaths(run);
  for (const f of [paths.references, paths.generations]) {
    if (!existsSync(f)) throw new UserError(`${f} is missing: score-patches needs references.jsonl and generations.jsonl in the run (run generate-images first, or pass --pairs)`);
  }
  const refs = byUniqueId(await readJsonlAll(paths.references, ReferenceRow), paths.references);
  const gens = await readJsonlAll(paths.generations, GenerationRow);
  const seen = new Set<string>();
  return gens.map((g, i) => {
    // Outputs are named by id: two rows with one id would overwrite each other's files.
    if (seen.has(g.id)) throw new UserError(`${paths.generations}:${i + 1}: duplicate id "${g.id}" (patch scores and heatmaps are named by id; give each generation its own)`);
    seen.add(g.id);
    const r = refs.get(g.referenceId);
    if (!r) throw new UserError(`${paths.generations}:${i + 1}: referenceId "${g.referenceId}" is not in ${paths.references} (the manifests do not match; regenerate or fix the row)`);
    return { id: g.id, referenceId: r.id, reference: r.image, generated: g.image, refAbs: paths.resolve(r.image), genAbs: paths.resolve(g.image) };
  });
}

async function pairsFromFile(file: string): Promise<Pair[]> {
  if (!existsSync(file)) throw new UserError(`pairs file ${file} does not exist`);
  const base = dirname(resolve(file));
  const rows = await readJsonlAll(file, PairRow);
  const seen = new Set<string>();
  return rows.map((r, i) => {
    if (seen.has(r.id)) throw new UserError(`${file}:${i + 1}: duplicate id "${r.id}"`);
    seen.add(r.id);
    const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
    return { id: r.id, reference: r.reference, generated: r.generated, refAbs: abs(r.reference), genAbs: abs(r.generated) };
  });
}

/** Mean over the finite entries (masked reference patches are NaN). */
function finiteMean(a: Float32Array): number {
  let s = 0, n = 0;
  for (const v of a) if (Number.isFinite(v)) { s += v; n++; }
  return n ? s / n : 0;
}

export async function run(input: ScoreInput): Promise<{ scored: number; skipped: number; manifest: string }> {
  const o = resolveOptions<ScoreOptions>(OPTIONS, DEFAULTS, input);
  if (!!o.run === !!o.pairs) throw new UsageError("give exactly one of --run <dir> or --pairs <file.jsonl>");
  if (o.run && o.out) throw new UsageError("--out is for --pairs; with --run the scores go into the run directory");
  const outDir = o.run ? existingRunDir(o.run) : resolve(o.out ?? dirname(resolve(o.pairs!)));
  const { featurizer: _f, ...recorded } = o;
  return withPrecision(o.precision ?? "fp32", o.device, () => recordStep(outDir, "score-patches", recorded, () => score(o, outDir)));
}

async function score(o: ScoreOptions, outDir: string): Promise<{ scored: number; skipped: number; manifest: string }> {
  // Everything is checked before anything is written: the pairs, every image, the encoder.
  const pairs = o.run ? await pairsFromRun(o.run) : await pairsFromFile(o.pairs!);
  if (pairs.length === 0) throw new UserError(`nothing to score: ${o.run ? `${o.run}/generations.jsonl` : o.pairs} has no rows`);
  const mine = pairs.filter((p) => inShard(p.id, o.shard));
  for (const p of mine) for (const f of [p.refAbs, p.genAbs]) if (!existsSync(f)) throw new UserError(`pair "${p.id}": image ${f} does not exist`);
  const feat = o.featurizer ?? (await loadFeaturizer(o.encoder, { device: o.device, threads: o.threads, featureLayer: o.featureLayer, batchSize: o.batch, fusedOps: o.fusedOps }));

  const paths = runPaths(outDir);
  const encoderTag = o.featureLayer ? `${o.encoder}#${o.featureLayer}` : o.encoder;
  const manifest = o.shard ? shardPath(paths.patchScores, o.shard) : paths.patchScores;
  const settings = { encoder: encoderTag, latentGrid: o.latentGrid, lowThreshold: o.lowThreshold, normalization: o.normalization };
  const shardTag = o.shard ? ` --shard ${o.shard.index}/${o.shard.count}` : "";
  return withLockFile(`${manifest}.lock`, `score-patches${shardTag} in ${outDir}`, async () => {
    // A forced run writes aside (staging) and swaps its results in at the end; a failure keeps the old ones.
    const stage = new Staging(outDir, basename(manifest, ".jsonl"));
    const out = (rel: string) => (o.force ? stage.path(rel) : join(outDir, rel));
    const relOf = (abs: string) => portablePath(outDir, abs);
    if (o.force) stage.begin();
    else {
      stage.recover();
      checkResumeSettings(manifest, settings, "score-patches");
    }
    const target = out(relOf(manifest));
    await writeSettings(manifest, { step: "score-patches", settings, expected: mine.map((p) => p.id), ...(o.shard ? { shard: `${o.shard.index}/${o.shard.count}` } : {}) }, out(relOf(settingsPath(manifest))));
    const done = new Set<string>();
    if (existsSync(target)) {
      await repairJsonlTail(target); // a crash mid-append leaves a partial last line
      for (const r of await readJsonlAll(target, PatchScoreRow)) {
        // Resuming with another encoder would mix two kinds of scores in one manifest.
        if (r.encoder !== encoderTag) throw new UserError(`${manifest}: row "${r.id}" was scored with encoder "${r.encoder}", this run uses "${encoderTag}"; pass --force to rescore everything`);
        done.add(r.id);
      }
    }
    const todo = mine.filter((p) => !done.has(p.id));
    mkdirSync(paths.patchScoresDir, { recursive: true });
    mkdirSync(paths.heatmapsDir, { recursive: true });
    const bar = progress(todo.length, "score-patches");
    const rel = (abs: string) => relative(outDir, abs).split("\\").join("/");

    // An image recurs across pairs (a reference has many generations; an eval grid pairs each photo
    // with many): each is read and encoded once while it stays in this small cache.
    const seen = new Map<string, { img: RgbImage; patches: Float32Array }>();
    let grid: [number, number, number] = [0, 0, 0];
    const encode = async (files: string[]) => {
      const missing = [...new Set(files)].filter((f) => !seen.has(f));
      const imgs: RgbImage[] = [];
      for (const f of missing) imgs.push(await loadImage(f));
      if (imgs.length) {
        const f = await feat.features(imgs);
        grid = f.patchShape;
        const per = grid[0] * grid[1] * grid[2];
        missing.forEach((file, k) => seen.set(file, { img: imgs[k]!, patches: f.patches.slice(k * per, (k + 1) * per) }));
      }
      return files.map((f) => seen.get(f)!);
    };
    const CACHED_IMAGES = 64;

    for (let i = 0; i < todo.length; i += o.batch) {
      const chunk = todo.slice(i, i + o.batch);
      const both = await encode(chunk.flatMap((p) => [p.refAbs, p.genAbs]));
      const refs = both.filter((_, j) => j % 2 === 0).map((e) => e.img);
      const gens = both.filter((_, j) => j % 2 === 1).map((e) => e.img);
      const [C, h, w] = grid;
      for (let k = 0; k < chunk.length; k++) {
        const p = chunk[k]!;
        // Background patches of both images (near-white) are masked: left out of the matching and
        // stored as NaN, so they are neutral in every objective (the authors' pairs put both images
        // on a clean background). A scene background is not near-white and stays in; its patches
        // then match nothing on the reference (TinyBench measures that construction too).
        const mask = backgroundMask(refs[k]!, h, w);
        const genMask = backgroundMask(gens[k]!, h, w);
        const gen = { data: both[2 * k + 1]!.patches, c: C, h, w };
        const ref = { data: both[2 * k]!.patches, c: C, h, w };
        const q = qualityMaps(gen, ref, mask); // q_gen[i] = max over unmasked reference patches
        const back = qualityMaps(ref, gen, genMask); // q_ref[j] = max over unmasked generated patches
        const norm = { mode: o.normalization } as const;
        const qGen = normalizeQuality(Float32Array.from(q.qGen, (v, i) => (genMask[i] ? NaN : v)), norm);
        const qRef = normalizeQuality(Float32Array.from(back.qGen, (v, j) => (mask[j] ? NaN : v)), norm);
        const L = o.latentGrid;
        const scoresRel = `patch-scores/${p.id}.safetensors`;
        const heatRel = `heatmaps/${p.id}.png`;
        await writeSafetensors(out(scoresRel), {
          q_gen: { dtype: "F32", shape: [h, w], data: qGen },
          q_ref: { dtype: "F32", shape: [h, w], data: qRef },
          q_gen_latent: { dtype: "F32", shape: [L, L], data: resizeMap(qGen, h, w, L, L) },
          q_ref_latent: { dtype: "F32", shape: [L, L], data: resizeMap(qRef, h, w, L, L) },
          ref_mask: { dtype: "U8", shape: [h, w], data: mask },
          gen_mask: { dtype: "U8", shape: [h, w], data: genMask },
        }, { encoder: feat.name, normalization: o.normalization, reference: p.reference, generated: p.generated });
        await writeHeatmapPng(out(heatRel), refs[k]!, gens[k]!, qGen, h, w);
        await appendJsonl(target, {
          id: p.id,
          ...(p.referenceId ? { referenceId: p.referenceId } : {}),
          reference: o.run ? p.reference : rel(p.refAbs),
          generated: o.run ? p.generated : rel(p.genAbs),
          qGenMean: finiteMean(qGen),
          qRefMean: finiteMean(qRef),
          lowShare: lowShare(qGen, o.lowThreshold),
          scores: scoresRel,
          heatmap: heatRel,
          encoder: encoderTag,
        }, PatchScoreRow);
        bar.tick();
      }
      for (const f of seen.keys()) if (seen.size > CACHED_IMAGES) seen.delete(f); // oldest first
    }
    bar.done();
    // A shard with no pairs still leaves its (empty) manifest, so --merge sees that it finished.
    if (!existsSync(target)) await writeJsonl(target, []);
    if (o.force) await stage.commit([], [relOf(manifest), relOf(settingsPath(manifest))]);
    return { scored: todo.length, skipped: mine.length - todo.length, manifest };
  });
}

/**
 * Joins the shard manifests (`--merge`) into patch-scores.jsonl, after checking them against the
 * run's generations: every shard scored with the same settings, every pair present once.
 */
export async function merge(runDir: string, count: number): Promise<number> {
  // A count that is not a positive integer would "merge" nothing and overwrite patch-scores.jsonl.
  if (!Number.isSafeInteger(count) || count < 1) throw new UsageError(`--merge ${count}: expected the shard count n (a positive integer) used with --shard i/n`);
  const root = existingRunDir(runDir);
  const paths = runPaths(root);
  return recordStep(root, `score-patches --merge ${count}`, { run: runDir, merge: count }, () =>
    withLockFile(`${paths.patchScores}.lock`, `score-patches --merge in ${root}`, async () => {
      const shards = Array.from({ length: count }, (_, index) => shardPath(paths.patchScores, { index, count }));
      const missingFiles = shards.filter((f) => !existsSync(f));
      if (missingFiles.length) throw new UserError(`--merge ${count}: shard file${missingFiles.length > 1 ? "s" : ""} ${missingFiles.join(", ")} missing (did every shard --shard i/${count} run?)`);
      const recorded = shards.map((f, index) => {
        const s = readSettings(f);
        if (!s) throw new UserError(`--merge: ${settingsPath(f)} is missing, so what shard ${index}/${count} must hold is unknown (made by an older version?): rerun that shard`);
        return s;
      });
      for (let i = 1; i < count; i++) {
        const diff = settingsDiff(recorded[0]!.settings, recorded[i]!.settings);
        if (diff.length) throw new UserError(`--merge: shard ${i}/${count} was scored with other settings than shard 0/${count} (${describeDiff(diff)}); redo one of them with --force`);
      }
      const input = (await pairsFromRun(root)).map((p) => p.id);
      const perShard: PatchScoreRow[][] = [];
      for (const f of shards) {
        await repairJsonlTail(f);
        perShard.push(await readJsonlAll(f, PatchScoreRow));
      }
      checkShards(paths.patchScores, count, input, perShard);
      const rows = perShard.flat();
      await writeJsonl(paths.patchScores, rows, PatchScoreRow);
      await writeSettings(paths.patchScores, { step: "score-patches", settings: recorded[0]!.settings, expected: input });
      return rows.length;
    }),
  );
}

const HELP = `score-patches: patch quality maps (q_gen, q_ref) and heatmaps for (reference, generated) pairs

usage: bun scripts/score-patches.ts (--run <dir> | --pairs <file.jsonl> [--out <dir>]) [options]

  --run <dir>             run directory with references.jsonl + generations.jsonl
  --pairs <file>          JSONL rows {"id", "reference", "generated"}, image paths relative to the file
  --out <dir>             where --pairs results go (default: the pairs file's folder)
  --encoder <spec>        default: the shipped SSL-finetuned patch encoder (checkpoints/patch-encoder, read at
                          block_13_expand_relu, the layer it was trained for); mobilenet_v2: the embedded
                          MobileNetV2 as pretrained (any --feature-layer); or an encoder folder (default: ${DEFAULTS.encoder})
  --feature-layer <name>  MobileNetV2 feature map: out_relu (7x7) or block_13_expand_relu (14x14); a finetuned encoder
                          is read at the layer it was trained for (another is refused), raw mobilenet_v2 at out_relu by default
  --latent-grid <n>       side of the latent-resolution maps (default: ${DEFAULTS.latentGrid}; 64 for 512 px SD, 128 for SDXL)
  --low-threshold <q>     quality below which a generated patch counts as low (default: ${DEFAULTS.lowThreshold})
  --normalization <m>     clamp | minmax (default: ${DEFAULTS.normalization}; see lib/patch/quality.ts)
  --batch <n>             images per encoder batch (default: ${DEFAULTS.batch})
  --shard <i/n>           score only shard i of n (writes patch-scores.shard-i-of-n.jsonl)
  --merge <n>             join n shard manifests into patch-scores.jsonl and exit
  --device <d>            cpu | cuda | webgpu (default: ${DEFAULTS.device})
${PRECISION_HELP}
  --threads <n>           intra-op threads, 0 = one per core (default: ${DEFAULTS.threads})
${OPS_HELP}
  --force                 rescore pairs already in the manifest
  -h, --help              this help`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      run: { type: "string" }, pairs: { type: "string" }, out: { type: "string" },
      encoder: { type: "string", default: DEFAULTS.encoder }, "feature-layer": { type: "string" },
      "latent-grid": { type: "string", default: String(DEFAULTS.latentGrid) },
      "low-threshold": { type: "string", default: String(DEFAULTS.lowThreshold) },
      normalization: { type: "string", default: DEFAULTS.normalization },
      batch: { type: "string", default: String(DEFAULTS.batch) },
      ...PRECISION_FLAG,
      shard: { type: "string" }, merge: { type: "string" },
      device: { type: "string", default: DEFAULTS.device }, threads: { type: "string", default: String(DEFAULTS.threads) }, ...OPS_FLAGS,
      force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    if (v.merge) {
      if (!v.run) throw new UsageError("--merge needs --run <dir>");
      if (!/^\s*\d+\s*$/.test(v.merge)) throw new UsageError(`--merge ${JSON.stringify(v.merge)}: expected the shard count n (a positive integer) used with --shard i/n`);
      const n = await merge(v.run, Number(v.merge));
      return console.log(`merged ${n} rows into ${runPaths(v.run).patchScores}`);
    }
    const t0 = performance.now();
    const res = await run({
      run: v.run, pairs: v.pairs, out: v.out, encoder: v.encoder, featureLayer: v["feature-layer"], force: v.force,
      precision: v.precision as Precision,
      shard: v.shard ? parseShard(v.shard) : undefined, latentGrid: Number(v["latent-grid"]), lowThreshold: Number(v["low-threshold"]),
      batch: Number(v.batch), threads: Number(v.threads), normalization: v.normalization as ScoreOptions["normalization"], device: v.device as Device,
      fusedOps: fusedOpsFlag(v, HELP),
    });
    console.log(`scored ${res.scored} pairs (${res.skipped} already done) in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${res.manifest}`);
  });
}
