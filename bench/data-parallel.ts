// Step throughput of data-parallel dpo-epoch (issue 15) on this machine: the same global batch
// (2 micro-batches of --batch pairs per step, patch-dpo, the tiny world's generator at 64 px) in
// one process and over 2 ranks under mpirun. Rounds alternate between the settings (3 rounds,
// medians); each run takes --max-steps 8 in a fresh copy of one scored run, and the first 2
// steps (session compile, arenas) are left out of its s/step.
//
//   bun bench/data-parallel.ts [--batch 1] [--rounds 3]
//
// The tiny model trains 90k values, so the all-reduce costs ~nothing here: this measures whether
// two processes use the cores better than one process with two ONNX Runtime threads.

import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { readJsonlAll } from "../lib/io/manifest.ts";
import { TrainLogRow } from "../lib/io/schemas.ts";

const REPO = join(import.meta.dir, "..");
const OUT = join(REPO, "bench/out/data-parallel");
const arg = (name: string, d: string) => {
  const i = Bun.argv.indexOf(name);
  return i < 0 ? d : Bun.argv[i + 1]!;
};
const BATCH = Number(arg("--batch", "1"));
const ROUNDS = Number(arg("--rounds", "3"));
const STEPS = 8, WARM = 2;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1" };

async function sh(cmd: string[]): Promise<void> {
  const p = Bun.spawn(cmd, { cwd: REPO, env: ENV, stdout: "ignore", stderr: "pipe" });
  const err = await new Response(p.stderr).text();
  if ((await p.exited) !== 0) throw new Error(`${cmd.join(" ")} failed:\n${err}`);
}

/** A scored tiny-world run: 6 subjects x 2 generations (the make pipeline defaults), raw MobileNetV2 scores. */
async function baseRun(): Promise<string> {
  const run = join(OUT, "base");
  if (existsSync(join(run, "patch-scores.jsonl"))) return run;
  mkdirSync(OUT, { recursive: true });
  const bun = process.execPath;
  await sh([bun, "scripts/synthesize-prompts.ts", "--run", run, "--world", "tiny", "--tiny-split", "train", "--subjects", "6", "--scenes-per-subject", "2"]);
  await sh([bun, "scripts/generate-images.ts", "--run", run, "--mode", "reference", "--model", "tinyworld", "--width", "224", "--height", "224"]);
  await sh([bun, "scripts/generate-images.ts", "--run", run, "--mode", "personalized", "--model", "checkpoints/tiny", "--ip-adapter", "checkpoints/tiny/ip-adapter.safetensors",
    "--image-encoder", "mobilenet_v2", "--width", "64", "--height", "64", "--steps", "10", "--guidance", "1", "--per-reference", "2", "--batch", "6"]);
  await sh([bun, "scripts/score-patches.ts", "--run", run, "--encoder", "mobilenet_v2", "--feature-layer", "block_13_expand_relu", "--latent-grid", "16"]);
  return run;
}

const SETTINGS = [
  { name: "1 process, 2 threads", ranks: 1, threads: 2 },
  { name: "1 process, 1 thread", ranks: 1, threads: 1 },
  { name: "2 ranks x 1 thread", ranks: 2, threads: 1 },
];

async function once(base: string, s: (typeof SETTINGS)[number], round: number): Promise<number> {
  const run = join(OUT, `r${round}-${s.ranks}x${s.threads}`);
  rmSync(run, { recursive: true, force: true });
  cpSync(base, run, { recursive: true });
  const flags = ["scripts/dpo-epoch.ts", "--run", run, "--model", "checkpoints/tiny", "--ip-adapter", "checkpoints/tiny/ip-adapter.safetensors", "--image-encoder", "mobilenet_v2",
    "--objective", "patch-dpo", "--size", "64", "--batch", String(BATCH), "--grad-accum", "2", "--max-steps", String(STEPS), "--save-every", "0", "--threads", String(s.threads)];
  const mpirun = ["mpirun", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader", "-np", String(s.ranks)];
  await sh(s.ranks > 1 ? [...mpirun, process.execPath, ...flags] : [process.execPath, ...flags]);
  const rows = await readJsonlAll(join(run, "train/train-log.jsonl"), TrainLogRow);
  rmSync(run, { recursive: true, force: true });
  return median(rows.slice(WARM).map((r) => r.seconds!));
}

if (import.meta.main) {
  const base = await baseRun();
  const times = new Map<string, number[]>(SETTINGS.map((s) => [s.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const s of SETTINGS) {
      const t = await once(base, s, round);
      times.get(s.name)!.push(t);
      console.log(`round ${round} ${s.name}: ${t.toFixed(3)} s/step`);
    }
  }
  const pairs = 2 * BATCH;
  const ref = median(times.get(SETTINGS[0]!.name)!);
  console.log(`\nglobal batch ${pairs} pairs/step (--batch ${BATCH} --grad-accum 2), ${navigator.hardwareConcurrency} cores, medians of ${ROUNDS} rounds:`);
  for (const s of SETTINGS) {
    const t = median(times.get(s.name)!);
    console.log(`  ${s.name.padEnd(22)} ${t.toFixed(3)} s/step  ${(pairs / t).toFixed(2)} pairs/s  (x${(ref / t).toFixed(2)} vs ${SETTINGS[0]!.name})`);
  }
}
