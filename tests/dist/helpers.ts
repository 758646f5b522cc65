// Launching tests under Open MPI's mpirun on one machine (CI installs openmpi-bin; a machine
// without it skips these tests with a one-line reason).

export const MPIRUN = Bun.which("mpirun");
export const NO_MPIRUN = "mpirun is absent (apt-get install -y --no-install-recommends openmpi-bin libopenmpi-dev); skipping the multi-process tests";

/**
 * `mpirun -np <n>` as it works in a container: root needs the two ALLOW_RUN_AS_ROOT variables;
 * --oversubscribe allows more ranks than cores; --bind-to none leaves thread placement to the
 * OS (ONNX Runtime runs its own threads); only the shared-memory and self transports, with the
 * single-copy (CMA) mechanism off, since containers often forbid process_vm_readv.
 */
export function mpirun(np: number, args: string[]): string[] {
  return [MPIRUN!, "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none", "-np", String(np), ...args];
}

export const MPI_ENV: Record<string, string | undefined> = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1" };

/** Runs a command to the end (time-limited, so a deadlocked job fails the test instead of hanging it). */
export async function runJob(cmd: string[], timeoutMs = 120_000, env = MPI_ENV): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn(cmd, { env, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), timeoutMs);
  const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, stdout, stderr };
}
