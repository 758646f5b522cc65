// Weights known by shape only: a model definition builds its full graph over them (every tensor
// and node with its static shape) without a weight file or a single value in memory. The memory
// planner (lib/train/plan.ts) uses it; anything that asks for values gets a clear error.

import type { DType } from "../graph/index.ts";
import type { WeightSource } from "./params.ts";

const BYTES: Record<string, number> = { float32: 4, float16: 2, bfloat16: 2 };

export class ShapeSource implements WeightSource {
  readonly shapes: Map<string, number[]>;

  /**
   * `shapes`: name -> shape (e.g. unetParamShapes(config)); `dtype`: how the weights are stored on
   * disk (frozen ones become external-data initializers of that type, as with a real file).
   */
  constructor(shapes: Map<string, number[]> | Iterable<[string, number[]]>, readonly dtype: DType = "float32", readonly label = "shapes only (no weights)") {
    if (!(dtype in BYTES)) throw new Error(`ShapeSource: weights stored as ${dtype} are not supported (float32, float16, bfloat16)`);
    this.shapes = new Map(shapes);
  }

  has(name: string): boolean { return this.shapes.has(name); }
  names(): string[] { return [...this.shapes.keys()]; }
  shape(name: string): number[] {
    const s = this.shapes.get(name);
    if (!s) throw new Error(`${this.label}: no tensor "${name}"`);
    return s;
  }
  float32(name: string): Float32Array {
    throw new Error(`${this.label}: "${name}" has a shape but no values; a shape-only graph (the memory planner) cannot be run`);
  }
  fileRange(name: string) {
    const n = this.shape(name).reduce((a, b) => a * b, 1);
    return { file: `/shapes-only/${this.dtype}.safetensors`, byteOffset: 0, byteLength: n * BYTES[this.dtype]!, dtype: this.dtype };
  }
}

/** Several shape sources as one (a UNet with its IP-Adapter projections). */
export function mergeShapes(...maps: Map<string, number[]>[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const m of maps) for (const [k, v] of m) out.set(k, v);
  return out;
}
