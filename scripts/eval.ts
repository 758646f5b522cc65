// Evaluation (DESIGN.md section 1, "Evaluation"): DINO, CLIP-I, CLIP-T and the feature score of
// generated images against real photos of their subjects, DreamBench style.
//
//   bun scripts/eval.ts --images out/dreambench --real ../shared/data/dreambench \
//       --prompts ../shared/data/dreambench/prompts_and_classes.txt --dino checkpoints/dino-vits16 --clip checkpoints/clip-vit-base-patch32
//   bun scripts/eval.ts --run data/runs/r1            # generations.jsonl; real photos = the run's references
//
// --images holds <subject>/<prompt>.png|jpg (the PatchDPO authors' layout: the file stem is the
// prompt, CLIP-T scores it). --real holds one folder of photos per subject. Writes to --out
// (default <run>/eval or <images>/eval):
//   scores.jsonl     one row per generated image: subject, prompt, metric values (appended as each
//                    image finishes; a rerun skips finished images)
//   summary.json     {"metrics", "subjects", "prompts", "meta"}: means over subjects, per subject, per prompt
//   all_score.json   the authors' format: {"clipt_score", "clipi_score", "dino_score"} as strings
//   cache/           embeddings per encoder and image content (safetensors), reused by reruns
// Then `bun scripts/report.ts --eval <out>` renders report.html.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, extname, join, relative, resolve } from "node:path";
import { type } from "arktype";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { writeFileAtomic, writeJsonAtomic } from "../lib/io/atomic.ts";
import { OPS_FLAGS, OPS_HELP, fusedOpsFlag, parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { type RgbImage, loadImage } from "../lib/io/images.ts";
import { withLockFile } from "../lib/io/lock.ts";
import { appendJsonl, byUniqueId, readJsonlAll, repairJsonlTail, writeJsonl } from "../lib/io/manifest.ts";
import { progress } from "../lib/io/progress.ts";
import { type Shard, existingRunDir, inShard, isSafeId, parseShard, portablePath, runPaths, shardPath } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { GenerationRow, PromptRow, ReferenceRow } from "../lib/io/schemas.ts";
import { Staging } from "../lib/io/staging.ts";
import { PRECISIONS, PRECISION_FLAG, PRECISION_HELP, type Precision, withPrecision } from "../lib/graph/precision.ts";
import { checkShards } from "./generate-images.ts";
import { KOSMOSG_REF_PHOTO, type PromptFile, readPromptFile, subjectPrompts } from "../lib/eval/dreambench.ts";
import { EmbeddingCache, type EmbedderOptions, type ImageEmbedder, type TextEmbedder, clipEmbedders, contentHash, dinoEmbedder, embedTexts, featureEmbedder } from "../lib/eval/embeddings.ts";
import { EvalScoreRow, type MetricName, type MetricValues, SETTINGS, type Setting, type Summary, authorsScoreJson, cosine, imageScore, refsForSetting, summarize } from "../lib/eval/metrics.ts";

export interface EvalOptions {
  /** Folder of <subject>/<prompt>.png|jpg. */
  images?: string;
  /** Run directory: generations.jsonl (real photos default to its references). */
  run?: string;
  /** Folder with one sub-folder of real photos per subject. */
  real?: string;
  /** DreamBench prompts_and_classes.txt: every generated prompt must be one of its prompts. */
  prompts?: string;
  /** DreamBench's {0} (unique token) when the generated prompts carry one (default: none, as the PatchDPO authors). */
  uniqueToken?: string;
  /** DINO ViT-S/16 folder (transformers layout or transformers.js ONNX export). */
  dino?: string;
  /** CLIP ViT-B/32 folder (transformers CLIPModel). */
  clip?: string;
  /** "default" (the shipped SSL-finetuned patch encoder), "mobilenet_v2" (raw), an encoder folder, or "none". */
  encoderFeature: string;
  setting: Setting;
  /** single-ref: photo index (sorted by file name), a photo file stem, or "kosmosg" (the authors' per-subject choice). */
  refPhoto: string;
  /** Output folder (default <run>/eval or <images>/eval). */
  out?: string;
  batch: number;
  shard?: Shard;
  /** Compute dtype of the graphs lib/graph builds (lib/graph/precision.ts; default fp32); exported ONNX encoders run as exported. */
  precision?: Precision;
  device: Device;
  threads: number;
  /** Attention as the fused contrib op (default) or in standard ops (lib/graph/fuse.ts). */
  fusedOps: boolean;
  force: boolean;
  /** Embedders to reuse (tests, notebooks). */
  embedders?: { dino?: ImageEmbedder; clipI?: ImageEmbedder; clipT?: TextEmbedder; feature?: ImageEmbedder };
}

export const DEFAULTS = {
  encoderFeature: "default", setting: "all-refs", refPhoto: "0", batch: 8, device: "cpu", threads: 0, fusedOps: true, force: false,
} as const satisfies Partial<EvalOptions>;

/** What run() takes: the images (or a run) and whatever else the caller changes; the rest are DEFAULTS. */
export type EvalInput = Partial<EvalOptions>;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  "precision?": type.enumerated(...PRECISIONS),
  "images?": "string > 0", "run?": "string > 0", "real?": "string > 0", "prompts?": "string > 0", "uniqueToken?": "string", "dino?": "string > 0",
  "clip?": "string > 0", encoderFeature: "string > 0", setting: type.enumerated(...SETTINGS), refPhoto: "string > 0", "out?": "string > 0",
  batch: "number.integer > 0", "shard?": { index: "number.integer >= 0", count: "number.integer > 0" }, device: type.enumerated(...DEVICES),
  threads: "number.integer >= 0", fusedOps: "boolean", force: "boolean",
});

const IMAGE_EXT = new Set([".png", ".jpg", ".jpeg", ".webp"]);
const isImageFile = (f: string) => !f.startsWith(".") && IMAGE_EXT.has(extname(f).toLowerCase());
const posixRel = (from: string, to: string) => relative(from, to).split("\\").join("/");

interface Item {
  id: string;
  subject: string;
  prompt: string;
  promptKey: string;
  abs: string;
}

interface RealPhotos {
  subject: string;
  /** Absolute paths, sorted by file name. */
  files: string[];
  names: string[];
}

/** Everything that decides a row's values; a rerun with other settings must not mix rows. */
interface EvalConfig {
  setting: Setting;
  refPhoto: string;
  metrics: MetricName[];
  encoders: Partial<Record<MetricName, string>>;
  real: string;
  prompts?: string;
  uniqueToken?: string;
}

/** The output folder an evaluation writes to. */
export function outDirOf(o: Pick<EvalOptions, "out" | "run" | "images">): string {
  if (o.out) return resolve(o.out);
  if (o.run) return runPaths(o.run).evalDir;
  return join(resolve(o.images!), "eval");
}

const configPath = (scores: string) => scores.replace(/\.jsonl$/, ".config.json");

function listDirs(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory() && !d.name.startsWith(".")).map((d) => d.name).sort();
}

/** Generated images of an images folder: <subject>/<prompt>.<ext>. */
function itemsFromImages(dir: string, outDir: string): Item[] {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new UserError(`--images ${dir}: no such folder (expected <subject>/<prompt>.png|jpg)`);
  const items: Item[] = [];
  for (const subject of listDirs(root)) {
    const sdir = join(root, subject);
    if (resolve(sdir) === outDir) continue; // our own output folder (the default <images>/eval)
    if (!isSafeId(subject)) throw new UserError(`${sdir}: subject folder names must be safe ids ([A-Za-z0-9._-]); rename it`);
    for (const f of readdirSync(sdir).filter(isImageFile).sort()) {
      const prompt = basename(f, extname(f));
      items.push({ id: `${subject}/${f}`, subject, prompt, promptKey: prompt, abs: join(sdir, f) });
    }
  }
  if (items.length === 0) throw new UserError(`--images ${dir}: no generated images found (expected <subject>/<prompt>.png|jpg one level down)`);
  return items;
}

/** Generated images of a run: generations.jsonl; prompts.jsonl's class nouns give the per-prompt keys. */
async function itemsFromRun(run: string): Promise<Item[]> {
  const paths = runPaths(run);
  if (!existsSync(paths.generations)) throw new UserError(`${paths.generations} is missing: eval needs the run's generations (run generate-images first, or pass --images)`);
  const classOf = new Map<string, string>();
  if (existsSync(paths.prompts)) for (const p of await readJsonlAll(paths.prompts, PromptRow)) classOf.set(p.subjectId, p.classNoun);
  const seen = new Set<string>();
  return (await readJsonlAll(paths.generations, GenerationRow)).map((g, i) => {
    if (seen.has(g.id)) throw new UserError(`${paths.generations}:${i + 1}: duplicate id "${g.id}"`);
    seen.add(g.id);
    const cls = classOf.get(g.subjectId);
    const key = cls ? g.prompt.split(cls).join("{}") : g.prompt;
    return { id: g.id, subject: g.subjectId, prompt: g.prompt, promptKey: key, abs: paths.resolve(g.image) };
  });
}

/** Real photos per subject from a folder; every subject must have one (all missing ones are listed). */
function realFromFolder(dir: string, subjects: string[]): Map<string, RealPhotos> {
  const root = resolve(dir);
  if (!existsSync(root)) throw new UserError(`--real ${dir}: no such folder (expected one sub-folder of photos per subject)`);
  const out = new Map<string, RealPhotos>();
  const missing: string[] = [];
  for (const s of subjects) {
    // DreamBench's own layout nests the subjects under dataset/.
    const sdir = [join(root, s), join(root, "dataset", s)].find((d) => existsSync(d) && statSync(d).isDirectory());
    const names = sdir ? readdirSync(sdir).filter(isImageFile).sort() : [];
    if (!sdir || names.length === 0) {
      missing.push(s);
      continue;
    }
    out.set(s, { subject: s, files: names.map((n) => join(sdir, n)), names: names.map((n) => basename(n, extname(n))) });
  }
  if (missing.length) {
    throw new UserError(`no real photos for ${missing.length} generated subject${missing.length > 1 ? "s" : ""}: ${missing.map((s) => `"${s}" (expected ${join(root, s)}/*.jpg|png)`).slice(0, 8).join(", ")}${missing.length > 8 ? ", ..." : ""}. Each generated subject folder needs a folder of real photos of the same name under --real.`);
  }
  return out;
}

/** Real photos from a run's references (the clean-background images the generations were made from). */
async function realFromRun(run: string, subjects: string[]): Promise<Map<string, RealPhotos>> {
  const paths = runPaths(run);
  if (!existsSync(paths.references)) throw new UserError(`${paths.references} is missing: pass --real <folder> (one sub-folder of photos per subject) or run generate-images --mode reference first`);
  const by = new Map<string, ReferenceRow[]>();
  const refs = await readJsonlAll(paths.references, ReferenceRow);
  byUniqueId(refs, paths.references);
  for (const r of refs) {
    if (!by.has(r.subjectId)) by.set(r.subjectId, []);
    by.get(r.subjectId)!.push(r);
  }
  const missing = subjects.filter((s) => !by.has(s));
  if (missing.length) throw new UserError(`no reference images in ${paths.references} for subject${missing.length > 1 ? "s" : ""} ${missing.slice(0, 8).map((s) => `"${s}"`).join(", ")}; pass --real <folder> or regenerate the references`);
  const out = new Map<string, RealPhotos>();
  for (const s of subjects) {
    const rows = by.get(s)!.sort((a, b) => (a.image < b.image ? -1 : a.image > b.image ? 1 : 0));
    out.set(s, { subject: s, files: rows.map((r) => paths.resolve(r.image)), names: rows.map((r) => r.id) });
  }
  return out;
}

/** Checks every generated prompt against the prompt file and sets its per-prompt key (the template). */
function matchPrompts(items: Item[], file: PromptFile, uniqueToken: string | undefined): void {
  const bySubject = new Map<string, ReturnType<typeof subjectPrompts>>();
  const bad: string[] = [];
  for (const it of items) {
    if (!bySubject.has(it.subject)) bySubject.set(it.subject, subjectPrompts(file, it.subject, uniqueToken));
    const m = bySubject.get(it.subject)!.get(it.prompt);
    if (m) it.promptKey = m.key;
    else bad.push(`${it.id}: "${it.prompt}"`);
  }
  if (bad.length) {
    const ex = [...bySubject.entries()][0]!;
    throw new UserError(
      `${bad.length} generated prompt${bad.length > 1 ? "s are" : " is"} not in ${file.path}: ${bad.slice(0, 5).join("; ")}${bad.length > 5 ? "; ..." : ""}. ` +
        `Prompts must be the file's templates with the class noun filled in (e.g. subject "${ex[0]}": "${[...ex[1].keys()][0]}")` +
        `${uniqueToken ? ` and the unique token "${uniqueToken}"` : "; pass --unique-token <t> if the prompts carry DreamBench's {0} token"}.`,
    );
  }
}

function refPhotoFor(setting: Setting, spec: string, subject: string): number | string {
  if (setting === "all-refs") return 0;
  if (spec === "kosmosg") {
    const stem = KOSMOSG_REF_PHOTO[subject];
    if (stem === undefined) throw new UsageError(`--ref-photo kosmosg: subject "${subject}" is not a DreamBench subject (the authors' single-reference choice lists only those)`);
    return stem;
  }
  return /^\d+$/.test(spec) ? Number(spec) : spec;
}

interface Embedders {
  image: ImageEmbedder[];
  text?: TextEmbedder;
}

async function loadEmbedders(o: EvalOptions): Promise<Embedders> {
  const eo: EmbedderOptions = { device: o.device, threads: o.threads, batch: o.batch, fusedOps: o.fusedOps };
  const pre = o.embedders ?? {};
  const image: ImageEmbedder[] = [];
  let text: TextEmbedder | undefined;
  if (pre.dino) image.push(pre.dino);
  else if (o.dino) image.push(await dinoEmbedder(o.dino, eo));
  if (pre.clipI || pre.clipT) {
    if (pre.clipI) image.push(pre.clipI);
    text = pre.clipT;
  } else if (o.clip) {
    const c = await clipEmbedders(o.clip, eo);
    image.push(c.image);
    text = c.text;
  }
  if (pre.feature) image.push(pre.feature);
  else if (o.encoderFeature !== "none") image.push(await featureEmbedder(o.encoderFeature, eo));
  if (image.length === 0) throw new UsageError("nothing to compute: give --dino <folder>, --clip <folder>, or leave --encoder-feature at default");
  return { image, text };
}

/** Embeddings of image files through the cache; decode failures are returned, not thrown. */
async function embedFiles(files: string[], embedders: ImageEmbedder[], cache: EmbeddingCache): Promise<{ vectors: (Float32Array[] | undefined)[]; errors: Map<number, string> }> {
  const errors = new Map<number, string>();
  const vectors: (Float32Array | undefined)[][] = files.map(() => embedders.map(() => undefined));
  const hashes: (string | undefined)[] = [];
  const decoded: (RgbImage | undefined)[] = [];
  for (let i = 0; i < files.length; i++) {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(files[i]!);
    } catch (e) {
      errors.set(i, `cannot read ${files[i]}: ${(e as Error).message}`);
      hashes.push(undefined);
      decoded.push(undefined);
      continue;
    }
    const h = contentHash(bytes);
    hashes.push(h);
    embedders.forEach((e, k) => (vectors[i]![k] = cache.get(e.key, h)));
    decoded.push(undefined);
    if (vectors[i]!.some((v) => !v)) {
      try {
        decoded[i] = await loadImage(files[i]!);
      } catch (e) {
        errors.set(i, (e as Error).message);
      }
    }
  }
  for (let k = 0; k < embedders.length; k++) {
    const need = files.map((_, i) => i).filter((i) => !errors.has(i) && !vectors[i]![k]);
    if (need.length === 0) continue;
    const vs = await embedders[k]!.embed(need.map((i) => decoded[i]!));
    for (let j = 0; j < need.length; j++) {
      const i = need[j]!;
      vectors[i]![k] = vs[j]!;
      await cache.put(embedders[k]!.key, hashes[i]!, vs[j]!);
    }
  }
  return { vectors: vectors.map((v, i) => (errors.has(i) ? undefined : (v as Float32Array[]))), errors };
}

export interface EvalResult {
  scored: number;
  skipped: number;
  manifest: string;
  outDir: string;
  /** Written when the evaluation is complete (not for a shard). */
  summary?: Summary & { meta: Record<string, unknown> };
}

export async function run(input: EvalInput): Promise<EvalResult> {
  const o = resolveOptions<EvalOptions>(OPTIONS, DEFAULTS, input);
  if (!!o.images === !!o.run) throw new UsageError("give exactly one of --images <folder> or --run <dir>");
  if (!o.run) return withPrecision(o.precision ?? "fp32", o.device, () => evaluate(o));
  const { embedders: _e, ...recorded } = o;
  return withPrecision(o.precision ?? "fp32", o.device, () => recordStep(existingRunDir(o.run!), "eval", recorded, () => evaluate(o)));
}

async function evaluate(o: EvalOptions): Promise<EvalResult> {
  if (!o.real && !o.run) throw new UsageError("--real <folder> is needed with --images (one sub-folder of real photos per subject)");
  const outDir = outDirOf(o);
  const items = o.images ? itemsFromImages(o.images, outDir) : await itemsFromRun(o.run!);
  if (items.length === 0) throw new UserError(`nothing to evaluate: ${o.run ? runPaths(o.run).generations : o.images} has no generated images`);
  const subjects = [...new Set(items.map((i) => i.subject))].sort();
  const real = o.real ? realFromFolder(o.real, subjects) : await realFromRun(o.run!, subjects);
  const promptFile = o.prompts ? readPromptFile(o.prompts) : undefined;
  if (promptFile) matchPrompts(items, promptFile, o.uniqueToken);
  for (const s of subjects) refsForSetting(real.get(s)!.files, o.setting, refPhotoFor(o.setting, o.refPhoto, s), real.get(s)!.names, s); // bad --ref-photo fails before any work
  for (const it of items) if (!existsSync(it.abs)) throw new UserError(`generated image ${it.abs} (${it.id}) does not exist`);

  const emb = await loadEmbedders(o);
  const metricsOf = (e: ImageEmbedder) => e.metric;
  const metrics: MetricName[] = [...emb.image.map(metricsOf), ...(emb.text ? (["clipT"] as const) : [])];
  if (emb.text && !emb.image.some((e) => e.metric === "clipI")) throw new UsageError("CLIP-T needs the CLIP image embedder too");
  const config: EvalConfig = {
    setting: o.setting, refPhoto: o.setting === "single-ref" ? o.refPhoto : "-", metrics,
    encoders: Object.fromEntries([...emb.image.map((e) => [e.metric, e.key]), ...(emb.text ? [["clipT", emb.text.key]] : [])]),
    real: o.real ? resolve(o.real) : "run references", prompts: o.prompts ? resolve(o.prompts) : undefined, uniqueToken: o.uniqueToken,
  };

  const scoresPath = join(outDir, "scores.jsonl");
  const manifest = o.shard ? shardPath(scoresPath, o.shard) : scoresPath;
  const shardTag = o.shard ? ` --shard ${o.shard.index}/${o.shard.count}` : "";
  return withLockFile(`${manifest}.lock`, `eval${shardTag} into ${outDir}`, () => scoreItems(o, { outDir, manifest, items, real, config, emb }));
}

interface EvalPlan { outDir: string; manifest: string; items: Item[]; real: Map<string, RealPhotos>; config: EvalConfig; emb: Embedders }

async function scoreItems(o: EvalOptions, { outDir, manifest: finalManifest, items, real, config, emb }: EvalPlan): Promise<EvalResult> {
  // A forced run scores into staging and swaps its manifest in at the end; a failure keeps the old scores.
  const stage = new Staging(outDir, basename(finalManifest, ".jsonl"));
  const rel = (abs: string) => portablePath(outDir, abs);
  if (o.force) stage.begin();
  else stage.recover();
  const manifest = o.force ? stage.path(rel(finalManifest)) : finalManifest;
  const done = new Set<string>();
  if (existsSync(manifest)) {
    const prev = existsSync(configPath(manifest)) ? (JSON.parse(readFileSync(configPath(manifest), "utf8")) as EvalConfig) : undefined;
    if (prev && JSON.stringify(prev) !== JSON.stringify(config)) {
      throw new UserError(`${manifest} holds scores computed with other settings (${describeDiff(prev, config)}); pass --force to recompute them (cached embeddings are reused) or choose another --out`);
    }
    await repairJsonlTail(manifest); // a crash mid-append leaves a partial last line
    for (const r of await readJsonlAll(manifest, EvalScoreRow)) done.add(r.id);
  }
  await writeJsonAtomic(configPath(manifest), config);

  const mine = items.filter((it) => inShard(it.id, o.shard));
  const todo = mine.filter((it) => !done.has(it.id));
  const cache = new EmbeddingCache(join(outDir, "cache"));

  // Real photos of the subjects this shard scores: embedded (or read from the cache) first.
  const realEmb = new Map<string, Float32Array[][]>(); // subject -> per embedder -> chosen refs
  const needSubjects = [...new Set(todo.map((t) => t.subject))];
  for (const s of needSubjects) {
    const rp = real.get(s)!;
    const files = refsForSetting(rp.files, o.setting, refPhotoFor(o.setting, o.refPhoto, s), rp.names, s);
    const { vectors, errors } = await embedFiles(files, emb.image, cache);
    if (errors.size) throw new UserError(`real photo of subject "${s}" cannot be used: ${[...errors.values()].join("; ")}. Fix or remove it and rerun.`);
    realEmb.set(s, emb.image.map((_, k) => vectors.map((v) => v![k]!)));
  }
  const textEmb = new Map<string, Float32Array>();
  if (emb.text) {
    const texts = [...new Set(todo.map((t) => t.prompt))];
    const vs = await embedTexts(emb.text, texts, cache);
    texts.forEach((t, i) => textEmb.set(t, vs[i]!));
  }

  const bar = progress(todo.length, "eval");
  const failures: string[] = [];
  for (let i = 0; i < todo.length; i += o.batch) {
    const chunk = todo.slice(i, i + o.batch);
    const { vectors, errors } = await embedFiles(chunk.map((c) => c.abs), emb.image, cache);
    for (let k = 0; k < chunk.length; k++) {
      const it = chunk[k]!;
      if (errors.has(k)) {
        failures.push(errors.get(k)!);
        bar.tick();
        continue;
      }
      const values: MetricValues = {};
      emb.image.forEach((e, m) => (values[e.metric] = imageScore(vectors[k]![m]!, realEmb.get(it.subject)![m]!)));
      if (emb.text) {
        const ci = emb.image.findIndex((e) => e.metric === "clipI");
        values.clipT = cosine(vectors[k]![ci]!, textEmb.get(it.prompt)!);
      }
      await appendJsonl(manifest, { id: it.id, subject: it.subject, prompt: it.prompt, promptKey: it.promptKey, image: posixRel(outDir, it.abs), ...values }, EvalScoreRow);
      bar.tick();
    }
  }
  bar.done();
  if (o.force) await stage.commit([], [rel(finalManifest), rel(configPath(finalManifest))]);
  if (failures.length) {
    throw new UserError(
      `${failures.length} generated image${failures.length > 1 ? "s" : ""} could not be read: ${failures.slice(0, 5).join("; ")}${failures.length > 5 ? "; ..." : ""}. ` +
        `The ${todo.length - failures.length} others are scored in ${finalManifest}; fix or remove the files and rerun (finished images are skipped).`,
    );
  }
  const result: EvalResult = { scored: todo.length, skipped: mine.length - todo.length, manifest: finalManifest, outDir };
  if (!o.shard) result.summary = await writeSummary(outDir, items, real, config, o, emb);
  return result;
}

function describeDiff(a: EvalConfig, b: EvalConfig): string {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])] as (keyof EvalConfig)[];
  return keys.filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k])).map((k) => `${k}: ${JSON.stringify(a[k])} then, ${JSON.stringify(b[k])} now`).join("; ");
}

/** summary.json + all_score.json from scores.jsonl (rows of images no longer present are left out). */
async function writeSummary(outDir: string, items: Item[], real: Map<string, RealPhotos>, config: EvalConfig, o: EvalOptions, emb: Embedders) {
  const rows = await readJsonlAll(join(outDir, "scores.jsonl"), EvalScoreRow);
  const ids = new Set(items.map((i) => i.id));
  const current = rows.filter((r) => ids.has(r.id));
  const s = summarize(current);
  const meta = {
    protocol: o.prompts ? "dreambench" : "custom",
    setting: config.setting,
    refPhoto: config.setting === "single-ref" ? o.refPhoto : undefined,
    images: current.length,
    subjects: Object.keys(s.subjects).length,
    encoders: Object.fromEntries([...emb.image.map((e) => [e.metric, e.label]), ...(emb.text ? [["clipT", emb.text.label]] : [])]),
    source: o.run ? { run: posixRel(outDir, resolve(o.run)) } : { images: posixRel(outDir, resolve(o.images!)) },
    prompts: o.prompts ? posixRel(outDir, resolve(o.prompts)) : undefined,
    realPhotos: Object.fromEntries([...real.entries()].filter(([k]) => k in s.subjects).map(([k, v]) => [k, v.files.map((f) => posixRel(outDir, f))])),
  };
  const summary = { ...s, meta };
  await writeJsonAtomic(join(outDir, "summary.json"), summary);
  await writeFileAtomic(join(outDir, "all_score.json"), authorsScoreJson(s.metrics));
  return summary;
}

/** `--merge n`: joins the shard manifests into scores.jsonl and writes the summary. */
export async function merge(input: EvalInput, count: number): Promise<EvalResult> {
  const o = resolveOptions<EvalOptions>(OPTIONS, DEFAULTS, input);
  if (!Number.isSafeInteger(count) || count < 1) throw new UsageError(`--merge ${count}: expected the shard count n (a positive integer) used with --shard i/n`);
  const outDir = outDirOf(o);
  const scoresPath = join(outDir, "scores.jsonl");
  const rows: EvalScoreRow[] = [];
  const perShard: EvalScoreRow[][] = [];
  let config: EvalConfig | undefined;
  for (let index = 0; index < count; index++) {
    const f = shardPath(scoresPath, { index, count });
    if (!existsSync(f)) throw new UserError(`--merge: shard file ${f} is missing (did shard ${index}/${count} finish?)`);
    if (!existsSync(configPath(f))) throw new UserError(`--merge: ${configPath(f)} is missing, so the settings of shard ${index}/${count} are unknown: rerun that shard`);
    const c = JSON.parse(readFileSync(configPath(f), "utf8")) as EvalConfig;
    if (config && JSON.stringify(c) !== JSON.stringify(config)) throw new UserError(`--merge: shard ${index}/${count} was evaluated with other settings (${describeDiff(config, c)})`);
    config ??= c;
    await repairJsonlTail(f);
    perShard.push(await readJsonlAll(f, EvalScoreRow));
  }
  // Complete against the sharded input: every generated image scored once.
  const sharded = o.images ? itemsFromImages(o.images, outDir) : await itemsFromRun(o.run!);
  checkShards(scoresPath, count, sharded.map((i) => i.id), perShard);
  for (const r of perShard) rows.push(...r);
  await writeJsonl(scoresPath, rows, EvalScoreRow);
  if (config) await writeJsonAtomic(configPath(scoresPath), config);
  // The summary needs the item list and real photos: rerun without --shard, which only summarizes.
  const res = await run({ ...o, shard: undefined, force: false });
  return { ...res, scored: rows.length };
}

const HELP = `eval: DINO / CLIP-I / CLIP-T / feature scores of generated images against real photos (DreamBench style)

usage: bun scripts/eval.ts (--images <folder> --real <folder> | --run <dir> [--real <folder>]) [options]

  --images <folder>        generated images as <subject>/<prompt>.png|jpg (the file stem is the prompt)
  --run <dir>              run directory: generations.jsonl (prompts from its rows)
  --real <folder>          one sub-folder of real photos per subject (e.g. ../shared/data/dreambench);
                           default with --run: the run's reference images
  --bench <folder>         a DreamBench folder: shorthand for --real <folder> --prompts <folder>/prompts_and_classes.txt
  --prompts <file>         DreamBench prompts_and_classes.txt: every prompt must be one of its prompts
                           with the class noun filled in ("a backpack in the jungle"); per-prompt
                           means are then keyed by template ("a {} in the jungle")
  --unique-token <t>       DreamBench's {0} token, if the generated prompts carry one (default: none)
  --dino <folder>          DINO ViT-S/16 (facebook/dino-vits16: config.json + model.safetensors, or onnx/model.onnx)
  --clip <folder>          CLIP ViT-B/32 (openai/clip-vit-base-patch32: config.json + model.safetensors + tokenizer)
  --encoder-feature <e>    feature score encoder: "default" (the shipped SSL-finetuned MobileNetV2, checkpoints/patch-encoder),
                           "mobilenet_v2" (the embedded MobileNetV2 as pretrained), an encoder folder,
                           or "none" (default: ${DEFAULTS.encoderFeature})
  --setting <s>            all-refs | single-ref (default: ${DEFAULTS.setting})
  --ref-photo <p>          single-ref photo: index into the subject's photos sorted by name, a file
                           stem, or "kosmosg" (the PatchDPO authors' per-subject choice) (default: ${DEFAULTS.refPhoto})
  --out <dir>              output folder (default: <run>/eval, or <images>/eval)
  --batch <n>              images per encoder batch (default: ${DEFAULTS.batch})
  --shard <i/n>            score only shard i of n (writes scores.shard-i-of-n.jsonl, no summary)
  --merge <n>              join n shard manifests into scores.jsonl, then write the summary
  --device <d>             cpu | cuda | webgpu (default: ${DEFAULTS.device})
${PRECISION_HELP.replace(/^( +--\S+ \S+)/, "$1 ").replace(/^ {26}/gm, "                           ")}
  --threads <n>            intra-op threads, 0 = one per core (default: ${DEFAULTS.threads})
${OPS_HELP.replace(/^( +--\S+)/gm, "$1 ")}
  --force                  recompute images already in scores.jsonl (embeddings stay cached)
  -h, --help               this help

writes <out>/scores.jsonl, summary.json, all_score.json (the authors' format) and cache/;
render the report with: bun scripts/report.ts --eval <out>`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      images: { type: "string" }, run: { type: "string" }, real: { type: "string" }, prompts: { type: "string" }, bench: { type: "string" },
      "unique-token": { type: "string" }, dino: { type: "string" }, clip: { type: "string" },
      "encoder-feature": { type: "string", default: DEFAULTS.encoderFeature }, setting: { type: "string", default: DEFAULTS.setting },
      "ref-photo": { type: "string", default: DEFAULTS.refPhoto }, out: { type: "string" },
      ...PRECISION_FLAG,
      batch: { type: "string", default: String(DEFAULTS.batch) }, shard: { type: "string" }, merge: { type: "string" },
      device: { type: "string", default: DEFAULTS.device }, threads: { type: "string", default: String(DEFAULTS.threads) }, ...OPS_FLAGS,
      force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    // --bench <folder>: a DreamBench folder = its subject folders as --real + its prompts_and_classes.txt.
    if (v.bench && !existsSync(join(v.bench, "prompts_and_classes.txt"))) throw new UsageError(`--bench ${v.bench}: expected a DreamBench folder (one folder of photos per subject + prompts_and_classes.txt)`);
    const opts: EvalInput = {
      images: v.images, run: v.run, real: v.real ?? v.bench, prompts: v.prompts ?? (v.bench ? join(v.bench, "prompts_and_classes.txt") : undefined), uniqueToken: v["unique-token"], dino: v.dino, clip: v.clip,
      precision: v.precision as Precision,
      encoderFeature: v["encoder-feature"], out: v.out, force: v.force, shard: v.shard ? parseShard(v.shard) : undefined,
      batch: Number(v.batch), threads: Number(v.threads), setting: v.setting as Setting, device: v.device as Device, refPhoto: v["ref-photo"],
      fusedOps: fusedOpsFlag(v, HELP),
    };
    const t0 = performance.now();
    if (v.merge) {
      if (!/^\s*\d+\s*$/.test(v.merge)) throw new UsageError(`--merge ${JSON.stringify(v.merge)}: expected the shard count n (a positive integer) used with --shard i/n`);
      const res = await merge(opts, Number(v.merge));
      return console.log(`merged ${res.scored} rows into ${join(res.outDir, "scores.jsonl")}; summary in ${join(res.outDir, "summary.json")}`);
    }
    const res = await run(opts);
    const head = res.summary ? Object.entries(res.summary.metrics).map(([k, x]) => `${k} ${(x as number).toFixed(4)}`).join(", ") : `shard done; join with --merge ${opts.shard?.count}`;
    console.log(`evaluated ${res.scored} images (${res.skipped} already done) in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${res.manifest}\n${head}`);
  });
}
