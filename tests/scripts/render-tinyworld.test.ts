// scripts/render-tinyworld.ts: the renders the patch encoder finetunes on. Only the asked splits'
// subjects (test and held-out subjects must stay out of anything trained), on white plus the asked
// number of flat scenes, deterministic in --seed, and a rerun keeps what is there.

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { UsageError } from "../../lib/io/errors.ts";
import { FLAT_SCENES, subjectsOf } from "../../lib/tinyworld/catalogue.ts";
import { run } from "../../scripts/render-tinyworld.ts";

const root = mkdtempSync(join(tmpdir(), "patchdpo-render-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

test("the asked splits only, on white and in N flat scenes each; deterministic; a rerun keeps the files", async () => {
  const a = await run({ out: join(root, "a"), splits: ["val"], size: 32, scenes: 2, seed: 3 });
  const val = subjectsOf("val").map((e) => e.subject.id);
  expect(a.length).toBe(val.length * 3);
  const scenes = new Set(FLAT_SCENES.map((s) => s.name));
  for (const id of val) {
    const mine = readdirSync(join(root, "a")).filter((f) => f.startsWith(`${id}-`));
    expect(mine).toContain(`${id}-white.png`);
    expect(mine.filter((f) => scenes.has(f.slice(id.length + 1, -4))).length).toBe(2);
  }
  const others = new Set(subjectsOf("test").concat(subjectsOf("held-out")).map((e) => e.subject.id));
  for (const f of a) expect(others.has(basename(f).replace(/-[a-z]+\.png$/, ""))).toBe(false);
  // The same seed draws the same scenes and placements, byte for byte.
  const b = await run({ out: join(root, "b"), splits: ["val"], size: 32, scenes: 2, seed: 3 });
  expect(b.map((f) => basename(f))).toEqual(a.map((f) => basename(f)));
  for (const f of a) expect(readFileSync(f).equals(readFileSync(join(root, "b", basename(f))))).toBe(true);
  // A rerun writes nothing new.
  const before = a.map((f) => statSync(f).mtimeMs);
  await run({ out: join(root, "a"), splits: ["val"], size: 32, scenes: 2, seed: 3 });
  expect(a.map((f) => statSync(f).mtimeMs)).toEqual(before);
});

test("more scenes than the world has is a usage error", async () => {
  await expect(run({ out: join(root, "c"), splits: ["train"], size: 32, scenes: FLAT_SCENES.length + 1, seed: 0 })).rejects.toThrow(UsageError);
});
