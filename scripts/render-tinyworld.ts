// Renders of tiny-world subjects as plain images, for the encoder's self-supervised finetune
// (finetune-encoder --images): each subject on white and in a few flat scenes, at the size the
// tiny generator draws (so the patch encoder trains on what it will score). Nothing here is a
// training pair; the renderer's truth is the image itself.
//
//   bun scripts/render-tinyworld.ts --out data/encoder-data/tinyworld --split train,val --size 64
//
// Writes <out>/<subject>-white.png and <out>/<subject>-<scene>.png. Deterministic in --seed;
// files already there are kept, so a rerun after an interruption finishes the folder.

import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { type } from "arktype";
import { parseFlags, resolveOptions } from "../lib/io/cli.ts";
import { runMain, UsageError } from "../lib/io/errors.ts";
import { writePng } from "../lib/io/images.ts";
import { stableHash } from "../lib/io/rundir.ts";
import { Rng } from "../lib/rng.ts";
import { FLAT_SCENES, SPLITS, type Split, subjectsOf } from "../lib/tinyworld/catalogue.ts";
import { renderReference, renderScene } from "../lib/tinyworld/render.ts";

export interface RenderOptions {
  out: string;
  /** Catalogue splits whose subjects are drawn (keep test and held-out subjects out of anything trained). */
  splits: Split[];
  size: number;
  /** Flat scenes per subject, drawn without replacement (0: on white only). */
  scenes: number;
  seed: number;
}

export const DEFAULTS = { splits: ["train", "val"], size: 64, scenes: 1, seed: 0 } as const satisfies Partial<RenderOptions>;

/** The options' schema: the CLI and run() check with it. */
export const OPTIONS = type({
  out: "string > 0", splits: type.enumerated(...SPLITS).array().atLeastLength(1), size: "16 <= number.integer <= 1024", scenes: "number.integer >= 0", seed: "number.integer >= 0",
});

/** Renders the folder; returns the image paths (existing files included), sorted by subject. */
export async function run(input: Pick<RenderOptions, "out"> & Partial<RenderOptions>): Promise<string[]> {
  const o = resolveOptions<RenderOptions>(OPTIONS, DEFAULTS, input);
  if (o.scenes > FLAT_SCENES.length) throw new UsageError(`--scenes ${o.scenes}: the tiny world has ${FLAT_SCENES.length} flat scenes`);
  mkdirSync(o.out, { recursive: true });
  const paths: string[] = [];
  const write = async (path: string, draw: () => Parameters<typeof writePng>[1]) => {
    if (!existsSync(path)) await writePng(path, draw());
    paths.push(path);
  };
  for (const split of o.splits) {
    for (const e of subjectsOf(split)) {
      await write(join(o.out, `${e.subject.id}-white.png`), () => renderReference(e.subject, o.size).image);
      // Each subject's scenes and placements depend on (seed, subject) only: adding splits changes no file.
      const rng = new Rng(stableHash(`${o.seed}:${e.subject.id}`));
      for (const scene of rng.shuffle([...FLAT_SCENES]).slice(0, o.scenes)) {
        const placement = new Rng(rng.nextU32());
        await write(join(o.out, `${e.subject.id}-${scene.name}.png`), () => renderScene(e.subject, scene, o.size, placement).image);
      }
    }
  }
  return paths;
}

const HELP = `render-tinyworld: tiny-world subjects on white and in flat scenes, as images for finetune-encoder --images

usage: bun scripts/render-tinyworld.ts --out <folder> [options]

  --out <folder>     where the PNGs go (kept on rerun)
  --split <s,...>    catalogue splits: ${SPLITS.join(", ")} (default: ${DEFAULTS.splits.join(",")})
  --size <px>        image side (default: ${DEFAULTS.size}, the tiny generator's size)
  --scenes <n>       flat scenes per subject besides white (default: ${DEFAULTS.scenes})
  --seed <n>         scene choice and placement (default: ${DEFAULTS.seed})
  -h, --help         this help`;

if (import.meta.main) {
  await runMain(async () => {
    const v = parseFlags({
      out: { type: "string" }, split: { type: "string", default: DEFAULTS.splits.join(",") }, size: { type: "string", default: String(DEFAULTS.size) },
      scenes: { type: "string", default: String(DEFAULTS.scenes) }, seed: { type: "string", default: String(DEFAULTS.seed) },
      help: { type: "boolean", short: "h", default: false },
    }, HELP);
    if (v.help) return console.log(HELP);
    if (!v.out) throw new UsageError(`--out is required\n\n${HELP}`);
    const paths = await run({ out: v.out, splits: v.split!.split(",") as Split[], size: Number(v.size), scenes: Number(v.scenes), seed: Number(v.seed) });
    console.log(`${paths.length} renders in ${v.out}`);
  });
}
