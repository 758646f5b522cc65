// `make demo`: the longest real chain that exists today, on the embedded tiny world.
//
//   1. tiny-world subjects -> clean white-background references (references.jsonl)
//   2. each subject in a scene, once clean and once with a known local defect (generations.jsonl);
//      the renderer stands in for IP-Adapter until the diffusion stack (issue 5) lands
//   3. score-patches with the embedded MobileNetV2 -> patch-scores.jsonl, heatmaps/
//   4. how well the scores find the defects the renderer planted (it knows the truth):
//      demo-summary.json
//
// Re-running reuses what is there (score-patches resumes); `--force` starts over.

import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { runMain } from "../lib/io/errors.ts";
import { writePng } from "../lib/io/images.ts";
import { writeJsonAtomic } from "../lib/io/atomic.ts";
import { writeJsonl } from "../lib/io/manifest.ts";
import { relPaths, runPaths } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { openSafetensors } from "../lib/io/safetensors.ts";
import { GenerationRow, ReferenceRow } from "../lib/io/schemas.ts";
import { Rng } from "../lib/rng.ts";
import { SCENES, describeSubject, randomSubject, renderCorrupted, renderReference, scenePrompt } from "../lib/tinyworld/index.ts";
import { run as scorePatches } from "./score-patches.ts";

export interface DemoOptions {
  run: string;
  subjects: number;
  size: number;
  seed: number;
  force: boolean;
  /** MobileNetV2 feature map: block_13_expand_relu (14x14) resolves small details better than out_relu (7x7). */
  featureLayer: string;
}

/** Share of each patch's pixels inside a pixel mask, on an h x w grid. */
function patchCoverage(mask: Uint8Array, size: number, h: number, w: number): Float32Array {
  const out = new Float32Array(h * w);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const y0 = Math.floor((i * size) / h), y1 = Math.floor(((i + 1) * size) / h);
      const x0 = Math.floor((j * size) / w), x1 = Math.floor(((j + 1) * size) / w);
      let hit = 0;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) hit += mask[y * size + x]! ? 1 : 0;
      out[i * w + j] = hit / ((y1 - y0) * (x1 - x0));
    }
  }
  return out;
}

export async function run(o: DemoOptions) {
  const paths = runPaths(o.run);
  if (o.force && existsSync(paths.root)) rmSync(paths.root, { recursive: true });
  const rng = new Rng(o.seed);
  const refs: ReferenceRow[] = [];
  const gens: GenerationRow[] = [];
  const truth = new Map<string, { defect: Uint8Array; subject: Uint8Array; kind: string; clean: string }>();
  for (let s = 0; s < o.subjects; s++) {
    const subject = randomSubject(rng);
    const d = describeSubject(subject);
    const ref = renderReference(subject, o.size);
    const refRel = relPaths.referenceImage(subject.id);
    await writePng(join(paths.root, refRel), ref.image);
    const settings = { model: "tinyworld-renderer", width: o.size, height: o.size };
    refs.push({ id: subject.id, subjectId: subject.id, prompt: `a photo of ${d.text}, isolated on a white background`, image: refRel, seed: o.seed, settings });
    // k = 0: the subject in a scene as it should be; k = 1: the same scene with one local defect.
    const scene = SCENES[rng.int(SCENES.length)]!;
    const sceneSeed = rng.nextU32();
    const bad = renderCorrupted(subject, scene, o.size, new Rng(sceneSeed));
    for (const [k, img] of [[0, bad.clean.image], [1, bad.image]] as const) {
      const id = `${subject.id}-${k}`;
      const rel = relPaths.generationImage(subject.id, k);
      await writePng(join(paths.root, rel), img);
      gens.push({
        id, referenceId: subject.id, subjectId: subject.id, prompt: scenePrompt(d.text, scene), image: rel, seed: sceneSeed, k,
        settings: { ...settings, scene: scene.name, corruption: k === 1 ? bad.corruption.kind : "none" },
      });
    }
    truth.set(`${subject.id}-1`, { defect: bad.corruptionMask, subject: bad.mask, kind: bad.corruption.kind, clean: `${subject.id}-0` });
  }
  await writeJsonl(paths.references, refs, ReferenceRow);
  await writeJsonl(paths.generations, gens, GenerationRow);
  console.log(`tiny world: ${refs.length} subjects -> ${refs.length} references, ${gens.length} scene renders (half with a planted defect) in ${paths.root}`);

  const scored = await scorePatches({ run: o.run, encoder: "default", featureLayer: o.featureLayer, latentGrid: 64, lowThreshold: 0.5, normalization: "clamp", batch: 8, device: "cpu", threads: 0, force: false });
  console.log(`score-patches (MobileNetV2 from nsfwjs, ${o.featureLayer}): ${scored.scored} pairs scored, ${scored.skipped} already done`);

  // How well do the scores find the planted defects? Within the subject's own patches, the k
  // lowest-quality patches (k = number of defect patches) vs the true defect patches; and the
  // quality of the defect patches in the clean vs the defective render of the same scene.
  const rows = [];
  for (const [id, t] of truth) {
    const q = openSafetensors(join(paths.patchScoresDir, `${id}.safetensors`));
    const qBad = q.float32("q_gen");
    const qClean = openSafetensors(join(paths.patchScoresDir, `${t.clean}.safetensors`)).float32("q_gen");
    const [h, w] = q.info("q_gen").shape as [number, number];
    const defect = patchCoverage(t.defect, o.size, h, w);
    const onSubject = patchCoverage(t.subject, o.size, h, w);
    const cand = [...qBad.keys()].filter((i) => onSubject[i]! >= 0.25 || defect[i]! >= 0.1);
    const isDefect = (i: number) => defect[i]! >= 0.1;
    const k = cand.filter(isDefect).length;
    const lowest = [...cand].sort((a, b) => qBad[a]! - qBad[b]!).slice(0, k);
    const hits = lowest.filter(isDefect).length;
    const mean = (xs: number[], arr: Float32Array) => (xs.length ? xs.reduce((s, i) => s + arr[i]!, 0) / xs.length : NaN);
    const defects = cand.filter(isDefect);
    rows.push({ id, corruption: t.kind, defectPatches: k, precisionAtK: k ? hits / k : NaN, qDefectClean: mean(defects, qClean), qDefectBad: mean(defects, qBad) });
  }
  const valid = rows.filter((r) => r.defectPatches > 0);
  const avg = (f: (r: (typeof rows)[number]) => number) => valid.reduce((s, r) => s + f(r), 0) / Math.max(1, valid.length);
  const summary = {
    pairs: gens.length,
    defectiveGenerations: rows.length,
    meanPrecisionAtK: avg((r) => r.precisionAtK),
    meanQualityOfDefectPatches: { clean: avg((r) => r.qDefectClean), defective: avg((r) => r.qDefectBad) },
    rows,
  };
  await writeJsonAtomic(join(paths.root, "demo-summary.json"), summary);
  console.log("\nplanted defect            defect patches  precision@k  q(defect) clean -> defective");
  for (const r of rows) console.log(`${r.corruption.padEnd(26)}${String(r.defectPatches).padStart(14)}${r.precisionAtK.toFixed(2).padStart(13)}        ${r.qDefectClean.toFixed(3)} -> ${r.qDefectBad.toFixed(3)}`);
  console.log(`\nmean precision@k ${summary.meanPrecisionAtK.toFixed(2)}; defect patches' quality ${summary.meanQualityOfDefectPatches.clean.toFixed(3)} (clean) -> ${summary.meanQualityOfDefectPatches.defective.toFixed(3)} (defective)`);
  console.log(`heatmaps: ${paths.heatmapsDir}/  summary: ${join(paths.root, "demo-summary.json")}`);
  console.log("not yet in the chain: diffusion generation (issue 5), PatchDPO epochs, evaluation report (issue 6)");
  return summary;
}

if (import.meta.main) {
  await runMain(async () => {
    const { values: v } = parseArgs({
      args: Bun.argv.slice(2),
      options: {
        run: { type: "string", default: "data/runs/demo" }, subjects: { type: "string", default: "8" },
        size: { type: "string", default: "224" }, seed: { type: "string", default: "0" },
        "feature-layer": { type: "string", default: "block_13_expand_relu" },
        force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
      },
    });
    if (v.help) {
      return console.log("demo: the embedded tiny-world chain\n\n  --run <dir>      (default data/runs/demo)\n  --subjects <n>   (default 8)\n  --size <px>      (default 224)\n  --seed <n>       (default 0)\n  --force          start over");
    }
    console.log("patchdpo demo: tiny-world references and scene renders (the renderer stands in for the personalized generator), then patch scoring with the embedded MobileNetV2.");
    const opts = { run: v.run!, subjects: Number(v.subjects), size: Number(v.size), seed: Number(v.seed), force: v.force!, featureLayer: v["feature-layer"]! };
    await recordStep(opts.run, "demo", opts, () => run(opts));
  });
}
