// Expected failures versus bugs. A UserError is something a person can act on (a missing model
// file, a bad manifest row, a weight of the wrong shape): its message says what went wrong, where
// (file, line, key) and what to do, and scripts print it without a stack trace. Anything else is a
// bug and keeps its stack.

/** An expected failure a person can act on. The message says what, where, and what to do. */
export class UserError extends Error {
  /** Process exit code when this error ends a script (1: failure). */
  readonly exitCode: number = 1;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UserError";
  }
}

/** Bad command-line usage (unknown flag, malformed value). Scripts exit with code 2. */
export class UsageError extends UserError {
  override readonly exitCode: number = 2;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** What `runMain` prints for an error and the exit code it uses. */
export function describeError(err: unknown): { text: string; exitCode: number } {
  if (err instanceof UserError) {
    let text = `error: ${err.message}`;
    // The stack of an expected failure is noise, but while debugging the cause can matter.
    if (process.env.PATCHDPO_DEBUG && err.stack) text += `\n${err.stack}`;
    if (process.env.PATCHDPO_DEBUG && err.cause instanceof Error && err.cause.stack) {
      text += `\ncaused by: ${err.cause.stack}`;
    }
    return { text, exitCode: err.exitCode };
  }
  if (err instanceof Error) return { text: err.stack ?? `${err.name}: ${err.message}`, exitCode: 1 };
  return { text: `error (non-Error value thrown): ${String(err)}`, exitCode: 1 };
}

/**
 * Entry point wrapper for scripts: `if (import.meta.main) runMain(() => main(Bun.argv))`.
 * Runs fn; on a UserError prints `error: <message>` to stderr (no stack) and exits with its code
 * (1, or 2 for a UsageError); on any other error prints the stack and exits 1. On success it
 * returns normally and leaves the exit code alone.
 */
export async function runMain(fn: () => unknown): Promise<void> {
  try {
    await fn();
  } catch (err) {
    const { text, exitCode } = describeError(err);
    process.stderr.write(text.endsWith("\n") ? text : `${text}\n`);
    process.exit(exitCode);
  }
}
