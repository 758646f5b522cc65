// Public API of the ONNX codec: types, encode/decode, and builders for common initializers.

import { TensorDataType, type TensorDataTypeCode, type TensorProto } from "./types.ts";

export * from "./types.ts";
export {
  encodeModel, encodeModelChunks, encodeGraph, encodeNode, encodeAttribute, encodeTensor,
  encodeValueInfo, encodeTypeProto,
  decodeModel, decodeGraph, decodeNode, decodeAttribute, decodeTensor, decodeValueInfo, decodeTypeProto,
} from "./codec.ts";
export { ProtoDecodeError, ProtoReader, ProtoWriter, WireType } from "./protobuf.ts";

// raw_data is little-endian; viewing typed arrays as bytes is only correct on a little-endian host.
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function checkCount(name: string, dims: readonly number[], count: number): void {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (expected !== count) {
    throw new Error(`tensor '${name}': dims [${dims.join(", ")}] hold ${expected} elements, got ${count} values`);
  }
  if (!littleEndian) throw new Error("ONNX raw_data needs a little-endian host");
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** FLOAT initializer whose rawData is a view of `data` (no copy: don't mutate it before encoding). */
export function tensorFromFloat32(name: string, dims: number[], data: Float32Array): TensorProto {
  checkCount(name, dims, data.length);
  return { name, dims: [...dims], dataType: TensorDataType.FLOAT, rawData: bytesOf(data) };
}

/** INT64 initializer; a BigInt64Array is viewed without copying, a number[] is converted. */
export function tensorFromInt64(name: string, dims: number[], data: number[] | BigInt64Array): TensorProto {
  checkCount(name, dims, data.length);
  const values = data instanceof BigInt64Array ? data : BigInt64Array.from(data, (v) => {
    if (!Number.isSafeInteger(v)) throw new Error(`tensor '${name}': ${v} is not an exact integer`);
    return BigInt(v);
  });
  return { name, dims: [...dims], dataType: TensorDataType.INT64, rawData: bytesOf(values) };
}

/**
 * Initializer whose bytes live in another file (data_location = EXTERNAL), e.g. a byte range of
 * a safetensors file. `location` is relative to the model's folder (or to the folder given to
 * onnxruntime as model_external_initializers_file_folder_path); onnxruntime refuses absolute
 * paths and `..`.
 */
export function externalTensor(
  name: string,
  dims: number[],
  dataType: TensorDataTypeCode,
  location: string,
  offset: number,
  length: number,
): TensorProto {
  for (const [what, v] of [["offset", offset], ["length", length]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`tensor '${name}': external ${what} ${v} must be a non-negative integer`);
  }
  return {
    name,
    dims: [...dims],
    dataType,
    dataLocation: 1,
    externalData: [
      { key: "location", value: location },
      { key: "offset", value: String(offset) },
      { key: "length", value: String(length) },
    ],
  };
}
