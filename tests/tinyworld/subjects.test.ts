import { describe, expect, test } from "bun:test";
import { Rng } from "../../lib/rng.ts";
import {
  CLASS_NOUNS,
  COLORS,
  type Subject,
  describeSubject,
  detailBox,
  randomSubject,
  subjectBox,
  subjectFromSeed,
  subjectGeometry,
  withId,
} from "../../lib/tinyworld/subjects.ts";

const SEEDS = Array.from({ length: 200 }, (_, i) => i);

describe("randomSubject", () => {
  test("same seed, same subject; the rng is the only source of randomness", () => {
    expect(randomSubject(new Rng(42))).toEqual(randomSubject(new Rng(42)));
    expect(subjectFromSeed(42)).toEqual(randomSubject(new Rng(42)));
  });

  test("different seeds give different subjects with different ids", () => {
    const ids = new Set(SEEDS.map((s) => subjectFromSeed(s).id));
    expect(ids.size).toBe(SEEDS.length);
  });

  test("ids are stable, file-name safe and survive a JSON round trip", () => {
    for (const seed of SEEDS.slice(0, 50)) {
      const s = subjectFromSeed(seed);
      expect(s.id).toMatch(/^[a-z]+-[a-z]+-[a-z]+-[0-9a-f]{8}$/);
      expect(s.id.startsWith(`${s.classNoun}-${s.body}-${s.pattern.kind}-`)).toBe(true);
      const back = JSON.parse(JSON.stringify(s)) as Subject;
      expect(back).toEqual(s);
      expect(withId(back).id).toBe(s.id);
    }
    const s = subjectFromSeed(3);
    expect(withId({ ...s, body: s.body === "red" ? "blue" : "red" }).id).not.toBe(s.id);
  });

  test("every class appears; colours are named; 1-3 details on the body, not overlapping", () => {
    const seen = new Set<string>();
    for (const seed of SEEDS) {
      const s = subjectFromSeed(seed);
      seen.add(s.classNoun);
      expect(COLORS[s.body]).toBeDefined();
      expect(s.body).not.toBe("white");
      expect(s.secondary).not.toBe(s.body);
      expect(s.details.length).toBeGreaterThanOrEqual(1);
      expect(s.details.length).toBeLessThanOrEqual(3);
      expect(new Set(s.details.map((d) => d.kind)).size).toBe(s.details.length);
      const faces = subjectGeometry(s).faces;
      const boxes = s.details.map(detailBox);
      for (const [i, b] of boxes.entries()) {
        const d = s.details[i]!;
        expect(d.color).not.toBe(s.body);
        expect(d.color).not.toBe(s.secondary);
        const inFace = faces.some((f) => b[0] >= f[0] - 1e-9 && b[1] >= f[1] - 1e-9 && b[2] <= f[2] + 1e-9 && b[3] <= f[3] + 1e-9);
        expect(inFace).toBe(true);
        for (const o of boxes.slice(i + 1)) {
          const overlap = b[0] < o[2] && o[0] < b[2] && b[1] < o[3] && o[1] < b[3];
          expect(overlap).toBe(false);
        }
      }
      const [u0, v0, u1, v1] = subjectBox(s);
      expect(u0).toBeGreaterThanOrEqual(0);
      expect(v0).toBeGreaterThanOrEqual(0);
      expect(u1).toBeLessThanOrEqual(1);
      expect(v1).toBeLessThanOrEqual(1);
    }
    expect([...seen].sort()).toEqual([...CLASS_NOUNS].sort());
  });

  test("an unknown class noun is a clear error", () => {
    expect(() => subjectGeometry({ classNoun: "giraffe" as never, shape: [0, 0, 0, 0] })).toThrow(/unknown tiny-world class noun "giraffe"/);
  });
});

describe("describeSubject", () => {
  const base: Omit<Subject, "id"> = {
    classNoun: "teapot",
    shape: [0.5, 0.5, 0.5, 0.5],
    body: "red",
    secondary: "white",
    pattern: { kind: "stripes", period: 0.1, angle: 0 },
    details: [{ kind: "star", color: "yellow", x: 0.48, y: 0.6, size: 0.06 }],
  };

  test("the design's example", () => {
    expect(describeSubject(withId(base))).toEqual({
      classNoun: "teapot",
      attributes: ["red", "striped", "with a yellow star logo"],
      text: "a red striped teapot with a yellow star logo",
    });
  });

  test("plain pattern, articles and lists of details", () => {
    const d = describeSubject(
      withId({
        ...base,
        classNoun: "mug",
        body: "orange",
        pattern: { kind: "plain", period: 0.1, angle: 0 },
        details: [
          { kind: "button", color: "blue", x: 0.4, y: 0.5, size: 0.05 },
          { kind: "eyes", color: "green", x: 0.4, y: 0.7, size: 0.05 },
          { kind: "square", color: "orange", x: 0.5, y: 0.6, size: 0.05 },
        ],
      }),
    );
    expect(d.attributes).toEqual(["orange", "with a blue button", "with green eyes", "with an orange square logo"]);
    expect(d.text).toBe("an orange mug with a blue button, green eyes and an orange square logo");
  });

  test("mentions the class noun and the body colour of every random subject", () => {
    for (const seed of SEEDS.slice(0, 60)) {
      const s = subjectFromSeed(seed);
      const d = describeSubject(s);
      expect(d.classNoun).toBe(s.classNoun);
      expect(d.text).toContain(s.classNoun);
      expect(d.text).toContain(s.body);
      expect(d.attributes[0]).toBe(s.body);
      for (const det of s.details) expect(d.text).toContain(det.color);
    }
  });
});
