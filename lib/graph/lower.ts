// Lowering: the builder graph -> an ONNX ModelProto (opset 17, the newest that Debian's onnx
// checker knows; ONNX Runtime runs it with all its fusions).

import { basename, dirname } from "node:path";
import type { AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from "../onnx/types.ts";
import { AttributeType } from "../onnx/types.ts";
import { fuseAttention, MS_DOMAIN } from "./fuse.ts";
import { type Attr, type DType, type Node, type Tensor, topoSort } from "./graph.ts";
import { onnxTypeCode } from "./ops.ts";

export const OPSET = 17;

export interface Lowered {
  model: ModelProto;
  /** Graph inputs in order, with their static shapes. */
  inputs: Tensor[];
  /** Output name -> tensor. */
  outputs: Map<string, Tensor>;
  /**
   * External weights: when they all live in one folder, ORT reads them in place (`folder` is that
   * folder, `links` is empty). Otherwise each file needs a hard link named by its location inside
   * one folder of ours (session.ts makes them).
   */
  external: { folder?: string; links: Map<string, string>; files: string[] };
}

const enc = new TextEncoder();

/**
 * What a device's lowering rule may emit in place of one node (lib/graph/webgpu.ts): nodes in
 * standard ops over the lowered names of the node's own inputs and outputs, fresh intermediate
 * names, and constants.
 */
export interface Emit {
  /** The lowered name of a tensor (an input or output of the node being replaced). */
  name(t: Tensor): string;
  /** A fresh intermediate name. */
  temp(): string;
  /** A constant initializer; returns its name. */
  constant(data: Float32Array | BigInt64Array, shape: readonly number[], dtype: DType): string;
  /** A node; `domain` is for contrib ops ("com.microsoft"), standard ops leave it out. */
  node(op: string, inputs: string[], outputs: string[], attrs?: Record<string, Attr>, domain?: string): void;
}

/** Emits a replacement for node `n` and returns true, or returns false to keep it as it is. */
export type NodeRewrite = (n: Node, e: Emit) => boolean;

export interface LowerOptions {
  name?: string;
  /** A device's lowering rules (ops its provider lacks or gets wrong); none for the CPU. */
  rewrite?: NodeRewrite;
  /**
   * Emit ONNX Runtime's contrib ops where they replace a standard-op pattern (lib/graph/fuse.ts:
   * attention -> com.microsoft.MultiHeadAttention). For inference graphs; a pattern whose
   * intermediates a backward pass reads stays in standard ops.
   */
  fused?: boolean;
}

function attribute(name: string, a: Attr): AttributeProto {
  switch (a.kind) {
    case "int": return { name, type: AttributeType.INT, i: a.value };
    case "float": return { name, type: AttributeType.FLOAT, f: a.value };
    case "ints": return { name, type: AttributeType.INTS, ints: a.value };
    case "floats": return { name, type: AttributeType.FLOATS, floats: a.value };
    case "string": return { name, type: AttributeType.STRING, s: enc.encode(a.value) };
  }
}

function valueInfo(name: string, t: Tensor): ValueInfoProto {
  return { name, type: { tensorType: { elemType: onnxTypeCode(t.dtype) as never, shape: t.shape.map((d) => ({ dimValue: d })) } } };
}

/**
 * Lowers the part of the graph that `outputs` depend on. External weights from several folders
 * get distinct locations `w<k>-<file name>`; the caller maps them to real files (see session.ts).
 */
export function lower(outputs: Record<string, Tensor>, opts: LowerOptions | string = {}): Lowered {
  const { name = "patchdpo", rewrite, fused = false } = typeof opts === "string" ? { name: opts } : opts;
  const outTensors = Object.values(outputs);
  const nodes = topoSort(outTensors);
  const names = new Map<Tensor, string>();
  const nodeProtos: NodeProto[] = [];
  const outputsByName = new Map<string, Tensor>();
  for (const [n, t] of Object.entries(outputs)) {
    outputsByName.set(n, t);
    if (!t.leaf && !names.has(t)) names.set(t, n);
  }
  const nameOf = (t: Tensor) => names.get(t) ?? t.name;

  // Leaves reached by the needed nodes (or requested directly as outputs).
  const leaves = new Set<Tensor>();
  for (const n of nodes) for (const x of n.inputs) if (x?.leaf) leaves.add(x);
  for (const t of outTensors) if (t.leaf) leaves.add(t);
  const inputs: Tensor[] = [];
  const initializer: TensorProto[] = [];
  const files = [...new Set([...leaves].flatMap((t) => (t.leaf?.kind === "external" ? [t.leaf.file] : [])))];
  const inPlace = new Set(files.map((f) => dirname(f))).size === 1 && new Set(files.map((f) => basename(f))).size === files.length;
  const locationOf = new Map(files.map((f, k) => [f, inPlace ? basename(f) : `w${k}-${basename(f)}`]));
  for (const t of [...leaves].sort((a, b) => a.id - b.id)) {
    const leaf = t.leaf!;
    if (leaf.kind === "input") inputs.push(t);
    else if (leaf.kind === "constant") {
      const d = leaf.data;
      initializer.push({ name: t.name, dims: [...t.shape], dataType: onnxTypeCode(t.dtype) as never, rawData: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) });
    } else {
      const loc = locationOf.get(leaf.file)!;
      initializer.push({
        name: t.name, dims: [...t.shape], dataType: onnxTypeCode(leaf.fileDType) as never, dataLocation: 1,
        externalData: [{ key: "location", value: loc }, { key: "offset", value: String(leaf.byteOffset) }, { key: "length", value: String(leaf.byteLength) }],
      });
    }
  }

  let temps = 0;
  const emit: Emit = {
    name: nameOf,
    temp: () => `::lowered${temps++}`,
    constant: (data, shape, dtype) => {
      const name = `::lowered${temps++}`;
      initializer.push({ name, dims: [...shape], dataType: onnxTypeCode(dtype) as never, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
      return name;
    },
    node: (opType, input, output, attrs = {}, domain) => {
      nodeProtos.push({ opType, input, output, attribute: Object.entries(attrs).map(([k, a]) => attribute(k, a)), ...(domain ? { domain } : {}) });
    },
  };
  let fuse: NodeRewrite | undefined;
  if (fused) {
    const readers = new Map<Tensor, number>();
    for (const n of nodes) for (const x of n.inputs) if (x) readers.set(x, (readers.get(x) ?? 0) + 1);
    for (const t of outTensors) readers.set(t, (readers.get(t) ?? 0) + 1);
    fuse = fuseAttention(readers);
  }
  for (const n of nodes) {
    if (fuse?.(n, emit)) continue;
    if (rewrite?.(n, emit)) continue;
    nodeProtos.push({
      opType: n.op,
      input: n.inputs.map((x) => (x ? nameOf(x) : "")),
      output: n.outputs.map(nameOf),
      attribute: Object.entries(n.attrs).map(([k, a]) => attribute(k, a)),
    });
  }
  // Outputs that are leaves, or the same tensor under a second name, need an Identity node.
  const graphOutputs: ValueInfoProto[] = [];
  for (const [n, t] of outputsByName) {
    if (nameOf(t) !== n) nodeProtos.push({ opType: "Identity", input: [nameOf(t)], output: [n], attribute: [] });
    graphOutputs.push(valueInfo(n, t));
  }

  // A fused pattern leaves its standard-form nodes unread: drop them (last to first, so chains go).
  const contrib = nodeProtos.some((p) => p.domain === MS_DOMAIN);
  if (contrib) {
    const read = new Set(graphOutputs.map((o) => o.name));
    const kept: NodeProto[] = [];
    for (let i = nodeProtos.length - 1; i >= 0; i--) {
      const p = nodeProtos[i]!;
      if (!p.output.some((o) => read.has(o))) continue;
      kept.push(p);
      for (const x of p.input) read.add(x);
    }
    nodeProtos.splice(0, nodeProtos.length, ...kept.reverse());
  }
  // A rewritten node can leave a constant of the original unused (a Slice's starts): drop it, as ORT
  // would with a warning.
  if (temps || contrib) {
    const used = new Set(nodeProtos.flatMap((p) => p.input));
    for (const o of graphOutputs) used.add(o.name);
    for (let i = initializer.length - 1; i >= 0; i--) if (!used.has(initializer[i]!.name)) initializer.splice(i, 1);
  }
  const model: ModelProto = {
    irVersion: 8,
    opsetImport: contrib ? [{ domain: "", version: OPSET }, { domain: MS_DOMAIN, version: 1 }] : [{ domain: "", version: OPSET }],
    producerName: "patchdpo",
    producerVersion: "0.1.0",
    graph: { name, node: nodeProtos, initializer, input: inputs.map((t) => valueInfo(t.name, t)), output: graphOutputs, valueInfo: [] },
  };
  const external = inPlace
    ? { folder: dirname(files[0]!), links: new Map<string, string>(), files }
    : { links: new Map(files.map((f) => [locationOf.get(f)!, f])), files };
  return { model, inputs, outputs: outputsByName, external };
}

