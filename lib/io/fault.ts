// Fault injection for the crash tests (tests/scripts/fault-injection.test.ts): with
// PATCHDPO_FAULT_AT=n in the environment, the process kills itself with SIGKILL at its n-th
// durable write (an atomic file replacement just before its rename, leaving the temp file behind,
// or a manifest append half written). PATCHDPO_FAULT_TRACE=<file> appends one line per such point,
// so a test can count a step's points and pick kill points among them. Unset, both cost one
// comparison per write.

import { appendFileSync } from "node:fs";

const AT = Number(process.env.PATCHDPO_FAULT_AT ?? 0) || 0;
const TRACE = process.env.PATCHDPO_FAULT_TRACE;
let count = 0;

/**
 * One durable write is about to happen. When it is the chosen one, `tear` runs first (e.g. writes
 * part of the data) and the process dies on the spot, as `kill -9` would leave it.
 */
export function faultPoint(label: string, tear?: () => void): void {
  if (!AT && !TRACE) return;
  count++;
  if (TRACE) appendFileSync(TRACE, `${count} ${label}\n`);
  if (count === AT) {
    tear?.();
    process.kill(process.pid, "SIGKILL");
  }
}
