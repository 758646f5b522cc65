// The three training objectives of DESIGN.md section 1, item 3, as graph builders.
//
// A batch holds B pairs laid out [reference half ; generated half]: rows 0..B-1 are the reference
// images, rows B..2B-1 the generated images, sharing noise and timestep per pair. Quality maps are
// at latent resolution: qRef [B, h, w] for the reference images, qGen [B, h, w] for the generated.
//
//   mse        mean((eps_hat - eps)^2): the single-stage IP-Adapter training (the baseline).
//   weighted   mean(w * (eps_hat - eps)^2), w = [1 - q_ref ; q_gen] broadcast over channels: what
//              the authors' released training code does.
//   patch-dpo  Diffusion-DPO (Wallace et al. 2023) at patch level. With per-pixel errors
//              e = mean_c (eps_hat - eps)^2 of the trained model (theta) and of the frozen starting
//              model (ref), preferred weights a = 1 - q_ref and dispreferred weights b = 1 - q_gen,
//                m_w = <a, e_theta(ref img)> - <a, e_ref(ref img)>
//                m_l = <b, e_theta(gen img)> - <b, e_ref(gen img)>
//              (<u, e> = sum(u e) / (sum(u) + 1e-6), a weighted mean over pixels)
//                L = -log sigmoid(-beta/2 (m_w - m_l)) + lambda mean(q_gen e_theta(gen img))
//              The second term keeps the patches the generator already gets right.
// Masked patches (background: the white of a clean reference or generation, DESIGN.md section 1)
// are neutral in every objective: fgRef / fgGen [B, h, w] give each latent pixel's foreground share
// (1 subject, 0 background; score-patches' masks resized to the latent grid), and multiply the
// weights: weighted uses w = [fgRef (1 - q_ref) ; fgGen q_gen], patch-dpo a = fgRef (1 - q_ref),
// b = fgGen (1 - q_gen) and keeps fgGen q_gen. `mse` has no patch weights and sees every pixel.
// Without masks (all ones) the formulas above hold exactly.
// Logged as Diffusion-DPO does: implicit accuracy (share of pairs with m_w < m_l), model and
// reference MSE.

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";

export const OBJECTIVES = ["mse", "weighted", "patch-dpo"] as const;
export type Objective = (typeof OBJECTIVES)[number];

export interface DpoOptions {
  /** Diffusion-DPO's beta; its papers use 2000-5000 for SD-sized models. */
  beta: number;
  /** Weight of the keep-good-patches term. */
  lambda: number;
}
export const DPO_DEFAULTS: DpoOptions = { beta: 5000, lambda: 1 };

export interface ObjectiveInputs {
  /** The trained model's prediction [2B, C, h, w]. */
  pred: Tensor;
  /** The target (noise for epsilon prediction, velocity for v-prediction) [2B, C, h, w]. */
  target: Tensor;
  /** [B, h, w] quality of the reference images' patches. */
  qRef: Tensor;
  /** [B, h, w] quality of the generated images' patches. */
  qGen: Tensor;
  /** [B, h, w] foreground share of each latent pixel of the reference / generated images (default: all 1). */
  fgRef?: Tensor;
  fgGen?: Tensor;
  /** patch-dpo only: the frozen reference model's prediction [2B, C, h, w]. */
  refPred?: Tensor;
}

export interface ObjectiveOutputs {
  loss: Tensor;
  /** Extra scalars worth logging, by name. */
  logs: Record<string, Tensor>;
}

/** Per-pixel squared error averaged over channels: [N, C, h, w] -> [N, h, w]. */
export function pixelErrors(pred: Tensor, target: Tensor): Tensor {
  const d = G.sub(pred, target);
  return G.reduceMean(G.mul(d, d), [1], false);
}

/** sum(u * e) / (sum(u) + 1e-6) over the pixel axes, per row: [B, h, w] x [B, h, w] -> [B]. */
function weightedMean(u: Tensor, e: Tensor): Tensor {
  return G.div(G.reduceSum(G.mul(u, e), [1, 2], false), G.add(G.reduceSum(u, [1, 2], false), 1e-6));
}

function halves(t: Tensor): [Tensor, Tensor] {
  const n = t.shape[0]! / 2;
  const [a, b] = G.split(t, [n, n], 0);
  return [a!, b!];
}

export function objective(kind: Objective, x: ObjectiveInputs, dpo: DpoOptions = DPO_DEFAULTS): ObjectiveOutputs {
  const { pred, target, qRef, qGen } = x;
  const B = qRef.shape[0]!;
  if (pred.shape[0] !== 2 * B || qGen.shape[0] !== B) throw new Error(`objective: predictions must hold 2 x ${B} rows ([reference ; generated]), got [${pred.shape}]`);
  const e = pixelErrors(pred, target); // [2B, h, w]
  const mse = G.reduceMean(e, undefined, false);
  if (kind === "mse") return { loss: mse, logs: { mse } };
  const onRef = (t: Tensor) => (x.fgRef ? G.mul(x.fgRef, t) : t);
  const onGen = (t: Tensor) => (x.fgGen ? G.mul(x.fgGen, t) : t);
  if (kind === "weighted") {
    const w = G.concat([onRef(G.sub(1, qRef)), onGen(qGen)], 0); // [2B, h, w]
    return { loss: G.reduceMean(G.mul(w, e), undefined, false), logs: { mse } };
  }
  if (!x.refPred) throw new Error("objective patch-dpo needs the frozen reference model's prediction (refPred)");
  const eRef = pixelErrors(x.refPred, target);
  const [eThetaW, eThetaL] = halves(e);
  const [eRefW, eRefL] = halves(eRef);
  const a = onRef(G.sub(1, qRef));
  const b = onGen(G.sub(1, qGen));
  const mW = G.sub(weightedMean(a, eThetaW), weightedMean(a, eRefW)); // [B]
  const mL = G.sub(weightedMean(b, eThetaL), weightedMean(b, eRefL));
  const z = G.mul(G.sub(mW, mL), -dpo.beta / 2);
  const dpoLoss = G.reduceMean(G.softplus(G.neg(z)), undefined, false); // -log sigmoid(z), stable
  const keep = G.reduceMean(G.mul(onGen(qGen), eThetaL), undefined, false);
  const loss = G.add(dpoLoss, G.mul(keep, dpo.lambda));
  const implicitAcc = G.reduceMean(G.cast(G.less(mW, mL), "float32"), undefined, false);
  return { loss, logs: { mse, refMse: G.reduceMean(eRef, undefined, false), dpoLoss, keep, implicitAcc } };
}
