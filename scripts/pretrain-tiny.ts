// Makes the tiny world's personalized generator (DESIGN.md section 5): the same model code as
// SD + IP-Adapter-Plus at toy size, trained from scratch with the single-stage objective (`mse`,
// IP-Adapter's own training) on renders of the tiny world's catalogue (lib/tinyworld/catalogue.ts):
//
//   image prompt = the subject's clean reference (MobileNetV2 features -> Resampler)
//   reference row: "a photo of <subject>, isolated on a white background" -> the reference
//   generated row: with probability --scene-share a flat scene prompt -> the subject in that scene,
//                  otherwise the reference prompt -> the reference again (IP-Adapter's task)
//
// Everything trains: UNet, text encoder, image projection and the decoupled cross-attention.
// 64x64 images, pixel-unshuffle "VAE" (factor 4: 48 latent channels at 16x16). Held-out catalogue
// subjects never appear. A developer script: its output is committed as checkpoints/tiny.
//
//   bun scripts/pretrain-tiny.ts --out checkpoints/tiny-new --steps 12000
//
// It writes to a new folder: an existing --out is refused unless it holds this run's own
// checkpoints (then the run resumes from the newest, byte-identical to an uninterrupted run) or
// --overwrite is given.

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { type } from "arktype";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { appendJsonl } from "../lib/io/manifest.ts";
import { writeJsonAtomic } from "../lib/io/atomic.ts";
import type { RgbImage } from "../lib/io/images.ts";
import { loadDiffusionModel, loadIpAdapter } from "../lib/diffusion/model.ts";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../lib/diffusion/model-folder.ts";
import type { ResamplerConfig } from "../lib/models/ip-adapter.ts";
import { trainBpe } from "../lib/models/bpe-train.ts";
import { MemorySource } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW, allFinite, clipGradNorm } from "../lib/train/adamw.ts";
import { latestCheckpoint, loadCheckpoint, restoreOptimizer, saveCheckpoint } from "../lib/train/checkpoint.ts";
import { DiffusionTrainer, type PairExample, saveIpAdapter } from "../lib/train/diffusion.ts";
import { learningRate } from "../lib/train/schedule.ts";
import { type CatalogueEntry, FLAT_SCENES, catalogueSplit, tinyCorpus, tinyReferencePrompt, tinyScenePrompt } from "../lib/tinyworld/catalogue.ts";
import { type Subject, describeSubject, renderReference, renderScene } from "../lib/tinyworld/index.ts";

/** The generator's image size: the scorer tells the catalogue's subjects apart from 48 px up (bench/tinyworld-visibility.ts). */
export const TINY_SIZE = 64;
export const TINY_VAE_FACTOR = 4;
export const TINY_PROJECTION: ResamplerConfig = { kind: "resampler", embeddingDim: 1280, dim: 64, depth: 1, dimHead: 16, heads: 4, numQueries: 8, outputDim: 64, ffMult: 2 };

export function tinySpec(corpus: string[], prediction = "sample", channels: number[] = [64, 128]): ModelFolderSpec {
  const vocab = trainBpe(corpus, 300);
  const n = Object.keys(vocab.vocab).length;
  const latent = 3 * TINY_VAE_FACTOR * TINY_VAE_FACTOR;
  return {
    unet: {
      in_channels: latent, out_channels: latent, block_out_channels: channels, down_block_types: channels.map(() => "CrossAttnDownBlock2D"),
      up_block_types: channels.map(() => "CrossAttnUpBlock2D"), layers_per_block: 1, cross_attention_dim: 64, attention_head_dim: 4,
      norm_num_groups: 16, sample_size: TINY_SIZE / TINY_VAE_FACTOR,
    },
    vae: { _class_name: "PixelUnshuffleVAE", factor: TINY_VAE_FACTOR, in_channels: 3, scaling_factor: 1.0 },
    textEncoder: {
      architectures: ["CLIPTextModel"], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 77,
      hidden_act: "quick_gelu", vocab_size: n, projection_dim: 64, bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"],
    },
    tokenizer: vocab,
    scheduler: {
      _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012,
      // x0 ("sample") prediction. A toy UNet this narrow (64 channels for 48 pixel values per latent
      // cell) cannot reproduce per-pixel noise, which is what epsilon and (at low noise) v ask of
      // it: a v-prediction run still had v-MSE 0.88 of the target's power at t = 1 after 1,750
      // steps, and its samples kept full-strength pixel noise. Its clean-image target it can
      // learn, and the sampler's last step returns it. Epsilon also blew x0 errors up 12x at
      // t = 950. Clipping x0 to the image range steadies the sampler further.
      prediction_type: prediction, clip_sample: true, set_alpha_to_one: false, steps_offset: 1,
    },
  };
}

export interface PretrainOptions {
  out: string; steps: number; batch: number; lr: number; seed: number; threads: number; logEvery: number;
  prediction: "epsilon" | "v_prediction" | "sample";
  warmup: number;
  /** Share of examples whose generated row is a flat scene (the rest reconstruct the reference). */
  sceneShare: number;
  /** UNet block widths. */
  channels: number[];
  /** Checkpoint period in steps (0: only at the end). */
  saveEvery: number;
  /** End this invocation after this many steps in all (as if preempted); rerun to resume. */
  stopAt?: number;
  /** Replace an existing --out that is not this run's. */
  overwrite?: boolean;
  /** Write the newest checkpoint as a model folder here and stop (a look at a run in progress). */
  exportTo?: string;
  device?: Device;
}

export const DEFAULTS: Omit<PretrainOptions, "out"> = {
  steps: 4000, batch: 8, lr: 5e-4, seed: 0, threads: 0, logEvery: 50, prediction: "sample", warmup: 150, sceneShare: 0.5,
  channels: [64, 128], saveEvery: 500,
};

/** The options that decide the weights (a resume must match them). */
const decisive = (o: PretrainOptions) => ({ steps: o.steps, batch: o.batch, lr: o.lr, seed: o.seed, prediction: o.prediction, warmup: o.warmup, sceneShare: o.sceneShare, channels: o.channels });

/** A pretraining subject: its 224 px reference (the image prompt), its render at the generator's size, image features, text. */
export interface Known { subject: Subject; reference: RgbImage; small: RgbImage; features: Float32Array; text: string }

/** The subjects' references with their image features, encoded once (`batch` at a time, the trainer's batch). */
export async function referencePool(trainer: DiffusionTrainer, batch: number, entries: CatalogueEntry[]): Promise<Known[]> {
  const pool: Known[] = [];
  for (let i = 0; i < entries.length; i += batch) {
    const chunk = entries.slice(i, i + batch);
    const refs = chunk.map((e) => renderReference(e.subject, 224).image);
    const f = await trainer.encodeImages([...refs, ...Array(batch - refs.length).fill(null)]);
    const per = f.length / batch;
    chunk.forEach((e, j) => pool.push({ subject: e.subject, reference: refs[j]!, small: renderReference(e.subject, TINY_SIZE).image, features: f.slice(j * per, (j + 1) * per), text: describeSubject(e.subject).text }));
  }
  return pool;
}

/** One pair: a pretraining subject's reference, and its reference again or the subject in a flat scene. */
export function example(rng: Rng, pool: Known[], sceneShare: number): PairExample {
  const k = pool[rng.int(pool.length)]!;
  const referencePrompt = tinyReferencePrompt(k.text);
  const base = { reference: k.reference, referenceFeatures: k.features, referencePrompt };
  if (rng.uniform() >= sceneShare) return { ...base, generated: k.small, prompt: referencePrompt };
  const scene = FLAT_SCENES[rng.int(FLAT_SCENES.length)]!;
  return { ...base, generated: renderScene(k.subject, scene, TINY_SIZE, new Rng(rng.nextU32())).image, prompt: tinyScenePrompt(k.text, scene) };
}

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  out: "string > 0", steps: "number.integer > 0", batch: "number.integer > 0", lr: "number > 0", seed: "number.integer >= 0", threads: "number.integer >= 0",
  logEvery: "number.integer > 0", prediction: "'epsilon' | 'v_prediction' | 'sample'", warmup: "number.integer >= 0", sceneShare: "0 <= number <= 1",
  channels: type("number.integer").narrow((c, ctx) => (c >= 16 && c % 16 === 0) || ctx.mustBe("a multiple of 16")).array().atLeastLength(1),
  saveEvery: "number.integer >= 0", "stopAt?": "number.integer > 0", "overwrite?": "boolean", "exportTo?": "string > 0", "device?": type.enumerated(...DEVICES),
});

export async function run(opts: Partial<PretrainOptions> & { out: string }) {
  const o = resolveOptions<PretrainOptions>(OPTIONS, DEFAULTS, opts);
  const spec = tinySpec(tinyCorpus(), o.prediction, o.channels);
  const ckDir = join(o.out, "train");
  const config = decisive(o);
  // The run's own folder is marked with its settings: a rerun with the same ones resumes there.
  const marker = join(ckDir, "pretrain-config.json");
  if (existsSync(marker)) {
    const was = readFileSync(marker, "utf8");
    if (was !== JSON.stringify(config)) {
      throw new UserError(`${o.out} holds another pretraining run (${was}); this run is ${JSON.stringify(config)}. Use another --out, or delete ${ckDir}`);
    }
  } else if (existsSync(o.out) && readdirSync(o.out).length > 0 && !o.overwrite) {
    throw new UserError(`${o.out} exists and is not a folder of this run: pretrain-tiny writes to a new folder. Pass another --out, or --overwrite to replace it`);
  }
  mkdirSync(ckDir, { recursive: true });
  writeFileSync(marker, JSON.stringify(config));
  const latest = latestCheckpoint(ckDir);
  const init = join(o.out, "init");
  if (!existsSync(join(init, "model_index.json"))) {
    rmSync(init, { recursive: true, force: true });
    await writeModelFolder(`${init}.tmp`, spec, o.seed);
    await writeIpAdapter(join(`${init}.tmp`, "ip-adapter.safetensors"), spec.unet, TINY_PROJECTION, o.seed + 10);
    renameSync(`${init}.tmp`, init);
  }
  const model = loadDiffusionModel(init);
  const ip = loadIpAdapter(join(init, "ip-adapter.safetensors"), "mobilenet_v2", TINY_PROJECTION.dimHead);
  const trainer = new DiffusionTrainer({ model, ip, pairs: o.batch, height: TINY_SIZE, width: TINY_SIZE, objective: "mse", trainable: () => true, threads: o.threads, device: o.device, memArena: true });

  // The pretraining subjects' references, their image features (encoded once) and texts.
  const pool = await referencePool(trainer, o.batch, catalogueSplit(false));

  const weights = new Map<string, Float32Array>([...trainer.initial].map(([k, v]) => [k, Float32Array.from(v)]));
  const opt = new AdamW({ lr: o.lr, weightDecay: 0.01 });
  let start = 0;
  if (latest) {
    const ck = await loadCheckpoint(latest);
    for (const [k, v] of ck.params) weights.set(k, v);
    restoreOptimizer(opt, ck);
    start = ck.state.step;
    console.error(`resuming from ${latest} (step ${start})`);
  }
  const shapes = trainer.shapes();
  const writeModel = async (dir: string, step: number) => {
    const unet = new Map<string, { shape: number[]; data: Float32Array }>();
    const text = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, value] of weights) {
      if (name.startsWith("text_encoder/")) text.set(name.slice("text_encoder/".length), { shape: shapes.get(name)!, data: value });
      else if (!name.startsWith("image_proj.") && !name.includes(".processor.")) unet.set(name, { shape: shapes.get(name)!, data: value });
    }
    await writeModelFolder(dir, spec, o.seed, { unet: new MemorySource(unet), text_encoder: new MemorySource(text) });
    await saveIpAdapter(join(dir, "ip-adapter.safetensors"), model, ip, weights);
    await writeJsonAtomic(join(dir, "tiny-world.json"), {
      about: "The tiny world's personalized generator (scripts/pretrain-tiny.ts): SD-style UNet + CLIP text encoder + IP-Adapter-Plus Resampler over MobileNetV2 features, 64x64 images, pixel-unshuffle VAE (factor 4), trained from scratch with --objective mse on renders of the tiny world's catalogue (held-out subjects excluded).",
      imageEncoder: "mobilenet_v2", size: TINY_SIZE, ...config, trainedSteps: step, heldOut: catalogueSplit(true).map((e) => e.subject.id),
      command: `bun scripts/pretrain-tiny.ts --out ${o.out} --steps ${o.steps} --batch ${o.batch} --lr ${o.lr} --seed ${o.seed} --warmup ${o.warmup} --scene-share ${o.sceneShare} --channels ${o.channels.join(",")} --prediction ${o.prediction}`,
    });
  };
  if (o.exportTo) {
    if (!latest) throw new UserError(`${ckDir} has no checkpoint to export`);
    await writeModel(o.exportTo, start);
    return { out: o.exportTo, finished: false, step: start };
  }
  const sched = { name: "cosine" as const, lr: o.lr, warmupSteps: o.warmup, totalSteps: o.steps, minLr: o.lr * 0.05 };
  const log = join(ckDir, "train-log.jsonl");
  if (!latest) rmSync(log, { force: true });
  const save = async (step: number) => {
    const params = new Map([...weights].map(([k, v]) => [k, { shape: shapes.get(k)!, data: v }]));
    await saveCheckpoint(join(ckDir, `step-${step}`), params, opt, { step, rng: new Rng((o.seed * 1_000_003 + step) >>> 0).state(), config });
    // Keep the newest two: enough to resume after a kill during a save.
    const old = readdirSync(ckDir).map((d) => /^step-(\d+)$/.exec(d)).filter((m): m is RegExpExecArray => !!m).map((m) => Number(m[1])).sort((a, b) => b - a).slice(2);
    for (const s of old) rmSync(join(ckDir, `step-${s}`), { recursive: true, force: true });
  };
  const t0 = performance.now();
  const end = Math.min(o.steps, o.stopAt ?? o.steps);
  for (let step = start; step < end; step++) {
    // Each step's data and noise come from (seed, step) alone, so a resumed run sees the same batches.
    const rng = new Rng((o.seed * 1_000_003 + step) >>> 0);
    const batch = Array.from({ length: o.batch }, () => example(rng, pool, o.sceneShare));
    const feeds = await trainer.prepare(batch, rng);
    const r = await trainer.step(feeds, weights);
    if (!Number.isFinite(r.loss) || !allFinite(r.grads.values())) throw new Error(`step ${step}: non-finite loss or gradient (lower --lr)`);
    const gradNorm = clipGradNorm(r.grads, 1.0);
    const lr = learningRate(sched, step);
    await opt.stepAsync(weights, r.grads, lr); // threads for large sets (lib/train/adamw.ts), same bits
    if (step % o.logEvery === 0 || step === o.steps - 1) {
      const row = { step, loss: r.loss, lr, gradNorm, seconds: (performance.now() - t0) / 1000 };
      await appendJsonl(log, row);
      console.log(JSON.stringify(row));
    }
    if (o.saveEvery > 0 && (step + 1) % o.saveEvery === 0 && step + 1 < o.steps) await save(step + 1);
  }
  if (end < o.steps) {
    await save(end);
    return { out: o.out, finished: false, step: end };
  }
  await writeModel(o.out, end);
  rmSync(init, { recursive: true, force: true });
  return { out: o.out, finished: true, step: end };
}

const HELP = `pretrain-tiny: train the tiny world's SD + IP-Adapter-Plus generator from scratch, resumably

usage: bun scripts/pretrain-tiny.ts --out <new folder> [options]

  --out <dir>            output model folder; must be new (or this run's, to resume) (required)
  --steps <n>            training steps (default: ${DEFAULTS.steps})
  --batch <n>            pairs per step (default: ${DEFAULTS.batch})
  --lr <x>               AdamW peak learning rate, cosine schedule (default: ${DEFAULTS.lr})
  --warmup <n>           warm-up steps (default: ${DEFAULTS.warmup})
  --prediction <p>       sample (x0) | v_prediction | epsilon (default: ${DEFAULTS.prediction})
  --scene-share <p>      share of examples with a flat-scene target; the rest reconstruct the reference (default: ${DEFAULTS.sceneShare})
  --channels <a,b>       UNet block widths (default: ${DEFAULTS.channels.join(",")})
  --seed <n>             (default: ${DEFAULTS.seed})
  --save-every <n>       checkpoint period; a rerun resumes from the newest (default: ${DEFAULTS.saveEvery})
  --stop-at <n>          end this invocation after step n (as if preempted)
  --overwrite            replace an existing --out that is not this run's
  --export-to <dir>      write the newest checkpoint of --out as a model folder there, and stop
  --log-every <n>        (default: ${DEFAULTS.logEvery})
  --device <d>           cpu | cuda | webgpu (default: cpu)
  --threads <n>          intra-op threads, 0 = one per core (default: 0)`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      out: { type: "string" }, steps: { type: "string", default: String(DEFAULTS.steps) }, batch: { type: "string", default: String(DEFAULTS.batch) },
      lr: { type: "string", default: String(DEFAULTS.lr) }, seed: { type: "string", default: "0" }, threads: { type: "string", default: "0" }, "log-every": { type: "string", default: String(DEFAULTS.logEvery) },
      prediction: { type: "string", default: DEFAULTS.prediction }, warmup: { type: "string", default: String(DEFAULTS.warmup) },
      "scene-share": { type: "string", default: String(DEFAULTS.sceneShare) }, channels: { type: "string", default: DEFAULTS.channels.join(",") },
      "save-every": { type: "string", default: String(DEFAULTS.saveEvery) }, "stop-at": { type: "string" }, "export-to": { type: "string" }, overwrite: { type: "boolean", default: false },
      device: { type: "string", default: "cpu" }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    if (!v.out) throw new UsageError("--out is required: a new folder for the model (the committed one is checkpoints/tiny)");
    if (!["epsilon", "v_prediction", "sample"].includes(v.prediction!)) throw new UsageError("--prediction must be sample, v_prediction or epsilon");
    if (!DEVICES.includes(v.device as Device)) throw new UsageError(`--device must be one of ${DEVICES.join(", ")}`);
    const ints = { steps: Number(v.steps), batch: Number(v.batch), seed: Number(v.seed), threads: Number(v.threads), logEvery: Number(v["log-every"]), warmup: Number(v.warmup), saveEvery: Number(v["save-every"]) };
    for (const [k, x] of Object.entries(ints)) if (!Number.isSafeInteger(x) || x < 0) throw new UsageError(`--${k} must be a non-negative integer`);
    const channels = v.channels!.split(",").map(Number);
    if (channels.some((c) => !Number.isSafeInteger(c) || c < 16 || c % 16)) throw new UsageError("--channels must be multiples of 16, e.g. 64,128");
    await run({
      out: v.out, ...ints, lr: Number(v.lr), prediction: v.prediction as PretrainOptions["prediction"], sceneShare: Number(v["scene-share"]), channels,
      stopAt: v["stop-at"] === undefined ? undefined : Number(v["stop-at"]), overwrite: v.overwrite, exportTo: v["export-to"], device: v.device as Device,
    });
  });
}
