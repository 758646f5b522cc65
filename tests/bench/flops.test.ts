// bench/flops.ts on graphs whose FLOPs are known by hand, forward and backward apart.
import { describe, expect, test } from "bun:test";
import { countFlops, nodeFlops } from "../../bench/flops.ts";
import * as G from "../../lib/graph/index.ts";
import { Graph } from "../../lib/graph/index.ts";

describe("countFlops", () => {
  test("linear + conv + transposed conv + batched matmul, forward only", () => {
    const g = new Graph();
    const x = g.input("x", [4, 6]);
    // Gemm [4,6] x [6,5]^T: 2*4*5*6 = 240
    const y = G.linear(x, g.param("w", [5, 6]), g.param("b", [5]));
    // Conv: N1 Cin3 8x8, Cout 2, 3x3, pad 1 -> out [1,2,8,8]: 2 * 128 * 3*9 = 6912
    const img = g.input("img", [1, 3, 8, 8]);
    const c = G.conv(img, g.param("k", [2, 3, 3, 3]), null, { padding: 1 });
    // ConvTranspose: x [1,2,4,4], w [2, 3, 2, 2] stride 2 -> every input (32) x 3*2*2 MACs: 2*32*12 = 768
    const t = G.convTranspose(g.input("lo", [1, 2, 4, 4]), g.param("kt", [2, 3, 2, 2]), null, { stride: 2 });
    // MatMul [2,3,4,5] x [2,3,5,7]: 2 * (2*3*4*7) * 5 = 1680
    const m = G.matmul(g.input("a", [2, 3, 4, 5]), g.input("bb", [2, 3, 5, 7]));
    const r = countFlops({ y, c, t, m });
    expect(r.forward).toBe(240 + 6912 + 768 + 1680);
    expect(r.backward).toBe(0);
    expect(r.counted).toEqual({ Gemm: 1, Conv: 1, ConvTranspose: 1, MatMul: 1 });
    // a grouped conv: depthwise 3x3 on 4 channels, out [1,4,6,6]: 2 * 144 * 9 = 2592
    const dw = G.conv(g.input("d", [1, 4, 6, 6]), g.param("dk", [4, 1, 3, 3]), null, { padding: 1, groups: 4 });
    expect(nodeFlops(dw.node!)).toBe(2592);
  });

  test("a linear layer's training graph: backward = 2x forward (input and weight gradients)", () => {
    const g = new Graph();
    const x = g.param("x", [8, 16]);
    const w = g.param("w", [32, 16]);
    const y = G.linear(x, w);
    const loss = G.reduceSum(G.mul(y, y), undefined, false);
    const [gx, gw] = G.grad(loss, [x, w]);
    const r = countFlops({ loss, gx: gx!, gw: gw! }, [loss]);
    const fwd = 2 * 8 * 32 * 16;
    expect(r.forward).toBe(fwd);
    expect(r.backward).toBe(2 * fwd);
  });
});
