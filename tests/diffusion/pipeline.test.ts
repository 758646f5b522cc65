// The whole generate path on tiny random-weight models of every kind: tokenize -> encode ->
// sample with CFG -> decode -> PNG. Checks shapes, determinism (same seed, same bytes) and that
// the model-folder check finds missing and mismatched tensors.

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodePng } from "../../lib/io/images.ts";
import { writeSafetensors } from "../../lib/io/safetensors.ts";
import { checkModels, loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { type ModelFolderSpec, tensorsOf, writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import { Pipeline } from "../../lib/diffusion/pipeline.ts";
import { SafetensorsSource } from "../../lib/nn/params.ts";
import { trainBpe } from "../../lib/models/bpe-train.ts";
import { clipVisionConfigFromJson, clipVisionParamShapes } from "../../lib/models/clip-vision.ts";
import { initWeights } from "../../lib/nn/init.ts";

setDefaultTimeout(120_000);

const vocab = trainBpe(["a red teapot on the beach", "a blue mug in the snow"], 40);
const nVocab = Object.keys(vocab.vocab).length;
const text = (hidden: number, extra: Record<string, unknown> = {}) => ({
  architectures: ["CLIPTextModel"], hidden_size: hidden, intermediate_size: 2 * hidden, num_hidden_layers: 2, num_attention_heads: 2,
  max_position_embeddings: 77, hidden_act: "quick_gelu", vocab_size: nVocab, projection_dim: hidden,
  bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"], ...extra,
});
const scheduler = { _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", clip_sample: false, set_alpha_to_one: false, steps_offset: 1 };
const unet = (inCh: number, cross: number, extra: Record<string, unknown> = {}) => ({
  in_channels: inCh, out_channels: inCh, block_out_channels: [16, 32], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block: 1, cross_attention_dim: cross, attention_head_dim: 2, norm_num_groups: 8, ...extra,
});
const SD_PIXEL: ModelFolderSpec = {
  unet: unet(12, 32), vae: { _class_name: "PixelUnshuffleVAE", factor: 2, in_channels: 3, scaling_factor: 1 },
  textEncoder: text(32), tokenizer: vocab, scheduler,
};
const SD_KL: ModelFolderSpec = {
  ...SD_PIXEL, unet: unet(4, 32),
  vae: { _class_name: "AutoencoderKL", in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [8, 16], layers_per_block: 1, norm_num_groups: 4, down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"], up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"], scaling_factor: 0.18215 },
};
const SDXL: ModelFolderSpec = {
  ...SD_PIXEL,
  unet: unet(12, 48, { use_linear_projection: true, addition_embed_type: "text_time", addition_time_embed_dim: 8, projection_class_embeddings_input_dim: 16 + 6 * 8, transformer_layers_per_block: [1, 2] }),
  textEncoder: text(32), textEncoder2: { ...text(16), architectures: ["CLIPTextModelWithProjection"], hidden_act: "gelu" },
  scheduler: { ...scheduler, _class_name: "EulerDiscreteScheduler", timestep_spacing: "leading" },
};

const tmp = () => mkdtempSync(join(tmpdir(), "patchdpo-pipe-"));
const settings = { steps: 3, guidance: 5, sampler: "ddim" as const };

async function pngBytes(dir: string, kind: ModelFolderSpec, seeds: number[], sampler: "ddim" | "euler" = "ddim") {
  const model = loadDiffusionModel(dir);
  const pipe = new Pipeline(model, { height: 32, width: 32, batch: 2, threads: 1 });
  const imgs = await pipe.generate(seeds.map((seed) => ({ prompt: "a red teapot on the beach", seed })), { ...settings, sampler });
  void kind;
  return Promise.all(imgs.map(async (i) => {
    expect([i.width, i.height]).toEqual([32, 32]);
    return Buffer.from(await encodePng(i)).toString("hex");
  }));
}

describe("generate path on tiny random-weight models", () => {
  for (const [name, spec, sampler] of [["SD, pixel-unshuffle VAE", SD_PIXEL, "ddim"], ["SD, AutoencoderKL", SD_KL, "ddim"], ["SDXL-style (two text encoders, text_time)", SDXL, "euler"]] as const) {
    test(`${name}: shapes, same seed same bytes, other seed other image`, async () => {
      const dir = tmp();
      await writeModelFolder(dir, spec, 1);
      const a = await pngBytes(dir, spec, [7, 8, 7], sampler);
      expect(a[0]).toBe(a[2]); // same seed, same bytes (and independent of its place in the batch)
      expect(a[0]).not.toBe(a[1]);
      const b = await pngBytes(dir, spec, [7], sampler);
      expect(b[0]).toBe(a[0]);
      expect(checkModels(loadDiffusionModel(dir)).every((r) => !r.missing.length && !r.mismatched.length && !r.unexpected.length)).toBe(true);
      rmSync(dir, { recursive: true, force: true });
    });
  }

  test("IP-Adapter-Plus over the MobileNetV2 image encoder: the reference image changes the result", async () => {
    const dir = tmp();
    await writeModelFolder(dir, SD_PIXEL, 2);
    const ipFile = join(dir, "ip-adapter.safetensors");
    await writeIpAdapter(ipFile, SD_PIXEL.unet, { kind: "resampler", embeddingDim: 1280, dim: 32, depth: 1, dimHead: 8, heads: 4, numQueries: 4, outputDim: 32, ffMult: 2 }, 3);
    const model = loadDiffusionModel(dir);
    const ip = loadIpAdapter(ipFile, "mobilenet_v2");
    expect(checkModels(model, ip).find((r) => r.component === "ip-adapter")!.missing).toEqual([]);
    const pipe = new Pipeline(model, { height: 32, width: 32, batch: 1, threads: 1, ip, ipScale: 1 });
    const red = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).map((_, i) => (i % 3 === 0 ? 220 : 20)) };
    const blue = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).map((_, i) => (i % 3 === 2 ? 220 : 20)) };
    const [x, y, z] = await pipe.generate([{ prompt: "a teapot", seed: 1, image: red }, { prompt: "a teapot", seed: 1, image: blue }, { prompt: "a teapot", seed: 1, image: red }], settings);
    expect(Buffer.compare(Buffer.from(x!.data), Buffer.from(z!.data))).toBe(0);
    expect(Buffer.compare(Buffer.from(x!.data), Buffer.from(y!.data))).not.toBe(0);
    rmSync(dir, { recursive: true, force: true });
  });

  test("base IP-Adapter over a CLIP vision encoder: image_embeds -> ImageProjModel; the empty image prompt is a zero embedding", async () => {
    const dir = tmp();
    await writeModelFolder(dir, SD_PIXEL, 5);
    const enc = join(dir, "image_encoder");
    const visionJson = { architectures: ["CLIPVisionModelWithProjection"], hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 32, patch_size: 16, projection_dim: 8 };
    mkdirSync(enc, { recursive: true });
    writeFileSync(join(enc, "config.json"), JSON.stringify(visionJson));
    await writeSafetensors(join(enc, "model.safetensors"), tensorsOf(initWeights(clipVisionParamShapes(clipVisionConfigFromJson(visionJson)), 6)));
    const ipFile = join(dir, "ip-base.safetensors");
    const proj = { kind: "linear" as const, embeddingDim: 8, crossAttentionDim: 32, numTokens: 4 };
    await writeIpAdapter(ipFile, SD_PIXEL.unet, proj, 7);
    const model = loadDiffusionModel(dir);
    const ip = loadIpAdapter(ipFile, enc);
    expect(checkModels(model, ip).filter((r) => r.missing.length || r.mismatched.length)).toEqual([]);
    const pipe = new Pipeline(model, { height: 32, width: 32, batch: 1, threads: 1, ip, ipScale: 0.6 });
    // Unconditional tokens = LayerNorm(reshape(proj(0))) = LayerNorm of the bias, token by token.
    const empty = await pipe.imageTokens([null]);
    const bias = ip.source.float32("image_proj.proj.bias"), gamma = ip.source.float32("image_proj.norm.weight"), beta = ip.source.float32("image_proj.norm.bias");
    for (let t = 0; t < 4; t++) {
      const row = bias.subarray(t * 32, (t + 1) * 32);
      const mean = row.reduce((a, b) => a + b, 0) / 32;
      const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / 32;
      for (let c = 0; c < 32; c++) expect(empty[t * 32 + c]!).toBeCloseTo(((row[c]! - mean) / Math.sqrt(variance + 1e-5)) * gamma[c]! + beta[c]!, 4);
    }
    const [img] = await pipe.generate([{ prompt: "a teapot", seed: 1, image: { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).fill(90) } }], settings);
    expect([img!.width, img!.height]).toEqual([32, 32]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("checkModels lists missing and mismatched tensors by component", async () => {
    const dir = tmp();
    await writeModelFolder(dir, SD_PIXEL, 4);
    const path = join(dir, "unet", "diffusion_pytorch_model.safetensors");
    const t = tensorsOf(new SafetensorsSource([path]));
    delete t["conv_in.weight"];
    t["conv_out.bias"] = { dtype: "F32", shape: [3], data: new Float32Array(3) };
    await writeSafetensors(path, t);
    const r = checkModels(loadDiffusionModel(dir)).find((c) => c.component === "unet")!;
    expect(r.missing.join()).toContain("conv_in.weight");
    expect(r.mismatched.join()).toContain("conv_out.bias: file [3], expected [12]");
    rmSync(dir, { recursive: true, force: true });
  });
});
