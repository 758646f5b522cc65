// Models shared by the tests that run one computation on two devices or precisions and compare
// (tests/graph/webgpu.test.ts, tests/graph/precision.test.ts, tests/train/webgpu.test.ts).
import { join } from "node:path";
import type { ModelFolderSpec } from "../../lib/diffusion/model-folder.ts";
import * as G from "../../lib/graph/index.ts";
import { Graph, type Tensor } from "../../lib/graph/index.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { trainBpe } from "../../lib/models/bpe-train.ts";
import { type ViTConfig, vitBlock } from "../../lib/models/vit.ts";
import { MemorySource, Params } from "../../lib/nn/params.ts";

/**
 * transformers' Dinov2Layer from the parity fixture of tests/train/parity.test.ts (weights, input x
 * and R): the block's output, loss = sum(out * R), and the gradient of every leaf ("grad.<name>").
 */
export function dinov2LayerGraph(): { outputs: Record<string, Tensor>; feeds: Record<string, Float32Array>; leaves: string[] } {
  const f = openSafetensors(join(import.meta.dir, "../fixtures/parity/vit_block.safetensors"));
  const leaves = JSON.parse(f.metadata.inputs!) as string[];
  const g = new Graph();
  const source = new MemorySource(new Map(leaves.filter((n) => n !== "x").map((n) => [n, { shape: f.info(n).shape, data: f.float32(n) }])), "vit_block");
  const p = new Params(g, source, { trainable: () => true });
  const x = g.param("x", f.info("x").shape);
  const cfg: ViTConfig = { layout: "dinov2", hiddenSize: 32, numLayers: 1, numHeads: 4, intermediateSize: 64, patchSize: 14, imageSize: 14, layerNormEps: 1e-6, numRegisters: 0, hiddenAct: "gelu" };
  const out = vitBlock(p, x, cfg);
  const loss = G.reduceSum(G.mul(out, g.constant(f.float32("R"), f.info("R").shape)), undefined, false);
  const grads = G.grad(loss, leaves.map((n) => (n === "x" ? x : p.trainable.get(n)!)));
  const outputs: Record<string, Tensor> = { out, loss };
  leaves.forEach((n, i) => (outputs[`grad.${n}`] = grads[i]!));
  return { outputs, feeds: Object.fromEntries(leaves.map((n) => [n, f.float32(n)])), leaves };
}

const vocab = trainBpe(["a red teapot on the beach"], 30);
/** A tiny SD-shaped model folder (writeModelFolder): a 2-level UNet with cross-attention, pixel-unshuffle VAE, 1-layer CLIP text. */
export const TINY_SD_SPEC: ModelFolderSpec = {
  unet: { in_channels: 12, out_channels: 12, block_out_channels: [16, 32], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block: 1, cross_attention_dim: 32, attention_head_dim: 2, norm_num_groups: 8 },
  vae: { _class_name: "PixelUnshuffleVAE", factor: 2, in_channels: 3, scaling_factor: 1 },
  textEncoder: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: Object.keys(vocab.vocab).length, bos_token_id: vocab.vocab["<|startoftext|>"], eos_token_id: vocab.vocab["<|endoftext|>"] },
  tokenizer: vocab,
  scheduler: { _class_name: "DDIMScheduler", num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 },
};
