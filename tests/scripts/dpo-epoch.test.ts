// scripts/dpo-epoch.ts end to end on a tiny random-weight model (the same code path as SD + an
// IP-Adapter): a run directory made by the real steps (synthesize-prompts --world tiny,
// generate-images with the tiny world's renderer at 32 px, score-patches at latent grid 16 for the
// pixel-unshuffle VAE), then:
//   a. each objective trains a few steps and writes the log, a checkpoint and the epoch file;
//      patch-dpo starts at dpoLoss = log 2 (theta = reference);
//   b. epoch 2 starts from epoch 1's file, against the same reference;
//   c. 4 steps straight == 2 steps + --resume, byte for byte (weighted, patch-dpo, mse);
//   d. clear errors for broken runs and mismatched models;
//   e. the CLI: --help, exit codes, JSON lines, run.json.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { checkModels, loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { type ModelFolderSpec, writeIpAdapter, writeModelFolder } from "../../lib/diffusion/model-folder.ts";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { runPaths } from "../../lib/io/rundir.ts";
import { writeSafetensors } from "../../lib/io/safetensors.ts";
import { GenerationRow, PatchScoreRow, PromptRow, ReferenceRow, TrainLogRow } from "../../lib/io/schemas.ts";
import type { ImageProjectionConfig } from "../../lib/models/ip-adapter.ts";
import { trainBpe } from "../../lib/models/bpe-train.ts";
import { DEFAULTS, type DpoEpochOptions, epochFile, run } from "../../scripts/dpo-epoch.ts";
import { DEFAULTS as GEN_DEFAULTS, run as generate } from "../../scripts/generate-images.ts";
import { DEFAULTS as SCORE_DEFAULTS, run as score } from "../../scripts/score-patches.ts";
import { DEFAULTS as PROMPT_DEFAULTS, run as synthesize } from "../../scripts/synthesize-prompts.ts";

setDefaultTimeout(60_000);
const REPO = resolve(import.meta.dir, "../..");
const SCRIPT = join(REPO, "scripts/dpo-epoch.ts");
const SIZE = 32;
const PROJ: ImageProjectionConfig = { kind: "resampler", embeddingDim: 1280, dim: 16, depth: 1, dimHead: 8, heads: 2, numQueries: 2, outputDim: 32, ffMult: 2 };
const UNET = { in_channels: 12, out_channels: 12, block_out_channels: [16, 32], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block: 1, cross_attention_dim: 32, attention_head_dim: 2, norm_num_groups: 8 };

let root: string; // holds model/, ip.safetensors and base/ (the scored run every test copies)
let count = 0;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-dpo-"));
  const base = join(root, "base");
  await synthesize({ ...PROMPT_DEFAULTS, run: base, subjects: 2, scenesPerSubject: 2, world: "tiny", log: () => {} });
  const gen = { ...GEN_DEFAULTS, run: base, model: "tinyworld", width: SIZE, height: SIZE, threads: 1 };
  await generate({ ...gen, mode: "reference" });
  await generate({ ...gen, mode: "personalized", perReference: 2 });
  await score({ ...SCORE_DEFAULTS, run: base, latentGrid: SIZE / 2, threads: 1, batch: 4 });
  const prompts = await readJsonlAll(join(base, "prompts.jsonl"), PromptRow);
  const vocab = trainBpe(prompts.flatMap((p) => p.scenePrompts), 40);
  const spec: ModelFolderSpec = {
    unet: UNET,
    vae: { _class_name: "PixelUnshuffleVAE", factor: 2, in_channels: 3, scaling_factor: 1 },
    textEncoder: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: Object.keys(vocab.vocab).length, bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"] },
    tokenizer: vocab,
    scheduler: { _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 },
  };
  await writeModelFolder(join(root, "model"), spec, 1);
  await writeIpAdapter(join(root, "ip.safetensors"), UNET, PROJ, 2);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A fresh copy of the scored run. */
function runDir(): string {
  const d = join(root, `run-${count++}`);
  cpSync(join(root, "base"), d, { recursive: true });
  return d;
}

const opts = (dir: string, o: Partial<DpoEpochOptions> = {}): DpoEpochOptions => ({
  ...DEFAULTS, run: dir, model: join(root, "model"), ipAdapter: join(root, "ip.safetensors"), imageEncoder: "mobilenet_v2",
  size: SIZE, batch: 1, maxSteps: 2, lr: 1e-3, threads: 1, ...o,
});

const log = (dir: string) => readJsonlAll(runPaths(dir).trainLog, TrainLogRow);

describe("dpo-epoch on a scored tiny-world run", () => {
  test("base run: 4 scored pairs with 16x16 latent maps", async () => {
    const rows = await readJsonlAll(join(root, "base", "patch-scores.jsonl"), PatchScoreRow);
    expect(rows.length).toBe(4);
  });

  for (const objective of ["mse", "weighted", "patch-dpo"] as const) {
    test(`${objective}: steps logged, checkpoint and epoch file written, the file loads as an IP-Adapter`, async () => {
      const dir = runDir();
      const res = await run(opts(dir, { objective, maxSteps: 2 }));
      expect(res).toMatchObject({ epoch: 1, finished: true, pairs: 4, steps: 2, startStep: 0, endStep: 2, stepsRun: 2, skipped: 0 });
      const rows = await log(dir);
      expect(rows.map((r) => r.step)).toEqual([0, 1]);
      for (const r of rows) {
        expect(r).toMatchObject({ epoch: 1, lr: 1e-3 });
        for (const k of ["loss", "gradNorm", "seconds", "mse"]) expect(Number.isFinite(r[k])).toBe(true);
      }
      if (objective === "patch-dpo") {
        for (const k of ["refMse", "dpoLoss", "keep", "implicitAcc"]) expect(Number.isFinite(rows[0]![k])).toBe(true);
        // theta = reference at the first step: m_w = m_l = 0.
        expect(rows[0]!.dpoLoss!).toBeCloseTo(Math.log(2), 5);
        expect(rows[0]!.mse!).toBeCloseTo(rows[0]!.refMse!, 6);
        expect(rows[0]!.loss).toBeCloseTo(Math.log(2) + rows[0]!.keep!, 5);
      }
      const ck = join(runPaths(dir).checkpointsDir, "step-2");
      for (const f of ["weights.safetensors", "optimizer.safetensors", "state.json"]) expect(existsSync(join(ck, f))).toBe(true);
      const state = JSON.parse(readFileSync(join(ck, "state.json"), "utf8"));
      expect(state).toMatchObject({ step: 2, epoch: 1, localStep: 2, adamStep: 2, config: { objective, lr: 1e-3, weightDecay: 0.01, train: "ip" } });
      // The epoch file: release layout, matches the UNet, trained values differ from the start.
      const out = epochFile(runPaths(dir), 1);
      const model = loadDiffusionModel(join(root, "model"));
      const trained = loadIpAdapter(out, "mobilenet_v2");
      expect(checkModels(model, trained).every((r) => !r.missing.length && !r.mismatched.length)).toBe(true);
      const start = loadIpAdapter(join(root, "ip.safetensors"), "mobilenet_v2");
      expect(Array.from(trained.source.float32("ip_adapter.1.to_k_ip.weight"))).not.toEqual(Array.from(start.source.float32("ip_adapter.1.to_k_ip.weight")));
      expect(Array.from(trained.source.float32("image_proj.proj_in.weight"))).toEqual(Array.from(start.source.float32("image_proj.proj_in.weight"))); // --train ip
      expect(JSON.parse(readFileSync(out.replace(/\.safetensors$/, ".json"), "utf8"))).toMatchObject({ epoch: 1, startStep: 0, endStep: 2, objective });

      if (objective === "patch-dpo") {
        // Epoch 2 starts from epoch 1's file, against the same reference (--ip-adapter): theta != reference now.
        const e2 = await run(opts(dir, { objective, epoch: 2, maxSteps: 1 }));
        expect(e2).toMatchObject({ epoch: 2, from: out, startStep: 2, endStep: 3, finished: true });
        const r2 = (await log(dir)).filter((r) => r.epoch === 2);
        expect(r2.map((r) => r.step)).toEqual([2]);
        expect(Math.abs(r2[0]!.mse! - r2[0]!.refMse!)).toBeGreaterThan(1e-7);
        expect(existsSync(join(runPaths(dir).checkpointsDir, "step-3"))).toBe(true);
        expect(existsSync(epochFile(runPaths(dir), 2))).toBe(true);
        // A finished epoch is not redone by accident; --resume of it is a no-op.
        await expect(run(opts(dir, { objective, epoch: 2, maxSteps: 1 }))).rejects.toThrow(/already trained.*--force/);
        expect(await run(opts(dir, { objective, epoch: 2, maxSteps: 1, resume: true }))).toMatchObject({ alreadyDone: true, endStep: 3 });
      }
      rmSync(dir, { recursive: true, force: true });
    });
  }

  test("--recompute (gradient checkpointing) trains to the same losses and weights, to float rounding", async () => {
    const [a, b] = [runDir(), runDir()];
    await run(opts(a, { objective: "patch-dpo", maxSteps: 2, saveEvery: 0 }));
    await run(opts(b, { objective: "patch-dpo", maxSteps: 2, saveEvery: 0, recompute: true }));
    const [la, lb] = [await log(a), await log(b)];
    expect(lb.map((r) => r.step)).toEqual([0, 1]);
    lb.forEach((r, i) => expect(Math.abs(r.loss - la[i]!.loss)).toBeLessThan(1e-5 * (1 + Math.abs(la[i]!.loss))));
    const w = (d: string) => loadIpAdapter(epochFile(runPaths(d), 1), "mobilenet_v2").source.float32("ip_adapter.1.to_k_ip.weight");
    const [wa, wb] = [w(a), w(b)];
    expect(Math.max(...wa.map((x, i) => Math.abs(x - wb[i]!)))).toBeLessThan(1e-5);
    for (const d of [a, b]) rmSync(d, { recursive: true, force: true });
  });

  test("a full pass: --grad-accum micro-batches per step, the last step topped up from the start of the order", async () => {
    const dir = runDir();
    const res = await run(opts(dir, { objective: "mse", gradAccum: 3, maxSteps: undefined }));
    expect(res).toMatchObject({ pairs: 4, steps: 2, endStep: 2, finished: true }); // ceil(4 / (1 x 3))
    expect((await log(dir)).map((r) => r.step)).toEqual([0, 1]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("resume: 4 steps straight == 2 steps + --resume (byte-identical epoch file, same log)", async () => {
    const o = { objective: "weighted" as const, maxSteps: 4, saveEvery: 0 };
    const { a, b, fa } = await expectResumeIdentical(o, async (b) => {
      expect(existsSync(epochFile(runPaths(b), 1))).toBe(false);
      await expect(run(opts(b, o))).rejects.toThrow(/--resume/); // not silently restarted
      await expect(run(opts(b, { ...o, resume: true, lr: 2e-3 }))).rejects.toThrow(/other settings \(lr/);
    });
    // --force redoes the epoch from scratch, to the same bytes.
    await run(opts(b, { ...o, force: true }));
    expect(Buffer.compare(readFileSync(epochFile(runPaths(b), 1)), fa)).toBe(0);
    expect((await log(b)).map((r) => r.step)).toEqual([0, 1, 2, 3]);
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  });

  // patch-dpo resumes with more state than the weights and moments: its frozen reference model
  // (--ip-adapter, never the resumed weights); mse is the baseline every comparison leans on.
  for (const objective of ["patch-dpo", "mse"] as const) {
    test(`resume, ${objective}: 4 steps straight == 2 steps + --resume (byte-identical epoch file, same log)`, async () => {
      const { a, b } = await expectResumeIdentical({ objective, maxSteps: 4, saveEvery: 0 });
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    });
  }
});

/**
 * Trains `o` (4 steps) straight in one run and as 2 steps, a stop and --resume in another, and
 * checks the epoch files are byte-identical and the logs equal (but for timings). `beforeResume`
 * runs on the stopped run. Returns both run directories and the straight run's epoch file.
 */
async function expectResumeIdentical(o: Partial<DpoEpochOptions> & { maxSteps: number }, beforeResume?: (b: string) => Promise<void>) {
  const a = runDir();
  await run(opts(a, o));
  const b = runDir();
  expect(await run(opts(b, { ...o, stopAt: 2 }))).toMatchObject({ finished: false, endStep: 2, stepsRun: 2 });
  await beforeResume?.(b);
  expect(await run(opts(b, { ...o, resume: true }))).toMatchObject({ finished: true, startStep: 0, endStep: o.maxSteps, stepsRun: o.maxSteps - 2 });
  const fa = readFileSync(epochFile(runPaths(a), 1));
  const fb = readFileSync(epochFile(runPaths(b), 1));
  expect(Buffer.compare(fa, fb)).toBe(0);
  const strip = (rows: TrainLogRow[]) => rows.map(({ seconds: _, ...r }) => r);
  expect((await log(a)).map((r) => r.step)).toEqual(Array.from({ length: o.maxSteps }, (_, s) => s)); // every step trained, none skipped
  expect(strip(await log(b))).toEqual(strip(await log(a)));
  return { a, b, fa };
}

describe("dpo-epoch errors", () => {
  const rewrite = (file: string, edit: (lines: string[]) => string[]) =>
    writeFileSync(file, edit(readFileSync(file, "utf8").trim().split("\n")).map((l) => `${l}\n`).join(""));

  test("patch-scores rows whose generation or reference is missing", async () => {
    const dir = runDir();
    const p = runPaths(dir);
    rewrite(p.generations, (l) => l.slice(1));
    await expect(run(opts(dir))).rejects.toThrow(/patch-scores.jsonl:1: generation ".*" is not in .*generations.jsonl/);
    const dir2 = runDir();
    const p2 = runPaths(dir2);
    const gone = (await readJsonlAll(p2.references, ReferenceRow))[1]!.id;
    rewrite(p2.references, (l) => l.slice(0, 1));
    await expect(run(opts(dir2))).rejects.toThrow(new RegExp(`patch-scores.jsonl:\\d: reference "${gone}" is not in .*references.jsonl`));
    await expect(run(opts(dir2))).rejects.toBeInstanceOf(UserError);
  });

  test("quality maps missing for weighted / patch-dpo; mse runs on generations.jsonl without them", async () => {
    const dir = runDir();
    const p = runPaths(dir);
    const first = (await readJsonlAll(p.patchScores, PatchScoreRow))[0]!;
    rmSync(join(dir, first.scores));
    await expect(run(opts(dir, { objective: "weighted" }))).rejects.toThrow(/quality maps .* are missing/);
    rmSync(p.patchScores);
    for (const objective of ["weighted", "patch-dpo"] as const) await expect(run(opts(dir, { objective }))).rejects.toThrow(/patch-scores.jsonl is missing.*--objective mse/);
    const res = await run(opts(dir, { objective: "mse", maxSteps: 1 }));
    expect(res).toMatchObject({ pairs: (await readJsonlAll(p.generations, GenerationRow)).length, finished: true });
  });

  test("maps scored at another grid are resized to size / vae factor", async () => {
    const dir = runDir();
    const p = runPaths(dir);
    // Drop the encoder-grid maps and store 8x8 latent maps: the trainer needs 16x16.
    for (const r of await readJsonlAll(p.patchScores, PatchScoreRow)) {
      const q = new Float32Array(64).fill(0.5);
      q[0] = 0.25;
      await writeSafetensors(join(dir, r.scores), { q_gen_latent: { dtype: "F32", shape: [8, 8], data: q }, q_ref_latent: { dtype: "F32", shape: [8, 8], data: q } });
    }
    const res = await run(opts(dir, { objective: "weighted", maxSteps: 1 }));
    expect(res.finished).toBe(true);
    expect(Number.isFinite((await log(dir))[0]!.loss)).toBe(true);
  });

  test("an IP-Adapter that does not match the UNet; a bad image encoder; epoch 2 before epoch 1; no pairs", async () => {
    const dir = runDir();
    const other = join(root, "ip-other.safetensors");
    await writeIpAdapter(other, { ...UNET, cross_attention_dim: 48 }, { ...PROJ, outputDim: 48 }, 3);
    await expect(run(opts(dir, { ipAdapter: other }))).rejects.toThrow(/does not match[\s\S]*ip-adapter: \d+ missing, \d+ mismatched[\s\S]*--check-models/);
    await expect(run(opts(dir, { imageEncoder: join(root, "nowhere") }))).rejects.toThrow(/config.json is missing/);
    await expect(run(opts(dir, { epoch: 2 }))).rejects.toThrow(/ip-adapter-epoch-1.safetensors is missing.*--epoch 1/);
    await expect(run(opts(dir, { size: 18 }))).rejects.toThrow(/--size 18: .*needs a multiple of 4/);
    writeFileSync(runPaths(dir).generations, "");
    rmSync(runPaths(dir).patchScores);
    await expect(run(opts(dir, { objective: "mse" }))).rejects.toThrow(/no pairs to train on/);
    await expect(run(opts(dir, { epoch: 0 }))).rejects.toBeInstanceOf(UsageError);
  });
});

describe("dpo-epoch CLI", () => {
  const cli = (args: string[]) => Bun.spawnSync(["bun", SCRIPT, ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });

  test("--help lists every default; bad usage exits 2", () => {
    const h = cli(["--help"]);
    expect(h.exitCode).toBe(0);
    const text = h.stdout.toString();
    for (const flag of ["--lr", "--weight-decay", "--batch", "--grad-accum", "--clip", "--warmup", "--schedule", "--beta", "--lambda", "--ip-scale", "--train", "--size", "--seed", "--save-every", "--objective", "--epoch", "--device", "--threads"]) {
      expect(text).toMatch(new RegExp(`${flag} .*\\(default: [^)]+\\)`));
    }
    expect(text).toContain("(default: 0.00003)");
    expect(text).toContain("own size, unet sample_size x VAE factor");
    const base = ["--run", join(root, "base"), "--model", join(root, "model"), "--ip-adapter", join(root, "ip.safetensors"), "--image-encoder", "mobilenet_v2"];
    for (const bad of [["--objective", "dpo"], ["--train", "unet"], ["--lr", "-1"], ["--bogus"], ["--batch", "1.5"]]) {
      const r = cli([...base, ...bad]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr.toString()).toContain("error:");
    }
    expect(cli(base.slice(2)).exitCode).toBe(2); // no --run
  });

  test("a run: exit 0, one JSON line per step, run.json records it; a broken run exits 1", () => {
    const dir = runDir();
    const args = ["--run", dir, "--model", join(root, "model"), "--ip-adapter", join(root, "ip.safetensors"), "--image-encoder", "mobilenet_v2", "--size", String(SIZE), "--batch", "1", "--threads", "1"];
    const r = cli([...args, "--objective", "mse", "--max-steps", "1"]);
    expect(r.exitCode).toBe(0);
    const lines = r.stdout.toString().trim().split("\n");
    expect(JSON.parse(lines[0]!)).toMatchObject({ step: 0, epoch: 1 });
    expect(lines.at(-1)).toMatch(/epoch 1 finished at step 1/);
    const runJson = JSON.parse(readFileSync(join(dir, "run.json"), "utf8"));
    expect(runJson.steps.at(-1)).toMatchObject({ step: "dpo-epoch (epoch 1, mse)", status: "ok" });
    const again = cli([...args, "--objective", "mse", "--max-steps", "1"]);
    expect(again.exitCode).toBe(1);
    expect(again.stderr.toString()).toMatch(/^error: .*already trained/);
  });
});
