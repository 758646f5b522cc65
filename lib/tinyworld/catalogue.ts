// The tiny world as the generator and TinyBench see it: a fixed catalogue of subjects built
// compositionally (class x body colour x pattern x one detail) and a handful of flat scenes.
// A CPU-trained toy generator can learn a world this small, and the patch scorer can tell its
// subjects apart (bench/tinyworld-visibility.ts measures that), so the world is evidence: the
// renderer knows the truth of every image, and an oracle judge (judge.ts) reads it back.
//
// Every subject is large (the reference fills REFERENCE_EXTENT of the image), has one fixed
// shape per class, black pattern and accent parts, and exactly one detail (a star, heart or square
// logo in a colour of its own) at the centre of its main face: the small local thing a
// finetuning-free model gets wrong and PatchDPO is meant to fix.

import { Rng } from "../rng.ts";
import { rect } from "./raster.ts";
import { type Scene, scene, fill } from "./scenes.ts";
import {
  type ClassNoun,
  type ColorName,
  type Detail,
  type DetailKind,
  type PatternKind,
  type Subject,
  COLORS,
  colorDistance,
  describeSubject,
  subjectGeometry,
  withId,
} from "./subjects.ts";
import { rgb } from "./raster.ts";

export const CATALOGUE_CLASSES: readonly ClassNoun[] = ["teapot", "mug", "robot", "duck", "clock", "plushie"];
export const CATALOGUE_COLORS: readonly ColorName[] = ["red", "orange", "yellow", "green", "blue", "purple"];
export const CATALOGUE_PATTERNS: readonly PatternKind[] = ["plain", "stripes", "dots"];
export const CATALOGUE_DETAILS: readonly DetailKind[] = ["star", "heart", "square"];
/** Detail colours: each subject takes one far from its body colour and from black. */
export const DETAIL_COLORS: readonly ColorName[] = ["white", "yellow", "red", "blue", "pink", "green"];
/** Canonical radius of the detail: large enough to cover a few pixels at the generator's size. */
export const DETAIL_SIZE = 0.1;
/** Subjects per class in the catalogue. */
export const PER_CLASS = 8;

/** Where a catalogue subject's detail sits: the centre of its class's main face. */
export function detailCentre(classNoun: ClassNoun): [number, number] {
  const f = subjectGeometry({ classNoun, shape: SHAPE }).faces[0]!;
  return [Math.round(((f[0] + f[2]) / 2) * 1e4) / 1e4, Math.round(((f[1] + f[3]) / 2) * 1e4) / 1e4];
}

/** One silhouette per class: the middle of each class's shape range. */
const SHAPE = [0.5, 0.5, 0.5, 0.5];

/**
 * Which experiment a subject belongs to. The generator pretrains on train, val and test subjects
 * (its own task: reconstruct them and draw them in scenes); TinyBench trains PatchDPO on `train`
 * subjects, tunes on `val` and reports on `test` (prompts the DPO step never saw) and on `held-out`
 * (compositions the generator never saw either).
 */
export const SPLITS = ["train", "val", "test", "held-out"] as const;
export type Split = (typeof SPLITS)[number];

export interface CatalogueEntry {
  subject: Subject;
  /** Index in CATALOGUE. */
  index: number;
  split: Split;
  /** Held out of the generator's pretraining (a composition it never saw). */
  heldOut: boolean;
}

/** Subject k of a class: 0-3 train, 4 val, 5-6 test, 7 held out. */
const splitOf = (k: number): Split => (k < 4 ? "train" : k === 4 ? "val" : k < 7 ? "test" : "held-out");

export function catalogueSubject(classNoun: ClassNoun, body: ColorName, pattern: PatternKind, detail: DetailKind, detailColor: ColorName): Subject {
  const [x, y] = detailCentre(classNoun);
  const d: Detail = { kind: detail, color: detailColor, x, y, size: DETAIL_SIZE };
  return withId({ classNoun, shape: [...SHAPE], body, secondary: "black", pattern: { kind: pattern, period: 0.14, angle: 0 }, details: [d] });
}

/**
 * PER_CLASS subjects per class: each class gets every body colour at least once (a Latin-square
 * walk over colours), patterns and detail kinds in turn, detail colours drawn from a fixed seed.
 * The last subject of each class is held out of pretraining (see SPLITS).
 */
function buildCatalogue(): CatalogueEntry[] {
  const rng = new Rng(20261130);
  const out: CatalogueEntry[] = [];
  CATALOGUE_CLASSES.forEach((cls, c) => {
    for (let k = 0; k < PER_CLASS; k++) {
      const body = CATALOGUE_COLORS[(c + k) % CATALOGUE_COLORS.length]!;
      // Past six subjects a class repeats a colour: shift its pattern and detail so it is a new composition.
      const lap = Math.floor(k / CATALOGUE_COLORS.length);
      const pattern = CATALOGUE_PATTERNS[(k + c + lap) % CATALOGUE_PATTERNS.length]!;
      const detail = CATALOGUE_DETAILS[(k + 2 * c + 2 * lap) % CATALOGUE_DETAILS.length]!;
      const options = DETAIL_COLORS.filter((d) => colorDistance(d, body) >= 120);
      const detailColor = options[rng.int(options.length)]!;
      const split = splitOf(k);
      out.push({ subject: catalogueSubject(cls, body, pattern, detail, detailColor), index: out.length, split, heldOut: split === "held-out" });
    }
  });
  if (new Set(out.map((e) => e.subject.id)).size !== out.length) throw new Error("tiny world catalogue: two subjects share an id");
  return out;
}

export const CATALOGUE: readonly CatalogueEntry[] = buildCatalogue();

const BY_ID = new Map(CATALOGUE.map((e) => [e.subject.id, e]));

/** The catalogue entry with this subject id, or undefined. */
export function catalogueEntry(id: string): CatalogueEntry | undefined {
  return BY_ID.get(id);
}

/** Catalogue entries seen in pretraining (`heldOut` false) or held out (true). */
export function catalogueSplit(heldOut: boolean): CatalogueEntry[] {
  return CATALOGUE.filter((e) => e.heldOut === heldOut);
}

/** The entries of one split, or all of them. */
export function subjectsOf(split: Split | "all"): CatalogueEntry[] {
  return split === "all" ? [...CATALOGUE] : CATALOGUE.filter((e) => e.split === split);
}

// ---------------------------------------------------------------------------------------------
// Flat scenes: a sky (or wall) over a ground, two flat colours each, the subject large on the
// ground. Colours keep away from white (the reference background) and from the subject colours'
// saturated hues, so a judge can tell subject from scene by colour alone.

function flat(name: string, phrase: string, horizon: number, top: number, bottom: number): Scene {
  return scene(name, phrase, horizon, () => [fill(rect(0, 0, 1, horizon), top), fill(rect(0, horizon, 1, 1), bottom)], {
    shadow: false,
    placement: { minScale: 0.82, maxScale: 0.95, mirror: false },
  });
}

export const FLAT_SCENES: readonly Scene[] = [
  flat("beach", "on the beach", 0.5, rgb(140, 195, 235), rgb(222, 196, 150)),
  flat("grass", "on the grass", 0.5, rgb(170, 210, 235), rgb(110, 150, 95)),
  flat("night", "at night", 0.55, rgb(30, 35, 80), rgb(75, 75, 95)),
  flat("room", "in a room", 0.55, rgb(190, 175, 160), rgb(125, 95, 70)),
];

export const FLAT_SCENE_NAMES: readonly string[] = FLAT_SCENES.map((s) => s.name);

/** The flat scene a prompt mentions (by phrase), or null. */
export function flatSceneForPrompt(prompt: string): Scene | null {
  const p = prompt.toLowerCase();
  return FLAT_SCENES.find((s) => p.includes(s.phrase)) ?? null;
}

/** The reference prompt of a tiny-world subject (the text-to-image prompt of a clean reference). */
export const tinyReferencePrompt = (subjectText: string) => `a photo of ${subjectText}, isolated on a white background`;

/** "a red striped teapot with a white star logo on the beach". */
export const tinyScenePrompt = (subjectText: string, s: Scene) => `${subjectText} ${s.phrase}`;

/** Every prompt the tiny world's generator can be asked for (its tokenizer's corpus). */
export function tinyCorpus(): string[] {
  const out: string[] = [];
  for (const e of CATALOGUE) {
    const t = describeSubject(e.subject).text;
    out.push(tinyReferencePrompt(t), ...FLAT_SCENES.map((s) => tinyScenePrompt(t, s)));
  }
  return out;
}

/** Palette colour of a name, packed 0xRRGGBB (re-exported for the judge). */
export const colorOf = (c: ColorName) => COLORS[c];
