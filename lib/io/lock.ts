// One writer per output: a lock file beside a manifest while a step appends to it, so the same
// shard started twice (a Slurm requeue while the first job still runs, a second terminal) is
// refused instead of appending duplicate rows. The lock names its holder (pid, host); a lock whose
// process is gone (kill -9) is taken over. A holder on another machine of a shared filesystem
// cannot be probed, so it refreshes the lock's time stamp and counts as gone only when that stalls.

import { mkdirSync, readFileSync, rmSync, utimesSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { HOST_TAG, pidAlive } from "./atomic.ts";
import { UserError } from "./errors.ts";

const REFRESH_MS = 30_000;
/** A lock of another host whose time stamp has not moved for this long is presumed abandoned. */
const FOREIGN_STALE_MS = 5 * 60_000;

interface Holder {
  pid: number;
  host: string;
  hostTag: string;
  what: string;
  since: string;
}

export interface Lock {
  path: string;
  release(): void;
}

function readHolder(path: string): Holder | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Holder;
  } catch {
    return undefined; // being written, or damaged: judged by its age below
  }
}

/**
 * Takes `path` (e.g. `generations.shard-0-of-2.jsonl.lock`) for `what` (e.g. "generate-images
 * shard 0/2"), or throws a UserError naming the running holder and what to do. Release it with
 * `lock.release()` (also when the step fails).
 */
export async function acquireLock(path: string, what: string): Promise<Lock> {
  mkdirSync(dirname(path), { recursive: true });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, "wx");
      const me: Holder = { pid: process.pid, host: hostname(), hostTag: HOST_TAG, what, since: new Date().toISOString() };
      await fh.write(`${JSON.stringify(me)}\n`);
      await fh.close();
      const timer = setInterval(() => {
        try {
          const now = new Date();
          utimesSync(path, now, now);
        } catch {
          /* removed under us: release() will find nothing to remove */
        }
      }, REFRESH_MS);
      timer.unref?.();
      return {
        path,
        release() {
          clearInterval(timer);
          if (readHolder(path)?.pid === process.pid && readHolder(path)?.hostTag === HOST_TAG) rmSync(path, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const h = readHolder(path);
    let age = 0;
    try {
      age = Date.now() - (await stat(path)).mtimeMs;
    } catch {
      continue; // released meanwhile: try again
    }
    const gone = h && h.hostTag === HOST_TAG ? !pidAlive(h.pid) : age > FOREIGN_STALE_MS;
    if (!gone) {
      const who = h ? `pid ${h.pid} on ${h.host}, since ${h.since}` : "a process that is still writing the lock";
      throw new UserError(
        `${h?.what ?? what} is already running (${who}): two writers would append the same rows twice. ` +
          `Wait for it to finish; if it is not running any more, delete ${path}`,
      );
    }
    rmSync(path, { force: true }); // the holder was killed: take over
  }
  throw new UserError(`${path}: could not take the lock (other processes keep taking it); is the same step starting many times at once?`);
}

/** Runs `fn` holding the lock at `path`. */
export async function withLockFile<T>(path: string, what: string, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(path, what);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
