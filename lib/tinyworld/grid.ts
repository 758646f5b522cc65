// Contact sheets of tiny-world renders, for a person to look at.

import type { RgbImage } from "../io/images.ts";

/** Tile equally sized images into rows of `cols`, separated by `pad` pixels of `background`. */
export function tileImages(images: readonly RgbImage[], cols: number, pad = 2, background = [255, 255, 255]): RgbImage {
  if (images.length === 0) throw new RangeError("tileImages: no images");
  const { width: w, height: h } = images[0]!;
  for (const im of images) {
    if (im.width !== w || im.height !== h) throw new RangeError(`tileImages: mixed sizes ${w}x${h} and ${im.width}x${im.height}`);
  }
  const rows = Math.ceil(images.length / cols);
  const W = cols * w + (cols + 1) * pad, H = rows * h + (rows + 1) * pad;
  const data = new Uint8Array(W * H * 3);
  for (let p = 0; p < W * H; p++) data.set(background, 3 * p);
  images.forEach((im, k) => {
    const ox = pad + (k % cols) * (w + pad), oy = pad + Math.floor(k / cols) * (h + pad);
    for (let y = 0; y < h; y++) data.set(im.data.subarray(y * w * 3, (y + 1) * w * 3), ((oy + y) * W + ox) * 3);
  });
  return { width: W, height: H, data };
}

/** A copy of `img` with `mask` pixels blended towards `colour` by `alpha`. */
export function overlayMask(img: RgbImage, mask: Uint8Array, colour = [255, 0, 0], alpha = 0.6): RgbImage {
  const data = new Uint8Array(img.data);
  for (let p = 0; p < mask.length; p++) {
    if (!mask[p]) continue;
    for (let c = 0; c < 3; c++) data[3 * p + c] = Math.round(data[3 * p + c]! * (1 - alpha) + colour[c]! * alpha);
  }
  return { width: img.width, height: img.height, data };
}
