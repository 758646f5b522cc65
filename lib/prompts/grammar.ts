// Prompt synthesis for PatchDPO's data construction (DESIGN.md section 1 item 1): many subjects,
// each with one clean-background reference prompt (for the text-to-image model) and K scene
// prompts (for the personalized model), as prompts.jsonl rows.
//
// The open world (the tiny world's rows are lib/tinyworld/prompts.ts; the script picks the world):
// - a template grammar modelled on DreamBench. A subject is a class noun (74 objects, toys
//   and animals, covering DreamBench's and the tiny world's classes) plus attributes: colour,
//   material, an optional pattern and always one small detail (a logo, a part in a second colour,
//   a collar): the local details finetuning-free models get wrong and patch scores look at.
//   Scene prompts come from DreamBench's context templates ("a {0} in the jungle"), its live-subject
//   outfits for animals ("a {0} wearing a santa hat"), extra contexts in the same style, and the
//   identity-keeping property prompts ("a shiny {0}", "a wet {0}"). DreamBench's recolour and
//   reshape prompts ("a red {0}", "a cube shaped {0}") are left out on purpose: they ask for a subject
//   that no longer matches its reference, so every patch would score as a failure.
//
// Determinism: a master Rng(seed) draws one 32-bit seed per subject; the subject and its scene
// choice come from generators seeded by that number only. So the same flags give the same bytes,
// the first n subjects of a longer run are the n subjects of a shorter one, and a row can be
// regenerated from its own `seed`.

import type { PromptRow } from "../io/schemas.ts";
import { UsageError, UserError } from "../io/errors.ts";
import { sanitizeId } from "../io/rundir.ts";
import { Rng } from "../rng.ts";

/** Bump when word lists or templates change: run.json records it, so a rerun notices. */
export const GRAMMAR_VERSION = "open-1/tiny-2";


// ---------------------------------------------------------------------------------------------
// Reference prompts.

/**
 * The clean-background reference prompt. Text-to-image models know the stock "product photo on
 * white" phrasing best; the references must show the subject alone so the patch comparison is on
 * the object, not on clutter.
 */
export function referencePrompt(subjectText: string, live = false): string {
  return `${live ? "a photo" : "a product photo"} of ${subjectText}, isolated on a white background, studio lighting, plain white background`;
}

// ---------------------------------------------------------------------------------------------
// Word lists.

export type NounKind = "object" | "toy" | "animal";

const MATERIALS = {
  ceramic: ["ceramic", "porcelain", "stoneware", "enamel", "glazed"],
  glass: ["glass", "frosted glass", "crystal", "ceramic"],
  metal: ["metal", "brass", "copper", "stainless steel", "chrome", "aluminium"],
  fabric: ["canvas", "leather", "denim", "nylon", "corduroy", "suede", "wool"],
  plush: ["plush", "velvet", "felt", "knitted", "fleece"],
  toy: ["plastic", "rubber", "wooden", "tin", "vinyl"],
  wood: ["wooden", "bamboo", "oak", "walnut", "painted wooden"],
  shoe: ["leather", "suede", "canvas", "knit", "patent leather", "mesh"],
  wax: ["wax", "beeswax", "scented wax"],
  plastic: ["plastic", "metal", "matte plastic", "glossy plastic"],
  paper: ["hardcover", "leather-bound", "cloth-bound", "paperback"],
  woven: ["wicker", "rattan", "straw", "woven"],
} as const satisfies Record<string, readonly string[]>;
type MaterialGroup = keyof typeof MATERIALS;

export const COLOURS = [
  "red", "orange", "yellow", "green", "teal", "blue", "navy blue", "purple", "pink", "brown",
  "black", "white", "grey", "beige", "mint green", "turquoise", "maroon", "mustard yellow", "lavender", "cream",
] as const;
/** Detail and pattern colours: the body colours plus metallics. */
const ACCENTS = [...COLOURS, "gold", "silver"] as const;
const FUR = ["black", "white", "brown", "golden", "grey", "ginger", "cream", "tan", "chocolate brown", "black and white", "fawn"] as const;
const MARKING_COLOURS = ["white", "black", "brown", "cream", "grey"] as const;

const MOTIFS = [
  "star", "heart", "moon", "lightning bolt", "flower", "paw print", "anchor", "leaf", "crown", "smiley face",
  "sun", "snowflake", "diamond", "arrow", "music note", "cherry", "butterfly",
] as const;
const HARD_CARRIERS = ["logo", "sticker", "emblem", "decal", "print"] as const;
const SOFT_CARRIERS = ["patch", "logo", "embroidery", "print"] as const;

/** Pattern phrases after "with"; {c} is the pattern colour. */
const PATTERNS = [
  "{c} stripes", "{c} polka dots", "a {c} checkered pattern", "a {c} floral pattern", "a {c} zigzag pattern",
  "a {c} plaid pattern", "a {c} star pattern", "a {c} geometric pattern", "a {c} wave pattern",
] as const;
const MARKINGS = ["{c} paws", "a {c} patch on its chest", "a {c} spot around one eye", "a {c} tip on its tail"] as const;
const ANIMAL_ACCESSORIES = ["a {c} collar", "a {c} bandana", "a {c} bow", "a {c} harness", "a {c} name tag"] as const;
const SMALL_ANIMAL_ACCESSORIES = ["a {c} ribbon", "a {c} bow"] as const;
const PLUSH_DETAILS = ["{c} button eyes", "a {c} bow tie", "a stitched {c} heart on its chest", "a {c} nose"] as const;

export interface NounEntry {
  noun: string;
  kind: NounKind;
  /** Material group (objects and toys). */
  materials?: MaterialGroup;
  /** Parts that can carry the detail colour: "a {c} lid". */
  parts?: readonly string[];
  /** Body colours (default COLOURS). */
  colours?: readonly string[];
  /** Coat adjectives (animals). */
  coats?: readonly string[];
  /** Detail phrases replacing the defaults for the kind. */
  details?: readonly string[];
  /** Whether fur markings apply (mammals). */
  markings?: boolean;
}

const o = (noun: string, materials: MaterialGroup, parts: readonly string[] = []): NounEntry => ({ noun, kind: "object", materials, parts });
const toy = (noun: string, materials: MaterialGroup, parts: readonly string[] = [], details?: readonly string[]): NounEntry =>
  details ? { noun, kind: "toy", materials, parts, details } : { noun, kind: "toy", materials, parts };
const DOG_COATS = ["fluffy", "short-haired", "long-haired", "curly-haired", "wiry-haired"];
const CAT_COATS = ["fluffy", "short-haired", "long-haired", "tabby"];

/** Class nouns of the open world: DreamBench's classes, the tiny world's ten, and more. */
export const NOUNS: readonly NounEntry[] = [
  // Kitchen and tableware.
  o("teapot", "ceramic", ["a {c} lid", "a {c} handle", "a {c} spout"]),
  o("mug", "ceramic", ["a {c} handle", "a {c} rim"]),
  o("cup", "ceramic", ["a {c} handle", "a {c} saucer"]),
  o("vase", "glass", ["a {c} rim", "a {c} neck"]),
  o("bowl", "ceramic", ["a {c} rim"]),
  o("plate", "ceramic", ["a {c} rim"]),
  o("jar", "glass", ["a {c} lid"]),
  o("kettle", "metal", ["a {c} handle", "a {c} lid"]),
  o("pitcher", "glass", ["a {c} handle"]),
  o("can", "metal", ["a {c} lid"]),
  o("water bottle", "metal", ["a {c} cap"]),
  o("thermos", "metal", ["a {c} lid"]),
  o("lunch box", "plastic", ["a {c} latch", "a {c} handle"]),
  o("toaster", "metal", ["a {c} lever"]),
  o("watering can", "metal", ["a {c} spout", "a {c} handle"]),
  o("flower pot", "ceramic", ["a {c} rim"]),
  // Home.
  o("candle", "wax"),
  o("clock", "wood", ["{c} hands", "a {c} frame"]),
  o("alarm clock", "metal", ["{c} bells", "{c} hands"]),
  o("lamp", "ceramic", ["a {c} lampshade"]),
  o("lantern", "metal", ["a {c} handle"]),
  o("radio", "plastic", ["a {c} dial", "a {c} antenna"]),
  o("camera", "plastic", ["a {c} lens", "a {c} strap"]),
  o("headset", "plastic", ["{c} ear cushions"]),
  o("music box", "wood", ["a {c} crank"]),
  o("snow globe", "glass", ["a {c} base"]),
  o("perfume bottle", "glass", ["a {c} cap"]),
  o("watch", "metal", ["a {c} strap", "a {c} dial"]),
  o("jewelry box", "wood", ["a {c} clasp"]),
  o("piggy bank", "ceramic", ["a {c} snout"]),
  o("basket", "woven", ["a {c} handle"]),
  o("birdhouse", "wood", ["a {c} roof"]),
  o("trophy", "metal", ["a {c} base"]),
  o("pillow", "fabric", ["{c} tassels"]),
  o("chair", "wood", ["a {c} cushion", "{c} legs"]),
  o("book", "paper", ["a {c} bookmark ribbon", "a {c} spine"]),
  o("notebook", "paper", ["a {c} elastic band"]),
  // Bags, clothes, gear.
  o("backpack", "fabric", ["a {c} zipper", "{c} straps", "a {c} front pocket"]),
  o("handbag", "fabric", ["a {c} strap", "a {c} clasp"]),
  o("suitcase", "plastic", ["a {c} handle", "{c} wheels"]),
  o("wallet", "fabric", ["a {c} zipper"]),
  o("hat", "fabric", ["a {c} band"]),
  o("umbrella", "fabric", ["a {c} handle"]),
  o("sneaker", "shoe", ["{c} laces", "a {c} sole"]),
  o("boot", "shoe", ["{c} laces", "a {c} sole", "a {c} buckle"]),
  o("slipper", "plush", ["a {c} pom-pom"]),
  o("guitar", "wood", ["a {c} pickguard"]),
  o("ukulele", "wood", ["a {c} headstock"]),
  o("skateboard", "wood", ["{c} wheels"]),
  o("helmet", "plastic", ["a {c} visor", "a {c} chin strap"]),
  // Toys (DreamBench's "toy" and "stuffed animal" classes; the tiny world's robot, duck, plushie).
  toy("robot", "toy", ["a {c} antenna", "{c} arms"]),
  toy("duck", "toy", ["a {c} beak"]),
  toy("toy car", "toy", ["{c} wheels"]),
  toy("toy train", "toy", ["{c} wheels", "a {c} chimney"]),
  toy("action figure", "toy", ["a {c} cape"]),
  toy("monster toy", "toy", ["{c} horns"]),
  toy("ball", "toy"),
  toy("kite", "fabric", ["a {c} tail"]),
  toy("figurine", "ceramic", ["a {c} base"]),
  toy("plushie", "plush", [], PLUSH_DETAILS),
  toy("stuffed animal", "plush", [], PLUSH_DETAILS),
  toy("teddy bear", "plush", [], PLUSH_DETAILS),
  toy("doll", "fabric", [], ["a {c} dress", "{c} shoes", "a {c} hair ribbon"]),
  // Animals (DreamBench's live subjects).
  { noun: "dog", kind: "animal", colours: FUR, coats: DOG_COATS, markings: true },
  { noun: "puppy", kind: "animal", colours: FUR, coats: DOG_COATS, markings: true },
  { noun: "cat", kind: "animal", colours: FUR, coats: CAT_COATS, markings: true },
  { noun: "kitten", kind: "animal", colours: FUR, coats: CAT_COATS, markings: true },
  { noun: "rabbit", kind: "animal", colours: ["white", "brown", "grey", "black", "cream", "black and white"], coats: ["fluffy", "lop-eared"], markings: true },
  { noun: "hamster", kind: "animal", colours: ["golden", "white", "grey", "cream", "brown"], coats: ["fluffy"], markings: true, details: SMALL_ANIMAL_ACCESSORIES },
  { noun: "guinea pig", kind: "animal", colours: ["brown", "white", "black", "ginger", "cream"], coats: ["fluffy", "long-haired"], markings: true, details: SMALL_ANIMAL_ACCESSORIES },
  { noun: "ferret", kind: "animal", colours: ["brown", "cream", "white", "grey"], markings: true, details: ANIMAL_ACCESSORIES },
  { noun: "hedgehog", kind: "animal", colours: ["brown", "grey", "white", "cream"], details: SMALL_ANIMAL_ACCESSORIES },
  { noun: "parrot", kind: "animal", colours: ["green", "blue", "red", "yellow", "grey", "blue and yellow", "green and red"], details: ["a {c} leg band", "a {c} ribbon"] },
  { noun: "tortoise", kind: "animal", colours: ["brown", "olive green", "dark green"], details: ["a {c} sticker on its shell", "a {c} ribbon"] },
];

// ---------------------------------------------------------------------------------------------
// Templates. "{0}" is the subject's noun phrase; the article before it is fixed up ("an orange").

/** DreamBench's twenty object contexts, verbatim. */
export const DREAMBENCH_OBJECT_CONTEXTS = [
  "a {0} in the jungle", "a {0} in the snow", "a {0} on the beach", "a {0} on a cobblestone street",
  "a {0} on top of pink fabric", "a {0} on top of a wooden floor", "a {0} with a city in the background",
  "a {0} with a mountain in the background", "a {0} with a blue house in the background",
  "a {0} on top of a purple rug in a forest", "a {0} with a wheat field in the background",
  "a {0} with a tree and autumn leaves in the background", "a {0} with the Eiffel Tower in the background",
  "a {0} floating on top of water", "a {0} floating in an ocean of milk",
  "a {0} on top of green grass with sunflowers around it", "a {0} on top of a mirror",
  "a {0} on top of the sidewalk in a crowded street", "a {0} on top of a dirt road", "a {0} on top of a white rug",
] as const;

/** DreamBench's live-subject list: its first ten contexts plus ten outfits. */
export const DREAMBENCH_LIVE_CONTEXTS = [
  ...DREAMBENCH_OBJECT_CONTEXTS.slice(0, 10),
  "a {0} wearing a red hat", "a {0} wearing a santa hat", "a {0} wearing a rainbow scarf",
  "a {0} wearing a black top hat and a monocle", "a {0} in a chef outfit", "a {0} in a firefighter outfit",
  "a {0} in a police outfit", "a {0} wearing pink glasses", "a {0} wearing a yellow shirt", "a {0} in a purple wizard outfit",
] as const;

/** DreamBench's property prompts that keep the subject's identity. */
export const PROPERTY_TEMPLATES = ["a shiny {0}", "a wet {0}"] as const;

/** More contexts in DreamBench's style, for any subject. */
const EXTRA_CONTEXTS = [
  "a {0} in the desert", "a {0} on a rocky shore at sunset", "a {0} under a cherry blossom tree",
  "a {0} in a flower garden", "a {0} on a picnic blanket in a park", "a {0} in a bamboo forest",
  "a {0} on a snowy mountain top", "a {0} in a field of lavender", "a {0} on a stone bench in a park",
  "a {0} in front of a brick wall", "a {0} next to a fireplace", "a {0} in a library",
  "a {0} with the Golden Gate Bridge in the background", "a {0} with Mount Fuji in the background",
  "a {0} with the northern lights in the background", "a {0} with a sunset in the background",
  "a {0} on a wooden dock by a lake", "a {0} at a campsite next to a tent",
] as const;

/** Contexts where objects sit (tables, shelves). */
const OBJECT_EXTRAS = [
  "a {0} on a kitchen counter", "a {0} on a wooden desk next to a laptop", "a {0} on a bookshelf",
  "a {0} on a windowsill with rain outside", "a {0} on a marble countertop", "a {0} on a table in a cafe",
  "a {0} on a bed with white sheets", "a {0} on a shelf in a grocery store",
] as const;

/** Contexts for animals. */
const LIVE_EXTRAS = [
  "a {0} sitting on a couch", "a {0} lying on a rug in a living room", "a {0} in a basket of autumn leaves",
  "a {0} on a garden path", "a {0} in a field of tall grass", "a {0} wearing a knitted sweater",
  "a {0} wearing a bow tie",
] as const;

const OBJECT_POOL: readonly string[] = [...DREAMBENCH_OBJECT_CONTEXTS, ...PROPERTY_TEMPLATES, ...EXTRA_CONTEXTS, ...OBJECT_EXTRAS];
const LIVE_POOL: readonly string[] = [...DREAMBENCH_LIVE_CONTEXTS, ...PROPERTY_TEMPLATES, ...EXTRA_CONTEXTS, ...LIVE_EXTRAS];

/** The scene templates a subject of this kind draws from. */
export function templatesFor(kind: NounKind): readonly string[] {
  return kind === "animal" ? LIVE_POOL : OBJECT_POOL;
}

/** The largest --scenes-per-subject the open world can serve without repeating a scene within a subject. */
export function maxScenesPerSubject(): number {
  return Math.min(OBJECT_POOL.length, LIVE_POOL.length);
}

// ---------------------------------------------------------------------------------------------
// Subjects of the open world.

export function article(word: string): "a" | "an" {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}

/** "a {0}" with the right article, other "{0}" plain. */
export function fillTemplate(template: string, phrase: string): string {
  return template.replace(/\ba \{0\}/g, `${article(phrase)} ${phrase}`).replaceAll("{0}", phrase);
}

/** "a {c} lid" with c = "orange" -> "an orange lid". */
function colourIn(template: string, colour: string): string {
  return template.replace(/\ba \{c\}/g, `${article(colour)} ${colour}`).replaceAll("{c}", colour);
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)]!;
}

function pickOther<T>(rng: Rng, xs: readonly T[], avoid: T): T {
  const rest = xs.filter((x) => x !== avoid);
  return pick(rng, rest.length > 0 ? rest : xs);
}

export interface OpenSubject {
  classNoun: string;
  kind: NounKind;
  /** Adjectives, then "with ..." phrases: ["red", "ceramic", "with white polka dots", "with a gold star logo"]. */
  attributes: string[];
  /** Noun phrase without the article: "red ceramic teapot with white polka dots and a gold star logo". */
  phrase: string;
  /** With the article: "a red ceramic teapot ...". */
  text: string;
}

/** One random subject of the open world; every choice comes from `rng`. */
export function randomOpenSubject(rng: Rng): OpenSubject {
  const e = pick(rng, NOUNS);
  const adjectives: string[] = [];
  const withs: string[] = [];
  if (e.kind === "animal") {
    if (e.coats && rng.uniform() < 0.6) adjectives.push(pick(rng, e.coats));
    const fur = pick(rng, e.colours ?? FUR);
    adjectives.push(fur);
    if (e.markings && rng.uniform() < 0.4) withs.push(colourIn(pick(rng, MARKINGS), pickOther(rng, MARKING_COLOURS, fur)));
    withs.push(colourIn(pick(rng, e.details ?? ANIMAL_ACCESSORIES), pick(rng, COLOURS)));
  } else {
    const body = pick(rng, e.colours ?? COLOURS);
    adjectives.push(body);
    if (e.materials) adjectives.push(pick(rng, MATERIALS[e.materials]));
    if (rng.uniform() < 0.5) withs.push(colourIn(pick(rng, PATTERNS), pickOther(rng, ACCENTS, body)));
    // The small detail: a motif on a carrier (logo, sticker, patch), a coloured part, or a kind-specific one.
    const accent = pickOther(rng, ACCENTS, body);
    const soft = e.materials === "fabric" || e.materials === "plush";
    const options: string[] = [];
    for (const m of MOTIFS) for (const c of soft ? SOFT_CARRIERS : HARD_CARRIERS) options.push(`a {c} ${m} ${c}`);
    const special = [...(e.parts ?? []), ...(e.details ?? [])];
    // Half the time a part or a kind-specific detail when the noun has one, else a motif.
    const tpl = special.length > 0 && rng.uniform() < 0.5 ? pick(rng, special) : pick(rng, options);
    withs.push(colourIn(tpl, accent));
  }
  const attributes = [...adjectives, ...withs.map((w) => `with ${w}`)];
  let phrase = `${adjectives.join(" ")} ${e.noun}`;
  if (withs.length > 0) phrase += ` with ${withs.join(" and ")}`;
  return { classNoun: e.noun, kind: e.kind, attributes, phrase, text: `${article(phrase)} ${phrase}` };
}

/** K distinct scene templates for one subject (the first k of a shuffle: prefix-stable in k). */
function chooseDistinct<T>(rng: Rng, pool: readonly T[], k: number): T[] {
  return rng.shuffle([...pool]).slice(0, k);
}

/** 8 hex digits of FNV-1a over the UTF-16 code units: short, stable content hashes for ids. */
export function hash8(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}

/**
 * A file-name-safe subject id: the sanitized class noun (lower case, at most 40 characters) and a
 * hash of the subject's text. Never the raw text: the text may come from an LLM.
 */
export function subjectIdFor(classNoun: string, text: string): string {
  let base: string;
  try {
    base = sanitizeId(classNoun.toLowerCase()).slice(0, 40).replace(/^[._-]+|[._-]+$/g, "");
  } catch {
    base = "";
  }
  return `${base || "subject"}-${hash8(text)}`;
}

/** Makes `id` unique among `taken` by appending -2, -3, ... (a hash collision is rare, not impossible). */
export function uniqueId(id: string, taken: ReadonlySet<string>): string {
  if (!taken.has(id)) return id;
  for (let n = 2; ; n++) if (!taken.has(`${id}-${n}`)) return `${id}-${n}`;
}

// ---------------------------------------------------------------------------------------------
// Whole data sets.

export interface SynthesisOptions {
  subjects: number;
  scenesPerSubject: number;
  seed: number;
}

function checkCounts(o: SynthesisOptions): void {
  if (!Number.isSafeInteger(o.subjects) || o.subjects < 1) throw new UsageError(`--subjects ${o.subjects}: expected a positive integer`);
  const max = maxScenesPerSubject();
  if (!Number.isSafeInteger(o.scenesPerSubject) || o.scenesPerSubject < 0 || o.scenesPerSubject > max) {
    throw new UsageError(
      `--scenes-per-subject ${o.scenesPerSubject}: expected an integer from 0 to ${max} (the open world has ${max} distinct scenes for every subject; prompts within a subject never repeat)`,
    );
  }
  if (!Number.isSafeInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw new UsageError(`--seed ${o.seed}: expected an integer from 0 to 4294967295`);
}

/** Redraws allowed before the grammar counts as exhausted (duplicates are redrawn). */
const maxDraws = (n: number) => 50 * n + 1000;

/** Seed of a subject's scene generator, distinct from its subject generator's. */
const sceneSeed = (subjectSeed: number) => (subjectSeed ^ 0x5bd1e995) >>> 0;

/** prompts.jsonl rows of the open grammar. Deterministic in the options; no duplicate subjects. */
export function synthesizeOpen(o: SynthesisOptions): PromptRow[] {
  checkCounts(o);
  const master = new Rng(o.seed);
  const rows: PromptRow[] = [];
  const texts = new Set<string>();
  const ids = new Set<string>();
  for (let draws = 0; rows.length < o.subjects; draws++) {
    if (draws >= maxDraws(o.subjects)) throw new UserError(`the open grammar ran out of distinct subjects after ${rows.length} (asked for ${o.subjects})`);
    const seed = master.nextU32();
    const s = randomOpenSubject(new Rng(seed));
    if (texts.has(s.text)) continue;
    texts.add(s.text);
    const templates = chooseDistinct(new Rng(sceneSeed(seed)), templatesFor(s.kind), o.scenesPerSubject);
    const id = uniqueId(subjectIdFor(s.classNoun, s.text), ids);
    ids.add(id);
    rows.push({
      subjectId: id,
      classNoun: s.classNoun,
      attributes: s.attributes,
      referencePrompt: referencePrompt(s.text, s.kind === "animal"),
      scenePrompts: templates.map((t) => fillTemplate(t, s.phrase)),
      seed,
    });
  }
  return rows;
}
