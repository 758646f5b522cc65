// Fault injection (issue 12): every step of the chain is killed with SIGKILL at seeded random
// points of its work and rerun, and its outputs must equal an uninterrupted run's byte for byte.
// The kill points are the step's durable writes (lib/io/fault.ts: PATCHDPO_FAULT_AT=n dies at the
// n-th, just before an atomic rename, leaving the temp file, or half-way through a manifest
// append); PATCHDPO_FAULT_TRACE counts them in the uninterrupted run. Then the rerun cases built on
// kills: a killed --force leaves either the old results or the new ones, never a mix; a killed
// step rerun with other settings is refused; a shard killed part-way cannot be merged.
// The tiny world, CLI subprocesses, KILLS points per step: about two minutes on 2 cores.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Rng } from "../../lib/rng.ts";
import { SIZE, copyRun, snapshot, tinyModel, tinyRun } from "./helpers/tiny-run.ts";

const REPO = resolve(import.meta.dir, "../..");
const KILLS = 2;
const rng = new Rng(12);
const root = mkdtempSync(join(tmpdir(), "patchdpo-faults-"));
let model: string;
let ip: string;
let n = 0;

function cli(script: string, args: string[], env: Record<string, string> = {}) {
  const r = Bun.spawnSync(["bun", join(REPO, "scripts", `${script}.ts`), ...args], { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, signal: r.signalCode, err: r.stderr.toString() };
}

/** Fields that legitimately differ between two runs: wall times. */
const TIMES = new Set(["seconds", "finishedAt"]);
const withoutTimes = (text: string) =>
  text.split("\n").map((line) => {
    if (!line.trim().startsWith("{") || !line.trim().endsWith("}")) return line;
    try {
      return JSON.stringify(JSON.parse(line), (k, v) => (TIMES.has(k) ? undefined : v));
    } catch {
      return line;
    }
  }).join("\n");
/** Text files without wall times, and with the run folder's own path (absolute paths recorded beside relative ones) as "<run>". */
const normalized = (dir: string, rel: string, bytes: Buffer) => {
  if (!rel.endsWith(".json") && !rel.endsWith(".jsonl")) return bytes;
  const text = bytes.toString().split(dir).join("<run>");
  return Buffer.from(rel.endsWith(".jsonl") ? withoutTimes(text) : JSON.stringify(JSON.parse(text), (k, v) => (TIMES.has(k) ? undefined : v)));
};
/** A run's outputs: every file but run.json (its timings and the killed attempts). */
const outputs = (dir: string) => {
  const s = snapshot(dir, (rel) => rel === "run.json");
  return new Map([...s].map(([k, v]) => [k, normalized(dir, k, v)]));
};
/** The index of the first durable write whose label contains `label`, from an uninterrupted traced run in a scratch copy. */
function pointOf(start: string, script: string, args: (d: string) => string[], label: string): number {
  const scratch = join(root, `scratch-${n++}`);
  copyRun(start, scratch);
  const trace = join(root, `trace-${n++}.txt`);
  expect(cli(script, args(scratch), { PATCHDPO_FAULT_TRACE: trace }).code).toBe(0);
  const i = readFileSync(trace, "utf8").trim().split("\n").findIndex((l) => l.includes(label));
  expect(i).toBeGreaterThanOrEqual(0);
  return i + 1;
}
function expectSame(want: Map<string, Buffer>, got: Map<string, Buffer>, what: string) {
  expect({ what, files: [...got.keys()].sort() }).toEqual({ what, files: [...want.keys()].sort() });
  for (const [k, v] of want) expect({ what, file: k, same: Buffer.compare(v, got.get(k)!) === 0 }).toEqual({ what, file: k, same: true });
}

interface Step { name: string; script: string; args: (dir: string) => string[] }
const STEPS: Step[] = [
  { name: "synthesize-prompts", script: "synthesize-prompts", args: (d) => ["--run", d, "--world", "tiny", "--subjects", "2", "--scenes-per-subject", "2"] },
  { name: "generate-images (reference)", script: "generate-images", args: (d) => ["--run", d, "--mode", "reference", "--model", "tinyworld", "--size", String(SIZE)] },
  { name: "generate-images (personalized)", script: "generate-images", args: (d) => ["--run", d, "--mode", "personalized", "--model", "tinyworld", "--size", String(SIZE), "--per-reference", "2"] },
  { name: "score-patches", script: "score-patches", args: (d) => ["--run", d, "--encoder", "mobilenet_v2", "--latent-grid", String(SIZE / 2), "--batch", "2", "--threads", "1"] },
  { name: "finetune-encoder", script: "finetune-encoder", args: (d) => ["--images", join(d, "references"), "--out", join(d, "encoder"), "--steps", "3", "--batch", "1", "--holdout", "0", "--save-every", "1", "--image-size", "64", "--threads", "1", "--resume"] },
  { name: "dpo-epoch", script: "dpo-epoch", args: (d) => ["--run", d, "--model", model, "--ip-adapter", ip, "--image-encoder", "mobilenet_v2", "--objective", "patch-dpo", "--batch", "1", "--max-steps", "3", "--save-every", "1", "--lr", "1e-3", "--threads", "1", "--resume"] },
  { name: "eval", script: "eval", args: (d) => ["--run", d, "--encoder-feature", "mobilenet_v2", "--batch", "2", "--threads", "1"] },
];

/** The run before each step (the previous step's uninterrupted output). */
const before = new Map<string, string>();

beforeAll(async () => {
  ({ model, ip } = await tinyModel(root));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("each step killed at seeded random points and rerun ends byte-identical to an uninterrupted run", () => {
  let prev = join(root, "empty");
  for (const step of STEPS) {
    test(step.name, () => {
      const start = prev;
      before.set(step.name, start);
      const straight = join(root, `straight-${n++}`);
      copyIfExists(start, straight);
      const trace = join(root, `trace-${n++}.txt`);
      const ok = cli(step.script, step.args(straight), { PATCHDPO_FAULT_TRACE: trace });
      expect({ step: step.name, code: ok.code, err: ok.err }).toMatchObject({ code: 0 });
      const points = readFileSync(trace, "utf8").trim().split("\n").length;
      expect(points).toBeGreaterThan(2);
      const want = outputs(straight);
      for (const at of pick(points)) {
        const dir = join(root, `killed-${n++}`);
        copyIfExists(start, dir);
        const killed = cli(step.script, step.args(dir), { PATCHDPO_FAULT_AT: String(at) });
        expect({ step: step.name, at, signal: killed.signal }).toEqual({ step: step.name, at, signal: "SIGKILL" });
        const rerun = cli(step.script, step.args(dir));
        expect({ step: step.name, at, code: rerun.code, err: rerun.err }).toMatchObject({ code: 0 });
        expectSame(want, outputs(dir), `${step.name}, killed at write ${at} of ${points}`);
      }
      prev = straight;
    });
  }
});

/** KILLS distinct points in 1..points, seeded; the last write is always among the candidates. */
function pick(points: number): number[] {
  const all = Array.from({ length: points }, (_, i) => i + 1);
  return rng.shuffle(all).slice(0, Math.min(KILLS, points)).sort((a, b) => a - b);
}

function copyIfExists(from: string, to: string) {
  try {
    copyRun(from, to);
  } catch {
    /* the empty start: nothing to copy */
  }
}

describe("rerun cases built on kills", () => {
  test("a killed --force leaves the old results or the new ones, never a mix; the next run cleans up", () => {
    const start = before.get("eval")!; // scored, with generations
    const old = join(root, `force-old-${n++}`);
    copyRun(start, old);
    const oldOutputs = outputs(old);
    const args = (d: string) => ["--run", d, "--encoder", "mobilenet_v2", "--latent-grid", "8", "--batch", "2", "--threads", "1", "--force"];
    const fresh = join(root, `force-new-${n++}`);
    copyRun(start, fresh);
    const trace = join(root, `trace-${n++}.txt`);
    expect(cli("score-patches", args(fresh), { PATCHDPO_FAULT_TRACE: trace }).code).toBe(0);
    const newOutputs = outputs(fresh);
    const points = readFileSync(trace, "utf8").trim().split("\n");
    // Kill points on both sides of the decision: while staging, and during the swap itself.
    const swap = points.findIndex((l) => l.includes("replace .commit")) + 1;
    for (const at of [...pick(swap - 1), swap + 1]) {
      const dir = join(root, `force-killed-${n++}`);
      copyRun(start, dir);
      expect(cli("score-patches", args(dir), { PATCHDPO_FAULT_AT: String(at) }).signal).toBe("SIGKILL");
      // A plain rerun (no --force) either finds the old results or completes the decided swap.
      const rerun = cli("score-patches", ["--run", dir, "--encoder", "mobilenet_v2", "--latent-grid", at > swap ? "8" : String(SIZE / 2), "--batch", "2", "--threads", "1"]);
      expect({ at, code: rerun.code, err: rerun.err }).toMatchObject({ code: 0 });
      expectSame(at > swap ? newOutputs : oldOutputs, outputs(dir), `--force killed at write ${at} (swap decided at ${swap})`);
    }
  });

  test("a killed step rerun with other settings is refused; a shard killed part-way cannot be merged until rerun", () => {
    const start = before.get("generate-images (personalized)")!;
    const dir = join(root, `settings-${n++}`);
    copyRun(start, dir);
    const genArgs = (d: string) => ["--run", d, "--mode", "personalized", "--model", "tinyworld", "--size", String(SIZE), "--per-reference", "2"];
    const gen = (extra: string[], env: Record<string, string> = {}) => cli("generate-images", [...genArgs(dir), ...extra], env);
    const secondRow = pointOf(start, "generate-images", genArgs, "append generations.jsonl") + 1; // after the first row
    expect(gen([], { PATCHDPO_FAULT_AT: String(secondRow) }).signal).toBe("SIGKILL");
    const refused = gen(["--seed", "7"]);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain("--seed 0 then, 7 now");
    // Shards: shard 1 killed part-way; --merge names what is missing; the resumed shard merges.
    const sh = join(root, `shards-${n++}`);
    copyRun(start, sh);
    const shardArgs = (i: number) => (d: string) => ["--run", d, "--mode", "personalized", "--model", "tinyworld", "--size", String(SIZE), "--per-reference", "2", "--shard", `${i}/2`];
    const shard = (i: number, env: Record<string, string> = {}) => cli("generate-images", shardArgs(i)(sh), env);
    const firstAppend = pointOf(start, "generate-images", shardArgs(1), "append generations.shard-1-of-2.jsonl"); // torn: no complete row
    expect(shard(0).code).toBe(0);
    expect(shard(1, { PATCHDPO_FAULT_AT: String(firstAppend) }).signal).toBe("SIGKILL");
    const merge = () => cli("generate-images", ["--run", sh, "--mode", "personalized", "--merge", "2"]);
    const bad = merge();
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/rows are missing.*shard 1\/2 lacks/);
    expect(shard(1).code).toBe(0);
    expect(merge().code).toBe(0);
    const rows = (f: string) => readFileSync(f, "utf8").trim().split("\n").sort();
    expect(rows(join(sh, "generations.jsonl"))).toEqual(rows(join(before.get("score-patches")!, "generations.jsonl")));
  });
});
