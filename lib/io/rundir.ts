// The run directory layout (DESIGN.md section 4), safe ids, paths from manifests, and sharding.
//
//   prompts.jsonl, references.jsonl + references/<id>.png, generations.jsonl +
//   generations/<id>-<k>.png, patch-scores.jsonl + patch-scores/<id>-<k>.safetensors +
//   heatmaps/<id>-<k>.png, train/ (train-log.jsonl, checkpoints/step-N/), eval/ (scores.jsonl,
//   summary.json, report.html), run.json.
//
// Paths stored in manifests are relative to the run directory, with forward slashes, so a run
// directory can be moved or copied between machines.

import { existsSync, statSync } from "node:fs";
import { isAbsolute, join, posix, relative, resolve, sep } from "node:path";
import { UsageError, UserError } from "./errors.ts";

/** Ids usable as file names as-is: [A-Za-z0-9._-], 1..100 chars, not starting with a dot. */
export const ID_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/;
export const MAX_ID_LENGTH = 100;

/**
 * Turns any string (a subject name, an LLM's output) into an id that is safe as a file name:
 * each run of other characters becomes "_", leading dots are dropped (no hidden files, no "." or
 * ".."), the result is cut to 100 characters. Throws when nothing is left. Different inputs can map
 * to the same id ("a/b", "a b"): callers that need uniqueness check for collisions.
 */
export function sanitizeId(s: string): string {
  const id = s
    .normalize("NFKC")
    .replace(/[^A-Za-z0-9._-]+/g, "_")
    .replace(/^\.+/, "")
    .slice(0, MAX_ID_LENGTH);
  // Nothing but replacement underscores (e.g. "///" or "日本") carries no name; a literal "_" does.
  if (id === "" || (/^_+$/.test(id) && !/^_+$/.test(s))) {
    throw new UserError(`cannot make a file-name id from ${JSON.stringify(s)}: nothing usable is left after keeping only [A-Za-z0-9._-]`);
  }
  return id;
}

/** True when `s` is already a safe id (sanitizeId would return it unchanged). */
export function isSafeId(s: string): boolean {
  return ID_PATTERN.test(s);
}

function checkId(id: string): string {
  if (!isSafeId(id)) {
    throw new UserError(`unsafe id ${JSON.stringify(id)}: ids used in file names may only contain [A-Za-z0-9._-] (max 100, no leading dot); pass it through sanitizeId first`);
  }
  return id;
}

function checkK(k: number): number {
  if (!Number.isSafeInteger(k) || k < 0) throw new UserError(`generation index k must be a non-negative integer (got ${k})`);
  return k;
}

/** The layout, relative to the run directory (forward slashes, as stored in manifests). */
export const RUN_LAYOUT = {
  prompts: "prompts.jsonl",
  references: "references.jsonl",
  referencesDir: "references",
  generations: "generations.jsonl",
  generationsDir: "generations",
  patchScores: "patch-scores.jsonl",
  patchScoresDir: "patch-scores",
  heatmapsDir: "heatmaps",
  trainDir: "train",
  trainLog: "train/train-log.jsonl",
  checkpointsDir: "train/checkpoints",
  evalDir: "eval",
  evalScores: "eval/scores.jsonl",
  evalSummary: "eval/summary.json",
  evalReport: "eval/report.html",
  runJson: "run.json",
} as const;

/** Relative paths of per-item files, as stored in manifests. Ids must already be safe. */
export const relPaths = {
  referenceImage: (id: string) => `${RUN_LAYOUT.referencesDir}/${checkId(id)}.png`,
  generationImage: (id: string, k: number) => `${RUN_LAYOUT.generationsDir}/${checkId(id)}-${checkK(k)}.png`,
  patchScoreFile: (id: string, k: number) => `${RUN_LAYOUT.patchScoresDir}/${checkId(id)}-${checkK(k)}.safetensors`,
  heatmap: (id: string, k: number) => `${RUN_LAYOUT.heatmapsDir}/${checkId(id)}-${checkK(k)}.png`,
  checkpoint: (step: number) => `${RUN_LAYOUT.checkpointsDir}/step-${checkK(step)}`,
};

type LayoutPaths = { -readonly [K in keyof typeof RUN_LAYOUT]: string };

export interface RunPaths extends LayoutPaths {
  /** The run directory itself (absolute). */
  root: string;
  referenceImage(id: string): string;
  generationImage(id: string, k: number): string;
  patchScoreFile(id: string, k: number): string;
  heatmap(id: string, k: number): string;
  checkpoint(step: number): string;
  /** Absolute path of a manifest-relative path, refusing paths that leave the run directory. */
  resolve(rel: string): string;
}

/** Absolute paths of every manifest and folder of a run directory. Creates nothing. */
export function runPaths(runDir: string): RunPaths {
  const root = resolve(runDir);
  const abs = (rel: string) => join(root, ...rel.split("/"));
  const layout = Object.fromEntries(Object.entries(RUN_LAYOUT).map(([k, rel]) => [k, abs(rel)])) as LayoutPaths;
  return {
    ...layout,
    root,
    referenceImage: (id) => abs(relPaths.referenceImage(id)),
    generationImage: (id, k) => abs(relPaths.generationImage(id, k)),
    patchScoreFile: (id, k) => abs(relPaths.patchScoreFile(id, k)),
    heatmap: (id, k) => abs(relPaths.heatmap(id, k)),
    checkpoint: (step) => abs(relPaths.checkpoint(step)),
    resolve: (rel) => resolveInside(root, rel),
  };
}

/**
 * The run directory a step reads from, which must exist: a typo in --run is an error here, not a
 * new empty run directory with a run.json in it. (synthesize-prompts is the step that creates runs.)
 */
export function existingRunDir(run: string): string {
  const root = resolve(run);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new UserError(`run directory ${root} does not exist: check --run (a run starts with synthesize-prompts --run ${run})`);
  }
  return root;
}

/**
 * A path to record in a run's settings or checkpoints: relative to `base` (POSIX separators) when
 * it lies inside it, so a copied or moved run folder still names its own files; absolute otherwise.
 */
export function portablePath(base: string, path: string): string {
  const r = relative(resolve(base), resolve(path));
  if (r === "") return ".";
  if (r === ".." || r.startsWith(`..${sep}`) || isAbsolute(r)) return resolve(path);
  return r.split(sep).join("/");
}

/** The inverse of portablePath: an absolute path. */
export function fromPortablePath(base: string, recorded: string): string {
  return isAbsolute(recorded) ? recorded : resolve(base, recorded);
}

/**
 * Resolves `rel` (a path read from a manifest) against `root` and throws a UserError when it is
 * absolute, contains a NUL byte, or climbs out of root with "..". The check is lexical: a symlink
 * inside root that points elsewhere is the run owner's own choice and is followed.
 */
export function resolveInside(root: string, rel: string): string {
  const refuse = (why: string): never => {
    throw new UserError(`path ${JSON.stringify(rel)} from a manifest ${why}; manifest paths must be relative and stay inside ${root}`);
  };
  if (typeof rel !== "string" || rel === "") refuse("is empty");
  if (rel.includes("\0")) refuse("contains a NUL byte");
  if (isAbsolute(rel) || posix.isAbsolute(rel) || /^[A-Za-z]:[\\/]/.test(rel)) refuse("is absolute");
  const base = resolve(root);
  const full = resolve(base, rel);
  const r = relative(base, full);
  if (r === ".." || r.startsWith(`..${sep}`) || isAbsolute(r)) refuse("escapes the directory");
  return full;
}

// ---------------------------------------------------------------------------------------------
// Sharding: `--shard i/n` (0-based i) splits items across array jobs by a stable hash of their id.

export interface Shard {
  index: number;
  count: number;
}

/** Parses "i/n" (0 <= i < n, as Kubernetes indexed Jobs and `--array=0-(n-1)` number them). */
export function parseShard(s: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(s);
  if (!m) throw new UsageError(`--shard ${JSON.stringify(s)}: expected i/n, e.g. 0/4 (shard i of n, counting from 0)`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (!Number.isSafeInteger(count) || count < 1) throw new UsageError(`--shard ${s}: the shard count n must be at least 1`);
  if (!Number.isSafeInteger(index) || index >= count) {
    throw new UsageError(`--shard ${s}: the index counts from 0, so it must be below ${count} (0/${count} .. ${count - 1}/${count})`);
  }
  return { index, count };
}

/** FNV-1a over UTF-8 bytes, then murmur3's finalizer so that low bits (used by `%`) are well mixed. */
export function stableHash(key: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(key)) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Whether the item with this id belongs to the shard. Shards are disjoint and cover every id. */
export function inShard(key: string, shard: Shard | undefined): boolean {
  if (!shard || shard.count === 1) return true;
  return stableHash(key) % shard.count === shard.index;
}

/** The per-shard file of a manifest: `generations.jsonl` -> `generations.shard-1-of-4.jsonl`. */
export function shardPath(path: string, shard: Shard): string {
  const tag = `shard-${shard.index}-of-${shard.count}`;
  const m = /^(.*?)(\.[^./\\]+)?$/.exec(path)!;
  return `${m[1]}.${tag}${m[2] ?? ""}`;
}
