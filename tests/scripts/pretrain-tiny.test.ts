// scripts/pretrain-tiny.ts makes the committed checkpoints/tiny. A 2-step run must produce a model
// folder + IP-Adapter that the pipelines load and generate from, and the committed model must
// match its definitions tensor for tensor.

import { expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { checkModels, loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { Pipeline } from "../../lib/diffusion/pipeline.ts";
import { renderReference, subjectFromSeed } from "../../lib/tinyworld/index.ts";
import { TINY_SIZE, run } from "../../scripts/pretrain-tiny.ts";

setDefaultTimeout(120_000);
const COMMITTED = resolve(import.meta.dir, "../../checkpoints/tiny");

test("a 2-step pretraining run writes a loadable model folder and IP-Adapter", async () => {
  const out = join(mkdtempSync(join(tmpdir(), "patchdpo-pretrain-")), "tiny");
  await run({ out, steps: 2, batch: 2, lr: 1e-3, seed: 0, threads: 1, logEvery: 1, prediction: "v_prediction", warmup: 1, sceneShare: 0.5 });
  const model = loadDiffusionModel(out);
  const ip = loadIpAdapter(join(out, "ip-adapter.safetensors"), "mobilenet_v2");
  for (const r of checkModels(model, ip)) expect([r.component, r.missing, r.mismatched]).toEqual([r.component, [], []]);
  const pipe = new Pipeline(model, { height: TINY_SIZE, width: TINY_SIZE, batch: 1, threads: 1, ip });
  const [img] = await pipe.generate([{ prompt: "a red teapot on the beach", seed: 1, image: renderReference(subjectFromSeed(1), 224).image }], { steps: 2, guidance: 2, sampler: "ddim" });
  expect([img!.width, img!.height]).toEqual([TINY_SIZE, TINY_SIZE]);
  rmSync(out, { recursive: true, force: true });
});

test.skipIf(!existsSync(join(COMMITTED, "model_index.json")))("the committed tiny world model matches its definitions", () => {
  const model = loadDiffusionModel(COMMITTED);
  const ip = loadIpAdapter(join(COMMITTED, "ip-adapter.safetensors"), "mobilenet_v2");
  for (const r of checkModels(model, ip)) expect([r.component, r.missing, r.mismatched, r.unexpected]).toEqual([r.component, [], [], []]);
});
