// The memory planner: the peak memory of a training step predicted from shapes alone, before any
// weight is read or any session made (`dpo-epoch --plan`, `finetune-encoder --plan`).
//
// It builds the step's graphs exactly as the trainer does (the same model functions, autodiff and
// objective, over ShapeSource weights), measures each graph with lib/graph/memory.ts (initializers
// after constant folding, weights pre-packed by several kernels, liveness of intermediate tensors
// over the execution order), and adds what the script holds around the sessions:
//
//   host (CPU run):   process (bun + onnxruntime-node + sharp, measured)
//                   + per session: its initializers + pre-packed copies + a per-node overhead (measured)
//                   + trainable weights in float32: the script's copies (dpo-epoch: the current weights
//                     and the frozen twin's starting weights), AdamW's two moments, the gradients
//                     (the binding's copy of ORT's outputs, plus GradAccumulator's sum)
//                   + activations: with ORT's arena each session keeps its own high-water mark, so the
//                     sessions' peaks add up; without it (training graphs of real models) only the
//                     largest run's peak (its outputs copied into JS while ORT still holds them)
//   device (GPU run): per session its initializers (no pre-packing); the fed trainable weights and the
//                     gradients on the device; each session's own arena (peaks add up); a CUDA
//                     context allowance. The host then holds the process, the float32 copies,
//                     AdamW and gradients.
//
// Precision: each graph goes through lib/graph/precision.ts's autocast, as compile() does, so fp16 /
// bf16 tensors are counted at 2 bytes where autocast puts them (matmuls, convs, what lies between
// them) and float32 elsewhere (softmax, norms, losses, the graph's edge); float32 master weights,
// gradients and AdamW moments stay on the host.

import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";
import { type GraphMemory, graphMemory } from "../graph/memory.ts";
import { UsageError, UserError } from "../io/errors.ts";
import { type ClipTextConfig, clipTextConfigFromJson, clipTextForward, clipTextInputs, clipTextParamShapes } from "../models/clip-text.ts";
import { type ClipVisionConfig, clipVisionConfigFromJson, clipVisionForward, clipVisionParamShapes } from "../models/clip-vision.ts";
import { IP_ADAPTER_PLUS_SD15, IP_ADAPTER_PLUS_SDXL, type ImageProjectionConfig, imageProjConfigFromWeights, imageProjParamShapes, imageProjection } from "../models/ip-adapter.ts";
import { loadMobileNetV2 } from "../models/mobilenet.ts";
import { type PixelVAEConfig, latentChannels, pixelUnshuffle, pixelVaeConfigFromJson } from "../models/pixel-vae.ts";
import { IpAdapterUNetSource, type UNetConfig, ipAdapterKeyMap, unetConfigFromJson, unetForward, unetParamShapes } from "../models/unet.ts";
import { type VAEConfig, toLatents, vaeConfigFromJson, vaeEncode, vaeParamShapes } from "../models/vae.ts";
import { openSafetensors } from "../io/safetensors.ts";
import type { PatchEncoder } from "../models/encoder.ts";
import { Params, type WeightSource } from "../nn/params.ts";
import { ShapeSource } from "../nn/shape-source.ts";
import { unetSessionChoices } from "./diffusion.ts";
import { infoNCE } from "./infonce.ts";
import { DPO_DEFAULTS, OBJECTIVES, type Objective, objective } from "./objectives.ts";

export const PRECISIONS = ["fp32", "fp16", "bf16"] as const;
export type Precision = (typeof PRECISIONS)[number];

const MiB = 2 ** 20;

/**
 * Measured on this machine (2 Zen 3 cores, onnxruntime-node 1.30, Bun 1.4; README "Memory planner"):
 * - process: peak RSS of `bun` importing a training script and running one tiny session (124 MB);
 * - session: RSS of a compiled session beyond its initializers and pre-packed weights, fitted on
 *   SD 1.5-layout UNets at 1/4 and 1/2 width (training graphs of 5775 nodes: +78 and +81 MB;
 *   forward graphs of 2137 nodes: +42 and +75 MB);
 * - heapResidue: without ORT's arena, the share of a run's liveness peak that glibc keeps resident
 *   after the first run, beside the memory-pattern block of the later runs (the same 1/4-width UNet
 *   at 32x32 latents: peak 621 MB, pattern 687 MB, measured +889 MB after the second run);
 * - mobilenetBytes: RSS added by loadMobileNetV2 (the embedded encoder decoded in JS: 45 MB).
 * Not measured (no GPU here): the CUDA context with cuBLAS / cuDNN workspaces, taken as 1.5 GiB.
 */
export const CALIBRATION = {
  processBytes: 124 * MiB,
  sessionFixedBytes: 12 * MiB,
  sessionBytesPerNode: 12 * 1024,
  gpuContextBytes: 1.5 * 1024 * MiB,
  heapResidue: 0.32,
  mobilenetBytes: 45 * MiB,
};

export type PlanDevice = "cpu" | "gpu";

/** One compiled graph of the step. `perStep`: it runs every step (features / VAE encoders run in prepare too). */
export interface SessionSpec {
  name: string;
  outputs: Record<string, Tensor>;
}

export interface StepSpec {
  sessions: SessionSpec[];
  /** Trainable values (float32 on the host). */
  trainableValues: number;
  /** Float32 copies of the trainable weights the script keeps on the host. */
  weightCopies: number;
  /** Gradient copies alive at once on the host. */
  gradCopies: number;
  /** ORT's CPU memory arena on the sessions (each keeps its high-water mark). */
  memArena: boolean;
  precision: Precision;
  /**
   * Frozen weights only as ONNX Runtime maps them from their files (CompileOptions.mappedWeights:
   * no pre-packed copies). Mapped pages count in RSS once per session that maps them.
   */
  mappedWeights?: boolean;
  /** Other host memory the script keeps during the step (e.g. an encoder's weights decoded in JS). */
  extraHost?: { what: string; bytes: number }[];
  /**
   * Bytes of the weight files read once at load (the NaN/Inf check maps and reads every page; the
   * mapping is gone after the next garbage collection, before the step): a load-time peak.
   */
  loadBytes?: number;
}

export interface PlanLine {
  what: string;
  bytes: number;
  where: "host" | "device";
}

export interface MemoryPlan {
  device: PlanDevice;
  precision: Precision;
  lines: PlanLine[];
  /** Predicted peak RSS of the process: the larger of the step and the load. */
  hostBytes: number;
  /** Host RSS during the steps, and at load (process + weight files mapped by the NaN/Inf check). */
  stepHostBytes: number;
  loadHostBytes: number;
  /** Predicted peak device memory (gpu). */
  deviceBytes?: number;
  sessions: { name: string; memory: GraphMemory }[];
}

const sessionOverhead = (m: GraphMemory) => CALIBRATION.sessionFixedBytes + CALIBRATION.sessionBytesPerNode * m.nodes;

/** The plan of a step whose graphs and host state are given (the benches use this directly). */
export function planStep(spec: StepSpec, device: PlanDevice = "cpu", opts: { neverFree?: boolean } = {}): MemoryPlan {
  // compile() rewrites every graph with autocast for the precision in force (lib/graph/precision.ts): so does the plan.
  // A GPU plan is a cuda plan: session.ts keeps fp16 / bf16 frozen weights in their stored dtype there.
  const keepHalfWeights: G.DType[] = device === "gpu" ? ["float16", "bfloat16"] : [];
  const sessions = spec.sessions.map((s) => ({ name: s.name, memory: graphMemory(G.autocast(s.outputs, spec.precision), { neverFree: opts.neverFree, keepHalfWeights }) }));
  const lines: PlanLine[] = [];
  const host = (what: string, bytes: number) => lines.push({ what, bytes, where: "host" });
  const dev = (what: string, bytes: number) => lines.push({ what, bytes, where: "device" });
  const f32 = 4 * spec.trainableValues;
  host("process: bun + onnxruntime-node (measured)", CALIBRATION.processBytes);
  host(`trainable weights, float32, ${spec.weightCopies} host cop${spec.weightCopies === 1 ? "y" : "ies"}`, spec.weightCopies * f32);
  host("AdamW moments (2 x float32)", 2 * f32);
  host(`gradients, float32, ${spec.gradCopies} host cop${spec.gradCopies === 1 ? "y" : "ies"}`, spec.gradCopies * f32);
  for (const e of spec.extraHost ?? []) host(e.what, e.bytes);
  if (device === "cpu") {
    for (const { name, memory: m } of sessions) {
      host(`${name}: initializers after constant folding${spec.mappedWeights ? " (frozen weights mapped from their files)" : ""}`, m.initializerBytes);
      if (m.packedBytes && !spec.mappedWeights) host(`${name}: weights pre-packed by a second kernel (forward + backward)`, m.packedBytes);
      host(`${name}: session (${m.nodes} nodes)`, sessionOverhead(m));
    }
    // A run allocates each intermediate as its node runs (the liveness peak); from the second run
    // on ORT allocates its memory-pattern block instead. With the arena the first run's buffers stay
    // in the arena beside that block, for each session; without it glibc keeps part of them
    // (CALIBRATION.heapResidue). Outputs are copied into JS arrays while ORT still holds them.
    const act = (m: GraphMemory) => (spec.memArena ? m.peakActivationBytes + m.patternBytes : m.patternBytes + CALIBRATION.heapResidue * m.peakActivationBytes) + m.outputBytes;
    if (spec.memArena) for (const { name, memory: m } of sessions) host(`${name}: activations in ORT's arena: first run's peak ${fmtBytes(m.peakActivationBytes)} (at ${m.peakAt.op} #${m.peakAt.index}) + memory-pattern block ${fmtBytes(m.patternBytes)} + output copies`, act(m));
    else {
      const top = sessions.reduce((a, b) => (act(b.memory) > act(a.memory) ? b : a));
      const m = top.memory;
      host(`${top.name}: activations (largest run, no arena): memory-pattern block ${fmtBytes(m.patternBytes)} + ${CALIBRATION.heapResidue} x first run's peak ${fmtBytes(m.peakActivationBytes)} (at ${m.peakAt.op} #${m.peakAt.index}) kept by malloc + output copies`, act(m));
    }
  } else {
    dev("CUDA context, cuBLAS / cuDNN workspaces (assumed, not measured)", CALIBRATION.gpuContextBytes);
    for (const { name, memory: m } of sessions) {
      dev(`${name}: initializers (frozen weights, uploaded once)`, m.initializerBytes);
      // Each session has its own device arena, which keeps its high-water mark: the memory-pattern block.
      dev(`${name}: activations (own arena: memory-pattern block; liveness peak ${fmtBytes(m.peakActivationBytes)} at ${m.peakAt.op} #${m.peakAt.index}) + fed inputs`, m.patternBytes + m.trainableInputBytes + m.otherInputBytes);
    }
  }
  const stepHostBytes = lines.filter((l) => l.where === "host").reduce((s, l) => s + l.bytes, 0);
  const loadHostBytes = CALIBRATION.processBytes + (spec.loadBytes ?? 0);
  const deviceBytes = device === "gpu" ? lines.filter((l) => l.where === "device").reduce((s, l) => s + l.bytes, 0) : undefined;
  return { device, precision: spec.precision, lines, hostBytes: Math.max(stepHostBytes, loadHostBytes), stepHostBytes, loadHostBytes, deviceBytes, sessions };
}

// ------------------------------------------------------------------ diffusion (dpo-epoch)

export type PlanEncoder = { kind: "clip"; config: ClipVisionConfig } | { kind: "mobilenet" };

/** A model's configs, no weights: what DiffusionTrainer's graphs need. */
export interface ModelShapes {
  dir: string;
  xl: boolean;
  unet: UNetConfig;
  textEncoders: { name: string; config: ClipTextConfig; maxLength: number }[];
  vae: { kind: "kl"; config: VAEConfig } | { kind: "pixel"; config: PixelVAEConfig };
  latentChannels: number;
  vaeFactor: number;
  /** How the frozen weights are stored (the files' dtype when they exist, else as given). */
  weightDType: G.DType;
}

function readConfig(path: string): Record<string, unknown> {
  if (!existsSync(path)) throw new UserError(`${path} is missing: the memory planner reads the model's config files (no weights needed)`);
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/** The dtype of a component's weights from a safetensors header, when a file is there (reads the header only). */
function storedDType(dir: string): G.DType | undefined {
  for (const f of ["diffusion_pytorch_model.safetensors", "model.safetensors"]) {
    const p = join(dir, f);
    if (!existsSync(p)) continue;
    const st = openSafetensors(p);
    const first = st.names()[0];
    const d = first ? st.info(first).dtype : undefined;
    return d === "F16" ? "float16" : d === "BF16" ? "bfloat16" : "float32";
  }
  return undefined;
}

/** Reads a diffusers model folder's configs (model_index.json, unet, vae, text encoders): no weight is opened. */
export function modelShapesFromFolder(spec: string, weightDType?: G.DType): ModelShapes {
  const dir = resolve(spec);
  const index = readConfig(join(dir, "model_index.json"));
  const unet = unetConfigFromJson(readConfig(join(dir, "unet", "config.json")));
  const vaeJson = readConfig(join(dir, "vae", "config.json"));
  const vae: ModelShapes["vae"] = vaeJson._class_name === "PixelUnshuffleVAE" ? { kind: "pixel", config: pixelVaeConfigFromJson(vaeJson) } : { kind: "kl", config: vaeConfigFromJson(vaeJson) };
  const xl = "text_encoder_2" in index && index.text_encoder_2 !== null && existsSync(join(dir, "text_encoder_2"));
  const textEncoders = (xl ? [["text_encoder", "tokenizer"], ["text_encoder_2", "tokenizer_2"]] : [["text_encoder", "tokenizer"]]).map(([name, tok]) => {
    const config = clipTextConfigFromJson(readConfig(join(dir, name!, "config.json")), join(dir, name!, "config.json"));
    const tc = join(dir, tok!, "tokenizer_config.json");
    const ml = existsSync(tc) ? (readConfig(tc).model_max_length as number | undefined) : undefined;
    return { name: name!, config, maxLength: typeof ml === "number" && ml <= 1e6 ? ml : 77 };
  });
  const lc = vae.kind === "pixel" ? latentChannels(vae.config) : vae.config.latentChannels;
  const vaeFactor = vae.kind === "pixel" ? vae.config.factor : 2 ** (vae.config.blockOutChannels.length - 1);
  return { dir, xl, unet, textEncoders, vae, latentChannels: lc, vaeFactor, weightDType: weightDType ?? storedDType(join(dir, "unet")) ?? "float32" };
}

/** An IP-Adapter's projection from its file's header (no weight read). */
export function projectionFromFile(file: string): ImageProjectionConfig {
  const f = openSafetensors(resolve(file));
  return imageProjConfigFromWeights((n) => (f.has(n) ? f.info(n).shape : undefined), (n) => f.has(n), Number(f.metadata.dim_head ?? 64));
}

/** An image encoder's config: a CLIP vision folder's config.json, or the tiny world's MobileNetV2. */
export function encoderFromSpec(spec: string): PlanEncoder {
  if (spec === "mobilenet_v2" || spec === "default") return { kind: "mobilenet" };
  const path = join(resolve(spec), "config.json");
  return { kind: "clip", config: clipVisionConfigFromJson(readConfig(path), path) };
}

export interface DiffusionPlanSetup {
  model: ModelShapes;
  projection: ImageProjectionConfig;
  encoder: PlanEncoder;
  pairs: number;
  size: number;
  objective: Objective;
  trainable: (name: string) => boolean;
  ipScale?: number;
  memArena: boolean;
  precision: Precision;
  /** Gradient checkpointing of each UNet block (DiffusionTrainer's `recompute`). */
  recompute?: boolean;
  /** UNet attention in chunks of this many query rows (DiffusionTrainer's `attentionChunk`, default 1024). */
  attentionChunk?: number;
  /** DiffusionTrainer's `mappedWeights` (frozen weights only as mapped from their files). */
  mappedWeights?: boolean;
}

/** The IP-Adapter weights (release layout) as shapes: image_proj.* and ip_adapter.<n>.to_k_ip / to_v_ip. */
function ipShapes(unet: UNetConfig, projection: ImageProjectionConfig): Map<string, number[]> {
  const out = new Map(imageProjParamShapes(projection));
  const toRelease = ipAdapterKeyMap(unet);
  for (const [name, shape] of unetParamShapes(unet, { ipAdapter: true })) {
    const r = toRelease.get(name);
    if (r) out.set(r, shape);
  }
  return out;
}

/**
 * The step's graphs as lib/train/diffusion.ts's DiffusionTrainer builds them (train graph with
 * gradients, the frozen twin for patch-dpo, the image encoder, the VAE encoder), on shapes only.
 * tests/train/plan.test.ts checks that the train graph has the trainer's very nodes.
 */
export function diffusionSessions(s: DiffusionPlanSetup): { sessions: SessionSpec[]; trainableValues: number } {
  const m = s.model;
  const B = s.pairs, R = 2 * B;
  if (s.size % m.vaeFactor) throw new UserError(`--size ${s.size} is not a multiple of the VAE factor ${m.vaeFactor}`);
  const C = m.latentChannels, h = s.size / m.vaeFactor, w = h;
  const enc = s.encoder;
  const proj = s.projection;
  const featureShape = proj.kind === "linear" ? [proj.embeddingDim] : enc.kind === "mobilenet" ? [49, 1280] : [(enc.config.imageSize / enc.config.patchSize) ** 2 + 1, enc.config.hiddenSize];
  const dt = m.weightDType;
  const unetSrc = new ShapeSource(unetParamShapes(m.unet), dt, "UNet (shapes only)");
  const ipSrc = new ShapeSource(ipShapes(m.unet, proj), dt, "IP-Adapter (shapes only)");
  const teSrc = m.textEncoders.map((te) => new ShapeSource(clipTextParamShapes(te.config), dt, `${te.name} (shapes only)`));
  const trainables = new Map<string, Tensor>();

  const net = (g: G.Graph, training: boolean) => {
    const trainable = training ? s.trainable : undefined;
    const noisy = g.input("noisy", [R, C, h, w]);
    const timestep = g.input("timestep", [R]);
    const hidden: Tensor[] = [];
    let pooled: Tensor | undefined;
    m.textEncoders.forEach((te, k) => {
      const { inputIds, eosIndex } = clipTextInputs(g, R, te.maxLength, `te${k}_`);
      const p = new Params(g, teSrc[k]!, { graphPrefix: `te${k}/`, trainable });
      const r = clipTextForward(p, inputIds, eosIndex, te.config, m.xl && k === 1);
      hidden.push(m.xl ? r.hiddenStates[r.hiddenStates.length - 2]! : r.lastHiddenState);
      if (m.xl && k === 1) pooled = r.textEmbeds;
      for (const [n, t] of p.trainable) trainables.set(`${te.name}/${n}`, t);
    });
    const features = g.input("image_features", [R, ...featureShape]);
    const pIp = new Params(g, ipSrc, { trainable });
    const tokens = imageProjection(pIp, features, proj);
    const pUnet = new Params(g, new IpAdapterUNetSource(unetSrc, ipSrc, m.unet), { trainable });
    const xl = m.xl ? { textEmbeds: pooled!, timeIds: g.input("time_ids", [R, 6]) } : {};
    const pred = unetForward(pUnet, m.unet, {
      sample: noisy, timestep, encoderHiddenStates: G.concat(hidden, 2), ipTokens: tokens, ipScale: s.ipScale ?? 1, ...xl, attentionChunk: s.attentionChunk ?? 1024,
    });
    for (const [n, t] of [...pIp.trainable, ...pUnet.trainable]) trainables.set(n, t);
    return pred;
  };

  const sessions: SessionSpec[] = [];
  {
    const g = new G.Graph();
    const pred = net(g, true);
    if (!trainables.size) throw new UserError("memory plan: no weight is trainable (check --train)");
    const target = g.input("target", [R, C, h, w]);
    const maps = ["q_ref", "q_gen", "fg_ref", "fg_gen"].map((n) => g.input(n, [B, h, w]));
    const refPred = s.objective === "patch-dpo" ? g.input("ref_pred", [R, C, h, w]) : undefined;
    const o = objective(s.objective, { pred, target, qRef: maps[0]!, qGen: maps[1]!, fgRef: maps[2]!, fgGen: maps[3]!, refPred }, DPO_DEFAULTS);
    const list = [...trainables];
    const grads = G.grad(o.loss, list.map(([, t]) => t), undefined, { recompute: s.recompute });
    const outs: Record<string, Tensor> = { loss: o.loss };
    for (const [k, v] of Object.entries(o.logs)) outs[`log:${k}`] = v;
    list.forEach(([n], i) => grads[i] && (outs[`grad:${n}`] = grads[i]!));
    sessions.push({ name: "train graph", outputs: outs });
  }
  if (s.objective === "patch-dpo") {
    const g = new G.Graph();
    const saved = new Map(trainables);
    sessions.push({ name: "frozen twin (patch-dpo reference)", outputs: { pred: net(g, true) } });
    trainables.clear();
    for (const [k, v] of saved) trainables.set(k, v);
  }
  {
    const g = new G.Graph();
    const S = enc.kind === "clip" ? enc.config.imageSize : 224;
    const pixels = g.input("pixels", [B, 3, S, S]);
    let f: Tensor;
    if (enc.kind === "clip") {
      const r = clipVisionForward(new Params(g, new ShapeSource(clipVisionParamShapes(enc.config), dt, "image encoder (shapes only)")), pixels, enc.config, proj.kind === "linear");
      f = proj.kind === "linear" ? r.imageEmbeds! : r.hiddenStates[r.hiddenStates.length - 2]!;
    } else {
      // The embedded MobileNetV2 (nsfwjs, part of the package, not a user's weight file): its shapes.
      const { encoder, source } = loadMobileNetV2();
      const fmap = encoder.forward(new Params(g, new ShapeSource(source.names().map((n) => [n, source.shape(n)]), "float32", "MobileNetV2 (shapes only)")), pixels).patches;
      f = G.transpose(G.reshape(fmap, [B, 1280, 49]), [0, 2, 1]);
    }
    sessions.push({ name: "image encoder", outputs: { features: f } });
  }
  {
    const g = new G.Graph();
    const images = g.input("images", [R, 3, s.size, s.size]);
    const v = m.vae;
    const z = v.kind === "pixel" ? pixelUnshuffle(images, v.config) : toLatents(vaeEncode(new Params(g, new ShapeSource(vaeParamShapes(v.config), dt, "VAE (shapes only)")), images, v.config), v.config);
    sessions.push({ name: "VAE encoder", outputs: { latents: z } });
  }
  let trainableValues = 0;
  for (const t of trainables.values()) trainableValues += t.size;
  return { sessions, trainableValues };
}

/**
 * dpo-epoch's step: its sessions, and on the host the current weights plus the twin's starting
 * weights (trainer.initial), AdamW's moments, the gradients (output copy + accumulator sum).
 */
export function planDiffusionStep(s: DiffusionPlanSetup, device: PlanDevice = "cpu", opts: { neverFree?: boolean; loadBytes?: number } = {}): MemoryPlan {
  const { sessions, trainableValues } = diffusionSessions(s);
  const extraHost = s.encoder.kind === "mobilenet" ? [{ what: "embedded MobileNetV2 decoded in JS (image encoder, measured)", bytes: CALIBRATION.mobilenetBytes }] : [];
  return planStep({ sessions, trainableValues, weightCopies: 2, gradCopies: 2, memArena: s.memArena, precision: s.precision, extraHost, loadBytes: opts.loadBytes, mappedWeights: s.mappedWeights }, device, opts);
}

// ------------------------------------------------------------------ patch encoder (finetune-encoder)

export interface FinetunePlanSetup {
  encoder: PatchEncoder;
  /** The encoder's weights: only their names and shapes are read. */
  source: WeightSource;
  trainable: (name: string) => boolean;
  featureLayer?: string;
  /** View pairs per micro-batch (the graph runs 2x this many images). */
  batch: number;
  imageSize: number;
  /** Corresponding patches per view pair (0: a third of the grid). */
  matches: number;
  temperature: number;
  /** Gradient checkpointing of each ViT block (finetune-encoder --recompute). */
  recompute?: boolean;
  /** finetune-encoder's held-out accuracy graph runs this many images at once. */
  evalBatch: number;
  precision: Precision;
}

/** finetune-encoder's graphs as the script builds them: InfoNCE training graph and the eval graph. */
export function finetuneSessions(s: FinetunePlanSetup): { sessions: SessionSpec[]; trainableValues: number } {
  const shapes = new ShapeSource(s.source.names().map((n) => [n, s.source.shape(n)]), "float32", `${s.encoder.name} (shapes only)`);
  const build = (n: number) => {
    const g = new G.Graph();
    const p = new Params(g, shapes, { trainable: s.trainable });
    const images = g.input("images", [n, 3, s.imageSize, s.imageSize]);
    return { g, p, patches: s.encoder.forward(p, images, s.featureLayer).patches };
  };
  const B = s.batch;
  const probe = build(2 * B);
  const [, C, h, w] = probe.patches.shape as [number, number, number, number];
  const hw = h * w;
  const M = s.matches > 0 ? s.matches : Math.max(4, Math.round(hw / 3));
  const flat = G.reshape(G.transpose(probe.patches, [0, 2, 3, 1]), [2 * B * hw, C]);
  const loss = infoNCE(G.gather(flat, probe.g.input("index_a", [B * M], "int64")), G.gather(flat, probe.g.input("index_b", [B * M], "int64")), s.temperature);
  const candidates = [...probe.p.trainable];
  const grads = G.grad(loss, candidates.map(([, t]) => t), undefined, { recompute: s.recompute });
  const outputs: Record<string, Tensor> = { loss };
  let trainableValues = 0;
  candidates.forEach(([, t], i) => {
    if (!grads[i]) return;
    outputs[`grad_${i}`] = grads[i]!;
    trainableValues += t.size;
  });
  if (!trainableValues) throw new UserError(`memory plan: no trainable weight of ${s.encoder.name} reaches the feature layer`);
  return { sessions: [{ name: "train graph", outputs }, { name: "held-out eval graph", outputs: { patches: build(s.evalBatch).patches } }], trainableValues };
}

/** finetune-encoder's step: one host copy of the trained weights, AdamW, gradients (output copy + accumulator sum). */
export function planFinetuneStep(s: FinetunePlanSetup, device: PlanDevice = "cpu"): MemoryPlan {
  const { sessions, trainableValues } = finetuneSessions(s);
  const extraHost = "keras" in s.encoder ? [{ what: "embedded MobileNetV2 decoded in JS (measured)", bytes: CALIBRATION.mobilenetBytes }] : [];
  return planStep({ sessions, trainableValues, weightCopies: 1, gradCopies: 2, memArena: false, precision: s.precision, extraHost }, device);
}

// ------------------------------------------------------------------ the scripts' --plan

/** GPUs the plan of a GPU run is compared with (memory as nvidia-smi reports it). */
export const GPUS = [
  { name: "80 GB GPU (A100 / H100 80GB: 81559 MiB)", bytes: 81559 * MiB },
  { name: "141 GB GPU (H200: 143771 MiB)", bytes: 143771 * MiB },
];

/** IP-Adapter releases by name, for planning without the file (the header gives the same). */
export const IP_PRESETS: Record<string, ImageProjectionConfig> = { "ip-adapter-plus-sdxl": IP_ADAPTER_PLUS_SDXL, "ip-adapter-plus-sd15": IP_ADAPTER_PLUS_SD15 };

export interface DpoPlanOptions {
  model: string;
  /** An IP-Adapter file (its header is read), or a preset name of IP_PRESETS. */
  ipAdapter: string;
  imageEncoder: string;
  objective: Objective;
  batch: number;
  size?: number;
  /** --train as given (checked here), and its selection of trainable weights (undefined when --train is unknown). */
  train: string;
  trainable?: (name: string) => boolean;
  ipScale?: number;
  device: string;
  precision: Precision;
  recompute?: boolean;
}

const fileSize = (p: string) => (existsSync(p) ? statSync(p).size : 0);

/** dpo-epoch --plan: the step's memory for the flags given, from the configs and file headers only. */
export function planDpoEpoch(o: DpoPlanOptions): { plan: MemoryPlan; text: string } {
  const bad = (flag: string, v: unknown, allowed: readonly string[]) => new UsageError(`${flag} ${v}: expected ${allowed.join(" | ")}`);
  if (!OBJECTIVES.includes(o.objective)) throw bad("--objective", o.objective, OBJECTIVES);
  if (!PRECISIONS.includes(o.precision)) throw bad("--precision", o.precision, PRECISIONS);
  if (!["cpu", "cuda", "webgpu"].includes(o.device)) throw bad("--device", o.device, ["cpu", "cuda", "webgpu"]);
  if (!o.trainable) throw bad("--train", o.train, ["ip", "ip+proj"]);
  if (o.size !== undefined && !(Number.isInteger(o.size) && o.size > 0)) throw new UsageError(`--size ${o.size}: expected a positive integer (pixels)`);
  // Frozen weights in the files' dtype; a folder of configs alone is taken to hold the checkpoint
  // variant of the precision asked for (fp16 / bf16 files for fp16 / bf16 training).
  const assumed: G.DType = o.precision === "fp16" ? "float16" : o.precision === "bf16" ? "bfloat16" : "float32";
  const model = modelShapesFromFolder(o.model);
  const weightsFound = existsSync(join(model.dir, "unet", "diffusion_pytorch_model.safetensors")) || existsSync(join(model.dir, "unet", "model.safetensors"));
  if (!weightsFound) model.weightDType = assumed;
  const ipFile = resolve(o.ipAdapter);
  let projection: ImageProjectionConfig;
  if (existsSync(ipFile)) projection = projectionFromFile(ipFile);
  else if (IP_PRESETS[o.ipAdapter]) projection = IP_PRESETS[o.ipAdapter]!;
  else throw new UserError(`--ip-adapter ${o.ipAdapter}: no such file; --plan reads the adapter's header (its shapes), or takes a preset: ${Object.keys(IP_PRESETS).join(", ")}`);
  const encoder = encoderFromSpec(o.imageEncoder);
  const down = model.vaeFactor * 2 ** (model.unet.blockOutChannels.length - 1);
  const size = o.size ?? (model.unet.sampleSize ? model.unet.sampleSize * model.vaeFactor : 512);
  if (!Number.isInteger(size) || size < down || size % down) throw new UserError(`--size ${size}: ${model.dir} needs a multiple of ${down} (VAE factor ${model.vaeFactor} x UNet downsampling ${down / model.vaeFactor})`);
  if (!Number.isInteger(o.batch) || o.batch < 1) throw new UsageError(`--batch ${o.batch}: pairs per micro-batch must be a positive integer`);
  const loadBytes = [join(model.dir, "unet"), join(model.dir, "vae"), ...model.textEncoders.map((t) => join(model.dir, t.name)), ...(encoder.kind === "clip" ? [resolve(o.imageEncoder)] : [])]
    .reduce((n, d) => n + fileSize(join(d, "diffusion_pytorch_model.safetensors")) + fileSize(join(d, "model.safetensors")), fileSize(ipFile));
  const device: PlanDevice = o.device === "cpu" ? "cpu" : "gpu";
  const plan = planDiffusionStep({
    model, projection, encoder, pairs: o.batch, size, objective: o.objective, trainable: o.trainable, ipScale: o.ipScale, precision: o.precision,
    recompute: o.recompute, ...unetSessionChoices(model.unet, o.device), // as dpo-epoch compiles
  }, device, { loadBytes });
  const title = `dpo-epoch ${o.objective}, ${model.dir}, ${size} px (${size / model.vaeFactor}x${size / model.vaeFactor} latents), ${o.batch} pair${o.batch === 1 ? "" : "s"} (${2 * o.batch} UNet rows), ${o.device}${o.recompute ? ", --recompute" : ""}`;
  const stored = weightsFound ? `frozen weights stored as ${model.weightDType} (read from the files' headers)` : `frozen weights assumed stored as ${model.weightDType} (no weight file in ${model.dir}: the checkpoint variant of --precision ${o.precision})`;
  return { plan, text: `${formatPlan(plan, title, device === "gpu" ? GPUS : [])}\n  ${stored}` };
}

export interface FinetunePlanOptions {
  encoder: PatchEncoder;
  source: WeightSource;
  trainable: (name: string) => boolean;
  featureLayer?: string;
  batch: number;
  imageSize?: number;
  matches: number;
  temperature: number;
  device: string;
  precision: Precision;
  recompute?: boolean;
}

/** finetune-encoder --plan: the step's memory for the flags given (the encoder's shapes only). */
export function planFinetuneEncoder(o: FinetunePlanOptions): { plan: MemoryPlan; text: string } {
  if (!PRECISIONS.includes(o.precision)) throw new UsageError(`--precision ${o.precision}: expected ${PRECISIONS.join(" | ")}`);
  if (!["cpu", "cuda", "webgpu"].includes(o.device)) throw new UsageError(`--device ${o.device}: expected cpu | cuda | webgpu`);
  if (!Number.isInteger(o.batch) || o.batch < 1) throw new UsageError(`--batch ${o.batch}: view pairs per micro-batch must be a positive integer`);
  const imageSize = o.imageSize ?? o.encoder.imageSize;
  const device: PlanDevice = o.device === "cpu" ? "cpu" : "gpu";
  const plan = planFinetuneStep({ ...o, imageSize, evalBatch: 8 }, device);
  return { plan, text: formatPlan(plan, `finetune-encoder ${o.encoder.name}, ${imageSize} px, ${o.batch} view pair${o.batch === 1 ? "" : "s"} (${2 * o.batch} images), ${o.device}${o.recompute ? ", --recompute" : ""}`, device === "gpu" ? GPUS : []) };
}

// ------------------------------------------------------------------ printing

export const fmtBytes = (b: number): string => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / MiB).toFixed(0)} MiB`);

/** A plan as the CLI prints it: one line per part, then the totals (and, for a GPU, whether it fits). */
export function formatPlan(plan: MemoryPlan, title: string, gpus: { name: string; bytes: number }[] = []): string {
  const out = [`memory plan: ${title} (${plan.precision}, ${plan.device === "cpu" ? "CPU run: host RSS" : "GPU run: device memory + host RSS"})`];
  for (const l of plan.lines) out.push(`  ${l.where === "device" ? "device" : "host  "}  ${fmtBytes(l.bytes).padStart(11)}  ${l.what}`);
  if (plan.loadHostBytes > CALIBRATION.processBytes) out.push(`  at load: process + weight files read by the NaN/Inf check = ${fmtBytes(plan.loadHostBytes)} (released before the step)`);
  out.push(`  predicted peak host RSS: ${fmtBytes(plan.hostBytes)}`);
  if (plan.deviceBytes !== undefined) {
    out.push(`  predicted peak device memory: ${fmtBytes(plan.deviceBytes)}`);
    for (const gpu of gpus) out.push(`    ${gpu.name}: ${plan.deviceBytes <= gpu.bytes ? "fits" : "does NOT fit"} (${fmtBytes(plan.deviceBytes)} of ${fmtBytes(gpu.bytes)})`);
  }
  return out.join("\n");
}
