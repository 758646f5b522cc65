import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import {
  AttributeType,
  ProtoDecodeError,
  ProtoReader,
  ProtoWriter,
  TensorDataType,
  WireType,
  decodeAttribute,
  decodeModel,
  decodeTensor,
  encodeAttribute,
  encodeModel,
  encodeModelChunks,
  encodeTensor,
  externalTensor,
  tensorFromFloat32,
  tensorFromInt64,
  type GraphProto,
  type ModelProto,
  type SparseTensorProto,
  type TensorProto,
  type TypeProto,
  type ValueInfoProto,
} from "../../lib/onnx/index.ts";

const FIXTURE = join(import.meta.dir, "..", "fixtures", "onnx", "helper-model.onnx");
const utf8 = (s: string) => new TextEncoder().encode(s);
const F = TensorDataType.FLOAT;

const tmpDirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "patchdpo-onnx-"));
  tmpDirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

function tensorValueInfo(name: string, elemType: number, shape?: (number | string | null)[]): ValueInfoProto {
  const type: TypeProto = { tensorType: { elemType: elemType as typeof F } };
  if (shape) {
    type.tensorType!.shape = shape.map((d) =>
      typeof d === "number" ? { dimValue: d } : typeof d === "string" ? { dimParam: d } : {},
    );
  }
  return { name, type };
}

function constantGraph(name: string, value: number): GraphProto {
  return {
    name,
    node: [{
      input: [], output: [`${name}_out`], opType: "Constant",
      attribute: [{ name: "value", type: AttributeType.TENSOR, t: tensorFromFloat32(`${name}_v`, [1], new Float32Array([value])) }],
    }],
    initializer: [],
    input: [],
    output: [tensorValueInfo(`${name}_out`, F, [1])],
    valueInfo: [],
  };
}

const sparse: SparseTensorProto = {
  values: { name: "sv", dims: [2], dataType: F, floatData: [1, 2] },
  indices: { name: "si", dims: [2], dataType: TensorDataType.INT64, int64Data: [1n, 5n] },
  dims: [2, 3],
};

/** A model touching every attribute type and every tensor storage kind. */
function everythingModel(): ModelProto {
  const raw = new Float32Array([0.5, 1.5, -2, 4, 8, 16]);
  const tensors: TensorProto[] = [
    tensorFromFloat32("raw", [2, 3], raw),
    { name: "floats", dims: [3], dataType: F, floatData: [0.25, -1, 3.5] },
    { name: "int32", dims: [3], dataType: TensorDataType.INT32, int32Data: [-7, 0, 2147483647] },
    { name: "int64", dims: [3], dataType: TensorDataType.INT64, int64Data: [-1n, 0n, -(2n ** 63n)] },
    { name: "double", dims: [2], dataType: TensorDataType.DOUBLE, doubleData: [0.1, -1e300] },
    { name: "uint64", dims: [2], dataType: TensorDataType.UINT64, uint64Data: [0n, 2n ** 64n - 1n] },
    { name: "strings", dims: [2], dataType: TensorDataType.STRING, stringData: [utf8("a"), utf8("héllo")] },
    externalTensor("ext", [4, 4], F, "weights.safetensors", 2 ** 40, 64),
    { name: "scalar", dims: [], dataType: F, floatData: [1], docString: "a scalar" },
  ];
  const tp: TypeProto = { tensorType: { elemType: TensorDataType.INT64, shape: [{ dimParam: "n" }, { dimValue: 4 }] } };
  return {
    irVersion: 8,
    opsetImport: [{ domain: "", version: 17 }, { domain: "com.example", version: 1 }],
    producerName: "patchdpo",
    producerVersion: "0.1.0",
    domain: "org.patchdpo",
    modelVersion: 2 ** 40,
    docString: "round trip",
    metadataProps: [{ key: "k", value: "v" }, { key: "empty", value: "" }],
    graph: {
      name: "main",
      docString: "graph doc",
      node: [{
        input: ["x", ""], output: ["y"], name: "n0", opType: "Everything", domain: "com.example", docString: "node doc",
        attribute: [
          { name: "f", type: AttributeType.FLOAT, f: -0.375 },
          { name: "i", type: AttributeType.INT, i: -1 },
          { name: "i_big", type: AttributeType.INT, i: -(2n ** 62n) },
          { name: "s", type: AttributeType.STRING, s: utf8("bilinear") },
          { name: "t", type: AttributeType.TENSOR, t: tensorFromInt64("shape", [2], [1, -1]) },
          { name: "g", type: AttributeType.GRAPH, g: constantGraph("then", 1) },
          { name: "sparse", type: AttributeType.SPARSE_TENSOR, sparseTensor: sparse },
          { name: "tp", type: AttributeType.TYPE_PROTO, tp },
          { name: "floats", type: AttributeType.FLOATS, floats: [1, 0.5, -2] },
          { name: "ints", type: AttributeType.INTS, ints: [0, -3, 2 ** 53 - 1, 2n ** 63n - 1n] },
          { name: "no_ints", type: AttributeType.INTS, ints: [] },
          { name: "strings", type: AttributeType.STRINGS, strings: [utf8("a"), utf8("")] },
          { name: "tensors", type: AttributeType.TENSORS, tensors: tensors.slice(1, 3) },
          { name: "graphs", type: AttributeType.GRAPHS, graphs: [constantGraph("g0", 2), constantGraph("g1", 3)] },
          { name: "sparses", type: AttributeType.SPARSE_TENSORS, sparseTensors: [sparse, sparse] },
          { name: "types", type: AttributeType.TYPE_PROTOS, typeProtos: [tp, { tensorType: { elemType: F } }] },
          { name: "ref", type: AttributeType.FLOAT, refAttrName: "alpha", docString: "from function" },
        ],
      }],
      initializer: tensors,
      sparseInitializer: [sparse],
      input: [tensorValueInfo("x", F, ["batch", 3, null]), { name: "untyped" }],
      output: [tensorValueInfo("y", F, []), tensorValueInfo("rank_unknown", F)],
      valueInfo: [{ ...tensorValueInfo("mid", TensorDataType.FLOAT16, [2]), docString: "vi doc" }],
    },
  };
}

describe("protobuf wire format", () => {
  test("varints of every size round trip, negatives as 10 bytes", () => {
    const values: (number | bigint)[] = [0, 1, 127, 128, 300, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, -1, -(2 ** 53 - 1), 2n ** 64n - 1n];
    for (const v of values) {
      const w = new ProtoWriter();
      w.varint(v);
      const bytes = w.finish();
      if (typeof v === "number" && v < 0) expect(bytes.length).toBe(10);
      const r = new ProtoReader(bytes);
      if (typeof v === "bigint") expect(r.uint64BigInt()).toBe(v);
      else expect(r.int64Number()).toBe(v);
      expect(r.done).toBe(true);
    }
    expect(() => new ProtoWriter().varint(1.5)).toThrow(/non-integer/);
    expect(() => new ProtoWriter().varint(2 ** 60)).toThrow(/bigint/);
  });

  test("repeated numeric fields are read packed or unpacked", () => {
    // AttributeProto.ints / floats packed (onnx.proto writes them unpacked) ...
    const a = new ProtoWriter();
    a.stringField(1, "perm");
    a.packedFloats(7, [1, 2]);
    a.packedVarints(8, [0, -1, 2]);
    a.uint64Field(8, 5); // ... and an unpacked element after the packed run: both append
    a.uint64Field(20, AttributeType.INTS);
    expect(decodeAttribute(a.finish())).toEqual({ name: "perm", type: AttributeType.INTS, floats: [1, 2], ints: [0, -1, 2, 5] });

    // TensorProto.float_data / int64_data unpacked (onnx.proto packs them), dims packed.
    const t = new ProtoWriter();
    t.packedVarints(1, [2, 1]);
    t.uint64Field(2, F);
    t.unpackedFloats(4, [3, 4]);
    t.unpackedVarints(7, [-5]);
    t.stringField(8, "w");
    expect(decodeTensor(t.finish())).toEqual({ name: "w", dims: [2, 1], dataType: F, floatData: [3, 4], int64Data: [-5n] });
  });

  test("large payloads are referenced until finish and copied once", () => {
    const big = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
    const w = new ProtoWriter();
    w.stringField(1, "x");
    w.messageField(2, (m) => m.bytesField(9, big));
    const chunks = w.finishChunks();
    expect(chunks.some((c) => c === big)).toBe(true);
    expect(w.finish().length).toBe(w.length);
  });
});

describe("ONNX codec", () => {
  test("round trip of every attribute type and tensor storage kind", () => {
    const model = everythingModel();
    const bytes = encodeModel(model);
    const back = decodeModel(bytes);
    expect(back).toEqual(model);
    // Same bytes when re-encoded, chunked or not.
    expect(encodeModel(back)).toEqual(bytes);
    expect(Buffer.concat(encodeModelChunks(model))).toEqual(Buffer.from(bytes));
    // rawData is a view into the input, not a copy.
    const raw = back.graph.initializer[0]!.rawData!;
    expect(raw.buffer).toBe(bytes.buffer);
    expect(new Float32Array(raw.slice().buffer)).toEqual(new Float32Array([0.5, 1.5, -2, 4, 8, 16]));
  });

  test("tensor and attribute codecs stand alone", () => {
    const t = tensorFromInt64("idx", [3], new BigInt64Array([1n, -2n, 3n]));
    expect(decodeTensor(encodeTensor(t))).toEqual(t);
    const a = { name: "axes", type: AttributeType.INTS, ints: [-1, 0] };
    expect(decodeAttribute(encodeAttribute(a))).toEqual(a);
    expect(() => tensorFromFloat32("w", [2, 2], new Float32Array(3))).toThrow(/hold 4 elements, got 3/);
  });

  test("decodes a model written by the onnx Python library", async () => {
    const bytes = new Uint8Array(await Bun.file(FIXTURE).arrayBuffer());
    const m = decodeModel(bytes);
    expect(m.irVersion).toBe(8);
    expect(m.opsetImport).toEqual([{ domain: "", version: 17 }, { domain: "com.example", version: 1 }]);
    expect([m.producerName, m.producerVersion, m.domain, m.modelVersion, m.docString])
      .toEqual(["make_onnx_fixture", "1", "org.patchdpo", 3, "patchdpo codec fixture"]);
    expect(m.metadataProps).toEqual([{ key: "author", value: "patchdpo" }, { key: "purpose", value: "codec test" }]);

    const g = m.graph;
    expect(g.name).toBe("helper_graph");
    expect(g.input[0]).toEqual(tensorValueInfo("x", F, ["batch", 3]));
    expect(g.input[1]).toEqual(tensorValueInfo("cond", TensorDataType.BOOL, []));
    expect(g.output[0]).toEqual(tensorValueInfo("y", F, ["batch", null]));
    expect(g.valueInfo).toEqual([tensorValueInfo("mid", TensorDataType.FLOAT16, [2, "k"])]);

    const init = Object.fromEntries(g.initializer.map((t) => [t.name, t]));
    expect(init.w_float_data).toEqual({ name: "w_float_data", dims: [2, 3], dataType: F, floatData: [0.5, -1, 2, 3.25, 0, -0.125] });
    expect(init.w_raw!.dims).toEqual([3, 2]);
    expect(Array.from(new Float32Array(init.w_raw!.rawData!.slice().buffer))).toEqual([0, 0.25, 0.5, 0.75, 1, 1.25]);
    expect(init.w_int64!.int64Data).toEqual([-1n, 0n, 2n ** 40n]);
    expect(init.w_int32!.int32Data).toEqual([-7, 0, 123456]);
    expect(init.w_double!.doubleData).toEqual([1.5, -2.25]);
    expect(init.w_uint64!.uint64Data).toEqual([0n, 2n ** 63n + 5n]);
    expect(init.w_string!.stringData!.map((s) => new TextDecoder().decode(s))).toEqual(["hello", "onnx"]);
    expect(init.w_external).toEqual(externalTensor("w_external", [4], F, "weights.bin", 64, 16));
    expect(g.sparseInitializer![0]!.dims).toEqual([2, 3]);
    expect(g.sparseInitializer![0]!.indices.int64Data).toEqual([1n, 5n]);

    const [ifNode, custom] = g.node;
    expect(ifNode!.opType).toBe("If");
    expect(ifNode!.attribute.map((a) => [a.name, a.type, a.g?.name])).toEqual([
      ["else_branch", AttributeType.GRAPH, "else"],
      ["then_branch", AttributeType.GRAPH, "then"],
    ]);
    expect([custom!.domain, custom!.name, custom!.docString]).toEqual(["com.example", "custom", "all attribute types"]);
    const attr = Object.fromEntries(custom!.attribute.map((a) => [a.name, a]));
    expect(attr.alpha).toEqual({ name: "alpha", type: AttributeType.FLOAT, f: 0.25 });
    expect(attr.axis).toEqual({ name: "axis", type: AttributeType.INT, i: -1 });
    expect(new TextDecoder().decode(attr.mode!.s)).toBe("bilinear");
    expect(attr.value!.t!.floatData).toEqual([1, -1]);
    expect(attr.body!.g!.node[0]!.attribute[0]!.t!.floatData).toEqual([3]);
    expect(attr.sparse!.sparseTensor!.values.floatData).toEqual([1, 2]);
    expect(attr.elem!.tp).toEqual({ tensorType: { elemType: TensorDataType.INT64, shape: [{ dimParam: "n" }, { dimValue: 4 }] } });
    expect(attr.scales!.floats).toEqual([1, 0.5, -2]);
    expect(attr.perm!.ints).toEqual([0, 2, 1, -3]);
    expect(attr.names!.strings!.map((s) => new TextDecoder().decode(s))).toEqual(["a", "bc"]);
    expect(attr.weights!.tensors!.map((t) => t.name)).toEqual(["t0", "t1"]);
    expect(attr.branches!.graphs!.map((x) => x.name)).toEqual(["g0", "g1"]);
    expect(attr.sparses!.sparseTensors).toHaveLength(1);
    expect(attr.types!.typeProtos).toEqual([attr.elem!.tp!, { tensorType: { elemType: F } }]);
    expect(attr.ref_alpha).toEqual({ name: "ref_alpha", type: AttributeType.FLOAT, refAttrName: "alpha" });

    // We write fields in the same order and packing as the official serializer.
    expect(encodeModel(m)).toEqual(bytes);
  });

  test("malformed input gives located errors", () => {
    const bytes = encodeModel(everythingModel());
    const err = (b: Uint8Array | number[]): string => {
      try {
        decodeModel(b instanceof Uint8Array ? b : new Uint8Array(b));
      } catch (e) {
        expect(e).toBeInstanceOf(ProtoDecodeError);
        return (e as Error).message;
      }
      throw new Error("decoded without error");
    };
    // Every cut inside the graph field must fail (cuts at top-level field boundaries may not).
    for (let cut = 8; cut < bytes.length - 40; cut += 97) expect(err(bytes.subarray(0, cut))).toMatch(/^ONNX decode: /);
    expect(err([0x08, 0x80])).toBe("ONNX decode: truncated varint at byte 1 (in ModelProto)");
    expect(err([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])).toMatch(/malformed varint \(longer than 10 bytes\) at byte 1/);
    expect(err([0x3a, 0x05, 0x0a])).toMatch(/claims 5 bytes, only 1 left/);
    expect(err([0x3a, 0x02, 0x0a, 0x05])).toMatch(/claims 5 bytes, only 0 left \(truncated\?\) \(in GraphProto\)/);
    expect(err([0x3a, 0x03, 0x0a, 0x01, 0x0a])).toBe("ONNX decode: truncated varint at byte 5 (in NodeProto)");
    expect(err([0x3a, 0x00, 0x7b])).toMatch(/unsupported wire type 3 for field 15 near byte 3/);
    expect(err([0x00])).toMatch(/field number 0/);
    expect(err([0x0d, 0, 0, 0, 0])).toMatch(/field ir_version has wire type 5, expected 0/);
    expect(err(utf8("not a model"))).toMatch(/^ONNX decode: /);
    expect(err([0x08, 0x08])).toMatch(/has no graph/);
    // A raw_data view that would run past its tensor.
    const t = new ProtoWriter();
    t.tag(9, WireType.LEN);
    t.varint(100);
    expect(() => decodeTensor(t.finish())).toThrow(/truncated\?\) \(in TensorProto\)/);
  });
});

// ---------------------------------------------------------------- onnx Python checker

const python = "/usr/bin/python3";
const pythonHasOnnx = Bun.spawnSync([python, "-c", "import onnx"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
if (!pythonHasOnnx) console.log(`skipping onnx.checker tests: ${python} cannot import onnx (apt install python3-onnx)`);

/** x[2,3] @ w[3,4] + b[4] -> Relu, with a Transpose and a LeakyRelu to exercise ints/float attributes. */
function mlpModel(w: TensorProto, b: TensorProto): ModelProto {
  return {
    irVersion: 8,
    opsetImport: [{ domain: "", version: 17 }],
    producerName: "patchdpo-test",
    graph: {
      name: "mlp",
      node: [
        { input: ["x", "w"], output: ["xw"], name: "matmul", opType: "MatMul", attribute: [] },
        { input: ["xw", "b"], output: ["h"], name: "add", opType: "Add", attribute: [] },
        { input: ["h"], output: ["r"], name: "relu", opType: "Relu", attribute: [] },
        { input: ["r"], output: ["rt"], opType: "Transpose", attribute: [{ name: "perm", type: AttributeType.INTS, ints: [1, 0] }] },
        { input: ["rt"], output: ["y"], opType: "LeakyRelu", attribute: [{ name: "alpha", type: AttributeType.FLOAT, f: 0.5 }] },
      ],
      initializer: [w, b],
      input: [tensorValueInfo("x", F, [2, 3])],
      output: [tensorValueInfo("y", F, [4, 2])],
      valueInfo: [],
    },
  };
}

const X = new Float32Array([1, -2, 3, 0.5, 4, -1]);
const W = new Float32Array(Array.from({ length: 12 }, (_, i) => (i - 5) / 4));
const B = new Float32Array([0.5, -8, 0, 1]);

/** relu(x @ w + b), transposed: the plain-TS reference for mlpModel. */
function mlpReference(): number[] {
  const out = new Array<number>(8);
  for (let i = 0; i < 2; i++) {
    for (let j = 0; j < 4; j++) {
      let s = B[j]!;
      for (let k = 0; k < 3; k++) s += X[i * 3 + k]! * W[k * 4 + j]!;
      out[j * 2 + i] = Math.max(s, 0); // LeakyRelu after Relu changes nothing
    }
  }
  return out;
}

/** Writes W into a file at an 8-aligned offset behind a dummy header, as in a safetensors file. */
function writeExternalWeights(dir: string): TensorProto {
  const header = new Uint8Array(24).fill(0x20);
  writeFileSync(join(dir, "weights.bin"), Buffer.concat([header, new Uint8Array(W.buffer)]));
  return externalTensor("w", [3, 4], F, "weights.bin", header.length, W.byteLength);
}

describe("onnx Python checker", () => {
  const check = (modelPath: string) => {
    const code = "import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)";
    const p = Bun.spawnSync([python, "-c", code, modelPath]);
    expect(p.stderr.toString()).toBe("");
    expect(p.exitCode).toBe(0);
  };

  test.skipIf(!pythonHasOnnx)("accepts our encoding (inline initializers)", () => {
    const dir = tempDir();
    const path = join(dir, "model.onnx");
    writeFileSync(path, encodeModel(mlpModel(tensorFromFloat32("w", [3, 4], W), tensorFromFloat32("b", [4], B))));
    check(path);
  });

  test.skipIf(!pythonHasOnnx)("accepts our encoding (external data)", () => {
    const dir = tempDir();
    const w = writeExternalWeights(dir);
    const path = join(dir, "model.onnx");
    writeFileSync(path, encodeModel(mlpModel(w, { name: "b", dims: [4], dataType: F, floatData: Array.from(B) })));
    check(path);
  });
});

// ---------------------------------------------------------------- onnxruntime-node end to end

describe("onnxruntime-node runs our models", () => {
  const run = async (bytes: Uint8Array, options?: ort.InferenceSession.SessionOptions) => {
    const session = await ort.InferenceSession.create(bytes, options ?? {});
    try {
      const out = await session.run({ x: new ort.Tensor("float32", X, [2, 3]) });
      expect(out.y!.dims).toEqual([4, 2]);
      return Array.from(out.y!.data as Float32Array);
    } finally {
      await session.release();
    }
  };

  test("inline float initializer", async () => {
    const y = await run(encodeModel(mlpModel(tensorFromFloat32("w", [3, 4], W), tensorFromFloat32("b", [4], B))));
    const ref = mlpReference();
    y.forEach((v, i) => expect(v).toBeCloseTo(ref[i]!, 5));
  });

  test("external initializer in a separate file", async () => {
    const dir = tempDir();
    const bytes = encodeModel(mlpModel(writeExternalWeights(dir), tensorFromFloat32("b", [4], B)));
    const y = await run(bytes, { extra: { session: { model_external_initializers_file_folder_path: dir } } });
    const ref = mlpReference();
    y.forEach((v, i) => expect(v).toBeCloseTo(ref[i]!, 5));
  });
});
