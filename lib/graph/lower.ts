// Lowering: the builder graph -> an ONNX ModelProto (opset 17, the newest that Debian's onnx
// checker knows; ONNX Runtime runs it with all its fusions).

import { basename, dirname } from "node:path";
import type { AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from "../onnx/types.ts";
import { AttributeType } from "../onnx/types.ts";
import { type Attr, type Tensor, topoSort } from "./graph.ts";
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
export function lower(outputs: Record<string, Tensor>, name = "patchdpo"): Lowered {
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

  for (const n of nodes) {
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

  const model: ModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: "", version: OPSET }],
    producerName: "patchdpo",
    producerVersion: "0.1.0",
    graph: { name, node: nodeProtos, initializer, input: inputs.map((t) => valueInfo(t.name, t)), output: graphOutputs, valueInfo: [] },
  };
  const external = inPlace
    ? { folder: dirname(files[0]!), links: new Map<string, string>(), files }
    : { links: new Map(files.map((f) => [locationOf.get(f)!, f])), files };
  return { model, inputs, outputs: outputsByName, external };
}

