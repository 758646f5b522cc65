// The text-to-image and IP-Adapter pipelines: tokenize -> encode text (and the image prompt) ->
// sample with classifier-free guidance -> decode -> RGB. The denoising loop is written out in
// `generate` where a reader can follow it (diffusers' style); the networks are lib/graph graphs
// compiled once per shape and reused for every step and batch.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import { type RgbImage, resizeBicubic, toCHW } from "../io/images.ts";
import { UserError } from "../io/errors.ts";
import { clipPreprocess, clipVisionForward } from "../models/clip-vision.ts";
import { clipTextForward, clipTextInputs } from "../models/clip-text.ts";
import { imageProjection } from "../models/ip-adapter.ts";
import { loadMobileNetV2 } from "../models/mobilenet.ts";
import { pixelShuffle } from "../models/pixel-vae.ts";
import { IpAdapterUNetSource, unetForward } from "../models/unet.ts";
import { fromLatents, vaeDecode } from "../models/vae.ts";
import { Params, type WeightSource } from "../nn/params.ts";
import { cfg } from "./guidance.ts";
import type { DiffusionModel, IpAdapter } from "./model.ts";
import { batchLatents } from "./noise.ts";
import { type SamplerName, schedulerFromConfig } from "./index.ts";

export interface PipelineOptions {
  height: number;
  width: number;
  /** Images per denoiser call (the UNet graph runs 2x this for guidance). */
  batch: number;
  device?: G.Device;
  threads?: number;
  /** Personalized generation: the IP-Adapter and its image encoder. */
  ip?: IpAdapter;
  /** Weight of the image prompt in every cross-attention (IP-Adapter's `scale`). */
  ipScale?: number;
  /** Fused contrib-op attention (com.microsoft.MultiHeadAttention; CompileOptions.fusedOps). */
  fusedOps?: boolean;
}

export interface SampleSettings {
  steps: number;
  guidance: number;
  sampler: SamplerName;
  /** DDIM eta (0: deterministic). */
  eta?: number;
}

export interface GenerateItem {
  prompt: string;
  negativePrompt?: string;
  seed: number;
  /** The reference image (IP-Adapter pipelines). */
  image?: RgbImage;
  /** Names the image in error messages. */
  id?: string;
}

interface TextConditioning {
  /** [N, L, D] cross-attention states. */
  hidden: Float32Array;
  /** SDXL: [N, P] pooled projection of text_encoder_2. */
  pooled?: Float32Array;
}

/** A [N, ...] batch padded with zeros to `n` rows. */
function padRows(x: Float32Array, rows: number, n: number): Float32Array {
  if (rows === n) return x;
  const out = new Float32Array((x.length / rows) * n);
  out.set(x);
  return out;
}

/** Rows [a, b) of a [N, ...] batch. */
const rowsOf = (x: Float32Array, n: number, a: number, b: number) => x.subarray((x.length / n) * a, (x.length / n) * b);

function toRgb(images: Float32Array, count: number, H: number, W: number): RgbImage[] {
  // Decoder output in [-1, 1], CHW -> uint8 HWC.
  const out: RgbImage[] = [];
  for (let b = 0; b < count; b++) {
    const data = new Uint8Array(H * W * 3);
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < H * W; i++) {
        const v = images[(b * 3 + c) * H * W + i]!;
        data[i * 3 + c] = Math.max(0, Math.min(255, Math.round((v * 0.5 + 0.5) * 255)));
      }
    }
    out.push({ width: W, height: H, data });
  }
  return out;
}

export class Pipeline {
  private readonly graphs = new Map<string, Promise<G.Compiled>>();
  private uncondTokens?: Float32Array;
  readonly latentH: number;
  readonly latentW: number;

  constructor(readonly model: DiffusionModel, readonly o: PipelineOptions) {
    const f = model.vaeFactor;
    this.latentH = o.height / f;
    this.latentW = o.width / f;
    if (!Number.isInteger(this.latentH) || !Number.isInteger(this.latentW)) throw new Error(`image size ${o.width}x${o.height} must be a multiple of the VAE factor ${f}`);
  }

  private compile(key: string, build: () => Record<string, Tensor>): Promise<G.Compiled> {
    let c = this.graphs.get(key);
    if (!c) {
      c = G.compile(build(), { device: this.o.device, threads: this.o.threads, fusedOps: this.o.fusedOps });
      this.graphs.set(key, c);
    }
    return c;
  }

  /** Text conditioning for `prompts` (batched by the text graph's batch size). */
  async encodeText(prompts: string[]): Promise<TextConditioning> {
    const m = this.model;
    const n = 2 * this.o.batch;
    const graph = await this.compile("text", () => {
      const g = new G.Graph();
      const outs: Record<string, Tensor> = {};
      const hidden: Tensor[] = [];
      m.textEncoders.forEach((te, k) => {
        const { inputIds, eosIndex } = clipTextInputs(g, n, te.tokenizer.maxLength, `te${k}_`);
        const r = clipTextForward(new Params(g, te.source, { graphPrefix: `te${k}/` }), inputIds, eosIndex, te.config, m.xl && k === 1);
        // SD 1.x/2.x condition on the final (layer-normed) states; SDXL on the penultimate layer of both encoders.
        hidden.push(m.xl ? r.hiddenStates[r.hiddenStates.length - 2]! : r.lastHiddenState);
        if (m.xl && k === 1) outs.pooled = r.textEmbeds!;
      });
      outs.hidden = G.concat(hidden, 2);
      return outs;
    });
    const hiddenParts: Float32Array[] = [];
    const pooledParts: Float32Array[] = [];
    for (let i = 0; i < prompts.length; i += n) {
      const chunk = prompts.slice(i, i + n);
      const feeds: G.Feeds = {};
      const wanted = new Set(graph.inputs.map((i) => i.name)); // eos positions only where pooling is used
      m.textEncoders.forEach((te, k) => {
        const enc = te.tokenizer.encodeBatch([...chunk, ...new Array(n - chunk.length).fill("")]);
        feeds[`te${k}_input_ids`] = enc.ids;
        if (wanted.has(`te${k}_eos_index`)) feeds[`te${k}_eos_index`] = enc.eosIndex;
      });
      const r = await graph.run(feeds);
      hiddenParts.push(Float32Array.from(rowsOf(r.hidden as Float32Array, n, 0, chunk.length)));
      if (r.pooled) pooledParts.push(Float32Array.from(rowsOf(r.pooled as Float32Array, n, 0, chunk.length)));
      // SDXL's force_zeros_for_empty_prompt: empty prompts condition on zeros.
      if (m.zerosForEmptyPrompt) {
        chunk.forEach((p, j) => {
          if (p.trim() !== "") return;
          rowsOf(hiddenParts.at(-1)!, chunk.length, j, j + 1).fill(0);
          if (pooledParts.length) rowsOf(pooledParts.at(-1)!, chunk.length, j, j + 1).fill(0);
        });
      }
    }
    const cat = (parts: Float32Array[]) => {
      const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
      let o = 0;
      for (const p of parts) (out.set(p, o), (o += p.length));
      return out;
    };
    return { hidden: cat(hiddenParts), pooled: pooledParts.length ? cat(pooledParts) : undefined };
  }

  /** Image prompt tokens [N, T, D] for reference images; `null` images give the unconditional tokens. */
  async imageTokens(images: (RgbImage | null)[]): Promise<Float32Array> {
    const ip = this.o.ip;
    if (!ip) throw new Error("imageTokens: this pipeline has no IP-Adapter");
    const n = this.o.batch;
    const enc = ip.encoder;
    const size = enc.kind === "clip" ? enc.config.imageSize : 224;
    const graph = await this.compile("image", () => {
      const g = new G.Graph();
      const pixels = g.input("pixels", [n, 3, size, size]);
      let features: Tensor;
      if (enc.kind === "clip") {
        const r = clipVisionForward(new Params(g, enc.source), pixels, enc.config, ip.projection.kind === "linear");
        // Plus models read the penultimate hidden states (their empty prompt is a zero image's);
        // base models the projected embedding, whose empty prompt is a zero embedding.
        features = ip.projection.kind === "linear" ? G.mul(r.imageEmbeds!, g.input("keep", [n, 1])) : r.hiddenStates[r.hiddenStates.length - 2]!;
      } else {
        const { encoder, source } = loadMobileNetV2();
        const fmap = encoder.forward(new Params(g, source), pixels).patches; // [n, 1280, 7, 7]
        const [, C, h, w] = fmap.shape as [number, number, number, number];
        features = G.transpose(G.reshape(fmap, [n, C, h * w]), [0, 2, 1]);
      }
      return { tokens: imageProjection(new Params(g, ip.source), features, ip.projection) };
    });
    const per = 3 * size * size;
    const parts: Float32Array[] = [];
    for (let i = 0; i < images.length; i += n) {
      const chunk = images.slice(i, i + n);
      const px = new Float32Array(n * per);
      chunk.forEach((img, j) => {
        if (!img) return; // a zero image: IP-Adapter-Plus's unconditional image prompt
        if (enc.kind === "clip") clipPreprocess(img, size, px, j * per);
        else toCHW(img.width === size && img.height === size ? img : resizeBicubic(img, size, size), [0, 0, 0], [1, 1, 1], px, j * per);
      });
      const feeds: G.Feeds = { pixels: px };
      if (graph.inputs.some((i) => i.name === "keep")) feeds.keep = Float32Array.from({ length: n }, (_, j) => (chunk[j] ? 1 : 0));
      const r = await graph.run(feeds);
      parts.push(Float32Array.from(rowsOf(r.tokens as Float32Array, n, 0, chunk.length)));
    }
    const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) (out.set(p, o), (o += p.length));
    return out;
  }

  /** The UNet's weights, with the IP-Adapter's to_k_ip/to_v_ip laid over them when present. */
  unetSource(): WeightSource {
    const ip = this.o.ip;
    return ip ? new IpAdapterUNetSource(this.model.unet.source, ip.source, this.model.unet.config) : this.model.unet.source;
  }

  private async denoiser(): Promise<G.Compiled> {
    const m = this.model;
    const B2 = 2 * this.o.batch;
    return this.compile("unet", () => {
      const g = new G.Graph();
      const textDim = m.textEncoders.reduce((s, te) => s + te.config.hiddenSize, 0);
      const L = m.textEncoders[0]!.tokenizer.maxLength;
      const sample = g.input("sample", [B2, m.latentChannels, this.latentH, this.latentW]);
      const timestep = g.input("timestep", [B2]);
      const encoderHiddenStates = g.input("encoder_hidden_states", [B2, L, textDim]);
      const ip = this.o.ip;
      const ipTokens = ip ? g.input("ip_tokens", [B2, ip.projection.kind === "linear" ? ip.projection.numTokens : ip.projection.numQueries, m.unet.config.crossAttentionDim[0]!]) : undefined;
      const xl = m.xl ? { textEmbeds: g.input("text_embeds", [B2, m.textEncoders[1]!.config.projectionDim]), timeIds: g.input("time_ids", [B2, 6]) } : {};
      const pred = unetForward(new Params(g, this.unetSource()), m.unet.config, {
        sample, timestep, encoderHiddenStates, ipTokens, ipScale: this.o.ipScale ?? 1, ...xl,
      });
      return { pred };
    });
  }

  private async decoder(): Promise<G.Compiled> {
    const m = this.model;
    return this.compile("decode", () => {
      const g = new G.Graph();
      const z = g.input("latents", [this.o.batch, m.latentChannels, this.latentH, this.latentW]);
      const vae = m.vae;
      const images = vae.kind === "pixel" ? pixelShuffle(z, vae.config) : vaeDecode(new Params(g, vae.source), fromLatents(z, vae.config), vae.config);
      return { images };
    });
  }

  /** Generates one image per item, `batch` at a time. */
  async generate(items: GenerateItem[], s: SampleSettings, onImage?: (i: number, img: RgbImage) => Promise<void> | void): Promise<RgbImage[]> {
    const m = this.model;
    const B = this.o.batch;
    const H = this.o.height, W = this.o.width;
    const perImage = [m.latentChannels, this.latentH, this.latentW];
    const latentSize = perImage.reduce((a, b) => a * b, 1);
    const unet = await this.denoiser();
    const decode = await this.decoder();
    const results: RgbImage[] = [];
    for (let start = 0; start < items.length; start += B) {
      const chunk = items.slice(start, start + B);
      const n = chunk.length;
      // Conditioning rows: [unconditional x B ; conditional x B] (padded batches repeat nothing: zeros).
      const text = await this.encodeText([
        ...chunk.map((it) => it.negativePrompt ?? ""), ...new Array(B - n).fill(""),
        ...chunk.map((it) => it.prompt), ...new Array(B - n).fill(""),
      ]);
      const feeds: G.Feeds = { encoder_hidden_states: text.hidden };
      if (m.xl) {
        feeds.text_embeds = text.pooled!;
        const ids = new Float32Array(2 * B * 6);
        for (let r = 0; r < 2 * B; r++) ids.set([H, W, 0, 0, H, W], r * 6);
        feeds.time_ids = ids;
      }
      if (this.o.ip) {
        const refs = chunk.map((it) => {
          if (!it.image) throw new Error("IP-Adapter generation needs a reference image per item");
          return it.image;
        });
        const cond = await this.imageTokens([...refs, ...new Array(B - n).fill(null)]);
        // The empty image prompt is the same for every batch: encode it once.
        this.uncondTokens ??= await this.imageTokens(new Array(B).fill(null));
        const uncond = this.uncondTokens;
        feeds.ip_tokens = new Float32Array(uncond.length + cond.length);
        (feeds.ip_tokens as Float32Array).set(uncond);
        (feeds.ip_tokens as Float32Array).set(cond, uncond.length);
      }
      const scheduler = schedulerFromConfig(m.scheduler, s.sampler);
      scheduler.setTimesteps(s.steps);
      let latents = padRows(batchLatents(perImage, chunk.map((it) => it.seed)), n, B);
      for (let i = 0; i < latents.length; i++) latents[i]! *= scheduler.initNoiseSigma;
      for (const t of scheduler.timesteps) {
        const x = scheduler.scaleModelInput(latents, t);
        const sample = new Float32Array(2 * x.length);
        sample.set(x);
        sample.set(x, x.length);
        const r = await unet.run({ ...feeds, sample, timestep: new Float32Array(2 * B).fill(t) });
        const pred = r.pred as Float32Array;
        const guided = cfg(pred.subarray(0, B * latentSize), pred.subarray(B * latentSize), s.guidance);
        latents = scheduler.step(guided, t, latents, { eta: s.eta ?? 0 }).prevSample;
      }
      const decoded = (await decode.run({ latents })).images as Float32Array;
      // NaN pixels would be written as black images with exit 0; say so and stop instead.
      for (let k = 0; k < n; k++) {
        const bad = [rowsOf(latents, B, k, k + 1), rowsOf(decoded, B, k, k + 1)].findIndex((x) => x.some((v) => !Number.isFinite(v)));
        if (bad >= 0) {
          const it = chunk[k]!;
          throw new UserError(
            `image ${it.id !== undefined ? `"${it.id}"` : start + k} (prompt ${JSON.stringify(it.prompt)}, seed ${it.seed}): the ${bad === 0 ? "denoised latents" : "decoded pixels"} hold NaN or infinite values, ` +
              `so the image would be black. Check the weights (generate-images --check-models --model ${m.dir}${this.o.ip ? ` --ip-adapter ${this.o.ip.file}` : ""}) and --guidance / --ip-scale`,
          );
        }
      }
      const images = toRgb(decoded, n, H, W);
      for (let k = 0; k < n; k++) {
        results.push(images[k]!);
        await onImage?.(start + k, images[k]!);
      }
    }
    return results;
  }
}
