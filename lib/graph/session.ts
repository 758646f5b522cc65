// compile(outputs) -> an onnxruntime-node session; run(feeds) -> named typed-array views.
// Sessions are cached by a hash of the lowered model bytes and the session options, so building
// the same graph twice (every step of a training loop, every batch of a scoring run) compiles once.

import { createHash } from "node:crypto";
import { copyFileSync, existsSync, linkSync, mkdirSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { encodeModel } from "../onnx/index.ts";
import type { DType, Tensor } from "./graph.ts";
import { type Lowered, lower } from "./lower.ts";
import { fmt, product } from "./shape.ts";

export type Device = "cpu" | "cuda" | "webgpu";
export const DEVICES: readonly Device[] = ["cpu", "cuda", "webgpu"];

export interface CompileOptions {
  device?: Device;
  /** Intra-op threads; 0 lets ONNX Runtime pick (one per physical core). */
  threads?: number;
  /** ONNX Runtime graph optimization level (default "all"). */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /** ONNX Runtime's CPU memory arena (default: on for inference graphs, off for training graphs). */
  memArena?: boolean;
  /** Where hard links to weight files from several folders are made (default .cache/weights). */
  cacheDir?: string;
}

export type HostArray = Float32Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;
export type Feeds = Record<string, HostArray>;

const ORT_TYPE: Record<DType, ort.Tensor.Type> = {
  float32: "float32", float16: "float16", bfloat16: "float16", int64: "int64", int32: "int32", bool: "bool", uint8: "uint8",
};

export class Compiled {
  constructor(
    readonly session: ort.InferenceSession,
    readonly lowered: Lowered,
    readonly key: string,
  ) {}

  /** Input name -> [shape, dtype], for callers that allocate feeds. */
  get inputs(): { name: string; shape: readonly number[]; dtype: DType }[] {
    return this.lowered.inputs.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype }));
  }

  /** Runs the graph. Every input must be fed with exactly its static size. */
  async run(feeds: Feeds): Promise<Record<string, HostArray>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const t of this.lowered.inputs) {
      const v = feeds[t.name];
      if (!v) throw new Error(`run: missing feed "${t.name}" ${fmt(t.shape)} (inputs: ${this.lowered.inputs.map((i) => i.name).join(", ")})`);
      if (v.length !== product(t.shape)) throw new Error(`run: feed "${t.name}" has ${v.length} values, the graph wants ${fmt(t.shape)} = ${product(t.shape)}`);
      ortFeeds[t.name] = new ort.Tensor(ORT_TYPE[t.dtype], v as never, [...t.shape]);
    }
    const known = new Set(this.lowered.inputs.map((t) => t.name));
    for (const k of Object.keys(feeds)) if (!known.has(k)) throw new Error(`run: "${k}" is not an input of this graph (inputs: ${[...known].join(", ")})`);
    const res = await this.session.run(ortFeeds);
    const out: Record<string, HostArray> = {};
    for (const name of this.lowered.outputs.keys()) out[name] = res[name]!.data as HostArray;
    return out;
  }
}

const cache = new Map<string, Promise<Compiled>>();

function providers(device: Device): string[] {
  // onnxruntime-node names: "cpu", "cuda" (needs its CUDA 12 libraries), "webgpu".
  return device === "cpu" ? ["cpu"] : [device, "cpu"];
}

/**
 * Hard-links weight files from several folders into one folder of ours (copy if links fail).
 * The folder is named by the files' identities (inode, size, mtime), not just their paths: a
 * checkpoint replaced at the same path must never be read through a stale link to the old file.
 */
function linkWeights(links: Map<string, string>, cacheDir: string): string {
  const identity = [...links].map(([loc, file]) => {
    const st = statSync(file);
    return [loc, resolve(file), st.dev, st.ino, st.size, st.mtimeMs];
  });
  const id = createHash("sha256").update(JSON.stringify(identity)).digest("hex").slice(0, 16);
  const dir = resolve(cacheDir, id);
  mkdirSync(dir, { recursive: true });
  for (const [loc, file] of links) {
    const target = join(dir, loc);
    if (existsSync(target)) {
      const [a, b] = [statSync(target), statSync(file)];
      if ((a.ino === b.ino && a.dev === b.dev) || (a.size === b.size && a.mtimeMs >= b.mtimeMs)) continue;
      rmSync(target);
    }
    try {
      linkSync(file, target);
    } catch {
      copyFileSync(file, target); // another file system: a copy is the only way ORT accepts
    }
  }
  return dir;
}

/** Lowers the graph for `outputs`, creates (or reuses) an ONNX Runtime session. */
export async function compile(outputs: Record<string, Tensor>, opts: CompileOptions = {}): Promise<Compiled> {
  const lowered = lower(outputs);
  const bytes = encodeModel(lowered.model);
  const device = opts.device ?? "cpu";
  const threads = opts.threads ?? 0;
  const optimization = opts.optimization ?? "all";
  // The weight files' identities are part of the key: a checkpoint rewritten at the same path gets a new session.
  const weightIds = lowered.external.files.map((f) => {
    const st = statSync(f);
    return [f, st.ino, st.size, st.mtimeMs];
  });
  const h = createHash("sha256").update(bytes).update(JSON.stringify([device, threads, optimization, opts.memArena ?? null, lowered.external.folder ?? null, [...lowered.external.links], weightIds]));
  const key = h.digest("hex");
  let p = cache.get(key);
  if (!p) {
    p = (async () => {
      const folder = lowered.external.folder ?? (lowered.external.links.size ? linkWeights(lowered.external.links, opts.cacheDir ?? ".cache/weights") : undefined);
      const sessionOptions: ort.InferenceSession.SessionOptions = {
        executionProviders: providers(device) as never,
        graphOptimizationLevel: optimization,
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        // Training graphs: ORT's arena keeps its high-water mark of forward activations + gradients
        // for the session's lifetime; without it the peak RSS of a ViT-S step fell from 2.3 to
        // 1.7 GB here at no cost in speed. Inference graphs keep the arena (small, reused buffers).
        // Small training graphs want it on: the tiny world's UNet step took 1.4 s without it and
        // 0.45 s with it (most of the difference was page faults of freshly mapped buffers).
        enableCpuMemArena: opts.memArena ?? !lowered.inputs.some((t) => t.trainable),
      };
      if (folder) sessionOptions.extra = { session: { model_external_initializers_file_folder_path: folder } };
      try {
        return new Compiled(await ort.InferenceSession.create(bytes, sessionOptions), lowered, key);
      } catch (e) {
        throw new Error(`ONNX Runtime could not create a session on ${device}: ${(e as Error).message}`);
      }
    })();
    cache.set(key, p);
    p.catch(() => cache.delete(key));
  }
  return p;
}

/** Drops cached sessions (frees their memory). */
export async function clearSessionCache(): Promise<void> {
  const all = [...cache.values()];
  cache.clear();
  for (const p of all) await p.then((c) => c.session.release()).catch(() => {});
}

/** Encoded ONNX bytes of a graph, e.g. to save it for inspection in Netron. */
export function toOnnx(outputs: Record<string, Tensor>): Uint8Array {
  return encodeModel(lower(outputs).model);
}
