// The tiny world's oracle judge over a run (DESIGN.md section 5): reads every generated image of
// a tiny-world run against the renderer's truth and reports what it got right, independent of the
// patch encoder and of the patch scores (lib/tinyworld/judge.ts). Nothing trains against it.
//
//   bun scripts/judge.ts --run data/runs/demo                     # judge.jsonl + judge-summary.json
//   bun scripts/judge.ts --run data/runs/demo --scores data/runs/demo-raw   # + AUC of those patch scores
//
// Per image: identity (class and body colour), pattern, detail (present, right colour, kind and
// place), scene, and all of the first three. Chance for each is measured, not assumed: the same
// images judged against subjects drawn uniformly from the catalogue (CHANCE_DRAWS per image,
// seeded by its id) and against every background (white and the flat scenes): what a generator
// that ignored its prompts and drew a random catalogue subject in a random scene would score.
//
// Patch scores (optional): how well low q_gen finds the patches that really are wrong. On the
// authors' pairs (a generation on white from its reference's own prompt) the truth is the reference
// rendered at the generation's size, pixel for pixel; a pixel is wrong when its colour is farther
// than WRONG_DISTANCE from the truth, a patch when at least WRONG_SHARE of its pixels are. Over the
// patches that show the subject in the truth or the image, the ROC AUC of 1 - q_gen against those
// labels (0.5 is chance). Scene generations have no pixel-aligned truth and are left out of it.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../lib/io/atomic.ts";
import { type } from "arktype";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError, UserError } from "../lib/io/errors.ts";
import { type RgbImage, loadImage } from "../lib/io/images.ts";
import { readJsonlAll, writeJsonl } from "../lib/io/manifest.ts";
import { existingRunDir, runPaths, stableHash } from "../lib/io/rundir.ts";
import { recordStep } from "../lib/io/runlog.ts";
import { openSafetensors } from "../lib/io/safetensors.ts";
import { GenerationRow, PatchScoreRow } from "../lib/io/schemas.ts";
import { Rng } from "../lib/rng.ts";
import { CATALOGUE, catalogueEntry, FLAT_SCENES, flatSceneForPrompt } from "../lib/tinyworld/catalogue.ts";
import { type Judgement, WHITE_SCENE, judgeAgainst, verdictOf } from "../lib/tinyworld/judge.ts";
import { renderReference } from "../lib/tinyworld/render.ts";

export interface JudgeOptions {
  run: string;
  /** A folder with patch-scores.jsonl for the run's generations (default: the run itself, when it has one). */
  scores?: string;
}

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({ run: "string > 0", "scores?": "string > 0" });

export const VERDICTS = ["identity", "pattern", "detail", "scene", "allDetails"] as const;
type Verdicts = Record<(typeof VERDICTS)[number], boolean>;

/** Catalogue subjects each image is judged against for the chance level. */
export const CHANCE_DRAWS = 8;

/** Colour distance (8-bit RGB) beyond which a generated pixel disagrees with the truth. */
export const WRONG_DISTANCE = 60;
/** Share of a patch's pixels that must disagree for the patch to be wrong. */
export const WRONG_SHARE = 0.15;

export interface JudgeSummary {
  images: number;
  /** Share of images with each verdict true. */
  accuracy: Record<string, number>;
  /** The same images judged against random catalogue subjects and backgrounds: what ignoring the prompts scores. */
  chance: Record<string, number>;
  /** Per catalogue split of the subjects judged. */
  bySplit: Record<string, { images: number; accuracy: Record<string, number> }>;
  /** ROC AUC of 1 - q_gen for truly wrong patches (clean-background generations), when scores were given. */
  patchAuc?: { auc: number; patches: number; wrong: number; images: number; encoder: string };
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

/** Share of rows with each verdict true (a row may hold fractions: the chance rows are averages). */
function accuracies(rows: Record<(typeof VERDICTS)[number], boolean | number>[]): Record<string, number> {
  return Object.fromEntries(VERDICTS.map((k) => [k, mean(rows.map((r) => Number(r[k])))]));
}

/** ROC AUC of `score` for `label` (ties count one half): the Mann-Whitney U over all pairs. */
export function rocAuc(score: number[], label: boolean[]): number {
  const order = score.map((s, i) => [s, i] as const).sort((a, b) => a[0] - b[0]);
  let rankSumPos = 0, pos = 0;
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j < order.length && order[j]![0] === order[i]![0]) j++;
    const rank = (i + j + 1) / 2; // average 1-based rank of the tie group
    for (let k = i; k < j; k++) if (label[order[k]![1]]) { rankSumPos += rank; pos++; }
    i = j;
  }
  const neg = order.length - pos;
  return pos && neg ? (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg) : NaN;
}

/** Per patch of an h x w grid: is it wrong (against the truth), and does it show the subject at all? */
export function wrongPatches(img: RgbImage, truth: { image: RgbImage; mask: Uint8Array }, h: number, w: number) {
  const S = img.width;
  const wrong = new Float32Array(h * w), subject = new Float32Array(h * w), count = new Float32Array(h * w);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const p = y * S + x, cell = Math.floor((y * h) / S) * w + Math.floor((x * w) / S);
      const d = Math.hypot(img.data[3 * p]! - truth.image.data[3 * p]!, img.data[3 * p + 1]! - truth.image.data[3 * p + 1]!, img.data[3 * p + 2]! - truth.image.data[3 * p + 2]!);
      const background = !truth.mask[p] && Math.min(img.data[3 * p]!, img.data[3 * p + 1]!, img.data[3 * p + 2]!) >= 235;
      count[cell]!++;
      if (d > WRONG_DISTANCE) wrong[cell]!++;
      if (!background) subject[cell]!++;
    }
  }
  return { wrong: Array.from(wrong, (v, i) => v / count[i]! >= WRONG_SHARE), onSubject: Array.from(subject, (v, i) => v / count[i]! >= 0.25) };
}

/** Expected verdicts of an image against a random catalogue subject and a random background. */
function chanceOf(judgement: Judgement, id: string): Record<(typeof VERDICTS)[number], number> {
  const rng = new Rng(stableHash(`chance:${id}`));
  const out = { identity: 0, pattern: 0, detail: 0, scene: 0, allDetails: 0 };
  for (let d = 0; d < CHANCE_DRAWS; d++) {
    const v = verdictOf(judgement, CATALOGUE[rng.int(CATALOGUE.length)]!.subject, null); // the image is read once
    for (const k of ["identity", "pattern", "detail", "allDetails"] as const) out[k] += Number(v[k]) / CHANCE_DRAWS;
  }
  out.scene = [WHITE_SCENE, ...FLAT_SCENES.map((s) => s.name)].filter((b) => b === judgement.scene).length / (FLAT_SCENES.length + 1);
  return out;
}

export async function run(input: JudgeOptions): Promise<JudgeSummary> {
  const o = resolveOptions<JudgeOptions>(OPTIONS, {}, input);
  const root = existingRunDir(o.run);
  return recordStep(root, "judge", o, () => judge(o));
}

async function judge(o: JudgeOptions): Promise<JudgeSummary> {
  const paths = runPaths(o.run);
  if (!existsSync(paths.generations)) throw new UserError(`${paths.generations} is missing: run generate-images --mode personalized first`);
  const gens = await readJsonlAll(paths.generations, GenerationRow);
  const subjects = gens.map((g, i) => {
    const e = catalogueEntry(g.subjectId);
    if (!e) throw new UserError(`${paths.generations}:${i + 1}: subject "${g.subjectId}" is not a tiny-world catalogue subject; the judge reads only tiny-world runs`);
    return e;
  });
  const rows: (Verdicts & { id: string; subjectId: string; split: string; expectedScene: string; judged: unknown })[] = [];
  const chanceRows: Record<(typeof VERDICTS)[number], number>[] = [];
  const images = new Map<string, RgbImage>();
  for (const [i, g] of gens.entries()) {
    const img = await loadImage(paths.resolve(g.image));
    images.set(g.id, img);
    const scene = flatSceneForPrompt(g.prompt);
    const v = judgeAgainst(img, subjects[i]!.subject, scene?.name ?? null);
    const { judgement, ...verdicts } = v;
    rows.push({ id: g.id, subjectId: g.subjectId, split: subjects[i]!.split, expectedScene: scene?.name ?? "white", ...verdicts, judged: judgement });
    chanceRows.push(chanceOf(judgement, g.id));
  }
  const bySplit: JudgeSummary["bySplit"] = {};
  for (const split of new Set(rows.map((r) => r.split))) {
    const mine = rows.filter((r) => r.split === split);
    bySplit[split] = { images: mine.length, accuracy: accuracies(mine) };
  }
  const summary: JudgeSummary = { images: rows.length, accuracy: accuracies(rows), chance: accuracies(chanceRows), bySplit };

  const scoresDir = o.scores ?? o.run;
  const scoresManifest = join(scoresDir, "patch-scores.jsonl");
  if (o.scores && !existsSync(scoresManifest)) throw new UserError(`--scores ${o.scores}: no patch-scores.jsonl there`);
  if (existsSync(scoresManifest)) {
    const byId = new Map(gens.map((g, i) => [g.id, i]));
    const score: number[] = [], label: boolean[] = [];
    let used = 0, encoder = "";
    for (const r of await readJsonlAll(scoresManifest, PatchScoreRow)) {
      const i = byId.get(r.id);
      if (i === undefined || flatSceneForPrompt(gens[i]!.prompt)) continue;
      const img = images.get(r.id)!;
      const f = openSafetensors(join(scoresDir, r.scores));
      const qGen = f.float32("q_gen");
      const [h, w] = f.info("q_gen").shape as [number, number];
      const truth = renderReference(subjects[i]!.subject, img.width);
      const { wrong, onSubject } = wrongPatches(img, truth, h, w);
      for (let k = 0; k < h * w; k++) {
        if (!onSubject[k]) continue;
        // A masked generated patch (NaN) shows near-white where the subject should be: count it as fully low quality.
        score.push(Number.isNaN(qGen[k]!) ? 1 : 1 - qGen[k]!);
        label.push(wrong[k]!);
      }
      used++;
      encoder = r.encoder;
    }
    if (used) summary.patchAuc = { auc: rocAuc(score, label), patches: score.length, wrong: label.filter(Boolean).length, images: used, encoder };
  }
  await writeJsonl(join(o.run, "judge.jsonl"), rows);
  await writeJsonAtomic(join(o.run, "judge-summary.json"), summary);
  return summary;
}

/** One line per verdict: accuracy beside its chance. */
export function formatSummary(s: JudgeSummary): string {
  const lines = VERDICTS.map((k) => `  ${k.padEnd(10)} ${s.accuracy[k]!.toFixed(3)}   (chance ${s.chance[k]!.toFixed(3)})`);
  if (s.patchAuc) lines.push(`  patch AUC  ${s.patchAuc.auc.toFixed(3)}   (chance 0.500; ${s.patchAuc.wrong}/${s.patchAuc.patches} subject patches wrong, ${s.patchAuc.images} images, ${s.patchAuc.encoder})`);
  return `judge over ${s.images} images:\n${lines.join("\n")}`;
}

const HELP = `judge: the tiny world's oracle judge over a run's generations (never uses the patch encoder)

usage: bun scripts/judge.ts --run <dir> [--scores <dir>]

  --run <dir>      a tiny-world run: generations.jsonl (catalogue subjects)
  --scores <dir>   a folder with patch-scores.jsonl for these generations (default: the run's own, if any):
                   adds the ROC AUC of 1 - q_gen for truly wrong patches

Writes <run>/judge.jsonl (one row per image) and <run>/judge-summary.json.`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({ run: { type: "string" }, scores: { type: "string" }, help: { type: "boolean", short: "h", default: false } }, HELP);
    if (v.help) return console.log(HELP);
    if (!v.run) throw new UsageError(`--run <dir> is required\n\n${HELP}`);
    const s = await run({ run: v.run, scores: v.scores });
    console.log(formatSummary(s));
  });
}

