// Ours: the feature-score evaluation of scripts/eval.ts (lib/eval/embeddings.ts + metrics.ts) on N
// generated images already decoded in memory: the DINO-protocol preprocessing (PIL-exact bicubic
// resize of the shorter side to 256, centre crop 224, normalization), the embedded MobileNetV2's
// global feature (GAP of out_relu) for the batch of N, and each image's mean cosine against R real
// photos' embeddings (computed once, untimed: the cache's job in scripts/eval.ts). Prints one JSON
// line for bench/run.ts with `seconds` = median seconds per image.
//
// The images: the repository's fixture photos upscaled to DreamBench-like sizes (512x512,
// 512x384, 384x512, 640x480), so that the resize does real work. It also writes what the PyTorch
// reference (bench/eval.py) needs, under bench/out/:
//   mobilenet_v2_nsfwjs.safetensors  our dequantized weights (Keras names, PyTorch layouts; the
//                                    file bench/score-patches.ts writes, written here if missing)
//   eval-inputs/<i>.png, real-<j>.png  the generated / real images (lossless)
//   eval-inputs.safetensors          our embeddings and scores, for the reference's parity check
// `--export-only` writes them and exits.

import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { featureEmbedder } from "../lib/eval/embeddings.ts";
import { RAW_ENCODER, loadGraphEncoder } from "../lib/models/featurizer.ts";
import * as G from "../lib/graph/index.ts";
import { Params } from "../lib/nn/params.ts";
import { countFlops, flopFields } from "./flops.ts";
import { imageScore } from "../lib/eval/metrics.ts";
import { type RgbImage, loadImage, resizeBicubic, writePng } from "../lib/io/images.ts";
import { writeSafetensors } from "../lib/io/safetensors.ts";
import { loadMobileNetV2 } from "../lib/models/mobilenet.ts";
import { timeIt } from "./timing.ts";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "2" }, iters: { type: "string", default: "5" }, images: { type: "string", default: "16" },
    "export-only": { type: "boolean", default: false },
  },
});
const N = Number(values.images);
const threads = Number(values.threads);
const R = 4;
const OUT = join(import.meta.dir, "out");
const INPUTS = join(OUT, "eval-inputs");
const WEIGHTS = join(OUT, "mobilenet_v2_nsfwjs.safetensors");
const FIX = join(import.meta.dir, "..", "tests", "fixtures");
const SOURCES = ["images/photo_dog.png", "images/photo_teapot.png", "images/photo_can.png", "images/photo_dog_512x388.png", "mobilenet/0_dog.png", "mobilenet/1_teapot.png", "mobilenet/2_can.png", "mobilenet/3_synthetic.png"];
const SIZES: [number, number][] = [[512, 512], [512, 384], [384, 512], [640, 480]];

async function images(): Promise<{ gen: RgbImage[]; real: RgbImage[] }> {
  const src = await Promise.all(SOURCES.map((s) => loadImage(join(FIX, s))));
  const gen = Array.from({ length: N }, (_, i) => resizeBicubic(src[i % src.length]!, ...SIZES[i % SIZES.length]!));
  const real = Array.from({ length: R }, (_, j) => resizeBicubic(src[(j * 3 + 1) % src.length]!, ...SIZES[(j + 1) % SIZES.length]!));
  return { gen, real };
}

if (import.meta.main) {
  mkdirSync(INPUTS, { recursive: true });
  if (!existsSync(WEIGHTS)) {
    const { source } = loadMobileNetV2();
    const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const name of source.names()) tensors[name] = { dtype: "F32", shape: source.shape(name), data: source.float32(name) };
    await writeSafetensors(WEIGHTS, tensors, { source: source.label, layout: "Keras names, PyTorch layouts (see lib/models/mobilenet.ts)" });
  }
  const { gen, real } = await images();
  for (let i = 0; i < N; i++) await writePng(join(INPUTS, `${i}.png`), gen[i]!);
  for (let j = 0; j < R; j++) await writePng(join(INPUTS, `real-${j}.png`), real[j]!);

  // The raw MobileNetV2, as bench/eval.py loads it (the shipped default adds finetuned blocks 12-13).
  const embedder = await featureEmbedder(RAW_ENCODER, { batch: N, threads });
  const refs = await embedder.embed(real); // untimed: cached embeddings in scripts/eval.ts
  const score = async () => {
    const e = await embedder.embed(gen);
    return e.map((g) => imageScore(g, refs));
  };
  const scores = await score();
  const emb = await embedder.embed(gen);
  const D = emb[0]!.length;
  const flat = (vs: Float32Array[]) => {
    const out = new Float32Array(vs.length * D);
    vs.forEach((v, i) => out.set(v, i * D));
    return out;
  };
  await writeSafetensors(join(OUT, "eval-inputs.safetensors"), {
    embeddings: { dtype: "F32", shape: [N, D], data: flat(emb) },
    real_embeddings: { dtype: "F32", shape: [R, D], data: flat(refs) },
    scores: { dtype: "F32", shape: [N], data: Float32Array.from(scores) }, // F32: bench/score-patches.py's reader (reused by eval.py) reads F32 and U8
  });
  if (values["export-only"]) process.exit(0);

  const seconds = (await timeIt(score, Number(values.iters))) / N;
  process.stderr.write(`eval bench (ours, ${N} images, ${threads} threads): ${(1 / seconds).toFixed(1)} images/s\n`);
  // FLOPs per image: the embedder's graph (lib/eval/embeddings.ts graphEmbedder) built once more to count it.
  const ge = loadGraphEncoder(RAW_ENCODER);
  const g = new G.Graph();
  const S = ge.encoder.imageSize;
  const split = countFlops([ge.encoder.forward(new Params(g, ge.source), g.input("images", [1, 3, S, S])).global!]);
  console.log(JSON.stringify({ seconds, peakRssMB: process.resourceUsage().maxRSS / 1024, imagesPerSecond: 1 / seconds, images: N, gflops: split.forward / 1e9, ...flopFields(split, { forward: seconds }) }));
}
