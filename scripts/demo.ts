// `make demo`: the whole PatchDPO chain on the embedded tiny world, on a CPU, in a few minutes.
//
//   1. synthesize-prompts --world tiny            subjects, reference prompts, scene prompts
//   2. generate-images --mode reference           clean references (the tiny world's renderer)
//   3. generate-images --mode personalized        the tiny SD + IP-Adapter-Plus (checkpoints/tiny)
//   4. finetune-encoder                           the patch encoder's self-supervised task
//   5. score-patches                              q_gen / q_ref maps and heatmaps
//   6. dpo-epoch --objective patch-dpo            one (short) PatchDPO epoch on the IP-Adapter
//   7. generate-images again with the trained IP-Adapter (same seeds), into <run>-after
//   8. eval + report                              before / after, report.html
//   and a scorer check: the renderer plants known defects, score-patches should find them.
//
// Re-running reuses what is there (every step resumes); --force starts over.

import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../lib/io/atomic.ts";
import { parseFlags } from "../lib/io/cli.ts";
import { runMain, UserError } from "../lib/io/errors.ts";
import { loadImage, writePng } from "../lib/io/images.ts";
import { readJsonlAll } from "../lib/io/manifest.ts";
import { runPaths } from "../lib/io/rundir.ts";
import { openSafetensors } from "../lib/io/safetensors.ts";
import { GenerationRow } from "../lib/io/schemas.ts";
import { Rng } from "../lib/rng.ts";
import { SCENES, randomSubject, renderCorrupted, renderReference } from "../lib/tinyworld/index.ts";
import { DEFAULTS as DPO_DEFAULTS, run as dpoEpoch } from "./dpo-epoch.ts";
import { DEFAULTS as EVAL_DEFAULTS, run as evaluate } from "./eval.ts";
import { DEFAULTS as FINETUNE_DEFAULTS, run as finetuneEncoder } from "./finetune-encoder.ts";
import { DEFAULTS as GENERATE_DEFAULTS, type GenerateOptions, run as generateImages } from "./generate-images.ts";
import { run as report } from "./report.ts";
import { DEFAULTS as SCORE_DEFAULTS, run as scorePatches } from "./score-patches.ts";
import { DEFAULTS as PROMPT_DEFAULTS, run as synthesizePrompts } from "./synthesize-prompts.ts";

export interface DemoOptions {
  run: string;
  /** The tiny world's trained generator (scripts/pretrain-tiny.ts). */
  model: string;
  subjects: number;
  perReference: number;
  /** Sampling steps of the tiny generator. */
  steps: number;
  sslSteps: number;
  /** PatchDPO epochs over the run's pairs (2 pairs per step). */
  dpoEpochs: number;
  seed: number;
  force: boolean;
}

const TINY = 32; // the tiny generator's image size (pixel-unshuffle VAE: 16x16 latents)
const step = (n: number, what: string) => console.log(`\n[${n}] ${what}`);
const pct = (x: number | undefined) => (x === undefined ? "-" : `${(100 * x).toFixed(1)}%`);

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

/**
 * The scorer check: the renderer's personalized "generations" carry known defects; within the
 * subject's patches, are the k lowest-quality patches (k = number of defect patches) the defect
 * patches (precision@k), and how much does the defect lower the quality of its patches?
 */
async function scorerCheck(run: string) {
  const paths = runPaths(run);
  const out: { defect: string; patches: number; precisionAtK: number }[] = [];
  for (const g of await readJsonlAll(paths.generations, GenerationRow)) {
    const kind = String(g.settings.defect);
    if (kind === "none") continue;
    // generate-images --model tinyworld writes the truth beside the image: red = defect, green = subject.
    const truth = await loadImage(paths.resolve(String(g.settings.truth)));
    const size = truth.width;
    const channel = (c: number) => Uint8Array.from({ length: size * size }, (_, i) => (truth.data[i * 3 + c]! > 127 ? 1 : 0));
    const q = openSafetensors(join(run, "patch-scores", `${g.id}.safetensors`));
    const qGen = q.float32("q_gen");
    const [h, w] = q.info("q_gen").shape as [number, number];
    const defect = patchCoverage(channel(0), size, h, w);
    const onSubject = patchCoverage(channel(1), size, h, w);
    const isDefect = (i: number) => defect[i]! >= 0.1;
    const cand = [...qGen.keys()].filter((i) => onSubject[i]! >= 0.25 || isDefect(i));
    const k = cand.filter(isDefect).length;
    if (!k) continue;
    const hits = [...cand].sort((a, b) => qGen[a]! - qGen[b]!).slice(0, k).filter(isDefect).length;
    out.push({ defect: kind, patches: k, precisionAtK: hits / k });
  }
  const mean = out.reduce((s, r) => s + r.precisionAtK, 0) / Math.max(1, out.length);
  return { rows: out, meanPrecisionAtK: mean };
}

export async function run(o: DemoOptions) {
  if (!existsSync(join(o.model, "model_index.json"))) throw new UserError(`${o.model} is not there: the tiny world's generator is committed under checkpoints/tiny (remake it with bun scripts/pretrain-tiny.ts)`);
  const before = o.run;
  const after = `${o.run}-after`;
  const scorer = `${o.run}-scorer`;
  if (o.force) for (const d of [before, after, scorer]) rmSync(d, { recursive: true, force: true });
  const ip = join(o.model, "ip-adapter.safetensors");
  const gen = (x: Partial<GenerateOptions>): GenerateOptions => ({ ...GENERATE_DEFAULTS, run: before, mode: "reference", model: "tinyworld", ...x });
  const personalized = (run: string, ipAdapter: string) =>
    generateImages(gen({ run, mode: "personalized", model: o.model, ipAdapter, imageEncoder: "mobilenet_v2", width: TINY, height: TINY, steps: o.steps, guidance: 3, ipScale: 1, perReference: o.perReference, batch: 4, seed: o.seed }));

  step(1, "synthesize-prompts --world tiny");
  await synthesizePrompts({ ...PROMPT_DEFAULTS, run: before, subjects: o.subjects, scenesPerSubject: o.perReference, seed: o.seed, world: "tiny", force: false, log: () => {} });
  step(2, "generate-images --mode reference --model tinyworld (clean white-background references)");
  await generateImages(gen({ width: 224, height: 224, seed: o.seed }));
  step(3, `generate-images --mode personalized --model ${o.model} (tiny SD + IP-Adapter-Plus over MobileNetV2)`);
  const g = await personalized(before, ip);
  console.log(`    ${g.generated} images (${g.skipped} already there)`);

  step(4, "finetune-encoder (self-supervised patch InfoNCE) on tiny-world renders");
  const sslDir = join(before, "ssl-images");
  if (!existsSync(sslDir)) {
    mkdirSync(sslDir, { recursive: true });
    const rng = new Rng(o.seed + 99);
    for (let i = 0; i < 40; i++) {
      const s = randomSubject(rng);
      const img = i % 2 ? renderReference(s, 224).image : renderCorrupted(s, SCENES[rng.int(SCENES.length)]!, 224, new Rng(rng.nextU32())).clean.image;
      await writePng(join(sslDir, `${String(i).padStart(3, "0")}.png`), img);
    }
  }
  const encoder = join(before, "encoder-ssl");
  const ft = await finetuneEncoder({
    ...FINETUNE_DEFAULTS, cropScale: [...FINETUNE_DEFAULTS.cropScale], images: sslDir, out: encoder, steps: o.sslSteps, lr: 3e-4, warmup: 5,
    holdout: 4, saveEvery: 0, resume: existsSync(join(encoder, "state.json")), force: false, seed: o.seed,
  });
  console.log(`    held-out patch-matching accuracy ${pct(ft.accuracyBefore)} -> ${pct(ft.accuracyAfter)}`);

  step(5, "score-patches with the finetuned encoder (latent grid 16x16)");
  await scorePatches({ ...SCORE_DEFAULTS, run: before, encoder, latentGrid: TINY / 2 });

  step(6, `dpo-epoch --objective patch-dpo, ${o.dpoEpochs} epochs of 2 pairs per step`);
  let dpo = { out: ip, stepsRun: 0, endStep: 0 } as { out: string; stepsRun: number; endStep: number };
  for (let epoch = 1; epoch <= o.dpoEpochs; epoch++) {
    const r = await dpoEpoch({
      ...DPO_DEFAULTS, run: before, model: o.model, ipAdapter: ip, imageEncoder: "mobilenet_v2", objective: "patch-dpo", size: TINY,
      epoch, batch: 2, lr: 1e-4, beta: 500, saveEvery: 0, seed: o.seed, resume: true, force: false, // a rerun skips finished epochs
    });
    dpo = { out: r.out, stepsRun: dpo.stepsRun + r.stepsRun, endStep: r.endStep };
  }
  console.log(`    ${dpo.endStep} steps in all; trained IP-Adapter: ${dpo.out}`);

  step(7, "generate-images again with the trained IP-Adapter (same prompts and seeds)");
  mkdirSync(after, { recursive: true });
  for (const f of ["prompts.jsonl", "references.jsonl", "references"]) if (!existsSync(join(after, f))) cpSync(join(before, f), join(after, f), { recursive: true });
  await personalized(after, dpo.out);

  step(8, "eval (feature score against the references) and report");
  const ev = { ...EVAL_DEFAULTS, setting: "all-refs" as const, encoderFeature: "default" };
  await evaluate({ ...ev, run: before });
  await evaluate({ ...ev, run: after });
  const rep = await report({ run: after, compare: before, trainLogs: [join(before, "train"), encoder], title: "patchdpo demo: tiny world, before vs after PatchDPO" });
  const sb = (await Bun.file(join(before, "eval", "summary.json")).json()) as { metrics: Record<string, number> };
  const sa = (await Bun.file(join(after, "eval", "summary.json")).json()) as { metrics: Record<string, number> };

  step(9, "scorer check: renderer scenes with planted defects (ground truth known), scored at 14x14");
  await synthesizePrompts({ ...PROMPT_DEFAULTS, run: scorer, subjects: o.subjects, scenesPerSubject: 2, seed: o.seed, world: "tiny", force: false, log: () => {} });
  await generateImages(gen({ run: scorer, width: 224, height: 224, seed: o.seed }));
  await generateImages(gen({ run: scorer, mode: "personalized", width: 224, height: 224, perReference: 2, defectRate: 0.5, seed: o.seed }));
  // The 14x14 map resolves the renderer's small details better than the 7x7 one.
  await scorePatches({ ...SCORE_DEFAULTS, run: scorer, encoder, featureLayer: "block_13_expand_relu", latentGrid: 28 });
  const check = await scorerCheck(scorer);

  const summary = {
    sslAccuracy: { before: ft.accuracyBefore, after: ft.accuracyAfter },
    feature: { before: sb.metrics.feature, after: sa.metrics.feature },
    dpo: dpo.out,
    report: rep.path,
    scorerCheck: check,
  };
  await writeJsonAtomic(join(before, "demo-summary.json"), summary);
  console.log(`\nfeature score of the generations vs their references: ${sb.metrics.feature?.toFixed(4)} (before) -> ${sa.metrics.feature?.toFixed(4)} (after ${o.dpoEpochs} short PatchDPO epochs)`);
  console.log(`scorer check: planted defects found in the k lowest-quality subject patches, mean precision@k ${check.meanPrecisionAtK.toFixed(2)} over ${check.rows.length} defective images`);
  console.log(`report: ${rep.path}\nheatmaps: ${join(before, "heatmaps")}/\nsummary: ${join(before, "demo-summary.json")}`);
  return summary;
}

const HELP = `demo: the whole PatchDPO chain on the embedded tiny world

  --run <dir>            (default data/runs/demo; also writes <dir>-after and <dir>-scorer)
  --model <dir>          the tiny world's generator (default checkpoints/tiny)
  --subjects <n>         (default 6)
  --per-reference <k>    generations per reference (default 2)
  --steps <n>            sampling steps (default 20)
  --ssl-steps <n>        encoder finetune steps (default 60)
  --dpo-epochs <n>       PatchDPO epochs (default 3)
  --seed <n>             (default 0)
  --force                start over`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      run: { type: "string", default: "data/runs/demo" }, model: { type: "string", default: "checkpoints/tiny" },
      subjects: { type: "string", default: "6" }, "per-reference": { type: "string", default: "2" }, steps: { type: "string", default: "20" },
      "ssl-steps": { type: "string", default: "60" }, "dpo-epochs": { type: "string", default: "3" }, seed: { type: "string", default: "0" },
      force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    console.log("patchdpo demo: prompts -> references -> personalized generations -> encoder SSL -> patch scores -> PatchDPO epoch -> generations again -> eval + report, all on the tiny world (CPU, no downloads).");
    await run({
      run: v.run!, model: v.model!, subjects: Number(v.subjects), perReference: Number(v["per-reference"]), steps: Number(v.steps),
      sslSteps: Number(v["ssl-steps"]), dpoEpochs: Number(v["dpo-epochs"]), seed: Number(v.seed), force: v.force!,
    });
  });
}
