// Run by tests/dist/dist.test.ts under mpirun: exercises lib/dist on every rank and prints one JSON
// line per rank. `fail` in argv: rank 1 exits with code 3 while rank 0 waits in an all-reduce.

import { allReduceMean, allReduceMeanGrads, barrier, broadcast, checkSame, shareOf, world } from "../../lib/dist/index.ts";

const w = world();
if (process.argv.includes("fail")) {
  if (w.rank === 1) process.exit(3);
  await allReduceMean(new Float32Array(4));
  console.log(JSON.stringify({ rank: w.rank, reached: "after the all-reduce" }));
  process.exit(0);
}
// Rank r holds r+1 everywhere, plus one value that tells ranks apart.
const x = new Float32Array(1000).fill(w.rank + 1);
x[7] = w.rank === 0 ? 10 : -4;
await allReduceMean(x);
const b = await broadcast(Float64Array.from([w.rank * 100 + 0.5, 42]), w.size - 1);
await barrier();
const grads = new Map([["b", new Float32Array([w.rank, 2 * w.rank])], ["a", new Float32Array([1 + w.rank])]]);
const scalars = await allReduceMeanGrads(grads, { loss: w.rank === 0 ? 1 : 3, acc: w.rank });
let diverged = "";
try {
  await checkSame("weights", [new Float32Array([1, 2, w.rank === 0 ? 3 : 3.5])]);
} catch (e) {
  diverged = (e as Error).message;
}
await checkSame("weights", [new Float32Array([1, 2, 3])]);
console.log(JSON.stringify({
  rank: w.rank, size: w.size, launcher: w.launcher, first: x[0], seventh: x[7], broadcast: [...b], share: shareOf(6),
  grads: Object.fromEntries([...grads].map(([k, v]) => [k, [...v]])), scalars, diverged,
}));
