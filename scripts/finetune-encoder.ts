// The self-supervised patch task (DESIGN.md section 1, item 2): finetune the last blocks of the
// patch encoder so that the same image location seen in two augmented views gives nearest-neighbour
// patch features. Two views of one image (random resized crop, flip, colour jitter) have known
// patch correspondences (lib/train/views.ts); InfoNCE over the corresponding patches of a batch of
// view pairs; AdamW on the trainable weights; patch-matching accuracy on held-out view pairs
// before and after.
//
//   bun scripts/finetune-encoder.ts --run data/runs/r1                     # the run's references
//   bun scripts/finetune-encoder.ts --images photos/ --encoder checkpoints/dinov2-small --steps 2000
//
// Writes <out>/ (default checkpoints/<name>/): weights.safetensors (the trained weights only, in
// the encoder's own key layout, laid over the base weights when loaded), optimizer.safetensors,
// state.json (step, rng, config with `encoder` = the base encoder, accuracyBefore/After),
// train-log.jsonl (one row per step) and step-N/ checkpoints every --save-every steps. The folder
// is itself an encoder: `score-patches --encoder <out>` uses the finetuned weights.
// Resumable: --resume continues from the newest step-N/ and ends with the same weights as an
// uninterrupted run (each step's images and views come from an Rng seeded by (seed, step)); the
// image folders are recorded relative to <out>, so a copied run folder resumes too. --force trains
// aside (<out>/.staging/) and replaces the old checkpoint only when this invocation succeeds.
//
// A step takes --grad-accum micro-batches of --batch view pairs (InfoNCE's negatives stay within a
// micro-batch). Data parallel, `mpirun -np W bun scripts/finetune-encoder.ts ...`: each rank takes
// --grad-accum / W of them and the gradients are averaged over the ranks (lib/dist) before AdamW,
// so the result does not depend on W; rank 0 alone writes <out> and run.json.
//
// --state device (the default on --device webgpu with one process, as in dpo-epoch): the trainable
// weights and AdamW's moments stay on the device between steps, and AdamW, the clip, the NaN/Inf
// guard and the --grad-accum sums run inside the training graph (lib/train/resident.ts); they come
// back for each checkpoint and for the held-out accuracy at the end.

import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { basename, extname, join, relative, resolve, sep } from "node:path";
import { type } from "arktype";
import { allReduceMeanGrads, barrier, checkSame, shareOf, world } from "../lib/dist/index.ts";
import { ResidentTrainer, STATE_WHERE, type StateWhere } from "../lib/train/resident.ts";
import * as G from "../lib/graph/index.ts";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { PRECISIONS, PRECISION_HELP, type Precision as ComputePrecision, withPrecision } from "../lib/graph/precision.ts";
import { cleanOrphanTemps } from "../lib/io/atomic.ts";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { type RgbImage, loadImage, resizeBicubic, toCHW } from "../lib/io/images.ts";
import { appendJsonl, readJsonlAll, repairJsonlTail, writeJsonl } from "../lib/io/manifest.ts";
import { progress } from "../lib/io/progress.ts";
import { existingRunDir, fromPortablePath, isSafeId, runPaths, stableHash } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { ReferenceRow, TrainLogRow } from "../lib/io/schemas.ts";
import { Staging } from "../lib/io/staging.ts";
import type { PatchEncoder } from "../lib/models/encoder.ts";
import { DEFAULT_PATCH_ENCODER, RAW_ENCODER, encoderFolder, loadGraphEncoder } from "../lib/models/featurizer.ts";
import { Params } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW, GradAccumulator, allFinite, clipGradNorm, globalNorm } from "../lib/train/adamw.ts";
import { latestCheckpoint, loadCheckpoint, restoreOptimizer, saveCheckpoint } from "../lib/train/checkpoint.ts";
import { infoNCE } from "../lib/train/infonce.ts";
import { type ScheduleName, learningRate } from "../lib/train/schedule.ts";
import { type ViewPair, type ViewOptions, VIEW_DEFAULTS, viewPairs } from "../lib/train/views.ts";
import { type Precision, planFinetuneEncoder } from "../lib/train/plan.ts";

export interface FinetuneOptions {
  /** Folder(s) of images (searched recursively: jpg, jpeg, png, webp). */
  images?: string | string[];
  /** A run directory: trains on the images of its references.jsonl. */
  run?: string;
  /** Base encoder: "mobilenet_v2" (embedded, pretrained), "default" (the shipped finetuned one), a ViT/DINOv2 folder or a finetuned checkpoint. */
  encoder: string;
  /** MobileNetV2 feature map (out_relu 7x7, block_13_expand_relu 14x14); ViTs have one. */
  featureLayer?: string;
  /** Side of each view in pixels (default: the encoder's input size). */
  imageSize?: number;
  /** Last blocks to train (MobileNetV2: block_{17-K..16}_* + Conv_1; ViT: encoder.layer.{L-K..L-1} + layernorm). */
  trainBlocks: number;
  temperature: number;
  lr: number;
  minLr: number;
  weightDecay: number;
  schedule: ScheduleName;
  warmup: number;
  steps: number;
  /** Image pairs (two views of one image) per micro-batch: InfoNCE's negatives are the micro-batch's patches. */
  batch: number;
  /** Micro-batches per step (split over the ranks of a data-parallel run). */
  gradAccum: number;
  /** Corresponding patches per view pair in the loss (0: a third of the patch grid). */
  matches: number;
  /** Gradient clipping: max global norm (0: off). */
  clip: number;
  /** Held-out images (never trained on) and view pairs per held-out image for the accuracy. */
  holdout: number;
  holdoutViews: number;
  /** RandomResizedCrop area share range and colour-jitter strength. */
  cropScale: [number, number];
  jitter: number;
  seed: number;
  /** Output folder (default checkpoints/<name>). */
  out?: string;
  name?: string;
  /** Write step-N/ every this many steps (0: only at the end / at --stop-at). */
  saveEvery: number;
  resume: boolean;
  /** End this invocation after this many completed steps (as if preempted); --resume continues. */
  stopAt?: number;
  force: boolean;
  device: Device;
  /** Compute dtype (lib/graph/precision.ts; default fp32): fp16/bf16 compute with fp32 master weights, gradients and AdamW. */
  precision?: ComputePrecision;
  /** Where the trainable weights and AdamW state live between steps (see dpo-epoch's --state): auto = device on webgpu with one process. */
  state: StateWhere;
  threads: number;
  /** Gradient checkpointing: each ViT block keeps only its input for the backward pass and is recomputed there. */
  recompute: boolean;
  /** Called with every logged step (the CLI prints JSON lines when stderr is not a terminal). */
  onStep?: (row: TrainLogRow) => void;
}

export const DEFAULTS = {
  encoder: RAW_ENCODER, trainBlocks: 2, temperature: 0.07, lr: 1e-4, minLr: 1e-5, weightDecay: 0.01, schedule: "cosine", warmup: 20,
  steps: 500, batch: 4, gradAccum: 1, matches: 0, clip: 1.0, holdout: 8, holdoutViews: 4, cropScale: [0.25, 1], jitter: 0.4, seed: 0, saveEvery: 100,
  resume: false, force: false, device: "cpu", state: "auto", threads: 0, recompute: false,
} as const satisfies Partial<FinetuneOptions>;

/** What run() takes: the images (or a run) and whatever else the caller changes; the rest are DEFAULTS. */
export type FinetuneInput = Partial<FinetuneOptions>;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  "precision?": type.enumerated(...PRECISIONS),
  "images?": type("string > 0").or(type("string > 0").array()), "run?": "string > 0", encoder: "string > 0", "featureLayer?": "string > 0",
  trainBlocks: "number.integer > 0", temperature: "number > 0", lr: "number > 0", minLr: "number >= 0", weightDecay: "number >= 0",
  schedule: "'constant' | 'warmup' | 'cosine'", warmup: "number.integer >= 0", steps: "number.integer > 0", batch: "number.integer > 0", gradAccum: "number.integer > 0",
  matches: "number.integer >= 0", clip: "number >= 0", holdout: "number.integer >= 0", holdoutViews: "number.integer > 0",
  cropScale: ["0 < number <= 1", "0 < number <= 1"], jitter: "0 <= number < 1", seed: "number.integer >= 0", "out?": "string > 0", "name?": "string > 0",
  saveEvery: "number.integer >= 0", resume: "boolean", "stopAt?": "number.integer > 0", force: "boolean",
  device: type.enumerated(...DEVICES), state: type.enumerated(...STATE_WHERE), threads: "number.integer >= 0", recompute: "boolean", "imageSize?": "number.integer >= 32",
});

export interface FinetuneResult {
  out: string;
  /** Steps completed in total (this invocation and earlier ones). */
  step: number;
  finished: boolean;
  accuracyBefore?: number;
  accuracyAfter?: number;
  /** Mean wall seconds per training step in this invocation. */
  secondsPerStep: number;
  /** Steps skipped by the NaN/Inf guard in this invocation. */
  skipped: number;
  trainImages: number;
  holdoutImages: number;
  trainable: { names: number; values: number };
}

const IMAGE_EXTS = new Set([".jpg", ".jpeg", ".png", ".webp"]);
/** Config keys that must match for --resume (steps may grow; device/threads/save-every are free). */
const RESUME_KEYS = ["encoder", "featureLayer", "imageSize", "trainBlocks", "temperature", "lr", "minLr", "weightDecay", "schedule", "warmup", "batch", "gradAccum", "matches", "clip", "holdout", "holdoutViews", "cropScale", "jitter", "seed", "images"] as const;

/** Image files under `dir`, recursively, sorted (so the data order is the same on every machine). */
export function listImages(dir: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`--images ${dir} is not a folder`);
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      if (e.name.startsWith(".")) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (IMAGE_EXTS.has(extname(e.name).toLowerCase())) out.push(p);
    }
  };
  walk(resolve(dir));
  return out;
}

async function imagesFromRun(run: string): Promise<string[]> {
  const paths = runPaths(run);
  if (!existsSync(paths.references)) throw new UserError(`${paths.references} is missing: finetune-encoder --run trains on the run's reference images (run generate-images --mode reference first, or pass --images <folder>)`);
  return (await readJsonlAll(paths.references, ReferenceRow)).map((r) => paths.resolve(r.image));
}

/**
 * Which weights "the last K blocks" are: the last K blocks *up to the feature layer the scorer
 * reads*, so the finetune always trains what score-patches uses. MobileNetV2 (Keras names): for
 * out_relu, block_{17-K..16}_* plus the last 1x1 conv Conv_1 / Conv_1_bn; for block_N_* layers,
 * block_{N-K+1..N}_*. Batch-norm statistics stay frozen (they are buffers, not parameters, in every
 * framework). ViT / DINOv2: encoder.layer.{L-K..L-1}.* plus the final layernorm.
 */
export function trainableWeights(encoder: PatchEncoder, blocks: number, featureLayer?: string): (name: string) => boolean {
  if (!Number.isInteger(blocks) || blocks < 1) throw new UsageError(`--train-blocks must be a positive integer, got ${blocks}`);
  if ("keras" in encoder) {
    const layer = featureLayer ?? "out_relu";
    const at = /^block_(\d+)_/.exec(layer);
    const last = at ? Number(at[1]) : 16;
    if (!at && layer !== "out_relu") throw new UsageError(`--feature-layer ${layer}: MobileNetV2's patch grids are out_relu and block_N_* layers`);
    if (blocks > last) throw new UsageError(`--train-blocks ${blocks}: MobileNetV2 has ${last} blocks up to ${layer} (block_1 .. block_${last})`);
    const first = last - blocks + 1;
    return (name) => {
      const slash = name.indexOf("/");
      const l = slash < 0 ? name : name.slice(0, slash);
      if (/\/moving_(mean|variance)$/.test(name)) return false;
      const m = /^block_(\d+)_/.exec(l);
      return (!at && (l === "Conv_1" || l === "Conv_1_bn")) || (!!m && Number(m[1]) >= first && Number(m[1]) <= last);
    };
  }
  const cfg = (encoder as { config?: { numLayers?: number } }).config;
  if (cfg?.numLayers) {
    const L = cfg.numLayers;
    if (blocks > L) throw new UsageError(`--train-blocks ${blocks}: the encoder has ${L} transformer layers`);
    return (name) => {
      const m = /(?:^|\.)encoder\.layer\.(\d+)\./.exec(name);
      if (m) return Number(m[1]) >= L - blocks;
      return /(?:^|\.)layernorm\.(weight|bias)$/.test(name);
    };
  }
  throw new UserError(`encoder ${encoder.name}: finetune-encoder knows the blocks of MobileNetV2 and ViT/DINOv2 encoders only`);
}

/** An Rng for one purpose and index, independent of everything drawn before (resume needs no history). */
const rngFor = (seed: number, tag: string, index: number) => new Rng(stableHash(`${seed}:${tag}:${index}`));

/** Patch features [n, C, h*w] of a batch -> top-1 patch matching accuracy over the pairs' correspondences. */
function matchAccuracy(feats: Float32Array, C: number, hw: number, pairs: ViewPair[], offsetA: (i: number) => number, offsetB: (i: number) => number): { correct: number; total: number } {
  let correct = 0, total = 0;
  const norms = (base: number) => {
    const n = new Float32Array(hw);
    for (let c = 0; c < C; c++) for (let k = 0; k < hw; k++) n[k]! += feats[base + c * hw + k]! ** 2;
    for (let k = 0; k < hw; k++) n[k] = 1 / Math.sqrt(n[k]! + 1e-12);
    return n;
  };
  pairs.forEach((p, i) => {
    const a = offsetA(i) * C * hw, b = offsetB(i) * C * hw;
    const nb = norms(b);
    for (let m = 0; m < p.matches.a.length; m++) {
      const ka = p.matches.a[m]!;
      let best = -Infinity, arg = -1;
      for (let kb = 0; kb < hw; kb++) {
        let dot = 0;
        for (let c = 0; c < C; c++) dot += feats[a + c * hw + ka]! * feats[b + c * hw + kb]!;
        dot *= nb[kb]!; // |a| is the same for every candidate: it does not change the argmax
        if (dot > best) [best, arg] = [dot, kb];
      }
      total++;
      if (arg === p.matches.b[m]) correct++;
    }
  });
  return { correct, total };
}

export async function run(input: FinetuneInput): Promise<FinetuneResult> {
  const o = resolveOptions<FinetuneOptions>(OPTIONS, DEFAULTS, input);
  const folders = o.images === undefined ? [] : typeof o.images === "string" ? [o.images] : o.images;
  if (!!folders.length === !!o.run) throw new UsageError("give exactly one of --images <folder> (repeatable) or --run <dir>");
  if (o.cropScale[0] > o.cropScale[1]) throw new UsageError(`--crop-scale ${o.cropScale.join(",")}: lo must not exceed hi`);
  // --name is a folder under checkpoints/: "../../x" would write elsewhere (--out is the way to do that).
  if (o.name !== undefined && !isSafeId(o.name)) throw new UsageError(`--name ${JSON.stringify(o.name)}: a name under checkpoints/ may only hold [A-Za-z0-9._-] (no "/" or ".."); pass --out <folder> to write elsewhere`);
  const dist = world();
  if (o.gradAccum % dist.size !== 0) {
    throw new UsageError(`--grad-accum ${o.gradAccum} cannot be split over ${dist.size} ranks: each rank takes --grad-accum / ranks micro-batches of --batch view pairs per step, so pass a multiple of ${dist.size}`);
  }
  // Rank 0 alone records the step in run.json (and writes <out>).
  if (!o.run || dist.rank !== 0) return withPrecision(o.precision ?? "fp32", o.device, () => finetune(o, folders));
  const { onStep: _s, ...recorded } = o;
  return withPrecision(o.precision ?? "fp32", o.device, () => recordStep(existingRunDir(o.run!), "finetune-encoder", recorded, () => finetune(o, folders)));
}

async function finetune(o: FinetuneOptions, folders: string[]): Promise<FinetuneResult> {
  const dist = world();
  const lead = dist.rank === 0;
  const files = folders.length ? folders.flatMap(listImages) : await imagesFromRun(o.run!);
  if (files.length === 0) {
    throw new UserError(folders.length ? `no images (jpg, jpeg, png, webp) found under ${folders.map((f) => resolve(f)).join(", ")}; point --images at a folder of photos` : `${runPaths(o.run!).references} lists no references; generate them first`);
  }
  for (const f of files) if (!existsSync(f)) throw new UserError(`image ${f} does not exist`);
  if (o.holdout >= files.length) {
    throw new UserError(`--holdout ${o.holdout} leaves no training images: found only ${files.length} image(s) (pass a smaller --holdout, or --holdout 0 to skip the accuracy check)`);
  }
  if (o.holdout > 0 && o.holdoutViews < 1) throw new UsageError("--holdout-views must be at least 1");

  // ---- the encoder, its trainable weights, and the training graph (compiled once)
  const ge = loadGraphEncoder(o.encoder);
  const enc = ge.encoder;
  const S = o.imageSize ?? enc.imageSize;
  const isTrainable = trainableWeights(enc, o.trainBlocks, o.featureLayer);
  const B = o.batch;

  const build = (n: number) => {
    const g = new G.Graph();
    const p = new Params(g, ge.source, { trainable: isTrainable });
    const images = g.input("images", [n, 3, S, S]);
    const { patches } = enc.forward(p, images, o.featureLayer);
    return { g, p, images, patches };
  };
  const probe = build(2 * B);
  const [, C, h, w] = probe.patches.shape as [number, number, number, number];
  const hw = h * w;
  const M = o.matches > 0 ? o.matches : Math.max(4, Math.round(hw / 3));
  if (M > hw) throw new UsageError(`--matches ${M} exceeds the ${h}x${w} patch grid of ${enc.name}`);
  const flat = G.reshape(G.transpose(probe.patches, [0, 2, 3, 1]), [2 * B * hw, C]);
  const idxA = probe.g.input("index_a", [B * M], "int64");
  const idxB = probe.g.input("index_b", [B * M], "int64");
  const loss = infoNCE(G.gather(flat, idxA), G.gather(flat, idxB), o.temperature);
  const candidates = [...probe.p.trainable];
  const grads = G.grad(loss, candidates.map(([, t]) => t), undefined, { recompute: o.recompute });
  // Weights the loss does not reach (e.g. blocks after a shallower --feature-layer) are not trained.
  const trained = candidates.flatMap(([name, t], i) => (grads[i] ? [{ name, shape: t.shape, grad: grads[i]! }] : []));
  if (trained.length === 0) {
    throw new UserError(`none of the last ${o.trainBlocks} block(s) of ${enc.name} affect feature layer ${o.featureLayer ?? "(default)"}; use a later --feature-layer or more --train-blocks`);
  }
  const outputs: Record<string, G.Tensor> = { loss };
  trained.forEach((t, i) => (outputs[`grad_${i}`] = t.grad));
  const compileOpts = { device: o.device, threads: o.threads };
  if (o.state === "device" && dist.size > 1) {
    throw new UsageError(`--state device keeps the weights and AdamW on the device, but ${dist.size} ranks average their gradients on the host (lib/dist): run one process, or pass --state host`);
  }
  const onDevice = o.state === "device" || (o.state === "auto" && o.device === "webgpu" && dist.size === 1);
  // --state device: the same loss, with AdamW, clip, guard and accumulation appended (lib/train/resident.ts).
  const res = onDevice
    ? new ResidentTrainer((g) => {
        const p = new Params(g, ge.source, { trainable: isTrainable });
        const { patches } = enc.forward(p, g.input("images", [2 * B, 3, S, S]), o.featureLayer);
        const f = G.reshape(G.transpose(patches, [0, 2, 3, 1]), [2 * B * hw, C]);
        const l = infoNCE(G.gather(f, g.input("index_a", [B * M], "int64")), G.gather(f, g.input("index_b", [B * M], "int64")), o.temperature);
        return { loss: l, params: new Map(trained.map((t) => [t.name, p.trainable.get(t.name)!])) };
      }, undefined, { lr: o.lr, weightDecay: o.weightDecay }, compileOpts, undefined, { clip: o.clip, gradAccum: o.gradAccum, recompute: o.recompute })
    : undefined;
  const trainStep = res ? undefined : await G.compile(outputs, compileOpts);

  const EVAL_BATCH = 8;
  const evalNet = build(EVAL_BATCH);
  const evalStep = await G.compile({ patches: evalNet.patches }, compileOpts);
  const evalWeights = evalStep.inputs.filter((i) => i.name !== "images").map((i) => i.name);

  // ---- data: a seeded hold-out split; images loaded on first use (long side capped at 2 x the view size)
  const order = rngFor(o.seed, "split", 0).shuffle(files.map((_, i) => i));
  const heldOut = order.slice(0, o.holdout).sort((a, b) => a - b);
  const train = order.slice(o.holdout).sort((a, b) => a - b);
  const cache = new Map<number, RgbImage>();
  const image = async (i: number): Promise<RgbImage> => {
    let img = cache.get(i);
    if (!img) {
      img = await loadImage(files[i]!);
      const cap = 2 * S, long = Math.max(img.width, img.height);
      if (long > cap) img = resizeBicubic(img, Math.max(1, Math.round((img.width * cap) / long)), Math.max(1, Math.round((img.height * cap) / long)));
      if (cache.size >= 512) cache.delete(cache.keys().next().value!);
      cache.set(i, img);
    }
    return img;
  };
  const viewOpts: Partial<ViewOptions> & Pick<ViewOptions, "size" | "grid"> = {
    size: S, grid: [h, w], scale: o.cropScale, minMatches: M,
    jitter: { brightness: o.jitter, contrast: o.jitter, saturation: o.jitter },
  };
  // Epoch e visits the training images in the order of a permutation seeded by (seed, e).
  const perms = new Map<number, number[]>();
  const sampleAt = (k: number) => {
    const e = Math.floor(k / train.length);
    let perm = perms.get(e);
    if (!perm) perms.set(e, (perm = rngFor(o.seed, "epoch", e).shuffle([...train])));
    return perm[k % train.length]!;
  };

  // ---- output folder, fresh or resumed
  // The base as a name that means the same thing later: "default" moves with the shipped encoder.
  const base = o.encoder === "default" ? "patch-encoder" : o.encoder;
  const name = o.name ?? `${encoderFolder(base) ? basename(encoderFolder(base)!) : base}-ssl`;
  const out = resolve(o.out ?? join("checkpoints", name));
  if (out === DEFAULT_PATCH_ENCODER) throw new UserError(`${out} is the shipped patch encoder; finetune into another --out (make patch-encoder writes data/patch-encoder) and copy it over once you trust it`);
  if (lead) cleanOrphanTemps(out, 1);
  // A forced run trains aside and swaps in at the end; a failure leaves the old checkpoint as it was.
  const stage = new Staging(out, "finetune");
  if (lead) stage.recover();
  // The other ranks read <out> once rank 0 has recovered it; rank 0 changes nothing they read before the first step's all-reduce.
  await barrier();
  const dest = o.force ? stage.dir : out;
  const logPath = join(dest, "train-log.jsonl");
  const imagesAt = (f: (path: string) => string) => (folders.length === 1 ? f(folders[0]!) : folders.length ? folders.map(f) : f(o.run!));
  const config = {
    encoder: base, featureLayer: o.featureLayer ?? null, imageSize: S, trainBlocks: o.trainBlocks, temperature: o.temperature,
    lr: o.lr, minLr: o.minLr, weightDecay: o.weightDecay, schedule: o.schedule, warmup: o.warmup, steps: o.steps, batch: B, matches: M,
    ...(o.gradAccum > 1 ? { gradAccum: o.gradAccum } : {}), clip: o.clip, holdout: o.holdout, holdoutViews: o.holdoutViews, cropScale: o.cropScale, jitter: o.jitter, seed: o.seed,
    // Relative to <out> (a copied run folder holding both still resumes), and absolute (an <out> moved alone still resumes).
    images: imagesAt((f) => relative(out, resolve(f)).split(sep).join("/") || "."), imagesAbsolute: imagesAt((f) => resolve(f)),
    patchGrid: [C, h, w], trained: trained.map((t) => t.name),
  };
  const where = (v: unknown) => JSON.stringify(typeof v === "string" ? fromPortablePath(out, v) : Array.isArray(v) ? v.map((x) => fromPortablePath(out, String(x))) : v ?? null);
  const sameImages = (saved: Record<string, unknown>) => where(saved.images) === where(config.images) || JSON.stringify(saved.imagesAbsolute ?? saved.images) === JSON.stringify(config.imagesAbsolute);
  const stepDirs = () => (existsSync(out) ? readdirSync(out).filter((d) => /^step-\d+$/.test(d)) : []);
  const resumeFrom = o.resume && !o.force ? latestCheckpoint(out) : undefined;
  if (!resumeFrom && !o.force && (existsSync(join(out, "state.json")) || stepDirs().length)) {
    throw new UserError(`${out} already holds a finetune checkpoint${o.resume ? " but no complete step-N/ to resume from" : ""}: ${o.resume ? "" : "pass --resume to continue it, "}--force to start over, or choose another --out / --name`);
  }
  const oldFiles = [...stepDirs(), ...["weights.safetensors", "optimizer.safetensors", "state.json", "train-log.jsonl"].filter((f) => existsSync(join(out, f)))];
  if (o.force && lead) stage.begin();
  // A fresh start over leftovers of a run killed before its first checkpoint (no state.json): those go.
  else if (!resumeFrom && lead) for (const f of oldFiles) rmSync(join(out, f), { recursive: true, force: true });
  if (lead) mkdirSync(dest, { recursive: true });
  const params = new Map<string, Float32Array>();
  const opt = new AdamW({ lr: o.lr, weightDecay: o.weightDecay });
  let start = 0;
  let accuracyBefore: number | undefined;
  let skippedTotal = 0;
  if (resumeFrom) {
    const ck = await loadCheckpoint(resumeFrom);
    const saved = ck.state.config;
    const same = (k: string) => (k === "images" ? sameImages(saved) : JSON.stringify(saved[k] ?? null) === JSON.stringify((config as Record<string, unknown>)[k] ?? null));
    const diff = RESUME_KEYS.filter((k) => !same(k));
    if (diff.length) {
      throw new UserError(`${resumeFrom} was trained with other settings (${diff.map((k) => `${k}: ${JSON.stringify(saved[k])} there, ${JSON.stringify(config[k])} now`).join("; ")}); resume with the same flags or start over with --force`);
    }
    for (const t of trained) {
      const v = ck.params.get(t.name);
      if (!v) throw new UserError(`${resumeFrom}/weights.safetensors has no "${t.name}"; it was written for other trainable weights`);
      params.set(t.name, v);
    }
    restoreOptimizer(opt, ck);
    start = ck.state.step;
    accuracyBefore = ck.state.accuracyBefore as number | undefined;
    skippedTotal = (ck.state.skipped as number | undefined) ?? 0;
    // The log may run past the checkpoint (a crash after it): keep only the steps before it.
    if (lead && existsSync(logPath)) {
      await repairJsonlTail(logPath);
      await writeJsonl(logPath, (await readJsonlAll(logPath, TrainLogRow)).filter((r) => r.step < start), TrainLogRow);
    }
  } else {
    for (const t of trained) params.set(t.name, Float32Array.from(ge.source.float32(t.name)));
  }

  res?.load(params, opt.m.size ? { m: opt.m, v: opt.v, t: opt.t } : undefined);
  /** The device's weights, moments and AdamW step on the host, for a checkpoint or the accuracy. */
  const download = async () => {
    if (res) for (const [n, v] of await res.downloadInto(opt)) params.set(n, v);
  };

  // ---- held-out accuracy: fixed view pairs, the same before and after
  const holdoutPairs: ViewPair[] = [];
  for (const i of heldOut) for (let v = 0; v < o.holdoutViews; v++) holdoutPairs.push(viewPairs(await image(i), rngFor(o.seed, `holdout-${i}`, v), viewOpts));
  const accuracy = async (): Promise<number | undefined> => {
    if (holdoutPairs.length === 0) return undefined;
    const per = 3 * S * S;
    const views = holdoutPairs.flatMap((p) => [p.a.image, p.b.image]);
    const feats = new Float32Array(views.length * C * hw);
    const weightFeeds: G.Feeds = {};
    for (const n of evalWeights) weightFeeds[n] = params.get(n)!;
    for (let i = 0; i < views.length; i += EVAL_BATCH) {
      const chunk = views.slice(i, i + EVAL_BATCH);
      const x = new Float32Array(EVAL_BATCH * per);
      chunk.forEach((v, k) => toCHW(v, enc.mean, enc.std, x, k * per));
      const r = await evalStep.run({ images: x, ...weightFeeds });
      feats.set((r.patches as Float32Array).subarray(0, chunk.length * C * hw), i * C * hw);
    }
    const { correct, total } = matchAccuracy(feats, C, hw, holdoutPairs, (i) => 2 * i, (i) => 2 * i + 1);
    return total ? correct / total : undefined;
  };
  if (accuracyBefore === undefined && lead) accuracyBefore = await accuracy();

  // ---- the loop
  const stop = Math.min(o.steps, o.stopAt ?? o.steps);
  const sched = { name: o.schedule, lr: o.lr, warmupSteps: o.warmup, totalSteps: o.steps, minLr: o.minLr };
  const state = (step: number, extra: Record<string, unknown> = {}) => ({
    step, rng: rngFor(o.seed, "step", step).state(), config, accuracyBefore, skipped: skippedTotal, ...extra,
  });
  const checkpointParams = () => new Map(trained.map((t) => [t.name, { shape: t.shape, data: params.get(t.name)! }]));
  const bar = progress(Math.max(0, stop - start), `finetune-encoder ${enc.name}`);
  const per = 3 * S * S;
  const x = new Float32Array(2 * B * per);
  const ia = new BigInt64Array(B * M), ib = new BigInt64Array(B * M);
  let badInARow = 0, skipped = 0, seconds = 0, done = 0;
  // This rank's micro-batches of each step; their mean gradient is averaged over the ranks.
  const share = shareOf(o.gradAccum, dist);
  const perRank = share.end - share.start;
  for (let step = start; step < stop; step++) {
    const t0 = performance.now();
    const acc = new GradAccumulator();
    const lr = learningRate(sched, step);
    let lossValue = 0;
    let onDeviceStep: { gradNorm: number; updated: boolean } | undefined;
    let gate = true;
    for (let mb = share.start; mb < share.end; mb++) {
      // Each micro-batch has its own images and Rng (micro-batch 0 draws as a step did before --grad-accum).
      const rng = mb === 0 ? rngFor(o.seed, "step", step) : rngFor(o.seed, `step-${mb}`, step);
      for (let b = 0; b < B; b++) {
        const pair = viewPairs(await image(sampleAt((step * o.gradAccum + mb) * B + b)), rng, viewOpts);
        toCHW(pair.a.image, enc.mean, enc.std, x, b * per);
        toCHW(pair.b.image, enc.mean, enc.std, x, (B + b) * per);
        const pick = rng.shuffle([...pair.matches.a.keys()]).slice(0, M);
        pick.forEach((m, k) => {
          ia[b * M + k] = BigInt(b * hw + pair.matches.a[m]!);
          ib[b * M + k] = BigInt((B + b) * hw + pair.matches.b[m]!);
        });
      }
      const feeds: G.Feeds = { images: x, index_a: ia, index_b: ib };
      if (res) {
        const r = await res.step(feeds, lr, gate);
        lossValue += r.loss / perRank;
        gate &&= Number.isFinite(r.loss);
        onDeviceStep = r;
        continue;
      }
      for (const t of trained) feeds[t.name] = params.get(t.name)!;
      const r = await trainStep!.run(feeds);
      lossValue += (r.loss as Float32Array)[0]! / perRank;
      acc.add(new Map(trained.map((t, i) => [t.name, r[`grad_${i}`] as Float32Array])));
    }
    const gradMap = acc.take();
    if (dist.size > 1) lossValue = (await allReduceMeanGrads(gradMap, { loss: lossValue })).loss!;
    if (onDeviceStep ? !onDeviceStep.updated : !Number.isFinite(lossValue) || !allFinite(gradMap.values())) {
      skipped++;
      skippedTotal++;
      if (lead) process.stderr.write(`finetune-encoder: step ${step}: ${Number.isFinite(lossValue) ? "non-finite gradients" : `loss ${lossValue}`}; step skipped\n`);
      if (++badInARow >= 5) throw new UserError(`finetune-encoder: 5 steps in a row had NaN/Inf loss or gradients (last: step ${step}); lower --lr (now ${o.lr}) or raise --temperature (now ${o.temperature})`);
    } else {
      badInARow = 0;
      let gradNorm: number;
      if (onDeviceStep) gradNorm = onDeviceStep.gradNorm;
      else {
        gradNorm = o.clip > 0 ? clipGradNorm(gradMap, o.clip) : globalNorm(gradMap.values());
        await opt.stepAsync(params, gradMap, lr); // threads for large sets (lib/train/adamw.ts), same bits
      }
      const dt = (performance.now() - t0) / 1000;
      const row: TrainLogRow = { step, loss: lossValue, lr, gradNorm, seconds: Math.round(dt * 1000) / 1000 };
      if (lead) await appendJsonl(logPath, row, TrainLogRow);
      if (lead) o.onStep?.(row);
    }
    seconds += (performance.now() - t0) / 1000;
    done++;
    bar.tick();
    const completed = step + 1;
    if ((o.saveEvery > 0 && completed % o.saveEvery === 0) || completed === stop) {
      await download();
      await checkSame(`weights after step ${completed}`, params.values());
      if (lead) await saveCheckpoint(join(dest, `step-${completed}`), checkpointParams(), opt, state(completed));
    }
  }
  bar.done();

  res?.dispose();
  const finished = stop >= o.steps;
  let accuracyAfter: number | undefined;
  if (finished && lead) {
    accuracyAfter = await accuracy();
    await saveCheckpoint(dest, checkpointParams(), opt, state(Math.max(stop, start), { accuracyAfter, finishedAt: new Date().toISOString() }));
  }
  if (o.force && lead) await stage.commit(oldFiles, ["state.json"]);
  return {
    out, step: Math.max(stop, start), finished, accuracyBefore, accuracyAfter, secondsPerStep: done ? seconds / done : 0, skipped,
    trainImages: train.length, holdoutImages: heldOut.length,
    trainable: { names: trained.length, values: trained.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0) },
  };
}

const HELP = `finetune-encoder: self-supervised patch finetuning of the patch encoder (InfoNCE over corresponding patches of two augmented views)

usage: bun scripts/finetune-encoder.ts (--images <folder> | --run <dir>) [options]

  --images <folder>       train on the images under this folder (recursively: jpg, jpeg, png, webp); repeat for several
  --run <dir>             train on the reference images of a run (references.jsonl)
  --encoder <spec>        mobilenet_v2 (embedded, pretrained), default (the shipped finetuned patch encoder),
                          a ViT/DINOv2 folder or a finetuned checkpoint (default: ${DEFAULTS.encoder})
  --feature-layer <name>  MobileNetV2 feature map: out_relu (7x7, default) or block_13_expand_relu (14x14)
  --image-size <px>       side of each view (default: the encoder's input size, 224 for MobileNetV2)
  --train-blocks <k>      last blocks to train up to the feature layer: MobileNetV2 block_{17-k..16} + Conv_1 (out_relu) or
                          block_{N-k+1..N} (block_N_*), ViT encoder.layer.{L-k..L-1} + layernorm (default: ${DEFAULTS.trainBlocks})
  --temperature <t>       InfoNCE temperature (default: ${DEFAULTS.temperature})
  --lr <x>                AdamW peak learning rate (default: ${DEFAULTS.lr})
  --min-lr <x>            final learning rate of the cosine schedule (default: ${DEFAULTS.minLr})
  --weight-decay <x>      AdamW decoupled weight decay (default: ${DEFAULTS.weightDecay})
  --schedule <s>          constant | warmup | cosine (default: ${DEFAULTS.schedule})
  --warmup <n>            linear warm-up steps (default: ${DEFAULTS.warmup})
  --steps <n>             training steps (default: ${DEFAULTS.steps})
  --batch <n>             image pairs (two views of one image) per micro-batch; InfoNCE's negatives are the
                          patches of one micro-batch (default: ${DEFAULTS.batch})
  --grad-accum <n>        micro-batches per step; a data-parallel run (mpirun -np W) splits them over its W ranks,
                          so W must divide n (default: ${DEFAULTS.gradAccum})
  --matches <n>           corresponding patches per view pair in the loss; view pairs are redrawn until they
                          have this many (default: ${DEFAULTS.matches} = a third of the patch grid, 16 for a 7x7 grid)
  --clip <x>              clip the global gradient norm to this (0 = off) (default: ${DEFAULTS.clip})
  --holdout <n>           images held out for the patch-matching accuracy (0 = no accuracy) (default: ${DEFAULTS.holdout})
  --holdout-views <n>     fixed view pairs per held-out image (default: ${DEFAULTS.holdoutViews})
  --crop-scale <lo,hi>    RandomResizedCrop area share range (default: ${DEFAULTS.cropScale.join(",")})
  --jitter <s>            colour jitter strength for brightness, contrast and saturation (default: ${DEFAULTS.jitter})
  --seed <n>              seeds the hold-out split, data order and views (default: ${DEFAULTS.seed})
  --out <dir>             output folder (default: checkpoints/<name>)
  --name <name>           output name under checkpoints/ (default: <encoder>-ssl, e.g. mobilenet_v2-ssl)
  --save-every <n>        write <out>/step-N/ every n steps (0 = only at the end) (default: ${DEFAULTS.saveEvery})
  --resume                continue from the newest <out>/step-N/ (same flags; the result equals an uninterrupted run)
  --stop-at <n>           end this invocation after step n with a checkpoint (as if preempted; --resume continues)
  --force                 start over, deleting the checkpoints already in <out>
  --device <d>            cpu | cuda | webgpu (default: ${DEFAULTS.device})
${PRECISION_HELP}
  --state <s>             where trainable weights and AdamW state live between steps: device (AdamW, clip, NaN/Inf guard
                          and accumulation in the training graph; weights down only for checkpoints) | host | auto =
                          device on webgpu with one process, host elsewhere (default: ${DEFAULTS.state})
  --threads <n>           intra-op threads, 0 = one per core (default: ${DEFAULTS.threads})
  --recompute             gradient checkpointing: recompute each ViT block in the backward pass instead of keeping
                          its activations (less memory, about one more forward)
  --plan                  print the predicted peak memory of a step for these flags (--encoder, --batch,
                          --image-size, --train-blocks, --device, --precision) from shapes only: no step run
                          (lib/train/plan.ts; README "Memory planner")
  -h, --help              this help

Writes <out>/weights.safetensors (trained weights only, in the encoder's key layout), optimizer.safetensors,
state.json (config.encoder names the base encoder, so --encoder <out> loads it) and train-log.jsonl.`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      images: { type: "string", multiple: true }, run: { type: "string" }, encoder: { type: "string", default: DEFAULTS.encoder },
      "feature-layer": { type: "string" }, "image-size": { type: "string" },
      "train-blocks": { type: "string", default: String(DEFAULTS.trainBlocks) },
      temperature: { type: "string", default: String(DEFAULTS.temperature) },
      lr: { type: "string", default: String(DEFAULTS.lr) }, "min-lr": { type: "string", default: String(DEFAULTS.minLr) },
      "weight-decay": { type: "string", default: String(DEFAULTS.weightDecay) },
      schedule: { type: "string", default: DEFAULTS.schedule }, warmup: { type: "string", default: String(DEFAULTS.warmup) },
      steps: { type: "string", default: String(DEFAULTS.steps) }, batch: { type: "string", default: String(DEFAULTS.batch) },
      "grad-accum": { type: "string", default: String(DEFAULTS.gradAccum) },
      matches: { type: "string", default: String(DEFAULTS.matches) }, clip: { type: "string", default: String(DEFAULTS.clip) },
      holdout: { type: "string", default: String(DEFAULTS.holdout) }, "holdout-views": { type: "string", default: String(DEFAULTS.holdoutViews) },
      "crop-scale": { type: "string", default: DEFAULTS.cropScale.join(",") }, jitter: { type: "string", default: String(DEFAULTS.jitter) },
      seed: { type: "string", default: String(DEFAULTS.seed) }, out: { type: "string" }, name: { type: "string" },
      "save-every": { type: "string", default: String(DEFAULTS.saveEvery) }, resume: { type: "boolean", default: false },
      "stop-at": { type: "string" }, force: { type: "boolean", default: false }, recompute: { type: "boolean", default: false },
      device: { type: "string", default: DEFAULTS.device }, state: { type: "string", default: DEFAULTS.state }, threads: { type: "string", default: String(DEFAULTS.threads) },
      plan: { type: "boolean", default: false }, precision: { type: "string", default: "fp32" },
      help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    const num = (x: string | undefined) => (x === undefined ? undefined : Number(x));
    if (v.plan) {
      // Shapes only: no images read, no step run (lib/train/plan.ts).
      const ge = loadGraphEncoder(v.encoder!);
      return console.log(planFinetuneEncoder({
        encoder: ge.encoder, source: ge.source, trainable: trainableWeights(ge.encoder, Number(v["train-blocks"]), v["feature-layer"]), featureLayer: v["feature-layer"],
        batch: Number(v.batch), imageSize: num(v["image-size"]), matches: Number(v.matches), temperature: Number(v.temperature), device: v.device!, precision: v.precision as Precision,
        recompute: v.recompute,
      }).text);
    }
    const t0 = performance.now();
    const res = await run({
      images: v.images, run: v.run, encoder: v.encoder, featureLayer: v["feature-layer"], out: v.out, name: v.name, resume: v.resume, force: v.force,
      trainBlocks: num(v["train-blocks"]), temperature: num(v.temperature), lr: num(v.lr), minLr: num(v["min-lr"]),
      weightDecay: num(v["weight-decay"]), schedule: v.schedule as ScheduleName, warmup: num(v.warmup), steps: num(v.steps), batch: num(v.batch), gradAccum: num(v["grad-accum"]),
      matches: num(v.matches), clip: num(v.clip), holdout: num(v.holdout), holdoutViews: num(v["holdout-views"]),
      precision: v.precision as ComputePrecision,
      cropScale: v["crop-scale"]!.split(",").map(Number) as [number, number], jitter: num(v.jitter), seed: num(v.seed), saveEvery: num(v["save-every"]),
      threads: num(v.threads), recompute: v.recompute, device: v.device as Device, state: v.state as StateWhere, imageSize: num(v["image-size"]), stopAt: num(v["stop-at"]),
      // One JSON line per step for logs; a person at a terminal gets the progress bar instead.
      onStep: process.stderr.isTTY ? undefined : (row) => console.log(JSON.stringify(row)),
    });
    if (world().rank !== 0) return;
    const pct = (a?: number) => (a === undefined ? "n/a" : `${(100 * a).toFixed(1)}%`);
    console.log(
      `${res.finished ? "finished" : "stopped"} at step ${res.step} in ${((performance.now() - t0) / 1000).toFixed(1)} s (${res.secondsPerStep.toFixed(3)} s/step, ` +
        `${res.trainable.values} trained values in ${res.trainable.names} tensors, ${res.trainImages} train / ${res.holdoutImages} held-out images` +
        `${res.skipped ? `, ${res.skipped} steps skipped (NaN/Inf)` : ""}); held-out patch matching top-1: ${pct(res.accuracyBefore)} before` +
        `${res.finished ? `, ${pct(res.accuracyAfter)} after` : ""} -> ${res.out}`,
    );
  });
}
