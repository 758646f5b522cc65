// The symbolic tensor graph: tensors with static shapes and dtypes, nodes that are ONNX ops.
// A node here *is* an ONNX node (op type + attributes), so lowering is a rename, and the
// reverse-mode pass can be written as one vector-Jacobian rule per op type.

export type DType = "float32" | "float16" | "bfloat16" | "int64" | "int32" | "bool" | "uint8";

export type Attr =
  | { kind: "int"; value: number }
  | { kind: "float"; value: number }
  | { kind: "ints"; value: number[] }
  | { kind: "floats"; value: number[] }
  | { kind: "string"; value: string };

export const int = (value: number): Attr => ({ kind: "int", value });
export const float = (value: number): Attr => ({ kind: "float", value });
export const ints = (value: number[]): Attr => ({ kind: "ints", value });
export const floats = (value: number[]): Attr => ({ kind: "floats", value });
export const str = (value: string): Attr => ({ kind: "string", value });

/** Where a leaf tensor's values come from. */
export type Leaf =
  /** Fed at run time (images, noise, timesteps, trainable weights). */
  | { kind: "input" }
  /** A constant known at build time; becomes an inline initializer. */
  | { kind: "constant"; data: Float32Array | BigInt64Array | Int32Array | Uint8Array }
  /**
   * A frozen weight that lives in a file (a byte range of a safetensors file); becomes an
   * external-data initializer pointing into that file, so nothing is copied or converted.
   */
  | { kind: "external"; file: string; byteOffset: number; byteLength: number; fileDType: DType };

export interface Node {
  op: string;
  inputs: (Tensor | null)[]; // null = an omitted optional ONNX input
  outputs: Tensor[];
  attrs: Record<string, Attr>;
}

export class Tensor {
  /** Set for computed tensors; undefined for leaves. */
  node?: Node;
  leaf?: Leaf;
  /** Name in the lowered ONNX graph; user-visible for inputs and parameters. */
  name: string;
  /** Trainable parameters are graph inputs that the optimizer updates between steps. */
  trainable = false;

  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly shape: readonly number[],
    readonly dtype: DType,
    name?: string,
  ) {
    this.name = name ?? `_${id}`;
  }

  get rank(): number {
    return this.shape.length;
  }
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  toString(): string {
    return `${this.name}[${this.shape.join(",")}]:${this.dtype}`;
  }
}

export class Graph {
  private nextId = 0;
  readonly nodes: Node[] = [];
  readonly leaves: Tensor[] = [];
  private readonly names = new Set<string>();

  private tensor(shape: readonly number[], dtype: DType, name?: string): Tensor {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`invalid dimension ${d} in shape [${shape.join(", ")}]`);
    }
    if (name !== undefined) {
      if (this.names.has(name)) throw new Error(`graph already has a tensor named "${name}"`);
      this.names.add(name);
    }
    return new Tensor(this, this.nextId++, [...shape], dtype, name);
  }

  /** A value fed at run time. */
  input(name: string, shape: readonly number[], dtype: DType = "float32"): Tensor {
    const t = this.tensor(shape, dtype, name);
    t.leaf = { kind: "input" };
    this.leaves.push(t);
    return t;
  }

  /** A trainable parameter: fed at run time, gradients can be taken with respect to it. */
  param(name: string, shape: readonly number[]): Tensor {
    const t = this.input(name, shape, "float32");
    t.trainable = true;
    return t;
  }

  constant(data: Float32Array | BigInt64Array | Int32Array | Uint8Array | number[], shape: readonly number[], dtype?: DType, name?: string): Tensor {
    const dt: DType = dtype ?? (data instanceof BigInt64Array ? "int64" : data instanceof Int32Array ? "int32" : data instanceof Uint8Array ? "bool" : "float32");
    let arr: Float32Array | BigInt64Array | Int32Array | Uint8Array;
    if (Array.isArray(data)) {
      arr = dt === "int64" ? BigInt64Array.from(data.map((v) => BigInt(v))) : dt === "int32" ? Int32Array.from(data) : dt === "bool" || dt === "uint8" ? Uint8Array.from(data) : Float32Array.from(data);
    } else arr = data;
    const n = shape.reduce((a, b) => a * b, 1);
    if (arr.length !== n) throw new Error(`constant${name ? ` "${name}"` : ""}: ${arr.length} values for shape [${shape.join(", ")}] (needs ${n})`);
    const t = this.tensor(shape, dt, name);
    t.leaf = { kind: "constant", data: arr };
    this.leaves.push(t);
    return t;
  }

  /** A frozen weight stored in a file at [byteOffset, byteOffset + byteLength). */
  external(name: string, shape: readonly number[], file: string, byteOffset: number, byteLength: number, fileDType: DType): Tensor {
    const t = this.tensor(shape, fileDType, name);
    t.leaf = { kind: "external", file, byteOffset, byteLength, fileDType };
    this.leaves.push(t);
    return t;
  }

  /** Adds a node; outputs are created from the inferred (shape, dtype) pairs. */
  addNode(op: string, inputs: (Tensor | null)[], attrs: Record<string, Attr>, outs: { shape: readonly number[]; dtype: DType }[]): Tensor[] {
    for (const x of inputs) {
      if (x && x.graph !== this) throw new Error(`${op}: input ${x} belongs to another graph`);
    }
    const node: Node = { op, inputs, outputs: [], attrs };
    node.outputs = outs.map((o) => {
      const t = this.tensor(o.shape, o.dtype);
      t.node = node;
      return t;
    });
    this.nodes.push(node);
    return node.outputs;
  }

  /**
   * Adds an optional output to an existing node (e.g. LayerNormalization's saved mean and inverse
   * standard deviation, MaxPool's indices), so the backward pass reuses what the forward computed.
   */
  addOutput(node: Node, shape: readonly number[], dtype: DType): Tensor {
    const t = this.tensor(shape, dtype);
    t.node = node;
    node.outputs.push(t);
    return t;
  }

  /** Renames a computed tensor (e.g. to give an output a stable name). */
  rename(t: Tensor, name: string): Tensor {
    if (t.leaf) throw new Error(`cannot rename leaf ${t}`);
    if (this.names.has(name) && t.name !== name) throw new Error(`graph already has a tensor named "${name}"`);
    this.names.add(name);
    t.name = name;
    return t;
  }
}

/** Nodes needed to compute `outputs`, in a valid execution order. */
export function topoSort(outputs: Tensor[]): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>();
  // Iterative DFS: real models have graphs deep enough to overflow a recursive walk.
  const stack: { node: Node; next: number }[] = [];
  const visit = (start: Node) => {
    if (seen.has(start)) return;
    seen.add(start);
    stack.push({ node: start, next: 0 });
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      if (top.next < top.node.inputs.length) {
        const inp = top.node.inputs[top.next++];
        const n = inp?.node;
        if (n && !seen.has(n)) {
          seen.add(n);
          stack.push({ node: n, next: 0 });
        }
      } else {
        order.push(top.node);
        stack.pop();
      }
    }
  };
  for (const o of outputs) if (o.node) visit(o.node);
  return order;
}
