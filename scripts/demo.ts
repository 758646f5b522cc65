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
import { DEFAULTS as FINETUNE_DEFAULTS, run as finetuneEncoder } from "./finetune-encoder.ts";
import { run as scorePatches } from "./score-patches.ts";

export interface DemoOptions {
  run: string;
  subjects: number;
  size: number;
  seed: number;
  force: boolean;
  /** Extra tiny-world images for the encoder's self-supervised finetune, and its steps. */
  sslImages: number;
  sslSteps: number;
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

interface Truth { defect: Uint8Array; subject: Uint8Array; kind: string; clean: string }

interface DefectRow { id: string; corruption: string; defectPatches: number; precisionAtK: number; qDefectClean: number; qDefectBad: number }

/**
 * How well the scores find the planted defects: within the subject's own patches, the k
 * lowest-quality patches (k = number of defect patches) vs the true defect patches; and the
 * quality of the defect patches in the clean vs the defective render of the same scene.
 * (A missing detail shows in q_ref, on the reference side, more than in q_gen.)
 */
function defectFinding(scoresDir: string, truth: Map<string, Truth>, size: number) {
  const rows: DefectRow[] = [];
  for (const [id, t] of truth) {
    const q = openSafetensors(join(scoresDir, `${id}.safetensors`));
    const qBad = q.float32("q_gen");
    const qClean = openSafetensors(join(scoresDir, `${t.clean}.safetensors`)).float32("q_gen");
    const [h, w] = q.info("q_gen").shape as [number, number];
    const defect = patchCoverage(t.defect, size, h, w);
    const onSubject = patchCoverage(t.subject, size, h, w);
    const isDefect = (i: number) => defect[i]! >= 0.1;
    const cand = [...qBad.keys()].filter((i) => onSubject[i]! >= 0.25 || isDefect(i));
    const defects = cand.filter(isDefect);
    const k = defects.length;
    const hits = [...cand].sort((a, b) => qBad[a]! - qBad[b]!).slice(0, k).filter(isDefect).length;
    const mean = (arr: Float32Array) => (k ? defects.reduce((s, i) => s + arr[i]!, 0) / k : NaN);
    rows.push({ id, corruption: t.kind, defectPatches: k, precisionAtK: k ? hits / k : NaN, qDefectClean: mean(qClean), qDefectBad: mean(qBad) });
  }
  const valid = rows.filter((r) => r.defectPatches > 0);
  const avg = (f: (r: DefectRow) => number) => valid.reduce((s, r) => s + f(r), 0) / Math.max(1, valid.length);
  return {
    meanPrecisionAtK: avg((r) => r.precisionAtK),
    meanQualityOfDefectPatches: { clean: avg((r) => r.qDefectClean), defective: avg((r) => r.qDefectBad) },
    rows,
  };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export async function run(o: DemoOptions) {
  const paths = runPaths(o.run);
  if (o.force && existsSync(paths.root)) rmSync(paths.root, { recursive: true });
  const rng = new Rng(o.seed);
  const refs: ReferenceRow[] = [];
  const gens: GenerationRow[] = [];
  const truth = new Map<string, Truth>();
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

  const score = (encoder: string, force: boolean) =>
    scorePatches({ run: o.run, encoder, featureLayer: o.featureLayer, latentGrid: 64, lowThreshold: 0.5, normalization: "clamp", batch: 8, device: "cpu", threads: 0, force });
  const base = await score("default", false);
  console.log(`score-patches (MobileNetV2 from nsfwjs, ${o.featureLayer}): ${base.scored} pairs scored, ${base.skipped} already done`);
  const before = defectFinding(paths.patchScoresDir, truth, o.size);

  // The self-supervised patch task on other tiny-world images (never the evaluated subjects).
  const sslDir = join(paths.root, "ssl-images");
  for (let i = 0; i < o.sslImages; i++) {
    const subject = randomSubject(rng);
    const scene = SCENES[rng.int(SCENES.length)]!;
    const img = i % 2 ? renderReference(subject, o.size).image : renderCorrupted(subject, scene, o.size, new Rng(rng.nextU32())).clean.image;
    await writePng(join(sslDir, `${String(i).padStart(3, "0")}.png`), img);
  }
  const encoderDir = join(paths.root, "encoder-ssl");
  const ft = await finetuneEncoder({
    ...FINETUNE_DEFAULTS, cropScale: [...FINETUNE_DEFAULTS.cropScale], images: sslDir, out: encoderDir, featureLayer: o.featureLayer,
    trainBlocks: 4, steps: o.sslSteps, lr: 3e-4, warmup: 5, holdout: 4, saveEvery: 0, resume: existsSync(join(encoderDir, "state.json")), force: false,
  });
  console.log(`finetune-encoder: ${ft.step} steps, held-out patch-matching accuracy ${pct(ft.accuracyBefore ?? NaN)} -> ${pct(ft.accuracyAfter ?? NaN)}`);
  await score(encoderDir, true);
  const after = defectFinding(paths.patchScoresDir, truth, o.size);

  const summary = { pairs: gens.length, defectiveGenerations: truth.size, sslAccuracy: { before: ft.accuracyBefore, after: ft.accuracyAfter }, before, after };
  await writeJsonAtomic(join(paths.root, "demo-summary.json"), summary);
  console.log("\nplanted defect        defect patches   precision@k: base -> ssl   q(defect) clean -> defective: base | ssl");
  before.rows.forEach((r, i) => {
    const a = after.rows[i]!;
    console.log(`${r.corruption.padEnd(22)}${String(r.defectPatches).padStart(14)}${r.precisionAtK.toFixed(2).padStart(15)} -> ${a.precisionAtK.toFixed(2)}        ${r.qDefectClean.toFixed(3)} -> ${r.qDefectBad.toFixed(3)} | ${a.qDefectClean.toFixed(3)} -> ${a.qDefectBad.toFixed(3)}`);
  });
  for (const [name, m] of [["base encoder", before], ["SSL-finetuned", after]] as const) {
    console.log(`${name.padEnd(14)} mean precision@k ${m.meanPrecisionAtK.toFixed(2)}; defect patches' quality ${m.meanQualityOfDefectPatches.clean.toFixed(3)} (clean) -> ${m.meanQualityOfDefectPatches.defective.toFixed(3)} (defective)`);
  }
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
        "ssl-images": { type: "string", default: "40" }, "ssl-steps": { type: "string", default: "80" },
        force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
      },
    });
    if (v.help) {
      return console.log("demo: the embedded tiny-world chain\n\n  --run <dir>      (default data/runs/demo)\n  --subjects <n>   (default 8)\n  --size <px>      (default 224)\n  --ssl-images <n> (default 40)\n  --ssl-steps <n>  (default 80)\n  --feature-layer  (default block_13_expand_relu)\n  --seed <n>       (default 0)\n  --force          start over");
    }
    console.log("patchdpo demo: tiny-world references and scene renders (the renderer stands in for the personalized generator), then patch scoring with the embedded MobileNetV2.");
    const opts = { run: v.run!, subjects: Number(v.subjects), size: Number(v.size), seed: Number(v.seed), force: v.force!, featureLayer: v["feature-layer"]!, sslImages: Number(v["ssl-images"]), sslSteps: Number(v["ssl-steps"]) };
    await recordStep(opts.run, "demo", opts, () => run(opts));
  });
}
