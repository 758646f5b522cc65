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
