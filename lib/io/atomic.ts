// Atomic file replacement: write a temp file beside the target, fsync it, rename it over the
// target. A reader (or a rerun after a crash or kill) sees either the old file or the complete new
// one, never a torn mix. A killed writer leaves at most a `<base>.tmp-<pid>-<rand>` file behind
// (git-ignored by the `*.tmp-*` pattern); the target is untouched.

import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

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

/** The temp file name used for `path`: same directory, `<base>.tmp-<pid>-<rand>`. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
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
