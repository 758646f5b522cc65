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

import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { type } from "arktype";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { parseFlags } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { type RgbImage, loadImage, writePng } from "../lib/io/images.ts";
import { appendJsonl, readJsonlAll, repairJsonlTail, writeJsonl } from "../lib/io/manifest.ts";
import { progress } from "../lib/io/progress.ts";
import { type Shard, inShard, parseShard, relPaths, runPaths, shardPath } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { GenerationRow, PromptRow, ReferenceRow } from "../lib/io/schemas.ts";
import { SAMPLERS, type SamplerName, imageSeed } from "../lib/diffusion/index.ts";
import { MODEL_LAYOUT_HELP, checkModels, loadDiffusionModel, loadIpAdapter } from "../lib/diffusion/model.ts";
import { Pipeline } from "../lib/diffusion/pipeline.ts";
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
  width: number;
  height: number;
  negativePrompt: string;
  seed: number;
  batch: number;
  /** tinyworld personalized mode: share of images with a planted local defect. */
  defectRate: number;
  shard?: Shard;
  device: Device;
  threads: number;
  force: boolean;
}

export const DEFAULTS = {
  ipScale: 0.6, perReference: 1, pairPrompt: "reference", sampler: "ddim", steps: 30, guidance: 7.5, width: 512, height: 512, negativePrompt: "", seed: 0,
  batch: 1, defectRate: 0.5, device: "cpu", threads: 0, force: false,
} as const satisfies Partial<GenerateOptions>;

interface Job { id: string; prompt: string; seed: number; subjectId: string; referenceId?: string; k?: number; referenceImage?: string; promptRow: PromptRow }

function tinySubject(row: PromptRow, file: string) {
  const e = catalogueEntry(row.subjectId);
  if (!e) throw new UserError(`${file}: subject "${row.subjectId}" is not in the tiny world's catalogue (--model tinyworld draws only subjects of synthesize-prompts --world tiny)`);
  return e.subject;
}

async function jobs(o: GenerateOptions): Promise<Job[]> {
  const paths = runPaths(o.run);
  if (!existsSync(paths.prompts)) throw new UserError(`${paths.prompts} is missing: run synthesize-prompts first`);
  const prompts = await readJsonlAll(paths.prompts, PromptRow);
  if (o.mode === "reference") {
    return prompts.map((p) => ({ id: p.subjectId, subjectId: p.subjectId, prompt: p.referencePrompt, seed: imageSeed(o.seed, p.subjectId), promptRow: p }));
  }
  if (!existsSync(paths.references)) throw new UserError(`${paths.references} is missing: run generate-images --mode reference first`);
  const bySubject = new Map(prompts.map((p) => [p.subjectId, p]));
  const out: Job[] = [];
  for (const [i, r] of (await readJsonlAll(paths.references, ReferenceRow)).entries()) {
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

export async function run(o: GenerateOptions): Promise<{ generated: number; skipped: number; manifest: string }> {
  const paths = runPaths(o.run);
  const tiny = o.model === "tinyworld";
  if (!PAIR_PROMPTS.includes(o.pairPrompt)) throw new UsageError(`--pair-prompt must be one of ${PAIR_PROMPTS.join(", ")}`);
  if (o.mode === "personalized" && !tiny) {
    requireFlag(o.ipAdapter, "--ip-adapter");
    requireFlag(o.imageEncoder, "--image-encoder");
  }
  const all = await jobs(o);
  if (!all.length) throw new UserError(`nothing to generate: ${paths.prompts} has no rows`);
  const mine = all.filter((j) => inShard(j.id, o.shard));
  const base = o.mode === "reference" ? paths.references : paths.generations;
  const manifest = o.shard ? shardPath(base, o.shard) : base;
  if (o.force && existsSync(manifest)) rmSync(manifest);
  const done = new Set<string>();
  if (existsSync(manifest)) {
    await repairJsonlTail(manifest);
    const schema = o.mode === "reference" ? ReferenceRow : GenerationRow;
    for (const r of await readJsonlAll(manifest, schema as never)) done.add((r as { id: string }).id);
  }
  const todo = mine.filter((j) => !done.has(j.id));
  const settings = {
    model: tiny ? "tinyworld-renderer" : resolve(o.model), width: o.width, height: o.height,
    ...(tiny ? {} : { sampler: o.sampler, steps: o.steps, guidanceScale: o.guidance, negativePrompt: o.negativePrompt }),
    ...(o.mode === "personalized" ? { pairPrompt: o.pairPrompt } : {}),
    ...(o.mode === "personalized" && !tiny ? { ipAdapter: resolve(o.ipAdapter!), imageEncoder: o.imageEncoder!, ipAdapterScale: o.ipScale } : {}),
    device: o.device,
  };
  const bar = progress(todo.length, `generate-images (${o.mode})`);
  const write = async (j: Job, img: RgbImage, extra: Record<string, unknown> = {}) => {
    const rel = o.mode === "reference" ? relPaths.referenceImage(j.id) : relPaths.generationImage(j.referenceId!, j.k!);
    await writePng(join(paths.root, rel), img);
    const row = o.mode === "reference"
      ? { id: j.id, subjectId: j.subjectId, prompt: j.prompt, image: rel, seed: j.seed, settings: { ...settings, ...extra } }
      : { id: j.id, referenceId: j.referenceId!, subjectId: j.subjectId, prompt: j.prompt, image: rel, seed: j.seed, k: j.k!, settings: { ...settings, ...extra } };
    await appendJsonl(manifest, row, (o.mode === "reference" ? ReferenceRow : GenerationRow) as never);
    bar.tick();
  };

  if (tiny) {
    for (const j of todo) {
      const subject = tinySubject(j.promptRow, paths.prompts);
      if (o.mode === "reference") await write(j, renderReference(subject, o.width).image);
      else {
        const scene = flatSceneForPrompt(j.prompt); // null: the reference prompt, a clean white background
        const rng = new Rng(j.seed);
        const defect = rng.uniform() < o.defectRate;
        const r = renderCorrupted(subject, scene, o.width, rng);
        // The ground truth beside the image: red = the planted defect's pixels, green = the subject's.
        const truthRel = relPaths.generationImage(j.referenceId!, j.k!).replace(/\.png$/, ".truth.png");
        const truth = new Uint8Array(o.width * o.height * 3);
        for (let i = 0; i < o.width * o.height; i++) {
          truth[i * 3] = defect && r.corruptionMask[i] ? 255 : 0;
          truth[i * 3 + 1] = r.mask[i] ? 255 : 0;
        }
        await writePng(join(paths.root, truthRel), { width: o.width, height: o.height, data: truth });
        await write(j, defect ? r.image : r.clean.image, { scene: scene?.name ?? "white", defect: defect ? r.corruption.kind : "none", truth: truthRel });
      }
    }
  } else {
    const model = loadDiffusionModel(o.model);
    const ip = o.mode === "personalized" ? loadIpAdapter(o.ipAdapter!, o.imageEncoder!) : undefined;
    const pipe = new Pipeline(model, { height: o.height, width: o.width, batch: o.batch, device: o.device, threads: o.threads, ip, ipScale: o.ipScale });
    for (let i = 0; i < todo.length; i += o.batch) {
      const chunk = todo.slice(i, i + o.batch);
      const items = [];
      for (const j of chunk) {
        items.push({ prompt: j.prompt, negativePrompt: o.negativePrompt, seed: j.seed, image: j.referenceImage ? await loadImage(paths.resolve(j.referenceImage)) : undefined });
      }
      await pipe.generate(items, { steps: o.steps, guidance: o.guidance, sampler: o.sampler }, (k, img) => write(chunk[k]!, img));
    }
  }
  bar.done();
  return { generated: todo.length, skipped: mine.length - todo.length, manifest };
}

function requireFlag(v: string | undefined, flag: string): string {
  if (!v) throw new UsageError(`--mode personalized with a diffusion model needs ${flag}`);
  return v;
}

/** Joins shard manifests into the mode's manifest. */
export async function merge(runDir: string, mode: Mode, count: number): Promise<number> {
  if (!Number.isInteger(count) || count < 1) throw new UsageError(`--merge needs the shard count (a positive integer), got ${count}`);
  const paths = runPaths(runDir);
  const base = mode === "reference" ? paths.references : paths.generations;
  const rows: unknown[] = [];
  for (let index = 0; index < count; index++) {
    const f = shardPath(base, { index, count });
    if (!existsSync(f)) throw new UserError(`--merge: shard file ${f} is missing (did shard ${index}/${count} finish?)`);
    rows.push(...(await readJsonlAll(f, (mode === "reference" ? ReferenceRow : GenerationRow) as never)));
  }
  await writeJsonl(base, rows);
  return rows.length;
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
  --size <px>             width and height (default: ${DEFAULTS.width}); or --width / --height
  --negative-prompt <t>   (default: "")
  --seed <n>              base seed; each image's seed derives from it and the image id (default: ${DEFAULTS.seed})
  --batch <n>             images per denoiser call (default: ${DEFAULTS.batch})
  --defect-rate <p>       tinyworld personalized: share of images with a planted defect (default: ${DEFAULTS.defectRate})
  --shard <i/n>           this shard of the work; --merge <n> joins the shard manifests
  --device <d>            cpu | cuda | webgpu (default: ${DEFAULTS.device})
  --threads <n>           intra-op threads, 0 = one per core (default: ${DEFAULTS.threads})
  --force                 regenerate rows already in the manifest
  --check-models          list missing and mismatched tensors of the model (and IP-Adapter) folders, then exit

${MODEL_LAYOUT_HELP}`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      run: { type: "string" }, mode: { type: "string" }, model: { type: "string" }, "ip-adapter": { type: "string" }, "image-encoder": { type: "string" },
      "ip-scale": { type: "string", default: String(DEFAULTS.ipScale) }, "per-reference": { type: "string", default: String(DEFAULTS.perReference) },
      "pair-prompt": { type: "string", default: DEFAULTS.pairPrompt }, sampler: { type: "string", default: DEFAULTS.sampler }, steps: { type: "string", default: String(DEFAULTS.steps) },
      guidance: { type: "string", default: String(DEFAULTS.guidance) }, size: { type: "string" }, width: { type: "string" }, height: { type: "string" },
      "negative-prompt": { type: "string", default: "" }, seed: { type: "string", default: "0" }, batch: { type: "string", default: "1" },
      "defect-rate": { type: "string", default: String(DEFAULTS.defectRate) }, shard: { type: "string" }, merge: { type: "string" },
      device: { type: "string", default: DEFAULTS.device }, threads: { type: "string", default: "0" },
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
    const Flags = type({
      run: "string > 0", mode: "'reference' | 'personalized'", model: "string > 0", ipScale: "number", perReference: "number.integer > 0", pairPrompt: type.enumerated(...PAIR_PROMPTS),
      sampler: type.enumerated(...SAMPLERS), steps: "number.integer > 0", guidance: "number >= 0", width: "number.integer > 0", height: "number.integer > 0",
      seed: "number.integer >= 0", batch: "number.integer > 0", defectRate: "0 <= number <= 1", device: type.enumerated(...DEVICES), threads: "number.integer >= 0",
    });
    const size = v.size ? Number(v.size) : DEFAULTS.width;
    const flags = Flags({
      run: v.run, mode: v.mode, model: v.model, ipScale: Number(v["ip-scale"]), perReference: Number(v["per-reference"]), pairPrompt: v["pair-prompt"], sampler: v.sampler,
      steps: Number(v.steps), guidance: Number(v.guidance), width: Number(v.width ?? size), height: Number(v.height ?? size), seed: Number(v.seed),
      batch: Number(v.batch), defectRate: Number(v["defect-rate"]), device: v.device, threads: Number(v.threads),
    });
    if (flags instanceof type.errors) throw new UsageError(`bad flag: ${flags.summary}\n\n${HELP}`);
    if (v.merge) return console.log(`merged ${await merge(flags.run, flags.mode, Number(v.merge))} rows`);
    const opts: GenerateOptions = {
      ...flags, ipAdapter: v["ip-adapter"], imageEncoder: v["image-encoder"], negativePrompt: v["negative-prompt"]!, force: v.force!,
      shard: v.shard ? parseShard(v.shard) : undefined,
    };
    const t0 = performance.now();
    const r = await recordStep(opts.run, `generate-images (${opts.mode})`, { ...opts }, () => run(opts));
    console.log(`generated ${r.generated} images (${r.skipped} already done) in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${r.manifest}`);
  });
}
