// A checkpoint rewritten at the same path must be read anew: external weights from several folders
// go through hard links in our cache, and sessions are cached by graph; both must notice the change.

import { expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { writeSafetensors } from "../../lib/io/safetensors.ts";
import { Params, SafetensorsSource } from "../../lib/nn/params.ts";

async function run(files: string[], cacheDir: string): Promise<number[]> {
  const g = new G.Graph();
  const x = g.input("x", [1, 2]);
  const sources = files.map((f) => new Params(g, new SafetensorsSource([f])));
  const y = sources.reduce((acc, p, i) => G.add(acc, G.matmul(x, p.get(`w${i}`, [2, 2]))), G.mul(x, 0));
  const c = await G.compile({ y }, { cacheDir, threads: 1 });
  return Array.from((await c.run({ x: Float32Array.from([1, 1]) })).y as Float32Array);
}

test("rewriting a weight file at the same path changes the result (linked and in-place weights)", async () => {
  const root = mkdtempSync(join(tmpdir(), "patchdpo-refresh-"));
  const [a, b] = [join(root, "a"), join(root, "b")];
  mkdirSync(a);
  mkdirSync(b);
  const write = (path: string, name: string, v: number) => writeSafetensors(path, { [name]: { dtype: "F32", shape: [2, 2], data: new Float32Array(4).fill(v) } });
  await write(join(a, "w.safetensors"), "w0", 1);
  await write(join(b, "w.safetensors"), "w1", 10);
  const cache = join(root, "cache");
  expect(await run([join(a, "w.safetensors"), join(b, "w.safetensors")], cache)).toEqual([22, 22]);
  // Replace a's file (a new inode, same size), as a retrained checkpoint would be.
  rmSync(join(a, "w.safetensors"));
  await write(join(a, "w.safetensors"), "w0", 2);
  expect(await run([join(a, "w.safetensors"), join(b, "w.safetensors")], cache)).toEqual([24, 24]);
  // One folder: ORT reads in place; the session cache must not hand back the old session.
  expect(await run([join(a, "w.safetensors")], cache)).toEqual([4, 4]);
  rmSync(join(a, "w.safetensors"));
  await write(join(a, "w.safetensors"), "w0", 3);
  expect(await run([join(a, "w.safetensors")], cache)).toEqual([6, 6]);
  rmSync(root, { recursive: true, force: true });
});
