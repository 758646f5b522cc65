// PatchDPO's data construction (DESIGN.md section 1, item 1): clean-background references from
// the reference prompts, then personalized generations of each reference. As the authors build
// pairs (their data/subject_dataset.py: `<prompt>_entity_0.png` with `<prompt>_gen_k.png`), a
// generation is drawn with its reference's own prompt, so it shows the subject again on a clean
// background (`--pair-prompt reference`, the default); `--pair-prompt scene` draws the subject in
// its scene prompts instead (our option; TinyBench compares the two).
//
//   bun scripts/generate-images.ts --run R --mode reference    --model checkpoints/sdxl-base
//   bun scripts/generate-images.ts --run R --mode personalized --model checkpoints/sdxl-base \
//       --ip-adapter checkpoints/ip-adapter-plus_sdxl_vit-h.safetensors --image-encoder checkpoints/clip-vit-h-14 \
//       --per-reference 4 --ip-scale 0.6
//   bun scripts/generate-images.ts --check-models --model ... [--ip-adapter ... --image-encoder ...]
//
// `--model tinyworld` is the tiny world's procedural renderer (prompts from `synthesize-prompts
// --world tiny`): in reference mode it draws the subject on white; in personalized mode it draws
// the truth of the prompt (on white, or in its flat scene), with a known local defect in a share
// `--defect-rate` of the images (the ground truth patch scoring should find), recorded in the
// row's settings with a truth mask beside the image.
//
// Writes references/<id>.png + references.jsonl, or generations/<ref>-<k>.png + generations.jsonl,
// each row with every setting needed to reproduce its image. Resumable (rows already written are
// skipped; an image is written before its row), --shard i/n + --merge n, --force.
//
// Reruns: the settings that decide the images are recorded beside the manifest
// (references.settings.json / generations.settings.json); a resume with other settings is
// refused. --force checks everything first (flags, manifests, model folders, size, finite
// weights), writes the new images aside and swaps them in only when every one is done.

import { existsSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { type } from "arktype";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { OPS_FLAGS, OPS_HELP, fusedOpsFlag, parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { type RgbImage, loadImage, writePng } from "../lib/io/images.ts";
import { withLockFile } from "../lib/io/lock.ts";
import { appendJsonl, byUniqueId, readJsonlAll, repairJsonlTail, writeJsonl } from "../lib/io/manifest.ts";
import { progress } from "../lib/io/progress.ts";
import { type Shard, existingRunDir, inShard, parseShard, portablePath, relPaths, runPaths, shardPath } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { GenerationRow, PromptRow, ReferenceRow } from "../lib/io/schemas.ts";
import { type Settings, checkResumeSettings, readSettings, settingsDiff, describeDiff, settingsPath, writeSettings } from "../lib/io/settings.ts";
import { Staging } from "../lib/io/staging.ts";
import { SAMPLERS, type SamplerName, imageSeed } from "../lib/diffusion/index.ts";
import { MODEL_LAYOUT_HELP, checkImageSize, checkModels, loadDiffusionModel, loadIpAdapter, nativeSize } from "../lib/diffusion/model.ts";
import { Pipeline } from "../lib/diffusion/pipeline.ts";
import { PRECISIONS, PRECISION_FLAG, PRECISION_HELP, type Precision, withPrecision } from "../lib/graph/precision.ts";
import { Rng } from "../lib/rng.ts";
import { catalogueEntry, flatSceneForPrompt } from "../lib/tinyworld/catalogue.ts";
import { renderCorrupted, renderReference } from "../lib/tinyworld/index.ts";

export type Mode = "reference" | "personalized";
/** The prompt of a personalized generation: its reference's own (the authors' pairs) or its scene prompts. */
export const PAIR_PROMPTS = ["reference", "scene"] as const;
export type PairPrompt = (typeof PAIR_PROMPTS)[number];

export interface GenerateOptions {
  run: string;
  mode: Mode;
  /** A diffusers model folder, or "tinyworld" (the procedural renderer). */
  model: string;
  ipAdapter?: string;
  /** CLIP vision folder, or "mobilenet_v2" (tiny world). */
  imageEncoder?: string;
  ipScale: number;
  perReference: number;
  pairPrompt: PairPrompt;
  sampler: SamplerName;
  steps: number;
  guidance: number;
  /** Image size in pixels; default: the model's own (UNet sample_size x VAE factor), RENDER_SIZE for the renderer. */
  width?: number;
  height?: number;
  negativePrompt: string;
  seed: number;
  batch: number;
  /** tinyworld personalized mode: share of images with a planted local defect. */
  defectRate: number;
  shard?: Shard;
  /** Compute dtype (lib/graph/precision.ts); like the device, not a setting that decides the images. */
  precision: Precision;
  device: Device;
  threads: number;
  /** Attention as the fused contrib op (default) or in standard ops (lib/graph/fuse.ts). */
  fusedOps: boolean;
  force: boolean;
}

/** What run() needs; everything else takes its default. */
export type GenerateInput = Pick<GenerateOptions, "run" | "mode" | "model"> & Partial<GenerateOptions>;

export const DEFAULTS = {
  precision: "fp32",
  ipScale: 0.6, perReference: 1, pairPrompt: "reference", sampler: "ddim", steps: 30, guidance: 7.5, negativePrompt: "", seed: 0,
  batch: 1, defectRate: 0.5, device: "cpu", threads: 0, fusedOps: true, force: false,
} as const satisfies Partial<GenerateOptions>;

/** The renderer's default image size (a model folder defaults to its own size). */
export const RENDER_SIZE = 512;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  precision: type.enumerated(...PRECISIONS),
  run: "string > 0", mode: "'reference' | 'personalized'", model: "string > 0", "ipAdapter?": "string > 0", "imageEncoder?": "string > 0",
  ipScale: "number", perReference: "number.integer > 0", pairPrompt: type.enumerated(...PAIR_PROMPTS), sampler: type.enumerated(...SAMPLERS),
  steps: "number.integer > 0", guidance: "number >= 0", "width?": "number.integer > 0", "height?": "number.integer > 0", negativePrompt: "string",
  seed: "number.integer >= 0", batch: "number.integer > 0", defectRate: "0 <= number <= 1",
  "shard?": { index: "number.integer >= 0", count: "number.integer > 0" }, device: type.enumerated(...DEVICES), threads: "number.integer >= 0", fusedOps: "boolean", force: "boolean",
});

interface Job { id: string; prompt: string; seed: number; subjectId: string; referenceId?: string; k?: number; referenceImage?: string; promptRow: PromptRow }

function tinySubject(row: PromptRow, file: string) {
  const e = catalogueEntry(row.subjectId);
  if (!e) throw new UserError(`${file}: subject "${row.subjectId}" is not in the tiny world's catalogue (--model tinyworld draws only subjects of synthesize-prompts --world tiny)`);
  return e.subject;
}

/** Every image of the mode, from the run's manifests (all shards): the input --merge checks against. */
async function jobs(run: string, o: Pick<GenerateOptions, "mode" | "perReference" | "pairPrompt" | "seed">): Promise<Job[]> {
  const paths = runPaths(run);
  if (!existsSync(paths.prompts)) throw new UserError(`${paths.prompts} is missing: run synthesize-prompts first`);
  const prompts = await readJsonlAll(paths.prompts, PromptRow);
  const bySubject = byUniqueId(prompts, paths.prompts, (p) => p.subjectId);
  if (o.mode === "reference") {
    return prompts.map((p) => ({ id: p.subjectId, subjectId: p.subjectId, prompt: p.referencePrompt, seed: imageSeed(o.seed, p.subjectId), promptRow: p }));
  }
  if (!existsSync(paths.references)) throw new UserError(`${paths.references} is missing: run generate-images --mode reference first`);
  const refs = await readJsonlAll(paths.references, ReferenceRow);
  byUniqueId(refs, paths.references);
  const out: Job[] = [];
  for (const [i, r] of refs.entries()) {
    const p = bySubject.get(r.subjectId);
    if (!p) throw new UserError(`${paths.references}:${i + 1}: subject "${r.subjectId}" is not in ${paths.prompts} (the manifests do not match)`);
    if (o.pairPrompt === "scene" && !p.scenePrompts.length) throw new UserError(`${paths.prompts}: subject "${p.subjectId}" has no scene prompts (--pair-prompt scene needs them)`);
    for (let k = 0; k < o.perReference; k++) {
      const id = `${r.id}-${k}`;
      const prompt = o.pairPrompt === "scene" ? p.scenePrompts[k % p.scenePrompts.length]! : p.referencePrompt;
      out.push({ id, subjectId: r.subjectId, referenceId: r.id, k, prompt, seed: imageSeed(o.seed, id), referenceImage: r.image, promptRow: p });
    }
  }
  return out;
}

const stepName = (mode: Mode) => `generate-images (${mode})`;
const manifestOf = (run: string, mode: Mode) => (mode === "reference" ? runPaths(run).references : runPaths(run).generations);

export async function run(input: GenerateInput): Promise<{ generated: number; skipped: number; manifest: string }> {
  const o = resolveOptions<GenerateOptions>(OPTIONS, DEFAULTS, input);
  const root = existingRunDir(o.run);
  return withPrecision(o.precision, o.device, () => recordStep(root, stepName(o.mode), o, () => generate(o, root)));
}

async function generate(o: GenerateOptions, root: string): Promise<{ generated: number; skipped: number; manifest: string }> {
  const paths = runPaths(root);
  const tiny = o.model === "tinyworld";
  const personalized = o.mode === "personalized";
  if (personalized && !tiny) {
    if (!o.ipAdapter) throw new UsageError("--mode personalized with a diffusion model needs --ip-adapter <file>");
    if (!o.imageEncoder) throw new UsageError("--mode personalized with a diffusion model needs --image-encoder <folder|mobilenet_v2>");
  }
  // Everything is checked before anything is written: manifests, model folders, size, weights, images.
  const all = await jobs(root, o);
  if (!all.length) throw new UserError(`nothing to generate: ${o.mode === "reference" ? paths.prompts : paths.references} has no rows`);
  const model = tiny ? undefined : loadDiffusionModel(o.model);
  const width = o.width ?? (model && nativeSize(model)) ?? RENDER_SIZE;
  const height = o.height ?? (model && nativeSize(model)) ?? RENDER_SIZE;
  if (model) checkImageSize(model, width, height, o.width === undefined && o.height !== undefined ? "--height" : "--size");
  const ip = model && personalized ? loadIpAdapter(o.ipAdapter!, o.imageEncoder!) : undefined;
  const mine = all.filter((j) => inShard(j.id, o.shard));
  for (const j of mine) if (j.referenceImage && !existsSync(paths.resolve(j.referenceImage))) throw new UserError(`${paths.references}: reference image ${paths.resolve(j.referenceImage)} of "${j.referenceId}" does not exist`);

  const manifest = o.shard ? shardPath(manifestOf(root, o.mode), o.shard) : manifestOf(root, o.mode);
  const settings = settingsOf(o, root, width, height);
  const shardTag = o.shard ? ` --shard ${o.shard.index}/${o.shard.count}` : "";
  return withLockFile(`${manifest}.lock`, `generate-images --mode ${o.mode}${shardTag} in ${root}`, async () => {
    // A forced run writes aside (staging) and swaps its results in at the end; a failure keeps the old ones.
    const stage = new Staging(root, basename(manifest, ".jsonl"));
    const rel = (abs: string) => portablePath(root, abs);
    const out = (r: string) => (o.force ? stage.path(r) : join(root, r));
    if (o.force) stage.begin();
    else {
      stage.recover();
      checkResumeSettings(manifest, settings, "generate-images");
    }
    const target = out(rel(manifest));
    const record = { step: stepName(o.mode), settings, expected: mine.map((j) => j.id), ...(o.shard ? { shard: `${o.shard.index}/${o.shard.count}` } : {}) };
    await writeSettings(manifest, record, out(rel(settingsPath(manifest))));
    const done = new Set<string>();
    if (existsSync(target)) {
      await repairJsonlTail(target);
      const schema = o.mode === "reference" ? ReferenceRow : GenerationRow;
      for (const r of await readJsonlAll(target, schema as never)) done.add((r as { id: string }).id);
    }
    const todo = mine.filter((j) => !done.has(j.id));
    const rowSettings = {
      model: tiny ? "tinyworld-renderer" : resolve(o.model), width, height,
      ...(tiny ? {} : { sampler: o.sampler, steps: o.steps, guidanceScale: o.guidance, negativePrompt: o.negativePrompt }),
      ...(personalized ? { pairPrompt: o.pairPrompt } : {}),
      ...(personalized && !tiny ? { ipAdapter: resolve(o.ipAdapter!), imageEncoder: o.imageEncoder!, ipAdapterScale: o.ipScale } : {}),
      device: o.device,
    };
    const bar = progress(todo.length, `generate-images (${o.mode})`);
    const write = async (j: Job, img: RgbImage, extra: Record<string, unknown> = {}) => {
      const r = o.mode === "reference" ? relPaths.referenceImage(j.id) : relPaths.generationImage(j.referenceId!, j.k!);
      await writePng(out(r), img);
      const row = o.mode === "reference"
        ? { id: j.id, subjectId: j.subjectId, prompt: j.prompt, image: r, seed: j.seed, settings: { ...rowSettings, ...extra } }
        : { id: j.id, referenceId: j.referenceId!, subjectId: j.subjectId, prompt: j.prompt, image: r, seed: j.seed, k: j.k!, settings: { ...rowSettings, ...extra } };
      await appendJsonl(target, row, (o.mode === "reference" ? ReferenceRow : GenerationRow) as never);
      bar.tick();
    };

    if (tiny) {
      for (const j of todo) {
        const subject = tinySubject(j.promptRow, paths.prompts);
        if (o.mode === "reference") await write(j, renderReference(subject, width).image);
        else {
          const scene = flatSceneForPrompt(j.prompt); // null: the reference prompt, a clean white background
          const rng = new Rng(j.seed);
          const defect = rng.uniform() < o.defectRate;
          const r = renderCorrupted(subject, scene, width, rng);
          // The ground truth beside the image: red = the planted defect's pixels, green = the subject's.
          const truthRel = relPaths.generationImage(j.referenceId!, j.k!).replace(/\.png$/, ".truth.png");
          const truth = new Uint8Array(width * height * 3);
          for (let i = 0; i < width * height; i++) {
            truth[i * 3] = defect && r.corruptionMask[i] ? 255 : 0;
            truth[i * 3 + 1] = r.mask[i] ? 255 : 0;
          }
          await writePng(out(truthRel), { width, height, data: truth });
          await write(j, defect ? r.image : r.clean.image, { scene: scene?.name ?? "white", defect: defect ? r.corruption.kind : "none", truth: truthRel });
        }
      }
    } else {
      const pipe = new Pipeline(model!, { height, width, batch: o.batch, device: o.device, threads: o.threads, ip, ipScale: o.ipScale, fusedOps: o.fusedOps });
      for (let i = 0; i < todo.length; i += o.batch) {
        const chunk = todo.slice(i, i + o.batch);
        const items = [];
        for (const j of chunk) {
          items.push({ id: j.id, prompt: j.prompt, negativePrompt: o.negativePrompt, seed: j.seed, image: j.referenceImage ? await loadImage(paths.resolve(j.referenceImage)) : undefined });
        }
        await pipe.generate(items, { steps: o.steps, guidance: o.guidance, sampler: o.sampler }, (k, img) => write(chunk[k]!, img));
      }
    }
    bar.done();
    // A shard with no items still leaves its (empty) manifest, so --merge sees that it finished.
    if (!existsSync(target)) await writeJsonl(target, []);
    if (o.force) await stage.commit([], [rel(manifest), rel(settingsPath(manifest))]);
    return { generated: todo.length, skipped: mine.length - todo.length, manifest };
  });
}

/** The settings that decide a manifest's images (not batch, device or threads). */
function settingsOf(o: GenerateOptions, root: string, width: number, height: number): Settings {
  const tiny = o.model === "tinyworld";
  const personalized = o.mode === "personalized";
  return {
    mode: o.mode, model: tiny ? "tinyworld" : portablePath(root, o.model), seed: o.seed, width, height,
    ...(tiny ? {} : { sampler: o.sampler, steps: o.steps, guidance: o.guidance, negativePrompt: o.negativePrompt }),
    ...(personalized ? { perReference: o.perReference, pairPrompt: o.pairPrompt } : {}),
    ...(personalized && tiny ? { defectRate: o.defectRate } : {}),
    ...(personalized && !tiny ? { ipAdapter: portablePath(root, o.ipAdapter!), imageEncoder: o.imageEncoder === "mobilenet_v2" ? o.imageEncoder : portablePath(root, o.imageEncoder!), ipScale: o.ipScale } : {}),
  };
}

/**
 * `--merge n`: joins the shard manifests into the mode's manifest, after checking them against the
 * sharded input: every shard finished with the same settings, every image of the input present
 * once. Missing, duplicated or foreign ids are named and nothing is written.
 */
export async function merge(runDir: string, mode: Mode, count: number): Promise<number> {
  if (!Number.isSafeInteger(count) || count < 1) throw new UsageError(`--merge needs the shard count n (a positive integer) used with --shard i/n, got ${count}`);
  const root = existingRunDir(runDir);
  const base = manifestOf(root, mode);
  return recordStep(root, `${stepName(mode)} --merge ${count}`, { run: runDir, mode, merge: count }, () =>
    withLockFile(`${base}.lock`, `generate-images --mode ${mode} --merge in ${root}`, async () => {
      const shards = Array.from({ length: count }, (_, index) => shardPath(base, { index, count }));
      const missingFiles = shards.filter((f) => !existsSync(f));
      if (missingFiles.length) throw new UserError(`--merge ${count}: shard file${missingFiles.length > 1 ? "s" : ""} ${missingFiles.join(", ")} missing (did every shard --shard i/${count} run?)`);
      const recorded = shards.map((f, index) => {
        const s = readSettings(f);
        if (!s) throw new UserError(`--merge: ${settingsPath(f)} is missing, so the ids shard ${index}/${count} must hold are unknown (made by an older version?): rerun that shard`);
        return s;
      });
      for (let i = 1; i < count; i++) {
        const diff = settingsDiff(recorded[0]!.settings, recorded[i]!.settings);
        if (diff.length) throw new UserError(`--merge: shard ${i}/${count} was made with other settings than shard 0/${count} (${describeDiff(diff)}); redo one of them with --force`);
      }
      const s = recorded[0]!.settings as Partial<GenerateOptions>;
      const input = await jobs(root, { mode, perReference: s.perReference ?? 1, pairPrompt: s.pairPrompt ?? "reference", seed: s.seed ?? 0 });
      const schema = (mode === "reference" ? ReferenceRow : GenerationRow) as never;
      const rows: { id: string }[] = [];
      const perShard: { id: string }[][] = [];
      for (const f of shards) {
        await repairJsonlTail(f);
        perShard.push(await readJsonlAll(f, schema));
      }
      perShard.forEach((r) => rows.push(...r));
      checkShards(base, count, input.map((j) => j.id), perShard);
      await writeJsonl(base, rows);
      await writeSettings(base, { step: stepName(mode), settings: recorded[0]!.settings, expected: input.map((j) => j.id) });
      return rows.length;
    }),
  );
}

/**
 * Shards against the ids of the sharded input: each row in the shard its id hashes to, no id
 * twice, none missing. Throws a UserError naming what is wrong (the first ids of each kind).
 */
export function checkShards(base: string, count: number, inputIds: string[], shards: { id: string }[][]): void {
  const list = (ids: string[]) => `${ids.slice(0, 8).map((i) => `"${i}"`).join(", ")}${ids.length > 8 ? `, ... (${ids.length} in all)` : ""}`;
  const expected = new Set(inputIds);
  const seen = new Map<string, number>();
  const problems: string[] = [];
  const duplicated: string[] = [];
  const foreign: string[] = [];
  const misplaced: string[] = [];
  shards.forEach((rows, index) => {
    for (const r of rows) {
      if (seen.has(r.id)) duplicated.push(`${r.id} (shard ${seen.get(r.id)} and ${index})`);
      seen.set(r.id, index);
      if (!expected.has(r.id)) foreign.push(r.id);
      else if (!inShard(r.id, { index, count })) misplaced.push(`${r.id} (in shard ${index})`);
    }
  });
  const missing = inputIds.filter((id) => !seen.has(id));
  if (missing.length) {
    const byShard = new Map<number, number>();
    for (const id of missing) for (let i = 0; i < count; i++) if (inShard(id, { index: i, count })) byShard.set(i, (byShard.get(i) ?? 0) + 1);
    problems.push(`${missing.length} of ${inputIds.length} rows are missing: ${list(missing)} (incomplete: ${[...byShard].map(([i, n]) => `shard ${i}/${count} lacks ${n}`).join(", ")}; rerun those shards, they resume)`);
  }
  if (duplicated.length) problems.push(`${duplicated.length} rows appear twice: ${list(duplicated)} (the same shard ran twice at once?); redo the shards concerned with --force`);
  if (foreign.length) problems.push(`${foreign.length} rows are not in the input: ${list(foreign)} (the input changed after the shards ran?); redo the shards with --force`);
  if (misplaced.length) problems.push(`${misplaced.length} rows are in the wrong shard: ${list(misplaced)}`);
  if (problems.length) throw new UserError(`--merge ${count}: not merging into ${base}: ${problems.join("; ")}`);
}

const HELP = `generate-images: reference images and personalized generations (PatchDPO data construction)

usage: bun scripts/generate-images.ts --run <dir> --mode reference|personalized --model <folder|tinyworld> [options]
       bun scripts/generate-images.ts --check-models --model <folder> [--ip-adapter <file> --image-encoder <folder>]

  --run <dir>             run directory (reads prompts.jsonl; personalized mode also references.jsonl)
  --mode <m>              reference | personalized
  --model <spec>          diffusers model folder, or "tinyworld" (the tiny world's renderer)
  --ip-adapter <file>     IP-Adapter .safetensors (release layout) for --mode personalized
  --image-encoder <spec>  CLIP vision folder, or mobilenet_v2 (tiny world)
  --ip-scale <s>          image prompt weight (default: ${DEFAULTS.ipScale})
  --per-reference <k>     generations per reference (default: ${DEFAULTS.perReference})
  --pair-prompt <p>       reference: each generation uses its reference's own prompt, the authors' pairs (clean
                          background); scene: cycle the subject's scene prompts (default: ${DEFAULTS.pairPrompt})
  --sampler <s>           ${SAMPLERS.join(" | ")} (default: ${DEFAULTS.sampler})
  --steps <n>             sampling steps (default: ${DEFAULTS.steps})
  --guidance <g>          classifier-free guidance scale (default: ${DEFAULTS.guidance})
  --size <px>             width and height (default: the model's own size, unet sample_size x VAE factor;
                          ${RENDER_SIZE} for tinyworld); or --width / --height. Sizes more than 2x off the model's are refused
  --negative-prompt <t>   (default: "")
  --seed <n>              base seed; each image's seed derives from it and the image id (default: ${DEFAULTS.seed})
  --batch <n>             images per denoiser call (default: ${DEFAULTS.batch})
  --defect-rate <p>       tinyworld personalized: share of images with a planted defect (default: ${DEFAULTS.defectRate})
  --shard <i/n>           this shard of the work (writes <manifest>.shard-i-of-n.jsonl; one process per shard)
  --merge <n>             join the n shard manifests, after checking that every image is there exactly once
  --device <d>            cpu | cuda | webgpu (default: ${DEFAULTS.device})
${PRECISION_HELP}
  --threads <n>           intra-op threads, 0 = one per core (default: ${DEFAULTS.threads})
${OPS_HELP}
  --force                 redo every image; the old ones stay until the new ones are all done
  --check-models          list missing and mismatched tensors of the model (and IP-Adapter) folders, then exit

A rerun resumes (finished images are skipped); with other settings than the manifest's it is refused.

${MODEL_LAYOUT_HELP}`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      run: { type: "string" }, mode: { type: "string" }, model: { type: "string" }, "ip-adapter": { type: "string" }, "image-encoder": { type: "string" },
      "ip-scale": { type: "string", default: String(DEFAULTS.ipScale) }, "per-reference": { type: "string", default: String(DEFAULTS.perReference) },
      "pair-prompt": { type: "string", default: DEFAULTS.pairPrompt }, sampler: { type: "string", default: DEFAULTS.sampler }, steps: { type: "string", default: String(DEFAULTS.steps) },
      guidance: { type: "string", default: String(DEFAULTS.guidance) }, size: { type: "string" }, width: { type: "string" }, height: { type: "string" },
      "negative-prompt": { type: "string", default: "" }, seed: { type: "string", default: "0" }, batch: { type: "string", default: "1" },
      ...PRECISION_FLAG,
      "defect-rate": { type: "string", default: String(DEFAULTS.defectRate) }, shard: { type: "string" }, merge: { type: "string" },
      device: { type: "string", default: DEFAULTS.device }, threads: { type: "string", default: "0" }, ...OPS_FLAGS,
      force: { type: "boolean", default: false }, "check-models": { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    if (v["check-models"]) {
      if (!v.model) throw new UsageError("--check-models needs --model <folder>");
      const model = loadDiffusionModel(v.model);
      const ip = v["ip-adapter"] ? loadIpAdapter(v["ip-adapter"], v["image-encoder"] ?? "mobilenet_v2") : undefined;
      let bad = 0;
      for (const r of checkModels(model, ip)) {
        const ok = !r.missing.length && !r.mismatched.length;
        bad += ok ? 0 : 1;
        console.log(`${ok ? "ok     " : "PROBLEM"} ${r.component}: ${r.expected} tensors expected, ${r.missing.length} missing, ${r.mismatched.length} mismatched, ${r.unexpected.length} unexpected`);
        for (const m of r.missing.slice(0, 20)) console.log(`    missing    ${m}`);
        for (const m of r.mismatched.slice(0, 20)) console.log(`    mismatched ${m}`);
        for (const m of r.unexpected.slice(0, 10)) console.log(`    unexpected ${m}`);
      }
      if (bad) throw new UserError(`${bad} component(s) do not match their definitions (see above)`);
      return;
    }
    const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));
    if (v.merge) {
      if (!v.run || !v.mode) throw new UsageError(`--merge needs --run <dir> and --mode reference|personalized\n\n${HELP}`);
      if (v.mode !== "reference" && v.mode !== "personalized") throw new UsageError(`--mode ${v.mode}: expected reference or personalized`);
      if (!/^\s*\d+\s*$/.test(v.merge)) throw new UsageError(`--merge ${JSON.stringify(v.merge)}: expected the shard count n (a positive integer) used with --shard i/n`);
      return console.log(`merged ${await merge(v.run, v.mode, Number(v.merge))} rows into ${manifestOf(v.run, v.mode)}`);
    }
    const t0 = performance.now();
    const r = await run({
      run: v.run!, mode: v.mode as Mode, model: v.model!, ipAdapter: v["ip-adapter"], imageEncoder: v["image-encoder"], ipScale: num(v["ip-scale"]),
      perReference: num(v["per-reference"]), pairPrompt: v["pair-prompt"] as PairPrompt, sampler: v.sampler as SamplerName, steps: num(v.steps),
      guidance: num(v.guidance), width: num(v.width ?? v.size), height: num(v.height ?? v.size), negativePrompt: v["negative-prompt"], seed: num(v.seed),
      batch: num(v.batch), defectRate: num(v["defect-rate"]), device: v.device as Device, threads: num(v.threads), fusedOps: fusedOpsFlag(v, HELP), force: v.force,
      shard: v.shard ? parseShard(v.shard) : undefined,
      precision: v.precision as Precision,
    });
    console.log(`generated ${r.generated} images (${r.skipped} already done) in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${r.manifest}`);
  });
}
