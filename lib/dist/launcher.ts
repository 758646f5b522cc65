// Which process of a parallel job this is, from the environment the launcher set: Open MPI's
// mpirun, a PMI / PMIx process manager (MPICH's hydra, Slurm's srun --mpi=pmi2 / pmix), or Slurm's
// srun alone. Read before MPI starts, so a script launched by none of them never loads libmpi.

export interface Launch {
  rank: number;
  /** Processes in the job; undefined when the launcher names the rank only (PMIx): MPI tells. */
  size: number | undefined;
  /** Rank among the processes on this node (picks a GPU per process). */
  localRank: number;
  launcher: "openmpi" | "pmi" | "pmix" | "slurm";
}

const int = (v: string | undefined): number | undefined => {
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v);
};

/**
 * The launch this process belongs to, or undefined when it was started alone. Slurm's variables
 * count only inside a job step (SLURM_STEP_ID: what srun starts): a batch script itself also sees
 * SLURM_PROCID=0 and SLURM_NTASKS=<the allocation's tasks>, and is one process.
 */
export function launchFromEnv(env: Record<string, string | undefined> = process.env): Launch | undefined {
  const slurmLocal = int(env.SLURM_LOCALID);
  const ompiRank = int(env.OMPI_COMM_WORLD_RANK);
  if (ompiRank !== undefined) {
    return { rank: ompiRank, size: int(env.OMPI_COMM_WORLD_SIZE), localRank: int(env.OMPI_COMM_WORLD_LOCAL_RANK) ?? slurmLocal ?? 0, launcher: "openmpi" };
  }
  const inStep = env.SLURM_STEP_ID !== undefined || env.SLURM_STEPID !== undefined;
  const slurmSize = inStep ? int(env.SLURM_STEP_NUM_TASKS) ?? int(env.SLURM_NTASKS) ?? int(env.SLURM_NPROCS) : undefined;
  const pmiRank = int(env.PMI_RANK);
  if (pmiRank !== undefined) return { rank: pmiRank, size: int(env.PMI_SIZE) ?? slurmSize, localRank: int(env.MPI_LOCALRANKID) ?? slurmLocal ?? 0, launcher: "pmi" };
  const pmixRank = int(env.PMIX_RANK);
  if (pmixRank !== undefined) return { rank: pmixRank, size: slurmSize, localRank: slurmLocal ?? 0, launcher: "pmix" };
  const slurmRank = inStep ? int(env.SLURM_PROCID) : undefined;
  if (slurmRank !== undefined && slurmSize !== undefined) return { rank: slurmRank, size: slurmSize, localRank: slurmLocal ?? 0, launcher: "slurm" };
  return undefined;
}
