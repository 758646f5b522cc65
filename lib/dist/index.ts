// Data parallelism past one process: which rank this is, and the three collectives training needs
// (mean of gradients, broadcast, barrier), over Open MPI (mpi.ts). Launched alone, or by a launcher
// with one process, this is a world of size 1 and every call returns at once without loading
// libmpi, so a script calls these unconditionally.
//
//   mpirun -np 2 bun scripts/dpo-epoch.ts ...        (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
//   srun --mpi=pmix -n 8 bun scripts/dpo-epoch.ts ...

import { UserError } from "../io/errors.ts";
import { type Launch, launchFromEnv } from "./launcher.ts";
import { Mpi } from "./mpi.ts";

export { launchFromEnv, type Launch } from "./launcher.ts";

export interface World {
  rank: number;
  size: number;
  /** Rank among this node's processes (one device each). */
  localRank: number;
  launcher: Launch["launcher"] | null;
}

let state: { world: World; mpi?: Mpi } | undefined;

/**
 * This process's place in the job. The first call under a launcher with more than one process
 * starts MPI (MPI_Init), and ends it when the process exits: MPI_Finalize on exit code 0,
 * MPI_Abort otherwise, so one failing rank ends the job instead of leaving the others blocked.
 */
export function world(): World {
  if (state) return state.world;
  const launch = launchFromEnv();
  if (!launch || launch.size === 1) {
    state = { world: { rank: 0, size: 1, localRank: 0, launcher: launch?.launcher ?? null } };
    return state.world;
  }
  const mpi = new Mpi();
  process.on("exit", (code) => mpi.end(code));
  if (launch.size !== undefined && (mpi.size !== launch.size || mpi.rank !== launch.rank)) {
    throw new UserError(
      `the launcher (${launch.launcher}) started this process as rank ${launch.rank} of ${launch.size}, but Open MPI sees rank ${mpi.rank} of ${mpi.size}: ` +
        "libmpi did not join the launcher's job. Under Slurm launch with srun --mpi=pmix (srun --mpi=list shows what this cluster has), or use Open MPI's own mpirun.",
    );
  }
  state = { world: { rank: mpi.rank, size: mpi.size, localRank: launch.localRank, launcher: launch.launcher }, mpi };
  return state.world;
}

/** True when libmpi is loaded (a world of more than one process). */
export const mpiStarted = (): boolean => !!state?.mpi;

/** Averages `buf` over all ranks, in place (sum by MPI_Allreduce, then x 1/size on every rank alike). */
export async function allReduceMean(buf: Float32Array): Promise<void> {
  world();
  const mpi = state!.mpi;
  if (!mpi || buf.length === 0) return;
  await mpi.arrive();
  mpi.allReduceSum(buf);
  const inv = 1 / mpi.size;
  for (let i = 0; i < buf.length; i++) buf[i]! *= inv;
}

/** Rank `root`'s contents of `buf` into every rank's `buf` (any typed array; in place). */
export async function broadcast<T extends ArrayBufferView>(buf: T, root = 0): Promise<T> {
  world();
  const mpi = state!.mpi;
  if (!mpi || buf.byteLength === 0) return buf;
  await mpi.arrive();
  mpi.broadcastBytes(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), root);
  return buf;
}

/** Returns when every rank has called it (waiting without spinning a core). */
export async function barrier(): Promise<void> {
  world();
  await state!.mpi?.arrive();
}

let flat: Float32Array | undefined;

/**
 * The data-parallel step's one collective: every gradient (in sorted name order, the same on every
 * rank) and the logged scalars packed into one buffer, averaged over ranks, and written back in
 * place. Returns the averaged scalars. A NaN on any rank reaches every rank, so all of them skip
 * the same steps.
 */
export async function allReduceMeanGrads(grads: Map<string, Float32Array>, scalars: Record<string, number>): Promise<Record<string, number>> {
  if (world().size === 1) return scalars;
  const names = [...grads.keys()].sort();
  const keys = Object.keys(scalars).sort();
  const total = names.reduce((n, k) => n + grads.get(k)!.length, keys.length);
  if (!flat || flat.length !== total) flat = new Float32Array(total); // kept: a step's gradients are the same size every step
  let off = 0;
  for (const k of names) {
    flat.set(grads.get(k)!, off);
    off += grads.get(k)!.length;
  }
  keys.forEach((k, i) => (flat![off + i] = scalars[k]!));
  await allReduceMean(flat);
  off = 0;
  for (const k of names) {
    const g = grads.get(k)!;
    g.set(flat.subarray(off, off + g.length));
    off += g.length;
  }
  return Object.fromEntries(keys.map((k, i) => [k, flat![off + i]!]));
}

/**
 * The units [start, end) of `total` (micro-batches of a step) that this rank takes: contiguous
 * equal blocks, rank 0 first. Throws when the world size does not divide `total`.
 */
export function shareOf(total: number, w: Pick<World, "rank" | "size"> = world()): { start: number; end: number } {
  if (total % w.size !== 0) throw new Error(`${total} units cannot be split evenly over ${w.size} ranks`);
  const per = total / w.size;
  return { start: w.rank * per, end: (w.rank + 1) * per };
}

/**
 * Throws on every rank unless all ranks hold bit-identical `arrays` (a hash of their bytes is
 * broadcast from rank 0 and compared). Data parallelism relies on every rank applying the same
 * update; this checks it where it matters (before a checkpoint).
 */
export async function checkSame(what: string, arrays: Iterable<ArrayBufferView>): Promise<void> {
  if (world().size === 1) return;
  let h = 0n;
  for (const a of arrays) h = Bun.hash.wyhash(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), h);
  const mine = new BigUint64Array([h]);
  const root = await broadcast(new BigUint64Array([h]), 0);
  const same = new Float32Array([root[0] === mine[0] ? 0 : 1]);
  await allReduceMean(same);
  if (same[0] !== 0) throw new Error(`${what} differ between ranks (rank ${world().rank}'s hash ${mine[0]!.toString(16)}, rank 0's ${root[0]!.toString(16)}): the ranks diverged`);
}
