import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../lib/io/errors.ts";
import {
  bf16ArrayToF32,
  bf16ToF32,
  f16ArrayToF32,
  f16ToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  openSafetensors,
  refuseUnsafeWeights,
  SafetensorsError,
  serializeSafetensors,
  writeSafetensors,
} from "../../lib/io/safetensors.ts";

const dir = mkdtempSync(join(tmpdir(), "patchdpo-st-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PY = "/usr/bin/python3";
function python(code: string): { ok: boolean; out: string } {
  try {
    const r = Bun.spawnSync([PY, "-c", code], { stdout: "pipe", stderr: "pipe" });
    return { ok: r.exitCode === 0, out: r.stdout.toString() + r.stderr.toString() };
  } catch {
    return { ok: false, out: "no python" };
  }
}
const hasPySafetensors = python("import safetensors.torch, torch").ok;
const hasTorch = hasPySafetensors || python("import torch").ok;

/** A file by hand, per the spec: u64 LE header length, JSON header, data. */
function handFile(header: string, data: Uint8Array = new Uint8Array(0), headerLen?: number): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}
function put(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}
const f32Bytes = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
const ascii = (s: string) => [...new TextEncoder().encode(s)];
const le64 = (n: number) => [n & 0xff, (n >> 8) & 0xff, 0, 0, 0, 0, 0, 0];

describe("byte parity with the reference implementation's own test vectors", () => {
  const six = new Float32Array([0, 1, 2, 3, 4, 5]);

  test("one F32 tensor, header already a multiple of 8", () => {
    const out = serializeSafetensors({ "attn.0": { dtype: "F32", shape: [1, 2, 3], data: six } });
    const json = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    expect(json.length).toBe(64);
    expect([...out]).toEqual([...le64(64), ...ascii(json), ...f32Bytes([0, 1, 2, 3, 4, 5])]);
  });

  test("header padded with spaces to 8-byte alignment", () => {
    const out = serializeSafetensors({ attn0: { dtype: "F32", shape: [1, 1, 2, 3], data: six } });
    const json = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
    expect(json.length).toBe(65);
    expect([...out]).toEqual([...le64(72), ...ascii(json + " ".repeat(7)), ...f32Bytes([0, 1, 2, 3, 4, 5])]);
  });

  test("empty file, with and without metadata", () => {
    expect([...serializeSafetensors({})]).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    const withMeta = serializeSafetensors({}, { framework: "pt" });
    expect([...withMeta]).toEqual([...le64(40), ...ascii('{"__metadata__":{"framework":"pt"}}' + "     ")]);
  });

  test("tensors ordered widest dtype first, then by name; each aligned to its element size", () => {
    const out = serializeSafetensors({
      b: { dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 3]) },
      a: { dtype: "U8", shape: [1], data: new Uint8Array([4]) },
      h: { dtype: "F16", shape: [1], data: new Uint16Array([0x3c00]) },
      z: { dtype: "F32", shape: [1], data: new Float32Array([1]) },
      "10": { dtype: "I64", shape: [1], data: new BigInt64Array([7n]) },
    });
    const n = Number(new DataView(out.buffer).getBigUint64(0, true));
    const header = new TextDecoder().decode(out.subarray(8, 8 + n)).trimEnd();
    expect(header).toBe(
      '{"10":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},' +
        '"z":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
        '"h":{"dtype":"F16","shape":[1],"data_offsets":[12,14]},' +
        '"a":{"dtype":"U8","shape":[1],"data_offsets":[14,15]},' +
        '"b":{"dtype":"U8","shape":[3],"data_offsets":[15,18]}}',
    );
  });
});

describe("round trip", () => {
  test("f32 / f16 / bf16 / i64 / u8 / scalar with metadata, zero-copy views", async () => {
    const p = join(dir, "rt.safetensors");
    const w = new Float32Array([0.5, -1.25, 3, 1e-3, 65504, -0]);
    const halfVals = [1, -2, 0.333251953125, 6.103515625e-5];
    const bf = [1, -3.5, 1024, 0.0078125];
    await writeSafetensors(
      p,
      {
        "unet.w": { dtype: "F32", shape: [2, 3], data: w },
        "unet.h": { dtype: "F16", shape: [4], data: new Uint16Array(halfVals.map(f32ToF16Bits)) },
        "unet.hf": { dtype: "F16", shape: [2, 2], data: new Float32Array(halfVals) },
        "unet.bf": { dtype: "BF16", shape: [4], data: new Float32Array(bf) },
        step: { dtype: "I64", shape: [], data: new BigInt64Array([123456789012n]) },
        mask: { dtype: "U8", shape: [3], data: new Uint8Array([0, 1, 255]) },
      },
      { format: "pt", note: "hello" },
    );
    const f = openSafetensors(p);
    expect(f.path).toBe(p);
    expect(f.metadata).toEqual({ format: "pt", note: "hello" });
    expect(f.dataStart).toBe(8 + f.headerByteLength);
    expect(f.dataStart % 8).toBe(0);
    expect(f.names()).toEqual(["step", "unet.w", "unet.bf", "unet.h", "unet.hf", "mask"]);

    const wi = f.info("unet.w");
    expect(wi.dtype).toBe("F32");
    expect(wi.shape).toEqual([2, 3]);
    expect(wi.byteLength).toBe(24);
    const fileBytes = readFileSync(p);
    expect([...fileBytes.subarray(wi.byteOffset, wi.byteOffset + 24)]).toEqual([...new Uint8Array(w.buffer)]);

    const v = f.view("unet.w");
    expect(v).toBeInstanceOf(Float32Array);
    expect([...v]).toEqual([...w]);
    expect(v.buffer).toBe(f.bytes("unet.w").buffer); // a view on the file bytes, not a copy
    expect(f.float32("unet.w").buffer).toBe(v.buffer);

    expect(f.view("unet.h")).toBeInstanceOf(Uint16Array);
    expect([...f.float32("unet.h")]).toEqual(halfVals);
    expect([...f.float32("unet.hf")]).toEqual(halfVals);
    expect(f.view("unet.bf")).toBeInstanceOf(Uint16Array);
    expect([...f.float32("unet.bf")]).toEqual(bf);
    const s = f.view("step");
    expect(s).toBeInstanceOf(BigInt64Array);
    expect(s[0]).toBe(123456789012n);
    expect(f.info("step").shape).toEqual([]);
    expect([...f.view("mask")]).toEqual([0, 1, 255]);
    expect([...f.float32("mask")]).toEqual([0, 1, 255]);
    for (const name of f.names()) {
      const { byteOffset, dtype } = f.info(name);
      const size = { F32: 4, F16: 2, BF16: 2, I64: 8, U8: 1 }[dtype as "F32"];
      expect(byteOffset % size).toBe(0);
    }
    expect(f.has("mask")).toBe(true);
    expect(f.has("nope")).toBe(false);
  });

  test("a tensor at a misaligned offset (foreign writer) comes back as a correct copy", () => {
    // U8[2] first, then F32[2] at data offset 2: absolute offset 8 + 64 + 2, not a multiple of 4.
    let header = '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}}';
    header = header.padEnd(Math.ceil(header.length / 8) * 8, " ");
    const data = new Uint8Array([7, 9, ...f32Bytes([1.5, -2])]);
    const f = openSafetensors(put("misaligned.safetensors", handFile(header, data)));
    expect(f.info("w").byteOffset % 4).toBe(2);
    const v = f.view("w");
    expect([...v]).toEqual([1.5, -2]);
    expect(v.buffer).not.toBe(f.bytes("w").buffer);
    expect([...f.float32("w")]).toEqual([1.5, -2]);
    expect([...f.view("a")]).toEqual([7, 9]);
  });

  test("per-tensor mapping (used for files over 4 GiB) gives the same tensors", async () => {
    const p = join(dir, "per-tensor.safetensors");
    await writeSafetensors(p, {
      w: { dtype: "F32", shape: [3], data: new Float32Array([1, 2, 3]) },
      e: { dtype: "F32", shape: [0], data: new Float32Array(0) },
      h: { dtype: "BF16", shape: [2], data: new Float32Array([0.5, -4]) },
    });
    const f = openSafetensors(p, { mapping: "per-tensor" });
    expect([...f.view("w")]).toEqual([1, 2, 3]);
    expect(f.view("e").length).toBe(0);
    expect([...f.float32("h")]).toEqual([0.5, -4]);
    expect(f.view("w").buffer).toBe(f.bytes("w").buffer);
  });

  test("a sparse 4.5 GiB file opens in per-tensor mode", () => {
    const p = join(dir, "huge.safetensors");
    const A = 2_500_000_000;
    const B = 2_000_000_000;
    let header = `{"a":{"dtype":"U8","shape":[${A}],"data_offsets":[0,${A}]},"b":{"dtype":"F32","shape":[${B / 4}],"data_offsets":[${A},${A + B}]}}`;
    header = header.padEnd(Math.ceil(header.length / 8) * 8, " ");
    const head = handFile(header);
    const fd = openSync(p, "w");
    try {
      writeSync(fd, head);
      writeSync(fd, f32Bytes([7]), 0, 4, head.length + A + B - 4); // the last float of "b"
      ftruncateSync(fd, head.length + A + B); // sparse: no disk blocks for the zeros
    } finally {
      closeSync(fd);
    }
    const f = openSafetensors(p);
    const b = f.view("b");
    expect(b.length).toBe(B / 4);
    expect(b[b.length - 1]).toBe(7);
    expect(f.view("a")[A - 1]).toBe(0);
    rmSync(p);
  });

  test("a hand-written fixture following the spec reads back (keys in any order)", () => {
    const header = '{"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]},"__metadata__":{"k":"v"},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}';
    const data = new Uint8Array(16);
    new Float64Array(data.buffer, 0, 1)[0] = Math.PI;
    new Int32Array(data.buffer, 8, 2).set([-5, 6]);
    const f = openSafetensors(put("hand.safetensors", handFile(header, data)));
    expect(f.names()).toEqual(["a", "b"]);
    expect(f.metadata).toEqual({ k: "v" });
    expect(f.view("a")[0]).toBe(Math.PI);
    expect([...f.view("b")]).toEqual([-5, 6]);
    expect(f.float32("a")[0]).toBe(Math.fround(Math.PI));
  });
});

describe("half-precision helpers", () => {
  test("f16ToF32 matches the runtime's Float16Array for all 65536 bit patterns", () => {
    const bits = new Uint16Array(65536).map((_, i) => i);
    const ref = new Float16Array(bits.buffer);
    for (let i = 0; i < 65536; i++) {
      const a = f16ToF32(i);
      const b = ref[i]!;
      if (Number.isNaN(b)) expect(Number.isNaN(a)).toBe(true);
      else if (!Object.is(a, b)) throw new Error(`f16 bits ${i.toString(16)}: ${a} != ${b}`);
    }
    const bulk = f16ArrayToF32(bits);
    expect(bulk[0x3c00]).toBe(1);
    expect(bulk[0x7bff]).toBe(65504);
  });

  test("f32ToF16Bits rounds like the runtime (nearest even, subnormals, overflow, NaN)", () => {
    const ref = new Float16Array(1);
    const refBits = new Uint16Array(ref.buffer);
    const cases = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e10, -1e10, Infinity, -Infinity, 2 ** -24, 2 ** -25, 2 ** -25 * 1.0001, 3 * 2 ** -26, 2 ** -14, 2 ** -14 - 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1e-8];
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < 200_000; i++) {
      u[0] = (Math.random() * 2 ** 32) >>> 0;
      cases.push(f[0]!);
    }
    for (const x of cases) {
      ref[0] = Math.fround(x);
      const want = refBits[0]!;
      const got = f32ToF16Bits(x);
      if (Number.isNaN(x)) {
        expect((got & 0x7c00) === 0x7c00 && (got & 0x3ff) !== 0).toBe(true);
      } else if (got !== want) {
        throw new Error(`f32ToF16Bits(${x}) = ${got.toString(16)}, runtime says ${want.toString(16)}`);
      }
    }
  });

  test("bf16 conversions: exact values, round to nearest even, NaN stays NaN", () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-2)).toBe(0xc000);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie -> even (down)
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even (up)
    expect(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81); // above the tie -> up
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(3.4e38)).toBe(0x7f80); // rounds past the largest bf16 into infinity
    expect(Number.isNaN(bf16ToF32(f32ToBf16Bits(NaN)))).toBe(true);
    expect(Object.is(bf16ToF32(f32ToBf16Bits(-0)), -0)).toBe(true);
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect([...bf16ArrayToF32(new Uint16Array([0x3f80, 0xc000, 0x4049]))]).toEqual([1, -2, 3.140625]);
  });

  test.skipIf(!hasTorch)("f16 and bf16 rounding match torch (parity, needs /usr/bin/python3 with torch)", () => {
    const xs = Array.from({ length: 2000 }, (_, i) => Math.fround((Math.random() - 0.5) * 10 ** ((i % 12) - 6)));
    xs.push(1 + 2 ** -8, 1 + 3 * 2 ** -8, 65520, 2 ** -25, 3 * 2 ** -26);
    const code = [
      "import sys, json, torch",
      "xs = torch.tensor(json.loads(sys.argv[1]), dtype=torch.float32)",
      "h = xs.half().view(torch.int16).int() & 0xffff",
      "b = xs.bfloat16().view(torch.int16).int() & 0xffff",
      "print(json.dumps([h.tolist(), b.tolist()]))",
    ].join("\n");
    const r = Bun.spawnSync([PY, "-c", code, JSON.stringify(xs)], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    const [h, b] = JSON.parse(r.stdout.toString()) as [number[], number[]];
    expect(xs.map(f32ToF16Bits)).toEqual(h);
    expect(xs.map(f32ToBf16Bits)).toEqual(b);
  });
});

describe("parity with python safetensors", () => {
  test.skipIf(!hasPySafetensors)("reads a file written by safetensors.torch.save_file, and python reads ours", async () => {
    const fromPy = join(dir, "py.safetensors");
    const code = [
      "import sys, torch",
      "from safetensors.torch import save_file",
      "t = {'w': torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,",
      "     'h': torch.tensor([1.5, -2.0], dtype=torch.float16),",
      "     'b': torch.tensor([3.0, 0.25], dtype=torch.bfloat16),",
      "     'i': torch.tensor([1, -2, 3], dtype=torch.int64)}",
      "save_file(t, sys.argv[1], metadata={'format': 'pt'})",
    ].join("\n");
    const r = Bun.spawnSync([PY, "-c", code, fromPy], { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`python failed: ${r.stderr.toString()}`);
    const f = openSafetensors(fromPy);
    expect(f.metadata).toEqual({ format: "pt" });
    expect([...f.float32("w")]).toEqual([0, 0.25, 0.5, 0.75, 1, 1.25]);
    expect(f.info("w").shape).toEqual([2, 3]);
    expect([...f.float32("h")]).toEqual([1.5, -2]);
    expect([...f.float32("b")]).toEqual([3, 0.25]);
    expect([...f.view("i")]).toEqual([1n, -2n, 3n]);
    // Same tensors through our writer give the same bytes (metadata has a single key, so no
    // hash-map ordering question).
    const ours = serializeSafetensors(
      {
        w: { dtype: "F32", shape: [2, 3], data: f.view("w") },
        h: { dtype: "F16", shape: [2], data: f.view("h") },
        b: { dtype: "BF16", shape: [2], data: f.view("b") },
        i: { dtype: "I64", shape: [3], data: f.view("i") },
      },
      { format: "pt" },
    );
    expect(Buffer.compare(Buffer.from(ours), readFileSync(fromPy))).toBe(0);
    const back = join(dir, "ours.safetensors");
    await writeSafetensors(back, { x: { dtype: "BF16", shape: [2], data: new Float32Array([1, -0.5]) } });
    const check = Bun.spawnSync(
      [PY, "-c", "import sys; from safetensors.torch import load_file; print(load_file(sys.argv[1])['x'].float().tolist())", back],
      { stdout: "pipe", stderr: "pipe" },
    );
    expect(check.stdout.toString().trim()).toBe("[1.0, -0.5]");
  });
});

describe("bad files fail with clear errors naming the file", () => {
  const expectBad = (path: string, pattern: RegExp) => {
    let err: unknown;
    try {
      openSafetensors(path);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg.startsWith(path)).toBe(true);
    expect(msg).toMatch(pattern);
  };
  const goodHeader = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';

  test("missing file", () => expectBad(join(dir, "nope.safetensors"), /no such file/));
  test("empty and truncated files", () => {
    expectBad(put("empty.safetensors", new Uint8Array(0)), /truncated: the file is 0 bytes/);
    expectBad(put("short.safetensors", new Uint8Array([1, 2, 3])), /truncated: the file is 3 bytes/);
  });
  test("header length larger than the file", () => {
    expectBad(put("biglen.safetensors", handFile(goodHeader, new Uint8Array(8), 5000)), /header length 5000 is larger than the rest of the file/);
  });
  test("a torch.save zip under a .safetensors name is recognized", () => {
    const zip = new Uint8Array(64);
    zip.set([0x50, 0x4b, 0x03, 0x04]);
    expectBad(put("zip.safetensors", zip), /refusing to load a pickled PyTorch checkpoint \(it is a zip archive/);
  });
  test("malformed JSON header", () => {
    expectBad(put("badjson.safetensors", handFile('{"w":{"dtype":"F32",', new Uint8Array(8))), /malformed JSON header/);
    expectBad(put("arr.safetensors", handFile("[1,2]  ")), /malformed header: the JSON header must be an object/);
    expectBad(put("notobj.safetensors", handFile('{"w":3}')), /tensor "w" must be an object/);
  });
  test("unknown dtype", () => {
    expectBad(put("dtype.safetensors", handFile('{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', new Uint8Array(16))), /tensor "w": unknown dtype "F128" \(known: BOOL, U8/);
  });
  test("bad shape and bad offsets syntax", () => {
    expectBad(put("shape.safetensors", handFile('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', new Uint8Array(4))), /shape must be an array of non-negative integers/);
    expectBad(put("offs.safetensors", handFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', new Uint8Array(4))), /data_offsets must be \[begin, end\]/);
    expectBad(put("rev.safetensors", handFile('{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}', new Uint8Array(4))), /end before they begin/);
  });
  test("offsets that do not match shape * dtype size", () => {
    expectBad(put("size.safetensors", handFile('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', new Uint8Array(8))), /span 8 bytes but shape \[3\] of F32 needs 12/);
  });
  test("offsets out of range: a truncated download", async () => {
    const p = join(dir, "full.safetensors");
    await writeSafetensors(p, { a: { dtype: "F32", shape: [4], data: new Float32Array(4) }, b: { dtype: "F32", shape: [4], data: new Float32Array(4) } });
    const bytes = readFileSync(p);
    expectBad(put("cut.safetensors", bytes.subarray(0, bytes.length - 5)), /tensor "b": data_offsets \[16, 32\] run past the end of the data section \(27 bytes\): the file is truncated/);
  });
  test("overlapping offsets, gaps and trailing bytes", () => {
    const two = (a: string, b: string) => `{"a":{"dtype":"F32","shape":[2],"data_offsets":${a}},"b":{"dtype":"F32","shape":[2],"data_offsets":${b}}}`;
    expectBad(put("overlap.safetensors", handFile(two("[0,8]", "[4,12]"), new Uint8Array(12))), /tensor "b": data_offsets \[4, 12\] overlap tensor "a" \[0, 8\]/);
    expectBad(put("gap.safetensors", handFile(two("[0,8]", "[12,20]"), new Uint8Array(20))), /leave a gap of 4 unused bytes/);
    expectBad(put("trail.safetensors", handFile(two("[0,8]", "[8,16]"), new Uint8Array(19))), /3 trailing bytes after the last tensor/);
  });
  test("non-string metadata", () => {
    expectBad(put("meta.safetensors", handFile('{"__metadata__":{"epochs":3}}')), /"__metadata__"."epochs" must be a string/);
  });
  test("a missing tensor name lists the closest available names", () => {
    const data = new Uint8Array(12);
    const f = openSafetensors(
      put("names.safetensors", handFile('{"down.0.attn.to_k.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"down.0.attn.to_v.weight":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"mid.norm.bias":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', data)),
    );
    expect(() => f.view("down.0.attn.to_q.weight")).toThrow(
      /names\.safetensors: no tensor named "down\.0\.attn\.to_q\.weight" \(the file holds 3 tensors; closest names: "down\.0\.attn\.to_k\.weight", "down\.0\.attn\.to_v\.weight", "mid\.norm\.bias"\)/,
    );
    expect(() => f.info("x")).toThrow(SafetensorsError);
  });
  test("FP8 has views but no float32 conversion", () => {
    const f = openSafetensors(put("fp8.safetensors", handFile('{"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}', new Uint8Array([1, 2]))));
    expect([...f.view("q")]).toEqual([1, 2]);
    expect(() => f.float32("q")).toThrow(/F8_E4M3; converting FP8 to float32 is not supported/);
  });
});

describe("writer errors", () => {
  test("wrong array type, wrong length, unknown dtype, reserved name, bad metadata", async () => {
    const p = join(dir, "w.safetensors");
    await expect(writeSafetensors(p, { w: { dtype: "F32", shape: [2], data: new Int32Array(2) } })).rejects.toThrow(/cannot write tensor "w": dtype F32 wants a Float32Array \(or raw bytes as a Uint8Array\), got Int32Array/);
    await expect(writeSafetensors(p, { w: { dtype: "F32", shape: [3], data: new Float32Array(2) } })).rejects.toThrow(/shape \[3\] of F32 needs 12 bytes, the data has 8/);
    await expect(writeSafetensors(p, { w: { dtype: "F99" as "F32", shape: [1], data: new Float32Array(1) } })).rejects.toThrow(/unknown dtype "F99"/);
    await expect(writeSafetensors(p, { __metadata__: { dtype: "U8", shape: [1], data: new Uint8Array(1) } })).rejects.toThrow(/reserved/);
    await expect(writeSafetensors(p, {}, { n: 3 as unknown as string })).rejects.toThrow(/metadata "n" must be a string/);
    // Raw bytes are accepted for any dtype.
    await writeSafetensors(p, { w: { dtype: "I32", shape: [1], data: new Uint8Array([1, 0, 0, 0]) } });
    expect([...openSafetensors(p).view("w")]).toEqual([1]);
  });
});

describe("refuseUnsafeWeights", () => {
  test.each([".bin", ".pt", ".pth", ".ckpt", ".pkl", ".PT"])("refuses %s with how to convert", (ext) => {
    const p = `models/ip-adapter${ext}`;
    let msg = "";
    try {
      refuseUnsafeWeights(p);
    } catch (e) {
      expect(e).toBeInstanceOf(UserError);
      msg = (e as Error).message;
    }
    expect(msg).toContain(p);
    expect(msg).toContain("executes code");
    expect(msg).toContain("safetensors.torch");
    expect(msg).toContain("save_file(");
    expect(msg).toContain("torch.load(");
    expect(msg).toContain("models/ip-adapter.safetensors");
  });
  test("lets safetensors and other files through; openSafetensors refuses pickles before touching them", () => {
    expect(() => refuseUnsafeWeights("a/model.safetensors")).not.toThrow();
    expect(() => refuseUnsafeWeights("config.json")).not.toThrow();
    expect(() => openSafetensors(join(dir, "does-not-exist.bin"))).toThrow(/refusing to load a pickled PyTorch checkpoint/);
  });
});
