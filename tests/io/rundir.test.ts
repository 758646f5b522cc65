import { describe, expect, test } from "bun:test";
import { join, resolve } from "node:path";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import {
  inShard,
  isSafeId,
  parseShard,
  relPaths,
  resolveInside,
  runPaths,
  sanitizeId,
  shardPath,
  stableHash,
} from "../../lib/io/rundir.ts";

describe("sanitizeId", () => {
  test.each([
    ["red-teapot_01", "red-teapot_01"],
    ["Red Teapot #1", "Red_Teapot_1"],
    ["a/b\\c", "a_b_c"],
    ["../../etc/passwd", "_.._etc_passwd"],
    [".hidden", "hidden"],
    ["...x", "x"],
    ["dog.v2", "dog.v2"],
    ["café", "caf_"],
    ["ﬁsh", "fish"], // NFKC folds the ligature
    ["_", "_"],
    ["a\0b", "a_b"],
  ])("%j -> %j", (input, want) => {
    expect(sanitizeId(input)).toBe(want);
    expect(isSafeId(sanitizeId(input))).toBe(true);
  });

  test("cuts to 100 characters", () => {
    expect(sanitizeId("x".repeat(250))).toBe("x".repeat(100));
  });

  test.each(["", ".", "..", "/", "////", "日本語", "   "])("throws when nothing usable is left: %j", (input) => {
    expect(() => sanitizeId(input)).toThrow(UserError);
  });

  test("isSafeId", () => {
    expect(isSafeId("a.b-c_d")).toBe(true);
    for (const bad of ["", ".a", "a/b", "..", "a b", "x".repeat(101)]) expect(isSafeId(bad)).toBe(false);
  });
});

describe("runPaths", () => {
  test("every manifest and folder of DESIGN.md section 4", () => {
    const p = runPaths("data/runs/r1");
    const root = resolve("data/runs/r1");
    expect(p.root).toBe(root);
    expect(p.prompts).toBe(join(root, "prompts.jsonl"));
    expect(p.references).toBe(join(root, "references.jsonl"));
    expect(p.referencesDir).toBe(join(root, "references"));
    expect(p.generations).toBe(join(root, "generations.jsonl"));
    expect(p.generationsDir).toBe(join(root, "generations"));
    expect(p.patchScores).toBe(join(root, "patch-scores.jsonl"));
    expect(p.patchScoresDir).toBe(join(root, "patch-scores"));
    expect(p.heatmapsDir).toBe(join(root, "heatmaps"));
    expect(p.trainDir).toBe(join(root, "train"));
    expect(p.trainLog).toBe(join(root, "train", "train-log.jsonl"));
    expect(p.checkpointsDir).toBe(join(root, "train", "checkpoints"));
    expect(p.evalDir).toBe(join(root, "eval"));
    expect(p.evalScores).toBe(join(root, "eval", "scores.jsonl"));
    expect(p.evalSummary).toBe(join(root, "eval", "summary.json"));
    expect(p.evalReport).toBe(join(root, "eval", "report.html"));
    expect(p.runJson).toBe(join(root, "run.json"));
  });

  test("per-item files, relative (as stored in manifests) and absolute", () => {
    const p = runPaths("/runs/r1");
    expect(relPaths.referenceImage("teapot-3")).toBe("references/teapot-3.png");
    expect(relPaths.generationImage("teapot-3", 2)).toBe("generations/teapot-3-2.png");
    expect(relPaths.patchScoreFile("teapot-3", 2)).toBe("patch-scores/teapot-3-2.safetensors");
    expect(relPaths.heatmap("teapot-3", 0)).toBe("heatmaps/teapot-3-0.png");
    expect(relPaths.checkpoint(1500)).toBe("train/checkpoints/step-1500");
    expect(p.referenceImage("teapot-3")).toBe("/runs/r1/references/teapot-3.png");
    expect(p.generationImage("teapot-3", 2)).toBe("/runs/r1/generations/teapot-3-2.png");
    expect(p.patchScoreFile("teapot-3", 2)).toBe("/runs/r1/patch-scores/teapot-3-2.safetensors");
    expect(p.heatmap("teapot-3", 1)).toBe("/runs/r1/heatmaps/teapot-3-1.png");
    expect(p.checkpoint(7)).toBe("/runs/r1/train/checkpoints/step-7");
    expect(p.resolve("references/x.png")).toBe("/runs/r1/references/x.png");
  });

  test("unsafe ids and bad indices are refused, never turned into paths", () => {
    const p = runPaths("/runs/r1");
    expect(() => p.referenceImage("../../etc/passwd")).toThrow(/unsafe id/);
    expect(() => relPaths.generationImage("a/b", 0)).toThrow(/unsafe id/);
    expect(() => p.heatmap(".x", 0)).toThrow(UserError);
    expect(() => p.generationImage("a", -1)).toThrow(/non-negative integer/);
    expect(() => p.checkpoint(1.5)).toThrow(/non-negative integer/);
  });
});

describe("resolveInside", () => {
  const root = "/runs/r1";
  test("accepts paths that stay inside", () => {
    expect(resolveInside(root, "references/a.png")).toBe("/runs/r1/references/a.png");
    expect(resolveInside(root, "a/../b.png")).toBe("/runs/r1/b.png");
    expect(resolveInside(root, "./x")).toBe("/runs/r1/x");
    expect(resolveInside(root, "..foo/x")).toBe("/runs/r1/..foo/x");
  });
  test.each([
    ["../r2/x.png", /escapes the directory/],
    ["references/../../../etc/passwd", /escapes the directory/],
    ["..", /escapes the directory/],
    ["/etc/passwd", /is absolute/],
    ["C:\\Windows\\x", /is absolute/],
    ["", /is empty/],
    ["a\0b", /NUL/],
  ])("refuses %j", (rel, why) => {
    let err: unknown;
    try {
      resolveInside(root, rel);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(why);
    expect((err as Error).message).toContain("/runs/r1");
  });
});

describe("sharding", () => {
  test("parseShard", () => {
    expect(parseShard("0/4")).toEqual({ index: 0, count: 4 });
    expect(parseShard(" 3 / 4 ")).toEqual({ index: 3, count: 4 });
    expect(parseShard("0/1")).toEqual({ index: 0, count: 1 });
    for (const bad of ["4/4", "1/0", "a/b", "1", "-1/4", "1/4/2", "1.5/4", ""]) {
      let err: unknown;
      try {
        parseShard(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).exitCode).toBe(2);
    }
    expect(() => parseShard("4/4")).toThrow(/counts from 0.*0\/4 \.\. 3\/4/);
  });

  test("stable hash values (changing them would reshuffle running array jobs)", () => {
    expect(stableHash("")).toBe(2872998923);
    expect(stableHash("abc")).toBe(482950588);
    expect(stableHash("teapot-0017")).toBe(1282681531);
    expect(stableHash("☃")).toBe(2645608628);
  });

  test("shards are disjoint, cover every id, and are balanced", () => {
    const ids = Array.from({ length: 8000 }, (_, i) => `subject-${i}-k${i % 4}`);
    for (const count of [1, 2, 3, 4, 7, 16]) {
      const sizes = new Array(count).fill(0);
      for (const id of ids) {
        const owners = Array.from({ length: count }, (_, index) => inShard(id, { index, count })).filter(Boolean).length;
        expect(owners).toBe(1);
        for (let index = 0; index < count; index++) if (inShard(id, { index, count })) sizes[index]++;
      }
      const mean = ids.length / count;
      for (const s of sizes) expect(Math.abs(s - mean) / mean).toBeLessThan(0.15);
    }
    expect(inShard("anything", undefined)).toBe(true);
  });

  test("shardPath", () => {
    expect(shardPath("/r/generations.jsonl", { index: 1, count: 4 })).toBe("/r/generations.shard-1-of-4.jsonl");
    expect(shardPath("/r.d/eval/scores", { index: 0, count: 2 })).toBe("/r.d/eval/scores.shard-0-of-2");
  });
});
