// Classifier-free guidance (Ho & Salimans 2022): combine the model's outputs under different
// conditionings into one, pushing the sample toward the condition. All on flat Float32Arrays of
// equal length (model outputs: eps, v or x0 alike, since the combinations are linear).
//
// Which branches a pipeline runs, and what "unconditional" means for an IP-Adapter:
//
// - Single scale (what IP-Adapter's own pipelines do, and our default): two branches,
//     uncond = negative (or empty) prompt + the image prompt of a ZEROED image embedding,
//     cond   = scene prompt + the reference image's embedding,
//   out = uncond + s * (cond - uncond)                                        cfg(uncond, cond, s)
//   The unconditional image tokens come from the image projection run on zeros (IP-Adapter's
//   `image_proj_model(torch.zeros_like(clip_image_embeds))`; the Plus variant encodes a zero
//   image with the CLIP vision tower instead), not from dropping the tokens: training zeroes the
//   image input (embedding, or pixels for Plus) of 5% of samples, so that is what the model
//   knows as "no image".
//   The IP-Adapter `scale` (weight of the decoupled image cross-attention) is a separate knob.
//
// - Dual scale (InstructPix2Pix-style, Brooks et al. 2023, eq. 3): three branches,
//     uncond = no text, zeroed image;  image = no text, reference image;  full = text + image,
//   out = uncond + sImage * (image - uncond) + sText * (full - image)        dualCfg(...)
//   sImage says how much to follow the reference image, sText how much the prompt on top of
//   it; sImage = sText = s gives back cfg(uncond, full, s). Costs one more UNet pass per step.
//   The training drop of image / text / both (5% each, DESIGN.md) is what makes all three
//   branches meaningful.
//
// - Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
//   Flawed", section 3.4): large scales blow up the output's standard deviation; rescale each
//   batch item of the guided output to the std of the conditional output, and mix by phi:
//     out = phi * guided * std(cond) / std(guided) + (1 - phi) * guided      rescaleGuidance(...)
//   (diffusers' rescale_noise_cfg; phi = 0.7 in the paper). Std over all of a batch item's
//   elements; the unbiased / biased choice cancels in the ratio.

function check(what: string, ...xs: Float32Array[]): number {
  const n = xs[0]!.length;
  for (const x of xs) {
    if (x.length !== n) throw new Error(`${what}: inputs have different lengths (${xs.map((a) => a.length).join(", ")})`);
  }
  return n;
}

/** uncond + scale * (cond - uncond). scale 1 returns cond; 0 returns uncond. */
export function cfg(uncond: Float32Array, cond: Float32Array, scale: number): Float32Array {
  const n = check("cfg", uncond, cond);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = uncond[i]! + scale * (cond[i]! - uncond[i]!);
  return out;
}

/**
 * Image-and-text guidance: uncond + sImage * (image - uncond) + sText * (full - image), where
 * `image` is conditioned on the image prompt only and `full` on image and text.
 */
export function dualCfg(uncond: Float32Array, image: Float32Array, full: Float32Array,
  sImage: number, sText: number): Float32Array {
  const n = check("dualCfg", uncond, image, full);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = uncond[i]!;
    const m = image[i]!;
    out[i] = u + sImage * (m - u) + sText * (full[i]! - m);
  }
  return out;
}

/**
 * Guidance rescale: per batch item (the arrays split into `batch` equal chunks), scale `guided`
 * to the standard deviation of `cond`, then mix: phi * rescaled + (1 - phi) * guided.
 */
export function rescaleGuidance(guided: Float32Array, cond: Float32Array, phi: number, batch = 1): Float32Array {
  const n = check("rescaleGuidance", guided, cond);
  if (!Number.isInteger(batch) || batch < 1 || n % batch !== 0) {
    throw new Error(`rescaleGuidance: ${n} elements do not split into ${batch} batch items`);
  }
  const per = n / batch;
  const out = new Float32Array(n);
  for (let b = 0; b < batch; b++) {
    const lo = b * per;
    const hi = lo + per;
    const ratio = std(cond, lo, hi) / std(guided, lo, hi);
    const k = phi * (Number.isFinite(ratio) ? ratio : 1) + (1 - phi);
    for (let i = lo; i < hi; i++) out[i] = guided[i]! * k;
  }
  return out;
}

/** Standard deviation of x[lo, hi) (population form; two-pass in float64). */
function std(x: Float32Array, lo: number, hi: number): number {
  let mean = 0;
  for (let i = lo; i < hi; i++) mean += x[i]!;
  mean /= hi - lo;
  let ss = 0;
  for (let i = lo; i < hi; i++) ss += (x[i]! - mean) ** 2;
  return Math.sqrt(ss / (hi - lo));
}

/**
 * Splits a batched model output into `parts` equal views (no copy), e.g. the [uncond; cond]
 * halves of a UNet run on a doubled batch: `const [u, c] = splitBatch(out, 2)`.
 */
export function splitBatch(x: Float32Array, parts: number): Float32Array[] {
  if (!Number.isInteger(parts) || parts < 1 || x.length % parts !== 0) {
    throw new Error(`splitBatch: ${x.length} elements do not split into ${parts} equal parts`);
  }
  const per = x.length / parts;
  return Array.from({ length: parts }, (_, i) => x.subarray(i * per, (i + 1) * per));
}
