// The evaluation report: eval/report.html, one self-contained file (thumbnails inlined as base64
// JPEG, charts as inline SVG, no network): metric table (with the published DreamBench numbers when
// the protocol was DreamBench), before/after against another run, per-subject / per-prompt tables,
// training curves, a worst-first gallery and the prompt list. See lib/eval/report.ts.
//
//   bun scripts/report.ts --run data/runs/r1                          # reads data/runs/r1/eval/
//   bun scripts/report.ts --eval out/eval --compare data/runs/r0      # before/after table

import { join, resolve } from "node:path";
import { type } from "arktype";
import { writeFileAtomic } from "../lib/io/atomic.ts";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError } from "../lib/io/errors.ts";
import { existingRunDir } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { buildReport, type ReportOptions, resolveEvalDir } from "../lib/eval/report.ts";

export interface ReportScriptOptions extends Omit<ReportOptions, "evalDir"> {
  /** The eval folder (default <run>/eval). */
  eval?: string;
  /** Output file (default <eval>/report.html). */
  out?: string;
}

export const DEFAULTS = { gallery: 24, thumb: 160, logScale: false } as const;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  "run?": "string > 0", "eval?": "string > 0", "compare?": "string > 0", "trainLogs?": "string[]", gallery: "number.integer >= 0",
  thumb: "32 <= number.integer <= 1024", logScale: "boolean", "title?": "string", "out?": "string > 0",
});

export async function run(input: ReportScriptOptions): Promise<{ path: string; bytes: number }> {
  const o = resolveOptions<ReportScriptOptions>(OPTIONS, DEFAULTS, input);
  if (!o.eval && !o.run) throw new UsageError("give --eval <folder> or --run <dir>");
  return o.run ? recordStep(existingRunDir(o.run), "report", o, () => write(o)) : write(o);
}

async function write(o: ReportScriptOptions): Promise<{ path: string; bytes: number }> {
  const evalDir = resolveEvalDir(o.eval ?? o.run!);
  const html = await buildReport({ ...o, evalDir });
  const path = resolve(o.out ?? join(evalDir, "report.html"));
  await writeFileAtomic(path, html);
  return { path, bytes: Buffer.byteLength(html) };
}

const HELP = `report: eval/report.html, a self-contained page of metrics, training curves and a worst-first gallery

usage: bun scripts/report.ts (--run <dir> | --eval <folder>) [options]

  --run <dir>            run directory: reads <run>/eval/, train logs under train/ and checkpoints/,
                         patch-scores.jsonl + heatmaps/ for the gallery
  --eval <folder>        an eval folder written by scripts/eval.ts (default: <run>/eval)
  --compare <dir>        another run (or eval folder) as "before" in a before/after table
  --train-log <path>     another train-log.jsonl, or a folder searched for them (repeatable)
  --gallery <n>          gallery entries, worst first (default: ${DEFAULTS.gallery})
  --thumb <px>           thumbnail size (default: ${DEFAULTS.thumb})
  --log-scale            loss curves on a log scale
  --title <text>         page title
  --out <file>           output file (default: <eval>/report.html)
  -h, --help             this help`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      run: { type: "string" }, eval: { type: "string" }, compare: { type: "string" }, "train-log": { type: "string", multiple: true },
      gallery: { type: "string", default: String(DEFAULTS.gallery) }, thumb: { type: "string", default: String(DEFAULTS.thumb) },
      "log-scale": { type: "boolean", default: DEFAULTS.logScale }, title: { type: "string" }, out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    const res = await run({
      run: v.run, eval: v.eval, compare: v.compare, trainLogs: v["train-log"], logScale: v["log-scale"], title: v.title, out: v.out,
      gallery: Number(v.gallery), thumb: Number(v.thumb),
    });
    console.log(`wrote ${res.path} (${(res.bytes / 1024).toFixed(0)} KiB)`);
  });
}
