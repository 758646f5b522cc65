// scripts/eval.ts end to end on small folders of real photos (tests/fixtures): scores.jsonl rows,
// summary.json, all_score.json; settings; resume; sharding; a run directory; the bad inputs the
// issue names (a generated subject without real photos, an image that does not decode, a prompt not
// in the prompt file); the CLI's help and exit codes.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { featureEmbedder } from "../../lib/eval/embeddings.ts";
import { EvalScoreRow, cosine, imageScore, summarize } from "../../lib/eval/metrics.ts";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import { loadImage } from "../../lib/io/images.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { shardPath } from "../../lib/io/rundir.ts";
import { DEFAULTS, type EvalOptions, run } from "../../scripts/eval.ts";
import { DREAMBENCH, FIXTURE_PHOTOS as P, HAVE_DREAMBENCH, REPO, place, tinyClipFolder, tinyDinoFolder, writePromptFile } from "./helpers.ts";

setDefaultTimeout(60_000);
const SCRIPT = join(REPO, "scripts/eval.ts");
let root: string;
let n = 0;
const fresh = (name: string) => {
  const d = join(root, `${n++}-${name}`);
  mkdirSync(d, { recursive: true });
  return d;
};
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-eval-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const feature = featureEmbedder("default", { threads: 2, batch: 4 });

/** real/<subject>/ photos and gen/<subject>/<prompt>.png, DreamBench-style, plus a prompt file. */
function layout(dir: string) {
  const real = join(dir, "real");
  place(join(real, "dog"), { "00.png": P.dog, "01.png": P.mDog, "02.png": P.dog2 });
  place(join(real, "teapot"), { "00.png": P.teapot, "01.png": P.mTeapot });
  place(join(real, "can"), { "00.png": P.can, "01.png": P.mCan });
  const gen = join(dir, "gen");
  place(join(gen, "dog"), { "a dog in the jungle.png": P.dog2, "a dog wearing a red hat.png": P.synthetic });
  place(join(gen, "teapot"), { "a red teapot.png": P.mTeapot, "a teapot in the jungle.png": P.teapot });
  place(join(gen, "can"), { "a red can.png": P.can });
  const prompts = writePromptFile(join(dir, "prompts_and_classes.txt"), { can: "can", dog: "dog", teapot: "teapot" });
  return { real, gen, prompts, out: join(dir, "out") };
}

async function opts(o: Partial<EvalOptions>): Promise<EvalOptions> {
  return { ...DEFAULTS, threads: 2, batch: 4, embedders: { feature: await feature }, ...o };
}

const rowsOf = (out: string, file = "scores.jsonl") => readJsonlAll(join(out, file), EvalScoreRow);

describe("images folder + real photos", () => {
  test("scores.jsonl, summary.json and all_score.json; values are the mean cosine against the subject's photos", async () => {
    const L = layout(fresh("basic"));
    const res = await run(await opts({ images: L.gen, real: L.real, prompts: L.prompts, out: L.out }));
    expect(res).toMatchObject({ scored: 5, skipped: 0 });
    const rows = await rowsOf(L.out);
    expect(rows.map((r) => r.id).sort()).toEqual(["can/a red can.png", "dog/a dog in the jungle.png", "dog/a dog wearing a red hat.png", "teapot/a red teapot.png", "teapot/a teapot in the jungle.png"]);
    const jungle = rows.find((r) => r.id === "dog/a dog in the jungle.png")!;
    expect(jungle).toMatchObject({ subject: "dog", prompt: "a dog in the jungle", promptKey: "a {} in the jungle", image: "../gen/dog/a dog in the jungle.png" });
    // Independently: embed the files and average the cosines.
    const e = await feature;
    const [g] = await e.embed([await loadImage(P.dog2)]);
    const refs = await e.embed(await Promise.all([P.dog, P.mDog, P.dog2].map(loadImage)));
    expect(Math.abs(jungle.feature! - imageScore(g!, refs))).toBeLessThan(1e-9);
    const summary = JSON.parse(readFileSync(join(L.out, "summary.json"), "utf8"));
    expect(Object.keys(summary)).toEqual(["metrics", "subjects", "prompts", "meta"]);
    const expected = summarize(rows);
    expect(summary.metrics.feature).toBeCloseTo(expected.metrics.feature!, 12);
    expect(Object.keys(summary.subjects)).toEqual(["can", "dog", "teapot"]);
    expect(Object.keys(summary.prompts).sort()).toEqual(["a red {}", "a {} in the jungle", "a {} wearing a red hat"]);
    expect(summary.meta).toMatchObject({ protocol: "dreambench", setting: "all-refs", images: 5, subjects: 3 });
    expect(summary.meta.realPhotos.dog).toEqual(["../real/dog/00.png", "../real/dog/01.png", "../real/dog/02.png"]);
    expect(JSON.parse(readFileSync(join(L.out, "all_score.json"), "utf8"))).toEqual({}); // only the feature score: no DreamBench metric
    expect(existsSync(join(L.out, "cache"))).toBe(true);
  });

  test("DINO and CLIP folders: every metric in the rows, all_score.json in the authors' keys", async () => {
    const L = layout(fresh("all-metrics"));
    const dino = await tinyDinoFolder(join(root, "dino"));
    const clip = await tinyClipFolder(join(root, "clip"));
    await run(await opts({ images: L.gen, real: L.real, out: L.out, dino, clip }));
    const rows = await rowsOf(L.out);
    for (const r of rows) for (const m of ["dino", "clipI", "clipT", "feature"] as const) expect(Math.abs(r[m]!)).toBeLessThanOrEqual(1 + 1e-9);
    const score = JSON.parse(readFileSync(join(L.out, "all_score.json"), "utf8"));
    expect(Object.keys(score)).toEqual(["clipt_score", "clipi_score", "dino_score"]);
    const summary = JSON.parse(readFileSync(join(L.out, "summary.json"), "utf8"));
    expect(Number(score.dino_score)).toBe(summary.metrics.dino);
    expect(Number(score.clipt_score)).toBe(summary.metrics.clipT);
    expect(summary.meta.protocol).toBe("custom");
    // The same texts embed the same: the two "in the jungle" prompts of different subjects differ.
    const byPrompt = new Map(rows.map((r) => [r.prompt, r.clipT!]));
    expect(byPrompt.size).toBe(5);
  });

  test("single-ref: the chosen photo only; a bad --ref-photo fails before any work", async () => {
    const L = layout(fresh("single"));
    await run(await opts({ images: L.gen, real: L.real, out: L.out, setting: "single-ref", refPhoto: "1" }));
    const rows = await rowsOf(L.out);
    const e = await feature;
    const [g, ref1] = await e.embed([await loadImage(P.dog2), await loadImage(P.mDog)]);
    expect(Math.abs(rows.find((r) => r.id === "dog/a dog in the jungle.png")!.feature! - cosine(g!, ref1!))).toBeLessThan(1e-9);
    const bad = join(L.out, "..", "out-bad");
    await expect(run(await opts({ images: L.gen, real: L.real, out: bad, setting: "single-ref", refPhoto: "2" }))).rejects.toThrow(/photo index 2 is out of range for subject "can"/);
    // The authors' per-subject choice names DreamBench photo stems (teapot: "04"; this teapot has 00, 01).
    await expect(run(await opts({ images: L.gen, real: L.real, out: bad, setting: "single-ref", refPhoto: "kosmosg" }))).rejects.toThrow(/subject "teapot" has no photo named "04"/);
    expect(existsSync(join(bad, "scores.jsonl"))).toBe(false);
  });

  test("resume skips finished images; other settings are refused; --force recomputes", async () => {
    const L = layout(fresh("resume"));
    await run(await opts({ images: L.gen, real: L.real, out: L.out }));
    const before = readFileSync(join(L.out, "summary.json"), "utf8");
    expect(await run(await opts({ images: L.gen, real: L.real, out: L.out }))).toMatchObject({ scored: 0, skipped: 5 });
    expect(readFileSync(join(L.out, "summary.json"), "utf8")).toBe(before);
    await expect(run(await opts({ images: L.gen, real: L.real, out: L.out, setting: "single-ref" }))).rejects.toThrow(/other settings \(setting: "all-refs" then, "single-ref" now/);
    expect(await run(await opts({ images: L.gen, real: L.real, out: L.out, force: true }))).toMatchObject({ scored: 5, skipped: 0 });
    expect((await rowsOf(L.out)).length).toBe(5);
  });

  test("--shard i/n + merge give the unsharded result", async () => {
    const L = layout(fresh("shard"));
    const whole = await run(await opts({ images: L.gen, real: L.real, out: join(L.out, "whole") }));
    const { merge } = await import("../../scripts/eval.ts");
    const out = join(L.out, "sharded");
    let total = 0;
    for (let i = 0; i < 2; i++) {
      const r = await run(await opts({ images: L.gen, real: L.real, out, shard: { index: i, count: 2 } }));
      expect(r.summary).toBeUndefined();
      total += r.scored;
      expect(existsSync(shardPath(join(out, "scores.jsonl"), { index: i, count: 2 }))).toBe(true);
    }
    expect(total).toBe(5);
    const merged = await merge(await opts({ images: L.gen, real: L.real, out }), 2);
    expect(merged.scored).toBe(5);
    expect(merged.summary!.metrics.feature).toBeCloseTo(whole.summary!.metrics.feature!, 12);
    await expect(merge(await opts({ images: L.gen, real: L.real, out }), 3)).rejects.toThrow(/shard file .* is missing/);
  });
});

describe("bad inputs", () => {
  test("a generated subject with no real-photo folder: named, nothing written", async () => {
    const L = layout(fresh("missing-subject"));
    rmSync(join(L.real, "can"), { recursive: true });
    const err = await run(await opts({ images: L.gen, real: L.real, out: L.out })).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toContain('no real photos for 1 generated subject: "can"');
    expect(err.message).toContain(join(L.real, "can"));
    expect(existsSync(join(L.out, "scores.jsonl"))).toBe(false);
  });

  test("an image that does not decode: named; the others are kept; fixing it and rerunning resumes", async () => {
    const L = layout(fresh("undecodable"));
    const broken = join(L.gen, "dog", "a dog wearing a red hat.png");
    writeFileSync(broken, "this is not a PNG");
    const err = await run(await opts({ images: L.gen, real: L.real, out: L.out })).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toContain(broken);
    expect(err.message).toContain("The 4 others are scored");
    expect((await rowsOf(L.out)).length).toBe(4);
    expect(existsSync(join(L.out, "summary.json"))).toBe(false);
    copyFileSync(P.synthetic, broken);
    const res = await run(await opts({ images: L.gen, real: L.real, out: L.out }));
    expect(res).toMatchObject({ scored: 1, skipped: 4 });
    expect(res.summary!.meta.images).toBe(5);
  });

  test("an undecodable real photo is named", async () => {
    const L = layout(fresh("bad-real"));
    writeFileSync(join(L.real, "teapot", "01.png"), "nope");
    await expect(run(await opts({ images: L.gen, real: L.real, out: L.out }))).rejects.toThrow(/real photo of subject "teapot" cannot be used: .*teapot\/01\.png/);
  });

  test("a prompt that is not in the prompt file: named with an example of what is expected", async () => {
    const L = layout(fresh("prompt-mismatch"));
    copyFileSync(P.teapot, join(L.gen, "teapot", "a teapot on the moon.png"));
    const err = await run(await opts({ images: L.gen, real: L.real, prompts: L.prompts, out: L.out })).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toContain('teapot/a teapot on the moon.png: "a teapot on the moon"');
    expect(err.message).toContain(L.prompts);
    expect(err.message).toMatch(/e\.g\. subject "\w+": "a \w+ in the jungle"/);
    // Without --prompts any prompt is fine (the per-prompt key is the prompt itself).
    const res = await run(await opts({ images: L.gen, real: L.real, out: L.out }));
    expect(res.summary!.prompts["a teapot on the moon"]).toBeDefined();
  });

  test("a subject that is not in the prompt file's classes", async () => {
    const L = layout(fresh("unknown-class"));
    writePromptFile(L.prompts, { dog: "dog", teapot: "teapot" });
    await expect(run(await opts({ images: L.gen, real: L.real, prompts: L.prompts, out: L.out }))).rejects.toThrow(/subject "can" is not in the Classes section/);
  });

  test("usage: one of --images / --run, --real with --images", async () => {
    await expect(run(await opts({ real: "x" }))).rejects.toThrow(UsageError);
    await expect(run(await opts({ images: "x" }))).rejects.toThrow(/--real <folder> is needed/);
    await expect(run(await opts({ images: join(root, "nope"), real: root }))).rejects.toThrow(/no such folder/);
  });
});

describe("run directory", () => {
  test("generations.jsonl with the run's references as real photos; per-prompt keys abstract the class noun", async () => {
    const dir = fresh("run");
    const settings = {};
    place(join(dir, "references"), { "mug.png": P.teapot, "tin.png": P.can });
    place(join(dir, "generations"), { "mug-0.png": P.mTeapot, "mug-1.png": P.teapot, "tin-0.png": P.mCan });
    const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
    writeFileSync(join(dir, "prompts.jsonl"), jsonl([
      { subjectId: "mug", classNoun: "teapot", attributes: [], referencePrompt: "a teapot", scenePrompts: ["a teapot on a table"], seed: 0 },
      { subjectId: "tin", classNoun: "can", attributes: [], referencePrompt: "a can", scenePrompts: ["a can on a table"], seed: 1 },
    ]));
    writeFileSync(join(dir, "references.jsonl"), jsonl([
      { id: "mug", subjectId: "mug", prompt: "a teapot", image: "references/mug.png", seed: 0, settings },
      { id: "tin", subjectId: "tin", prompt: "a can", image: "references/tin.png", seed: 1, settings },
    ]));
    writeFileSync(join(dir, "generations.jsonl"), jsonl([
      { id: "mug-0", referenceId: "mug", subjectId: "mug", prompt: "a teapot on a table", image: "generations/mug-0.png", seed: 0, k: 0, settings },
      { id: "mug-1", referenceId: "mug", subjectId: "mug", prompt: "a teapot in the snow", image: "generations/mug-1.png", seed: 0, k: 1, settings },
      { id: "tin-0", referenceId: "tin", subjectId: "tin", prompt: "a can on a table", image: "generations/tin-0.png", seed: 1, k: 0, settings },
    ]));
    const res = await run(await opts({ run: dir }));
    expect(res.outDir).toBe(resolve(dir, "eval"));
    const rows = await rowsOf(join(dir, "eval"));
    expect(rows.find((r) => r.id === "mug-0")).toMatchObject({ subject: "mug", promptKey: "a {} on a table", image: "../generations/mug-0.png" });
    expect(res.summary!.prompts["a {} on a table"]).toBeDefined();
    expect(res.summary!.meta.realPhotos).toEqual({ mug: ["../references/mug.png"], tin: ["../references/tin.png"] });
    expect(res.summary!.meta.source).toEqual({ run: ".." });
    expect(rows.find((r) => r.id === "mug-1")!.feature).toBeCloseTo(1, 5); // the reference itself
  });
});

describe("CLI", () => {
  const cli = (args: string[]) => {
    const p = Bun.spawnSync(["bun", SCRIPT, ...args], { env: { ...process.env, OMP_NUM_THREADS: "2", OMP_WAIT_POLICY: "PASSIVE" } });
    return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
  };

  test("--help lists every flag with its default", () => {
    const r = cli(["--help"]);
    expect(r.code).toBe(0);
    for (const f of ["--images", "--run", "--real", "--prompts", "--dino", "--clip", "--encoder-feature", "--setting", "--ref-photo", "--out", "--shard", "--merge"]) expect(r.out).toContain(f);
    expect(r.out).toContain("(default: all-refs)");
  });

  test("exit 2 on bad usage, 1 on a failure a person can fix, 0 with the headline printed", () => {
    const L = layout(fresh("cli"));
    expect(cli(["--images", L.gen, "--real", L.real, "--setting", "best"]).code).toBe(2);
    expect(cli(["--images", L.gen]).code).toBe(2);
    expect(cli(["--images", L.gen, "--real", L.real, "--frobnicate"]).code).toBe(2);
    const bad = cli(["--images", L.gen, "--real", join(L.real, "dog"), "--threads", "2"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^error: no real photos for 3 generated subjects/);
    const ok = cli(["--images", L.gen, "--real", L.real, "--prompts", L.prompts, "--threads", "2"]);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/evaluated 5 images .*\nfeature 0\.\d{4}/);
    expect(existsSync(join(L.gen, "eval", "summary.json"))).toBe(true); // default --out: <images>/eval
    expect(cli(["--images", L.gen, "--real", L.real, "--prompts", L.prompts, "--threads", "2"]).out).toContain("(5 already done)"); // its own eval/ is not a subject
  });

  test.skipIf(!HAVE_DREAMBENCH)("--bench <DreamBench folder>: its photos and prompt file, the DreamBench protocol", () => {
    const dir = fresh("cli-bench");
    place(join(dir, "gen", "dog"), { "a dog in the jungle.png": P.dog2, "a dog wearing a red hat.png": P.mDog });
    place(join(dir, "gen", "teapot"), { "a teapot in the jungle.png": P.teapot });
    const ok = cli(["--images", join(dir, "gen"), "--bench", DREAMBENCH, "--threads", "2"]);
    expect(ok.code).toBe(0);
    const summary = JSON.parse(readFileSync(join(dir, "gen", "eval", "summary.json"), "utf8"));
    expect(summary.meta.protocol).toBe("dreambench");
    expect(summary.meta.realPhotos.dog.length).toBe(5);
    expect(cli(["--images", join(dir, "gen"), "--bench", join(dir, "gen")]).code).toBe(2); // not a DreamBench folder
  });
});
