// arktype schemas of the run-directory manifests (DESIGN.md section 4). Each export is both the
// runtime schema (`PromptRow(value)` validates) and, under the same name, the row's TS type.
//
// To extend a row, add a key here; make it optional ("key?") when older run directories lack it.
// Undeclared keys are kept as they are (not rejected), so a newer writer's extra fields never break
// an older reader.

import { type } from "arktype";
import { ID_PATTERN } from "./rundir.ts";

/** A file-name-safe id: [A-Za-z0-9._-], 1..100 characters, no leading dot (see sanitizeId). */
export const Id = type(ID_PATTERN).describe("a safe id ([A-Za-z0-9._-], at most 100 characters, no leading dot)");

/** A path stored by our own steps: relative to the run directory, forward slashes, no "..". */
export const RunRelPath = type("string").narrow(
  (s, ctx) =>
    (s.length > 0 &&
      !s.startsWith("/") &&
      !s.includes("\\") &&
      !s.includes("\0") &&
      !/^[A-Za-z]:/.test(s) &&
      !s.split("/").includes("..")) ||
    ctx.mustBe("a relative path inside the run directory (forward slashes, no '..')"),
);

/** An image path given by a person (pairs files): relative to the file that names it, or absolute. */
export const ImagePath = type("string > 0");

export const Seed = type("number.integer >= 0");

/** Generation settings recorded with every image. Known keys are checked; others are kept. */
export const GenerationSettings = type({
  "model?": "string",
  "sampler?": "string",
  "steps?": "number.integer > 0",
  "guidanceScale?": "number >= 0",
  "ipAdapterScale?": "number",
  "width?": "number.integer > 0",
  "height?": "number.integer > 0",
  "negativePrompt?": "string",
  "device?": "string",
  "[string]": "unknown",
});
export type GenerationSettings = typeof GenerationSettings.infer;

/** prompts.jsonl: one subject with its reference prompt and scene prompts. */
export const PromptRow = type({
  subjectId: Id,
  classNoun: "string > 0",
  attributes: "string[]",
  /** e.g. "a photo of a red ceramic teapot, isolated on a white background" */
  referencePrompt: "string > 0",
  scenePrompts: "string[]",
  seed: Seed,
});
export type PromptRow = typeof PromptRow.infer;

/** references.jsonl: a clean-background reference image of a subject (references/<id>.png). */
export const ReferenceRow = type({
  id: Id,
  subjectId: Id,
  prompt: "string > 0",
  image: RunRelPath,
  seed: Seed,
  settings: GenerationSettings,
});
export type ReferenceRow = typeof ReferenceRow.infer;

/** generations.jsonl: the k-th personalized generation of a reference (generations/<id>-<k>.png). */
export const GenerationRow = type({
  id: Id,
  referenceId: Id,
  subjectId: Id,
  prompt: "string > 0",
  image: RunRelPath,
  seed: Seed,
  k: "number.integer >= 0",
  settings: GenerationSettings,
});
export type GenerationRow = typeof GenerationRow.infer;

/**
 * patch-scores.jsonl: patch quality of one (reference, generated) pair. Means are over the
 * unmasked patches of the normalized [0,1] maps; lowShare is the share of generated patches below
 * the low-quality threshold. `scores` holds q_gen, q_ref and the latent-grid maps.
 */
export const PatchScoreRow = type({
  id: Id,
  "referenceId?": Id,
  /** Reference image: run-relative, or as given in a --pairs file. */
  reference: ImagePath,
  generated: ImagePath,
  qGenMean: "0 <= number <= 1",
  qRefMean: "0 <= number <= 1",
  lowShare: "0 <= number <= 1",
  /** patch-scores/<id>.safetensors */
  scores: RunRelPath,
  /** heatmaps/<id>.png */
  heatmap: RunRelPath,
  /** The encoder that produced the patch features (model folder name or path). */
  encoder: "string > 0",
});
export type PatchScoreRow = typeof PatchScoreRow.infer;

/** A row of a `--pairs` file: score or train on pairs a person lists by hand. */
export const PairRow = type({
  id: Id,
  reference: ImagePath,
  generated: ImagePath,
});
export type PairRow = typeof PairRow.infer;

/** train/train-log.jsonl: one row per logged step; any further numeric columns are allowed. */
export const TrainLogRow = type({
  step: "number.integer >= 0",
  loss: "number",
  lr: "number >= 0",
  "[string]": "number",
});
export type TrainLogRow = typeof TrainLogRow.infer;
