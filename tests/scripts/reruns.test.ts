// Issue 12: the paths people take when they rerun things. One describe block per numbered case of
// the issue: --force checks before it replaces anything; a resume with changed settings is
// refused; --merge refuses incomplete or duplicated shards and a shard cannot run twice at once;
// a wrong --size is refused before onnxruntime allocates; non-finite weights, maps and images are
// refused; and the smaller guard rails (flag names, --run typos, orphan temp files, --name,
// duplicate ids, copied run folders, data/ in a fresh clone).
// The tiny world throughout: a renderer-made run scored with the raw MobileNetV2, and a tiny
// random-weight model folder with an IP-Adapter (the SD code path).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { HOST_TAG } from "../../lib/io/atomic.ts";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import { acquireLock } from "../../lib/io/lock.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { runPaths, shardPath } from "../../lib/io/rundir.ts";
import { openSafetensors, writeSafetensors } from "../../lib/io/safetensors.ts";
import { PatchScoreRow, TrainLogRow } from "../../lib/io/schemas.ts";
import { type Featurizer, loadFeaturizer } from "../../lib/models/featurizer.ts";
import { DEFAULTS as DEMO_DEFAULTS, run as demo } from "../../scripts/demo.ts";
import { type DpoEpochInput, epochFile, run as dpoEpoch } from "../../scripts/dpo-epoch.ts";
import { run as evaluate, merge as mergeEval } from "../../scripts/eval.ts";
import { run as finetune } from "../../scripts/finetune-encoder.ts";
import { run as generate, merge as mergeGenerations } from "../../scripts/generate-images.ts";
import { run as judge } from "../../scripts/judge.ts";
import { run as score, merge as mergeScores } from "../../scripts/score-patches.ts";
import { run as synthesize } from "../../scripts/synthesize-prompts.ts";
import { SIZE, copyRun, snapshot, tinyModel, tinyRun } from "./helpers/tiny-run.ts";
import { expectRejects as rejects } from "../helpers/rejects.ts";

const REPO = resolve(import.meta.dir, "../..");
let root: string;
let base: string; // a scored tiny-world run: 2 subjects x 2 generations
let model: string;
let ip: string;
let n = 0;
const fresh = (name: string) => join(root, `${name}-${n++}`);
const copy = (name: string) => {
  const d = fresh(name);
  copyRun(base, d);
  return d;
};
/**
 * Everything in a run but run.json (which records every attempt, failed ones too) and .staging/
 * (where a failed forced rerun's partial results wait for the next run to discard them).
 */
const state = (dir: string) => snapshot(dir, (rel) => rel === "run.json" || basename(rel) === ".staging" || rel.endsWith(".lock"));
const sameState = (a: Map<string, Buffer>, b: Map<string, Buffer>) => {
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  for (const [k, v] of a) expect({ file: k, same: Buffer.compare(v, b.get(k)!) === 0 }).toEqual({ file: k, same: true });
};
const lines = (file: string) => readFileSync(file, "utf8").split("\n").filter(Boolean);
// Each test loads its own: dpo-epoch releases every cached session when an epoch ends.
const raw = (): Promise<Featurizer> => loadFeaturizer("mobilenet_v2", { threads: 1, batchSize: 4 });
const scoreOpts = { encoder: "mobilenet_v2", latentGrid: SIZE / 2, threads: 1, batch: 4 };
const dpo = (dir: string, o: Partial<DpoEpochInput> = {}): DpoEpochInput => ({
  run: dir, model, ipAdapter: ip, imageEncoder: "mobilenet_v2", batch: 1, maxSteps: 2, lr: 1e-3, threads: 1, saveEvery: 1, ...o,
});

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-reruns-"));
  base = await tinyRun(join(root, "base"));
  ({ model, ip } = await tinyModel(root));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("1. --force checks everything before it replaces anything", () => {
  test("score-patches --force --encoder <typo> and generate-images --force --ip-adapter <typo>: an error, the run untouched", async () => {
    const dir = copy("force-typo");
    const before = state(dir);
    await rejects(score({ ...scoreOpts, run: dir, encoder: join(root, "checkpoints", "typo"), force: true }), UserError);
    await rejects(generate({ run: dir, mode: "personalized", model, ipAdapter: join(root, "typo.safetensors"), imageEncoder: "mobilenet_v2", force: true }), UserError, "typo.safetensors does not exist");
    sameState(before, state(dir));
  });

  test("score-patches: a forced rerun that fails part-way keeps the old scores; one that succeeds replaces them", async () => {
    const dir = copy("force-score");
    const before = state(dir);
    const real = await raw();
    let calls = 0;
    const failing: Featurizer = {
      name: real.name, imageSize: real.imageSize, preprocess: (imgs) => real.preprocess(imgs),
      features: async (imgs) => {
        if (++calls === 2) throw new Error("encoder crashed");
        return real.features(imgs);
      },
    };
    await expect(score({ ...scoreOpts, run: dir, batch: 1, force: true, featurizer: failing })).rejects.toThrow("encoder crashed");
    sameState(before, state(dir)); // the maps of the first pair were written aside, not over the old ones
    const res = await score({ ...scoreOpts, run: dir, batch: 1, force: true, normalization: "minmax", featurizer: real });
    expect(res.scored).toBe(4);
    expect(existsSync(join(dir, ".staging"))).toBe(false);
    expect(JSON.parse(readFileSync(join(dir, "patch-scores.settings.json"), "utf8")).settings.normalization).toBe("minmax");
    const row = (await readJsonlAll(join(dir, "patch-scores.jsonl"), PatchScoreRow))[0]!;
    expect(Buffer.compare(readFileSync(join(dir, row.scores)), before.get(row.scores)!)).not.toBe(0);
  });

  test("dpo-epoch: a forced rerun that crashes at run time keeps the epoch's file, checkpoints and log rows", async () => {
    const dir = copy("force-dpo");
    await dpoEpoch(dpo(dir));
    const before = state(dir);
    let steps = 0;
    const crash = () => {
      if (++steps === 1) throw new Error("runtime crash after the first step");
    };
    await expect(dpoEpoch(dpo(dir, { force: true, lr: 2e-3, onStep: crash }))).rejects.toThrow("runtime crash");
    sameState(before, state(dir));
    // The forced rerun that succeeds replaces the epoch: its own log rows, checkpoints and file.
    await dpoEpoch(dpo(dir, { force: true, lr: 2e-3 }));
    const rows = await readJsonlAll(runPaths(dir).trainLog, TrainLogRow);
    expect(rows.map((r) => r.lr)).toEqual([2e-3, 2e-3]);
    expect(Buffer.compare(readFileSync(epochFile(runPaths(dir), 1)), before.get("train/ip-adapter-epoch-1.safetensors")!)).not.toBe(0);
    expect(existsSync(join(dir, ".staging"))).toBe(false);
  });

  test("finetune-encoder: a forced rerun that crashes keeps the old checkpoint", async () => {
    const dir = copy("force-ft");
    const ft = (o = {}) => finetune({ images: join(dir, "references"), out: join(dir, "encoder"), steps: 2, batch: 1, holdout: 0, saveEvery: 1, imageSize: 64, threads: 1, ...o });
    await ft();
    const before = state(dir);
    await expect(ft({ force: true, lr: 5e-4, onStep: () => {
      throw new Error("runtime crash");
    } })).rejects.toThrow("runtime crash");
    sameState(before, state(dir));
    await ft({ force: true, lr: 5e-4 });
    expect(JSON.parse(readFileSync(join(dir, "encoder", "state.json"), "utf8")).config.lr).toBe(5e-4);
    expect(readdirSync(join(dir, "encoder")).filter((f) => f.startsWith("step-")).sort()).toEqual(["step-1", "step-2"]);
  });
});

describe("2. a resume with changed settings is refused, naming the setting and both values", () => {
  test("generate-images killed and rerun with another --seed or --defect-rate; the same settings resume to the same bytes", async () => {
    const dir = copy("resume-gen");
    const gens = join(dir, "generations.jsonl");
    const full = readFileSync(gens, "utf8");
    writeFileSync(gens, `${lines(gens).slice(0, 2).join("\n")}\n`); // as if killed after 2 of 4 images
    const g = { run: dir, mode: "personalized" as const, model: "tinyworld", width: SIZE, height: SIZE, perReference: 2 };
    await rejects(generate({ ...g, seed: 1 }), UserError, "--seed 0 then, 1 now", "--force");
    await rejects(generate({ ...g, defectRate: 0.9 }), UserError, "--defect-rate 0.5 then, 0.9 now");
    await rejects(generate({ ...g, perReference: 3 }), UserError, "--per-reference 2 then, 3 now");
    expect(lines(gens).length).toBe(2);
    expect(await generate(g)).toMatchObject({ generated: 2, skipped: 2 });
    expect(readFileSync(gens, "utf8")).toBe(full);
  });

  test("score-patches with another --latent-grid or --normalization", async () => {
    const dir = copy("resume-score");
    await rejects(score({ ...scoreOpts, run: dir, latentGrid: 8, featurizer: await raw() }), UserError, "--latent-grid 16 then, 8 now");
    await rejects(score({ ...scoreOpts, run: dir, normalization: "minmax", featurizer: await raw() }), UserError, '--normalization "clamp" then, "minmax" now');
    expect(await score({ ...scoreOpts, run: dir, featurizer: await raw() })).toMatchObject({ scored: 0, skipped: 4 });
  });

  test("dpo-epoch --resume of a finished epoch with another --lr", async () => {
    const dir = copy("resume-dpo");
    await dpoEpoch(dpo(dir));
    expect(await dpoEpoch(dpo(dir, { resume: true }))).toMatchObject({ alreadyDone: true });
    await rejects(dpoEpoch(dpo(dir, { resume: true, lr: 5e-4 })), UserError, "lr: 0.001 there, 0.0005 now", "--force");
  });

  test("synthesize-prompts killed after writing prompts.jsonl (before run.json said ok) reruns as unchanged", async () => {
    const dir = fresh("synth-killed");
    const o = { run: dir, world: "tiny" as const, subjects: 2, scenesPerSubject: 2 };
    await synthesize(o);
    const runJson = join(dir, "run.json");
    const doc = JSON.parse(readFileSync(runJson, "utf8"));
    const dead = Number(Bun.spawnSync([process.execPath, "-e", "console.log(process.pid)"]).stdout.toString().trim());
    Object.assign(doc.steps[0], { status: "running", pid: dead, finishedAt: undefined });
    writeFileSync(runJson, JSON.stringify(doc));
    expect((await synthesize(o)).status).toBe("unchanged");
    await rejects(synthesize({ ...o, seed: 3 }), UserError, "other flags");
  });

  test("the demo notices a changed --dpo-epochs before it reuses anything", async () => {
    const dir = fresh("demo");
    mkdirSync(dir, { recursive: true });
    const tiny = join(REPO, "checkpoints/tiny");
    const { force: _f, ...settings } = { ...DEMO_DEFAULTS, model: tiny };
    writeFileSync(join(dir, "demo-settings.json"), JSON.stringify(settings));
    await rejects(demo({ run: dir, model: tiny, dpoEpochs: 4 }), UserError, "--dpo-epochs 3 then, 4 now", "--force", "another --run");
    expect(readdirSync(dir)).toEqual(["demo-settings.json"]); // no step ran
  });
});

describe("3. --merge refuses incomplete or duplicated shards; a shard cannot run twice at once", () => {
  test("generate-images: a shard killed part-way, a shard with a duplicated row", async () => {
    const dir = copy("merge-gen");
    rmSync(join(dir, "generations.jsonl"));
    const g = { run: dir, mode: "personalized" as const, model: "tinyworld", width: SIZE, height: SIZE, perReference: 2 };
    for (const index of [0, 1]) await generate({ ...g, shard: { index, count: 2 } });
    const shards = [0, 1].map((index) => shardPath(join(dir, "generations.jsonl"), { index, count: 2 }));
    const fullOf = shards.map((f) => lines(f));
    const big = fullOf[0]!.length >= fullOf[1]!.length ? 0 : 1;
    const cut = JSON.parse(fullOf[big]!.at(-1)!).id as string;
    writeFileSync(shards[big]!, `${fullOf[big]!.slice(0, -1).join("\n")}\n`);
    await rejects(mergeGenerations(dir, "personalized", 2), UserError, "1 of 4 rows are missing", `"${cut}"`, `shard ${big}/2 lacks 1`);
    expect(existsSync(join(dir, "generations.jsonl"))).toBe(false);
    writeFileSync(shards[big]!, `${fullOf[big]!.join("\n")}\n${fullOf[big]![0]}\n`); // the same shard ran twice at once
    await rejects(mergeGenerations(dir, "personalized", 2), UserError, "1 rows appear twice", "--force");
    expect(existsSync(join(dir, "generations.jsonl"))).toBe(false);
    writeFileSync(shards[big]!, `${fullOf[big]!.join("\n")}\n`);
    expect(await mergeGenerations(dir, "personalized", 2)).toBe(4);
  });

  test("generate-images: more shards than images, the empty shards leave empty manifests and the merge goes through", async () => {
    const dir = copy("merge-gen-empty");
    rmSync(join(dir, "generations.jsonl"));
    const g = { run: dir, mode: "personalized" as const, model: "tinyworld", width: SIZE, height: SIZE, perReference: 2 };
    const count = 12; // 4 images over 12 shards
    for (let index = 0; index < count; index++) {
      const r = await generate({ ...g, shard: { index, count } });
      expect(existsSync(r.manifest)).toBe(true);
    }
    expect(await mergeGenerations(dir, "personalized", count)).toBe(4);
  });

  test("score-patches: an incomplete shard is named; a complete set merges", async () => {
    const dir = copy("merge-score");
    rmSync(join(dir, "patch-scores.jsonl"));
    for (const index of [0, 1]) await score({ ...scoreOpts, run: dir, shard: { index, count: 2 }, featurizer: await raw() });
    const f = shardPath(join(dir, "patch-scores.jsonl"), { index: 0, count: 2 });
    const all = lines(f);
    writeFileSync(f, `${all.slice(0, -1).join("\n")}\n`);
    await rejects(mergeScores(dir, 2), UserError, "rows are missing", "shard 0/2 lacks 1");
    appendFileSync(f, `${all.at(-1)}\n${all.at(-1)}\n`);
    await rejects(mergeScores(dir, 2), UserError, "appear twice");
    writeFileSync(f, `${all.join("\n")}\n`);
    expect(await mergeScores(dir, 2)).toBe(4);
  });

  test("eval: an incomplete shard is named", async () => {
    const dir = copy("merge-eval");
    const e = { run: dir, encoderFeature: "mobilenet_v2", threads: 1 };
    for (const index of [0, 1]) await evaluate({ ...e, shard: { index, count: 2 } });
    const f = shardPath(join(dir, "eval", "scores.jsonl"), { index: 1, count: 2 });
    writeFileSync(f, "");
    await rejects(mergeEval(e, 2), UserError, "rows are missing", "shard 1/2 lacks");
  });

  test("the same shard started while it runs is refused, naming the running process", async () => {
    const dir = copy("lock");
    const shard = { index: 0, count: 2 };
    const lock = await acquireLock(`${shardPath(join(dir, "patch-scores.jsonl"), shard)}.lock`, "score-patches --shard 0/2");
    try {
      await rejects(score({ ...scoreOpts, run: dir, shard, featurizer: await raw() }), UserError, "already running", `pid ${process.pid}`);
    } finally {
      lock.release();
    }
    expect((await score({ ...scoreOpts, run: dir, shard, featurizer: await raw() })).scored).toBeGreaterThan(0);
  });
});

describe("4. a wrong --size is a clear error before onnxruntime allocates", () => {
  test("the committed tiny generator asked for 512 px; the test model asked for 8 px; the default is the model's own size", async () => {
    const dir = copy("size");
    const tiny = join(REPO, "checkpoints/tiny");
    await rejects(generate({ run: dir, mode: "reference", model: tiny, width: 512, height: 512, force: true }), UserError, /--size 512: .* trained at 64 px .* 8\.0x larger/, /[Pp]ass --size 64/);
    await rejects(dpoEpoch(dpo(dir, { model: tiny, ipAdapter: join(tiny, "ip-adapter.safetensors"), size: 512 })), UserError, "trained at 64 px");
    await rejects(dpoEpoch(dpo(dir, { size: 8 })), UserError, "--size 8:");
    const res = await dpoEpoch(dpo(dir, { maxSteps: 1 })); // no --size: the model's own 32 px
    expect(res.finished).toBe(true);
  });
});

describe("5. non-finite values are refused, naming the file", () => {
  async function scaledAdapter(out: string, f: (name: string, v: Float32Array) => Float32Array) {
    const src = openSafetensors(ip);
    const t: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const name of src.names()) t[name] = { dtype: "F32", shape: src.info(name).shape, data: f(name, Float32Array.from(src.float32(name))) };
    await writeSafetensors(out, t, src.metadata);
    return out;
  }

  test("NaN IP-Adapter weights: generate-images and dpo-epoch refuse the file, not --lr", async () => {
    const dir = copy("nan-ip");
    const bad = await scaledAdapter(join(root, "nan-ip.safetensors"), (name, v) => (name.includes("to_k_ip") ? v.fill(Number.NaN, 0, 1) : v));
    await rejects(generate({ run: dir, mode: "personalized", model, ipAdapter: bad, imageEncoder: "mobilenet_v2", force: true, steps: 2 }), UserError, "nan-ip.safetensors: IP-Adapter tensor", "holds NaN");
    const err = await rejects(dpoEpoch(dpo(dir, { ipAdapter: bad })), UserError, "nan-ip.safetensors", "holds NaN");
    expect(err.message).not.toContain("--lr");
  });

  test("huge (finite) weights: generated images that decode from non-finite latents are an error; dpo-epoch blames the inputs", async () => {
    const dir = copy("huge-ip");
    const huge = await scaledAdapter(join(root, "huge-ip.safetensors"), (_n, v) => v.map((x) => x * 1e36));
    const before = readFileSync(join(dir, "generations.jsonl"), "utf8");
    await rejects(generate({ run: dir, mode: "personalized", model, ipAdapter: huge, imageEncoder: "mobilenet_v2", force: true, steps: 2, perReference: 2 }), UserError, /NaN or infinite values, so the image would be black/, "--check-models");
    expect(readFileSync(join(dir, "generations.jsonl"), "utf8")).toBe(before);
    const err = await rejects(dpoEpoch(dpo(dir, { ipAdapter: huge })), UserError, "before any weight was updated", "not the cause: the inputs are");
    expect(err.message).not.toMatch(/lower --lr/);
  });

  test("quality maps: NaN on an unmasked patch, 1e30, or -1 are refused with the file and position", async () => {
    for (const [what, value, msg] of [["nan", Number.NaN, /q_gen_latent\[2, 3\] is NaN on a patch/], ["huge", 1e30, /q_gen_latent\[2, 3\] is 1e\+30, outside \[0, 1\]/], ["negative", -1, /is -1, outside/]] as const) {
      const dir = copy(`maps-${what}`);
      const row = (await readJsonlAll(join(dir, "patch-scores.jsonl"), PatchScoreRow))[1]!;
      const file = join(dir, row.scores);
      const f = openSafetensors(file);
      const t: Record<string, { dtype: "F32" | "U8"; shape: number[]; data: Float32Array | Uint8Array }> = {};
      for (const name of f.names()) t[name] = { dtype: f.info(name).dtype as "F32" | "U8", shape: f.info(name).shape, data: f.info(name).dtype === "U8" ? Uint8Array.from(f.view(name) as Uint8Array) : Float32Array.from(f.float32(name)) };
      (t.q_gen_latent!.data as Float32Array)[2 * 16 + 3] = value;
      await writeSafetensors(file, t, f.metadata);
      await rejects(dpoEpoch(dpo(dir, { objective: "weighted" })), UserError, msg, `patch-scores.jsonl:2: ${file}`, "score-patches --force");
    }
  });
});

describe("6. smaller guard rails", () => {
  test("a missing flag is named as the flag (CLI and run())", async () => {
    const r = Bun.spawnSync(["bun", join(REPO, "scripts/dpo-epoch.ts"), "--run", base, "--model", model, "--ip-adapter", ip]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.toString()).toContain("--image-encoder is required");
    expect(r.stderr.toString()).not.toContain("imageEncoder");
    await rejects(dpoEpoch({ run: base, model, ipAdapter: ip } as DpoEpochInput), UsageError, "--image-encoder is required");
    await rejects(generate({ run: base, mode: "sideways", model: "tinyworld" } as never), UsageError, /--mode must be "personalized" or "reference" \(was "sideways"\)/);
  });

  test("a --run that does not exist is an error, and is not created", async () => {
    const missing = join(root, "no-such-run");
    await rejects(generate({ run: missing, mode: "reference", model: "tinyworld" }), UserError, "does not exist", "--run");
    await rejects(score({ ...scoreOpts, run: missing }), UserError, "does not exist");
    await rejects(dpoEpoch(dpo(missing)), UserError, "does not exist");
    await rejects(evaluate({ run: missing, encoderFeature: "mobilenet_v2" }), UserError, "does not exist");
    await rejects(judge({ run: missing }), UserError, "does not exist");
    expect(existsSync(missing)).toBe(false);
  });

  test("temp files of killed writers are removed by the next step in the run", async () => {
    const dir = copy("orphans");
    const dead = Bun.spawnSync([process.execPath, "-e", "console.log(process.pid)"]).stdout.toString().trim();
    const orphan = join(dir, "generations", `a-0.png.tmp-${dead}-${HOST_TAG}-0123abcd`);
    writeFileSync(orphan, "half an image");
    await generate({ run: dir, mode: "personalized", model: "tinyworld", width: SIZE, height: SIZE, perReference: 2 });
    expect(existsSync(orphan)).toBe(false);
  });

  test("finetune-encoder --name ../../x is refused", async () => {
    await rejects(finetune({ images: join(base, "references"), name: "../../x", steps: 1 }), UsageError, '--name "../../x"', "--out");
  });

  test("duplicate reference ids are refused with both lines, not resolved by the last one", async () => {
    const dir = copy("dup-refs");
    const refs = join(dir, "references.jsonl");
    appendFileSync(refs, `${lines(refs)[0]}\n`);
    await rejects(generate({ run: dir, mode: "personalized", model: "tinyworld", width: SIZE, height: SIZE, perReference: 2 }), UserError, /references.jsonl:3: duplicate id .* \(line 1 has it too\)/);
    await rejects(score({ ...scoreOpts, run: dir, force: true, featurizer: await raw() }), UserError, "duplicate id");
    await rejects(dpoEpoch(dpo(dir)), UserError, "duplicate id");
  });

  test("a copied run folder resumes: dpo-epoch and finetune-encoder record paths inside the run relative to it", async () => {
    // dpo-epoch: epoch 2 (which starts from the run's own epoch-1 file) stopped after 1 of 2 steps,
    // the folder copied and the original removed, the copy resumed.
    const straight = copy("dpo-straight");
    for (const epoch of [1, 2]) await dpoEpoch(dpo(straight, { epoch }));
    const a = copy("dpo-a");
    await dpoEpoch(dpo(a));
    await dpoEpoch(dpo(a, { epoch: 2, stopAt: 1 }));
    const b = fresh("dpo-b");
    copyRun(a, b);
    rmSync(a, { recursive: true, force: true });
    await dpoEpoch(dpo(b, { epoch: 2, resume: true }));
    expect(Buffer.compare(readFileSync(epochFile(runPaths(b), 2)), readFileSync(epochFile(runPaths(straight), 2)))).toBe(0);
    // finetune-encoder: images and checkpoint both inside the run folder.
    const ft = (dir: string, o = {}) => finetune({ images: join(dir, "references"), out: join(dir, "encoder"), steps: 2, batch: 1, holdout: 0, saveEvery: 1, imageSize: 64, threads: 1, ...o });
    const c = copy("ft-a");
    await ft(c, { stopAt: 1 });
    const d = fresh("ft-b");
    copyRun(c, d);
    rmSync(c, { recursive: true, force: true });
    const res = await ft(d, { resume: true });
    expect(res.finished).toBe(true);
    expect(res.step).toBe(2);
  });

  test("a fresh clone has data/ (data/README.md is tracked, not ignored)", () => {
    expect(Bun.spawnSync(["git", "ls-files", "--error-unmatch", "data/README.md"], { cwd: REPO }).exitCode).toBe(0);
    expect(Bun.spawnSync(["git", "check-ignore", "-q", "data/README.md"], { cwd: REPO }).exitCode).toBe(1);
  });
});
