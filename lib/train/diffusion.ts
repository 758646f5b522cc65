// One training step of a personalized diffusion model (IP-Adapter on a UNet), as used by
// PatchDPO's epochs (dpo-epoch) and by the tiny world's pre-training:
//
//   batch = B pairs laid out [reference images ; generated images] (2B rows), each pair sharing
//   noise and timestep, every row conditioned on its pair's reference image (image prompt) and
//   scene prompt; classifier-free-guidance dropout per pair (image / text / both);
//   noisy latents and targets are made on the host (the noise schedule is host-side maths);
//   the graph: text encoder(s) -> UNet with decoupled cross-attention on the image tokens
//   (image projection from the frozen image encoder's features) -> objective -> gradients of
//   every trainable weight. A forward-only twin gives the frozen reference model's prediction
//   (patch-dpo) from the starting weights.
//
// Weight names: the UNet's (diffusers) names, "image_proj.*" for the projection, and the text
// encoders' own names; `saveIpAdapter` writes the trained IP-Adapter in the release layout.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import type { RgbImage } from "../io/images.ts";
import { resizeBicubic, toCHW } from "../io/images.ts";
import { type TensorInput, writeSafetensors } from "../io/safetensors.ts";
import { clipPreprocess, clipVisionForward } from "../models/clip-vision.ts";
import { clipTextForward, clipTextInputs } from "../models/clip-text.ts";
import { imageProjection } from "../models/ip-adapter.ts";
import { loadMobileNetV2 } from "../models/mobilenet.ts";
import { pixelUnshuffle } from "../models/pixel-vae.ts";
import { IpAdapterUNetSource, type UNetConfig, ipAdapterKeyMap, unetForward, unetParamShapes } from "../models/unet.ts";
import { toLatents, vaeEncode } from "../models/vae.ts";
import { Params } from "../nn/params.ts";
import type { DiffusionModel, IpAdapter } from "../diffusion/model.ts";
import { NoiseSchedule, scheduleConfig } from "../diffusion/schedule.ts";
import type { Rng } from "../rng.ts";
import type { AdamWConfig } from "./adamw.ts";
import { type DpoOptions, DPO_DEFAULTS, type Objective, objective } from "./objectives.ts";
import { ResidentTrainer, type ResidentStep } from "./resident.ts";

export interface TrainerSetup {
  model: DiffusionModel;
  ip: IpAdapter;
  /** Pairs per step (the graph runs 2x this many rows). */
  pairs: number;
  height: number;
  width: number;
  objective: Objective;
  dpo?: DpoOptions;
  /** Which weights train, by name (UNet diffusers names, "image_proj.*", text encoder names). */
  trainable: (name: string) => boolean;
  /** Weight of the image prompt in every cross-attention (IP-Adapter's `scale`). */
  ipScale?: number;
  device?: G.Device;
  threads?: number;
  /** ONNX Runtime's memory arena for the training graphs (lib/graph: off by default; on is much faster for small models). */
  memArena?: boolean;
  /**
   * Train with the state on the device (lib/train/resident.ts): AdamW, global-norm clipping
   * (0: off), the NaN/Inf guard and accumulation over `gradAccum` micro-batches run inside the
   * training graph, and the trainable weights and moments stay in gpu buffers on webgpu between
   * steps. Then `residentStep` trains (through `resident`), and `step` (host gradients) does not exist.
   */
  resident?: { adamw: Partial<AdamWConfig>; clip: number; gradAccum: number };
  /**
   * Gradient checkpointing (grad's `recompute` option): each ResnetBlock2D and Transformer2DModel
   * of the UNet keeps only its inputs for the backward pass and is recomputed there.
   */
  recompute?: boolean;
  /**
   * UNet attention in chunks of this many query rows, each recomputed in the backward pass
   * (lib/graph/recompute.ts chunkedAttention). Default 1024: a 64x64 latent's 4096 tokens would
   * otherwise keep [2B, heads, 4096, 4096] scores (1 GB per layer at 2 rows of 8 heads).
   */
  attentionChunk?: number;
  /** Compile with CompileOptions.mappedWeights (frozen weights only as mapped from their files). */
  mappedWeights?: boolean;
}

/**
 * How dpo-epoch compiles a UNet's training sessions (and what lib/train/plan.ts predicts for):
 * ORT's memory arena for toy UNets only (3x faster steps there; on a real one it would hold the
 * peak for good), and on the CPU a real-size UNet's frozen weights only as mapped from their
 * files instead of one prepacked copy per layout (bench/RESULTS.md dpo-step: 3.3 GB less for SD
 * 1.5, and not slower).
 */
export function unetSessionChoices(config: UNetConfig, device: string): { memArena: boolean; mappedWeights: boolean } {
  const values = [...unetParamShapes(config).values()].reduce((n, shape) => n + shape.reduce((a, b) => a * b, 1), 0);
  const small = values < 50e6;
  return { memArena: small, mappedWeights: !small && device === "cpu" };
}

/** Probabilities of classifier-free-guidance dropout per pair (DESIGN.md: 5% / 5% / 5%). */
export interface CfgDropout { image: number; text: number; both: number }
export const CFG_DROPOUT: CfgDropout = { image: 0.05, text: 0.05, both: 0.05 };

export interface PairExample {
  reference: RgbImage;
  generated: RgbImage;
  prompt: string;
  /**
   * The reference row's own prompt, when it differs from the pair's scene prompt (pre-training
   * teaches "on a white background" with the reference and the scene with the generated image).
   * PatchDPO conditions both rows on the scene prompt, as the authors do.
   */
  referencePrompt?: string;
  /**
   * The frozen image encoder's features of `reference` (shape `featureShape`), when the caller
   * already has them: a fixed set of references (the tiny world's catalogue) is encoded once
   * instead of every step.
   */
  referenceFeatures?: Float32Array;
  /** Latent-grid quality maps [h*w] (score-patches' q_ref_latent / q_gen_latent); needed by weighted / patch-dpo. */
  qRef?: Float32Array;
  qGen?: Float32Array;
  /** Latent-grid foreground share [h*w] of each image (masked background 0: neutral in the objectives); default all 1. */
  fgRef?: Float32Array;
  fgGen?: Float32Array;
}

/** What one batch draws from its Rng, laid onto the 2B rows [references ; generated]. */
export interface PairDraws {
  /** [2B * perRow]: row B + i holds a bit-identical copy of row i's noise. */
  noise: Float32Array;
  /** [2B]: timesteps[B + i] === timesteps[i]. */
  timesteps: number[];
  /** [B], per pair (both of its rows): CFG dropout of the image prompt / of the text prompt. */
  dropImage: boolean[];
  dropText: boolean[];
}

/**
 * The random part of a batch, kept apart from the graphs as a pure function of the Rng so the
 * pairing rules can be checked exactly (tests/train/diffusion.test.ts): a pair's two rows share
 * noise and timestep (so their errors differ only by what the images and the weights do), and
 * one dropout decision per pair covers both rows. The draw order is part of the contract, since
 * a resumed epoch redraws each step from its seed and committed results depend on it: per pair
 * its noise then its timestep, then one uniform per pair for the dropout.
 */
export function drawPairs(B: number, perRow: number, numTrainTimesteps: number, rng: Rng, dropout: CfgDropout): PairDraws {
  const noise = new Float32Array(2 * B * perRow);
  const timesteps = new Array<number>(2 * B);
  for (let i = 0; i < B; i++) {
    const eps = rng.normals(perRow);
    noise.set(eps, i * perRow);
    noise.set(eps, (B + i) * perRow);
    timesteps[i] = timesteps[B + i] = rng.int(numTrainTimesteps);
  }
  const dropImage: boolean[] = [], dropText: boolean[] = [];
  for (let i = 0; i < B; i++) {
    const d = cfgDecision(rng.uniform(), dropout);
    dropImage.push(d.image);
    dropText.push(d.text);
  }
  return { noise, timesteps, dropImage, dropText };
}

/**
 * One pair's CFG dropout from one uniform draw u in [0, 1). The intervals [0, both),
 * [both, both + image) and [both + image, both + image + text) drop both prompts, the image prompt
 * and the text prompt, so each share of pairs is exactly the probability given.
 */
export function cfgDecision(u: number, d: CfgDropout): { image: boolean; text: boolean } {
  const both = u < d.both;
  return { image: both || (u >= d.both && u < d.both + d.image), text: both || (u >= d.both + d.image && u < d.both + d.image + d.text) };
}

/**
 * The batch's quality and foreground maps as the training graph's feeds, [B, h, w] each in pair
 * order: q_ref / fg_ref belong to the reference images (rows 0..B-1 of the batch), q_gen / fg_gen
 * to the generated ones (rows B..2B-1); objectives.ts puts them on those halves. A missing map is
 * all ones.
 */
export function mapFeeds(batch: PairExample[], h: number, w: number): { q_ref: Float32Array; q_gen: Float32Array; fg_ref: Float32Array; fg_gen: Float32Array } {
  const hw = h * w;
  const stack = (key: "qRef" | "qGen" | "fgRef" | "fgGen") => {
    const out = new Float32Array(batch.length * hw);
    batch.forEach((p, i) => {
      const m = p[key];
      if (m && m.length !== hw) throw new Error(`${key} maps are ${Math.sqrt(m.length)}^2, the latent grid is ${h}x${w}: score with --latent-grid ${h}`);
      out.set(m ?? new Float32Array(hw).fill(1), i * hw);
    });
    return out;
  };
  return { q_ref: stack("qRef"), q_gen: stack("qGen"), fg_ref: stack("fgRef"), fg_gen: stack("fgGen") };
}

export interface StepResult {
  loss: number;
  logs: Record<string, number>;
  grads: Map<string, Float32Array>;
}

interface Trainable { name: string; tensor: Tensor }

export class DiffusionTrainer {
  readonly schedule: NoiseSchedule;
  readonly latentH: number;
  readonly latentW: number;
  readonly trainables: Trainable[] = [];
  /** Starting values of the trainable weights (the frozen reference model of patch-dpo). */
  readonly initial = new Map<string, Float32Array>();
  private train?: Promise<G.Compiled>;
  /** The device-resident training loop (setup.resident): load, weights and moments for checkpoints, t. */
  resident?: ResidentTrainer;
  /** patch-dpo's reference weights on the device, uploaded at the first resident step. */
  private refWeights?: Record<string, G.DeviceTensor>;
  private forward!: Promise<G.Compiled>;
  private features!: Promise<G.Compiled>;
  private encode!: Promise<G.Compiled>;
  private emptyFeatures?: Float32Array;
  readonly featureShape: number[];

  constructor(readonly s: TrainerSetup) {
    const m = s.model;
    this.schedule = new NoiseSchedule(scheduleConfig(m.scheduler));
    this.latentH = s.height / m.vaeFactor;
    this.latentW = s.width / m.vaeFactor;
    const enc = s.ip.encoder;
    const proj = s.ip.projection;
    this.featureShape = proj.kind === "linear" ? [proj.embeddingDim] : enc.kind === "mobilenet" ? [49, 1280] : [enc.config.imageSize / enc.config.patchSize * (enc.config.imageSize / enc.config.patchSize) + 1, enc.config.hiddenSize];
    this.build();
  }

  private imageSize(): number {
    const enc = this.s.ip.encoder;
    return enc.kind === "clip" ? enc.config.imageSize : 224;
  }

  private build(): void {
    const { model: m, ip, pairs: B } = this.s;
    const R = 2 * B;
    const opts = { device: this.s.device, threads: this.s.threads, memArena: this.s.memArena, mappedWeights: this.s.mappedWeights };
    const C = m.latentChannels, h = this.latentH, w = this.latentW;

    const net = (g: G.Graph, training: boolean) => {
      const trainable = training ? this.s.trainable : undefined;
      const noisy = g.input("noisy", [R, C, h, w]);
      const timestep = g.input("timestep", [R]);
      const hidden: Tensor[] = [];
      let pooled: Tensor | undefined;
      m.textEncoders.forEach((te, k) => {
        const { inputIds, eosIndex } = clipTextInputs(g, R, te.tokenizer.maxLength, `te${k}_`);
        const p = new Params(g, te.source, { graphPrefix: `te${k}/`, trainable });
        const r = clipTextForward(p, inputIds, eosIndex, te.config, m.xl && k === 1);
        hidden.push(m.xl ? r.hiddenStates[r.hiddenStates.length - 2]! : r.lastHiddenState);
        if (m.xl && k === 1) pooled = r.textEmbeds;
        if (training) for (const [n, t] of p.trainable) this.addTrainable(`${te.name}/${n}`, t, te.source.float32(n));
      });
      const features = g.input("image_features", [R, ...this.featureShape]);
      const pIp = new Params(g, ip.source, { trainable });
      const tokens = imageProjection(pIp, features, ip.projection);
      const unetSource = new IpAdapterUNetSource(m.unet.source, ip.source, m.unet.config);
      const pUnet = new Params(g, unetSource, { trainable });
      const xl = m.xl ? { textEmbeds: pooled!, timeIds: g.input("time_ids", [R, 6]) } : {};
      const pred = unetForward(pUnet, m.unet.config, {
        sample: noisy, timestep, encoderHiddenStates: G.concat(hidden, 2), ipTokens: tokens, ipScale: this.s.ipScale ?? 1, ...xl,
        attentionChunk: this.s.attentionChunk ?? 1024,
      });
      if (training) {
        for (const [n, t] of pIp.trainable) this.addTrainable(n, t, ip.source.float32(n));
        for (const [n, t] of pUnet.trainable) this.addTrainable(n, t, unetSource.float32(n));
      }
      return pred;
    };

    const lossOf = (g: G.Graph) => {
      const pred = net(g, true);
      if (!this.trainables.length) throw new Error("DiffusionTrainer: no weight is trainable (check the trainable selection)");
      const target = g.input("target", [R, C, h, w]);
      const qRef = g.input("q_ref", [B, h, w]);
      const qGen = g.input("q_gen", [B, h, w]);
      const fgRef = g.input("fg_ref", [B, h, w]);
      const fgGen = g.input("fg_gen", [B, h, w]);
      const refPred = this.s.objective === "patch-dpo" ? g.input("ref_pred", [R, C, h, w]) : undefined;
      return objective(this.s.objective, { pred, target, qRef, qGen, fgRef, fgGen, refPred }, this.s.dpo ?? DPO_DEFAULTS);
    };
    if (this.s.resident) {
      // Training graph with AdamW appended; weights and moments are outputs kept on the device.
      const { adamw, clip, gradAccum } = this.s.resident;
      this.resident = new ResidentTrainer((g) => {
        const o = lossOf(g);
        return { loss: o.loss, logs: o.logs, params: new Map(this.trainables.map((t) => [t.name, t.tensor])) };
      }, undefined, adamw, opts, undefined, { clip, gradAccum, recompute: this.s.recompute });
    } else {
      // Training graph: loss, logs and gradients.
      const g = new G.Graph();
      const o = lossOf(g);
      const grads = G.grad(o.loss, this.trainables.map((t) => t.tensor), undefined, { recompute: this.s.recompute });
      const outs: Record<string, Tensor> = { loss: o.loss };
      for (const [k, v] of Object.entries(o.logs)) outs[`log:${k}`] = v;
      this.trainables.forEach((t, i) => {
        if (grads[i]) outs[`grad:${t.name}`] = grads[i]!;
      });
      this.train = G.compile(outs, opts);
    }
    // Forward-only twin (the reference model's prediction: the same net fed the starting weights).
    if (this.s.objective === "patch-dpo") {
      const g = new G.Graph();
      const saved = this.trainables.splice(0);
      const pred = net(g, true);
      this.trainables.splice(0, this.trainables.length, ...saved);
      // Resident: the prediction stays on the device, an input of the training graph.
      this.forward = G.compile({ pred }, this.s.resident ? { ...opts, keepOnDevice: ["pred"] } : opts);
    }
    // Frozen image encoder: images -> features.
    {
      const g = new G.Graph();
      const S = this.imageSize();
      const pixels = g.input("pixels", [B, 3, S, S]); // one image prompt per pair, shared by its two rows
      const enc = ip.encoder;
      let f: Tensor;
      if (enc.kind === "clip") {
        const r = clipVisionForward(new Params(g, enc.source), pixels, enc.config, ip.projection.kind === "linear");
        f = ip.projection.kind === "linear" ? r.imageEmbeds! : r.hiddenStates[r.hiddenStates.length - 2]!;
      } else {
        const { encoder, source } = loadMobileNetV2();
        const fmap = encoder.forward(new Params(g, source), pixels).patches;
        f = G.transpose(G.reshape(fmap, [B, 1280, 49]), [0, 2, 1]);
      }
      this.features = G.compile({ features: f }, opts);
    }
    // Frozen VAE encoder: images in [-1, 1] -> scaled latents.
    {
      const g = new G.Graph();
      const images = g.input("images", [R, 3, this.s.height, this.s.width]);
      const vae = m.vae;
      const z = vae.kind === "pixel" ? pixelUnshuffle(images, vae.config) : toLatents(vaeEncode(new Params(g, vae.source), images, vae.config), vae.config);
      this.encode = G.compile({ latents: z }, opts);
    }
  }

  private addTrainable(name: string, tensor: Tensor, value: Float32Array): void {
    if (this.trainables.some((t) => t.name === name)) return;
    this.trainables.push({ name, tensor });
    this.initial.set(name, Float32Array.from(value));
  }

  /**
   * Image features of the references (null: the empty image prompt). Precomputed features are
   * used as given; the encoder runs only when some row has none (the empty prompt's features are
   * computed once).
   */
  private async imageFeatures(rows: (PairExample | null)[]): Promise<Float32Array> {
    const per = this.featureShape.reduce((a, b) => a * b, 1);
    if (rows.every((r) => !r || r.referenceFeatures)) {
      this.emptyFeatures ??= (await this.encodeImages(rows.map(() => null))).subarray(0, per);
      const out = new Float32Array(rows.length * per);
      rows.forEach((r, j) => {
        const f = r ? r.referenceFeatures! : this.emptyFeatures!;
        if (f.length !== per) throw new Error(`referenceFeatures holds ${f.length} values, the image encoder gives ${this.featureShape.join("x")}`);
        out.set(f, j * per);
      });
      return out;
    }
    return this.encodeImages(rows.map((r) => r?.reference ?? null));
  }

  /** Runs the frozen image encoder on the references (null: the empty image prompt). */
  async encodeImages(images: (RgbImage | null)[]): Promise<Float32Array> {
    const S = this.imageSize();
    const per = 3 * S * S;
    const px = new Float32Array(images.length * per);
    images.forEach((img, j) => {
      if (!img) return;
      if (this.s.ip.encoder.kind === "clip") clipPreprocess(img, S, px, j * per);
      else toCHW(img.width === S && img.height === S ? img : resizeBicubic(img, S, S), [0, 0, 0], [1, 1, 1], px, j * per);
    });
    const f = (await (await this.features).run({ pixels: px })).features as Float32Array;
    // Base IP-Adapter (linear projection): the empty image prompt is a zero embedding, as its pipeline uses.
    if (this.s.ip.projection.kind === "linear") images.forEach((img, j) => img || f.subarray(j * (f.length / images.length), (j + 1) * (f.length / images.length)).fill(0));
    return f;
  }

  private async latents(images: RgbImage[]): Promise<Float32Array> {
    const { width: W, height: H } = this.s;
    const per = 3 * H * W;
    const x = new Float32Array(images.length * per);
    images.forEach((img, j) => {
      const r = img.width === W && img.height === H ? img : resizeBicubic(img, W, H);
      toCHW(r, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], x, j * per); // [-1, 1], as the VAE expects
    });
    return (await (await this.encode).run({ images: x })).latents as Float32Array;
  }

  /**
   * Host-side batch: latents of [references ; generated], shared noise and timestep per pair,
   * noisy latents and targets, CFG dropout, token ids, image features, quality maps.
   */
  async prepare(batch: PairExample[], rng: Rng, dropout: CfgDropout = CFG_DROPOUT): Promise<G.Feeds> {
    const B = this.s.pairs;
    if (batch.length !== B) throw new Error(`DiffusionTrainer: a batch holds ${B} pairs, got ${batch.length}`);
    const m = this.s.model;
    const x0 = await this.latents([...batch.map((p) => p.reference), ...batch.map((p) => p.generated)]);
    const { noise, timesteps: t, dropImage, dropText } = drawPairs(B, x0.length / (2 * B), this.schedule.config.numTrainTimesteps, rng, dropout);
    const noisy = this.schedule.addNoise(x0, noise, t);
    const target = this.schedule.target(x0, noise, t);
    // CFG dropout applies to both rows of a dropped pair.
    const prompts = [...batch, ...batch].map((p, r) => (dropText[r % B] ? "" : r < B ? (p.referencePrompt ?? p.prompt) : p.prompt));
    const feeds: G.Feeds = { noisy, target, timestep: Float32Array.from(t) };
    const wanted = new Set(await this.trainInputs());
    m.textEncoders.forEach((te, k) => {
      const enc = te.tokenizer.encodeBatch(prompts);
      feeds[`te${k}_input_ids`] = enc.ids;
      if (wanted.has(`te${k}_eos_index`)) feeds[`te${k}_eos_index`] = enc.eosIndex;
    });
    if (m.xl) {
      const ids = new Float32Array(2 * B * 6);
      for (let r = 0; r < 2 * B; r++) ids.set([this.s.height, this.s.width, 0, 0, this.s.height, this.s.width], r * 6);
      feeds.time_ids = ids;
    }
    const f = await this.imageFeatures(batch.map((p, i) => (dropImage[i] ? null : p)));
    const both = new Float32Array(2 * f.length);
    both.set(f);
    both.set(f, f.length);
    feeds.image_features = both;
    return { ...feeds, ...mapFeeds(batch, this.latentH, this.latentW) };
  }

  /**
   * Advances `rng` past one batch's draws (noise, timesteps, dropout) without preparing the batch:
   * a data-parallel rank skips the micro-batches of other ranks this way, so the draws of its own
   * come out as they do in one process.
   */
  skipDraws(rng: Rng, dropout: CfgDropout = CFG_DROPOUT): void {
    const B = this.s.pairs;
    drawPairs(B, this.s.model.latentChannels * this.latentH * this.latentW, this.schedule.config.numTrainTimesteps, rng, dropout);
  }

  private static netFeeds(feeds: G.Feeds, weights: Map<string, Float32Array>, trainables: Trainable[]): G.Feeds {
    const out: G.Feeds = { ...feeds };
    for (const t of trainables) out[t.tensor.name] = weights.get(t.name)!;
    return out;
  }

  private async trainInputs(): Promise<string[]> {
    return (this.resident ? await this.resident.inputs() : (await this.train!).inputs).map((i) => i.name);
  }

  /**
   * One micro-batch of device-resident training (setup.resident) on a prepared batch at learning
   * rate `lr`: the weights and AdamW state stay where `resident` keeps them (load them first);
   * returns the loss, logs, gradient norm and whether the weights were updated (see
   * ResidentTrainer.step for `gate`). patch-dpo's reference prediction is computed on the device
   * from the reference weights (`initial`, uploaded at the first call: set them before) and fed
   * to the training graph without a copy; the batch inputs both graphs read go up once.
   */
  async residentStep(feeds: G.Feeds, lr: number, gate = true): Promise<ResidentStep> {
    const r = this.resident;
    if (!r) throw new Error("DiffusionTrainer: residentStep needs setup.resident");
    const trainWanted = new Set(await this.trainInputs());
    const batch: Record<string, G.HostArray | G.DeviceTensor> = {};
    for (const [k, v] of Object.entries(feeds)) if (trainWanted.has(k)) batch[k] = v;
    if (this.s.objective !== "patch-dpo") return r.step(batch, lr, gate);
    const fwd = await this.forward;
    const device = this.s.device ?? "cpu";
    if (!this.refWeights) {
      this.refWeights = {};
      for (const t of this.trainables) this.refWeights[t.tensor.name] = await G.upload(this.initial.get(t.name)!, "float32", t.tensor.shape, device);
    }
    const fwdFeeds: Record<string, G.HostArray | G.DeviceTensor> = { ...this.refWeights };
    const uploaded: G.DeviceTensor[] = [];
    for (const i of fwd.inputs) {
      if (i.name in fwdFeeds) continue;
      const v = feeds[i.name];
      if (!v) continue; // runResident names what is missing
      if (trainWanted.has(i.name)) {
        const d = await G.upload(v, i.dtype, i.shape, device);
        uploaded.push(d);
        fwdFeeds[i.name] = batch[i.name] = d;
      } else fwdFeeds[i.name] = v;
    }
    const refPred = (await fwd.runResident(fwdFeeds)).device.pred!;
    try {
      return await r.step({ ...batch, ref_pred: refPred }, lr, gate);
    } finally {
      refPred.dispose();
      for (const d of uploaded) d.dispose();
    }
  }

  /** Frees what resident training holds on the device (its state, patch-dpo's reference weights). */
  dispose(): void {
    this.resident?.dispose();
    for (const t of Object.values(this.refWeights ?? {})) t.dispose();
    this.refWeights = undefined;
  }

  /** Loss, logged values and gradients at `weights` (by trainable name). */
  async step(feeds: G.Feeds, weights: Map<string, Float32Array>): Promise<StepResult> {
    if (!this.train) throw new Error("DiffusionTrainer: built for resident training (setup.resident): use residentStep");
    const train = await this.train;
    const all = DiffusionTrainer.netFeeds(feeds, weights, this.trainables);
    if (this.s.objective === "patch-dpo") {
      const fwd = await this.forward;
      const fwdFeeds: G.Feeds = {};
      const wanted = new Set(fwd.inputs.map((i) => i.name));
      for (const [k, v] of Object.entries(DiffusionTrainer.netFeeds(feeds, this.initial, this.trainables))) if (wanted.has(k)) fwdFeeds[k] = v;
      all.ref_pred = (await fwd.run(fwdFeeds)).pred as Float32Array;
    }
    const wantedTrain = new Set(train.inputs.map((i) => i.name));
    const trainFeeds: G.Feeds = {};
    for (const [k, v] of Object.entries(all)) if (wantedTrain.has(k)) trainFeeds[k] = v;
    const r = await train.run(trainFeeds);
    const logs: Record<string, number> = {};
    const grads = new Map<string, Float32Array>();
    for (const [k, v] of Object.entries(r)) {
      if (k.startsWith("log:")) logs[k.slice(4)] = (v as Float32Array)[0]!;
      else if (k.startsWith("grad:")) grads.set(k.slice(5), v as Float32Array);
    }
    return { loss: (r.loss as Float32Array)[0]!, logs, grads };
  }

  /** Shapes of the trainable weights, by name. */
  shapes(): Map<string, number[]> {
    return new Map(this.trainables.map((t) => [t.name, [...t.tensor.shape]]));
  }
}

/**
 * Writes an IP-Adapter file in the release layout (image_proj.*, ip_adapter.<n>.to_k_ip/to_v_ip):
 * the trained weights where given, the original file's weights elsewhere. diffusers'
 * `load_ip_adapter` and our generate-images read it.
 */
export async function saveIpAdapter(path: string, model: DiffusionModel, ip: IpAdapter, trained: Map<string, Float32Array>): Promise<void> {
  const toRelease = ipAdapterKeyMap(model.unet.config);
  const out: Record<string, TensorInput> = {};
  for (const name of ip.source.names()) out[name] = { dtype: "F32", shape: ip.source.shape(name), data: ip.source.float32(name) };
  for (const [name, value] of trained) {
    const key = toRelease.get(name) ?? (name.startsWith("image_proj.") ? name : undefined);
    if (key && out[key]) out[key] = { dtype: "F32", shape: out[key]!.shape, data: value };
  }
  const dimHead = ip.projection.kind === "resampler" ? String(ip.projection.dimHead) : "64";
  await writeSafetensors(path, out, { format: "pt", dim_head: dimHead, written_by: "patchdpo" });
}
