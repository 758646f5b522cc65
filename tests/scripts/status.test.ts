// scripts/status.ts on a run in the states people find: a shard killed part-way (kill -9 through
// the fault hook), then rerun and merged. It must say which step was killed, which shard is
// incomplete and what it lacks, the rows and settings of each manifest, and the coverage.

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { formatStatus, run as status } from "../../scripts/status.ts";
import { SIZE, tinyRun } from "./helpers/tiny-run.ts";

const REPO = resolve(import.meta.dir, "../..");
const root = mkdtempSync(join(tmpdir(), "patchdpo-status-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const cli = (script: string, args: string[], env: Record<string, string> = {}) => {
  const r = Bun.spawnSync(["bun", join(REPO, "scripts", `${script}.ts`), ...args], { env: { ...process.env, ...env } });
  return { code: r.exitCode, signal: r.signalCode, out: r.stdout.toString(), err: r.stderr.toString() };
};

test("a killed shard, an incomplete manifest, coverage and settings; then rerun and merged", async () => {
  const dir = await tinyRun(join(root, "run"), { scores: false });
  const scoreArgs = (shard: string) => ["--run", dir, "--encoder", "mobilenet_v2", "--latent-grid", String(SIZE / 2), "--threads", "1", "--batch", "1", "--shard", shard];
  expect(cli("score-patches", scoreArgs("0/2")).code).toBe(0);
  // Shard 1 dies in its first manifest append (a torn line), as kill -9 would leave it.
  const trace = join(root, "trace.txt");
  const probe = join(root, "probe");
  Bun.spawnSync(["cp", "-r", dir, probe]);
  cli("score-patches", [...scoreArgs("1/2").map((a) => (a === dir ? probe : a))], { PATCHDPO_FAULT_TRACE: trace });
  const at = (await Bun.file(trace).text()).split("\n").findIndex((l) => l.includes("append patch-scores.shard-1-of-2.jsonl")) + 1;
  expect(at).toBeGreaterThan(0);
  expect(cli("score-patches", scoreArgs("1/2"), { PATCHDPO_FAULT_AT: String(at) }).signal).toBe("SIGKILL");

  const s = await status({ run: dir });
  expect(s.steps.map((e) => `${e.step}: ${e.status}`)).toEqual([
    "synthesize-prompts: ok", "generate-images (reference): ok", "generate-images (personalized): ok", "score-patches: ok", "score-patches: killed",
  ]);
  const shard1 = s.manifests.find((m) => m.file === "patch-scores.shard-1-of-2.jsonl")!;
  expect(shard1).toMatchObject({ rows: 0, tornTail: true, shard: "1/2", settings: { encoder: "mobilenet_v2", latentGrid: SIZE / 2, normalization: "clamp" } });
  expect(shard1.missing!.length).toBe(shard1.expected!);
  expect(s.manifests.find((m) => m.file === "generations.jsonl")).toMatchObject({ rows: 4, expected: 4, missing: [] });
  expect(s.shards).toEqual([{ manifest: "patch-scores.jsonl", count: 2, complete: [0], incomplete: [1], absent: [], merged: false }]);
  expect(s.coverage.find((c) => c.what === "references with a generation")).toMatchObject({ covered: 2, of: 2 });
  expect(s.leftovers.some((l) => l.includes("patch-scores.shard-1-of-2.jsonl.lock: left by a killed process"))).toBe(true);
  const text = formatStatus(s);
  for (const part of ["KILLED", "INCOMPLETE: missing", "the last line is torn", "incomplete: 1/2 (rerun them; they resume)", "settings: encoder=mobilenet_v2"]) expect(text).toContain(part);

  // The same through the CLI, as JSON; then the shard rerun and the merge.
  const json = cli("status", ["--run", dir, "--json"]);
  expect(json.code).toBe(0);
  expect(JSON.parse(json.out).shards).toEqual(s.shards);
  expect(cli("score-patches", scoreArgs("1/2")).code).toBe(0);
  expect(cli("score-patches", ["--run", dir, "--merge", "2"]).code).toBe(0);
  const after = await status({ run: dir });
  expect(after.shards[0]).toMatchObject({ complete: [0, 1], incomplete: [], merged: true });
  expect(after.coverage.find((c) => c.what === "generations with patch scores")).toMatchObject({ covered: 4, of: 4, missing: [] });
  expect(after.leftovers).toEqual([]);
  expect(cli("status", ["--run", dir]).out).toContain("ok       ");
});
