// Benchmark runner (DESIGN.md section 7): runs ours (bench/<name>.ts, Bun) and the PyTorch
// reference (bench/<name>.py, /usr/bin/python3) alternately for several rounds, takes medians,
// appends the result with the exact command to bench/RESULTS.md, and prints as its last line
//   ratio <name> speed=<reference time / our time> memory=<our peak RSS / reference peak RSS>
// Each side prints one JSON line {"seconds": median per iteration, "peakRssMB": ..., ...}.
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { median } from "./timing.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { rounds: { type: "string", default: "3" }, threads: { type: "string", default: "2" }, iters: { type: "string", default: "5" }, "no-record": { type: "boolean", default: false },
    // Extra flags for our side only (e.g. --ours="--recompute" for dpo-step); recorded in the command.
    ours: { type: "string", default: "" } },
});
const name = positionals[0];
if (!name || !existsSync(`bench/${name}.ts`) || !existsSync(`bench/${name}.py`)) {
  console.error(`usage: bun bench/run.ts <name> [--rounds 3] [--threads 2] [--iters 5]\n  needs bench/<name>.ts and bench/<name>.py`);
  process.exit(2);
}
const python = "/usr/bin/python3";
if (!existsSync(python) || Bun.spawnSync([python, "-c", "import torch, torchvision"]).exitCode !== 0) {
  console.error(`bench: ${python} with torch and torchvision is needed for the reference. Install them with:\n  apt-get install -y --no-install-recommends python3-torch python3-torchvision libopenblas0-pthread`);
  process.exit(1);
}

const threads = values.threads!;
const args = ["--threads", threads, "--iters", values.iters!];
// Give PyTorch its best settings: same thread count, no spinning idle threads.
const env = { ...process.env, OMP_NUM_THREADS: threads, OMP_WAIT_POLICY: "PASSIVE", OPENBLAS_NUM_THREADS: threads };
type Result = { seconds: number; peakRssMB: number; gflops?: number; [k: string]: unknown };

function runSide(cmd: string[]): Result {
  const p = Bun.spawnSync(cmd, { env, stdout: "pipe", stderr: "pipe" });
  const out = p.stdout.toString().trim().split("\n").pop() ?? "";
  if (p.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${p.exitCode}):\n${p.stderr.toString().slice(-2000)}`);
  try {
    return JSON.parse(out) as Result;
  } catch {
    throw new Error(`${cmd.join(" ")} did not print a JSON result line; got: ${out.slice(0, 300)}`);
  }
}

const ours: Result[] = [];
const ref: Result[] = [];
for (let r = 0; r < Number(values.rounds); r++) {
  ours.push(runSide(["bun", `bench/${name}.ts`, ...args, ...values.ours!.split(" ").filter(Boolean)]));
  ref.push(runSide([python, `bench/${name}.py`, ...args]));
  console.log(`round ${r + 1}: ours ${ours.at(-1)!.seconds.toFixed(4)} s, pytorch ${ref.at(-1)!.seconds.toFixed(4)} s`);
  for (const [who, x] of [["ours", ours.at(-1)!], ["pytorch", ref.at(-1)!]] as const) {
    const extra = Object.entries(x).filter(([k]) => k !== "seconds" && k !== "peakRssMB" && k !== "gflops");
    if (extra.length) console.log(`  ${who}: ${extra.map(([k, v]) => `${k}=${typeof v === "number" ? v.toPrecision(5) : v}`).join(" ")}`);
  }
}
const oursS = median(ours.map((x) => x.seconds));
const refS = median(ref.map((x) => x.seconds));
const oursMem = median(ours.map((x) => x.peakRssMB));
const refMem = median(ref.map((x) => x.peakRssMB));
const speed = refS / oursS;
const memory = oursMem / refMem;
const gflops = ours[0]!.gflops;
const cpu = cpus()[0]?.model ?? "unknown CPU";
const oursFlags = values.ours ? ` --ours="${values.ours}"` : "";
const command = `${oursFlags ? "" : `make bench-${name}  # = `}bun bench/run.ts ${name} --rounds ${values.rounds} --threads ${threads} --iters ${values.iters}${oursFlags}`;
// Extra numeric fields both sides report (e.g. dpo-step's mseSeconds), as medians.
const both = Object.keys(ours[0]!).filter((k) => !["seconds", "peakRssMB", "gflops"].includes(k) && !/^(fwd|bwd)(Gflop|Seconds)$/.test(k) && typeof ours[0]![k] === "number" && typeof ref[0]![k] === "number" && !/loss/i.test(k));
const extras = both.map((k) => `${k} ours ${median(ours.map((x) => x[k] as number)).toPrecision(4)} / ref ${median(ref.map((x) => x[k] as number)).toPrecision(4)}`);
const oursOnly = Object.keys(ours[0]!).filter((k) => /share/i.test(k) && typeof ours[0]![k] === "number").map((k) => `ours ${k} ${median(ours.map((x) => x[k] as number)).toFixed(3)}`);
const load = `load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`;
// Effective GFLOP/s of our forward and backward graphs apart (bench/flops.ts: fwdGflop / bwdGflop
// counted from the graph, fwdSeconds / bwdSeconds measured by the bench; see each bench for how).
const part = (p: "fwd" | "bwd") => {
  const gf = ours[0]![`${p}Gflop`], secs = ours.map((x) => x[`${p}Seconds`]).filter((v): v is number => typeof v === "number");
  return typeof gf === "number" && secs.length ? `${p} ${(gf / median(secs)).toFixed(1)} GFLOP/s (${gf.toPrecision(4)} GFLOP in ${median(secs).toFixed(3)} s)` : undefined;
};
const parts = [part("fwd"), part("bwd")].filter(Boolean);
const util = (gflops ? ` | ours ${(gflops / oursS).toFixed(1)} GFLOP/s, PyTorch ${(gflops / refS).toFixed(1)} GFLOP/s` : "") + (parts.length ? `; ours ${parts.join(", ")}` : "");
const line = `| ${new Date().toISOString().slice(0, 16)} | ${name} | ${oursS.toFixed(4)} s | ${refS.toFixed(4)} s | **${speed.toFixed(2)}x** | ${oursMem.toFixed(0)} MB / ${refMem.toFixed(0)} MB = ${memory.toFixed(2)}${util} | ${threads} threads, ${cpus().length}x ${cpu}, ${load}${[...extras, ...oursOnly].map((e) => `; ${e}`).join("")} | \`${command}\` |\n`;
if (!values["no-record"]) {
  const path = "bench/RESULTS.md";
  if (!existsSync(path) || !readFileSync(path, "utf8").includes("| date |")) {
    appendFileSync(path, "\n| date | benchmark | ours (median) | PyTorch (median) | speed (ref/ours) | peak RSS ours / ref | setting | command |\n|---|---|---|---|---|---|---|---|\n");
  }
  appendFileSync(path, line);
}
for (const e of [...extras, ...oursOnly, ...parts, load]) console.log(e);
console.log(`ratio ${name} speed=${speed.toFixed(3)} memory=${memory.toFixed(3)}`);
