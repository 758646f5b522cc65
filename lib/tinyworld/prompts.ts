// prompts.jsonl rows of the tiny world (synthesize-prompts --world tiny): catalogue subjects, each
// with its reference prompt and up to four flat-scene prompts, so the renderer and the tiny
// generator can draw every prompt. Contract with later steps: a tiny row's `subjectId` is a
// catalogue id (`catalogueEntry(row.subjectId)` is the subject); `seed` is the row's own seed.

import type { PromptRow } from "../io/schemas.ts";
import { Rng } from "../rng.ts";
import { type Split, FLAT_SCENES, subjectsOf, tinyReferencePrompt, tinyScenePrompt } from "./catalogue.ts";
import { describeSubject } from "./subjects.ts";

export interface TinyPromptOptions {
  subjects: number;
  scenesPerSubject: number;
  seed: number;
  /** Which catalogue subjects to draw from (catalogue.ts SPLITS), or all. */
  split: Split | "all";
}

/** The first `subjects` of a seeded shuffle of the split (a shorter run's subjects are a longer one's first). */
export function synthesizeTiny(o: TinyPromptOptions): PromptRow[] {
  const pool = subjectsOf(o.split);
  if (o.subjects > pool.length) throw new RangeError(`the tiny world's ${o.split} split has ${pool.length} subjects, asked for ${o.subjects}`);
  if (o.scenesPerSubject > FLAT_SCENES.length) throw new RangeError(`the tiny world has ${FLAT_SCENES.length} scenes, asked for ${o.scenesPerSubject} per subject`);
  const master = new Rng(o.seed);
  const order = master.shuffle([...pool]);
  return order.slice(0, o.subjects).map((e) => {
    const seed = master.nextU32();
    const d = describeSubject(e.subject);
    const scenes = new Rng(seed).shuffle([...FLAT_SCENES]).slice(0, o.scenesPerSubject);
    return {
      subjectId: e.subject.id,
      classNoun: d.classNoun,
      attributes: d.attributes,
      referencePrompt: tinyReferencePrompt(d.text),
      scenePrompts: scenes.map((s) => tinyScenePrompt(d.text, s)),
      seed,
    };
  });
}
