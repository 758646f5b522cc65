// Shared by the UNet and VAE parity tests: element-wise comparison against a PyTorch fixture with
// |ours - torch| <= ATOL + RTOL |torch|, and weight sources read from a fixture file.

import { expect } from "bun:test";
import type { SafetensorsFile } from "../../lib/io/safetensors.ts";
import { MemorySource } from "../../lib/nn/params.ts";

export const ATOL = 1e-4;
export const RTOL = 1e-4;

export interface Worst { abs: number; ratio: number }

export function compare(name: string, have: ArrayLike<number>, want: ArrayLike<number>, worst: Worst): void {
  expect(have.length, name).toBe(want.length);
  let ratio = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(have[i]! - want[i]!);
    const r = d / (ATOL + RTOL * Math.abs(want[i]!));
    if (!(r <= ratio)) (ratio = r), (at = i);
    worst.abs = Math.max(worst.abs, d);
  }
  worst.ratio = Math.max(worst.ratio, ratio);
  if (!(ratio <= 1)) throw new Error(`${name}: element ${at} is ${have[at]}, PyTorch has ${want[at]} (|diff| > ${ATOL} + ${RTOL} |torch|)`);
}

export const report = (what: string, w: Worst) => console.log(`parity ${what}: max abs ${w.abs.toExponential(2)}, worst |diff|/(atol+rtol|ref|) ${w.ratio.toExponential(2)}`);

export const sourceOf = (f: SafetensorsFile, names: string[]) =>
  new MemorySource(new Map(names.map((n) => [n, { shape: f.info(n).shape, data: f.float32(n) }])), f.path);
