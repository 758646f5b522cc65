// The graphs of bench/dpo-step.ts, in one place so that the bench and the memory planner's check
// (bench/plan-check.ts, on weights known by shape only) build exactly the same step: an SD 1.5-sized
// UNet with IP-Adapter attention (to_k_ip / to_v_ip trained), 2 rows (1 pair), text context and
// image tokens given, the objective at beta 5000 / lambda 1; the frozen twin either as a graph of its
// own (feeds "ref_pred" to the training graph) or inside the training graph (`twinInGraph`: the
// same frozen tensors, its IP projections fed as "ref:<name>").
import * as G from "../lib/graph/index.ts";
import type { Tensor } from "../lib/graph/index.ts";
import { type UNetConfig, unetForward } from "../lib/models/unet.ts";
import { Params, type WeightSource } from "../lib/nn/params.ts";
import { objective } from "../lib/train/objectives.ts";

export const DPO_STEP_ROWS = 2, TEXT_TOKENS = 77, IP_TOKENS = 16;
export const isIpProjection = (n: string) => n.includes(".processor.to_k_ip.") || n.includes(".processor.to_v_ip.");

export interface DpoStepGraphOptions {
  source: WeightSource;
  config: UNetConfig;
  kind: "patch-dpo" | "mse";
  /** Latent height = width. */
  latent: number;
  /** false: the forward only (the frozen twin's graph, output "pred"). */
  training: boolean;
  recompute?: boolean;
  attentionChunk?: number;
  twinInGraph?: boolean;
}

export function buildDpoStepGraph(o: DpoStepGraphOptions): { g: G.Graph; outputs: Record<string, Tensor>; trainables: Map<string, Tensor> } {
  const R = DPO_STEP_ROWS, h = o.latent, C = o.config.inChannels, D = o.config.crossAttentionDim[0]!;
  const g = new G.Graph();
  const p = new Params(g, o.source, { trainable: isIpProjection });
  const inputs = {
    sample: g.input("noisy", [R, C, h, h]), timestep: g.input("timestep", [R]),
    encoderHiddenStates: g.input("encoder_hidden_states", [R, TEXT_TOKENS, D]), ipTokens: g.input("ip_tokens", [R, IP_TOKENS, D]), ipScale: 1,
    attentionChunk: o.attentionChunk,
  };
  const pred = unetForward(p, o.config, inputs);
  if (!o.training) return { g, outputs: { pred }, trainables: p.trainable };
  const q = (name: string) => g.input(name, [1, h, h]);
  let refPred: Tensor | undefined;
  if (o.kind === "patch-dpo" && o.twinInGraph) {
    const refIp = new Map<string, Tensor>();
    const twin = Object.create(p) as Params;
    twin.get = function (this: Params, name: string, shape: readonly number[]): Tensor {
      const full = (this.opts.prefix ?? "") + name;
      if (!isIpProjection(full)) return Params.prototype.get.call(this, name, shape);
      let t = refIp.get(full);
      if (!t) refIp.set(full, (t = g.input(`ref:${full}`, shape)));
      return t;
    };
    refPred = unetForward(twin, o.config, inputs);
  } else if (o.kind === "patch-dpo") refPred = g.input("ref_pred", [R, C, h, h]);
  const loss = objective(o.kind, { pred, target: g.input("target", [R, C, h, h]), qRef: q("q_ref"), qGen: q("q_gen"), refPred }, { beta: 5000, lambda: 1 }).loss;
  const names = [...p.trainable.keys()];
  const grads = G.grad(loss, names.map((n) => p.trainable.get(n)!), undefined, { recompute: o.recompute });
  const outputs: Record<string, Tensor> = { loss };
  names.forEach((n, i) => (outputs[`grad:${n}`] = grads[i]!));
  return { g, outputs, trainables: p.trainable };
}
