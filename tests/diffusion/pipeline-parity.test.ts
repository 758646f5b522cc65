// A few steps of the guidance loop with an IP-Adapter image prompt, from fixed latents, against
// diffusers' own StableDiffusionPipeline (DDIM, base IP-Adapter) and StableDiffusionXLPipeline
// (Euler, IP-Adapter-Plus), v0.31.0 (bench/parity/make_pipeline_fixtures.py ->
// tests/fixtures/diffusion/pipeline_{sd,sdxl}.safetensors). The fixtures hold tiny random UNets in
// diffusers' layout, the IP-Adapter in the release layout (image_proj.*, ip_adapter.<n>.*, loaded
// there by diffusers' own loader), prompt embeddings, the image features of one reference image
// (negative and positive), the initial latents and the latents after every step.
//
// Here the loop is rebuilt from the pieces Pipeline.generate uses, in its order: the IP weights
// bound through IpAdapterUNetSource, imageProjection for the image tokens, unetForward on
// [unconditional ; conditional] rows (SDXL: pooled text embeds and time ids [H, W, 0, 0, H, W]),
// schedulerFromConfig, init_noise_sigma, scaleModelInput, cfg and step. (Pipeline.generate itself
// draws its initial latents from the seeds and has no way to take given latents, so it cannot be fed
// diffusers' latents directly.)
//
// Tolerance: |ours - torch| <= 1e-4 + 1e-4 |torch| per element (the reference is diffusers in float64
// on the float32 values, except what diffusers keeps in float32: the timestep embedding and the
// Euler step). Each test prints its worst errors.

import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { cfg, parseSchedulerConfig, schedulerFromConfig, type SamplerName } from "../../lib/diffusion/index.ts";
import { type ImageProjectionConfig, imageProjection } from "../../lib/models/ip-adapter.ts";
import { IpAdapterUNetSource, unetConfigFromJson, unetForward } from "../../lib/models/unet.ts";
import { MemorySource, Params } from "../../lib/nn/params.ts";
import { type Worst, compare, report, sourceOf } from "../models/parity-helpers.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/diffusion");
const NOT_WEIGHTS = /^(prompt_embeds|negative_prompt_embeds|pooled_prompt_embeds|negative_pooled_prompt_embeds|image_embeds|negative_image_embeds|latents|latents\.step\d+|out|image_tokens|negative_image_tokens)$/;

/** Rows of a [n, ...] batch repeated `times` times: [a ; a ; ...]. */
function tile(x: Float32Array, times: number): Float32Array {
  const out = new Float32Array(x.length * times);
  for (let i = 0; i < times; i++) out.set(x, i * x.length);
  return out;
}
const concat = (a: Float32Array, b: Float32Array) => {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
};

for (const [label, file] of [["StableDiffusionPipeline (DDIM, base IP-Adapter)", "pipeline_sd.safetensors"], ["StableDiffusionXLPipeline (Euler, IP-Adapter-Plus)", "pipeline_sdxl.safetensors"]] as const) {
  describe(`guidance loop vs diffusers' ${label}`, () => {
    const f = openSafetensors(join(FIXTURES, file));
    const m = f.metadata;
    const c = unetConfigFromJson(JSON.parse(m.unet!) as Record<string, unknown>);
    const proj = JSON.parse(m.projection!) as ImageProjectionConfig;
    const steps = Number(m.steps), guidance = Number(m.guidance), ipScale = Number(m.ip_scale);
    const H = Number(m.height), W = Number(m.width);
    const names = f.names();
    const release = sourceOf(f, names.filter((n) => n.startsWith("image_proj.") || n.startsWith("ip_adapter.")));
    const base = sourceOf(f, names.filter((n) => !NOT_WEIGHTS.test(n) && !n.startsWith("image_proj.") && !n.startsWith("ip_adapter.")));
    const [B, C, h, w] = f.info("latents").shape as [number, number, number, number];
    const latentSize = C * h * w;
    const xl = c.addition !== null;

    test("image tokens: our imageProjection of the features = diffusers' encoder_hid_proj", async () => {
      const g = new G.Graph();
      const x = g.input("x", f.info("image_embeds").shape);
      const tokens = imageProjection(new Params(g, release as MemorySource), x, proj);
      const run = await G.compile({ tokens });
      const worst: Worst = { abs: 0, ratio: 0 };
      for (const which of ["image", "negative_image"]) {
        const r = await run.run({ x: f.float32(`${which}_embeds`) });
        compare(`${which}_tokens`, r.tokens as Float32Array, f.float32(`${which}_tokens`), worst);
      }
      report(`${file} image tokens`, worst);
      expect(worst.ratio).toBeLessThan(1);
    });

    test(`${steps} steps of CFG ${guidance} with IP scale ${ipScale}: the latents after every step`, async () => {
      // Image tokens for one reference image, repeated for the B prompts (as the pipeline does).
      const pg = new G.Graph();
      const px = pg.input("x", f.info("image_embeds").shape);
      const project = await G.compile({ tokens: imageProjection(new Params(pg, release), px, proj) });
      const tok = async (n: string) => (await project.run({ x: f.float32(n) })).tokens as Float32Array;
      const ipTokens = concat(tile(await tok("negative_image_embeds"), B), tile(await tok("image_embeds"), B));

      const g = new G.Graph();
      const textShape = f.info("prompt_embeds").shape;
      const T = proj.kind === "linear" ? proj.numTokens : proj.numQueries;
      const pred = unetForward(new Params(g, new IpAdapterUNetSource(base, release, c)), c, {
        sample: g.input("sample", [2 * B, C, h, w]),
        timestep: g.input("timestep", [2 * B]),
        encoderHiddenStates: g.input("encoder_hidden_states", [2 * B, textShape[1]!, textShape[2]!]),
        ipTokens: g.input("ip_tokens", [2 * B, T, c.crossAttentionDim[0]!]),
        ipScale,
        ...(xl ? { textEmbeds: g.input("text_embeds", [2 * B, f.info("pooled_prompt_embeds").shape[1]!]), timeIds: g.input("time_ids", [2 * B, 6]) } : {}),
      });
      const unet = await G.compile({ pred });
      const feeds: G.Feeds = { encoder_hidden_states: concat(f.float32("negative_prompt_embeds"), f.float32("prompt_embeds")), ip_tokens: ipTokens };
      if (xl) {
        feeds.text_embeds = concat(f.float32("negative_pooled_prompt_embeds"), f.float32("pooled_prompt_embeds"));
        feeds.time_ids = tile(Float32Array.from([H, W, 0, 0, H, W]), 2 * B);
      }

      const scheduler = schedulerFromConfig(parseSchedulerConfig(JSON.parse(m.scheduler!)), m.sampler as SamplerName);
      scheduler.setTimesteps(steps);
      expect(scheduler.timesteps.length).toBe(steps);
      let latents: Float32Array = Float32Array.from(f.float32("latents"), (v) => v * scheduler.initNoiseSigma);
      const worst: Worst = { abs: 0, ratio: 0 };
      let i = 0;
      for (const t of scheduler.timesteps) {
        const x = scheduler.scaleModelInput(latents, t);
        const r = await unet.run({ ...feeds, sample: concat(x, x), timestep: new Float32Array(2 * B).fill(t) });
        const p = r.pred as Float32Array;
        const guided = cfg(p.subarray(0, B * latentSize), p.subarray(B * latentSize), guidance);
        latents = scheduler.step(guided, t, latents, { eta: 0 }).prevSample;
        compare(`latents after step ${i} (t = ${t})`, latents, f.float32(`latents.step${i}`), worst);
        i++;
      }
      compare("out", latents, f.float32("out"), worst);
      report(`${file} (${steps} steps)`, worst);
      expect(worst.ratio).toBeLessThan(1);
    });
  });
}
