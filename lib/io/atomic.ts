// Atomic file replacement: write a temp file beside the target, fsync it, rename it over the
// target. A reader (or a rerun after a crash or kill) sees either the old file or the complete new
// one, never a torn mix. A killed writer leaves at most a `<base>.tmp-<pid>-<rand>` file behind
// (git-ignored by the `*.tmp-*` pattern); the target is untouched.

import { createHash, randomBytes } from "node:crypto";
import { readdirSync, rmSync, statSync } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import { faultPoint } from "./fault.ts";

/**
 * What writeFileAtomic accepts: a string (written as UTF-8), bytes, or a (possibly async) sequence
 * of byte chunks, so large files (checkpoints, safetensors) stream to disk without being
 * concatenated in memory first.
 */
export type AtomicData =
  | string
  | Uint8Array
  | Iterable<Uint8Array>
  | AsyncIterable<Uint8Array>;

/** This machine in 8 hex digits: a temp file's pid means something only on the host that wrote it. */
export const HOST_TAG = createHash("sha256").update(hostname()).digest("hex").slice(0, 8);

/** The temp file name used for `path`: same directory, `<base>.tmp-<pid>-<host>-<rand>`. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `${basename(path)}.tmp-${process.pid}-${HOST_TAG}-${randomBytes(4).toString("hex")}`);
}

/** Whether a process with this pid runs on this machine (a zombie or another user's counts as running). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A temp file of another machine (shared filesystem) is presumed orphaned only after this long. */
const FOREIGN_TEMP_AGE_MS = 60 * 60_000;

/**
 * Removes temp files that killed writers left in `dir` and its subfolders (down to `depth`
 * levels): ours when their pid no longer runs here, another machine's (or an older format's)
 * when untouched for an hour, since a shared filesystem can hold live writes of other hosts.
 * Returns the paths removed.
 */
export function cleanOrphanTemps(dir: string, depth = 3): string[] {
  const removed: string[] = [];
  const walk = (d: string, left: number) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        if (left > 0) walk(p, left - 1);
        continue;
      }
      const m = /\.tmp-(\d+)-(?:([0-9a-f]{8})-)?[0-9a-f]{8}$/.exec(e.name);
      if (!m) continue;
      let orphan: boolean;
      if (m[2] === HOST_TAG) orphan = !pidAlive(Number(m[1]));
      else {
        try {
          orphan = Date.now() - statSync(p).mtimeMs > FOREIGN_TEMP_AGE_MS;
        } catch {
          orphan = false;
        }
      }
      if (orphan) {
        rmSync(p, { force: true });
        removed.push(p);
      }
    }
  };
  walk(dir, depth);
  return removed;
}

async function* chunksOf(data: AtomicData): AsyncGenerator<Uint8Array> {
  if (typeof data === "string") yield Buffer.from(data, "utf8");
  else if (data instanceof Uint8Array) yield data;
  else yield* data;
}

/**
 * Replaces `path` atomically with `data`: writes `<base>.tmp-<pid>-<rand>` in the same directory
 * (same filesystem, so the rename is atomic), fsyncs it, renames it over `path`, then fsyncs the
 * directory so the rename itself survives a power loss. Creates missing parent directories.
 * Keeps the permission bits of a file it replaces. On any failure the temp file is removed and
 * `path` is left as it was.
 */
export async function writeFileAtomic(path: string, data: AtomicData): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  let mode: number | undefined;
  try {
    mode = (await stat(path)).mode & 0o7777;
  } catch {
    mode = undefined; // a new file: default mode (0666 minus umask)
  }
  const tmp = tempPathFor(path);
  const fh = await open(tmp, "wx", mode);
  let closed = false;
  try {
    for await (const chunk of chunksOf(data)) {
      let off = 0;
      while (off < chunk.byteLength) {
        const { bytesWritten } = await fh.write(chunk, off, chunk.byteLength - off);
        off += bytesWritten;
      }
    }
    await fh.sync();
    await fh.close();
    closed = true;
    faultPoint(`replace ${basename(path)}`);
    await rename(tmp, path);
  } catch (err) {
    if (!closed) await fh.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    throw err;
  }
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  // Not all platforms can fsync a directory (Windows cannot open one); the rename already happened.
  try {
    const dh = await open(dir, "r");
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    /* best effort */
  }
}

/** Writes `value` as pretty JSON (2-space indent) with a trailing newline, atomically. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) throw new TypeError(`writeJsonAtomic(${path}): value is not JSON-serializable`);
  await writeFileAtomic(path, `${text}\n`);
}
