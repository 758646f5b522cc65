// `make demo`: the whole PatchDPO chain on the embedded tiny world, on a CPU, in about two minutes.
//
//   1. synthesize-prompts --world tiny            catalogue subjects, reference prompts, scene prompts
//   2. generate-images --mode reference           clean references (the tiny world's renderer)
//   3. generate-images --mode personalized        the tiny SD + IP-Adapter-Plus (checkpoints/tiny),
//                                                 from each reference's own prompt (the authors' pairs)
//   4. scorer check, raw encoder                  renderer truth with planted defects: does low q_gen
//                                                 find the wrong patches (ROC AUC)?
//   5. finetune-encoder                           the patch encoder's self-supervised task, training
//                                                 the blocks under the layer the scorer reads
//   6. scorer check again, finetuned encoder      and with the shipped default (checkpoints/patch-encoder)
//   7. score-patches                              q_gen / q_ref maps and heatmaps of the real pairs
//   8. dpo-epoch --objective patch-dpo            short PatchDPO epochs on the IP-Adapter
//   9. generate-images again with the trained IP-Adapter (same prompts and seeds), into <run>-after
//  10. judge + eval + report                      before / after, every number beside its chance
//
// Re-running reuses what is there (every step resumes). The demo's own settings are kept in
// <run>/demo-settings.json: a rerun with other ones (say --dpo-epochs 4 after 3) is refused, naming
// them, since the "after" images and the summary would mix both; --force starts over (it deletes
// the three folders once the options and the model have been checked) or pass another --run.
// Everything lands in <run>, <run>-after and <run>-scorer.

import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type } from "arktype";
import { writeJsonAtomic } from "../lib/io/atomic.ts";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UserError } from "../lib/io/errors.ts";
import { readJsonlAll } from "../lib/io/manifest.ts";
import { portablePath, runPaths } from "../lib/io/rundir.ts";
import { describeDiff, settingsDiff } from "../lib/io/settings.ts";
import { ReferenceRow } from "../lib/io/schemas.ts";
import { RAW_ENCODER } from "../lib/models/featurizer.ts";
import { DEFAULTS as DPO_DEFAULTS, run as dpoEpoch } from "./dpo-epoch.ts";
import { DEFAULTS as EVAL_DEFAULTS, run as evaluate } from "./eval.ts";
import { DEFAULTS as FINETUNE_DEFAULTS, run as finetuneEncoder } from "./finetune-encoder.ts";
import { DEFAULTS as GENERATE_DEFAULTS, type GenerateOptions, run as generateImages } from "./generate-images.ts";
import { type JudgeSummary, formatSummary, run as judge } from "./judge.ts";
import { run as report } from "./report.ts";
import { DEFAULTS as SCORE_DEFAULTS, run as scorePatches } from "./score-patches.ts";
import { run as renderTinyWorld } from "./render-tinyworld.ts";
import { DEFAULTS as PROMPT_DEFAULTS, run as synthesizePrompts } from "./synthesize-prompts.ts";

export interface DemoOptions {
  run: string;
  /** The tiny world's trained generator (scripts/pretrain-tiny.ts). */
  model: string;
  subjects: number;
  perReference: number;
  /** Sampling steps and guidance of the tiny generator. */
  steps: number;
  guidance: number;
  sslSteps: number;
  /** PatchDPO epochs over the run's pairs. */
  dpoEpochs: number;
  seed: number;
  force: boolean;
}

export const DEFAULTS: Omit<DemoOptions, "run"> = {
  model: "checkpoints/tiny", subjects: 6, perReference: 2, steps: 20, guidance: 1, sslSteps: 80, dpoEpochs: 3, seed: 0, force: false,
};

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  run: "string > 0", model: "string > 0", subjects: "number.integer > 0", perReference: "number.integer > 0", steps: "number.integer > 0",
  guidance: "number >= 0", sslSteps: "number.integer > 0", dpoEpochs: "number.integer > 0", seed: "number.integer >= 0", force: "boolean",
});

/**
 * <run>/demo-settings.json: every option but --force. A rerun compares, so changed settings are
 * refused instead of reusing steps made with the old ones.
 */
function checkDemoSettings(o: DemoOptions): { path: string; settings: Record<string, unknown> } {
  const path = join(o.run, "demo-settings.json");
  const { force: _f, run: _r, ...rest } = o;
  const settings = { ...rest, model: portablePath(o.run, o.model) };
  if (existsSync(path) && !o.force) {
    let before: Record<string, unknown>;
    try {
      before = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    } catch (e) {
      throw new UserError(`${path}: not valid JSON (${(e as Error).message}); pass --force to start the demo over`);
    }
    const diff = settingsDiff(before, settings);
    if (diff.length) {
      throw new UserError(`${o.run} holds a demo made with other settings (${describeDiff(diff)}): rerun with those, pass --force to start over with these, or use another --run`);
    }
  }
  return { path, settings };
}

/** The tiny generator's image size (pixel-unshuffle VAE, factor 4: 16x16 latents). */
const TINY = 64;
/** The patch grid the scorer reads: MobileNetV2's 14x14 map (its 7x7 one cannot tell the catalogue's subjects apart). */
const LAYER = "block_13_expand_relu";
const step = (n: number, what: string) => console.log(`\n[${n}] ${what}`);
const pct = (x: number | undefined) => (x === undefined ? "-" : `${(100 * x).toFixed(1)}%`);
const indent = (s: string) => s.replace(/^/gm, "    ");

export async function run(opts: Partial<DemoOptions> & { run: string }) {
  const o = resolveOptions<DemoOptions>(OPTIONS, DEFAULTS, opts);
  if (!existsSync(join(o.model, "model_index.json"))) throw new UserError(`${o.model} is not there: the tiny world's generator is committed under checkpoints/tiny (remake it with bun scripts/pretrain-tiny.ts)`);
  const before = o.run;
  const after = `${o.run}-after`;
  const scorer = `${o.run}-scorer`;
  const recorded = checkDemoSettings(o);
  if (o.force) for (const d of [before, after, scorer]) rmSync(d, { recursive: true, force: true });
  mkdirSync(before, { recursive: true });
  await writeJsonAtomic(recorded.path, recorded.settings);
  const ip = join(o.model, "ip-adapter.safetensors");
  const gen = (x: Partial<GenerateOptions>): GenerateOptions => ({ ...GENERATE_DEFAULTS, run: before, mode: "reference", model: "tinyworld", seed: o.seed, ...x });
  const personalized = (run: string, ipAdapter: string) =>
    generateImages(gen({ run, mode: "personalized", model: o.model, ipAdapter, imageEncoder: "mobilenet_v2", width: TINY, height: TINY, steps: o.steps, guidance: o.guidance, ipScale: 1, perReference: o.perReference, batch: 6 }));

  step(1, "synthesize-prompts --world tiny (catalogue subjects of the train split)");
  await synthesizePrompts({ ...PROMPT_DEFAULTS, run: before, subjects: o.subjects, scenesPerSubject: 2, seed: o.seed, world: "tiny", tinySplit: "train", force: false, log: () => {} });
  step(2, "generate-images --mode reference --model tinyworld (clean white-background references)");
  await generateImages(gen({ width: 224, height: 224 }));
  step(3, `generate-images --mode personalized --model ${o.model} (tiny SD + IP-Adapter-Plus, each reference's own prompt)`);
  const g = await personalized(before, ip);
  console.log(`    ${g.generated} images (${g.skipped} already there)`);
  const judgedBefore = await judge({ run: before });
  console.log(indent(formatSummary(judgedBefore)));

  step(4, `scorer check: renderer truth with planted defects, raw MobileNetV2 at ${LAYER}`);
  await synthesizePrompts({ ...PROMPT_DEFAULTS, run: scorer, subjects: o.subjects, scenesPerSubject: 2, seed: o.seed + 1, world: "tiny", tinySplit: "test", force: false, log: () => {} });
  await generateImages(gen({ run: scorer, width: 224, height: 224 }));
  await generateImages(gen({ run: scorer, mode: "personalized", width: TINY, height: TINY, perReference: 2, defectRate: 1 }));
  await scorePatches({ ...SCORE_DEFAULTS, run: scorer, encoder: RAW_ENCODER, featureLayer: LAYER, latentGrid: TINY / 4, force: true });
  const rawCheck = (await judge({ run: scorer })).patchAuc!;
  console.log(`    ROC AUC of low q_gen for the truly wrong patches: ${rawCheck.auc.toFixed(3)} (chance 0.500; ${rawCheck.wrong} of ${rawCheck.patches} subject patches wrong)`);

  step(5, `finetune-encoder (self-supervised patch InfoNCE) on tiny-world renders, blocks 12-13 under ${LAYER}`);
  // Renders at the generator's size, as the scorer will see generations: on white and in a flat scene.
  const sslDir = join(before, "ssl-images");
  await renderTinyWorld({ out: sslDir, splits: ["train"], size: TINY, scenes: 1, seed: o.seed });
  const encoder = join(before, "encoder-ssl");
  const ft = await finetuneEncoder({
    ...FINETUNE_DEFAULTS, cropScale: [0.5, 1], images: sslDir, out: encoder, featureLayer: LAYER, trainBlocks: 2, steps: o.sslSteps, lr: 3e-4, warmup: 5,
    holdout: 6, saveEvery: 0, resume: existsSync(join(encoder, "state.json")), force: false, seed: o.seed,
  });
  console.log(`    held-out patch-matching accuracy ${pct(ft.accuracyBefore)} -> ${pct(ft.accuracyAfter)} (chance ${pct(1 / 196)})`);

  step(6, "scorer check again, with the finetuned encoder");
  await scorePatches({ ...SCORE_DEFAULTS, run: scorer, encoder, latentGrid: TINY / 4, force: true });
  const sslCheck = (await judge({ run: scorer })).patchAuc!;
  // The encoder score-patches uses by default (checkpoints/patch-encoder: DreamBench photos + renders).
  await scorePatches({ ...SCORE_DEFAULTS, run: scorer, latentGrid: TINY / 4, force: true });
  const shippedCheck = (await judge({ run: scorer })).patchAuc!;
  console.log(`    ROC AUC ${rawCheck.auc.toFixed(3)} (raw) -> ${sslCheck.auc.toFixed(3)} (finetuned here); the shipped default encoder ${shippedCheck.auc.toFixed(3)}; chance 0.500`);

  step(7, "score-patches with the finetuned encoder (latent grid 16x16)");
  await scorePatches({ ...SCORE_DEFAULTS, run: before, encoder, latentGrid: TINY / 4 });

  step(8, `dpo-epoch --objective patch-dpo, ${o.dpoEpochs} epochs of 2 pairs per step`);
  let dpo = { out: ip, endStep: 0 };
  for (let epoch = 1; epoch <= o.dpoEpochs; epoch++) {
    const r = await dpoEpoch({
      ...DPO_DEFAULTS, run: before, model: o.model, ipAdapter: ip, imageEncoder: "mobilenet_v2", objective: "patch-dpo", size: TINY,
      // TinyBench's tuned patch-dpo setting (bench/tinybench-hparams.json).
      epoch, batch: 2, lr: 1e-5, beta: 500, saveEvery: 0, seed: o.seed, resume: true, force: false, // a rerun skips finished epochs
    });
    dpo = { out: r.out, endStep: r.endStep };
  }
  console.log(`    ${dpo.endStep} steps in all; trained IP-Adapter: ${dpo.out}`);

  step(9, "generate-images again with the trained IP-Adapter (same prompts and seeds)");
  mkdirSync(after, { recursive: true });
  for (const f of ["prompts.jsonl", "references.jsonl", "references"]) if (!existsSync(join(after, f))) cpSync(join(before, f), join(after, f), { recursive: true });
  await personalized(after, dpo.out);
  const judgedAfter = await judge({ run: after });

  step(10, "judge, eval (feature score against the references) and report");
  const ev = { ...EVAL_DEFAULTS, setting: "all-refs" as const, encoderFeature: "default" };
  await evaluate({ ...ev, run: before });
  await evaluate({ ...ev, run: after });
  const rep = await report({ run: after, compare: before, trainLogs: [join(before, "train"), encoder], title: "patchdpo demo: tiny world, before vs after PatchDPO" });
  const sb = (await Bun.file(join(before, "eval", "summary.json")).json()) as { metrics: Record<string, number> };
  const sa = (await Bun.file(join(after, "eval", "summary.json")).json()) as { metrics: Record<string, number> };
  // The feature score's baseline: the same generations against another subject's reference (each
  // subject's folder holds the next subject's reference), what a generator ignoring its image prompt gets.
  const shuffled = join(before, "eval-baseline-real");
  const refs = await readJsonlAll(runPaths(before).references, ReferenceRow);
  refs.forEach((r, i) => {
    mkdirSync(join(shuffled, r.subjectId), { recursive: true });
    cpSync(join(before, refs[(i + 1) % refs.length]!.image), join(shuffled, r.subjectId, "reference.png"));
  });
  await evaluate({ ...ev, run: before, real: shuffled, out: join(before, "eval-baseline") });
  const sx = (await Bun.file(join(before, "eval-baseline", "summary.json")).json()) as { metrics: Record<string, number> };

  const row = (k: string, b: JudgeSummary, a: JudgeSummary) => `    ${k.padEnd(10)} ${b.accuracy[k]!.toFixed(3)} -> ${a.accuracy[k]!.toFixed(3)}   (chance ${b.chance[k]!.toFixed(3)})`;
  console.log(`\njudge, before -> after ${o.dpoEpochs} short PatchDPO epochs (${judgedBefore.images} images; chance = the same images judged against random catalogue subjects and backgrounds):`);
  for (const k of ["identity", "pattern", "detail", "allDetails"]) console.log(row(k, judgedBefore, judgedAfter));
  console.log(`feature score vs the references: ${sb.metrics.feature?.toFixed(4)} -> ${sa.metrics.feature?.toFixed(4)}   (baseline ${sx.metrics.feature?.toFixed(4)}: the same images against another subject's reference)`);
  console.log(`scorer check (ROC AUC of low q_gen for wrong patches): raw ${rawCheck.auc.toFixed(3)}, finetuned here ${sslCheck.auc.toFixed(3)}, shipped default ${shippedCheck.auc.toFixed(3)}; chance 0.500`);
  console.log(`a demo this short shows the chain working, not the method's effect: that is TinyBench (make tinybench, bench/TINYBENCH.md)`);
  console.log(`report: ${rep.path}\nheatmaps: ${join(before, "heatmaps")}/`);
  const summary = {
    judge: { before: judgedBefore, after: judgedAfter },
    scorerCheck: { raw: rawCheck, finetuned: sslCheck, shipped: shippedCheck },
    sslAccuracy: { before: ft.accuracyBefore, after: ft.accuracyAfter },
    feature: { before: sb.metrics.feature, after: sa.metrics.feature, baseline: sx.metrics.feature },
    dpo: dpo.out,
    report: rep.path,
  };
  await writeJsonAtomic(join(before, "demo-summary.json"), summary);
  return summary;
}

const HELP = `demo: the whole PatchDPO chain on the embedded tiny world

  --run <dir>            (default data/runs/demo; also writes <dir>-after and <dir>-scorer)
  --model <dir>          the tiny world's generator (default ${DEFAULTS.model})
  --subjects <n>         (default ${DEFAULTS.subjects})
  --per-reference <k>    generations per reference (default ${DEFAULTS.perReference})
  --steps <n>            sampling steps (default ${DEFAULTS.steps})
  --guidance <g>         classifier-free guidance (default ${DEFAULTS.guidance})
  --ssl-steps <n>        encoder finetune steps (default ${DEFAULTS.sslSteps})
  --dpo-epochs <n>       PatchDPO epochs (default ${DEFAULTS.dpoEpochs})
  --seed <n>             (default ${DEFAULTS.seed})
  --force                start over`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      run: { type: "string", default: "data/runs/demo" }, model: { type: "string", default: DEFAULTS.model },
      subjects: { type: "string", default: String(DEFAULTS.subjects) }, "per-reference": { type: "string", default: String(DEFAULTS.perReference) },
      steps: { type: "string", default: String(DEFAULTS.steps) }, guidance: { type: "string", default: String(DEFAULTS.guidance) },
      "ssl-steps": { type: "string", default: String(DEFAULTS.sslSteps) }, "dpo-epochs": { type: "string", default: String(DEFAULTS.dpoEpochs) },
      seed: { type: "string", default: String(DEFAULTS.seed) }, force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    console.log("patchdpo demo: prompts -> references -> personalized generations -> scorer check -> encoder SSL -> patch scores -> PatchDPO epochs -> generations again -> judge, eval + report, all on the tiny world (CPU, no downloads).");
    await run({
      run: v.run!, model: v.model, subjects: Number(v.subjects), perReference: Number(v["per-reference"]), steps: Number(v.steps), guidance: Number(v.guidance),
      sslSteps: Number(v["ssl-steps"]), dpoEpochs: Number(v["dpo-epochs"]), seed: Number(v.seed), force: v.force,
    });
  });
}
