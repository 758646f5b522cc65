// patch-dpo's logged implicit accuracy (lib/train/objectives.ts) is the share of pairs with
// m_w < m_l. With B = 2 a share of 1/2 reads the same whichever way the comparison goes, so this
// uses B = 3 pairs whose margins are set by hand and are not symmetric: 2 of 3 pairs have
// m_w < m_l (accuracy 2/3; the reversed comparison would give 1/3).
//
// The margins are made exact: quality maps of 0 give patch weights a = b = 1 (plain means over
// pixels), the target and the reference model's prediction are 0, and the trained model's
// prediction is constant per row, sqrt(m) on every pixel and channel, so its per-pixel error is m:
//   m_w[i] = mean e_theta(reference row i) - 0,   m_l[i] = mean e_theta(generated row i) - 0.

import { describe, expect, test } from "bun:test";
import * as G from "../../lib/graph/index.ts";
import { Graph } from "../../lib/graph/index.ts";
import { objective } from "../../lib/train/objectives.ts";

const B = 3, C = 2, H = 2, W = 2, per = C * H * W;
const mW = [0.1, 0.5, 0.2];
const mL = [0.3, 0.4, 0.6]; // pairs 0 and 2: m_w < m_l; pair 1: m_w > m_l
const beta = 4, lambda = 0.25;

async function dpoLogs(): Promise<Record<string, number>> {
  const g = new Graph();
  const pred = Float32Array.from({ length: 2 * B * per }, (_, k) => Math.sqrt([...mW, ...mL][Math.floor(k / per)]!));
  const zeros = (n: number) => new Float32Array(n);
  const o = objective("patch-dpo", {
    pred: g.constant(pred, [2 * B, C, H, W]), target: g.constant(zeros(2 * B * per), [2 * B, C, H, W]),
    refPred: g.constant(zeros(2 * B * per), [2 * B, C, H, W]),
    qRef: g.constant(zeros(B * H * W), [B, H, W]), qGen: g.constant(zeros(B * H * W), [B, H, W]),
  }, { beta, lambda });
  const res = await (await G.compile({ loss: o.loss, ...o.logs })).run({});
  return Object.fromEntries(Object.entries(res).map(([k, v]) => [k, (v as Float32Array)[0]!]));
}

describe("patch-dpo logs on B = 3 pairs with asymmetric margins", () => {
  test("implicitAcc is the share of pairs with m_w < m_l (2/3, not 1/3)", async () => {
    const logs = await dpoLogs();
    expect(logs.implicitAcc).toBeCloseTo(2 / 3, 6);
  });

  test("dpoLoss = mean softplus(beta/2 (m_w - m_l)); keep = mean of the generated rows' errors at q_gen = 0 is 0", async () => {
    const logs = await dpoLogs();
    const want = mW.reduce((s, w, i) => s + Math.log1p(Math.exp((beta / 2) * (w - mL[i]!))), 0) / B;
    expect(logs.dpoLoss).toBeCloseTo(want, 5);
    expect(logs.keep).toBe(0);
    expect(logs.loss).toBeCloseTo(want, 5);
    expect(logs.refMse).toBe(0);
  });
});
