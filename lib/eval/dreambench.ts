// DreamBench (Ruiz et al., the DreamBooth dataset): its prompt file, the protocol's facts, and the
// published numbers we compare against (DESIGN.md section 1, "Evaluation").
//
// prompts_and_classes.txt has a "Classes" section ("subject_name,class" then one "subject,class"
// line per subject) and two Python-list sections, "Object Prompts" and "Live Subject Prompts", whose
// items read `'a {0} {1} in the jungle'.format(unique_token, class_token)`. The PatchDPO authors'
// evaluation renders them without the unique token ("a backpack in the jungle") and names each
// generated image after its prompt (`<subject>/<prompt>.png`); CLIP-T scores that file stem.

import { readFileSync } from "node:fs";
import { UserError } from "../io/errors.ts";

export interface PromptFile {
  path: string;
  /** subject -> class noun ("bear_plushie" -> "stuffed animal"). */
  classes: Map<string, string>;
  objectPrompts: string[];
  livePrompts: string[];
}

/** Class nouns of DreamBench's live subjects (cats and dogs); every other subject is an object. */
export const LIVE_CLASSES: ReadonlySet<string> = new Set(["cat", "dog"]);

/** Reads prompts_and_classes.txt; a file without classes or prompts fails naming what is missing. */
export function readPromptFile(path: string): PromptFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UserError(`cannot read the prompt file ${path}: ${(e as Error).message}`);
  }
  const classes = new Map<string, string>();
  const objectPrompts: string[] = [];
  const livePrompts: string[] = [];
  let section: "none" | "classes" | "object" | "live" = "none";
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (/^classes$/i.test(line)) section = "classes";
    else if (/^object prompts$/i.test(line)) section = "object";
    else if (/^live subject prompts$/i.test(line)) section = "live";
    else if (section === "classes" && line && line !== "subject_name,class") {
      const m = /^([^,\s][^,]*),\s*(.+)$/.exec(line);
      if (m) classes.set(m[1]!.trim(), m[2]!.trim());
      else if (!/^prompts$/i.test(line)) throw new UserError(`${path}:${i + 1}: expected "subject,class" in the Classes section, got ${JSON.stringify(line)}`);
    } else if (section === "object" || section === "live") {
      const m = /^['"](.*)['"]\s*\.format\s*\(/.exec(line) ?? /^['"](.*\{[01]\}.*)['"],?$/.exec(line);
      if (m) (section === "object" ? objectPrompts : livePrompts).push(m[1]!);
    }
  });
  const missing = [classes.size === 0 && "a Classes section", objectPrompts.length === 0 && "Object Prompts", livePrompts.length === 0 && "Live Subject Prompts"].filter(Boolean);
  if (missing.length) throw new UserError(`${path} is not in DreamBench's prompts_and_classes.txt format: no ${missing.join(", no ")} found`);
  return { path, classes, objectPrompts, livePrompts };
}

/**
 * A template with its placeholders filled: `{1}` is the class noun, `{0}` the unique token. Without
 * a unique token "{0} {1}" becomes just the class noun (the PatchDPO authors' rendering).
 */
export function renderPrompt(template: string, classNoun: string, uniqueToken = ""): string {
  const t = uniqueToken ? template : template.replace(/\{0\}\s*/g, "");
  return t.replaceAll("{0}", uniqueToken).replaceAll("{1}", classNoun).replace(/\s+/g, " ").trim();
}

/** The template as a per-prompt key: placeholders become "{}" ("a {} in the jungle"). */
export function templateKey(template: string): string {
  return template.replace(/\{0\}\s*\{1\}|\{1\}|\{0\}/g, "{}").replace(/\s+/g, " ").trim();
}

export interface PromptMatch {
  /** The template the prompt was rendered from, as a key shared by all subjects. */
  key: string;
  live: boolean;
}

/**
 * The prompts a subject may carry, rendered -> template key. The subject's own list (live or object
 * by its class noun) comes first; the other list is accepted too, since "live" is read off the class
 * noun and a custom prompt file may class its subjects differently.
 */
export function subjectPrompts(file: PromptFile, subject: string, uniqueToken = ""): Map<string, PromptMatch> {
  const cls = file.classes.get(subject);
  if (cls === undefined) {
    throw new UserError(`subject "${subject}" is not in the Classes section of ${file.path} (it lists ${[...file.classes.keys()].slice(0, 8).join(", ")}${file.classes.size > 8 ? ", ..." : ""}); rename the subject folder or pass a prompt file that lists it`);
  }
  const live = LIVE_CLASSES.has(cls);
  const out = new Map<string, PromptMatch>();
  const add = (list: string[], isLive: boolean) => {
    for (const t of list) {
      const p = renderPrompt(t, cls, uniqueToken);
      if (!out.has(p)) out.set(p, { key: templateKey(t), live: isLive });
    }
  };
  add(live ? file.livePrompts : file.objectPrompts, live);
  add(live ? file.objectPrompts : file.livePrompts, !live);
  return out;
}

/** Published DreamBench numbers (DreamBench 30 subjects x 25 prompts), from the PatchDPO paper. */
export const PUBLISHED: Record<"all-refs" | "single-ref", { method: string; dino: number; clipI: number; clipT: number }[]> = {
  "all-refs": [
    { method: "PatchDPO (paper)", dino: 0.727, clipI: 0.838, clipT: 0.292 },
    { method: "IP-Adapter-Plus (paper)", dino: 0.692, clipI: 0.826, clipT: 0.281 },
  ],
  "single-ref": [{ method: "PatchDPO (paper, single reference)", dino: 0.831, clipI: 0.88, clipT: 0.288 }],
};

/**
 * The photo each subject is scored against in the authors' single-reference setting (the Kosmos-G
 * selection, listed in their release as subject -> photo file stem). `--ref-photo kosmosg` uses it.
 */
export const KOSMOSG_REF_PHOTO: Readonly<Record<string, string>> = {
  backpack: "02", backpack_dog: "02", bear_plushie: "03", berry_bowl: "02", can: "01", candle: "02", cat: "04", cat2: "02",
  clock: "03", colorful_sneaker: "01", dog: "02", dog2: "02", dog3: "05", dog5: "00", dog6: "02", dog7: "01", dog8: "04",
  duck_toy: "01", fancy_boot: "02", grey_sloth_plushie: "04", monster_toy: "04", pink_sunglasses: "04", poop_emoji: "00",
  rc_car: "03", red_cartoon: "00", robot_toy: "00", shiny_sneaker: "01", teapot: "04", vase: "02", wolf_plushie: "04",
};

/** Number of DreamBench subjects; the report says how many of them an evaluation covered. */
export const DREAMBENCH_SUBJECTS = 30;
