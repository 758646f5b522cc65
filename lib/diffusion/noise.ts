// Seeded Gaussian latents. The promise is reproducibility across OUR runs and machines: the same
// seed gives the same latents bit for bit on every machine, CPU or GPU run, because they are
// drawn on the host by lib/rng.ts (xoshiro128** + Box-Muller, exact integer maths), never by the
// device. They are NOT the numbers torch.randn(generator=torch.Generator().manual_seed(seed))
// gives (a Mersenne Twister), so a seed does not reproduce an image made with diffusers.
//
// Each image gets its own seed, derived from the run's base seed and the image's id, and its own
// latents: an image does not depend on the batch it was generated in, its position in it, the
// shard that made it or whether the run was resumed.

import { Rng } from "../rng.ts";
import { stableHash } from "../io/rundir.ts";

function checkShape(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 1) throw new Error(`latent shape [${shape.join(", ")}] must hold positive integers`);
    n *= d;
  }
  return n;
}

function checkSeed(seed: number): void {
  if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
}

/**
 * prod(shape) standard normals from a seed (taken modulo 2^32, like Rng) or from a generator
 * (which advances). Row-major, like the NCHW latents a UNet takes.
 */
export function gaussianLatents(shape: readonly number[], seed: number | Rng): Float32Array {
  const n = checkShape(shape);
  if (typeof seed === "number") checkSeed(seed);
  const rng = typeof seed === "number" ? new Rng(seed) : seed;
  return rng.normals(n);
}

/**
 * Latents of a batch, one seed per image: image i is gaussianLatents(perImage, seeds[i]), so the
 * batch is the concatenation of what each image would get alone. Shape [seeds.length, ...perImage].
 */
export function batchLatents(perImage: readonly number[], seeds: readonly number[]): Float32Array {
  const n = checkShape(perImage);
  const out = new Float32Array(n * seeds.length);
  seeds.forEach((s, i) => out.set(gaussianLatents(perImage, s), i * n));
  return out;
}

/**
 * The seed of one image: a 32-bit hash of the base seed and the image's id (FNV-1a of the UTF-8
 * text "<baseSeed>:<id>", then murmur3's 32-bit finalizer). Stable across versions and machines
 * (tests pin values); distinct ids give unrelated seeds, e.g. "teapot-3" and "teapot-4". A
 * number id and its decimal string are the same id.
 */
export function imageSeed(baseSeed: number, id: string | number): number {
  checkSeed(baseSeed);
  return stableHash(`${baseSeed}:${id}`);
}
