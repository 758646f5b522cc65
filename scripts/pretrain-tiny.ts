// Makes the tiny world's personalized generator, checkpoints/tiny/ (DESIGN.md section 5): the same
// model code as SD + IP-Adapter-Plus at toy size, trained from scratch with the single-stage
// objective (`mse`, IP-Adapter's own training) on tiny-world data rendered on the fly:
//
//   image prompt = the subject's clean reference (MobileNetV2 features -> Resampler)
//   reference row: reference prompt ("... isolated on a white background") -> the reference image
//   generated row: a scene prompt ("... on the beach")                      -> the subject in that scene
//
// Everything trains: UNet, text encoder, image projection and the decoupled cross-attention.
// 32x32 images, pixel-unshuffle "VAE" (12 latent channels at 16x16). This is a developer script:
// its output is committed, and `make demo` uses it; rerun it to remake the model.
//
//   bun scripts/pretrain-tiny.ts --steps 3000 --out checkpoints/tiny

import { cpSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { DEVICES, type Device } from "../lib/graph/index.ts";
import { parseFlags } from "../lib/io/cli.ts";
import { runMain, UsageError } from "../lib/io/errors.ts";
import { appendJsonl } from "../lib/io/manifest.ts";
import { writeJsonAtomic } from "../lib/io/atomic.ts";
import { resizeBicubic } from "../lib/io/images.ts";
import { loadDiffusionModel, loadIpAdapter } from "../lib/diffusion/model.ts";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../lib/diffusion/model-folder.ts";
import type { ResamplerConfig } from "../lib/models/ip-adapter.ts";
import { MemorySource } from "../lib/nn/params.ts";
import { Rng } from "../lib/rng.ts";
import { AdamW, allFinite, clipGradNorm } from "../lib/train/adamw.ts";
import { DiffusionTrainer, type PairExample, saveIpAdapter } from "../lib/train/diffusion.ts";
import { learningRate } from "../lib/train/schedule.ts";
import { SCENES, describeSubject, randomSubject, renderCorrupted, renderReference, scenePrompt } from "../lib/tinyworld/index.ts";
import { trainBpe } from "../lib/tinyworld/vocab.ts";

export const TINY_SIZE = 32;
export const TINY_PROJECTION: ResamplerConfig = { kind: "resampler", embeddingDim: 1280, dim: 64, depth: 1, dimHead: 16, heads: 4, numQueries: 8, outputDim: 64, ffMult: 2 };

/** The reference prompt a tiny-world subject gets (as synthesize-prompts --world tiny writes it). */
export const tinyReferencePrompt = (text: string) => `a photo of ${text}, isolated on a white background`;

export function tinySpec(corpus: string[], prediction = "v_prediction"): ModelFolderSpec {
  const vocab = trainBpe(corpus, 400);
  const n = Object.keys(vocab.vocab).length;
  return {
    unet: {
      in_channels: 12, out_channels: 12, block_out_channels: [32, 64], down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
      up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], layers_per_block: 1, cross_attention_dim: 64, attention_head_dim: 4,
      norm_num_groups: 8, sample_size: 16,
    },
    vae: { _class_name: "PixelUnshuffleVAE", factor: 2, in_channels: 3, scaling_factor: 1.0 },
    textEncoder: {
      architectures: ["CLIPTextModel"], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 77,
      hidden_act: "quick_gelu", vocab_size: n, projection_dim: 64, bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"],
    },
    tokenizer: vocab,
    scheduler: {
      _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012,
      // v-prediction: a toy model's epsilon errors at high noise blow up its x0 estimates (x 12 at
      // t = 950); v keeps them bounded. Clipping x0 to the image range steadies the sampler further.
      prediction_type: prediction, clip_sample: true, set_alpha_to_one: false, steps_offset: 1,
    },
  };
}

/**
 * One training example: a random subject, its reference (224 px for the image encoder) and, with
 * probability `sceneShare`, the subject in a scene; otherwise the reference again (IP-Adapter's
 * own reconstruction task, which a toy model learns far sooner than whole scenes).
 */
function example(rng: Rng, sceneShare: number): PairExample {
  const subject = randomSubject(rng);
  const text = describeSubject(subject).text;
  const scene = SCENES[rng.int(SCENES.length)]!;
  const reference = renderReference(subject, 224).image;
  const referencePrompt = tinyReferencePrompt(text);
  if (rng.uniform() >= sceneShare) return { reference, generated: resizeBicubic(reference, TINY_SIZE, TINY_SIZE), prompt: referencePrompt, referencePrompt };
  const generated = renderCorrupted(subject, scene, TINY_SIZE * 2, new Rng(rng.nextU32())).clean.image;
  return { reference, generated: resizeBicubic(generated, TINY_SIZE, TINY_SIZE), prompt: scenePrompt(text, scene), referencePrompt };
}

export interface PretrainOptions {
  out: string; steps: number; batch: number; lr: number; seed: number; threads: number; logEvery: number;
  /** Continue from an earlier tiny model folder (its UNet, text encoder and IP-Adapter). */
  init?: string;
  prediction: "epsilon" | "v_prediction";
  warmup: number;
  /** Share of examples whose generated row is a scene (the rest reconstruct the reference). */
  sceneShare: number;
  device?: Device;
}

export async function run(o: PretrainOptions) {
  // The vocabulary covers the tiny world's words: many subject descriptions and every scene phrase.
  const rng0 = new Rng(12345);
  const corpus: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const t = describeSubject(randomSubject(rng0)).text;
    corpus.push(tinyReferencePrompt(t), scenePrompt(t, SCENES[i % SCENES.length]!));
  }
  const spec = tinySpec(corpus, o.prediction);
  const work = `${o.out}.init`;
  rmSync(work, { recursive: true, force: true });
  if (o.init) {
    cpSync(o.init, work, { recursive: true });
    await writeJsonAtomic(join(work, "scheduler", "scheduler_config.json"), spec.scheduler);
  } else {
    await writeModelFolder(work, spec, o.seed);
    await writeIpAdapter(join(work, "ip-adapter.safetensors"), spec.unet, TINY_PROJECTION, o.seed + 10);
  }
  const model = loadDiffusionModel(work);
  const ip = loadIpAdapter(join(work, "ip-adapter.safetensors"), "mobilenet_v2", TINY_PROJECTION.dimHead);
  const trainer = new DiffusionTrainer({ model, ip, pairs: o.batch, height: TINY_SIZE, width: TINY_SIZE, objective: "mse", trainable: () => true, threads: o.threads, device: o.device });
  const weights = new Map([...trainer.initial].map(([k, v]) => [k, Float32Array.from(v)]));
  const opt = new AdamW({ lr: o.lr, weightDecay: 0.01 });
  const sched = { name: "cosine" as const, lr: o.lr, warmupSteps: o.warmup, totalSteps: o.steps, minLr: o.lr * 0.05 };
  mkdirSync(o.out, { recursive: true });
  const log = join(o.out, "train-log.jsonl");
  rmSync(log, { force: true });
  const t0 = performance.now();
  let avg = 0;
  for (let step = 0; step < o.steps; step++) {
    const rng = new Rng((o.seed * 1_000_003 + step) >>> 0);
    const batch = Array.from({ length: o.batch }, () => example(rng, o.sceneShare));
    const feeds = await trainer.prepare(batch, rng);
    const r = await trainer.step(feeds, weights);
    if (!Number.isFinite(r.loss) || !allFinite(r.grads.values())) throw new Error(`step ${step}: non-finite loss or gradient`);
    const gradNorm = clipGradNorm(r.grads, 1.0);
    const lr = learningRate(sched, step);
    opt.step(weights, r.grads, lr);
    avg = step === 0 ? r.loss : 0.98 * avg + 0.02 * r.loss;
    if (step % o.logEvery === 0 || step === o.steps - 1) {
      const row = { step, loss: r.loss, lr, gradNorm, lossEma: avg, seconds: (performance.now() - t0) / 1000 };
      await appendJsonl(log, row);
      console.log(JSON.stringify(row));
    }
  }
  // Split the trained weights back into the model folder and the IP-Adapter file.
  const unet = new Map<string, { shape: number[]; data: Float32Array }>();
  const text = new Map<string, { shape: number[]; data: Float32Array }>();
  const shapes = trainer.shapes();
  for (const [name, value] of weights) {
    if (name.startsWith("text_encoder/")) text.set(name.slice("text_encoder/".length), { shape: shapes.get(name)!, data: value });
    else if (!name.startsWith("image_proj.") && !name.includes(".processor.")) unet.set(name, { shape: shapes.get(name)!, data: value });
  }
  await writeModelFolder(o.out, spec, o.seed, { unet: new MemorySource(unet), text_encoder: new MemorySource(text) });
  await saveIpAdapter(join(o.out, "ip-adapter.safetensors"), model, ip, weights);
  await writeJsonAtomic(join(o.out, "tiny-world.json"), {
    about: "The tiny world's personalized generator (scripts/pretrain-tiny.ts): SD-style UNet + CLIP text encoder + IP-Adapter-Plus Resampler over MobileNetV2 features, 32x32 images, pixel-unshuffle VAE, trained from scratch with --objective mse on tiny-world renders.",
    imageEncoder: "mobilenet_v2", size: TINY_SIZE, steps: o.steps, batch: o.batch, lr: o.lr, seed: o.seed, prediction: o.prediction, sceneShare: o.sceneShare,
    init: o.init ?? null, seconds: (performance.now() - t0) / 1000,
  });
  rmSync(work, { recursive: true, force: true });
}

const HELP = `pretrain-tiny: train the tiny world's SD + IP-Adapter-Plus generator from scratch (or --init to continue)

usage: bun scripts/pretrain-tiny.ts [options]

  --out <dir>            output model folder (default: checkpoints/tiny)
  --init <dir>           continue from an earlier tiny model folder
  --steps <n>            training steps (default: 3000)
  --batch <n>            pairs per step (default: 8)
  --lr <x>               AdamW peak learning rate, cosine schedule (default: 5e-4)
  --warmup <n>           warm-up steps (default: 100)
  --prediction <p>       epsilon | v_prediction (default: v_prediction)
  --scene-share <p>      share of examples with a scene target; the rest reconstruct the reference (default: 0.5)
  --seed <n>             (default: 0)
  --log-every <n>        (default: 25)
  --device <d>           cpu | cuda | webgpu (default: cpu)
  --threads <n>          intra-op threads, 0 = one per core (default: 0)`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      out: { type: "string", default: "checkpoints/tiny" }, steps: { type: "string", default: "3000" }, batch: { type: "string", default: "8" },
      lr: { type: "string", default: "5e-4" }, seed: { type: "string", default: "0" }, threads: { type: "string", default: "0" }, "log-every": { type: "string", default: "25" },
      init: { type: "string" }, prediction: { type: "string", default: "v_prediction" }, warmup: { type: "string", default: "100" },
      "scene-share": { type: "string", default: "0.5" }, device: { type: "string", default: "cpu" }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    if (v.prediction !== "epsilon" && v.prediction !== "v_prediction") throw new UsageError("--prediction must be epsilon or v_prediction");
    if (!DEVICES.includes(v.device as Device)) throw new UsageError(`--device must be one of ${DEVICES.join(", ")}`);
    await run({
      out: v.out!, steps: Number(v.steps), batch: Number(v.batch), lr: Number(v.lr), seed: Number(v.seed), threads: Number(v.threads), logEvery: Number(v["log-every"]),
      init: v.init, prediction: v.prediction, warmup: Number(v.warmup), sceneShare: Number(v["scene-share"]), device: v.device as Device,
    });
  });
}
