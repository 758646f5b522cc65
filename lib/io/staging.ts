// A forced rerun (`--force`) must not destroy the previous results until it has new ones. It
// writes everything into `<root>/.staging/<name>/` (the same relative layout as the real files),
// and only when it has succeeded does `commit` swap the staged files in:
//   1. it writes `.commit` (the list of old paths to delete) atomically: from here on the swap is
//      decided;
//   2. it deletes those paths, moves every staged file into place (the files listed in `last`
//      after all others: the manifest, then its settings), and removes the staging folder.
// A crash during 2 is rolled forward by the next `recover` of the same staging folder; a crash
// before 1 (the forced run failed or was killed) leaves the old results as they were, and the next
// run discards the half-made staging folder.

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { writeJsonAtomic } from "./atomic.ts";
import { faultPoint } from "./fault.ts";
import { resolveInside } from "./rundir.ts";

interface CommitPlan {
  delete: string[];
  last: string[];
}

export class Staging {
  /** The staging folder. */
  readonly dir: string;

  constructor(readonly root: string, name: string) {
    this.dir = join(root, ".staging", name);
  }

  /** Where a file that belongs at `<root>/<rel>` is written while staged. */
  path(rel: string): string {
    return resolveInside(this.dir, rel);
  }

  /**
   * Call before a step writes: finishes a decided swap a crash interrupted, or discards a forced
   * run that never finished (its staged files are not results). Returns what it did.
   */
  recover(): "none" | "rolled-forward" | "discarded" {
    if (!existsSync(this.dir)) return "none";
    if (existsSync(join(this.dir, ".commit"))) {
      this.finish();
      return "rolled-forward";
    }
    rmSync(this.dir, { recursive: true, force: true });
    return "discarded";
  }

  /** Starts a forced run: an empty staging folder. */
  begin(): void {
    this.recover();
    mkdirSync(this.dir, { recursive: true });
  }

  /**
   * Swaps the staged files in. `remove`: paths (relative to root) of old results to delete first
   * (e.g. checkpoints the new run does not write); `last`: staged paths to move after all others.
   */
  async commit(remove: string[] = [], last: string[] = []): Promise<void> {
    await writeJsonAtomic(join(this.dir, ".commit"), { delete: remove, last } satisfies CommitPlan);
    this.finish();
  }

  private finish(): void {
    const plan = JSON.parse(readFileSync(join(this.dir, ".commit"), "utf8")) as CommitPlan;
    for (const rel of plan.delete) rmSync(resolveInside(this.root, rel), { recursive: true, force: true });
    const files: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (p !== join(this.dir, ".commit")) files.push(relative(this.dir, p).split("\\").join("/"));
      }
    };
    walk(this.dir);
    const order = [...files.filter((f) => !plan.last.includes(f)).sort(), ...plan.last.filter((f) => files.includes(f))];
    for (const rel of order) {
      const to = resolveInside(this.root, rel);
      mkdirSync(dirname(to), { recursive: true });
      faultPoint(`commit ${rel}`);
      renameSync(join(this.dir, rel), to); // a rename replaces the old file atomically
    }
    rmSync(this.dir, { recursive: true, force: true });
    const parent = dirname(this.dir);
    if (existsSync(parent) && readdirSync(parent).length === 0) rmSync(parent, { recursive: true, force: true });
  }
}
