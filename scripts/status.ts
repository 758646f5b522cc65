// What state a run directory is in, read-only: which steps finished, failed, or were killed
// (started and never finished: run.json's entry still says "running" and its process is gone),
// how many rows each manifest has against the rows its settings expect, how the manifests cover
// each other (references -> prompts, generations -> references, patch scores and eval scores ->
// generations), which shards are incomplete or ready to merge, the settings of each manifest,
// trained epochs, and forced reruns or locks left behind.
//
//   bun scripts/status.ts --run data/runs/demo          # plain text
//   bun scripts/status.ts --run data/runs/demo --json   # the same as JSON
//   make status RUN=data/runs/demo

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { type } from "arktype";
import { HOST_TAG, pidAlive } from "../lib/io/atomic.ts";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain } from "../lib/io/errors.ts";
import { existingRunDir, runPaths } from "../lib/io/rundir.ts";
import { readRunJson, wasKilled } from "../lib/io/runlog.ts";
import { readSettings } from "../lib/io/settings.ts";

export interface StatusOptions {
  run: string;
}

export const OPTIONS = type({ run: "string > 0" });

export interface ManifestStatus {
  file: string;
  rows: number;
  /** Rows its settings say it holds when complete (undefined: not recorded). */
  expected?: number;
  missing?: string[];
  /** The last line is torn (a step was killed mid-append; its rerun repairs it). */
  tornTail: boolean;
  shard?: string;
  settings?: Record<string, unknown>;
}

export interface RunStatus {
  run: string;
  steps: { step: string; status: "ok" | "failed" | "running" | "killed"; startedAt: string; seconds?: number; error?: string; pid?: number; host?: string }[];
  manifests: ManifestStatus[];
  coverage: { what: string; covered: number; of: number; missing: string[] }[];
  shards: { manifest: string; count: number; complete: number[]; incomplete: number[]; absent: number[]; merged: boolean }[];
  epochs: { finished: number[]; checkpoints: string[] };
  leftovers: string[];
}

/** Ids of a JSONL file without validating it (status reads damaged runs too). */
function readIds(file: string, key = "id"): { ids: string[]; tornTail: boolean } {
  const text = readFileSync(file, "utf8");
  const lines = text.split("\n");
  const ids: string[] = [];
  let tornTail = false;
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      const row = JSON.parse(line) as Record<string, unknown>;
      ids.push(String(row[key] ?? ""));
    } catch {
      if (i === lines.length - 1) tornTail = true;
    }
  });
  return { ids, tornTail };
}

const MANIFESTS = ["prompts.jsonl", "references.jsonl", "generations.jsonl", "patch-scores.jsonl", "eval/scores.jsonl"];
const idKey = (file: string) => (basename(file) === "prompts.jsonl" ? "subjectId" : "id");

export async function run(input: StatusOptions): Promise<RunStatus> {
  const o = resolveOptions<StatusOptions>(OPTIONS, {}, input);
  const root = existingRunDir(o.run);
  const paths = runPaths(root);
  const steps = (await readRunJson(root)).steps.map((e) => ({
    step: e.step,
    status: wasKilled(e) ? ("killed" as const) : e.status,
    startedAt: e.startedAt, seconds: e.seconds, error: e.error, pid: e.pid, host: e.host,
  }));

  const manifests: ManifestStatus[] = [];
  const idsOf = new Map<string, string[]>();
  const shards: RunStatus["shards"] = [];
  for (const rel of MANIFESTS) {
    const base = join(root, rel);
    const relDir = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/") + 1) : "";
    const dir = join(root, relDir);
    const stem = basename(rel, ".jsonl");
    const shardFiles = existsSync(dir) ? readdirSync(dir).filter((f) => new RegExp(`^${stem}\\.shard-\\d+-of-\\d+\\.jsonl$`).test(f)).sort() : [];
    for (const file of [...(existsSync(base) ? [base] : []), ...shardFiles.map((f) => join(dir, f))]) {
      const { ids, tornTail } = readIds(file, idKey(file));
      const rec = readSettings(file);
      const evalConfig = file.endsWith("scores.jsonl") && existsSync(file.replace(/\.jsonl$/, ".config.json")) ? (JSON.parse(readFileSync(file.replace(/\.jsonl$/, ".config.json"), "utf8")) as Record<string, unknown>) : undefined;
      const have = new Set(ids);
      const missing = rec?.expected?.filter((id) => !have.has(id));
      manifests.push({ file: file.slice(root.length + 1), rows: ids.length, expected: rec?.expected?.length, missing, tornTail, shard: rec?.shard, settings: rec?.settings ?? evalConfig });
      if (file === base) idsOf.set(rel, ids);
    }
    // Shards of each count n: which finished (all expected rows), which did not, which never ran.
    const counts = new Set(shardFiles.map((f) => Number(/-of-(\d+)\.jsonl$/.exec(f)![1])));
    for (const n of counts) {
      const s = { manifest: rel, count: n, complete: [] as number[], incomplete: [] as number[], absent: [] as number[], merged: existsSync(base) };
      for (let i = 0; i < n; i++) {
        const m = manifests.find((x) => x.file === `${relDir}${stem}.shard-${i}-of-${n}.jsonl`);
        if (!m) s.absent.push(i);
        else if (m.expected !== undefined && m.rows >= m.expected && !m.missing?.length) s.complete.push(i);
        else s.incomplete.push(i);
      }
      shards.push(s);
    }
  }

  const coverage: RunStatus["coverage"] = [];
  const cover = (what: string, want: string[] | undefined, have: string[] | undefined) => {
    if (!want || !have) return;
    const h = new Set(have);
    const missing = [...new Set(want)].filter((x) => !h.has(x));
    coverage.push({ what, covered: new Set(want).size - missing.length, of: new Set(want).size, missing });
  };
  const rowsOf = (rel: string, key: string) => (existsSync(join(root, rel)) ? readIds(join(root, rel), key).ids : undefined);
  cover("prompt subjects with a reference", idsOf.get("prompts.jsonl"), rowsOf("references.jsonl", "subjectId"));
  cover("references with a generation", idsOf.get("references.jsonl"), rowsOf("generations.jsonl", "referenceId"));
  cover("generations with patch scores", idsOf.get("generations.jsonl"), idsOf.get("patch-scores.jsonl"));
  cover("generations with eval scores", idsOf.get("generations.jsonl"), idsOf.get("eval/scores.jsonl"));

  const finished = existsSync(paths.trainDir)
    ? readdirSync(paths.trainDir).map((f) => /^ip-adapter-epoch-(\d+)\.safetensors$/.exec(f)).filter((m) => m).map((m) => Number(m![1])).sort((a, b) => a - b)
    : [];
  const checkpoints = existsSync(paths.checkpointsDir) ? readdirSync(paths.checkpointsDir).filter((d) => /^step-\d+$/.test(d)).sort((a, b) => Number(a.slice(5)) - Number(b.slice(5))) : [];

  const leftovers: string[] = [];
  const staging = join(root, ".staging");
  if (existsSync(staging)) {
    for (const d of readdirSync(staging)) {
      leftovers.push(existsSync(join(staging, d, ".commit"))
        ? `.staging/${d}: a --force whose swap was interrupted (the next run of that step completes it)`
        : `.staging/${d}: a --force that did not finish (the old results stand; the next run of that step discards it)`);
    }
  }
  const lockFiles = (dir: string, prefix = "") => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".lock")).map((f) => [join(dir, f), `${prefix}${f}`] as const) : []);
  for (const [file, name] of [...lockFiles(root), ...lockFiles(join(root, "eval"), "eval/")]) {
    let holder: { pid?: number; host?: string; hostTag?: string } = {};
    try {
      holder = JSON.parse(readFileSync(file, "utf8"));
    } catch {
      /* being written */
    }
    const here = holder.hostTag === HOST_TAG;
    const state = here ? (holder.pid !== undefined && pidAlive(holder.pid) ? "held by a running process" : "left by a killed process (the next run takes it over)") : `held on ${holder.host ?? "another host"}`;
    leftovers.push(`${name}: ${state}${holder.pid !== undefined ? ` (pid ${holder.pid})` : ""}`);
  }
  return { run: root, steps, manifests, coverage, shards, epochs: { finished, checkpoints }, leftovers };
}

const show = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));
const some = (ids: string[]) => `${ids.slice(0, 5).join(", ")}${ids.length > 5 ? `, ... (${ids.length})` : ""}`;

/** The status as plain text, one section per kind. */
export function formatStatus(s: RunStatus): string {
  const out = [`run ${s.run}`, "", "steps (run.json):"];
  if (!s.steps.length) out.push("  none recorded");
  for (const e of s.steps) {
    const what = e.status === "killed" ? `KILLED   started ${e.startedAt}, pid ${e.pid} is gone: rerun the step (it resumes)`
      : e.status === "running" ? `running  since ${e.startedAt} (pid ${e.pid} on ${e.host})`
      : e.status === "failed" ? `FAILED   ${e.error?.split("\n")[0]}`
      : `ok       ${e.startedAt} (${e.seconds} s)`;
    out.push(`  ${e.step.padEnd(44)} ${what}`);
  }
  out.push("", "manifests:");
  if (!s.manifests.length) out.push("  none yet");
  for (const m of s.manifests) {
    const count = m.expected === undefined ? `${m.rows} rows` : `${m.rows} of ${m.expected} rows${m.missing?.length ? `, INCOMPLETE: missing ${some(m.missing)}` : ", complete"}`;
    out.push(`  ${m.file.padEnd(44)} ${count}${m.tornTail ? "; the last line is torn (killed mid-append; a rerun repairs it)" : ""}`);
    if (m.settings) out.push(`  ${"".padEnd(44)} settings: ${Object.entries(m.settings).map(([k, v]) => `${k}=${show(v)}`).join(" ")}`);
  }
  if (s.coverage.length) out.push("", "coverage:");
  for (const c of s.coverage) out.push(`  ${c.what.padEnd(44)} ${c.covered} of ${c.of}${c.missing.length ? ` (missing: ${some(c.missing)})` : ""}`);
  if (s.shards.length) out.push("", "shards:");
  for (const sh of s.shards) {
    const parts = [`${sh.complete.length} of ${sh.count} complete`];
    if (sh.incomplete.length) parts.push(`incomplete: ${sh.incomplete.map((i) => `${i}/${sh.count}`).join(", ")} (rerun them; they resume)`);
    if (sh.absent.length) parts.push(`never ran: ${sh.absent.map((i) => `${i}/${sh.count}`).join(", ")}`);
    if (!sh.incomplete.length && !sh.absent.length) parts.push(sh.merged ? "merged" : `ready: --merge ${sh.count}`);
    out.push(`  ${sh.manifest.padEnd(44)} ${parts.join("; ")}`);
  }
  if (s.epochs.finished.length || s.epochs.checkpoints.length) {
    out.push("", "training:", `  epochs finished: ${s.epochs.finished.join(", ") || "none"}; checkpoints: ${s.epochs.checkpoints.join(", ") || "none"}`);
  }
  if (s.leftovers.length) out.push("", "left behind:", ...s.leftovers.map((l) => `  ${l}`));
  return out.join("\n");
}

const HELP = `status: the state of a run directory (read-only)

usage: bun scripts/status.ts --run <dir> [--json]

  --run <dir>    the run directory
  --json         print the status as JSON instead of text
  -h, --help     this help

Shows the steps of run.json (ok, failed, running, or killed: started and never finished), the rows
of each manifest against the rows its settings expect, how the manifests cover each other, which
shards are incomplete or ready to merge, each manifest's settings, trained epochs, and unfinished
--force reruns or locks left behind.`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({ run: { type: "string" }, json: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false } }, HELP);
    if (v.help) return console.log(HELP);
    const s = await run({ run: v.run! });
    console.log(v.json ? JSON.stringify(s, null, 2) : formatStatus(s));
  });
}
