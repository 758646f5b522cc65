// Can the patch scorer see the tiny world? Before any generator is trained on it, true renders
// must pick their own reference over other subjects' references, or quality maps on generated
// images could not tell a faithful patch from a wrong one (issue 9).
//
// For every catalogue subject and every flat scene (and the clean white background, the authors'
// construction), the renderer's truth at the generator's size is scored against its own
// reference and against `--others` other references (seeded). A pick is correct when the own
// reference scores highest. Score = mean q_ref over the reference's subject patches ("was each
// part of the subject reproduced"); also reported: mean q_gen over the image's subject patches.
// Chance = 1 / (others + 1).
//
//   bun bench/tinyworld-visibility.ts --sizes 32,48,64 --layers out_relu,block_13_expand_relu [--encoder default]

import { parseArgs } from "node:util";
import { type RgbImage } from "../lib/io/images.ts";
import { loadFeaturizer } from "../lib/models/featurizer.ts";
import { backgroundMask, qualityMaps } from "../lib/patch/quality.ts";
import { Rng } from "../lib/rng.ts";
import { CATALOGUE, FLAT_SCENES } from "../lib/tinyworld/catalogue.ts";
import { renderReference, renderScene } from "../lib/tinyworld/render.ts";

const { values: v } = parseArgs({
  options: {
    sizes: { type: "string", default: "32,48,64" },
    layers: { type: "string", default: "out_relu,block_13_expand_relu" },
    encoder: { type: "string", default: "default" },
    others: { type: "string", default: "2" },
    seed: { type: "string", default: "0" },
  },
});
const others = Number(v.others);

/** Share of each patch (h x w grid over an S x S image) covered by the mask. */
function coverage(mask: Uint8Array, S: number, h: number, w: number): Float32Array {
  const out = new Float32Array(h * w);
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) if (mask[y * S + x]) out[Math.floor((y * h) / S) * w + Math.floor((x * w) / S)]! += (h * w) / (S * S);
  return out;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

for (const layer of v.layers!.split(",")) {
  const feat = await loadFeaturizer(v.encoder!, { featureLayer: layer, batchSize: 8 });
  const refs = CATALOGUE.map((e) => renderReference(e.subject, 224).image);
  const fr = await feat.features(refs);
  const [C, h, w] = fr.patchShape;
  const per = C * h * w;
  const refMasks = refs.map((r) => backgroundMask(r, h, w));
  for (const S of v.sizes!.split(",").map(Number)) {
    const rng = new Rng(Number(v.seed));
    const jobs: { img: RgbImage; mask: Uint8Array; own: number; scene: string }[] = [];
    for (const e of CATALOGUE) {
      const clean = renderReference(e.subject, S);
      jobs.push({ img: clean.image, mask: clean.mask, own: e.index, scene: "white" });
      for (const sc of FLAT_SCENES) {
        const r = renderScene(e.subject, sc, S, new Rng(rng.nextU32()));
        jobs.push({ img: r.image, mask: r.mask, own: e.index, scene: sc.name });
      }
    }
    const fg = await feat.features(jobs.map((j) => j.img));
    const byScene = new Map<string, { ref: number[]; gen: number[] }>();
    jobs.forEach((j, k) => {
      const cands = [j.own];
      while (cands.length < others + 1) {
        const c = rng.int(CATALOGUE.length);
        if (!cands.includes(c)) cands.push(c);
      }
      const onSubject = coverage(j.mask, S, h, w);
      const scores = cands.map((c) => {
        const q = qualityMaps({ data: fg.patches.subarray(k * per, (k + 1) * per), c: C, h, w }, { data: fr.patches.subarray(c * per, (c + 1) * per), c: C, h, w }, refMasks[c]!);
        const refMean = mean([...q.qRef].filter((x) => Number.isFinite(x)));
        const genMean = mean([...q.qGen].filter((_, i) => onSubject[i]! >= 0.5));
        return { refMean, genMean };
      });
      const hit = (key: "refMean" | "genMean") => (scores.every((s, i) => i === 0 || s[key] < scores[0]![key]) ? 1 : 0);
      const row = byScene.get(j.scene) ?? { ref: [], gen: [] };
      row.ref.push(hit("refMean"));
      row.gen.push(hit("genMean"));
      byScene.set(j.scene, row);
    });
    const all = [...byScene.values()];
    const parts = [...byScene].map(([s, r]) => `${s} ${mean(r.ref).toFixed(2)}/${mean(r.gen).toFixed(2)}`).join("  ");
    console.log(
      `encoder ${v.encoder} layer ${layer} (${h}x${w}) size ${S}: own-reference pick rate q_ref ${mean(all.flatMap((r) => r.ref)).toFixed(3)}, q_gen ${mean(all.flatMap((r) => r.gen)).toFixed(3)} (chance ${(1 / (others + 1)).toFixed(2)}; n=${jobs.length})  [${parts}]`,
    );
  }
}
