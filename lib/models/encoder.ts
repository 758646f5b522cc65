// What patch scoring, encoder finetuning and the feature score need from a vision encoder.

import type { Tensor } from "../graph/index.ts";
import type { Params } from "../nn/params.ts";

export interface EncoderOutputs {
  /** Patch features [B, C, h, w] (a CNN feature map, or ViT patch tokens laid out on their grid). */
  patches: Tensor;
  /** A global embedding [B, D] where the model has one (CLS token, pooled features). */
  global?: Tensor;
}

export interface PatchEncoder {
  /** e.g. "mobilenet_v2 (nsfwjs)", "dinov2-small". */
  readonly name: string;
  /** Square input size in pixels the encoder expects. */
  readonly imageSize: number;
  /** Per-channel normalization applied to [0,1] RGB. */
  readonly mean: readonly number[];
  readonly std: readonly number[];
  /** The patch grid `forward` returns without a featureLayer, where the model has several (MobileNetV2: out_relu). */
  readonly defaultLayer?: string;
  /** Weight names in the encoder's own key layout (so finetuned checkpoints load like the original). */
  readonly source: Params["source"];
  /**
   * Builds the forward pass on normalized images [B, 3, S, S]. `p` binds the weights (frozen or
   * trainable); `featureLayer` picks which patch grid to return where the model has several.
   */
  forward(p: Params, images: Tensor, featureLayer?: string): EncoderOutputs;
}
