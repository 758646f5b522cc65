// One profiled run of an ONNX model with ONNX Runtime's profiler (enableProfiling) and a summary of
// where the time went: the top ops by total kernel time and the slowest nodes, printed on stderr.
// Used by the benches' --profile flags (sample-step, train-vit): the profiles quoted in
// bench/RESULTS.md come from these.
import { readdirSync, readFileSync, renameSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import * as ort from "onnxruntime-node";

/**
 * Runs `model` twice (a warm-up, then the profiled run) on the CPU at `threads` threads, level "all",
 * arena as given, writes the profile to `file` and prints its summary.
 */
export async function profileRun(model: Uint8Array, feeds: Record<string, ort.Tensor>, o: { file: string; threads: number; memArena?: boolean; weightsFolder?: string }): Promise<void> {
  const target = resolve(o.file);
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ["cpu"], graphOptimizationLevel: "all", intraOpNumThreads: o.threads, interOpNumThreads: 1, enableCpuMemArena: o.memArena ?? true,
    enableProfiling: true, profileFilePrefix: target.replace(/\.json$/, ""),
    ...(o.weightsFolder ? { extra: { session: { model_external_initializers_file_folder_path: o.weightsFolder } } } : {}),
  });
  await session.run(feeds); // warm-up (first-run allocations)
  const t0 = performance.now();
  await session.run(feeds);
  console.error(`profiled run: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  session.endProfiling(); // writes <prefix>_<timestamp>.json (the name is not returned in Node)
  await session.release();
  const prefix = basename(target).replace(/\.json$/, "") + "_";
  const file = readdirSync(dirname(target)).filter((f) => f.startsWith(prefix) && f.endsWith(".json")).sort().at(-1);
  if (!file) throw new Error(`no ORT profile ${prefix}*.json in ${dirname(target)}`);
  renameSync(join(dirname(target), file), target);
  summarizeProfile(target);
}

/** Top ops by total time in the last run of an ORT profile (node events only), on stderr. */
export function summarizeProfile(path: string): void {
  type Ev = { cat: string; name: string; dur: number; ts: number; args?: { op_name?: string; provider?: string } };
  const all = JSON.parse(readFileSync(path, "utf8")) as Ev[];
  const evs = all.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"));
  const last = all.filter((e) => e.cat === "Session" && e.name === "model_run").at(-1)!;
  const inLast = evs.filter((e) => e.ts >= last.ts && e.ts <= last.ts + last.dur);
  const byOp = new Map<string, { us: number; n: number }>();
  for (const e of inLast) {
    const op = e.args?.op_name ?? "?";
    const r = byOp.get(op) ?? { us: 0, n: 0 };
    r.us += e.dur;
    r.n++;
    byOp.set(op, r);
  }
  const total = [...byOp.values()].reduce((s, r) => s + r.us, 0);
  console.error(`model_run ${(last.dur / 1e6).toFixed(2)} s, kernels ${(total / 1e6).toFixed(2)} s; top ops:`);
  for (const [op, r] of [...byOp].sort((a, b) => b[1].us - a[1].us).slice(0, 15)) {
    console.error(`  ${op.padEnd(28)} ${(r.us / 1e6).toFixed(3).padStart(7)} s  ${((100 * r.us) / total).toFixed(1).padStart(5)}%  x${r.n}`);
  }
  const top = inLast.sort((a, b) => b.dur - a.dur).slice(0, 12);
  console.error("top nodes:");
  for (const e of top) console.error(`  ${(e.dur / 1e3).toFixed(1).padStart(8)} ms  ${e.args?.op_name}  ${e.name.replace(/_kernel_time$/, "")}`);
}
