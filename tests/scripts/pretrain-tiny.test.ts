// scripts/pretrain-tiny.ts makes the committed checkpoints/tiny. A short run must produce a model
// folder + IP-Adapter that the pipelines load and generate from; it must never overwrite a folder
// that is not its own; a preempted run must resume to the same bytes; and the committed model must
// match its definitions tensor for tensor.

import { expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { checkModels, loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { Pipeline } from "../../lib/diffusion/pipeline.ts";
import { UserError } from "../../lib/io/errors.ts";
import { CATALOGUE } from "../../lib/tinyworld/catalogue.ts";
import { renderReference } from "../../lib/tinyworld/index.ts";
import { TINY_SIZE, run } from "../../scripts/pretrain-tiny.ts";

setDefaultTimeout(300_000);
const COMMITTED = resolve(import.meta.dir, "../../checkpoints/tiny");
const small = { steps: 3, batch: 2, lr: 1e-3, seed: 0, threads: 1, logEvery: 1, warmup: 1, channels: [16, 32], saveEvery: 0 };
const tmp = () => mkdtempSync(join(tmpdir(), "patchdpo-pretrain-"));

test("a short pretraining run writes a loadable model folder and IP-Adapter", async () => {
  const out = join(tmp(), "tiny");
  await run({ out, ...small });
  const model = loadDiffusionModel(out);
  const ip = loadIpAdapter(join(out, "ip-adapter.safetensors"), "mobilenet_v2");
  for (const r of checkModels(model, ip)) expect([r.component, r.missing, r.mismatched]).toEqual([r.component, [], []]);
  const pipe = new Pipeline(model, { height: TINY_SIZE, width: TINY_SIZE, batch: 1, threads: 1, ip });
  const [img] = await pipe.generate([{ prompt: "a red teapot on the beach", seed: 1, image: renderReference(CATALOGUE[0]!.subject, 224).image }], { steps: 2, guidance: 2, sampler: "ddim" });
  expect([img!.width, img!.height]).toEqual([TINY_SIZE, TINY_SIZE]);
  expect(JSON.parse(readFileSync(join(out, "tiny-world.json"), "utf8")).command).toContain(`--out ${out}`);
});

test("an existing folder that is not this run's is refused (the committed model cannot be overwritten by accident)", async () => {
  const out = tmp();
  writeFileSync(join(out, "model_index.json"), "{}");
  await expect(run({ out, ...small })).rejects.toThrow(UserError);
  await expect(run({ out, ...small })).rejects.toThrow(/writes to a new folder/);
  expect(readFileSync(join(out, "model_index.json"), "utf8")).toBe("{}");
});

test("preempted with --stop-at and rerun: the same weights as an uninterrupted run; other settings are refused", async () => {
  const a = join(tmp(), "a"), b = join(tmp(), "b");
  const cfg = { ...small, steps: 4, saveEvery: 2 };
  await run({ out: a, ...cfg });
  expect((await run({ out: b, ...cfg, stopAt: 2 })).finished).toBe(false);
  await expect(run({ out: b, ...cfg, lr: 5e-4 })).rejects.toThrow(/another pretraining run/);
  expect((await run({ out: b, ...cfg })).finished).toBe(true);
  for (const f of ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "ip-adapter.safetensors"]) {
    expect(Buffer.compare(readFileSync(join(a, f)), readFileSync(join(b, f)))).toBe(0);
  }
});

test("--export-to writes the newest checkpoint of a run in progress as a model folder", async () => {
  const out = join(tmp(), "run");
  await run({ out, ...small, steps: 4, saveEvery: 2, stopAt: 2 });
  const look = join(tmp(), "look");
  mkdirSync(look, { recursive: true });
  await run({ out, ...small, steps: 4, saveEvery: 2, exportTo: look });
  expect(existsSync(join(look, "model_index.json"))).toBe(true);
  expect(JSON.parse(readFileSync(join(look, "tiny-world.json"), "utf8")).trainedSteps).toBe(2);
});

test.skipIf(!existsSync(join(COMMITTED, "model_index.json")))("the committed tiny world model matches its definitions", () => {
  const model = loadDiffusionModel(COMMITTED);
  const ip = loadIpAdapter(join(COMMITTED, "ip-adapter.safetensors"), "mobilenet_v2");
  for (const r of checkModels(model, ip)) expect([r.component, r.missing, r.mismatched, r.unexpected]).toEqual([r.component, [], [], []]);
});
