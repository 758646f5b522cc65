// safetensors read/write (https://github.com/huggingface/safetensors, format section).
// Layout: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON header, then the data section.
// The header maps tensor name -> { dtype, shape, data_offsets: [begin, end] } (offsets relative to
// the start of the data section) plus an optional "__metadata__" string -> string map.
//
// Reading maps the file (Bun.mmap, MAP_PRIVATE) and hands out typed-array views on the mapped
// bytes: no copy, no allocation per tensor. A JS ArrayBuffer holds at most 4 GiB, so a larger file
// gets one mapping per tensor instead of one for the whole file (same views, same API); without
// Bun.mmap, files are read with readFileSync (or per tensor past 2 GiB). Caveats of the mapping:
//  - writing into a view changes this process's copy only (copy-on-write), never the file, but
//    every view of the same open file sees the change;
//  - truncating the file in place while it is mapped crashes the process (SIGBUS). Our own writes
//    replace files by rename (lib/io/atomic.ts), which is safe: the old inode stays mapped.
// Writing follows the reference implementation byte for byte: tensors ordered by dtype (widest
// first, so every tensor's data is aligned to its element size) then by name, compact JSON header
// padded with spaces to a multiple of 8 bytes.

import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { extname } from "node:path";
import { writeFileAtomic } from "./atomic.ts";
import { UserError } from "./errors.ts";

/** dtypes of the safetensors format, in the reference implementation's order (narrow to wide). */
export const DTYPES = [
  "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16",
  "I32", "U32", "F32", "F64", "I64", "U64",
] as const;
export type Dtype = (typeof DTYPES)[number];

const DTYPE_SIZE: Record<Dtype, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};

/** Bytes per element of a dtype. */
export function dtypeSize(dtype: Dtype): number {
  return DTYPE_SIZE[dtype];
}

export function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZE, s);
}

/** The typed arrays `view` returns (and `writeSafetensors` accepts). */
export type TensorArray =
  | Float32Array | Float64Array | Uint16Array | Int16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | Int8Array | Uint8Array;

type ArrayCtor = new (buffer: ArrayBuffer, byteOffset: number, length: number) => TensorArray;

/** The typed array used for each dtype. F16/BF16 are raw bits (Uint16Array); FP8 and BOOL bytes. */
const VIEW_CTOR: Record<Dtype, ArrayCtor> = {
  BOOL: Uint8Array, U8: Uint8Array, I8: Int8Array, F8_E5M2: Uint8Array, F8_E4M3: Uint8Array,
  F8_E8M0: Uint8Array, I16: Int16Array, U16: Uint16Array, F16: Uint16Array, BF16: Uint16Array,
  I32: Int32Array, U32: Uint32Array, F32: Float32Array, F64: Float64Array, I64: BigInt64Array,
  U64: BigUint64Array,
};

export interface TensorInfo {
  dtype: Dtype;
  shape: number[];
  /** Absolute offset of the tensor's first byte in the file (8 + header length + begin). */
  byteOffset: number;
  byteLength: number;
}

export interface SafetensorsFile {
  readonly path: string;
  /** N: the length in bytes of the JSON header (with its padding), as stored in the first 8 bytes. */
  readonly headerByteLength: number;
  /** Absolute file offset of the data section: 8 + headerByteLength. */
  readonly dataStart: number;
  /** The `__metadata__` map ({} when absent). */
  readonly metadata: Record<string, string>;
  /** Tensor names in file (data offset) order. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /**
   * A typed array on the file's bytes, without copying: Float32Array for F32, Uint16Array (raw
   * bits) for F16/BF16, BigInt64Array for I64, Int32Array for I32, Uint8Array for U8/BOOL/FP8, ...
   * Typed arrays must start at a multiple of their element size; when a tensor's absolute offset
   * is not (files from other writers may do this; ours never do), this returns a copy instead.
   */
  view(name: string): TensorArray;
  /** The tensor's raw little-endian bytes, a view on the file (never copied). */
  bytes(name: string): Uint8Array;
  /**
   * The tensor as float32: the view itself for (aligned) F32, otherwise a converted copy
   * (F16, BF16, F64, integers; I64/U64 lose precision beyond 2^24 like any float32). FP8 is refused.
   */
  float32(name: string): Float32Array;
}

/** A safetensors file that cannot be read or written; the message names the file. */
export class SafetensorsError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

// ---------------------------------------------------------------------------------------------
// Pickled checkpoints

const PICKLE_EXTENSIONS = new Set([".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"]);

/**
 * Throws a UserError for pickled PyTorch checkpoints (.bin, .pt, .pth, .ckpt, .pkl, .pickle):
 * loading a pickle runs code stored in the file. Returns normally for any other path.
 */
export function refuseUnsafeWeights(path: string): void {
  const ext = extname(path).toLowerCase();
  if (!PICKLE_EXTENSIONS.has(ext)) return;
  throw new UserError(pickleRefusal(path, `it has the extension ${ext}`));
}

function pickleRefusal(path: string, why: string): string {
  const out = path.replace(/\.[^./\\]*$/, "") + ".safetensors";
  return [
    `${path}: refusing to load a pickled PyTorch checkpoint (${why}).`,
    "Loading a pickle executes code stored in the file, so anyone who can change the file can run",
    "code on this machine; patchdpo only reads safetensors.",
    "What to do: many model repositories already ship a .safetensors file next to the pickle",
    "(model.safetensors, diffusion_pytorch_model.safetensors, ip-adapter*.safetensors): use it. Otherwise",
    "convert the file once, on a machine you trust, with the `safetensors` Python package (pip install safetensors):",
    `  python3 -c "import torch, safetensors.torch as st; sd = torch.load('${path}', map_location='cpu', weights_only=True); st.save_file({k: v.contiguous() for k, v in sd.items()}, '${out}')"`,
    "(If the checkpoint nests its weights, e.g. {'state_dict': {...}} or IP-Adapter's",
    "{'image_proj': {...}, 'ip_adapter': {...}}, flatten it to 'image_proj.<key>' / 'ip_adapter.<key>' names first.)",
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Half-precision helpers

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // safetensors is little-endian and our views reinterpret bytes in place.
  throw new Error("lib/io/safetensors.ts assumes a little-endian platform");
}

/** IEEE half-precision bits -> number. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** bfloat16 bits -> number (bf16 is the top half of a float32). */
export function bf16ToF32(b: number): number {
  scratchU32[0] = (b & 0xffff) << 16;
  return scratchF32[0]!;
}

/** number -> IEEE half-precision bits, rounding to nearest even; overflow gives ±Infinity. */
export function f32ToF16Bits(value: number): number {
  scratchF32[0] = value;
  const x = scratchU32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // NaN stays quiet NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++;
    return sign | half;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is still correct
  return sign | h;
}

/** number -> bfloat16 bits, rounding to nearest even. */
export function f32ToBf16Bits(value: number): number {
  scratchF32[0] = value;
  const x = scratchU32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** F16 bits -> Float32Array (native Float16Array conversion where the runtime has it). */
export function f16ArrayToF32(bits: Uint16Array): Float32Array {
  if (typeof Float16Array !== "undefined") {
    return new Float32Array(new Float16Array(bits.buffer as ArrayBuffer, bits.byteOffset, bits.length));
  }
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16ToF32(bits[i]!);
  return out;
}

/** BF16 bits -> Float32Array. */
export function bf16ArrayToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i]! << 16;
  return out;
}

/** Float32Array -> F16 bits (round to nearest even). */
export function f32ArrayToF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]!);
  return out;
}

/** Float32Array -> BF16 bits (round to nearest even). */
export function f32ArrayToBf16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToBf16Bits(values[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** The reference implementation's limit on the JSON header. */
const MAX_HEADER_BYTES = 100_000_000;

interface Entry extends TensorInfo {
  name: string;
  begin: number;
  end: number;
}

/** Largest file mapped as one typed array (JSC's ArrayBuffer limit is 4 GiB). */
const WHOLE_MAP_LIMIT = 2 ** 32;

/** Reads byte ranges of the file: views on one mapping, or per-range mappings for huge files. */
interface ByteSource {
  /** Bytes [offset, offset + length) of the file, as a view whenever possible. */
  range(offset: number, length: number): Uint8Array;
}

function openSource(path: string, size: number, mapping: "auto" | "per-tensor"): ByteSource {
  const hasMmap = typeof Bun !== "undefined" && typeof Bun.mmap === "function";
  if (mapping === "auto" && size <= WHOLE_MAP_LIMIT) {
    let whole: Uint8Array | undefined;
    try {
      // MAP_PRIVATE: a stray write into a view must never reach the user's weights file.
      whole = hasMmap ? Bun.mmap(path, { shared: false }) : size < 2 ** 31 ? readFileSync(path) : undefined;
    } catch (err) {
      if (!(err instanceof RangeError)) throw err; // out of address space: map per tensor instead
    }
    if (whole) {
      const w = whole;
      return { range: (offset, length) => w.subarray(offset, offset + length) };
    }
  }
  // Files over 4 GiB (an SDXL UNet in fp32): map (or read) each tensor on its own.
  return {
    range(offset, length) {
      if (length === 0) return new Uint8Array(0); // mmap size 0 would mean "to the end of the file"
      if (hasMmap) return Bun.mmap(path, { shared: false, offset, size: length });
      const out = new Uint8Array(length);
      const fd = openSync(path, "r");
      try {
        for (let done = 0; done < length; ) {
          const n = readSync(fd, out, done, length - done, offset + done);
          if (n === 0) throw new SafetensorsError(`${path}: file shrank while being read`);
          done += n;
        }
      } finally {
        closeSync(fd);
      }
      return out;
    },
  };
}

function looksLikePickle(head: Uint8Array): string | undefined {
  if (head[0] === 0x50 && head[1] === 0x4b) return "it is a zip archive, as torch.save writes";
  if (head[0] === 0x80 && head[1] !== undefined && head[1] >= 2 && head[1] <= 5) return "it starts with a pickle header";
  return undefined;
}

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

export interface OpenOptions {
  /**
   * "auto" (default): one mapping of the whole file when it is at most 4 GiB, else one per tensor.
   * "per-tensor": always one mapping per tensor (what files over 4 GiB use; exposed for tests).
   */
  mapping?: "auto" | "per-tensor";
}

/** Opens and validates a safetensors file. Throws a SafetensorsError naming the file when it is bad. */
export function openSafetensors(path: string, options: OpenOptions = {}): SafetensorsFile {
  refuseUnsafeWeights(path);
  const bad = (what: string) => new SafetensorsError(`${path}: ${what}`);
  if (!existsSync(path)) throw bad("no such file");
  const st = statSync(path);
  if (!st.isFile()) throw bad("not a regular file");
  const size = st.size;
  if (size < 8) {
    throw bad(`truncated: the file is ${size} bytes, shorter than the 8-byte header length that starts every safetensors file (an interrupted download or copy?)`);
  }
  const src = openSource(path, size, options.mapping ?? "auto");
  const lead = src.range(0, 8);
  const n64 = new DataView(lead.buffer, lead.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(size - 8)) {
    const pickle = looksLikePickle(lead);
    if (pickle) throw bad(pickleRefusal(path, pickle).slice(path.length + 2));
    throw bad(`header length ${n64} is larger than the rest of the file (${size - 8} bytes): the file is truncated or is not a safetensors file`);
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES) throw bad(`header length ${n} exceeds the format's limit of ${MAX_HEADER_BYTES} bytes: not a safetensors file?`);
  const dataStart = 8 + n;
  const dataLength = size - dataStart;

  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(src.range(8, n));
    header = JSON.parse(text);
  } catch (err) {
    throw bad(`malformed JSON header (${n} bytes at offset 8): ${(err as Error).message}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw bad("malformed header: the JSON header must be an object of tensor name -> { dtype, shape, data_offsets }");
  }

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw bad(`malformed header: "__metadata__" must be an object of strings`);
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") throw bad(`malformed header: "__metadata__"."${k}" must be a string (got ${JSON.stringify(v)})`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (raw === null || typeof raw !== "object") throw bad(`malformed header: ${where} must be an object { dtype, shape, data_offsets }`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (!isDtype(dtype)) throw bad(`${where}: unknown dtype ${JSON.stringify(dtype)} (known: ${DTYPES.join(", ")})`);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) throw bad(`${where}: shape must be an array of non-negative integers (got ${JSON.stringify(shape)})`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw bad(`${where}: data_offsets must be [begin, end] with non-negative integers (got ${JSON.stringify(offsets)})`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw bad(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
    const d = dtype as Dtype;
    const sh = shape as number[];
    const expected = numel(sh) * DTYPE_SIZE[d];
    if (end - begin !== expected) {
      throw bad(`${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${sh.join(", ")}] of ${d} needs ${expected}`);
    }
    if (end > dataLength) {
      throw bad(`${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataLength} bytes): the file is truncated (an interrupted download or copy?)`);
    }
    entries.push({ name, dtype: d, shape: sh, begin, end, byteOffset: dataStart + begin, byteLength: end - begin });
  }

  // Like the reference: tensors tile the data section exactly, in offset order, no holes or overlaps.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev: Entry | undefined;
  for (const e of entries) {
    if (e.begin < cursor) throw bad(`tensor "${e.name}": data_offsets [${e.begin}, ${e.end}] overlap tensor "${prev!.name}" [${prev!.begin}, ${prev!.end}]`);
    if (e.begin > cursor) throw bad(`tensor "${e.name}": data_offsets [${e.begin}, ${e.end}] leave a gap of ${e.begin - cursor} unused bytes after offset ${cursor}`);
    cursor = e.end;
    prev = e;
  }
  if (cursor !== dataLength) throw bad(`${dataLength - cursor} trailing bytes after the last tensor (data section is ${dataLength} bytes, tensors end at ${cursor})`);

  const byName = new Map(entries.map((e) => [e.name, e]));
  const get = (name: string): Entry => {
    const e = byName.get(name);
    if (!e) throw new SafetensorsError(`${path}: no tensor named "${name}" (${missingHint(name, [...byName.keys()])})`);
    return e;
  };
  const cache = new Map<string, Uint8Array>();
  const bytes = (name: string): Uint8Array => {
    const e = get(name);
    let b = cache.get(name);
    if (!b) {
      try {
        b = src.range(e.byteOffset, e.byteLength);
      } catch (err) {
        if (!(err instanceof RangeError)) throw err;
        throw new SafetensorsError(`${path}: tensor "${name}" is ${e.byteLength} bytes, more than one typed array can hold here (4 GiB); split it when converting the checkpoint`);
      }
      cache.set(name, b);
    }
    return b;
  };
  const view = (name: string): TensorArray => {
    const e = get(name);
    const b = bytes(name);
    const Ctor = VIEW_CTOR[e.dtype];
    const elem = DTYPE_SIZE[e.dtype];
    if (b.byteOffset % elem === 0) return new Ctor(b.buffer as ArrayBuffer, b.byteOffset, e.byteLength / elem);
    // Misaligned for its element type: a typed array cannot start here, so copy.
    return new Ctor(b.slice().buffer, 0, e.byteLength / elem);
  };

  return {
    path,
    headerByteLength: n,
    dataStart,
    metadata,
    names: () => entries.map((e) => e.name),
    has: (name) => byName.has(name),
    info: (name) => {
      const { dtype, shape, byteOffset, byteLength } = get(name);
      return { dtype, shape: [...shape], byteOffset, byteLength };
    },
    view,
    bytes,
    float32: (name) => {
      const e = get(name);
      const v = view(name);
      switch (e.dtype) {
        case "F32":
          return v as Float32Array;
        case "F16":
          return f16ArrayToF32(v as Uint16Array);
        case "BF16":
          return bf16ArrayToF32(v as Uint16Array);
        case "I64":
        case "U64": {
          const src = v as BigInt64Array | BigUint64Array;
          const out = new Float32Array(src.length);
          for (let i = 0; i < src.length; i++) out[i] = Number(src[i]!);
          return out;
        }
        case "F8_E5M2":
        case "F8_E4M3":
        case "F8_E8M0":
          throw new SafetensorsError(`${path}: tensor "${name}" is ${e.dtype}; converting FP8 to float32 is not supported`);
        default:
          return Float32Array.from(v as Exclude<TensorArray, BigInt64Array | BigUint64Array>);
      }
    },
  };
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

function missingHint(name: string, names: string[]): string {
  if (names.length === 0) return "the file holds no tensors";
  const closest = names
    .map((n) => ({ n, d: editDistance(name, n) }))
    .sort((a, b) => a.d - b.d || (a.n < b.n ? -1 : 1))
    .slice(0, 5)
    .map((x) => `"${x.n}"`);
  return `the file holds ${names.length} tensor${names.length === 1 ? "" : "s"}; closest names: ${closest.join(", ")}`;
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface TensorInput {
  dtype: Dtype;
  shape: readonly number[];
  /**
   * Little-endian element data: the typed array `view` returns for this dtype, or raw bytes
   * (a Uint8Array of numel * dtypeSize bytes) for any dtype. For F16/BF16 a Float32Array of numel
   * values is also accepted and converted (round to nearest even).
   */
  data: ArrayBufferView;
}

function tensorBytes(path: string, name: string, t: TensorInput): Uint8Array {
  const bad = (what: string) => new SafetensorsError(`${path}: cannot write tensor "${name}": ${what}`);
  if (name === "__metadata__" || name === "") throw bad("reserved or empty tensor name");
  if (!isDtype(t.dtype)) throw bad(`unknown dtype ${JSON.stringify(t.dtype)} (known: ${DTYPES.join(", ")})`);
  if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) throw bad(`shape must be non-negative integers (got ${JSON.stringify(t.shape)})`);
  const count = numel(t.shape);
  let data = t.data;
  if ((t.dtype === "F16" || t.dtype === "BF16") && data instanceof Float32Array) {
    if (data.length !== count) throw bad(`shape [${t.shape.join(", ")}] has ${count} elements but the Float32Array has ${data.length}`);
    data = t.dtype === "F16" ? f32ArrayToF16(data) : f32ArrayToBf16(data);
  }
  const Ctor = VIEW_CTOR[t.dtype];
  if (!(data instanceof Uint8Array) && !(data instanceof Ctor)) {
    throw bad(`dtype ${t.dtype} wants a ${Ctor.name} (or raw bytes as a Uint8Array), got ${data.constructor.name}`);
  }
  const want = count * DTYPE_SIZE[t.dtype];
  if (data.byteLength !== want) throw bad(`shape [${t.shape.join(", ")}] of ${t.dtype} needs ${want} bytes, the data has ${data.byteLength}`);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** The file as chunks: the 8-byte length + padded header, then each tensor's bytes (not copied). */
function encodeChunks(
  path: string,
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Uint8Array[] {
  const rank = (d: Dtype) => DTYPES.indexOf(d);
  const items = Object.entries(tensors)
    .map(([name, t]) => ({ name, t, bytes: tensorBytes(path, name, t) }))
    // Widest dtype first, then by name (code-unit order, as Rust compares strings by bytes for
    // ASCII names): every tensor then starts aligned to its element size.
    .sort((a, b) => rank(b.t.dtype) - rank(a.t.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // Built by hand so that key order is exactly ours (JS objects move integer-like keys first).
  const parts: string[] = [];
  if (metadata !== undefined) {
    const meta = Object.keys(metadata)
      .sort()
      .map((k) => {
        const v = metadata[k];
        if (typeof v !== "string") throw new SafetensorsError(`${path}: metadata "${k}" must be a string (got ${typeof v})`);
        return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
      });
    parts.push(`"__metadata__":{${meta.join(",")}}`);
  }
  let offset = 0;
  for (const { name, t, bytes } of items) {
    const info = `{"dtype":"${t.dtype}","shape":[${t.shape.join(",")}],"data_offsets":[${offset},${offset + bytes.byteLength}]}`;
    parts.push(`${JSON.stringify(name)}:${info}`);
    offset += bytes.byteLength;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = json.length + ((8 - (json.length % 8)) % 8);
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return [head, ...items.map((i) => i.bytes)];
}

/** The complete file in memory (for small files and tests). */
export function serializeSafetensors(
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Uint8Array {
  const chunks = encodeChunks("<memory>", tensors, metadata);
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.byteLength, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

/**
 * Writes a safetensors file atomically (temp file + rename). Byte-identical to the reference
 * implementation for the same tensors (metadata keys sorted; the reference's order is a hash map's).
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, encodeChunks(path, tensors, metadata));
}

// ---------------------------------------------------------------------------------------------
// Non-finite weights

/**
 * Index of the first NaN or infinite value of a floating-point tensor (-1: none, or not a float
 * dtype). Reads the raw bits (exponent all ones), so half-precision tensors are not converted.
 */
export function firstNonFinite(file: SafetensorsFile, name: string): number {
  const { dtype } = file.info(name);
  const v = file.view(name);
  if (dtype === "F32" || dtype === "F64") {
    const a = v as Float32Array | Float64Array;
    for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
    return -1;
  }
  const mask = dtype === "F16" ? 0x7c00 : dtype === "BF16" ? 0x7f80 : 0;
  if (!mask) return -1;
  const bits = v as Uint16Array;
  for (let i = 0; i < bits.length; i++) if ((bits[i]! & mask) === mask) return i;
  return -1;
}

const finiteChecked = new Set<string>();

/**
 * Throws a SafetensorsError naming the tensor and position when a weight file holds NaN or
 * infinite values (a diverged training run, a bad conversion): such weights give black images or
 * NaN losses far from the cause. Each file version (path, size, mtime) is scanned once per process.
 */
export function assertFiniteWeights(path: string, what = "weight file"): void {
  const st = statSync(path);
  const key = `${path}\0${st.size}\0${st.mtimeMs}`;
  if (finiteChecked.has(key)) return;
  const f = openSafetensors(path);
  for (const name of f.names()) {
    const i = firstNonFinite(f, name);
    if (i < 0) continue;
    const shape = f.info(name).shape;
    const at: number[] = [];
    let r = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      at.unshift(r % shape[d]!);
      r = Math.floor(r / shape[d]!);
    }
    throw new SafetensorsError(
      `${path}: ${what} tensor "${name}" holds ${Number.isNaN(f.float32(name)[i]!) ? "NaN" : "an infinite value"} at [${at.join(", ")}] (shape [${shape.join(", ")}]): ` +
        `the weights are damaged (a diverged training run or a bad conversion). Use another file, or retrain or reconvert this one`,
    );
  }
  finiteChecked.add(key);
}
