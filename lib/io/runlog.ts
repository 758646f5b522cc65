// run.json: what ran in a run directory, with which options, software versions and timings.
// Every step adds its entry when it starts (status "running", with its pid and host) and completes
// it when it finishes or fails, so a run directory documents itself, and a step that was killed
// shows as "running" with a process that is gone (scripts/status.ts reports it).

import { existsSync, readFileSync } from "node:fs";
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import { cleanOrphanTemps, HOST_TAG, pidAlive, writeJsonAtomic } from "./atomic.ts";
import { UserError } from "./errors.ts";

export interface StepVersions {
  patchdpo: string;
  bun: string;
  onnxruntime: Record<string, string | undefined> | string;
  platform: string;
}

export interface StepEntry {
  step: string;
  options: unknown;
  startedAt: string;
  /** Absent while running. */
  finishedAt?: string;
  seconds?: number;
  versions: StepVersions;
  status: "running" | "ok" | "failed";
  error?: string;
  /** Identifies the entry while it runs (entries of older versions have none). */
  id?: string;
  pid?: number;
  host?: string;
  hostTag?: string;
}

/** A "running" entry whose process is gone from this host: the step was killed. */
export function wasKilled(e: StepEntry): boolean {
  return e.status === "running" && e.hostTag === HOST_TAG && e.pid !== undefined && !pidAlive(e.pid);
}

export interface RunJson {
  steps: StepEntry[];
  [key: string]: unknown;
}

let patchdpoVersion: string | undefined;
function readPatchdpoVersion(): string {
  if (patchdpoVersion === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
      patchdpoVersion = pkg.version ?? "unknown";
    } catch {
      patchdpoVersion = "unknown";
    }
  }
  return patchdpoVersion;
}

/** Versions recorded with each step. onnxruntime is imported lazily: steps without it stay light. */
export async function stepVersions(): Promise<StepVersions> {
  let onnxruntime: StepVersions["onnxruntime"];
  try {
    const ort = await import("onnxruntime-node");
    onnxruntime = { ...ort.env.versions };
  } catch (err) {
    onnxruntime = `unavailable (${(err as Error).message.split("\n")[0]})`;
  }
  return {
    patchdpo: readPatchdpoVersion(),
    bun: typeof Bun !== "undefined" ? Bun.version : `node ${process.version}`,
    onnxruntime,
    platform: `${process.platform}-${process.arch}`,
  };
}

/** Options as JSON: bigints become strings, functions and undefined are dropped. */
function jsonSafe(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(value ?? null, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : typeof v === "function" ? undefined : v)),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A lock file beside run.json, so concurrent shard jobs (Slurm arrays, indexed Jobs) appending to
 * the same run.json do not lose each other's entries. A lock older than `staleMs` is presumed left
 * by a killed process and broken.
 */
async function withLock<T>(lockPath: string, fn: () => Promise<T>, timeoutMs = 30_000, staleMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fh = await open(lockPath, "wx");
      await fh.write(`${process.pid} ${HOST_TAG}\n`);
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      try {
        // A holder killed on this machine is known at once; another machine's only by the lock's age.
        const [pid, host] = (await readFile(lockPath, "utf8")).trim().split(" ");
        const killedHere = host === HOST_TAG && !pidAlive(Number(pid));
        if (killedHere || Date.now() - (await stat(lockPath)).mtimeMs > staleMs) await rm(lockPath, { force: true });
      } catch {
        /* the holder just released it */
      }
      if (Date.now() > deadline) {
        throw new UserError(`${lockPath}: still locked after ${timeoutMs / 1000} s; if no other step is running in this run directory, delete the file`);
      }
      await sleep(20 + Math.random() * 30);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockPath, { force: true });
  }
}

/** Reads run.json ({ steps: [] } when the run directory has none yet). */
export async function readRunJson(runDir: string): Promise<RunJson> {
  const path = join(runDir, "run.json");
  if (!existsSync(path)) return { steps: [] };
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new UserError(`${path}: not valid JSON (${(err as Error).message}); fix or move the file away (it only records history)`);
  }
  if (parsed === null || typeof parsed !== "object" || !Array.isArray((parsed as RunJson).steps)) {
    throw new UserError(`${path}: expected an object with a "steps" array; fix or move the file away (it only records history)`);
  }
  return parsed as RunJson;
}

/** Adds one entry to run.json (or replaces the one with the same id), atomically and under the lock. */
export async function appendRunEntry(runDir: string, entry: StepEntry): Promise<void> {
  await mkdir(runDir, { recursive: true });
  await withLock(join(runDir, "run.json.lock"), async () => {
    const run = await readRunJson(runDir);
    const at = entry.id === undefined ? -1 : run.steps.findIndex((s) => s.id === entry.id);
    if (at >= 0) run.steps[at] = entry;
    else run.steps.push(entry);
    await writeJsonAtomic(join(runDir, "run.json"), run);
  });
}

/**
 * Runs one step and records it in `<runDir>/run.json`: options, start/finish times, duration,
 * versions and status ("running" until it ends). A failure is recorded with its message and
 * rethrown. Before the step runs, temp files that killed writers left in the run directory are
 * removed.
 */
export async function recordStep<T>(
  runDir: string,
  step: string,
  options: object,
  fn: () => Promise<T> | T,
): Promise<T> {
  const started = new Date();
  const t0 = performance.now();
  const versions = await stepVersions();
  const base = {
    step, options: jsonSafe(options), startedAt: started.toISOString(), versions,
    id: randomBytes(6).toString("hex"), pid: process.pid, host: hostname(), hostTag: HOST_TAG,
  };
  cleanOrphanTemps(runDir);
  await appendRunEntry(runDir, { ...base, status: "running" });
  const finish = async (status: "ok" | "failed", error?: unknown) => {
    const entry: StepEntry = {
      ...base,
      finishedAt: new Date().toISOString(),
      seconds: Math.round((performance.now() - t0) / 10) / 100,
      status,
    };
    if (error !== undefined) entry.error = error instanceof Error ? error.message : String(error);
    await appendRunEntry(runDir, entry);
  };
  let result: T;
  try {
    result = await fn();
  } catch (err) {
    try {
      await finish("failed", err);
    } catch (logErr) {
      process.stderr.write(`warning: could not record the failed step in run.json: ${(logErr as Error).message}\n`);
    }
    throw err;
  }
  await finish("ok");
  return result;
}
