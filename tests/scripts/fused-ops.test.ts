// --fused-ops / --standard-ops (issue 13 item 3): the inference paths pass the choice down to
// compile(). The tiny generator's UNet (with IP-Adapter-Plus: self, text and image-token attention)
// holds MultiHeadAttention only when fused, and makes the same images either way; a DINO ViT's
// embeddings agree; both flags at once are a usage error.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadDiffusionModel, loadIpAdapter } from "../../lib/diffusion/model.ts";
import { Pipeline } from "../../lib/diffusion/pipeline.ts";
import { dinoEmbedder } from "../../lib/eval/embeddings.ts";
import type * as G from "../../lib/graph/index.ts";
import { loadImage } from "../../lib/io/images.ts";
import { FIXTURE_PHOTOS, tinyDinoFolder } from "../eval/helpers.ts";

setDefaultTimeout(300_000);
const MODEL = resolve(import.meta.dir, "../../checkpoints/tiny");
let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-fused-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("fused vs standard attention in the inference paths", () => {
  test("generate: the tiny UNet + IP-Adapter-Plus graph is fused only with fusedOps, the images agree", async () => {
    const model = loadDiffusionModel(MODEL);
    const ip = loadIpAdapter(join(MODEL, "ip-adapter.safetensors"), "mobilenet_v2");
    const ref = await loadImage(FIXTURE_PHOTOS.teapot);
    const images: Record<string, Uint8Array> = {};
    for (const fusedOps of [false, true]) {
      const pipe = new Pipeline(model, { height: 64, width: 64, batch: 1, threads: 1, ip, ipScale: 1, fusedOps });
      const [img] = await pipe.generate([{ prompt: "a photo of a red teapot", seed: 3, image: ref }], { steps: 3, guidance: 2, sampler: "ddim" });
      const unet = await (pipe as unknown as { graphs: Map<string, Promise<G.Compiled>> }).graphs.get("unet")!;
      const ops = unet.lowered.model.graph.node.map((n) => n.opType);
      const mha = ops.filter((o) => o === "MultiHeadAttention").length;
      if (fusedOps) {
        expect(mha).toBeGreaterThan(0);
        // Every attention of the tiny UNet is one the rule recognises.
        expect(ops).not.toContain("Softmax");
      } else expect(mha).toBe(0);
      images[String(fusedOps)] = img!.data;
      console.log(`tiny UNet, fusedOps ${fusedOps}: ${mha} MultiHeadAttention, ${ops.length} nodes`);
    }
    const a = images.false!, b = images.true!;
    let max = 0;
    for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
    console.log(`fused vs standard images: max |diff| ${max} of 255`);
    expect(max).toBeLessThanOrEqual(2);
  });

  test("eval: a DINO ViT's CLS embeddings agree fused and standard", async () => {
    const dir = await tinyDinoFolder(join(root, "dino"));
    const img = await loadImage(FIXTURE_PHOTOS.dog2);
    const [s] = await (await dinoEmbedder(dir, { threads: 1, batch: 1, fusedOps: false })).embed([img]);
    const [f] = await (await dinoEmbedder(dir, { threads: 1, batch: 1, fusedOps: true })).embed([img]);
    let max = 0, scale = 0;
    for (let i = 0; i < s!.length; i++) { max = Math.max(max, Math.abs(s![i]! - f![i]!)); scale = Math.max(scale, Math.abs(s![i]!)); }
    console.log(`DINO CLS fused vs standard: max |diff| ${max.toExponential(2)} (scale ${scale.toExponential(2)})`);
    expect(max).toBeLessThanOrEqual(1e-5 * scale);
  });

  test("--fused-ops with --standard-ops is a usage error (exit 2)", () => {
    for (const script of ["generate-images", "score-patches", "eval"]) {
      const p = Bun.spawnSync(["bun", `scripts/${script}.ts`, "--run", join(root, "none"), "--fused-ops", "--standard-ops"], { cwd: resolve(import.meta.dir, "../.."), stdout: "pipe", stderr: "pipe" });
      expect(p.exitCode).toBe(2);
      expect(p.stderr.toString()).toContain("--fused-ops and --standard-ops exclude each other");
    }
  });
});
