// The whole chain, short: scripts/demo.ts on the committed tiny generator with 2 subjects, few
// sampling, SSL and DPO steps, so every change proves the chain still runs end to end (what
// `make demo` runs at full length). Numbers are checked for shape and sanity, not for the method's
// effect (that is TinyBench).

import { expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { run } from "../../scripts/demo.ts";

setDefaultTimeout(600_000);
const MODEL = resolve(import.meta.dir, "../../checkpoints/tiny");

test("the demo chain runs end to end on the committed generator and reports every number beside its chance", async () => {
  const dir = join(mkdtempSync(join(tmpdir(), "patchdpo-demo-")), "demo");
  const o = { run: dir, model: MODEL, subjects: 2, perReference: 1, steps: 4, sslSteps: 3, dpoEpochs: 1 };
  const s = await run(o);
  for (const j of [s.judge.before, s.judge.after]) {
    expect(j.images).toBe(2);
    for (const k of ["identity", "detail", "allDetails"]) {
      expect(j.accuracy[k]!).toBeGreaterThanOrEqual(0);
      expect(j.chance[k]!).toBeLessThanOrEqual(1);
    }
  }
  // The scorer check runs on renderer truth with a planted defect in every image.
  for (const c of [s.scorerCheck.raw, s.scorerCheck.finetuned]) {
    expect(c.wrong).toBeGreaterThan(0);
    expect(c.auc).toBeGreaterThan(0);
    expect(c.auc).toBeLessThanOrEqual(1);
  }
  expect(existsSync(s.report)).toBe(true);
  expect(readFileSync(s.report, "utf8")).toContain("<svg");
  expect(existsSync(join(dir, "train", "ip-adapter-epoch-1.safetensors"))).toBe(true);
  // A rerun resumes every step: same summary numbers.
  const again = await run(o);
  expect(again.judge.after.accuracy).toEqual(s.judge.after.accuracy);
  expect(again.scorerCheck.finetuned.auc).toBe(s.scorerCheck.finetuned.auc);
});
