// The flag parsing every script shares: node:util parseArgs, with unknown flags, missing values
// and stray arguments reported as usage errors (exit 2, with the script's help) rather than bugs.

import { type ParseArgsConfig, parseArgs } from "node:util";
import { UsageError } from "./errors.ts";

export function parseFlags<O extends NonNullable<ParseArgsConfig["options"]>>(options: O, help: string, args: string[] = Bun.argv.slice(2)) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${help}`);
  }
}

/** An option's flag: `imageEncoder` -> `--image-encoder`. */
export const flagName = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** What an arktype Type returns for bad data: an array-like of problems with their paths. */
type Problems = ArrayLike<{ path: readonly PropertyKey[]; code: string; problem: string }> & Iterable<{ path: readonly PropertyKey[]; code: string; problem: string }>;

/**
 * A script's options as its `run()` uses them: `defaults` under what the caller gave (a key given
 * as undefined takes its default), checked with the script's schema, the one its CLI uses. A bad
 * or missing option is a UsageError that names the flag (`--image-encoder is required`), so a
 * notebook calling `run({ run: "data/runs/demo" })` gets the CLI's defaults and the CLI's errors.
 */
export function resolveOptions<O>(schema: (data: unknown) => unknown, defaults: object, given: object, help?: string): O {
  const merged: Record<string, unknown> = { ...defaults };
  for (const [k, v] of Object.entries(given)) if (v !== undefined) merged[k] = v;
  const out = schema(merged);
  if (out && typeof out === "object" && "summary" in out && Array.isArray(out)) {
    const lines = [...(out as unknown as Problems)].map((e) => {
      const [key, ...rest] = e.path.map(String);
      const name = key === undefined ? "options" : `${flagName(key)}${rest.map((r) => `[${r}]`).join("")}`;
      if (e.code === "required") return `${name} is required`;
      // Some problems repeat the key ("mode must be ..."): say it once, as the flag.
      return key !== undefined && e.problem.startsWith(`${key} `) ? `${name}${e.problem.slice(key.length)}` : `${name} ${e.problem}`;
    });
    throw new UsageError(`bad option: ${lines.join("; ")}${help ? `\n\n${help}` : ""}`);
  }
  return out as O;
}

/**
 * `--fused-ops` / `--standard-ops` of the inference scripts (generate-images, score-patches, eval):
 * ONNX Runtime's fused contrib attention (com.microsoft.MultiHeadAttention, the default) or the
 * standard-op graph it is parity-tested against. Both given is a usage error.
 */
export const OPS_FLAGS = { "fused-ops": { type: "boolean", default: false }, "standard-ops": { type: "boolean", default: false } } as const;
export const OPS_HELP = `  --fused-ops             attention as ONNX Runtime's fused MultiHeadAttention contrib op (the default)
  --standard-ops          attention in standard ONNX ops (the reference the fused form is tested against)`;
export function fusedOpsFlag(v: { "fused-ops"?: boolean; "standard-ops"?: boolean }, help: string): boolean | undefined {
  if (v["fused-ops"] && v["standard-ops"]) throw new UsageError(`--fused-ops and --standard-ops exclude each other\n\n${help}`);
  return v["standard-ops"] ? false : v["fused-ops"] ? true : undefined;
}
