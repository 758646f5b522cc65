// The tiny world's "VAE": an exact, weightless, invertible map between images and latents,
// pixel-unshuffle (space-to-depth) by `factor`. A 32x32 RGB image in [-1, 1] becomes 12 latent
// channels at 16x16 (factor 2). It stands in for AutoencoderKL so the tiny world needs no trained
// autoencoder, and it is differentiable (reshape + transpose) like everything else.
//
// vae/config.json: { "_class_name": "PixelUnshuffleVAE", "factor": 2, "in_channels": 3, "scaling_factor": 1.0 }

import * as G from "../graph/index.ts";
import type { Tensor } from "../graph/index.ts";

export interface PixelVAEConfig {
  factor: number;
  inChannels: number;
  scalingFactor: number;
}

export function pixelVaeConfigFromJson(cfg: Record<string, unknown>): PixelVAEConfig {
  const num = (k: string, d: number) => {
    const v = cfg[k] ?? d;
    if (typeof v !== "number" || !(v > 0)) throw new Error(`vae config.json: "${k}" must be a positive number`);
    return v;
  };
  return { factor: num("factor", 2), inChannels: num("in_channels", 3), scalingFactor: num("scaling_factor", 1) };
}

export function latentChannels(c: PixelVAEConfig): number {
  return c.inChannels * c.factor * c.factor;
}

/** images [B, C, H, W] -> latents [B, C f^2, H/f, W/f], scaled. */
export function pixelUnshuffle(images: Tensor, c: PixelVAEConfig): Tensor {
  const [B, C, H, W] = images.shape as [number, number, number, number];
  const f = c.factor;
  if (H % f || W % f) throw new Error(`PixelUnshuffleVAE: image size ${H}x${W} must be a multiple of ${f}`);
  const t = G.transpose(G.reshape(images, [B, C, H / f, f, W / f, f]), [0, 1, 3, 5, 2, 4]);
  return G.mul(G.reshape(t, [B, C * f * f, H / f, W / f]), c.scalingFactor);
}

/** latents [B, C f^2, h, w] -> images [B, C, h f, w f]: the exact inverse of pixelUnshuffle. */
export function pixelShuffle(latents: Tensor, c: PixelVAEConfig): Tensor {
  const [B, Cl, h, w] = latents.shape as [number, number, number, number];
  const f = c.factor;
  const C = Cl / (f * f);
  if (!Number.isInteger(C)) throw new Error(`PixelUnshuffleVAE: ${Cl} latent channels are not a multiple of ${f * f}`);
  const t = G.transpose(G.reshape(G.div(latents, c.scalingFactor), [B, C, f, f, h, w]), [0, 1, 4, 2, 5, 3]);
  return G.reshape(t, [B, C, h * f, w * f]);
}
