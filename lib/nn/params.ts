// Parameters bound by name. A model definition asks for `p.get("blocks.0.attn.qkv.weight", [1152, 384])`
// and gets a tensor whose kind depends on how the model is being used:
//   frozen + in a file   -> an external-data initializer pointing into the safetensors file (no copy);
//   frozen + in memory   -> an inline constant (e.g. weights dequantized from another format);
//   trainable            -> a graph input; the trainer feeds current values each step.

import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { UserError } from "../io/errors.ts";
import { resolveInside } from "../io/rundir.ts";
import { type DType, type Graph, type Tensor, cast } from "../graph/index.ts";
import { openSafetensors, refuseUnsafeWeights, type SafetensorsFile } from "../io/safetensors.ts";

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
  /**
   * A prefix for the graph tensors' names only (not the weight keys), so two models whose keys
   * coincide (SDXL's two CLIP text encoders) can live in one graph.
   */
  graphPrefix?: string;
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
      t = this.graph.param((this.opts.graphPrefix ?? "") + full, shape);
      this.trainable.set(full, t);
    } else {
      const range = this.source.fileRange?.(full);
      t = range
        ? cast(this.graph.external((this.opts.graphPrefix ?? "") + full, shape, range.file, range.byteOffset, range.byteLength, range.dtype), "float32")
        : this.graph.constant(this.source.float32(full), shape, "float32", (this.opts.graphPrefix ?? "") + full);
    }
    this.made.set(full, t);
    return t;
  }
}

/**
 * Weights from one or more safetensors files (a sharded checkpoint is several). F32/F16/BF16
 * tensors are read in place by ONNX Runtime (external data); nothing is copied.
 */
export class SafetensorsSource implements WeightSource {
  private readonly where = new Map<string, SafetensorsFile>();
  readonly label: string;

  constructor(paths: string[]) {
    if (paths.length === 0) throw new Error("SafetensorsSource: no files given");
    for (const path of paths) {
      refuseUnsafeWeights(path);
      const f = openSafetensors(path);
      for (const n of f.names()) this.where.set(n, f);
    }
    this.label = paths.length === 1 ? paths[0]! : `${paths[0]} (+${paths.length - 1} more)`;
  }
  has(name: string) { return this.where.has(name); }
  names() { return [...this.where.keys()]; }
  shape(name: string) { return this.file(name).info(name).shape; }
  float32(name: string) { return this.file(name).float32(name); }
  fileRange(name: string) {
    const f = this.file(name);
    const info = f.info(name);
    const dtype = ({ F32: "float32", F16: "float16", BF16: "bfloat16" } as const)[info.dtype as "F32" | "F16" | "BF16"];
    if (!dtype) return undefined; // other dtypes are converted to float32 constants
    return { file: resolve(f.path), byteOffset: info.byteOffset, byteLength: info.byteLength, dtype };
  }
  private file(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new Error(`${this.label}: no tensor "${name}"`);
    return f;
  }
}

/** Overlays replace some tensors of a base source (e.g. finetuned blocks over the original weights). */
export class OverlaySource implements WeightSource {
  constructor(readonly base: WeightSource, readonly overlay: WeightSource) {}
  get label() { return `${this.overlay.label} over ${this.base.label}`; }
  has(name: string) { return this.overlay.has(name) || this.base.has(name); }
  names() { return [...new Set([...this.base.names(), ...this.overlay.names()])]; }
  private pick(name: string) { return this.overlay.has(name) ? this.overlay : this.base; }
  shape(name: string) { return this.pick(name).shape(name); }
  float32(name: string) { return this.pick(name).float32(name); }
  fileRange(name: string) { return this.pick(name).fileRange?.(name); }
}

/**
 * The safetensors file(s) holding a model's weights in a folder: `<base>.safetensors`, or the
 * shards listed by `<base>.safetensors.index.json` (how transformers and diffusers save large
 * models). `bases` are tried in order (e.g. "model", "diffusion_pytorch_model"); a folder with
 * only pickled weights gets the refusal that explains why and how to convert.
 */
export function weightFiles(dir: string, bases: string[]): string[] {
  for (const base of bases) {
    const single = join(dir, `${base}.safetensors`);
    if (existsSync(single)) return [single];
    const index = join(dir, `${base}.safetensors.index.json`);
    if (existsSync(index)) {
      let map: Record<string, string>;
      try {
        map = (JSON.parse(readFileSync(index, "utf8")) as { weight_map: Record<string, string> }).weight_map;
      } catch (e) {
        throw new UserError(`${index}: not a safetensors index (${(e as Error).message})`);
      }
      const shards = [...new Set(Object.values(map ?? {}))];
      if (!shards.length) throw new UserError(`${index}: its weight_map lists no files`);
      return shards.map((f) => {
        const path = resolveInside(dir, f);
        if (!existsSync(path)) throw new UserError(`${index} lists ${f}, which is missing from ${dir}`);
        return path;
      });
    }
  }
  for (const base of bases) {
    for (const ext of [".bin", ".pt", ".pth", ".ckpt"]) if (existsSync(join(dir, base + ext))) refuseUnsafeWeights(join(dir, base + ext));
  }
  throw new UserError(`${dir}: no ${bases.map((b) => `${b}.safetensors`).join(" or ")} (or a sharded .safetensors.index.json)`);
}
