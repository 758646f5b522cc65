// All-reduce cost of data-parallel training (issue 15): how long averaging one step's gradients
// over MPI takes for IP-Adapter-Plus-SDXL-sized gradients, with 2 ranks on this machine.
//
//   bun bench/allreduce.ts                 launches mpirun -np 2 itself, once per Open MPI setting
//   bun bench/allreduce.ts --sizes 1e6,1e7 other element counts (default: 1M, 10M, and the two SDXL sizes)
//   bun bench/allreduce.ts --rounds 3 --variants default,ring,nocma
//
// Sizes from the release layout (lib/models: unetParamShapes of the SDXL UNet config with the IP
// projections, imageProjParamShapes of IP-Adapter-Plus SDXL): --train ip trains every to_k_ip /
// to_v_ip (140 tensors), --train ip+proj also the Resampler (51 tensors more).
// Per size: one warm-up, then --rounds rounds (default 3); the median and the best of
// MPI_Allreduce alone, and the median of lib/dist's allReduceMean (which also waits for every rank
// without spinning and scales by 1/size). Settings: Open MPI's own choice of algorithm, the ring
// algorithm forced (coll_tuned_allreduce_algorithm 4), and single-copy (CMA) transfers off.
// Bus bandwidth as NCCL reports it: 2 (n-1)/n x bytes / time (what each rank sends in a ring).

import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { allReduceMean, barrier, world } from "../lib/dist/index.ts";
import { Mpi } from "../lib/dist/mpi.ts";
import { IP_ADAPTER_PLUS_SDXL, imageProjParamShapes } from "../lib/models/ip-adapter.ts";
import { unetConfigFromJson, unetParamShapes } from "../lib/models/unet.ts";

const REPO = join(import.meta.dir, "..");
const count = (m: Map<string, number[]>, keep: (k: string) => boolean = () => true) => [...m].filter(([k]) => keep(k)).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0);

/** Trainable values of IP-Adapter-Plus SDXL: the decoupled cross-attention projections, and the Resampler. */
export function sdxlIpSizes(): { ip: number; proj: number } {
  const cfg = unetConfigFromJson(JSON.parse(readFileSync(join(REPO, "tests/fixtures/diffusers/sdxl-unet.config.json"), "utf8")));
  return { ip: count(unetParamShapes(cfg, { ipAdapter: true }), (k) => k.includes("_ip.")), proj: count(imageProjParamShapes(IP_ADAPTER_PLUS_SDXL)) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const arg = (name: string) => {
  const i = Bun.argv.indexOf(name);
  return i < 0 ? undefined : Bun.argv[i + 1];
};

async function worker(sizes: number[], rounds: number): Promise<void> {
  const w = world();
  const mpi = new Mpi(); // MPI is already initialized by world(): this is a second handle set for the raw call
  for (const n of sizes) {
    const buf = new Float32Array(n).fill(w.rank + 1);
    const raw: number[] = [], mean: number[] = [];
    for (let r = 0; r <= rounds; r++) {
      mpi.barrier();
      let t = performance.now();
      mpi.allReduceSum(buf);
      if (r > 0) raw.push(performance.now() - t);
      await barrier();
      t = performance.now();
      await allReduceMean(buf);
      if (r > 0) mean.push(performance.now() - t);
    }
    if (w.rank === 0) {
      const ms = median(raw);
      const busGBs = (2 * (w.size - 1) / w.size) * n * 4 / (ms / 1000) / 1e9;
      const best = Math.min(...raw);
      console.log(JSON.stringify({
        values: n, mb: Math.round(n * 4 / 1e6), allreduceMs: +ms.toFixed(1), bestMs: +best.toFixed(1), allReduceMeanMs: +median(mean).toFixed(1),
        busGBs: +busGBs.toFixed(3), bestBusGBs: +((2 * (w.size - 1) / w.size) * n * 4 / (best / 1000) / 1e9).toFixed(3), rounds: raw.length,
        load: +loadavg()[0]!.toFixed(1),
      }));
    }
  }
}

const VARIANTS: Record<string, { label: string; mca: string[] }> = {
  default: { label: "Open MPI's choice of algorithm", mca: [] },
  ring: { label: "ring forced", mca: ["--mca", "coll_tuned_use_dynamic_rules", "1", "--mca", "coll_tuned_allreduce_algorithm", "4"] },
  nocma: { label: "single copy (CMA) off", mca: ["--mca", "btl_vader_single_copy_mechanism", "none"] },
};

async function launch(sizes: number[], rounds: number, variants: string[]): Promise<void> {
  const mpirun = Bun.which("mpirun");
  if (!mpirun) throw new Error("mpirun is absent: apt-get install -y --no-install-recommends openmpi-bin libopenmpi-dev");
  const s = sdxlIpSizes();
  console.log(`IP-Adapter-Plus SDXL: to_k_ip/to_v_ip ${s.ip} values (${(s.ip * 4 / 1e9).toFixed(2)} GB fp32), Resampler ${s.proj} (${(s.proj * 4 / 1e9).toFixed(2)} GB); ${navigator.hardwareConcurrency} cores`);
  const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1" };
  for (const v of variants) {
    const { label, mca } = VARIANTS[v]!;
    console.log(`# mpirun -np 2 --mca btl self,vader ${mca.join(" ")}`.trim() + ` (${label})`);
    const p = Bun.spawn([mpirun, "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader", ...mca, "-np", "2", process.execPath, import.meta.path, "--worker", "--sizes", sizes.join(","), "--rounds", String(rounds)], { env, stdout: "inherit", stderr: "inherit" });
    if ((await p.exited) !== 0) throw new Error(`mpirun exited with ${p.exitCode}`);
  }
}

if (import.meta.main) {
  const s = sdxlIpSizes();
  const sizes = (arg("--sizes") ?? `1e6,1e7,${s.ip},${s.ip + s.proj}`).split(",").map(Number);
  const rounds = Number(arg("--rounds") ?? 3);
  if (Bun.argv.includes("--worker")) await worker(sizes, rounds);
  else await launch(sizes, rounds, (arg("--variants") ?? "default,ring,nocma").split(","));
}
