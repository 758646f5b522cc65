// Shared by the webgpu-vs-cpu tests (tests/graph, tests/train, tests/scripts): whether a WebGPU
// adapter exists, and how a result on `webgpu` is compared with the same result on `cpu`.
//
// Without an adapter (a machine with no Vulkan driver) the webgpu tests skip with a one-line
// reason. CI sets PATCHDPO_REQUIRE_WEBGPU=1 after installing Mesa's lavapipe (.ci/lavapipe), and
// then a missing adapter fails instead of skipping.

import { expect } from "bun:test";
import { deviceProblem } from "../../lib/graph/index.ts";

const problem = await deviceProblem("webgpu");
if (problem && process.env.PATCHDPO_REQUIRE_WEBGPU === "1") {
  throw new Error(`PATCHDPO_REQUIRE_WEBGPU=1 but ${problem}`);
}

/** Why the webgpu tests skip here, or null when an adapter exists. */
export const NO_WEBGPU: string | null = problem;

/** Prints the one-line skip reason once per file (call at the top of a test file). */
export function noteWebgpuSkip(file: string): void {
  if (NO_WEBGPU) console.log(`${file}: webgpu tests skipped: ${NO_WEBGPU.split(". ")[0]}`);
}

export interface Diff {
  /** Largest |webgpu - cpu|. */
  abs: number;
  /** Largest |webgpu - cpu| / the scale it was judged against (max |cpu| of the tensor, or the floor). */
  rel: number;
}

/**
 * Compares a tensor computed on webgpu with the same one on cpu: every element within
 * `tol` x max(max |cpu|, floor). The floor keeps a tensor that is zero in exact arithmetic (a
 * gradient that only rounding makes non-zero) from being judged against its own rounding noise.
 * NaN must sit at the same places on both.
 */
export function expectClose(name: string, have: ArrayLike<number>, want: ArrayLike<number>, tol: number, floor = 0): Diff {
  expect(have.length, name).toBe(want.length);
  let abs = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    // NaN marks "no value" in some outputs (masked patches of a quality map): it must match.
    if (Number.isNaN(want[i]!) && Number.isNaN(have[i]!)) continue;
    const d = Math.abs(have[i]! - want[i]!);
    if (!(d <= abs)) abs = d; // NaN lands here and fails below
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  const bound = tol * Math.max(scale, floor);
  if (!(abs <= bound)) throw new Error(`${name}: webgpu differs from cpu by ${abs} (scale ${scale}, allowed ${bound})`);
  const judged = Math.max(scale, floor);
  return { abs, rel: judged > 0 ? abs / judged : abs };
}

/** The worst of several comparisons. */
export const worst = (ds: Diff[]): Diff => ({ abs: Math.max(0, ...ds.map((d) => d.abs)), rel: Math.max(0, ...ds.map((d) => d.rel)) });

export const fmtDiff = (d: Diff) => `max abs ${d.abs.toExponential(2)}, max rel-to-scale ${d.rel.toExponential(2)}`;

/** Runs fn and returns its result with the seconds it took. */
export async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, (performance.now() - t0) / 1000];
}
