// PatchDPO's model optimization (DESIGN.md section 1, item 3): one epoch of training the
// personalized model (IP-Adapter on a UNet) on the run's (reference, generated) pairs with a
// patch-weighted objective.
//
//   bun scripts/dpo-epoch.ts --run R --model checkpoints/sdxl-base \
//       --ip-adapter checkpoints/ip-adapter-plus_sdxl_vit-h.safetensors --image-encoder checkpoints/clip-vit-h-14 \
//       --objective patch-dpo --epoch 1
//
// The data: every row of patch-scores.jsonl, joined with generations.jsonl (the scene prompt, the
// generated image) and references.jsonl (the reference image), with the row's latent-grid quality
// maps (q_ref_latent, q_gen_latent). `--objective mse` needs no maps and runs without patch scores
// (then on every row of generations.jsonl).
//
// One epoch = one pass over the pairs in an order shuffled by (seed, epoch); a step takes
// --grad-accum micro-batches of --batch pairs (the last step is topped up with the first pairs of
// the order, so every pair is seen and the graph keeps its static batch). Epoch 1 starts from
// --ip-adapter; epoch N from train/ip-adapter-epoch-<N-1>.safetensors. patch-dpo's frozen reference
// model is always --ip-adapter (the model that generated the data), as in Diffusion-DPO, so epochs
// 1..K train against one reference. Each epoch starts fresh AdamW moments and its own lr schedule:
// epoch N is a function of epoch N-1's file, the data and the flags only.
//
// Writes train/train-log.jsonl (one row per step; `step` counts over all epochs), train/checkpoints/
// step-N/ every --save-every steps and at the end (weights + AdamW moments + step + rng + config),
// train/ip-adapter-epoch-<N>.safetensors (the release layout: generate-images --ip-adapter and
// diffusers' load_ip_adapter read it) and train/ip-adapter-epoch-<N>.json (what the epoch did).
// Resumable: --resume continues from the newest step checkpoint of the same epoch and ends with the
// same bytes as an uninterrupted run (each step's noise, timesteps and dropout come from an Rng
// seeded by (seed, epoch, step); the order from (seed, epoch)). A resume, or a rerun of a finished
// epoch, with other settings is refused. --force checks everything first (models, size, weights,
// every quality map), trains the epoch aside and swaps it in only when this invocation succeeds.
//
// Where the training state lives (--state): on `--device webgpu` (one process) the trainable weights
// and AdamW's moments stay in gpu buffers between steps, and AdamW, the global-norm clip, the
// NaN/Inf guard and the --grad-accum sums run inside the training graph (lib/train/resident.ts).
// Per step the batch goes up and the loss and logs come down; the weights and moments come down
// when a checkpoint is written. cpu (whose resume is byte-identical) and cuda (onnxruntime-node
// copies every input anyway) keep the host loop: gradients down, lib/train/adamw.ts on the host.
//
// Data parallel: `mpirun -np W bun scripts/dpo-epoch.ts ...` (or srun). Each rank takes --grad-accum / W
// of every step's micro-batches (W must divide --grad-accum); the gradients, loss and logs are
// averaged over the ranks (lib/dist) before clipping and AdamW, so every rank applies the same
// update and the result does not depend on W (resume at any W that divides --grad-accum). Rank 0
// alone writes the log, checkpoints, the epoch file and run.json.
// The all-reduce needs host gradients, so under W > 1 ranks the state stays on the host (--state
// auto says so on stderr; --state device is refused).

import { clearSessionCache } from "../lib/graph/index.ts";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type } from "arktype";
import { type DiffusionModel, type IpAdapter, MODEL_LAYOUT_HELP, checkImageSize, checkModels, loadDiffusionModel, loadIpAdapter, nativeSize } from "../lib/diffusion/model.ts";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { PRECISIONS, PRECISION_HELP, type Precision as ComputePrecision, withPrecision } from "../lib/graph/precision.ts";
import { type World, allReduceMeanGrads, barrier, checkSame, shareOf, world } from "../lib/dist/index.ts";
import { writeJsonAtomic } from "../lib/io/atomic.ts";
import { resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { type RgbImage, loadImage } from "../lib/io/images.ts";
import { withLockFile } from "../lib/io/lock.ts";
import { appendJsonl, byUniqueId, readJsonlAll, repairJsonlTail, writeJsonl } from "../lib/io/manifest.ts";
import { progress } from "../lib/io/progress.ts";
import { type RunPaths, existingRunDir, fromPortablePath, portablePath, runPaths, stableHash } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { type SafetensorsFile, openSafetensors } from "../lib/io/safetensors.ts";
import { Staging } from "../lib/io/staging.ts";
import { GenerationRow, PatchScoreRow, ReferenceRow, TrainLogRow } from "../lib/io/schemas.ts";
import { IpAdapterUNetSource } from "../lib/models/unet.ts";
import { MASKED_FILL, foregroundMap, resizeMap } from "../lib/patch/quality.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW, GradAccumulator, allFinite, clipGradNorm, globalNorm } from "../lib/train/adamw.ts";
import { loadCheckpoint, restoreOptimizer, saveCheckpoint } from "../lib/train/checkpoint.ts";
import { type CfgDropout, CFG_DROPOUT, DiffusionTrainer, type PairExample, saveIpAdapter, unetSessionChoices } from "../lib/train/diffusion.ts";
import { DPO_DEFAULTS, OBJECTIVES, type Objective } from "../lib/train/objectives.ts";
import { STATE_WHERE, type StateWhere } from "../lib/train/resident.ts";
import { type ScheduleName, learningRate } from "../lib/train/schedule.ts";
import { type Precision, planDpoEpoch } from "../lib/train/plan.ts";

export const TRAIN_SETS = ["ip", "ip+proj"] as const;
export { STATE_WHERE, type StateWhere };
export type TrainSet = (typeof TRAIN_SETS)[number];

export interface DpoEpochOptions {
  run: string;
  /** A diffusers model folder (SD 1.x/2.x, SDXL, or the tiny world's). */
  model: string;
  /** The IP-Adapter the data was generated with: epoch 1's start and patch-dpo's reference model. */
  ipAdapter: string;
  /** CLIP vision folder, or "mobilenet_v2" (tiny world). */
  imageEncoder: string;
  objective: Objective;
  /** 1-based; epoch N > 1 starts from train/ip-adapter-epoch-<N-1>.safetensors. */
  epoch: number;
  lr: number;
  /** Final rate of the cosine schedule. */
  minLr: number;
  weightDecay: number;
  /** Pairs per micro-batch (the graph runs 2 x this many rows: references and generations). */
  batch: number;
  /** Micro-batches per optimizer step. */
  gradAccum: number;
  /** Max global gradient norm (0: off). */
  clip: number;
  warmup: number;
  schedule: ScheduleName;
  /** patch-dpo: Diffusion-DPO's beta and the keep-good-patches weight. */
  beta: number;
  lambda: number;
  ipScale: number;
  /** ip: every to_k_ip / to_v_ip; ip+proj: also the image projection / resampler (image_proj.*). */
  train: TrainSet;
  /** Training resolution in pixels (square); default: the model's own (UNet sample_size x VAE factor), else 512. */
  size?: number;
  seed: number;
  /** Write train/checkpoints/step-N every this many steps (0: only at the end / at --stop-at). */
  saveEvery: number;
  /** Cap on the epoch's steps (quick runs); part of the epoch's identity. */
  maxSteps?: number;
  /** End this invocation after this many steps of the epoch, with a checkpoint (as if preempted). */
  stopAt?: number;
  resume: boolean;
  force: boolean;
  device: Device;
  /** Compute dtype (lib/graph/precision.ts; default fp32): fp16/bf16 compute with fp32 master weights, gradients and AdamW. */
  precision?: ComputePrecision;
  /**
   * Where the trainable weights and AdamW's state live between steps. device: AdamW, clipping,
   * the NaN/Inf guard and accumulation run inside the training graph and the state stays on the
   * device (gpu buffers on webgpu; lib/train/resident.ts); host: gradients come to the host and
   * lib/train/adamw.ts updates host weights. auto: device on webgpu with one process, host
   * elsewhere (cpu keeps its byte-identical resume; cuda in Node copies every input anyway;
   * data-parallel ranks all-reduce host gradients).
   */
  state: StateWhere;
  threads: number;
  /**
   * Gradient checkpointing: each ResnetBlock2D and Transformer2DModel of the UNet keeps only its
   * inputs for the backward pass and is recomputed there (less activation memory, more time;
   * bench/RESULTS.md dpo-step).
   */
  recompute: boolean;
  /** Classifier-free-guidance dropout per pair (default 5% image / 5% text / 5% both). */
  dropout?: CfgDropout;
  /** Called with every logged step (the CLI prints JSON lines when stderr is not a terminal). */
  onStep?: (row: TrainLogRow) => void;
}

/** The authors' run (DESIGN.md): AdamW lr 3e-5, weight decay 0.01, 512 px, 4 pairs per GPU. */
export const DEFAULTS = {
  objective: "patch-dpo", epoch: 1, lr: 3e-5, minLr: 0, weightDecay: 0.01, batch: 4, gradAccum: 1, clip: 1.0, warmup: 0,
  schedule: "constant", beta: DPO_DEFAULTS.beta, lambda: DPO_DEFAULTS.lambda, ipScale: 1, train: "ip", seed: 0,
  saveEvery: 200, resume: false, force: false, device: "cpu", state: "auto", threads: 0, recompute: false,
} as const satisfies Partial<DpoEpochOptions>;

/** What run() needs; everything else takes its default. */
export type DpoEpochInput = Pick<DpoEpochOptions, "run" | "model" | "ipAdapter" | "imageEncoder"> & Partial<DpoEpochOptions>;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  "precision?": type.enumerated(...PRECISIONS),
  run: "string > 0", model: "string > 0", ipAdapter: "string > 0", imageEncoder: "string > 0",
  objective: type.enumerated(...OBJECTIVES), epoch: "number.integer > 0", lr: "number > 0", minLr: "number >= 0", weightDecay: "number >= 0",
  batch: "number.integer > 0", gradAccum: "number.integer > 0", clip: "number >= 0", warmup: "number.integer >= 0",
  schedule: "'constant' | 'warmup' | 'cosine'", beta: "number > 0", lambda: "number >= 0", ipScale: "number", train: type.enumerated(...TRAIN_SETS),
  "size?": "number.integer > 0", seed: "number.integer >= 0", saveEvery: "number.integer >= 0", "maxSteps?": "number.integer > 0",
  "stopAt?": "number.integer > 0", resume: "boolean", force: "boolean", device: type.enumerated(...DEVICES), state: type.enumerated(...STATE_WHERE), threads: "number.integer >= 0", recompute: "boolean",
});

export interface DpoEpochResult {
  epoch: number;
  /** train/ip-adapter-epoch-<N>.safetensors (written when finished). */
  out: string;
  /** The IP-Adapter the epoch started from. */
  from: string;
  finished: boolean;
  /** The epoch had finished before this call (--resume of a done epoch): nothing ran. */
  alreadyDone: boolean;
  pairs: number;
  /** Steps of the whole epoch. */
  steps: number;
  /** Global step numbers: the epoch's first step, and the steps completed so far. */
  startStep: number;
  endStep: number;
  /** Steps taken by this invocation, and those skipped by the NaN/Inf guard. */
  stepsRun: number;
  skipped: number;
  secondsPerStep: number;
  firstLoss?: number;
  lastLoss?: number;
  trainable: { names: number; values: number };
}

/** Config keys that hold paths: recorded relative to the run when inside it, compared as absolute paths. */
const PATH_KEYS = new Set(["model", "ipAdapter", "imageEncoder", "from", "source"]);

/** Config keys that must match for --resume (device, threads, save-every, stop-at are free). */
const RESUME_KEYS = [
  "model", "ipAdapter", "imageEncoder", "from", "objective", "epoch", "lr", "minLr", "weightDecay", "batch", "gradAccum", "clip", "warmup",
  "schedule", "beta", "lambda", "ipScale", "train", "size", "seed", "maxSteps", "dropout", "pairs", "data", "steps", "startStep",
] as const;

export const epochFile = (paths: RunPaths, epoch: number) => join(paths.trainDir, `ip-adapter-epoch-${epoch}.safetensors`);
export const epochSummary = (paths: RunPaths, epoch: number) => join(paths.trainDir, `ip-adapter-epoch-${epoch}.json`);

/** An Rng for one purpose and index, independent of everything drawn before (resume needs no history). */
const rngFor = (seed: number, tag: string, index: number) => new Rng(stableHash(`${seed}:${tag}:${index}`));

/** Which weights train, by the trainer's names. */
export function trainableFor(set: TrainSet): (name: string) => boolean {
  return set === "ip" ? (n) => n.includes("_ip.") : (n) => n.includes("_ip.") || n.startsWith("image_proj.");
}

// ------------------------------------------------------------------ data

interface Pair {
  id: string;
  prompt: string;
  reference: string;
  generated: string;
  /** patch-scores/<id>.safetensors (absolute), when scored. */
  scores?: string;
}

async function loadPairs(paths: RunPaths, needMaps: boolean): Promise<{ pairs: Pair[]; source: string }> {
  const haveScores = existsSync(paths.patchScores);
  if (!haveScores && needMaps) {
    throw new UserError(`${paths.patchScores} is missing: the weighted and patch-dpo objectives need patch quality maps (run score-patches --run ${paths.root} --latent-grid <size / vae factor> first, or train with --objective mse)`);
  }
  for (const f of [paths.references, paths.generations]) {
    if (!existsSync(f)) throw new UserError(`${f} is missing: dpo-epoch trains on the run's references and generations (run generate-images first)`);
  }
  const refs = byUniqueId(await readJsonlAll(paths.references, ReferenceRow), paths.references);
  const gens = await readJsonlAll(paths.generations, GenerationRow);
  const genById = byUniqueId(gens, paths.generations);
  const seen = new Set<string>();
  const pairs: Pair[] = [];
  const join1 = (file: string, line: number, id: string, refId: string, gen: GenerationRow, scores?: string) => {
    if (seen.has(id)) throw new UserError(`${file}:${line}: duplicate id "${id}" (each pair must appear once; fix the manifest)`);
    seen.add(id);
    const ref = refs.get(refId);
    if (!ref) throw new UserError(`${file}:${line}: reference "${refId}" is not in ${paths.references} (the manifests do not match; regenerate or fix the row)`);
    const pair: Pair = { id, prompt: gen.prompt, reference: paths.resolve(ref.image), generated: paths.resolve(gen.image), scores };
    for (const f of [pair.reference, pair.generated]) if (!existsSync(f)) throw new UserError(`${file}:${line}: pair "${id}": image ${f} does not exist`);
    pairs.push(pair);
  };
  if (haveScores) {
    const rows = await readJsonlAll(paths.patchScores, PatchScoreRow);
    rows.forEach((r, i) => {
      const gen = genById.get(r.id);
      if (!gen) throw new UserError(`${paths.patchScores}:${i + 1}: generation "${r.id}" is not in ${paths.generations} (the scores belong to another run, or generations.jsonl was redone: rerun score-patches --force)`);
      if (r.referenceId && r.referenceId !== gen.referenceId) {
        throw new UserError(`${paths.patchScores}:${i + 1}: referenceId "${r.referenceId}" but ${paths.generations} says "${gen.referenceId}" for "${r.id}" (rerun score-patches --force)`);
      }
      if (r.generated !== gen.image) {
        throw new UserError(`${paths.patchScores}:${i + 1}: scored image "${r.generated}" but generation "${r.id}" is "${gen.image}" (rerun score-patches --force)`);
      }
      const scores = paths.resolve(r.scores);
      if (needMaps) checkScoreFile(scores, `${paths.patchScores}:${i + 1}`);
      join1(paths.patchScores, i + 1, r.id, gen.referenceId, gen, scores);
    });
  } else {
    gens.forEach((g, i) => join1(paths.generations, i + 1, g.id, g.referenceId, g));
  }
  if (!pairs.length) throw new UserError(`no pairs to train on: ${haveScores ? paths.patchScores : paths.generations} has no rows`);
  return { pairs, source: haveScores ? paths.patchScores : paths.generations };
}

const MAPS = [["qRef", "q_ref"], ["qGen", "q_gen"]] as const;

function checkScoreFile(file: string, where: string): void {
  if (!existsSync(file)) throw new UserError(`${where}: quality maps ${file} are missing (rerun score-patches; the weighted and patch-dpo objectives need them)`);
  const f = openSafetensors(file);
  for (const [, key] of MAPS) {
    if (!f.has(`${key}_latent`) && !f.has(key)) throw new UserError(`${where}: ${file} holds neither ${key}_latent nor ${key} (rerun score-patches --force)`);
    checkMapValues(f, key, where);
  }
}

/**
 * Quality maps must be finite and in [0, 1]: a NaN would be read as "perfect" and a huge value
 * would dominate the loss. NaN is allowed only at the encoder grid, on the patches the file's
 * mask marks as background (score-patches stores them so; the latent maps have them filled).
 */
function checkMapValues(f: SafetensorsFile, key: "q_ref" | "q_gen", where: string): void {
  const maskName = key === "q_gen" ? "gen_mask" : "ref_mask";
  for (const name of [key, `${key}_latent`]) {
    if (!f.has(name)) continue;
    const v = f.float32(name);
    const shape = f.info(name).shape;
    const mask = name === key && f.has(maskName) ? f.float32(maskName) : undefined;
    for (let i = 0; i < v.length; i++) {
      const x = v[i]!;
      const ok = Number.isNaN(x) ? !!mask && mask[i] === 1 : x >= 0 && x <= 1;
      if (ok) continue;
      const w = shape.at(-1) ?? 1;
      const why = Number.isNaN(x) ? `NaN on a patch ${mask ? `that ${maskName} does not mask` : `(the file has no ${maskName}, so no patch may be NaN)`}` : `${Number(x.toPrecision(6))}, outside [0, 1]`;
      throw new UserError(`${where}: ${f.path}: ${name}[${Math.floor(i / w)}, ${i % w}] is ${why}. Quality maps must be finite and in [0, 1]: rerun score-patches --force for this run (or fix the file)`);
    }
  }
}

/**
 * The pair's quality maps at the L x L latent grid: the stored latent maps when they are L x L,
 * otherwise the encoder-grid maps (q_ref, q_gen) resized with resizeMap, exactly what score-patches
 * --latent-grid L would have stored. Masked (NaN) entries become 1, and the foreground shares
 * fgRef / fgGen zero their weight in the objectives.
 */
function qualityMaps(file: string, L: number): { qRef: Float32Array; qGen: Float32Array; fgRef: Float32Array; fgGen: Float32Array } {
  const f = openSafetensors(file);
  const load = (key: string): Float32Array => {
    const latent = `${key}_latent`;
    const pick = f.has(latent) && f.info(latent).shape.join("x") === `${L}x${L}` ? latent : f.has(key) ? key : latent;
    const [h, w] = f.info(pick).shape as [number, number];
    if (h === L && w === L) return Float32Array.from(f.float32(pick), (v) => (Number.isNaN(v) ? MASKED_FILL : v));
    return resizeMap(f.float32(pick), h, w, L, L);
  };
  // Foreground shares from the encoder-grid maps' masks (NaN): masked patches are neutral in the objectives.
  const fg = (key: string) => {
    if (!f.has(key)) return new Float32Array(L * L).fill(1);
    const [h, w] = f.info(key).shape as [number, number];
    return foregroundMap(f.float32(key), h, w, L, L);
  };
  return { qRef: load("q_ref"), qGen: load("q_gen"), fgRef: fg("q_ref"), fgGen: fg("q_gen") };
}

// ------------------------------------------------------------------ models

function checkAgainstModel(model: DiffusionModel, ip: IpAdapter, what: string): void {
  const bad = checkModels(model, ip).filter((r) => r.missing.length || r.mismatched.length);
  if (!bad.length) return;
  const lines = bad.flatMap((r) => [
    `  ${r.component}: ${r.missing.length} missing, ${r.mismatched.length} mismatched of ${r.expected}`,
    ...r.missing.slice(0, 3).map((m) => `    missing    ${m}`),
    ...r.mismatched.slice(0, 3).map((m) => `    mismatched ${m}`),
  ]);
  const ipBad = bad.some((r) => r.component === "ip-adapter");
  throw new UserError(
    `${what} does not match ${model.dir}:\n${lines.join("\n")}\n` +
      (ipBad ? "an IP-Adapter is made for one base model (SD 1.5 adapters for SD 1.5 UNets, SDXL adapters for SDXL); " : "") +
      `generate-images --check-models --model ${model.dir} --ip-adapter ${ip.file} lists every tensor`,
  );
}

/** The image encoder's feature width the projection must take. */
function encoderWidth(ip: IpAdapter): number {
  const e = ip.encoder;
  if (e.kind === "mobilenet") return 1280;
  return ip.projection.kind === "linear" ? e.config.projectionDim : e.config.hiddenSize;
}

/** A JSON file this step wrote earlier; a damaged one is named, not a stack trace. */
function readJsonFile<T>(path: string): T {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message}); delete it and redo that epoch with --force`);
  }
}

// ------------------------------------------------------------------ checkpoints of this epoch

interface CkInfo { dir: string; step: number; epoch: number }

function checkpointsOf(paths: RunPaths): CkInfo[] {
  if (!existsSync(paths.checkpointsDir)) return [];
  const out: CkInfo[] = [];
  for (const d of readdirSync(paths.checkpointsDir)) {
    const m = /^step-(\d+)$/.exec(d);
    const state = join(paths.checkpointsDir, d, "state.json");
    if (!m || !existsSync(state)) continue;
    try {
      const s = JSON.parse(readFileSync(state, "utf8")) as { epoch?: number };
      out.push({ dir: join(paths.checkpointsDir, d), step: Number(m[1]), epoch: Number(s.epoch ?? 0) });
    } catch {
      /* an unreadable state.json is an incomplete checkpoint: ignored, as latestCheckpoint does */
    }
  }
  return out.sort((a, b) => a.step - b.step);
}

/** The global step at which epoch N starts: after everything earlier epochs logged or saved. */
function epochStartStep(paths: RunPaths, epoch: number, logRows: TrainLogRow[]): number {
  let start = 0;
  const prev = epochSummary(paths, epoch - 1);
  if (epoch > 1 && existsSync(prev)) start = Math.max(start, Number(readJsonFile<{ endStep?: number }>(prev).endStep ?? 0));
  for (const r of logRows) if ((r.epoch ?? 0) < epoch) start = Math.max(start, r.step + 1);
  for (const c of checkpointsOf(paths)) if (c.epoch < epoch) start = Math.max(start, c.step);
  return start;
}

// ------------------------------------------------------------------ the epoch

export async function run(input: DpoEpochInput): Promise<DpoEpochResult> {
  const o = resolveOptions<DpoEpochOptions>(OPTIONS, DEFAULTS, input);
  const root = existingRunDir(o.run);
  const w = world();
  if (o.gradAccum % w.size !== 0) {
    throw new UsageError(`--grad-accum ${o.gradAccum} cannot be split over ${w.size} ranks: each rank takes --grad-accum / ranks micro-batches of --batch pairs per step, so pass a multiple of ${w.size} (e.g. --batch ${o.batch} --grad-accum ${w.size * Math.max(1, Math.round(o.gradAccum / w.size))})`);
  }
  if (o.state === "device" && w.size > 1) {
    throw new UsageError(`--state device keeps the weights and AdamW on the device, but ${w.size} ranks average their gradients on the host (lib/dist): run one process, or pass --state host (the default, auto, does this for you)`);
  }
  // The other ranks write nothing: rank 0 holds the lock and the run.json entry for the job.
  if (w.rank !== 0) return withPrecision(o.precision ?? "fp32", o.device, () => epoch(o, root, w));
  const { onStep: _s, ...recorded } = o;
  return withPrecision(o.precision ?? "fp32", o.device, () => recordStep(root, `dpo-epoch (epoch ${o.epoch}, ${o.objective}${w.size > 1 ? `, ${w.size} ranks` : ""})`, recorded, () =>
    withLockFile(join(root, "train.lock"), `dpo-epoch in ${root}`, () => epoch(o, root, w))));
}

/** `from` and the other path settings, compared where they point (a copied run folder still resumes). */
function sameSetting(root: string, key: string, a: unknown, b: unknown): boolean {
  if (PATH_KEYS.has(key) && typeof a === "string" && typeof b === "string") return a === b || fromPortablePath(root, a) === fromPortablePath(root, b);
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

function otherSettings(root: string, saved: Record<string, unknown>, config: Record<string, unknown>): string[] {
  return RESUME_KEYS.filter((k) => !sameSetting(root, k, saved[k], config[k])).map((k) => `${k}: ${JSON.stringify(saved[k])} there, ${JSON.stringify(config[k])} now`);
}

async function epoch(o: DpoEpochOptions, root: string, w: World): Promise<DpoEpochResult> {
  const paths = runPaths(root);
  const lead = w.rank === 0;
  const needMaps = o.objective !== "mse";

  // ---- models: the reference IP-Adapter, and the one this epoch starts from
  const model = loadDiffusionModel(o.model);
  const ipRef = loadIpAdapter(o.ipAdapter, o.imageEncoder);
  checkAgainstModel(model, ipRef, `IP-Adapter ${ipRef.file}`);
  const from = o.epoch === 1 ? ipRef.file : epochFile(paths, o.epoch - 1);
  if (!existsSync(from)) throw new UserError(`${from} is missing: epoch ${o.epoch} starts from epoch ${o.epoch - 1}'s IP-Adapter (run dpo-epoch --epoch ${o.epoch - 1} first)`);
  const ipStart = o.epoch === 1 ? ipRef : loadIpAdapter(from, o.imageEncoder);
  if (ipStart !== ipRef) checkAgainstModel(model, ipStart, `epoch ${o.epoch - 1}'s IP-Adapter ${from}`);
  const width = encoderWidth(ipStart);
  if (ipStart.projection.embeddingDim !== width) {
    throw new UserError(`IP-Adapter ${ipStart.file} projects ${ipStart.projection.embeddingDim}-wide image features but --image-encoder ${o.imageEncoder} gives ${width}: pass the image encoder the adapter was trained with`);
  }
  const size = o.size ?? nativeSize(model) ?? 512;
  checkImageSize(model, size, size);
  const L = size / model.vaeFactor;

  // ---- data and the epoch's order
  const { pairs, source } = await loadPairs(paths, needMaps);
  const N = pairs.length;
  const perStep = o.batch * o.gradAccum;
  const steps = Math.min(Math.ceil(N / perStep), o.maxSteps ?? Infinity);
  const order = rngFor(o.seed, "dpo-order", o.epoch).shuffle(pairs.map((_, i) => i));

  // ---- state on disk: fresh, forced or resumed
  mkdirSync(paths.trainDir, { recursive: true });
  // A forced run trains aside (staging: checkpoints, log, epoch file) and swaps in at the end.
  const stage = new Staging(root, `dpo-epoch-${o.epoch}`);
  if (lead) stage.recover();
  if (lead && existsSync(paths.trainLog)) await repairJsonlTail(paths.trainLog);
  // The other ranks read the state once rank 0 has recovered and repaired it; rank 0 writes nothing
  // they read before the first step's all-reduce (its later rewrites are atomic and keep what they read).
  await barrier();
  let logRows = existsSync(paths.trainLog) ? await readJsonlAll(paths.trainLog, TrainLogRow) : [];
  const mine = () => checkpointsOf(paths).filter((c) => c.epoch === o.epoch);
  const rel = (abs: string) => portablePath(root, abs);
  const at = (abs: string) => (o.force ? stage.path(rel(abs)) : abs);
  const out = epochFile(paths, o.epoch);
  const summaryPath = epochSummary(paths, o.epoch);
  const startStep = epochStartStep(paths, o.epoch, logRows);
  const config = {
    model: rel(model.dir), ipAdapter: rel(ipRef.file), imageEncoder: o.imageEncoder, from: rel(from), objective: o.objective, epoch: o.epoch, lr: o.lr, minLr: o.minLr,
    weightDecay: o.weightDecay, batch: o.batch, gradAccum: o.gradAccum, clip: o.clip, warmup: o.warmup, schedule: o.schedule,
    beta: o.beta, lambda: o.lambda, ipScale: o.ipScale, train: o.train, size, seed: o.seed, maxSteps: o.maxSteps ?? null,
    dropout: o.dropout ?? CFG_DROPOUT, pairs: N, data: stableHash(pairs.map((p) => p.id).join("\n")), source: rel(source), steps, startStep,
  };
  const baseResult = { epoch: o.epoch, out, from, pairs: N, steps, startStep, stepsRun: 0, skipped: 0, secondsPerStep: 0 };
  if (existsSync(out) && !o.force) {
    if (o.resume && existsSync(summaryPath)) {
      const s = readJsonFile<{ endStep: number; trainable: { names: number; values: number }; config?: Record<string, unknown> }>(summaryPath);
      const diff = s.config ? otherSettings(root, s.config, config) : [];
      if (diff.length) throw new UserError(`epoch ${o.epoch} (${out}) was trained with other settings (${diff.join("; ")}); rerun with those, pass --force to redo the epoch with these, or use another --run`);
      return { ...baseResult, finished: true, alreadyDone: true, endStep: s.endStep, trainable: s.trainable };
    }
    throw new UserError(`${out} exists: epoch ${o.epoch} is already trained; pass --force to redo it (or --epoch ${o.epoch + 1} to continue)`);
  }
  const resumeFrom = o.resume && !o.force ? mine().at(-1) : undefined;
  if (!resumeFrom && !o.force && mine().length) {
    throw new UserError(`${paths.checkpointsDir} holds checkpoints of epoch ${o.epoch}: pass --resume to continue them, or --force to start the epoch over`);
  }
  const logPath = at(paths.trainLog);
  if (o.force && lead) {
    stage.begin();
    if (existsSync(epochFile(paths, o.epoch + 1))) process.stderr.write(`dpo-epoch: warning: epoch ${o.epoch + 1} was trained from the epoch ${o.epoch} being redone; redo it too\n`);
    logRows = logRows.filter((r) => (r.epoch ?? 0) !== o.epoch);
    await writeJsonl(logPath, logRows, TrainLogRow);
  }

  // ---- the trainer (compiled once), the trainable weights and the frozen reference
  const isTrainable = trainableFor(o.train);
  const onDevice = o.state === "device" || (o.state === "auto" && o.device === "webgpu" && w.size === 1);
  if (o.state === "auto" && o.device === "webgpu" && w.size > 1 && lead) {
    process.stderr.write(`dpo-epoch: ${w.size} ranks all-reduce gradients on the host, so the weights and AdamW state stay on the host (--state host), not on the webgpu device\n`);
  }
  const trainer = new DiffusionTrainer({
    model, ip: ipStart, pairs: o.batch, height: size, width: size, objective: o.objective, dpo: { beta: o.beta, lambda: o.lambda },
    trainable: isTrainable, ipScale: o.ipScale, device: o.device, threads: o.threads, recompute: o.recompute,
    ...unetSessionChoices(model.unet.config, o.device),
    resident: onDevice ? { adamw: { lr: o.lr, weightDecay: o.weightDecay }, clip: o.clip, gradAccum: o.gradAccum } : undefined,
  });
  const shapes = trainer.shapes();
  let weights: Map<string, Float32Array> = new Map([...trainer.initial].map(([k, v]) => [k, Float32Array.from(v)]));
  if (o.objective === "patch-dpo" && ipStart !== ipRef) {
    // The reference model is --ip-adapter: its trainable weights replace the epoch's start in the
    // forward twin; its frozen weights are shared, so they must be the reference's too.
    const frozenChanged = ipRef.source.names().filter((n) => n.startsWith("image_proj.") && !isTrainable(n) && !sameValues(ipRef.source.float32(n), ipStart.source.float32(n)));
    if (frozenChanged.length) {
      throw new UserError(`epoch ${o.epoch - 1} trained ${frozenChanged[0]} (and ${frozenChanged.length - 1} more) which --train ${o.train} keeps frozen, so patch-dpo's reference model (--ip-adapter) cannot share them: pass --train ip+proj as in that epoch`);
    }
    const refUnet = new IpAdapterUNetSource(model.unet.source, ipRef.source, model.unet.config);
    for (const name of [...trainer.initial.keys()]) trainer.initial.set(name, Float32Array.from(name.startsWith("image_proj.") ? ipRef.source.float32(name) : refUnet.float32(name)));
  }
  const opt = new AdamW({ lr: o.lr, weightDecay: o.weightDecay });
  let local = 0;
  let skippedTotal = 0;
  if (resumeFrom) {
    const ck = await loadCheckpoint(resumeFrom.dir);
    const diff = otherSettings(root, ck.state.config, config);
    if (diff.length) {
      throw new UserError(`${resumeFrom.dir} was trained with other settings (${diff.join("; ")}); resume with the same flags and data, or start over with --force`);
    }
    const restored = new Map<string, Float32Array>();
    for (const name of shapes.keys()) {
      const v = ck.params.get(name);
      if (!v) throw new UserError(`${resumeFrom.dir}/weights.safetensors has no "${name}"; it was written for other trainable weights (start over with --force)`);
      restored.set(name, v);
    }
    weights = restored;
    restoreOptimizer(opt, ck);
    local = Number(ck.state.localStep);
    skippedTotal = Number(ck.state.skipped ?? 0);
  }
  // The log may hold rows of this epoch past the checkpoint (or from a run that never reached one).
  const firstKept = startStep + local;
  const kept = logRows.filter((r) => (r.epoch ?? 0) !== o.epoch || r.step < firstKept);
  if (lead && kept.length !== logRows.length) await writeJsonl(logPath, kept, TrainLogRow);
  logRows = kept;
  // --state device: the start (or the checkpoint's weights, moments and AdamW step) goes up once.
  const res = trainer.resident;
  res?.load(weights, opt.m.size ? { m: opt.m, v: opt.v, t: opt.t } : undefined);
  if (res) res.t = opt.t;
  /** The device's weights, moments and AdamW step on the host, for a checkpoint or the epoch file. */
  const download = async () => {
    if (res) weights = await res.downloadInto(opt);
  };

  // ---- the loop
  const cache = new Map<string, RgbImage>();
  const image = async (file: string): Promise<RgbImage> => {
    let img = cache.get(file);
    if (!img) {
      img = await loadImage(file);
      if (cache.size >= 256) cache.delete(cache.keys().next().value!);
      cache.set(file, img);
    }
    return img;
  };
  const example = async (p: Pair): Promise<PairExample> => ({
    reference: await image(p.reference), generated: await image(p.generated), prompt: p.prompt, ...(needMaps ? qualityMaps(p.scores!, L) : {}),
  });
  const stop = Math.min(steps, o.stopAt ?? steps);
  const sched = { name: o.schedule, lr: o.lr, warmupSteps: o.warmup, totalSteps: steps, minLr: o.minLr };
  const stepRng = (s: number) => rngFor(o.seed, `dpo-epoch-${o.epoch}`, s);
  const checkpointParams = () => new Map([...shapes].map(([name, shape]) => [name, { shape, data: weights.get(name)! }]));
  const bar = progress(Math.max(0, stop - local), `dpo-epoch ${o.epoch} (${o.objective})`);
  let badInARow = 0, skipped = 0, seconds = 0, done = 0;
  let firstLoss: number | undefined, lastLoss: number | undefined;
  // Whether any step of this epoch has updated the weights (a NaN before that is not the lr's fault).
  let updated = local > 0;
  const nonFiniteInputs = (last: number) =>
    new UserError(
      `dpo-epoch: the loss or gradients are NaN/Inf from the first step of the epoch on (through step ${last}), before any weight was updated, ` +
        `so --lr and --beta are not the cause: the inputs are. The weights and quality maps were checked finite at load; check the model ${model.dir} and ${from} ` +
        `(huge weights overflow; generate-images --check-models), --ip-scale (now ${o.ipScale}) and --size (now ${size})`,
    );
  // This rank's micro-batches of each step; their mean gradient is averaged over the ranks.
  const share = shareOf(o.gradAccum, w);
  const perRank = share.end - share.start;
  for (let s = local; s < stop; s++) {
    const t0 = performance.now();
    const rng = stepRng(s);
    const acc = new GradAccumulator();
    const lr = learningRate(sched, s);
    let loss = 0;
    const logs: Record<string, number> = {};
    // --state device: the last micro-batch's run updates the weights in the graph (or skips it).
    let onDeviceStep: { gradNorm: number; updated: boolean } | undefined;
    let gate = true;
    for (let k = 0; k < o.gradAccum; k++) {
      if (k < share.start || k >= share.end) {
        trainer.skipDraws(rng, o.dropout); // another rank's micro-batch
        continue;
      }
      const batch: PairExample[] = [];
      for (let b = 0; b < o.batch; b++) batch.push(await example(pairs[order[((s * o.gradAccum + k) * o.batch + b) % N]!]!));
      const feeds = await trainer.prepare(batch, rng, o.dropout);
      const r = res ? await trainer.residentStep(feeds, lr, gate) : await trainer.step(feeds, weights);
      loss += r.loss / perRank;
      for (const [name, v] of Object.entries(r.logs)) logs[name] = (logs[name] ?? 0) + v / perRank;
      if ("grads" in r) acc.add(r.grads);
      else {
        onDeviceStep = r;
        gate &&= Number.isFinite(r.loss);
      }
    }
    const grads = acc.take();
    if (w.size > 1) {
      const { loss: meanLoss, ...meanLogs } = await allReduceMeanGrads(grads, { loss, ...logs });
      loss = meanLoss!;
      Object.assign(logs, meanLogs);
    }
    if (onDeviceStep ? !onDeviceStep.updated : !Number.isFinite(loss) || !allFinite(grads.values())) {
      skipped++;
      skippedTotal++;
      if (lead) process.stderr.write(`dpo-epoch: step ${startStep + s}: ${Number.isFinite(loss) ? "non-finite gradients" : `loss ${loss}`}; step skipped\n`);
      if (++badInARow >= 5 && !updated) throw nonFiniteInputs(startStep + s);
      if (badInARow >= 5) throw new UserError(`dpo-epoch: 5 steps in a row had NaN/Inf loss or gradients (last: step ${startStep + s}) after training went well until then; lower --lr (now ${o.lr})${o.objective === "patch-dpo" ? ` or --beta (now ${o.beta})` : ""}`);
    } else {
      badInARow = 0;
      updated = true;
      let gradNorm: number;
      if (onDeviceStep) gradNorm = onDeviceStep.gradNorm;
      else {
        gradNorm = o.clip > 0 ? clipGradNorm(grads, o.clip) : globalNorm(grads.values());
        await opt.stepAsync(weights, grads, lr); // threads for large sets (lib/train/adamw.ts), same bits
      }
      const row: TrainLogRow = { step: startStep + s, loss, lr, epoch: o.epoch, gradNorm, seconds: Math.round((performance.now() - t0)) / 1000, ...logs };
      if (lead) await appendJsonl(logPath, row, TrainLogRow);
      if (lead) o.onStep?.(row);
      firstLoss ??= loss;
      lastLoss = loss;
    }
    seconds += (performance.now() - t0) / 1000;
    done++;
    bar.tick();
    const completed = s + 1;
    if ((o.saveEvery > 0 && (startStep + completed) % o.saveEvery === 0) || completed === stop) {
      await download();
      await checkSame(`weights after step ${startStep + completed}`, weights.values());
      if (lead) await saveCheckpoint(at(join(paths.checkpointsDir, `step-${startStep + completed}`)), checkpointParams(), opt, {
        step: startStep + completed, epoch: o.epoch, localStep: completed, rng: stepRng(completed).state(), config, skipped: skippedTotal,
      });
    }
  }
  bar.done();
  // An epoch shorter than the 5-in-a-row guard whose every step was skipped trained nothing.
  if (done > 0 && !updated) throw nonFiniteInputs(startStep + stop - 1);

  const endStep = startStep + Math.max(stop, local);
  const finished = Math.max(stop, local) >= steps;
  const trainable = { names: shapes.size, values: [...shapes.values()].reduce((a, sh) => a + sh.reduce((x, y) => x * y, 1), 0) };
  if (finished && lead) {
    await saveIpAdapter(at(out), model, ipStart, weights);
    const epochLog = logRows.filter((r) => r.epoch === o.epoch);
    await writeJsonAtomic(at(summaryPath), {
      epoch: o.epoch, objective: o.objective, train: o.train, from: rel(from), reference: rel(ipRef.file), startStep, endStep, steps, pairs: N,
      skipped: skippedTotal, trainable, config, finishedAt: new Date().toISOString(),
      firstLoss: epochLog[0]?.loss ?? firstLoss ?? null, lastLoss: lastLoss ?? epochLog.at(-1)?.loss ?? null,
    });
  }
  if (o.force && lead) {
    // The swap: the epoch's old checkpoints, file and summary go; the new ones and the log come in.
    const old = [...mine().map((c) => rel(c.dir)), rel(out), rel(summaryPath)];
    await stage.commit(old, [rel(paths.trainLog)]);
  }
  // This epoch's sessions are keyed to its start weights, which the next epoch replaces: release them,
  // or a process that runs many epochs (a notebook, TinyBench) keeps every one with its memory arena
  // (23 GB after ~60 tiny-world epochs, then the OOM killer).
  trainer.dispose();
  await clearSessionCache();
  return { ...baseResult, finished, alreadyDone: false, endStep, stepsRun: done, skipped, secondsPerStep: done ? seconds / done : 0, firstLoss, lastLoss, trainable };
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

const HELP = `dpo-epoch: one epoch of PatchDPO training (IP-Adapter on a UNet) on a run's patch-scored pairs

usage: bun scripts/dpo-epoch.ts --run <dir> --model <folder> --ip-adapter <file> --image-encoder <folder|mobilenet_v2> [options]

  --run <dir>             run directory (patch-scores.jsonl, generations.jsonl, references.jsonl; writes train/)
  --model <folder>        diffusers model folder (SD 1.x/2.x, SDXL, the tiny world's)
  --ip-adapter <file>     the IP-Adapter the generations were made with (.safetensors, release layout):
                          epoch 1 starts from it; patch-dpo's frozen reference model in every epoch
  --image-encoder <spec>  CLIP vision folder, or mobilenet_v2 (tiny world)
  --objective <o>         ${OBJECTIVES.join(" | ")} (default: ${DEFAULTS.objective}); mse runs without patch scores
  --epoch <n>             epoch n (1-based); n > 1 starts from train/ip-adapter-epoch-<n-1>.safetensors (default: ${DEFAULTS.epoch})
  --lr <x>                AdamW learning rate (default: ${DEFAULTS.lr})
  --min-lr <x>            final learning rate of --schedule cosine (default: ${DEFAULTS.minLr})
  --weight-decay <x>      AdamW decoupled weight decay (default: ${DEFAULTS.weightDecay})
  --batch <n>             pairs per micro-batch; the UNet runs 2n rows (default: ${DEFAULTS.batch})
  --grad-accum <n>        micro-batches per optimizer step (default: ${DEFAULTS.gradAccum})
  --clip <x>              clip the global gradient norm to this, 0 = off (default: ${DEFAULTS.clip})
  --warmup <n>            linear warm-up steps at the start of the epoch (default: ${DEFAULTS.warmup})
  --schedule <s>          constant | warmup | cosine, over the epoch's steps (default: ${DEFAULTS.schedule})
  --beta <x>              patch-dpo: Diffusion-DPO's beta (default: ${DEFAULTS.beta})
  --lambda <x>            patch-dpo: weight of the keep-good-patches term (default: ${DEFAULTS.lambda})
  --ip-scale <s>          image prompt weight in the decoupled cross-attention (default: ${DEFAULTS.ipScale})
  --train <set>           ip = every to_k_ip / to_v_ip; ip+proj = also the image projection (image_proj.*) (default: ${DEFAULTS.train})
  --size <px>             training resolution (square); quality maps are used at size / VAE factor (default: the model's
                          own size, unet sample_size x VAE factor, else 512; sizes more than 2x off it are refused)
  --seed <n>              seeds the epoch's pair order and each step's noise, timesteps and dropout (default: ${DEFAULTS.seed})
  --save-every <n>        write train/checkpoints/step-N every n steps, 0 = only at the end (default: ${DEFAULTS.saveEvery})
  --max-steps <n>         end the epoch after n steps (default: one pass over the pairs)
  --stop-at <n>           end this invocation after n steps of the epoch with a checkpoint (as if preempted)
  --resume                continue from the newest checkpoint of this epoch (same flags; ends identical to an uninterrupted run)
  --force                 redo the epoch: its checkpoints, log rows and output are replaced when this run succeeds
  --device <d>            cpu | cuda | webgpu (default: ${DEFAULTS.device})
${PRECISION_HELP}
  --state <s>             where trainable weights and AdamW state live between steps: device (AdamW, clipping, the
                          NaN/Inf guard and accumulation run in the training graph; on webgpu only the batch goes up and
                          the loss and logs come down each step, the weights when a checkpoint is written) | host
                          (gradients come down, AdamW on the host) | auto = device on webgpu with one process, host
                          elsewhere (default: ${DEFAULTS.state})
  --threads <n>           intra-op threads, 0 = one per core (default: ${DEFAULTS.threads})
  --recompute             gradient checkpointing: recompute each UNet ResnetBlock2D / Transformer2DModel in the
                          backward pass instead of keeping its activations (less memory, about one more forward)
  --plan                  print the predicted peak memory of a step for these flags (model, --size, --batch,
                          --objective, --train, --device, --precision) from configs and file headers only: no
                          weights read, no step run (lib/train/plan.ts; README "Memory planner"); --ip-adapter may
                          name a preset (ip-adapter-plus-sdxl, ip-adapter-plus-sd15) instead of a file
  -h, --help              this help

Writes train/train-log.jsonl (step, loss, lr, epoch, gradNorm, seconds and the objective's logs:
mse, refMse, dpoLoss, keep, implicitAcc), train/checkpoints/step-N/, and at the end of the epoch
train/ip-adapter-epoch-<n>.safetensors (generate-images --ip-adapter reads it) with a summary .json.

${MODEL_LAYOUT_HELP}`;

if (import.meta.main) {
  await runMain(async () => {
    const parse = () => parseArgs({
      args: Bun.argv.slice(2),
      options: {
        run: { type: "string" }, model: { type: "string" }, "ip-adapter": { type: "string" }, "image-encoder": { type: "string" },
        objective: { type: "string", default: DEFAULTS.objective }, epoch: { type: "string", default: String(DEFAULTS.epoch) },
        lr: { type: "string", default: String(DEFAULTS.lr) }, "min-lr": { type: "string", default: String(DEFAULTS.minLr) },
        "weight-decay": { type: "string", default: String(DEFAULTS.weightDecay) }, batch: { type: "string", default: String(DEFAULTS.batch) },
        "grad-accum": { type: "string", default: String(DEFAULTS.gradAccum) }, clip: { type: "string", default: String(DEFAULTS.clip) },
        warmup: { type: "string", default: String(DEFAULTS.warmup) }, schedule: { type: "string", default: DEFAULTS.schedule },
        beta: { type: "string", default: String(DEFAULTS.beta) }, lambda: { type: "string", default: String(DEFAULTS.lambda) },
        "ip-scale": { type: "string", default: String(DEFAULTS.ipScale) }, train: { type: "string", default: DEFAULTS.train },
        size: { type: "string" }, seed: { type: "string", default: String(DEFAULTS.seed) },
        "save-every": { type: "string", default: String(DEFAULTS.saveEvery) }, "max-steps": { type: "string" }, "stop-at": { type: "string" },
        resume: { type: "boolean", default: false }, force: { type: "boolean", default: false }, recompute: { type: "boolean", default: false },
        device: { type: "string", default: DEFAULTS.device }, state: { type: "string", default: DEFAULTS.state }, threads: { type: "string", default: String(DEFAULTS.threads) },
        plan: { type: "boolean", default: false }, precision: { type: "string", default: "fp32" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    let v: ReturnType<typeof parse>["values"];
    try {
      v = parse().values;
    } catch (e) {
      // Unknown flags, missing values, stray positionals: usage errors (exit 2), not bugs.
      throw new UsageError(`${(e as Error).message}\n\n${HELP}`);
    }
    if (v.help) return console.log(HELP);
    const num = (x: string | undefined) => (x === undefined ? undefined : Number(x));
    if (v.plan) {
      // Shapes only: no run directory, no weights read, no session (lib/train/plan.ts).
      for (const [flag, x] of [["--model", v.model], ["--ip-adapter", v["ip-adapter"]], ["--image-encoder", v["image-encoder"]]] as const) if (!x) throw new UsageError(`--plan needs ${flag}\n\n${HELP}`);
      return console.log(planDpoEpoch({
        model: v.model!, ipAdapter: v["ip-adapter"]!, imageEncoder: v["image-encoder"]!, objective: v.objective as Objective, batch: Number(v.batch), size: num(v.size),
        train: v.train!, trainable: TRAIN_SETS.includes(v.train as TrainSet) ? trainableFor(v.train as TrainSet) : undefined, ipScale: Number(v["ip-scale"]), device: v.device!, precision: v.precision as Precision,
        recompute: v.recompute,
      }).text);
    }
    const t0 = performance.now();
    const res = await run({
      run: v.run!, model: v.model!, ipAdapter: v["ip-adapter"]!, imageEncoder: v["image-encoder"]!, objective: v.objective as Objective, epoch: num(v.epoch),
      lr: num(v.lr), minLr: num(v["min-lr"]), weightDecay: num(v["weight-decay"]), batch: num(v.batch), gradAccum: num(v["grad-accum"]),
      clip: num(v.clip), warmup: num(v.warmup), schedule: v.schedule as ScheduleName, beta: num(v.beta), lambda: num(v.lambda), ipScale: num(v["ip-scale"]),
      train: v.train as TrainSet, size: num(v.size), seed: num(v.seed), saveEvery: num(v["save-every"]), device: v.device as Device, state: v.state as StateWhere, threads: num(v.threads),
      maxSteps: num(v["max-steps"]), stopAt: num(v["stop-at"]), resume: v.resume, force: v.force, recompute: v.recompute,
      precision: v.precision as ComputePrecision,
      // One JSON line per step for logs; a person at a terminal gets the progress bar instead.
      onStep: process.stderr.isTTY ? undefined : (row) => console.log(JSON.stringify(row)),
    });
    if (world().rank !== 0) return;
    if (res.alreadyDone) return console.log(`epoch ${res.epoch} had already finished (${res.endStep - res.startStep} steps) -> ${res.out}`);
    const loss = (x?: number) => (x === undefined ? "n/a" : x.toPrecision(4));
    console.log(
      `epoch ${res.epoch} ${res.finished ? "finished" : "stopped"} at step ${res.endStep} (${res.endStep - res.startStep}/${res.steps} of the epoch, ${res.pairs} pairs) ` +
        `in ${((performance.now() - t0) / 1000).toFixed(1)} s (${res.secondsPerStep.toFixed(3)} s/step, ${res.trainable.values} trained values in ${res.trainable.names} tensors` +
        `${res.skipped ? `, ${res.skipped} steps skipped (NaN/Inf)` : ""}); loss ${loss(res.firstLoss)} -> ${loss(res.lastLoss)}` +
        `${res.finished ? ` -> ${res.out}` : "; --resume continues"}`,
    );
  });
}
