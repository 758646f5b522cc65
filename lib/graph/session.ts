// compile(outputs) -> an onnxruntime-node session; run(feeds) -> named typed-array views.
// Sessions are cached by a hash of the lowered model bytes and the session options, so building
// the same graph twice (every step of a training loop, every batch of a scoring run) compiles once.

import { createHash } from "node:crypto";
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { AttributeType, type ModelProto, type NodeProto, type ValueInfoProto, encodeModel } from "../onnx/index.ts";
import type { DType, Tensor } from "./graph.ts";
import { ensureDevice } from "./device.ts";
import { type Lowered, type NodeRewrite, lower } from "./lower.ts";
import { onnxTypeCode } from "./ops.ts";
import { fmt, product } from "./shape.ts";
import { webgpuRewrite } from "./webgpu.ts";
import { type Precision, autocast, currentPrecision, precisionSupport } from "./precision.ts";

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
  /** Lower the graph with this device's rules (default: `device`); tests run webgpu's lowering on the cpu. */
  lowerAs?: Device;
  /**
   * Outputs that stay on the device (webgpu: gpu buffers) for `runResident`, to be fed back as
   * inputs of a later run (training state). Elsewhere they come back to the host as usual.
   */
  keepOnDevice?: readonly string[];
  /**
   * The compute dtype (lib/graph/precision.ts): "fp16"/"bf16" rewrite the graph so the matmul
   * family computes in half precision, with float32 at the edges. Default: the process-wide
   * setting (`usePrecision`, what the scripts' --precision sets), else "fp32".
   */
  precision?: Precision;
  /** Write ONNX Runtime's optimized graph here (inspection and tests: which initializers it keeps in which dtype). */
  optimizedModelFilePath?: string;
  /**
   * Lower attention to ONNX Runtime's fused com.microsoft.MultiHeadAttention, which the cpu,
   * cuda and webgpu providers all ship (lib/graph/fuse.ts); default false (standard ops, the
   * reference). For inference graphs: in a training graph the backward pass reads the
   * attention's intermediates, so its attention stays in standard ops either way. Ignored on
   * the devices in UNFUSED (webgpu).
   */
  fusedOps?: boolean;
  /**
   * Keep frozen external weights only where ONNX Runtime maps them from their files: no
   * prepacked copies (session.disable_prepacking) and no NCHWc re-layout of Conv weights (graph
   * optimization at most "extended"). A training graph reads each weight in two layouts (Gemm
   * with and without transB, Conv and its ConvTranspose), and ORT prepacks one copy per layout:
   * the SD 1.5 UNet's training session held 6.3 GB for 3.4 GB of weights. Costs some speed (the
   * packing happens per call); see bench/RESULTS.md (dpo-step).
   */
  mappedWeights?: boolean;
}

/**
 * Devices whose contrib attention is not used (fusedOps is ignored there). webgpu: onnxruntime-node
 * 1.30's WebGPU MultiHeadAttention computes wrong values on Mesa lavapipe once the sequence is 32
 * tokens or longer and the head size a multiple of 4 (max |error| 0.05-0.99 against the standard
 * form, which stays exact; head size 5, or 16 tokens or fewer, come out right). Measured in
 * tests/graph/fuse.test.ts, which fails when a release computes it right.
 */
export const UNFUSED: ReadonlySet<Device> = new Set(["webgpu"]);

/**
 * A tensor that may live on the device: a webgpu gpu-buffer output of `runResident` (fed back as
 * an input without touching the host), or, on other devices, the host array itself.
 */
export class DeviceTensor {
  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    /** The gpu-buffer tensor (webgpu), or undefined when the values are on the host. */
    readonly onDevice: ort.Tensor | undefined,
    readonly host: HostArray | undefined,
  ) {}

  /** Frees the gpu buffer (a no-op for host values); the tensor cannot be used afterwards. */
  dispose(): void {
    this.onDevice?.dispose();
  }
}

/**
 * Bytes the host sent to a GPU provider and got back, counted where our code crosses the boundary:
 * host feeds of a run on `cuda` / `webgpu`, host outputs, and `readback`. (Copies ORT makes inside
 * a run for nodes it places on the CPU are not counted.)
 */
const moved = { toDevice: 0, toHost: 0 };
export const transferBytes = (): { toDevice: number; toHost: number } => ({ ...moved });

/** Each device's lowering rules: what its provider lacks or gets wrong (lib/graph/webgpu.ts). */
const REWRITES: Partial<Record<Device, NodeRewrite>> = { webgpu: webgpuRewrite };

export type HostArray = Float32Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;
export type Feeds = Record<string, HostArray>;

// bfloat16 crosses the session boundary as float32 (see bridgeBfloat16).
const ORT_TYPE: Record<DType, ort.Tensor.Type> = {
  float32: "float32", float16: "float16", bfloat16: "float32", int64: "int64", int32: "int32", bool: "bool", uint8: "uint8",
};

/**
 * bfloat16 at the session's edge. onnxruntime-node cannot hold a bfloat16 tensor on the JS side:
 * onnxruntime-common 1.30 has no 'bfloat16' tensor type, and the binding refuses to create a
 * session whose inputs or outputs are bfloat16 ("Unsupported data type: 16"). Feeding the bits as
 * float16 would read them as other numbers (bf16 1.5 = 0x3fc0 is float16 1.9375). So the session's
 * inputs and outputs carry float32, which holds every bfloat16 value exactly, and Cast nodes
 * convert inside the graph. On the host, bfloat16 stays what safetensors stores: a Uint16Array of
 * bf16 bits, widened before a run and narrowed after it, both exactly.
 */
const BF16_IN = (name: string) => `${name}::bfloat16`;
const BF16_OUT = (name: string) => `${name}::float32`;
const isBf16 = (v: ValueInfoProto) => v.type?.tensorType?.elemType === onnxTypeCode("bfloat16");

function bridgeBfloat16(model: ModelProto): ModelProto {
  const g = model.graph;
  const ins = g.input.filter(isBf16);
  const outs = g.output.filter(isBf16);
  if (!ins.length && !outs.length) return model;
  const rename = new Map(ins.map((v) => [v.name, BF16_IN(v.name)]));
  const cast = (to: DType, from: string, out: string): NodeProto => ({ opType: "Cast", input: [from], output: [out], attribute: [{ name: "to", type: AttributeType.INT, i: onnxTypeCode(to) }] });
  const asFloat32 = (v: ValueInfoProto, name = v.name): ValueInfoProto => ({ ...v, name, type: { tensorType: { ...v.type!.tensorType!, elemType: onnxTypeCode("float32") as never } } });
  const node = [
    ...ins.map((v) => cast("bfloat16", v.name, rename.get(v.name)!)),
    ...g.node.map((n) => ({ ...n, input: n.input.map((x) => rename.get(x) ?? x) })),
    ...outs.map((v) => cast("float32", rename.get(v.name) ?? v.name, BF16_OUT(v.name))),
  ];
  return {
    ...model,
    graph: {
      ...g, node,
      input: g.input.map((v) => (isBf16(v) ? asFloat32(v) : v)),
      output: g.output.map((v) => (isBf16(v) ? asFloat32(v, BF16_OUT(v.name)) : v)),
    },
  };
}

/** bf16 bits -> float32 values (exact: a bf16 is the top half of a float32). */
function widenBf16(bits: Uint16Array): Float32Array {
  const u = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i]! << 16;
  return new Float32Array(u.buffer);
}

/** float32 values that came out of a bfloat16 Cast -> their bf16 bits (exact: the low half is zero). */
function narrowToBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  return Uint16Array.from(u, (v) => v >>> 16);
}

/**
 * Frozen half-precision weights stay half precision on a GPU provider. lib/nn/params.ts reads an
 * fp16/bf16 tensor of a checkpoint in place (an external-data initializer) and casts it to
 * float32 in the graph; ONNX Runtime's ConstantFolding then computes that Cast once, at session
 * creation, and keeps the float32 result as a new initializer: a float32 copy of every frozen
 * weight (measured on cpu and webgpu, tests/graph/precision.test.ts), twice the memory of an fp16
 * SDXL UNet on the device. An initializer that is also listed as a graph input can be overridden
 * by a feed, so ORT does not treat it as constant and leaves its Cast alone: the weight stays in
 * its stored dtype, and the Cast runs when a consumer needs it (a transient float32 tensor). We
 * never feed these inputs. On the CPU the float32 copy is what its kernels want (it has no fp16
 * MatMul on x86), so the fold stays. On webgpu only fp16 is kept: WebGPU has no bfloat16, so a
 * bf16 Cast would run on the CPU provider every run; it is folded to a float32 copy instead.
 */
function keepHalfWeights(model: ModelProto, device: Device): ModelProto {
  if (device === "cpu") return model;
  const half = new Set([onnxTypeCode("float16"), ...(device === "cuda" ? [onnxTypeCode("bfloat16")] : [])]);
  const castInputs = new Set(model.graph.node.filter((n) => n.opType === "Cast").map((n) => n.input[0]!));
  const keep = model.graph.initializer.filter((t) => t.dataLocation === 1 && half.has(t.dataType as number) && castInputs.has(t.name));
  if (!keep.length) return model;
  const inputs = keep.map((t): ValueInfoProto => ({ name: t.name, type: { tensorType: { elemType: t.dataType, shape: t.dims.map((d) => ({ dimValue: Number(d) })) } } }));
  return { ...model, graph: { ...model.graph, input: [...model.graph.input, ...inputs] } };
}

export class Compiled {
  constructor(
    readonly session: ort.InferenceSession,
    readonly lowered: Lowered,
    readonly key: string,
    readonly device: Device = "cpu",
    readonly keepOnDevice: ReadonlySet<string> = new Set(),
  ) {}

  /** Input name -> [shape, dtype], for callers that allocate feeds. */
  get inputs(): { name: string; shape: readonly number[]; dtype: DType }[] {
    return this.lowered.inputs.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype }));
  }

  /** Runs the graph. Every input must be fed with exactly its static size. */
  async run(feeds: Feeds): Promise<Record<string, HostArray>> {
    return (await this.runResident(feeds)).host;
  }

  /**
   * Runs the graph with some inputs given as device tensors (outputs of an earlier run) and
   * returns the `keepOnDevice` outputs as device tensors, the others on the host.
   */
  async runResident(feeds: Record<string, HostArray | DeviceTensor>): Promise<{ host: Record<string, HostArray>; device: Record<string, DeviceTensor> }> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    const gpu = this.device !== "cpu";
    for (const t of this.lowered.inputs) {
      const given = feeds[t.name];
      if (given instanceof DeviceTensor) {
        if (given.shape.join() !== t.shape.join() || given.dtype !== t.dtype) throw new Error(`run: device feed "${t.name}" is ${given.dtype} ${fmt(given.shape)}, the graph wants ${t.dtype} ${fmt(t.shape)}`);
        if (given.onDevice) {
          ortFeeds[t.name] = given.onDevice;
          continue;
        }
      }
      const v = given instanceof DeviceTensor ? given.host! : given;
      if (!v) throw new Error(`run: missing feed "${t.name}" ${fmt(t.shape)} (inputs: ${this.lowered.inputs.map((i) => i.name).join(", ")})`);
      if (v.length !== product(t.shape)) throw new Error(`run: feed "${t.name}" has ${v.length} values, the graph wants ${fmt(t.shape)} = ${product(t.shape)}`);
      if (t.dtype === "bfloat16" && !(v instanceof Uint16Array)) {
        throw new Error(`run: feed "${t.name}" is bfloat16: pass its bits as a Uint16Array (f32ToBf16Bits in lib/io/safetensors.ts rounds float32 values), got a ${v.constructor.name}`);
      }
      ortFeeds[t.name] = new ort.Tensor(ORT_TYPE[t.dtype], (t.dtype === "bfloat16" ? widenBf16(v as Uint16Array) : v) as never, [...t.shape]);
      if (gpu) moved.toDevice += ortFeeds[t.name]!.size * bytesOf(t.dtype);
    }
    const known = new Set(this.lowered.inputs.map((t) => t.name));
    for (const k of Object.keys(feeds)) if (!known.has(k)) throw new Error(`run: "${k}" is not an input of this graph (inputs: ${[...known].join(", ")})`);
    const res = await this.session.run(ortFeeds);
    const host: Record<string, HostArray> = {};
    const device: Record<string, DeviceTensor> = {};
    for (const [name, t] of this.lowered.outputs) {
      const r = res[t.dtype === "bfloat16" ? BF16_OUT(name) : name]!;
      if (r.location === "gpu-buffer") {
        device[name] = new DeviceTensor(t.dtype, t.shape, r, undefined);
        continue;
      }
      const data = t.dtype === "bfloat16" ? narrowToBf16(r.data as Float32Array) : (r.data as HostArray);
      if (gpu) moved.toHost += data.byteLength;
      if (this.keepOnDevice.has(name)) device[name] = new DeviceTensor(t.dtype, t.shape, undefined, data);
      else host[name] = data;
    }
    return { host, device };
  }
}

const bytesOf = (d: DType) => ({ float32: 4, float16: 2, bfloat16: 4, int64: 8, int32: 4, bool: 1, uint8: 1 })[d];

const readers = new Map<string, Promise<ort.InferenceSession>>();

/** A device tensor's values on the host (webgpu: one download, through a cached Identity session). */
export async function readback(t: DeviceTensor): Promise<HostArray> {
  if (!t.onDevice) return t.host!;
  if (t.dtype === "bfloat16") throw new Error("readback: bfloat16 device tensors are not supported");
  const key = `${t.dtype}:${t.shape.join("x")}`;
  let s = readers.get(key);
  if (!s) {
    const info = (name: string) => ({ name, type: { tensorType: { elemType: onnxTypeCode(t.dtype) as never, shape: t.shape.map((d) => ({ dimValue: d })) } } });
    const model = encodeModel({
      irVersion: 8, opsetImport: [{ domain: "", version: 17 }], producerName: "patchdpo", producerVersion: "0.1.0",
      graph: { name: "readback", node: [{ opType: "Identity", input: ["x"], output: ["y"], attribute: [] }], initializer: [], input: [info("x")], output: [info("y")], valueInfo: [] },
    });
    // Tensor.getData() on a gpu-buffer tensor aborts the process under Bun (onnxruntime-node 1.30);
    // a run whose output is on the CPU downloads it instead.
    s = ort.InferenceSession.create(model, { executionProviders: ["webgpu"] as never });
    readers.set(key, s);
  }
  const out = (await (await s).run({ x: t.onDevice })).y!.data as HostArray;
  moved.toHost += out.byteLength;
  return out;
}

const uploaders = new Map<string, Promise<ort.InferenceSession>>();

/**
 * Host values as a device tensor (webgpu: one upload, through a cached Identity session whose
 * output stays in a gpu buffer), to be fed to several runs without crossing again: constant
 * inputs such as patch-dpo's frozen reference weights, or a batch two graphs read. On other
 * devices the host values themselves.
 */
export async function upload(values: HostArray, dtype: DType, shape: readonly number[], device: Device): Promise<DeviceTensor> {
  if (values.length !== product(shape)) throw new Error(`upload: ${values.length} values for shape ${fmt(shape)}`);
  if (device !== "webgpu") return new DeviceTensor(dtype, shape, undefined, values);
  if (dtype === "bfloat16") throw new Error("upload: bfloat16 device tensors are not supported");
  const key = `${dtype}:${shape.join("x")}`;
  let s = uploaders.get(key);
  if (!s) {
    const info = (name: string) => ({ name, type: { tensorType: { elemType: onnxTypeCode(dtype) as never, shape: shape.map((d) => ({ dimValue: d })) } } });
    const model = encodeModel({
      irVersion: 8, opsetImport: [{ domain: "", version: 17 }], producerName: "patchdpo", producerVersion: "0.1.0",
      graph: { name: "upload", node: [{ opType: "Identity", input: ["x"], output: ["y"], attribute: [] }], initializer: [], input: [info("x")], output: [info("y")], valueInfo: [] },
    });
    s = ort.InferenceSession.create(model, { executionProviders: ["webgpu"] as never, preferredOutputLocation: "gpu-buffer" });
    uploaders.set(key, s);
  }
  const out = (await (await s).run({ x: new ort.Tensor(ORT_TYPE[dtype], values as never, [...shape]) })).y!;
  moved.toDevice += values.byteLength;
  return new DeviceTensor(dtype, shape, out, undefined);
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

/** Session options shared by compiled graphs and ONNX files: device, threads, optimization, arena. */
function ortOptions(device: Device, threads: number, optimization: NonNullable<CompileOptions["optimization"]>, memArena: boolean): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: providers(device) as never,
    graphOptimizationLevel: optimization,
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    enableCpuMemArena: memArena,
  };
}

/** Lowers the graph for `outputs`, creates (or reuses) an ONNX Runtime session. */
export async function compile(outputs: Record<string, Tensor>, opts: CompileOptions = {}): Promise<Compiled> {
  const device = opts.device ?? "cpu";
  await ensureDevice(device);
  const precision = opts.precision ?? currentPrecision();
  const unsupported = precisionSupport(device, precision).problem;
  if (unsupported) throw new Error(unsupported);
  const lowered = lower(autocast(outputs, precision), { rewrite: REWRITES[opts.lowerAs ?? device], fused: opts.fusedOps && !UNFUSED.has(opts.lowerAs ?? device) });
  const bytes = encodeModel(keepHalfWeights(bridgeBfloat16(lowered.model), device));
  const threads = opts.threads ?? 0;
  // Half-precision graphs with trainable inputs (training graphs, and patch-dpo's forward twin that
  // computes the frozen reference's prediction) skip ORT's extended fusions. Whether ORT fuses
  // depends on the graph around a node (a backward pass reading an intermediate blocks a fusion),
  // and in fp16 a fused kernel rounds differently: the same UNet forward then differed by 5.9e-3
  // between the training graph and its twin on webgpu (2.5e-3 on cpu), which patch-dpo's beta
  // multiplies into the loss. With "basic" they agree bit for bit on webgpu; cpu's fp16 (Casts ORT
  // inserts, then partly removes at "basic") needs "disabled" (tests/graph/precision.test.ts).
  const halfTraining = precision !== "fp32" && lowered.inputs.some((t) => t.trainable) ? (device === "cpu" ? "disabled" : "basic") : undefined;
  const chosen = opts.optimization ?? halfTraining ?? "all";
  const optimization = opts.mappedWeights && chosen === "all" ? "extended" : chosen;
  // The weight files' identities are part of the key: a checkpoint rewritten at the same path gets a new session.
  const weightIds = lowered.external.files.map((f) => {
    const st = statSync(f);
    return [f, st.ino, st.size, st.mtimeMs];
  });
  const keep = [...(opts.keepOnDevice ?? [])].sort();
  for (const k of keep) {
    if (!lowered.outputs.has(k)) throw new Error(`compile: keepOnDevice names "${k}", which is not an output (outputs: ${[...lowered.outputs.keys()].join(", ")})`);
    if (lowered.outputs.get(k)!.dtype === "bfloat16") throw new Error(`compile: keepOnDevice output "${k}" is bfloat16, which crosses the session's edge as float32 (keep float32 state)`);
  }
  const h = createHash("sha256").update(bytes).update(JSON.stringify([device, threads, optimization, opts.memArena ?? null, lowered.external.folder ?? null, [...lowered.external.links], weightIds, keep, opts.optimizedModelFilePath ?? null, opts.mappedWeights ?? false]));
  const key = h.digest("hex");
  let p = cache.get(key);
  if (!p) {
    p = (async () => {
      const folder = lowered.external.folder ?? (lowered.external.links.size ? linkWeights(lowered.external.links, opts.cacheDir ?? ".cache/weights") : undefined);
      // Training graphs: ORT's arena keeps its high-water mark of forward activations + gradients
      // for the session's lifetime; without it the peak RSS of a ViT-S step fell from 2.3 to
      // 1.7 GB here at no cost in speed. Inference graphs keep the arena (small, reused buffers).
      // Small training graphs want it on: the tiny world's UNet step took 1.4 s without it and
      // 0.45 s with it (most of the difference was page faults of freshly mapped buffers).
      const sessionOptions = ortOptions(device, threads, optimization, opts.memArena ?? !lowered.inputs.some((t) => t.trainable));
      if (folder) sessionOptions.extra = { session: { model_external_initializers_file_folder_path: folder } };
      if (opts.mappedWeights) sessionOptions.extra = { ...sessionOptions.extra, session: { ...(sessionOptions.extra as { session?: object } | undefined)?.session, disable_prepacking: "1" } };
      if (opts.optimizedModelFilePath) sessionOptions.optimizedModelFilePath = opts.optimizedModelFilePath;
      // Only the WebGPU provider can hand a tensor back on the device in Node.
      if (device === "webgpu" && keep.length) sessionOptions.preferredOutputLocation = Object.fromEntries(keep.map((k) => [k, "gpu-buffer"])) as never;
      try {
        return new Compiled(await ort.InferenceSession.create(bytes, sessionOptions), lowered, key, device, new Set(keep));
      } catch (e) {
        throw new Error(`ONNX Runtime could not create a session on ${device}: ${(e as Error).message}`);
      }
    })();
    cache.set(key, p);
    p.catch(() => cache.delete(key));
  }
  return p;
}

/** An ONNX model file that another tool exported (a transformers.js encoder), for inference. */
export class OnnxFile {
  constructor(
    readonly session: ort.InferenceSession,
    readonly path: string,
  ) {}

  get inputNames(): readonly string[] { return this.session.inputNames; }
  get outputNames(): readonly string[] { return this.session.outputNames; }

  /** Runs the model; a feed's element type is its array's (Float32Array: float32, BigInt64Array: int64, ...). */
  async run(feeds: Record<string, { data: HostArray; dims: readonly number[] }>): Promise<Record<string, { data: HostArray; dims: number[] }>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(data as never, [...dims]);
    const res = await this.session.run(ortFeeds);
    const out: Record<string, { data: HostArray; dims: number[] }> = {};
    for (const [name, t] of Object.entries(res)) out[name] = { data: t.data as HostArray, dims: [...t.dims] };
    return out;
  }
}

const files = new Map<string, Promise<OnnxFile>>();

/**
 * Opens an ONNX file (or reuses its open session) with the device choice, threads and options of
 * compiled graphs, so every encoder of a run shares one cache and one `--device`. The key holds the
 * identity (inode, size, mtime) of the model and of its external-data siblings (model.onnx_data):
 * an export replaced at the same path gets a new session. ORT reads external data next to the file.
 */
export async function openOnnxFile(path: string, opts: CompileOptions = {}): Promise<OnnxFile> {
  const file = resolve(path);
  const device = opts.device ?? "cpu";
  const threads = opts.threads ?? 0;
  const optimization = opts.optimization ?? "all";
  const memArena = opts.memArena ?? true; // inference: small, reused buffers
  if (!existsSync(file)) throw new Error(`${file} does not exist`);
  await ensureDevice(device);
  const stamp = readdirSync(dirname(file)).filter((f) => f.startsWith(basename(file))).sort().map((f) => {
    const st = statSync(join(dirname(file), f));
    return [f, st.dev, st.ino, st.size, st.mtimeMs];
  });
  const key = JSON.stringify([file, stamp, device, threads, optimization, memArena]);
  let p = files.get(key);
  if (!p) {
    p = (async () => {
      try {
        return new OnnxFile(await ort.InferenceSession.create(file, ortOptions(device, threads, optimization, memArena)), file);
      } catch (e) {
        throw new Error(`ONNX Runtime could not open ${file} on ${device}: ${(e as Error).message}`);
      }
    })();
    files.set(key, p);
    p.catch(() => files.delete(key));
  }
  return p;
}

/** Drops cached sessions, of compiled graphs and of ONNX files (frees their memory). */
export async function clearSessionCache(): Promise<void> {
  const all = [...cache.values(), ...files.values()];
  cache.clear();
  files.clear();
  for (const p of all) await p.then((c) => c.session.release()).catch(() => {});
}

/** Encoded ONNX bytes of a graph, e.g. to save it for inspection in Netron (as lowered for `device`). */
export function toOnnx(outputs: Record<string, Tensor>, device: Device = "cpu", fused = false): Uint8Array {
  return encodeModel(lower(outputs, { rewrite: REWRITES[device], fused }).model);
}
