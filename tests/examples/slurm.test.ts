// examples/slurm on a machine without Slurm: submit.sh with stand-ins for sbatch (runs each job at
// once, array tasks one after another; submission order satisfies every afterok dependency) and
// srun (the same command under mpirun -np 2), on the tiny world. Keeps the recipe's flags and
// manifests honest: reference and personalized array shards merged, the data-parallel SSL encoder,
// scores merged, one data-parallel PatchDPO epoch. Skipped with a line when mpirun is absent.

import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { readRunJson } from "../../lib/io/runlog.ts";
import { GenerationRow, PatchScoreRow, ReferenceRow, TrainLogRow } from "../../lib/io/schemas.ts";
import { MPIRUN, MPI_ENV, NO_MPIRUN, runJob } from "../dist/helpers.ts";

setDefaultTimeout(600_000);
const REPO = resolve(import.meta.dir, "../..");
const tmp = mkdtempSync(join(tmpdir(), "patchdpo-slurm-"));
const hadLogs = existsSync(join(REPO, "logs"));
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
  // config.sh makes logs/ (sbatch's --output folder); leave the repository as it was.
  if (!hadLogs && existsSync(join(REPO, "logs")) && readdirSync(join(REPO, "logs")).length === 0) rmSync(join(REPO, "logs"), { recursive: true });
});

if (!MPIRUN) console.log(`slurm example test: ${NO_MPIRUN}`);

test.skipIf(!MPIRUN)("examples/slurm/submit.sh: arrays + merges, SSL encoder and a PatchDPO epoch over 2 ranks (tiny world)", async () => {
  const run = join(tmp, "run");
  const env = {
    ...MPI_ENV, PATH: `${join(import.meta.dir, "fake-slurm")}:${process.env.PATH}`, RUN: run, MODEL: "checkpoints/tiny", REFERENCE_MODEL: "tinyworld",
    IP_ADAPTER: "checkpoints/tiny/ip-adapter.safetensors", IMAGE_ENCODER: "mobilenet_v2", LATENT_GRID: "16", SHARDS: "2", EPOCHS: "1", DEVICE: "cpu",
    PROMPT_FLAGS: "--world tiny --tiny-split train --subjects 4 --scenes-per-subject 2", REFERENCE_FLAGS: "--width 224 --height 224",
    GENERATE_FLAGS: "--width 64 --height 64 --steps 2 --guidance 1 --ip-scale 1 --per-reference 1 --threads 1",
    SSL_FLAGS: "--feature-layer block_13_expand_relu --train-blocks 1 --steps 2 --holdout 0 --batch 2 --grad-accum 2 --save-every 0 --threads 1",
    DPO_FLAGS: "--objective patch-dpo --size 64 --batch 1 --grad-accum 2 --lr 1e-5 --beta 500 --save-every 0 --threads 1",
  };
  const r = await runJob([join(REPO, "examples/slurm/submit.sh")], 600_000, env);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toContain("submitted; the last job is");
  expect((await readJsonlAll(join(run, "references.jsonl"), ReferenceRow)).length).toBe(4);
  expect((await readJsonlAll(join(run, "generations.jsonl"), GenerationRow)).length).toBe(4);
  expect((await readJsonlAll(join(run, "patch-scores.jsonl"), PatchScoreRow)).length).toBe(4);
  expect(existsSync(join(run, "encoder-ssl", "weights.safetensors"))).toBe(true);
  expect(existsSync(join(run, "train", "ip-adapter-epoch-1.safetensors"))).toBe(true);
  expect((await readJsonlAll(join(run, "train", "train-log.jsonl"), TrainLogRow)).map((x) => x.step)).toEqual([0, 1]);
  const steps = (await readRunJson(run)).steps.map((s) => s.step);
  expect(steps).toContain("dpo-epoch (epoch 1, patch-dpo, 2 ranks)");
  expect(steps.filter((s) => s.startsWith("finetune-encoder")).length).toBe(1); // rank 0 alone records it
});
