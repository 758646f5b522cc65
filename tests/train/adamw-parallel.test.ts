// AdamW.stepAsync (worker threads over shared memory) = AdamW.step = the loop it replaced
// (stepLegacy), bit for bit, over several steps with a learning-rate change: tensors larger than a
// staging chunk, tensors smaller than a worker's share, a parameter without a gradient, moments
// restored from plain arrays (a resume), and more workers than a chunk has values.

import { describe, expect, test } from "bun:test";
import { Rng } from "../../lib/rng.ts";
import { AdamW } from "../../lib/train/adamw.ts";

const MIN = 1 << 20; // minParallel of the threaded optimizers here (the default is 64M values)
const SIZES: Record<string, number> = { big: MIN + 12_345, small: 7, mid: 300_001, frozen: 1000 };
const make = (seed: number) => {
  const r = new Rng(seed);
  return new Map(Object.entries(SIZES).map(([k, n]) => [k, r.normals(n, 0.5)]));
};
const gradsAt = (s: number) => {
  const g = make(100 + s);
  g.delete("frozen");
  return g;
};
const cfg = { lr: 3e-3, weightDecay: 0.01 };
const bits = (m: Map<string, Float32Array>) => new Map([...m].map(([k, a]) => [k, Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64")]));

describe("AdamW on worker threads", () => {
  for (const [threads, stage] of [[2, 1 << 19], [3, 100_003], [2, 1 << 23]] as const) {
    test(`${threads} workers, staging chunk ${stage}: the same bits as step() and the old loop`, async () => {
      const a = new AdamW(cfg), b = new AdamW(cfg), c = new AdamW(cfg, { threads, stage, minParallel: MIN });
      const pa = make(1), pb = make(1), pc = make(1);
      for (let s = 0; s < 4; s++) {
        const lr = s === 2 ? 1e-3 : undefined;
        a.stepLegacy(pa, gradsAt(s), lr);
        b.step(pb, gradsAt(s), lr);
        await c.stepAsync(pc, gradsAt(s), lr);
        if (s === 1) {
          // A resume: the moments come back as plain (not shared) arrays.
          for (const k of [...c.m.keys()]) { c.m.set(k, Float32Array.from(c.m.get(k)!)); c.v.set(k, Float32Array.from(c.v.get(k)!)); }
        }
      }
      expect(bits(pb)).toEqual(bits(pa));
      expect(bits(pc)).toEqual(bits(pa));
      expect(bits(c.m)).toEqual(bits(a.m));
      expect(bits(c.v)).toEqual(bits(a.v));
      expect(c.t).toBe(4);
      expect(c.m.get("big")!.buffer).toBeInstanceOf(SharedArrayBuffer);
      expect(pc.get("frozen")).toEqual(make(1).get("frozen")!);
    });
  }
});

test("below minParallel stepAsync is step(): no worker, plain moments", async () => {
  const c = new AdamW(cfg, { threads: 2 });
  const p = make(1);
  await c.stepAsync(p, gradsAt(0));
  expect(c.m.get("big")!.buffer).not.toBeInstanceOf(SharedArrayBuffer);
});
