// A notebook imports a script and calls its run() with only what it changes (issue 12, item 7):
// every script's run() applies its defaults and checks its options with the CLI's schema. Each
// script here gets its required options only, plus, where the default would take minutes (a
// 500-step finetune, a 4000-step pretraining) a --stop-at, and the raw encoder where the shipped
// one does not matter. (The demo's own test calls it with a few options; its defaults take minutes.)

import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UsageError } from "../../lib/io/errors.ts";
import { run as dpoEpoch } from "../../scripts/dpo-epoch.ts";
import { run as evaluate } from "../../scripts/eval.ts";
import { run as finetune } from "../../scripts/finetune-encoder.ts";
import { run as generate } from "../../scripts/generate-images.ts";
import { run as judge } from "../../scripts/judge.ts";
import { run as pretrain } from "../../scripts/pretrain-tiny.ts";
import { run as renderTinyWorld } from "../../scripts/render-tinyworld.ts";
import { run as report } from "../../scripts/report.ts";
import { run as score } from "../../scripts/score-patches.ts";
import { run as status } from "../../scripts/status.ts";
import { run as synthesize } from "../../scripts/synthesize-prompts.ts";
import { tinyModel } from "./helpers/tiny-run.ts";

const root = mkdtempSync(join(tmpdir(), "patchdpo-defaults-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

test("synthesize-prompts, generate-images, score-patches, dpo-epoch, eval, judge, report, status: required options only", async () => {
  const open = join(root, "open");
  expect((await synthesize({ run: open })).rows).toBe(100); // --subjects 100, the open grammar
  const dir = join(root, "tiny");
  await synthesize({ run: dir, world: "tiny", subjects: 2 }); // the tiny world (the renderer draws only its subjects)
  expect(await generate({ run: dir, mode: "reference", model: "tinyworld" })).toMatchObject({ generated: 2 });
  expect(await generate({ run: dir, mode: "personalized", model: "tinyworld" })).toMatchObject({ generated: 2 }); // --per-reference 1
  expect(await score({ run: dir, encoder: "mobilenet_v2" })).toMatchObject({ scored: 2 });
  const { model, ip } = await tinyModel(root);
  const epoch = await dpoEpoch({ run: dir, model, ipAdapter: ip, imageEncoder: "mobilenet_v2" }); // --size: the model's own
  expect(epoch).toMatchObject({ finished: true, pairs: 2, steps: 1 });
  expect((await evaluate({ run: dir, encoderFeature: "mobilenet_v2" })).summary?.meta.images).toBe(2);
  expect((await judge({ run: dir })).images).toBe(2);
  expect(readFileSync((await report({ run: dir })).path, "utf8")).toContain("<html");
  const s = await status({ run: dir });
  expect(s.steps.every((e) => e.status === "ok")).toBe(true);
  // The CLI's errors, with flag names, for what is missing or wrong.
  await expect(generate({ run: dir } as never)).rejects.toThrow(/--mode is required; --model is required/);
  await expect(score({ run: dir, latentGrid: 0 })).rejects.toThrow(UsageError);
});

test("render-tinyworld, finetune-encoder and pretrain-tiny: required options (and --stop-at where the default is minutes)", async () => {
  const renders = await renderTinyWorld({ out: join(root, "renders") });
  expect(renders.length).toBeGreaterThan(20);
  const ft = await finetune({ images: join(root, "renders"), out: join(root, "encoder"), stopAt: 1 });
  expect(ft).toMatchObject({ finished: false, step: 1 });
  await pretrain({ out: join(root, "pretrain"), stopAt: 1 });
  expect(existsSync(join(root, "pretrain", "train"))).toBe(true);
});
