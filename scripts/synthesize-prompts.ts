// Prompt synthesis (PatchDPO data construction, DESIGN.md section 1 item 1): subjects, each with a
// clean-background reference prompt and K scene prompts, written to <run>/prompts.jsonl.
//
//   bun scripts/synthesize-prompts.ts --run data/runs/r1 --subjects 500 --seed 0          # open grammar
//   bun scripts/synthesize-prompts.ts --run data/runs/demo --subjects 20 --world tiny      # tiny world (its catalogue)
//   bun scripts/synthesize-prompts.ts --run data/runs/r2 --llm-url http://localhost:8000/v1 --llm-model qwen2.5-7b-instruct
//
// The grammar is deterministic: the same flags give a byte-identical prompts.jsonl, so a rerun is a
// no-op. The flags are recorded in run.json; a rerun with different flags (or against a file that
// differs from what the flags produce) refuses to replace prompts.jsonl, since references and
// generations were made from it, unless --force. With an LLM, a rerun with the same flags keeps the
// existing file (the model would not answer the same way twice).

import { existsSync, readFileSync } from "node:fs";
import { type } from "arktype";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { readJsonlAll, writeJsonl } from "../lib/io/manifest.ts";
import { runPaths } from "../lib/io/rundir.ts";
import { readRunJson, recordStep, wasKilled } from "../lib/io/runlog.ts";
import { PromptRow } from "../lib/io/schemas.ts";
import { GRAMMAR_VERSION, maxScenesPerSubject, synthesizeOpen } from "../lib/prompts/grammar.ts";
import { FLAT_SCENES, SPLITS, type Split } from "../lib/tinyworld/catalogue.ts";
import { synthesizeTiny } from "../lib/tinyworld/prompts.ts";

export const WORLDS = ["open", "tiny"] as const;
export type World = (typeof WORLDS)[number];
export const TINY_SPLITS = ["all", ...SPLITS] as const;

/** The largest --scenes-per-subject a world can serve without repeating a scene within a subject. */
export const maxScenes = (world: World) => (world === "tiny" ? FLAT_SCENES.length : maxScenesPerSubject());
import { LLM_DEFAULTS, completionsUrl, synthesizeWithLlm } from "../lib/prompts/llm.ts";

export const STEP = "synthesize-prompts";

export interface SynthesizeOptions {
  /** Run directory; prompts.jsonl and run.json go there. */
  run: string;
  subjects: number;
  scenesPerSubject: number;
  seed: number;
  world: World;
  /** Tiny world: which catalogue subjects (lib/tinyworld/catalogue.ts SPLITS), or all. */
  tinySplit?: Split | "all";
  /** OpenAI-compatible base URL; when set, subjects and prompts come from the model (open world only). */
  llmUrl?: string;
  llmModel?: string;
  /** Name of the environment variable holding the API key (the key itself is never recorded). */
  llmKeyEnv?: string;
  llmBatch: number;
  llmRetries: number;
  llmBackoffMs: number;
  llmTimeoutMs: number;
  force: boolean;
  /** Retry messages and the like (default: stderr). */
  log?: (line: string) => void;
}

export const DEFAULTS = {
  subjects: 100, scenesPerSubject: 4, seed: 0, world: "open", llmBatch: LLM_DEFAULTS.batch, llmRetries: LLM_DEFAULTS.retries,
  llmBackoffMs: LLM_DEFAULTS.backoffMs, llmTimeoutMs: LLM_DEFAULTS.timeoutMs, force: false,
} as const satisfies Partial<SynthesizeOptions>;

/** What run() takes: the run directory and whatever else the caller changes; the rest are DEFAULTS. */
export type SynthesizeInput = Pick<SynthesizeOptions, "run"> & Partial<SynthesizeOptions>;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  run: "string > 0", subjects: "1 <= number.integer <= 1000000", scenesPerSubject: "0 <= number.integer <= 1000", seed: "0 <= number.integer <= 4294967295",
  world: type.enumerated(...WORLDS), "tinySplit?": type.enumerated(...TINY_SPLITS), "llmUrl?": "string > 0", "llmModel?": "string > 0", "llmKeyEnv?": "string",
  llmBatch: "1 <= number.integer <= 100", llmRetries: "0 <= number.integer <= 20", llmBackoffMs: "number.integer >= 0", llmTimeoutMs: "number.integer > 0",
  force: "boolean",
});

/** The options that decide what prompts.jsonl holds: recorded in run.json and compared on a rerun. */
export function identityOf(o: SynthesizeOptions): Record<string, string | number | null> {
  return {
    world: o.world, ...(o.world === "tiny" ? { tinySplit: o.tinySplit ?? "all" } : {}), subjects: o.subjects, scenesPerSubject: o.scenesPerSubject, seed: o.seed,
    source: o.llmUrl ? "llm" : "grammar", grammar: o.llmUrl ? null : GRAMMAR_VERSION,
    llmUrl: o.llmUrl ? redactUrl(o.llmUrl) : null, llmModel: o.llmUrl ? (o.llmModel ?? null) : null,
  };
}

/** The URL without user:password (run.json is shared with colleagues; keys belong in --llm-key-env). */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.href;
  } catch {
    return url;
  }
}

/**
 * The identity recorded by the latest run of this step that may have written prompts.jsonl: a
 * successful one, or one killed after its write and before run.json recorded the success.
 */
async function recordedIdentity(runDir: string): Promise<Record<string, unknown> | undefined> {
  const steps = (await readRunJson(runDir)).steps;
  for (let i = steps.length - 1; i >= 0; i--) {
    const s = steps[i]!;
    if (s.step === STEP && (s.status === "ok" || wasKilled(s))) {
      const id = (s.options as { identity?: Record<string, unknown> } | null)?.identity;
      if (id) return id;
    }
  }
  return undefined;
}

function differences(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  return keys.filter((k) => JSON.stringify(a[k] ?? null) !== JSON.stringify(b[k] ?? null)).map((k) => `${k}: ${JSON.stringify(b[k] ?? null)} -> ${JSON.stringify(a[k] ?? null)}`);
}

function checkOptions(o: SynthesizeOptions): void {
  if (!o.run) throw new UsageError("--run <dir> is required");
  if (!WORLDS.includes(o.world)) throw new UsageError(`--world ${JSON.stringify(o.world)}: expected one of ${WORLDS.join(", ")}`);
  if (o.llmUrl && o.world === "tiny") throw new UsageError("--llm-url cannot be used with --world tiny: the tiny world's renderer draws only its own subjects and scenes");
  if (o.llmUrl) {
    try {
      completionsUrl(o.llmUrl);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (o.llmUrl && !o.llmModel) throw new UsageError("--llm-url needs --llm-model <name>");
  if (!o.llmUrl && (o.llmModel || o.llmKeyEnv)) throw new UsageError("--llm-model and --llm-key-env need --llm-url <base url>");
  if (o.llmKeyEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(o.llmKeyEnv)) throw new UsageError(`--llm-key-env ${JSON.stringify(o.llmKeyEnv)}: expected an environment variable name`);
  if (o.llmKeyEnv && !process.env[o.llmKeyEnv]) throw new UsageError(`--llm-key-env ${o.llmKeyEnv}: the environment variable ${o.llmKeyEnv} is not set`);
  const max = maxScenes(o.world);
  if (!o.llmUrl && o.scenesPerSubject > max) {
    throw new UsageError(`--scenes-per-subject ${o.scenesPerSubject}: the ${o.world} world has ${max} distinct scenes per subject (prompts within a subject never repeat)`);
  }
}

export interface SynthesizeResult {
  manifest: string;
  rows: number;
  /** "written": new or replaced; "unchanged": the same bytes were there; "kept": an LLM file reused. */
  status: "written" | "unchanged" | "kept";
}

async function synthesizeRows(o: SynthesizeOptions): Promise<PromptRow[]> {
  if (o.world === "tiny") {
    const split = o.tinySplit ?? "all";
    if (!TINY_SPLITS.includes(split)) throw new UsageError(`--tiny-split ${JSON.stringify(split)}: expected one of ${TINY_SPLITS.join(", ")}`);
    try {
      return synthesizeTiny({ ...o, split });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (!o.llmUrl) return synthesizeOpen(o);
  return synthesizeWithLlm(
    {
      url: o.llmUrl, model: o.llmModel!, apiKey: o.llmKeyEnv ? process.env[o.llmKeyEnv] : undefined, batch: o.llmBatch, retries: o.llmRetries,
      backoffMs: o.llmBackoffMs, timeoutMs: o.llmTimeoutMs, temperature: LLM_DEFAULTS.temperature,
      log: o.log ?? ((line) => process.stderr.write(`${line}\n`)),
    },
    o,
  );
}

function serialize(rows: readonly PromptRow[]): string {
  return rows.map((r) => `${JSON.stringify(r)}\n`).join("");
}

/**
 * Writes <run>/prompts.jsonl (atomically) and records the step in run.json. Refuses, with a
 * UserError, to replace a prompts.jsonl made with other options or that differs from what these
 * options produce, unless `force`.
 */
export async function run(input: SynthesizeInput): Promise<SynthesizeResult> {
  const o = resolveOptions<SynthesizeOptions>(OPTIONS, DEFAULTS, input);
  checkOptions(o);
  const paths = runPaths(o.run);
  const manifest = paths.prompts;
  const identity = identityOf(o);
  const { log: _log, ...recorded } = o;
  if (recorded.llmUrl) recorded.llmUrl = redactUrl(recorded.llmUrl);
  return recordStep(paths.root, STEP, { ...recorded, identity }, async () => {
    const exists = existsSync(manifest);
    if (exists && !o.force) {
      const before = await recordedIdentity(paths.root);
      if (!before) {
        throw new UserError(`${manifest} exists but ${paths.runJson} has no successful ${STEP} step, so its flags are unknown; pass --force to replace it (later steps made from it would no longer match)`);
      }
      const diff = differences(identity, before);
      if (diff.length > 0) {
        throw new UserError(`${manifest} was made with other flags (${diff.join(", ")}); rerun with the recorded flags, use another --run, or pass --force to replace it (later steps made from it would no longer match)`);
      }
      if (o.llmUrl) {
        const rows = await readJsonlAll(manifest, PromptRow); // validates every row
        if (rows.length !== o.subjects) throw new UserError(`${manifest} has ${rows.length} rows, not ${o.subjects}; pass --force to ask the model again`);
        return { manifest, rows: rows.length, status: "kept" as const };
      }
    }
    const rows = await synthesizeRows(o);
    const text = serialize(rows);
    if (exists && !o.force) {
      if (readFileSync(manifest, "utf8") === text) return { manifest, rows: rows.length, status: "unchanged" as const };
      throw new UserError(`${manifest} differs from what these flags produce (edited by hand, or made by another version of the grammar); pass --force to replace it`);
    }
    await writeJsonl(manifest, rows, PromptRow);
    return { manifest, rows: rows.length, status: "written" as const };
  });
}

const HELP = `synthesize-prompts: subjects with a clean-background reference prompt and scene prompts -> <run>/prompts.jsonl

usage: bun scripts/synthesize-prompts.ts --run <dir> [options]

  --run <dir>                 run directory (prompts.jsonl and run.json are written there)
  --subjects <n>              number of distinct subjects (default: ${DEFAULTS.subjects})
  --scenes-per-subject <k>    distinct scene prompts per subject (default: ${DEFAULTS.scenesPerSubject}; at most ${maxScenes("open")} open, ${maxScenes("tiny")} tiny)
  --seed <s>                  seed of every random choice, 0..4294967295 (default: ${DEFAULTS.seed})
  --world <w>                 open: DreamBench-style grammar | tiny: the tiny world's subjects and scenes,
                              which its renderer can draw (default: ${DEFAULTS.world})
  --tiny-split <s>            tiny world: the catalogue subjects to draw from: ${TINY_SPLITS.join(" | ")} (default: all)
  --llm-url <url>             OpenAI-compatible base URL (e.g. http://localhost:8000/v1): ask a language model for
                              subjects and prompts instead of the grammar (open world only; default: none)
  --llm-model <name>          model name sent to the API (required with --llm-url)
  --llm-key-env <VAR>         environment variable holding the API key (default: none, no key is sent)
  --llm-batch <n>             subjects per request (default: ${DEFAULTS.llmBatch})
  --llm-retries <n>           retries per request on HTTP 408/429/5xx, invalid JSON or schema errors (default: ${DEFAULTS.llmRetries})
  --llm-backoff-ms <ms>       first retry delay, doubled per retry (default: ${DEFAULTS.llmBackoffMs})
  --llm-timeout-ms <ms>       per-request timeout (default: ${DEFAULTS.llmTimeoutMs})
  --force                     replace a prompts.jsonl made with other flags (default: ${DEFAULTS.force})
  -h, --help                  this help

Rerunning with the same flags leaves a byte-identical prompts.jsonl (grammar) or keeps it (LLM).`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      run: { type: "string" },
      subjects: { type: "string", default: String(DEFAULTS.subjects) },
      "scenes-per-subject": { type: "string", default: String(DEFAULTS.scenesPerSubject) },
      seed: { type: "string", default: String(DEFAULTS.seed) },
      world: { type: "string", default: DEFAULTS.world }, "tiny-split": { type: "string", default: "all" },
      "llm-url": { type: "string" }, "llm-model": { type: "string" }, "llm-key-env": { type: "string" },
      "llm-batch": { type: "string", default: String(DEFAULTS.llmBatch) },
      "llm-retries": { type: "string", default: String(DEFAULTS.llmRetries) },
      "llm-backoff-ms": { type: "string", default: String(DEFAULTS.llmBackoffMs) },
      "llm-timeout-ms": { type: "string", default: String(DEFAULTS.llmTimeoutMs) },
      force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    // Number("") is 0 and Number("1e3") is 1000: only plain digits count as integers here.
    const int = (s: string | undefined) => (s !== undefined && /^\s*\d+\s*$/.test(s) ? Number(s) : Number.NaN);
    const opts: SynthesizeInput = {
      run: v.run!, tinySplit: v["tiny-split"] as Split | "all", llmUrl: v["llm-url"], llmModel: v["llm-model"], llmKeyEnv: v["llm-key-env"], force: v.force,
      subjects: int(v.subjects), scenesPerSubject: int(v["scenes-per-subject"]), seed: int(v.seed), world: v.world as World,
      llmBatch: int(v["llm-batch"]), llmRetries: int(v["llm-retries"]), llmBackoffMs: int(v["llm-backoff-ms"]), llmTimeoutMs: int(v["llm-timeout-ms"]),
    };
    const res = await run(opts);
    const what = { written: "wrote", unchanged: "unchanged (same flags, same bytes):", kept: "kept (same flags):" }[res.status];
    console.log(`${what} ${res.rows} subjects x ${opts.scenesPerSubject ?? DEFAULTS.scenesPerSubject} scene prompts -> ${res.manifest}`);
  });
}
