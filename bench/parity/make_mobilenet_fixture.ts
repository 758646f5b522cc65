// Reference outputs for lib/models/mobilenet.ts, computed by nsfwjs' own TensorFlow.js model.
//
// Writes tests/fixtures/mobilenet/:
//   <k>_<name>.png               the 224x224 RGB inputs, uint8, lossless (both sides read these pixels)
//   reference.safetensors        tfjs (CPU backend) outputs on those inputs, preprocessed as nsfwjs
//                                does (x / 255, no offset):
//     probs                      F32 [4, 5]      class probabilities (dense_3, softmax)
//     out_relu_gap               F32 [4, 1280]   out_relu averaged over its 7x7 grid
//     block_13_expand_relu_gap   F32 [4, 576]    block_13_expand_relu averaged over its 14x14 grid
//     <layer>_idx / <layer>_val  I32/F32 [256]   spot values of the full maps at flat NCHW indices
//   __metadata__: images (JSON list of file names), tfjs version, backend, command.
//
// The model is loaded from the same files our loader reads (node_modules/nsfwjs/dist/models/
// mobilenet_v2) through a tfjs IOHandler built from the parsed model.json and weight shard, so tfjs
// dequantizes and runs the weights with its own code. Photos are DreamBench's dog/teapot/can 00.jpg,
// squashed to 224x224 by sharp (fit "fill"); the fourth is a procedural cartoon.
// Needs ../shared/data/dreambench relative to the repository root. Tests never run this.
// Usage: bun bench/parity/make_mobilenet_fixture.ts

import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { writeSafetensors } from "../../lib/io/safetensors.ts";
import { readTfjsArtifacts } from "../../lib/models/mobilenet.ts";

const ROOT = resolve(import.meta.dir, "../..");
const OUT = join(ROOT, "tests/fixtures/mobilenet");
const DREAMBENCH = resolve(ROOT, "../shared/data/dreambench");
const S = 224;
const PHOTOS = ["dog", "teapot", "can"];
const LAYERS = ["out_relu", "block_13_expand_relu"] as const;
const SPOTS = 256;

async function photo(subject: string): Promise<Uint8Array> {
  const { data, info } = await sharp(join(DREAMBENCH, subject, "00.jpg"))
    .removeAlpha()
    .toColorspace("srgb")
    .resize(S, S, { fit: "fill" })
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== S || info.height !== S || info.channels !== 3) throw new Error(`${subject}: got ${info.width}x${info.height}x${info.channels}`);
  return new Uint8Array(data);
}

/** A flat-coloured cartoon (shapes with dark outlines on white): a drawing, and small as a PNG. */
function synthetic(): Uint8Array {
  const d = new Uint8Array(S * S * 3).fill(255);
  const shapes: { inside: (x: number, y: number) => number; rgb: [number, number, number] }[] = [
    { inside: (x, y) => Math.hypot(x - 80, y - 95) - 55, rgb: [230, 60, 40] }, // signed distances
    { inside: (x, y) => Math.max(Math.abs(x - 160) - 40, Math.abs(y - 140) - 60), rgb: [40, 110, 220] },
    { inside: (x, y) => Math.hypot((x - 120) / 2, y - 40) - 18, rgb: [250, 200, 30] },
    { inside: (x, y) => Math.max(Math.abs(x - 60) - 30, Math.abs(y - 190) - 14, -(x - 60 + y - 190)), rgb: [40, 170, 80] },
  ];
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const i = (y * S + x) * 3;
      for (const s of shapes) {
        const dist = s.inside(x, y);
        if (dist <= 0) d.set(dist > -3 ? [20, 20, 20] : s.rgb, i);
      }
    }
  }
  return d;
}

/** Deterministic spot indices (a fixed LCG) into a tensor of `n` elements. */
function spots(n: number, seed: number): Int32Array {
  const idx = new Int32Array(SPOTS);
  let s = seed >>> 0;
  for (let i = 0; i < SPOTS; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    idx[i] = s % n;
  }
  return idx;
}

async function main() {
  await tf.setBackend("cpu");
  await tf.ready();
  const art = readTfjsArtifacts();
  const bytes = art.weightData.slice().buffer;
  const model = await tf.loadLayersModel({
    load: async () => ({
      modelTopology: art.modelJson.modelTopology as never,
      weightSpecs: art.weightSpecs as never,
      weightData: bytes,
      format: "layers-model",
    }),
  });
  const probe = tf.model({ inputs: model.inputs, outputs: [model.outputs[0]!, ...LAYERS.map((n) => model.getLayer(n).output as tf.SymbolicTensor)] });

  const names = [...PHOTOS, "synthetic"];
  const pixels = [...(await Promise.all(PHOTOS.map(photo))), synthetic()];
  mkdirSync(OUT, { recursive: true });
  const files: string[] = [];
  for (const [k, px] of pixels.entries()) {
    const file = `${k}_${names[k]}.png`;
    await sharp(px, { raw: { width: S, height: S, channels: 3 } }).png({ compressionLevel: 9 }).toFile(join(OUT, file));
    files.push(file);
  }

  const B = pixels.length;
  const hwc = new Uint8Array(B * S * S * 3);
  pixels.forEach((p, k) => hwc.set(p, k * S * S * 3));
  // nsfwjs' NSFWJS.infer: img.toFloat().div(255), no offset.
  const x = tf.tidy(() => tf.tensor4d(hwc, [B, S, S, 3], "int32").toFloat().div(tf.scalar(255)));
  const outs = probe.predict(x) as tf.Tensor[];
  const tensors: Record<string, { dtype: "F32" | "I32"; shape: number[]; data: Float32Array | Int32Array }> = {};
  tensors.probs = { dtype: "F32", shape: [B, 5], data: (await outs[0]!.data()) as Float32Array };
  for (const [j, name] of LAYERS.entries()) {
    const t = outs[j + 1]!; // NHWC
    const [, h, w, c] = t.shape as [number, number, number, number];
    const gap = tf.tidy(() => t.mean([1, 2]));
    tensors[`${name}_gap`] = { dtype: "F32", shape: [B, c], data: (await gap.data()) as Float32Array };
    const nhwc = (await t.data()) as Float32Array;
    const idx = spots(B * c * h * w, 1234 + j);
    const val = new Float32Array(SPOTS);
    idx.forEach((flat, i) => {
      // flat is an NCHW index; read the NHWC element.
      const n = Math.floor(flat / (c * h * w));
      const ch = Math.floor(flat / (h * w)) % c;
      const yx = flat % (h * w);
      val[i] = nhwc[(n * h * w + yx) * c + ch]!;
    });
    tensors[`${name}_idx`] = { dtype: "I32", shape: [SPOTS], data: idx };
    tensors[`${name}_val`] = { dtype: "F32", shape: [SPOTS], data: val };
    console.log(`${name}: NHWC [${t.shape.join(", ")}]`);
  }
  await writeSafetensors(join(OUT, "reference.safetensors"), tensors, {
    images: JSON.stringify(files),
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    model: "nsfwjs 4.4.0 dist/models/mobilenet_v2",
    command: "bun bench/parity/make_mobilenet_fixture.ts",
  });
  const probs = tensors.probs.data;
  for (let k = 0; k < B; k++) console.log(files[k], Array.from(probs.slice(k * 5, k * 5 + 5), (v) => v.toFixed(4)).join(" "));
}

await main();
