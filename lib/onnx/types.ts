// Plain-object mirror of the parts of onnx.proto (IR version 8, opset 17) that we read and write.
// Field names follow onnx.proto so a reader can check them against the spec one by one.

/** onnx.TensorProto.DataType */
export const TensorDataType = {
  UNDEFINED: 0, FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7,
  STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13, BFLOAT16: 16,
} as const;
export type TensorDataTypeCode = (typeof TensorDataType)[keyof typeof TensorDataType];

/** onnx.AttributeProto.AttributeType */
export const AttributeType = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, SPARSE_TENSOR: 11, TYPE_PROTO: 13,
  FLOATS: 6, INTS: 7, STRINGS: 8, TENSORS: 9, GRAPHS: 10, SPARSE_TENSORS: 12, TYPE_PROTOS: 14,
} as const;

export interface StringStringEntry { key: string; value: string }

export interface TensorProto {
  name: string;
  dims: number[];
  dataType: TensorDataTypeCode;
  /** Little-endian raw bytes (raw_data). Mutually exclusive with external data and the typed fields. */
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: bigint[];
  doubleData?: number[];
  uint64Data?: bigint[];
  stringData?: Uint8Array[];
  /** data_location: 0 DEFAULT, 1 EXTERNAL */
  dataLocation?: 0 | 1;
  /** external_data entries: location, offset, length (checksum optional). */
  externalData?: StringStringEntry[];
  docString?: string;
}

export interface SparseTensorProto { values: TensorProto; indices: TensorProto; dims: number[] }

export interface TensorShapeDim { dimValue?: number; dimParam?: string }

export interface TypeProto {
  tensorType?: { elemType: TensorDataTypeCode; shape?: TensorShapeDim[] };
}

export interface ValueInfoProto { name: string; type?: TypeProto; docString?: string }

export interface AttributeProto {
  name: string;
  type: number;
  f?: number;
  i?: number | bigint;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparseTensor?: SparseTensorProto;
  tp?: TypeProto;
  floats?: number[];
  ints?: (number | bigint)[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  sparseTensors?: SparseTensorProto[];
  typeProtos?: TypeProto[];
  refAttrName?: string;
  docString?: string;
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  opType: string;
  domain?: string;
  attribute: AttributeProto[];
  docString?: string;
}

export interface GraphProto {
  node: NodeProto[];
  name: string;
  initializer: TensorProto[];
  sparseInitializer?: SparseTensorProto[];
  docString?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
}

export interface OperatorSetIdProto { domain: string; version: number }

export interface ModelProto {
  irVersion: number;
  opsetImport: OperatorSetIdProto[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  graph: GraphProto;
  metadataProps?: StringStringEntry[];
}
