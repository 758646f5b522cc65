import { describe, expect, test } from "bun:test";
import { Rng } from "../../lib/rng.ts";
import { renderScene } from "../../lib/tinyworld/render.ts";
import { SCENES, SCENE_NAMES, getScene, sceneForPrompt, scenePrompt } from "../../lib/tinyworld/scenes.ts";
import { subjectFromSeed } from "../../lib/tinyworld/subjects.ts";

// The twenty object contexts of DreamBench's prompt list (dreambooth dataset/prompts_and_classes.txt).
const DREAMBENCH_CONTEXTS = [
  "in the jungle",
  "in the snow",
  "on the beach",
  "on a cobblestone street",
  "on top of pink fabric",
  "on top of a wooden floor",
  "with a city in the background",
  "with a mountain in the background",
  "with a blue house in the background",
  "on top of a purple rug in a forest",
  "with a wheat field in the background",
  "with a tree and autumn leaves in the background",
  "with the Eiffel Tower in the background",
  "floating on top of water",
  "floating in an ocean of milk",
  "on top of green grass with sunflowers around it",
  "on top of a mirror",
  "on top of the sidewalk in a crowded street",
  "on top of a dirt road",
  "on top of a white rug",
];

describe("scenes", () => {
  test("one scene per DreamBench object context, unique names", () => {
    expect(SCENES.map((s) => s.phrase).sort()).toEqual([...DREAMBENCH_CONTEXTS].sort());
    expect(new Set(SCENE_NAMES).size).toBe(SCENES.length);
    for (const s of SCENES) {
      expect(s.name).toMatch(/^[a-z]+(-[a-z]+)*$/);
      expect(s.horizon).toBeGreaterThan(0.2);
      expect(s.horizon).toBeLessThan(0.7);
    }
  });

  test("phrase <-> scene", () => {
    for (const s of SCENES) {
      expect(getScene(s.name)).toBe(s);
      expect(getScene(s.phrase)).toBe(s);
      expect(getScene(s.phrase.toUpperCase())).toBe(s);
      expect(sceneForPrompt(`a sks teapot ${s.phrase}`)).toBe(s);
    }
    expect(sceneForPrompt("a purple sks teapot")).toBeNull();
    expect(() => getScene("on the moon")).toThrow(/unknown tiny-world scene "on the moon" \(known: jungle, /);
    expect(scenePrompt("a red striped teapot", "beach")).toBe("a red striped teapot on the beach");
  });

  test("every background is painted (not the white of references) and deterministic", () => {
    const subject = subjectFromSeed(5);
    for (const [k, s] of SCENES.entries()) {
      const a = renderScene(subject, s, 48, new Rng(k));
      const b = renderScene(subject, s.phrase, 48, new Rng(k));
      expect(Buffer.from(a.image.data).equals(Buffer.from(b.image.data))).toBe(true);
      let white = 0, outside = 0;
      for (let p = 0; p < a.mask.length; p++) {
        if (a.mask[p]) continue;
        outside++;
        const d = a.image.data;
        if (d[3 * p] === 255 && d[3 * p + 1] === 255 && d[3 * p + 2] === 255) white++;
      }
      expect(white / outside).toBeLessThan(0.2);
    }
  });
});
