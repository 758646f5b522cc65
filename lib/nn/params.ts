// Parameters bound by name. A model definition asks for `p.get("blocks.0.attn.qkv.weight", [1152, 384])`
// and gets a tensor whose kind depends on how the model is being used:
//   frozen + in a file   -> an external-data initializer pointing into the safetensors file (no copy);
//   frozen + in memory   -> an inline constant (e.g. weights dequantized from another format);
//   trainable            -> a graph input; the trainer feeds current values each step.

import { type DType, type Graph, type Tensor, cast } from "../graph/index.ts";

export interface WeightSource {
  /** Where the weights come from, for error messages. */
  readonly label: string;
  has(name: string): boolean;
  names(): string[];
  shape(name: string): number[];
  /** Values as float32 (converted from f16/bf16 if needed). */
  float32(name: string): Float32Array;
  /** The byte range in a file, when the tensor is stored in one that ORT can read in place. */
  fileRange?(name: string): { file: string; byteOffset: number; byteLength: number; dtype: DType } | undefined;
}

/** An in-memory source (tests, tiny models, converted weights). */
export class MemorySource implements WeightSource {
  constructor(readonly tensors: Map<string, { shape: number[]; data: Float32Array }>, readonly label = "in-memory weights") {}
  has(name: string) { return this.tensors.has(name); }
  names() { return [...this.tensors.keys()]; }
  shape(name: string) { return this.get(name).shape; }
  float32(name: string) { return this.get(name).data; }
  private get(name: string) {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.label}: no tensor "${name}"`);
    return t;
  }
}

export interface ParamsOptions {
  /** Which parameters are trainable (graph inputs). Default: none. */
  trainable?: (name: string) => boolean;
  /** A prefix added to every requested name (e.g. "unet." inside a combined file). */
  prefix?: string;
}

export class Params {
  /** Names requested so far, with the shape the model expects (for --check-models style listings). */
  readonly used = new Map<string, number[]>();
  /** Trainable parameters created so far, by name. */
  readonly trainable = new Map<string, Tensor>();
  private readonly made = new Map<string, Tensor>();

  constructor(readonly graph: Graph, readonly source: WeightSource, readonly opts: ParamsOptions = {}) {}

  /** A sub-scope: `p.scope("blocks.0").get("norm1.weight")` asks for "blocks.0.norm1.weight". */
  scope(prefix: string): Params {
    const child = Object.create(this) as Params;
    (child as { opts: ParamsOptions }).opts = { ...this.opts, prefix: (this.opts.prefix ?? "") + prefix + "." };
    return child;
  }

  has(name: string): boolean {
    return this.source.has((this.opts.prefix ?? "") + name);
  }

  get(name: string, shape: readonly number[]): Tensor {
    const full = (this.opts.prefix ?? "") + name;
    const made = this.made.get(full);
    if (made) return made;
    this.used.set(full, [...shape]);
    if (!this.source.has(full)) {
      const near = this.source.names().filter((n) => n.endsWith(name.split(".").pop()!)).slice(0, 5);
      throw new Error(`${this.source.label}: missing weight "${full}" (expected shape [${shape.join(", ")}])${near.length ? `; similar names: ${near.join(", ")}` : ""}`);
    }
    const have = this.source.shape(full);
    if (have.length !== shape.length || have.some((d, i) => d !== shape[i])) {
      throw new Error(`${this.source.label}: weight "${full}" has shape [${have.join(", ")}], the model expects [${shape.join(", ")}] (check the model config)`);
    }
    let t: Tensor;
    if (this.opts.trainable?.(full)) {
      t = this.graph.param(full, shape);
      this.trainable.set(full, t);
    } else {
      const range = this.source.fileRange?.(full);
      t = range
        ? cast(this.graph.external(full, shape, range.file, range.byteOffset, range.byteLength, range.dtype), "float32")
        : this.graph.constant(this.source.float32(full), shape, "float32", full);
    }
    this.made.set(full, t);
    return t;
  }
}
