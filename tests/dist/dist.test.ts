// lib/dist: the launcher's environment read right; a world of one is a no-op that never loads
// libmpi; under mpirun -np 2 the collectives compute what they say, and one failing rank ends the
// whole job instead of leaving the other blocked (skipped with a line when mpirun is absent).

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { allReduceMean, allReduceMeanGrads, barrier, broadcast, checkSame, launchFromEnv, mpiStarted, shareOf, world } from "../../lib/dist/index.ts";
import { MPIRUN, MPI_ENV, NO_MPIRUN, mpirun, runJob } from "./helpers.ts";

setDefaultTimeout(120_000);

describe("launchFromEnv", () => {
  test("started alone: no launch", () => {
    expect(launchFromEnv({})).toBeUndefined();
    expect(launchFromEnv({ PATH: "/usr/bin", HOME: "/root" })).toBeUndefined();
  });
  test("Open MPI's mpirun", () => {
    expect(launchFromEnv({ OMPI_COMM_WORLD_RANK: "3", OMPI_COMM_WORLD_SIZE: "8", OMPI_COMM_WORLD_LOCAL_RANK: "1", PMIX_RANK: "3" }))
      .toEqual({ rank: 3, size: 8, localRank: 1, launcher: "openmpi" });
  });
  test("PMI (MPICH's hydra, srun --mpi=pmi2)", () => {
    expect(launchFromEnv({ PMI_RANK: "2", PMI_SIZE: "4", MPI_LOCALRANKID: "0" })).toEqual({ rank: 2, size: 4, localRank: 0, launcher: "pmi" });
  });
  test("PMIx names the rank only; the size comes from the Slurm step (or from MPI)", () => {
    expect(launchFromEnv({ PMIX_RANK: "5", SLURM_STEP_ID: "0", SLURM_STEP_NUM_TASKS: "16", SLURM_NTASKS: "32", SLURM_LOCALID: "1" }))
      .toEqual({ rank: 5, size: 16, localRank: 1, launcher: "pmix" });
    expect(launchFromEnv({ PMIX_RANK: "5" })).toEqual({ rank: 5, size: undefined, localRank: 0, launcher: "pmix" });
  });
  test("srun alone", () => {
    expect(launchFromEnv({ SLURM_STEP_ID: "2", SLURM_PROCID: "1", SLURM_NTASKS: "2", SLURM_LOCALID: "1" })).toEqual({ rank: 1, size: 2, localRank: 1, launcher: "slurm" });
  });
  test("a Slurm batch script itself (no job step) is one process, whatever SLURM_NTASKS says", () => {
    expect(launchFromEnv({ SLURM_JOB_ID: "77", SLURM_PROCID: "0", SLURM_NTASKS: "8" })).toBeUndefined();
  });
  test("malformed values are ignored", () => {
    expect(launchFromEnv({ OMPI_COMM_WORLD_RANK: "x", PMI_RANK: "" })).toBeUndefined();
  });
});

describe("a world of one process", () => {
  test("every call returns at once, changes nothing and loads no libmpi", async () => {
    expect(world()).toEqual({ rank: 0, size: 1, localRank: 0, launcher: null });
    const x = Float32Array.from([1, -2, 3]);
    await allReduceMean(x);
    expect([...x]).toEqual([1, -2, 3]);
    const b = await broadcast(Int32Array.from([4, 5]), 0);
    expect([...b]).toEqual([4, 5]);
    await barrier();
    const g = new Map([["w", Float32Array.from([0.5])]]);
    expect(await allReduceMeanGrads(g, { loss: 2 })).toEqual({ loss: 2 });
    expect([...g.get("w")!]).toEqual([0.5]);
    await checkSame("x", [x]);
    expect(shareOf(4)).toEqual({ start: 0, end: 4 });
    expect(mpiStarted()).toBe(false);
  });
  test("shareOf: contiguous equal blocks; an uneven split is refused", () => {
    expect([0, 1, 2].map((rank) => shareOf(6, { rank, size: 3 }))).toEqual([{ start: 0, end: 2 }, { start: 2, end: 4 }, { start: 4, end: 6 }]);
    expect(() => shareOf(3, { rank: 0, size: 2 })).toThrow("cannot be split evenly");
  });
});

if (!MPIRUN) console.log(`dist tests: ${NO_MPIRUN}`);

describe.skipIf(!MPIRUN)("under mpirun -np 2", () => {
  const WORKER = join(import.meta.dir, "mpi-worker.ts");
  test("all-reduce mean, broadcast, barrier, packed gradients, divergence check", async () => {
    const r = await runJob(mpirun(2, [process.execPath, WORKER]));
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).sort((a, b) => a.rank - b.rank);
    expect(rows.map((x) => x.rank)).toEqual([0, 1]);
    for (const x of rows) {
      expect(x.size).toBe(2);
      expect(x.launcher).toBe("openmpi");
      expect(x.first).toBe(1.5); // (1 + 2) / 2
      expect(x.seventh).toBe(3); // (10 - 4) / 2
      expect(x.broadcast).toEqual([100.5, 42]); // from the last rank
      expect(x.grads).toEqual({ a: [1.5], b: [0.5, 1] });
      expect(x.scalars).toEqual({ acc: 0.5, loss: 2 });
      expect(x.diverged).toContain("weights differ between ranks");
    }
    expect(rows[0].share).toEqual({ start: 0, end: 3 });
    expect(rows[1].share).toEqual({ start: 3, end: 6 });
  });
  test("a launch that libmpi does not join (srun without --mpi=pmix) is refused by name", async () => {
    const r = await runJob([process.execPath, WORKER], 60_000, { ...MPI_ENV, OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "2" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("started this process as rank 0 of 2, but Open MPI sees rank 0 of 1");
  });
  test("one rank failing ends the job with an error, not a hang", async () => {
    const r = await runJob(mpirun(2, [process.execPath, WORKER, "fail"]), 60_000);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain("after the all-reduce");
  });
});
