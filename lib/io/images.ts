// Image I/O and the evaluation preprocessing.
//
// Decoding and encoding go through sharp; resampling is our own TypeScript port of the arithmetic
// of Pillow's ImagingResample (separable convolution, support widened by the downscale factor,
// 22-bit integer coefficients, uint8 clipping between the passes), so that DINO / CLIP-I scores
// are computed on the same pixels as the Python evaluation (torchvision Resize(256, BICUBIC) +
// CenterCrop(224) on a PIL image). sharp's own resize kernels differ from PIL's by several grey
// levels, which is enough to move published-number comparisons.

import { readFile } from "node:fs/promises";
import sharp from "sharp";
import { writeFileAtomic } from "./atomic.ts";
import { UserError } from "./errors.ts";

/** 8-bit RGB image, row-major HWC (`data[(y * width + x) * 3 + c]`). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export const IMAGENET_MEAN: readonly number[] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly number[] = [0.229, 0.224, 0.225];
export const CLIP_MEAN: readonly number[] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly number[] = [0.26862954, 0.26130258, 0.27577711];

function imageError(path: string, reason: string, cause: unknown): UserError {
  return new UserError(`cannot read image ${path}: ${reason}`, { cause });
}

function checkSize(what: string, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`${what}: size must be positive integers, got ${width}x${height}`);
  }
}

/**
 * Decode an image file (anything sharp reads: JPEG, PNG, WebP, GIF (first frame), TIFF, AVIF...)
 * into 8-bit sRGB.
 * - EXIF orientation is applied (PIL's Image.open does not; DreamBench photos carry no tag).
 * - Alpha is composited over white (PIL's convert("RGB") would drop it and expose whatever colour
 *   the transparent pixels hold; white matches our clean-background references).
 * - Greyscale becomes RGB by replicating the channel; 16-bit input is scaled to 8 bits.
 * - An embedded ICC profile is converted to sRGB by sharp (PIL ignores profiles).
 * Throws a UserError `cannot read image <path>: <reason>` when the file is missing or undecodable.
 */
export async function loadImage(path: string): Promise<RgbImage> {
  let bytes: Buffer;
  try {
    // Read ourselves rather than handing sharp the path: a clean ENOENT message, and no stale
    // result from libvips' operation cache when a file is rewritten in place.
    bytes = await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reason =
      code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory" : String((e as Error).message);
    throw imageError(path, reason, e);
  }
  const decode = async () =>
    // failOn "error": accept files with benign decoder warnings, as PIL does.
    sharp(bytes, { failOn: "error" })
      .rotate()
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace("srgb")
      .raw()
      .toBuffer({ resolveWithObject: true });
  const { data, info } = await decode().catch((e: unknown) => {
    throw imageError(path, e instanceof Error ? e.message : String(e), e);
  });
  const { width, height, channels } = info;
  if (channels === 3 && data.length === width * height * 3) {
    return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  }
  if (channels === 1 && data.length === width * height) {
    const rgb = new Uint8Array(width * height * 3);
    for (let i = 0, j = 0; i < data.length; i++, j += 3) rgb[j] = rgb[j + 1] = rgb[j + 2] = data[i]!;
    return { width, height, data: rgb };
  }
  throw imageError(path, `unexpected decoded layout (${channels} channels, ${data.length} bytes)`, undefined);
}

// ---------------------------------------------------------------------------------------------
// PIL-compatible separable resampling.

interface Filter {
  support: number;
  weight(x: number): number;
}

// Cubic convolution with a = -0.5 (Keys), written with the same operation order as Pillow so that
// the double-precision weights, and hence the rounded integer coefficients, are identical.
const BICUBIC: Filter = {
  support: 2,
  weight(x) {
    if (x < 0) x = -x;
    if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * -0.5;
    return 0;
  },
};

const BILINEAR: Filter = {
  support: 1,
  weight(x) {
    if (x < 0) x = -x;
    return x < 1 ? 1 - x : 0;
  },
};

// Coefficients carry 22 fractional bits: 8 bits of pixel plus 2 bits of headroom for the negative
// lobes keep every accumulator inside int32.
const PRECISION_BITS = 22;
const HALF = 1 << (PRECISION_BITS - 1);

interface Coeffs {
  ksize: number;
  /** Per output index: first input index and number of taps. */
  bounds: Int32Array;
  /** `ksize` integer coefficients per output index. */
  k: Int32Array;
}

function precomputeCoeffs(inSize: number, outSize: number, filter: Filter): Coeffs {
  const scale = inSize / outSize;
  const filterScale = scale < 1 ? 1 : scale; // widen the kernel when shrinking (antialiasing)
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterScale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = filter.weight((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    const base = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x]! / ww : w[x]!;
      // Round half away from zero, as the C cast of (v * 2^22 +- 0.5) does.
      k[base + x] = Math.trunc(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, k };
}

// Output buffers are Uint8ClampedArray: assigning `acc >> 22` clamps to 0..255 for free, which is
// exactly Pillow's clip8.
function horizontalPass(
  src: Uint8Array,
  srcWidth: number,
  firstRow: number,
  rows: number,
  outWidth: number,
  c: Coeffs,
): Uint8Array {
  const out = new Uint8ClampedArray(outWidth * rows * 3);
  const { ksize, bounds, k } = c;
  for (let y = 0; y < rows; y++) {
    const srow = (y + firstRow) * srcWidth * 3;
    let o = y * outWidth * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      const n = bounds[xx * 2 + 1]!;
      let p = srow + bounds[xx * 2]! * 3;
      let kb = xx * ksize;
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let t = 0; t < n; t++, p += 3) {
        const w = k[kb++]!;
        s0 = (s0 + src[p]! * w) | 0;
        s1 = (s1 + src[p + 1]! * w) | 0;
        s2 = (s2 + src[p + 2]! * w) | 0;
      }
      out[o++] = s0 >> PRECISION_BITS;
      out[o++] = s1 >> PRECISION_BITS;
      out[o++] = s2 >> PRECISION_BITS;
    }
  }
  return new Uint8Array(out.buffer);
}

function verticalPass(src: Uint8Array, width: number, outHeight: number, c: Coeffs, rowShift: number): Uint8Array {
  const rowLen = width * 3;
  const out = new Uint8ClampedArray(rowLen * outHeight);
  const { ksize, bounds, k } = c;
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2]! - rowShift;
    const n = bounds[yy * 2 + 1]!;
    const kb = yy * ksize;
    const o = yy * rowLen;
    for (let i = 0; i < rowLen; i++) {
      let s = HALF;
      let p = ymin * rowLen + i;
      for (let t = 0; t < n; t++, p += rowLen) s = (s + src[p]! * k[kb + t]!) | 0;
      out[o + i] = s >> PRECISION_BITS;
    }
  }
  return new Uint8Array(out.buffer);
}

function resampleSeparable(img: RgbImage, width: number, height: number, filter: Filter): RgbImage {
  checkSize("resize", width, height);
  if (width === img.width && height === img.height) {
    return { width, height, data: img.data.slice() };
  }
  const vert = precomputeCoeffs(img.height, height, filter);
  let src = img.data;
  let rowShift = 0;
  if (width !== img.width) {
    // Only the rows the vertical pass will read need a horizontal pass.
    const first = vert.bounds[0]!;
    const last = vert.bounds[(height - 1) * 2]! + vert.bounds[(height - 1) * 2 + 1]!;
    src = horizontalPass(img.data, img.width, first, last - first, width, precomputeCoeffs(img.width, width, filter));
    rowShift = first;
  }
  if (height !== img.height) {
    src = verticalPass(src, width, height, vert, rowShift);
  }
  return { width, height, data: src };
}

/**
 * PIL `Image.resize((width, height), Image.BICUBIC)` on an RGB image, bit-exact: cubic kernel
 * a = -0.5, support 2 scaled by the downscale factor, 22-bit fixed-point coefficients, horizontal
 * pass then vertical pass with uint8 clipping in between.
 */
export function resizeBicubic(img: RgbImage, width: number, height: number): RgbImage {
  return resampleSeparable(img, width, height, BICUBIC);
}

/** PIL `Image.resize((width, height), Image.BILINEAR)` (triangle filter, antialiased), bit-exact. */
export function resizeBilinear(img: RgbImage, width: number, height: number): RgbImage {
  return resampleSeparable(img, width, height, BILINEAR);
}

/**
 * PIL `Image.resize((width, height), Image.NEAREST)`: the source coordinate of output pixel i is
 * trunc(s/2 + i*s) with s = in/out, accumulated in doubles as PIL's scale-affine loop does.
 */
export function resizeNearest(img: RgbImage, width: number, height: number): RgbImage {
  checkSize("resize", width, height);
  if (width === img.width && height === img.height) {
    return { width, height, data: img.data.slice() };
  }
  const nearestTable = (inSize: number, outSize: number): Int32Array => {
    const step = inSize / outSize;
    const table = new Int32Array(outSize);
    let pos = step * 0.5;
    for (let i = 0; i < outSize; i++, pos += step) table[i] = Math.min(inSize - 1, Math.trunc(pos));
    return table;
  };
  const xs = nearestTable(img.width, width);
  const ys = nearestTable(img.height, height);
  const out = new Uint8Array(width * height * 3);
  const src = img.data;
  for (let y = 0, o = 0; y < height; y++) {
    const row = ys[y]! * img.width * 3;
    for (let x = 0; x < width; x++, o += 3) {
      const p = row + xs[x]! * 3;
      out[o] = src[p]!;
      out[o + 1] = src[p + 1]!;
      out[o + 2] = src[p + 2]!;
    }
  }
  return { width, height, data: out };
}

/**
 * torchvision `Resize(size)` with bicubic interpolation on a PIL image: the shorter side becomes
 * `size`, the longer `int(size * long / short)` (truncated, not rounded).
 */
export function resizeShortSide(img: RgbImage, size: number): RgbImage {
  checkSize("resizeShortSide", size, size);
  const { width: w, height: h } = img;
  if (w <= h) return resizeBicubic(img, size, Math.trunc((size * h) / w));
  return resizeBicubic(img, Math.trunc((size * w) / h), size);
}

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Crop a box; parts of the box outside the image are black, as with PIL's Image.crop. */
export function crop(img: RgbImage, left: number, top: number, width: number, height: number): RgbImage {
  checkSize("crop", width, height);
  const out = new Uint8Array(width * height * 3);
  const x0 = Math.max(0, -left);
  const x1 = Math.min(width, img.width - left);
  if (x1 > x0) {
    for (let y = Math.max(0, -top); y < Math.min(height, img.height - top); y++) {
      const s = ((y + top) * img.width + left + x0) * 3;
      out.set(img.data.subarray(s, s + (x1 - x0) * 3), (y * width + x0) * 3);
    }
  }
  return { width, height, data: out };
}

/**
 * torchvision `CenterCrop((height, width))`: offsets `int(round((H - h) / 2))` with Python's
 * half-to-even rounding (a 337-wide image cropped to 224 starts at 56, not 57); an image smaller
 * than the crop is first zero-padded by floor(d/2) before and ceil(d/2) after.
 */
export function centerCrop(img: RgbImage, width: number, height: number): RgbImage {
  checkSize("centerCrop", width, height);
  const padLeft = width > img.width ? Math.floor((width - img.width) / 2) : 0;
  const padTop = height > img.height ? Math.floor((height - img.height) / 2) : 0;
  const paddedW = Math.max(width, img.width);
  const paddedH = Math.max(height, img.height);
  const left = roundHalfEven((paddedW - width) / 2) - padLeft;
  const top = roundHalfEven((paddedH - height) / 2) - padTop;
  return crop(img, left, top, width, height);
}

// ---------------------------------------------------------------------------------------------
// Tensors.

function checkNorm(mean: readonly number[], std: readonly number[]): void {
  if (mean.length !== 3 || std.length !== 3 || std.some((s) => s === 0)) {
    throw new RangeError(`mean and std need 3 entries each and a non-zero std, got [${mean}] / [${std}]`);
  }
}

/**
 * HWC uint8 -> CHW float32 `(x / 255 - mean) / std`, bit-identical to torchvision
 * ToTensor + Normalize (each step rounded to float32). Writes into `out` at `offset` when given
 * (to fill one image of a batch tensor), else allocates.
 */
export function toCHW(
  img: RgbImage,
  mean: readonly number[],
  std: readonly number[],
  out?: Float32Array,
  offset = 0,
): Float32Array {
  checkNorm(mean, std);
  const plane = img.width * img.height;
  const dst = out ?? new Float32Array(3 * plane);
  if (offset + 3 * plane > dst.length) {
    throw new RangeError(`toCHW: output holds ${dst.length} floats, need ${offset + 3 * plane}`);
  }
  const f = Math.fround;
  const lut = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    for (let v = 0; v < 256; v++) lut[c * 256 + v] = f(f(f(v / 255) - f(mean[c]!)) / f(std[c]!));
  }
  const src = img.data;
  for (let c = 0; c < 3; c++) {
    const base = offset + c * plane;
    const l = c * 256;
    for (let i = 0, p = c; i < plane; i++, p += 3) dst[base + i] = lut[l + src[p]!]!;
  }
  return dst;
}

/**
 * CHW float -> HWC uint8, the inverse of toCHW: `round((x * std + mean) * 255)` clamped to 0..255.
 * Without mean/std the input is taken as [0, 1] values.
 */
export function fromCHW(
  chw: Float32Array,
  width: number,
  height: number,
  mean: readonly number[] = [0, 0, 0],
  std: readonly number[] = [1, 1, 1],
): RgbImage {
  checkSize("fromCHW", width, height);
  checkNorm(mean, std);
  const plane = width * height;
  if (chw.length < 3 * plane) throw new RangeError(`fromCHW: ${chw.length} floats for a 3x${height}x${width} image`);
  const out = new Uint8ClampedArray(plane * 3); // clamps; rounds x.5 to even, so round first
  for (let c = 0; c < 3; c++) {
    const m = mean[c]!;
    const s = std[c]!;
    for (let i = 0, p = c; i < plane; i++, p += 3) out[p] = Math.round((chw[c * plane + i]! * s + m) * 255);
  }
  return { width, height, data: new Uint8Array(out.buffer) };
}

export interface PreprocessOptions {
  /** Shorter side after the bicubic resize (torchvision Resize). Default 256 (DINO eval). */
  resize?: number;
  /** Centre crop side. Default 224. */
  crop?: number;
  mean?: readonly number[];
  std?: readonly number[];
}

/** Resize short side (bicubic, PIL arithmetic), centre crop, normalize: CHW float32. */
export function preprocessImage(img: RgbImage, opts: PreprocessOptions = {}): Float32Array {
  const { resize = 256, crop: side = 224, mean = IMAGENET_MEAN, std = IMAGENET_STD } = opts;
  return toCHW(centerCrop(resizeShortSide(img, resize), side, side), mean, std);
}

/**
 * The DreamBench evaluation preprocessing of an image file. Defaults are DINO's (resize 256,
 * crop 224, ImageNet mean/std); CLIP uses `{ resize: 224, crop: 224, mean: CLIP_MEAN, std: CLIP_STD }`.
 */
export async function preprocess(path: string, opts: PreprocessOptions = {}): Promise<Float32Array> {
  return preprocessImage(await loadImage(path), opts);
}

// ---------------------------------------------------------------------------------------------
// Encoding.

export async function encodePng(img: RgbImage): Promise<Uint8Array> {
  checkSize("encodePng", img.width, img.height);
  if (img.data.length !== img.width * img.height * 3) {
    throw new RangeError(`encodePng: ${img.data.length} bytes for a ${img.width}x${img.height} RGB image`);
  }
  const buf = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .png()
    .toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/** Encode as PNG and write atomically (temp file beside it, fsync, rename); creates parent dirs. */
export async function writePng(path: string, img: RgbImage): Promise<void> {
  await writeFileAtomic(path, await encodePng(img));
}
