// Ours: the scoring computation of scripts/score-patches.ts on N pairs of 224x224 RGB images
// already decoded in memory: decoded RGB -> normalized [B, 3, 224, 224] tensors for the reference
// and the generated image, the default encoder (nsfwjs' MobileNetV2, out_relu 7x7 patch grid),
// the reference background masks, and the q_gen / q_ref quality maps. Prints one JSON line for
// bench/run.ts with `seconds` = median seconds per *pair* (so the ratio is pairs/s vs pairs/s).
//
// Three ways to run it (--variant; `all` times each and checks they agree):
//   fused  one ORT session: encoder on the 2N images + qualityGraph appended to its patch output
//          (the default: fastest here, 39 vs 32 pairs/s for the others, 16 pairs, 2 threads)
//   loops  featurizer.features (2 session runs of N images) + qualityMaps (typed-array loops),
//          what scripts/score-patches.ts does today
//   batch  featurizer.features + qualityMapsBatch (the quality graph as its own ORT session)
//
// It also writes what the PyTorch reference (bench/score-patches.py) needs, under bench/out/:
//   mobilenet_v2_nsfwjs.safetensors  our dequantized weights: Keras names, PyTorch layouts, F32
//   score-patches-inputs.safetensors the images (U8 [2N, 224, 224, 3]: N references then N
//                                    generated) and our pooled features / quality maps, for the
//                                    reference's one-time parity check
// `--export-only` writes them and exits.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as G from "../lib/graph/index.ts";
import { type RgbImage, toCHW } from "../lib/io/images.ts";
import { writeSafetensors } from "../lib/io/safetensors.ts";
import { graphFeaturizer } from "../lib/models/featurizer.ts";
import { loadMobileNetV2 } from "../lib/models/mobilenet.ts";
import { Params } from "../lib/nn/params.ts";
import { backgroundMask, maskPenalty, qualityGraph, qualityMaps, qualityMapsBatch } from "../lib/patch/quality.ts";
import { Rng } from "../lib/rng.ts";
import { countFlops, flopFields } from "./flops.ts";
import { timeIt } from "./timing.ts";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "2" }, iters: { type: "string", default: "5" }, pairs: { type: "string", default: "16" },
    variant: { type: "string", default: "fused" }, "export-only": { type: "boolean", default: false },
  },
});
const N = Number(values.pairs);
const threads = Number(values.threads);
const S = 224;
const OUT_DIR = join(import.meta.dir, "out");
const WEIGHTS = join(OUT_DIR, "mobilenet_v2_nsfwjs.safetensors");
const INPUTS = join(OUT_DIR, "score-patches-inputs.safetensors");

/**
 * Pair i: a reference "object" (textured disc on a white background, so some reference patches
 * are masked) and a generated image of it: shifted, recoloured a little, on a textured backdrop.
 */
function benchImages(n: number, seed = 7): { refs: RgbImage[]; gens: RgbImage[] } {
  const rng = new Rng(seed);
  const refs: RgbImage[] = [];
  const gens: RgbImage[] = [];
  for (let i = 0; i < n; i++) {
    const col = [40 + rng.uniform() * 160, 40 + rng.uniform() * 160, 40 + rng.uniform() * 160];
    const r = 60 + rng.uniform() * 40;
    const period = 4 + rng.uniform() * 8;
    const shift = Math.round((rng.uniform() - 0.5) * 40);
    const draw = (dx: number, tint: number, backdrop: boolean): RgbImage => {
      const data = new Uint8Array(S * S * 3);
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          const p = (y * S + x) * 3;
          const d = Math.hypot(x - 112 - dx, y - 112);
          for (let c = 0; c < 3; c++) {
            let v: number;
            if (d <= r) v = col[c]! + tint + (Math.sin((x - dx) / period) > 0 ? 50 : 0) * (c === i % 3 ? 1 : 0.3);
            else if (backdrop) v = 120 + 60 * Math.sin(x / 17 + c) * Math.cos(y / 23);
            else v = 255;
            data[p + c] = Math.max(0, Math.min(255, Math.round(v)));
          }
        }
      }
      return { width: S, height: S, data };
    };
    refs.push(draw(0, 0, false));
    gens.push(draw(shift, 15, i % 2 === 1));
  }
  return { refs, gens };
}

function stack(images: RgbImage[], mean: readonly number[], std: readonly number[]): Float32Array {
  const per = 3 * S * S;
  const out = new Float32Array(images.length * per);
  images.forEach((img, i) => toCHW(img, mean, std, out, i * per));
  return out;
}

if (import.meta.main) {
  const ge = loadMobileNetV2();
  const { encoder, source } = ge;
  const { refs, gens } = benchImages(N);

  // Our weights, as the reference will load them.
  mkdirSync(OUT_DIR, { recursive: true });
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const name of source.names()) tensors[name] = { dtype: "F32", shape: source.shape(name), data: source.float32(name) };
  await writeSafetensors(WEIGHTS, tensors, { source: source.label, layout: "Keras names, PyTorch layouts (see lib/models/mobilenet.ts)" });

  // loops / batch: the featurizer score-patches uses (one compiled batch of N images), built only
  // when asked for (--variant loops | batch | all), so the reported peak RSS is the fused session's.
  let featP: ReturnType<typeof graphFeaturizer> | undefined;
  const feat = () => (featP ??= graphFeaturizer(ge, { batchSize: N, threads }));
  const loops = async () => {
    const [fr, fg] = [await feat().features(refs), await feat().features(gens)];
    const [C, h, w] = fg.patchShape;
    const per = C * h * w;
    return refs.map((_, k) =>
      qualityMaps({ data: fg.patches.subarray(k * per, (k + 1) * per), c: C, h, w }, { data: fr.patches.subarray(k * per, (k + 1) * per), c: C, h, w }, backgroundMask(refs[k]!, h, w)),
    );
  };
  const batch = async () => {
    const [fr, fg] = [await feat().features(refs), await feat().features(gens)];
    const [C, h, w] = fg.patchShape;
    return qualityMapsBatch(fg.patches, fr.patches, [N, C, h, w], [N, C, h, w], refs.map((r) => backgroundMask(r, h, w)), { threads });
  };

  // fused: encoder + quality graph in one session over [refs; gens].
  const g = new G.Graph();
  const images = g.input("images", [2 * N, 3, S, S]);
  const penaltyIn = g.input("penalty", [N, 49]);
  const out = encoder.forward(new Params(g, source), images);
  const [C, h, w] = out.patches.shape.slice(1) as [number, number, number];
  const [refPatches, genPatches] = G.split(out.patches, [N, N], 0);
  const q = qualityGraph(genPatches!, refPatches!, penaltyIn);
  const fusedSession = await G.compile({ qGen: q.qGen, qRef: q.qRef, pooled: out.global! }, { threads });
  const fusedRun = async () => {
    const x = stack([...refs, ...gens], encoder.mean, encoder.std);
    const penalty = new Float32Array(N * h * w);
    for (let k = 0; k < N; k++) penalty.set(maskPenalty(backgroundMask(refs[k]!, h, w), h * w), k * h * w);
    return fusedSession.run({ images: x, penalty });
  };

  // The parity dump: our pooled features (GAP of out_relu) and quality maps for these images.
  const r = await fusedRun();
  const pooled = r.pooled as Float32Array;
  const qGen = r.qGen as Float32Array;
  const qRef = r.qRef as Float32Array;
  const masks = refs.map((img) => backgroundMask(img, h, w));
  const pixels = new Uint8Array(2 * N * S * S * 3);
  [...refs, ...gens].forEach((img, i) => pixels.set(img.data, i * S * S * 3));
  await writeSafetensors(INPUTS, {
    images: { dtype: "U8", shape: [2 * N, S, S, 3], data: pixels },
    pooled: { dtype: "F32", shape: [2 * N, C], data: pooled },
    q_gen: { dtype: "F32", shape: [N, h * w], data: qGen },
    q_ref: { dtype: "F32", shape: [N, h * w], data: qRef },
    ref_mask: { dtype: "U8", shape: [N, h * w], data: Uint8Array.from(masks.flatMap((m) => [...m])) },
  });
  if (values["export-only"]) process.exit(0);

  const iters = Number(values.iters);
  const variants: Record<string, () => Promise<unknown>> = { fused: fusedRun, loops, batch };
  const picked = values.variant === "all" ? Object.keys(variants) : [values.variant!];
  const times: Record<string, number> = {};
  for (const v of picked) {
    if (!variants[v]) throw new Error(`--variant ${v}: one of ${Object.keys(variants).join(", ")}, all`);
    times[v] = (await timeIt(variants[v]!, iters)) / N;
  }
  if (values.variant === "all") {
    // The three agree (the loops are the reference implementation of the quality maps).
    const loopMaps = await loops();
    let maxDiff = 0;
    loopMaps.forEach((m, k) => m.qGen.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - qGen[k * h * w + i]!)))));
    process.stderr.write(`fused vs loops: max |q_gen difference| ${maxDiff.toExponential(1)}\n`);
    if (!(maxDiff < 1e-4)) throw new Error(`fused and loop quality maps disagree by ${maxDiff}`);
  }
  const [variant, seconds] = Object.entries(times).sort((a, b) => a[1] - b[1])[0]!;
  process.stderr.write(`score-patches bench (ours, ${N} pairs, ${threads} threads): ${Object.entries(times).map(([k, t]) => `${k} ${(1 / t).toFixed(1)} pairs/s`).join(", ")}\n`);
  // FLOPs per pair: the fused graph's encoder + quality matmuls over N pairs (the loops / batch
  // variants run the same encoder).
  const split = countFlops({ qGen: q.qGen, qRef: q.qRef, pooled: out.global! });
  split.forward /= N;
  console.log(JSON.stringify({ seconds, peakRssMB: process.resourceUsage().maxRSS / 1024, pairsPerSecond: 1 / seconds, variant, pairs: N, gflops: split.forward / 1e9, ...flopFields(split, { forward: seconds }) }));
}
