import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { UserError } from "../../lib/io/errors.ts";
import { loadImage } from "../../lib/io/images.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { GenerationRow, PromptRow, ReferenceRow } from "../../lib/io/schemas.ts";
import { writeIpAdapter, writeModelFolder, type ModelFolderSpec } from "../../lib/diffusion/model-folder.ts";
import { trainBpe } from "../../lib/models/bpe-train.ts";
import { DEFAULTS, type GenerateOptions, run } from "../../scripts/generate-images.ts";
import { run as synthesize, DEFAULTS as PROMPT_DEFAULTS } from "../../scripts/synthesize-prompts.ts";

setDefaultTimeout(120_000);
const REPO = resolve(import.meta.dir, "../..");
const tmp = () => mkdtempSync(join(tmpdir(), "patchdpo-gen-"));

async function promptsRun(n = 2, scenes = 2): Promise<string> {
  const dir = tmp();
  await synthesize({ ...PROMPT_DEFAULTS, run: dir, subjects: n, scenesPerSubject: scenes, world: "tiny", log: () => {} });
  return dir;
}
const opts = (o: Partial<GenerateOptions>): GenerateOptions => ({ ...DEFAULTS, run: "", mode: "reference", model: "tinyworld", width: 64, height: 64, threads: 1, ...o });

describe("generate-images with the tiny world's renderer", () => {
  test("references then personalized generations; rows carry their settings; reruns resume", async () => {
    const dir = await promptsRun();
    expect(await run(opts({ run: dir }))).toMatchObject({ generated: 2, skipped: 0 });
    const refs = await readJsonlAll(join(dir, "references.jsonl"), ReferenceRow);
    expect(refs.length).toBe(2);
    for (const r of refs) expect(existsSync(join(dir, r.image))).toBe(true);
    expect(await run(opts({ run: dir, mode: "personalized", perReference: 3 }))).toMatchObject({ generated: 6 });
    const gens = await readJsonlAll(join(dir, "generations.jsonl"), GenerationRow);
    expect(gens.map((g) => g.k)).toEqual([0, 1, 2, 0, 1, 2]);
    // The authors' pairs: every generation is drawn with its reference's own prompt, on white.
    const byId = new Map(refs.map((r) => [r.id, r]));
    for (const g of gens) {
      expect(g.prompt).toBe(byId.get(g.referenceId)!.prompt);
      expect(g.settings).toMatchObject({ pairPrompt: "reference", scene: "white" });
    }
    for (const g of gens) {
      expect(["none", "detail-missing", "detail-recolored", "detail-moved", "pattern-wrong", "noise-blob"]).toContain(String(g.settings.defect));
      // The ground truth beside each image: red marks the planted defect, green the subject.
      const truth = await loadImage(join(dir, String(g.settings.truth)));
      let red = 0, green = 0;
      for (let i = 0; i < truth.width * truth.height; i++) (red += truth.data[i * 3]! ? 1 : 0), (green += truth.data[i * 3 + 1]! ? 1 : 0);
      expect(green).toBeGreaterThan(0);
      expect(red > 0).toBe(g.settings.defect !== "none");
    }
    const before = readFileSync(join(dir, "generations.jsonl"), "utf8");
    expect(await run(opts({ run: dir, mode: "personalized", perReference: 3 }))).toMatchObject({ generated: 0, skipped: 6 });
    expect(readFileSync(join(dir, "generations.jsonl"), "utf8")).toBe(before);
    rmSync(dir, { recursive: true, force: true });
  });

  test("--pair-prompt scene cycles the subject's scene prompts and renders the scene", async () => {
    const dir = await promptsRun(2, 2);
    await run(opts({ run: dir }));
    await run(opts({ run: dir, mode: "personalized", perReference: 3, pairPrompt: "scene", defectRate: 0 }));
    const prompts = (await readJsonlAll(join(dir, "prompts.jsonl"), PromptRow)).map((p) => p.scenePrompts);
    const gens = await readJsonlAll(join(dir, "generations.jsonl"), GenerationRow);
    expect(gens.map((g) => g.prompt)).toEqual(prompts.flatMap((p) => [p[0], p[1], p[0]]));
    for (const g of gens) {
      expect(g.settings.scene).not.toBe("white");
      const img = await loadImage(join(dir, g.image));
      expect(Math.min(img.data[0]!, img.data[1]!, img.data[2]!)).toBeLessThan(235); // the corner is scene, not white
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test("personalized before references, or references that name unknown subjects: clear errors", async () => {
    const dir = await promptsRun(1);
    expect(run(opts({ run: dir, mode: "personalized" }))).rejects.toThrow(/references.jsonl is missing/);
    expect(run(opts({ run: tmp() }))).rejects.toThrow(/prompts.jsonl is missing/);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("generate-images with a diffusion model folder (tiny random weights, same code path as SD)", () => {
  const vocab = trainBpe(["a photo of a teapot on a white background", "in the jungle on the beach"], 60);
  const n = Object.keys(vocab.vocab).length;
  const spec: ModelFolderSpec = {
    unet: { in_channels: 12, out_channels: 12, block_out_channels: [16, 32], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block: 1, cross_attention_dim: 32, attention_head_dim: 2, norm_num_groups: 8 },
    vae: { _class_name: "PixelUnshuffleVAE", factor: 2, in_channels: 3, scaling_factor: 1 },
    textEncoder: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: n, bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"] },
    tokenizer: vocab,
    scheduler: { _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, clip_sample: false, set_alpha_to_one: false, steps_offset: 1 },
  };

  test("reference and IP-Adapter personalized modes write images and reproducible rows", async () => {
    const dir = await promptsRun(2, 1);
    const model = join(dir, "model");
    await writeModelFolder(model, spec, 5);
    const ipFile = join(dir, "ip.safetensors");
    await writeIpAdapter(ipFile, spec.unet, { kind: "resampler", embeddingDim: 1280, dim: 16, depth: 1, dimHead: 8, heads: 2, numQueries: 2, outputDim: 32, ffMult: 2 }, 6);
    const common = { run: dir, model, width: 32, height: 32, steps: 2, batch: 2 };
    expect(await run(opts({ ...common }))).toMatchObject({ generated: 2 });
    const ref = (await readJsonlAll(join(dir, "references.jsonl"), ReferenceRow))[0]!;
    expect(ref.settings).toMatchObject({ sampler: "ddim", steps: 2, guidanceScale: 7.5, width: 32, height: 32 });
    const first = readFileSync(join(dir, ref.image));
    await run(opts({ ...common, force: true }));
    expect(Buffer.compare(readFileSync(join(dir, ref.image)), first)).toBe(0); // same seed, same bytes
    expect(await run(opts({ ...common, mode: "personalized", ipAdapter: ipFile, imageEncoder: "mobilenet_v2" }))).toMatchObject({ generated: 2 });
    const gen = (await readJsonlAll(join(dir, "generations.jsonl"), GenerationRow))[0]!;
    expect(gen.settings).toMatchObject({ ipAdapter: ipFile, imageEncoder: "mobilenet_v2", ipAdapterScale: 0.6 });
    await expect(run(opts({ ...common, mode: "personalized", force: true }))).rejects.toThrow(/--ip-adapter/);
    rmSync(dir, { recursive: true, force: true });
  });

  test("--check-models exits 0 for a complete folder and 1 with the missing tensors listed", async () => {
    const dir = tmp();
    await writeModelFolder(dir, spec, 7);
    const ok = Bun.spawnSync(["bun", join(REPO, "scripts/generate-images.ts"), "--check-models", "--model", dir]);
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout.toString()).toContain("ok      unet");
    rmSync(join(dir, "text_encoder", "model.safetensors"));
    const bad = Bun.spawnSync(["bun", join(REPO, "scripts/generate-images.ts"), "--check-models", "--model", dir]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr.toString()).toMatch(/no model.safetensors/);
    rmSync(dir, { recursive: true, force: true });
  });

  test("bad flags exit 2", () => {
    const r = Bun.spawnSync(["bun", join(REPO, "scripts/generate-images.ts"), "--run", "x", "--mode", "sideways", "--model", "tinyworld"]);
    expect(r.exitCode).toBe(2);
    expect(UserError).toBeDefined();
  });
});
