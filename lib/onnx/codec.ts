// ONNX ModelProto <-> bytes, over the minimal wire format in protobuf.ts.
// Field numbers are those of onnx/onnx.proto (checked against onnx 1.12's copy). Fields are
// written in field-number order with onnx.proto's packing (only TensorProto's *_data fields are
// [packed = true]), which is what the official protobuf serializer emits: re-encoding a decoded
// onnx-python file gives the same bytes as long as it uses only the fields modelled in types.ts.
// Unmodelled fields (training_info, functions, segment, denotation, ...) are skipped on decode.

import { ProtoReader, ProtoWriter, WireType } from "./protobuf.ts";
import {
  AttributeType,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type OperatorSetIdProto,
  type SparseTensorProto,
  type StringStringEntry,
  type TensorDataTypeCode,
  type TensorProto,
  type TensorShapeDim,
  type TypeProto,
  type ValueInfoProto,
} from "./types.ts";

const { VARINT, FIXED32, LEN } = WireType;

// ---------------------------------------------------------------- encode

function writeStringString(w: ProtoWriter, e: StringStringEntry): void {
  w.stringField(1, e.key);
  w.stringField(2, e.value);
}

function writeTensor(w: ProtoWriter, t: TensorProto): void {
  w.unpackedVarints(1, t.dims);
  w.uint64Field(2, t.dataType);
  if (t.floatData) w.packedFloats(4, t.floatData);
  if (t.int32Data) w.packedVarints(5, t.int32Data);
  if (t.stringData) for (const s of t.stringData) w.bytesField(6, s);
  if (t.int64Data) w.packedVarints(7, t.int64Data);
  w.stringField(8, t.name);
  if (t.rawData) w.bytesField(9, t.rawData);
  if (t.doubleData) w.packedDoubles(10, t.doubleData);
  if (t.uint64Data) w.packedVarints(11, t.uint64Data);
  if (t.docString !== undefined) w.stringField(12, t.docString);
  if (t.externalData) for (const e of t.externalData) w.messageField(13, (m) => writeStringString(m, e));
  if (t.dataLocation !== undefined) w.uint64Field(14, t.dataLocation);
}

function writeSparseTensor(w: ProtoWriter, s: SparseTensorProto): void {
  w.messageField(1, (m) => writeTensor(m, s.values));
  w.messageField(2, (m) => writeTensor(m, s.indices));
  w.unpackedVarints(3, s.dims);
}

function writeDim(w: ProtoWriter, d: TensorShapeDim): void {
  if (d.dimValue !== undefined) w.uint64Field(1, d.dimValue);
  if (d.dimParam !== undefined) w.stringField(2, d.dimParam);
}

function writeType(w: ProtoWriter, t: TypeProto): void {
  const tt = t.tensorType;
  if (!tt) return;
  w.messageField(1, (m) => {
    m.uint64Field(1, tt.elemType);
    // An absent shape means "rank unknown"; an empty one means scalar, so both are kept distinct.
    if (tt.shape) {
      const shape = tt.shape;
      m.messageField(2, (s) => {
        for (const d of shape) s.messageField(1, (dm) => writeDim(dm, d));
      });
    }
  });
}

function writeValueInfo(w: ProtoWriter, v: ValueInfoProto): void {
  w.stringField(1, v.name);
  const type = v.type;
  if (type) w.messageField(2, (m) => writeType(m, type));
  if (v.docString !== undefined) w.stringField(3, v.docString);
}

function writeAttribute(w: ProtoWriter, a: AttributeProto): void {
  w.stringField(1, a.name);
  if (a.f !== undefined) w.floatField(2, a.f);
  if (a.i !== undefined) w.uint64Field(3, a.i);
  if (a.s) w.bytesField(4, a.s);
  const { t, g, tp, sparseTensor } = a;
  if (t) w.messageField(5, (m) => writeTensor(m, t));
  if (g) w.messageField(6, (m) => writeGraph(m, g));
  if (a.floats) w.unpackedFloats(7, a.floats);
  if (a.ints) w.unpackedVarints(8, a.ints);
  if (a.strings) for (const s of a.strings) w.bytesField(9, s);
  if (a.tensors) for (const x of a.tensors) w.messageField(10, (m) => writeTensor(m, x));
  if (a.graphs) for (const x of a.graphs) w.messageField(11, (m) => writeGraph(m, x));
  if (a.docString !== undefined) w.stringField(13, a.docString);
  if (tp) w.messageField(14, (m) => writeType(m, tp));
  if (a.typeProtos) for (const x of a.typeProtos) w.messageField(15, (m) => writeType(m, x));
  w.uint64Field(20, a.type);
  if (a.refAttrName !== undefined) w.stringField(21, a.refAttrName);
  if (sparseTensor) w.messageField(22, (m) => writeSparseTensor(m, sparseTensor));
  if (a.sparseTensors) for (const x of a.sparseTensors) w.messageField(23, (m) => writeSparseTensor(m, x));
}

function writeNode(w: ProtoWriter, n: NodeProto): void {
  for (const s of n.input) w.stringField(1, s);
  for (const s of n.output) w.stringField(2, s);
  if (n.name !== undefined) w.stringField(3, n.name);
  w.stringField(4, n.opType);
  for (const a of n.attribute) w.messageField(5, (m) => writeAttribute(m, a));
  if (n.docString !== undefined) w.stringField(6, n.docString);
  if (n.domain !== undefined) w.stringField(7, n.domain);
}

function writeGraph(w: ProtoWriter, g: GraphProto): void {
  for (const n of g.node) w.messageField(1, (m) => writeNode(m, n));
  w.stringField(2, g.name);
  for (const t of g.initializer) w.messageField(5, (m) => writeTensor(m, t));
  if (g.docString !== undefined) w.stringField(10, g.docString);
  for (const v of g.input) w.messageField(11, (m) => writeValueInfo(m, v));
  for (const v of g.output) w.messageField(12, (m) => writeValueInfo(m, v));
  for (const v of g.valueInfo) w.messageField(13, (m) => writeValueInfo(m, v));
  if (g.sparseInitializer) for (const s of g.sparseInitializer) w.messageField(15, (m) => writeSparseTensor(m, s));
}

function writeOpset(w: ProtoWriter, o: OperatorSetIdProto): void {
  w.stringField(1, o.domain);
  w.uint64Field(2, o.version);
}

function writeModel(w: ProtoWriter, m: ModelProto): void {
  w.uint64Field(1, m.irVersion);
  if (m.producerName !== undefined) w.stringField(2, m.producerName);
  if (m.producerVersion !== undefined) w.stringField(3, m.producerVersion);
  if (m.domain !== undefined) w.stringField(4, m.domain);
  if (m.modelVersion !== undefined) w.uint64Field(5, m.modelVersion);
  if (m.docString !== undefined) w.stringField(6, m.docString);
  w.messageField(7, (g) => writeGraph(g, m.graph));
  for (const o of m.opsetImport) w.messageField(8, (x) => writeOpset(x, o));
  if (m.metadataProps) for (const e of m.metadataProps) w.messageField(14, (x) => writeStringString(x, e));
}

function encodeWith<T>(write: (w: ProtoWriter, v: T) => void, v: T): Uint8Array {
  const w = new ProtoWriter();
  write(w, v);
  return w.finish();
}

/** Serializes a model. Large rawData buffers are copied once, into the result. */
export const encodeModel = (m: ModelProto): Uint8Array => encodeWith(writeModel, m);
/** Same bytes as encodeModel, as chunks (big rawData are the caller's own buffers): for streaming to a file. */
export function encodeModelChunks(m: ModelProto): Uint8Array[] {
  const w = new ProtoWriter();
  writeModel(w, m);
  return w.finishChunks();
}
export const encodeGraph = (g: GraphProto): Uint8Array => encodeWith(writeGraph, g);
export const encodeNode = (n: NodeProto): Uint8Array => encodeWith(writeNode, n);
export const encodeAttribute = (a: AttributeProto): Uint8Array => encodeWith(writeAttribute, a);
export const encodeTensor = (t: TensorProto): Uint8Array => encodeWith(writeTensor, t);
export const encodeValueInfo = (v: ValueInfoProto): Uint8Array => encodeWith(writeValueInfo, v);
export const encodeTypeProto = (t: TypeProto): Uint8Array => encodeWith(writeType, t);

// ---------------------------------------------------------------- decode
// Each reader loops over the fields of one message; `r.limit` is that message's end.

function readStringString(r: ProtoReader): StringStringEntry {
  const e: StringStringEntry = { key: "", value: "" };
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("key", LEN); e.key = r.string(); break;
      case 2: r.expect("value", LEN); e.value = r.string(); break;
      default: r.skip(f);
    }
  }
  return e;
}

function readTensor(r: ProtoReader): TensorProto {
  const t: TensorProto = { name: "", dims: [], dataType: 0 };
  const int64 = () => r.int64Number();
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.repeated("dims", VARINT, int64, t.dims); break;
      case 2: r.expect("data_type", VARINT); t.dataType = r.int32() as TensorDataTypeCode; break;
      case 4: r.repeated("float_data", FIXED32, () => r.float(), (t.floatData ??= [])); break;
      case 5: r.repeated("int32_data", VARINT, () => r.int32(), (t.int32Data ??= [])); break;
      case 6: r.expect("string_data", LEN); (t.stringData ??= []).push(r.bytesView()); break;
      case 7: r.repeated("int64_data", VARINT, () => r.int64BigInt(), (t.int64Data ??= [])); break;
      case 8: r.expect("name", LEN); t.name = r.string(); break;
      case 9: r.expect("raw_data", LEN); t.rawData = r.bytesView(); break;
      case 10: r.repeated("double_data", WireType.FIXED64, () => r.double(), (t.doubleData ??= [])); break;
      case 11: r.repeated("uint64_data", VARINT, () => r.uint64BigInt(), (t.uint64Data ??= [])); break;
      case 12: r.expect("doc_string", LEN); t.docString = r.string(); break;
      case 13:
        r.expect("external_data", LEN);
        (t.externalData ??= []).push(r.message("StringStringEntryProto", readStringString));
        break;
      case 14: {
        r.expect("data_location", VARINT);
        const loc = r.int32();
        if (loc !== 0 && loc !== 1) r.fail(`unknown TensorProto.data_location ${loc}`);
        t.dataLocation = loc;
        break;
      }
      default: r.skip(f);
    }
  }
  return t;
}

function readSparseTensor(r: ProtoReader): SparseTensorProto {
  let values: TensorProto | undefined;
  let indices: TensorProto | undefined;
  const dims: number[] = [];
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("values", LEN); values = r.message("SparseTensorProto.values", readTensor); break;
      case 2: r.expect("indices", LEN); indices = r.message("SparseTensorProto.indices", readTensor); break;
      case 3: r.repeated("dims", VARINT, () => r.int64Number(), dims); break;
      default: r.skip(f);
    }
  }
  const empty = (): TensorProto => ({ name: "", dims: [], dataType: 0 });
  return { values: values ?? empty(), indices: indices ?? empty(), dims };
}

function readDim(r: ProtoReader): TensorShapeDim {
  const d: TensorShapeDim = {};
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("dim_value", VARINT); d.dimValue = r.int64Number(); break;
      case 2: r.expect("dim_param", LEN); d.dimParam = r.string(); break;
      default: r.skip(f);
    }
  }
  return d;
}

function readShape(r: ProtoReader): TensorShapeDim[] {
  const dims: TensorShapeDim[] = [];
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("dim", LEN); dims.push(r.message("TensorShapeProto.Dimension", readDim)); break;
      default: r.skip(f);
    }
  }
  return dims;
}

function readTensorType(r: ProtoReader): NonNullable<TypeProto["tensorType"]> {
  const tt: NonNullable<TypeProto["tensorType"]> = { elemType: 0 };
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("elem_type", VARINT); tt.elemType = r.int32() as TensorDataTypeCode; break;
      case 2: r.expect("shape", LEN); tt.shape = r.message("TensorShapeProto", readShape); break;
      default: r.skip(f);
    }
  }
  return tt;
}

function readType(r: ProtoReader): TypeProto {
  const t: TypeProto = {};
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("tensor_type", LEN); t.tensorType = r.message("TypeProto.Tensor", readTensorType); break;
      default: r.skip(f); // sequence/map/optional/sparse types are not modelled
    }
  }
  return t;
}

function readValueInfo(r: ProtoReader): ValueInfoProto {
  const v: ValueInfoProto = { name: "" };
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("name", LEN); v.name = r.string(); break;
      case 2: r.expect("type", LEN); v.type = r.message("TypeProto", readType); break;
      case 3: r.expect("doc_string", LEN); v.docString = r.string(); break;
      default: r.skip(f);
    }
  }
  return v;
}

/** Files from before AttributeProto.type existed omit it; infer it from the value field that is set. */
function inferAttributeType(a: AttributeProto): number {
  if (a.f !== undefined) return AttributeType.FLOAT;
  if (a.i !== undefined) return AttributeType.INT;
  if (a.s !== undefined) return AttributeType.STRING;
  if (a.t !== undefined) return AttributeType.TENSOR;
  if (a.g !== undefined) return AttributeType.GRAPH;
  if (a.sparseTensor !== undefined) return AttributeType.SPARSE_TENSOR;
  if (a.tp !== undefined) return AttributeType.TYPE_PROTO;
  if (a.floats !== undefined) return AttributeType.FLOATS;
  if (a.ints !== undefined) return AttributeType.INTS;
  if (a.strings !== undefined) return AttributeType.STRINGS;
  if (a.tensors !== undefined) return AttributeType.TENSORS;
  if (a.graphs !== undefined) return AttributeType.GRAPHS;
  if (a.sparseTensors !== undefined) return AttributeType.SPARSE_TENSORS;
  if (a.typeProtos !== undefined) return AttributeType.TYPE_PROTOS;
  return AttributeType.UNDEFINED;
}

function readAttribute(r: ProtoReader): AttributeProto {
  const a: AttributeProto = { name: "", type: AttributeType.UNDEFINED };
  let typeSeen = false;
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("name", LEN); a.name = r.string(); break;
      case 2: r.expect("f", FIXED32); a.f = r.float(); break;
      case 3: r.expect("i", VARINT); a.i = r.int64NumberOrBigInt(); break;
      case 4: r.expect("s", LEN); a.s = r.bytesView(); break;
      case 5: r.expect("t", LEN); a.t = r.message("TensorProto", readTensor); break;
      case 6: r.expect("g", LEN); a.g = r.message("GraphProto", readGraph); break;
      case 7: r.repeated("floats", FIXED32, () => r.float(), (a.floats ??= [])); break;
      case 8: r.repeated("ints", VARINT, () => r.int64NumberOrBigInt(), (a.ints ??= [])); break;
      case 9: r.expect("strings", LEN); (a.strings ??= []).push(r.bytesView()); break;
      case 10: r.expect("tensors", LEN); (a.tensors ??= []).push(r.message("TensorProto", readTensor)); break;
      case 11: r.expect("graphs", LEN); (a.graphs ??= []).push(r.message("GraphProto", readGraph)); break;
      case 13: r.expect("doc_string", LEN); a.docString = r.string(); break;
      case 14: r.expect("tp", LEN); a.tp = r.message("TypeProto", readType); break;
      case 15: r.expect("type_protos", LEN); (a.typeProtos ??= []).push(r.message("TypeProto", readType)); break;
      case 20: r.expect("type", VARINT); a.type = r.int32(); typeSeen = true; break;
      case 21: r.expect("ref_attr_name", LEN); a.refAttrName = r.string(); break;
      case 22: r.expect("sparse_tensor", LEN); a.sparseTensor = r.message("SparseTensorProto", readSparseTensor); break;
      case 23:
        r.expect("sparse_tensors", LEN);
        (a.sparseTensors ??= []).push(r.message("SparseTensorProto", readSparseTensor));
        break;
      default: r.skip(f);
    }
  }
  if (!typeSeen) a.type = inferAttributeType(a);
  // An empty list has no bytes on the wire; restore it so `ints: []` survives a round trip.
  switch (a.type) {
    case AttributeType.FLOATS: a.floats ??= []; break;
    case AttributeType.INTS: a.ints ??= []; break;
    case AttributeType.STRINGS: a.strings ??= []; break;
    case AttributeType.TENSORS: a.tensors ??= []; break;
    case AttributeType.GRAPHS: a.graphs ??= []; break;
    case AttributeType.SPARSE_TENSORS: a.sparseTensors ??= []; break;
    case AttributeType.TYPE_PROTOS: a.typeProtos ??= []; break;
  }
  return a;
}

function readNode(r: ProtoReader): NodeProto {
  const n: NodeProto = { input: [], output: [], opType: "", attribute: [] };
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("input", LEN); n.input.push(r.string()); break;
      case 2: r.expect("output", LEN); n.output.push(r.string()); break;
      case 3: r.expect("name", LEN); n.name = r.string(); break;
      case 4: r.expect("op_type", LEN); n.opType = r.string(); break;
      case 5: r.expect("attribute", LEN); n.attribute.push(r.message("AttributeProto", readAttribute)); break;
      case 6: r.expect("doc_string", LEN); n.docString = r.string(); break;
      case 7: r.expect("domain", LEN); n.domain = r.string(); break;
      default: r.skip(f);
    }
  }
  return n;
}

function readGraph(r: ProtoReader): GraphProto {
  const g: GraphProto = { node: [], name: "", initializer: [], input: [], output: [], valueInfo: [] };
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("node", LEN); g.node.push(r.message("NodeProto", readNode)); break;
      case 2: r.expect("name", LEN); g.name = r.string(); break;
      case 5: r.expect("initializer", LEN); g.initializer.push(r.message("TensorProto", readTensor)); break;
      case 10: r.expect("doc_string", LEN); g.docString = r.string(); break;
      case 11: r.expect("input", LEN); g.input.push(r.message("ValueInfoProto", readValueInfo)); break;
      case 12: r.expect("output", LEN); g.output.push(r.message("ValueInfoProto", readValueInfo)); break;
      case 13: r.expect("value_info", LEN); g.valueInfo.push(r.message("ValueInfoProto", readValueInfo)); break;
      case 15:
        r.expect("sparse_initializer", LEN);
        (g.sparseInitializer ??= []).push(r.message("SparseTensorProto", readSparseTensor));
        break;
      default: r.skip(f);
    }
  }
  return g;
}

function readOpset(r: ProtoReader): OperatorSetIdProto {
  const o: OperatorSetIdProto = { domain: "", version: 0 };
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("domain", LEN); o.domain = r.string(); break;
      case 2: r.expect("version", VARINT); o.version = r.int64Number(); break;
      default: r.skip(f);
    }
  }
  return o;
}

function readModel(r: ProtoReader): ModelProto {
  let graph: GraphProto | undefined;
  const m: Omit<ModelProto, "graph"> = { irVersion: 0, opsetImport: [] };
  while (!r.done) {
    const f = r.tag();
    switch (f) {
      case 1: r.expect("ir_version", VARINT); m.irVersion = r.int64Number(); break;
      case 2: r.expect("producer_name", LEN); m.producerName = r.string(); break;
      case 3: r.expect("producer_version", LEN); m.producerVersion = r.string(); break;
      case 4: r.expect("domain", LEN); m.domain = r.string(); break;
      case 5: r.expect("model_version", VARINT); m.modelVersion = r.int64Number(); break;
      case 6: r.expect("doc_string", LEN); m.docString = r.string(); break;
      case 7: r.expect("graph", LEN); graph = r.message("GraphProto", readGraph); break;
      case 8: r.expect("opset_import", LEN); m.opsetImport.push(r.message("OperatorSetIdProto", readOpset)); break;
      case 14:
        r.expect("metadata_props", LEN);
        (m.metadataProps ??= []).push(r.message("StringStringEntryProto", readStringString));
        break;
      default: r.skip(f);
    }
  }
  if (!graph) r.fail("ModelProto has no graph (is this an ONNX model file?)");
  return { ...m, graph };
}

function decodeWith<T>(context: string, read: (r: ProtoReader) => T, bytes: Uint8Array): T {
  const r = new ProtoReader(bytes);
  r.context = context;
  return read(r);
}

/** Parses a model. Byte fields (rawData, s, strings, stringData) are views into `bytes`, not copies. */
export const decodeModel = (bytes: Uint8Array): ModelProto => decodeWith("ModelProto", readModel, bytes);
export const decodeGraph = (bytes: Uint8Array): GraphProto => decodeWith("GraphProto", readGraph, bytes);
export const decodeNode = (bytes: Uint8Array): NodeProto => decodeWith("NodeProto", readNode, bytes);
export const decodeAttribute = (bytes: Uint8Array): AttributeProto => decodeWith("AttributeProto", readAttribute, bytes);
export const decodeTensor = (bytes: Uint8Array): TensorProto => decodeWith("TensorProto", readTensor, bytes);
export const decodeValueInfo = (bytes: Uint8Array): ValueInfoProto => decodeWith("ValueInfoProto", readValueInfo, bytes);
export const decodeTypeProto = (bytes: Uint8Array): TypeProto => decodeWith("TypeProto", readType, bytes);
