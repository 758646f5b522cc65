// The oracle judge reads renders whose truth is known: clean ones must be read right, ones with a
// planted defect must be called wrong on that attribute (and only that one). The accuracies are
// printed beside their chance levels so they can go into the README. Everything is seeded; several
// placements per subject, so no threshold rests on one lucky seed.

import { describe, expect, test } from "bun:test";
import type { RgbImage } from "../../lib/io/images.ts";
import { Rng } from "../../lib/rng.ts";
import { CATALOGUE, CATALOGUE_CLASSES, FLAT_SCENES } from "../../lib/tinyworld/catalogue.ts";
import { DETAIL_PLACE_TOLERANCE, type Verdict, judgeAgainst, judgeImage, verdictOf } from "../../lib/tinyworld/judge.ts";
import { type CorruptionKind, renderCorrupted, renderReference, renderScene } from "../../lib/tinyworld/render.ts";
import type { Scene } from "../../lib/tinyworld/scenes.ts";
import { type Subject, subjectGeometry } from "../../lib/tinyworld/subjects.ts";

const SIZE = 64; // the tiny world's generator size (TINY_SIZE in scripts/pretrain-tiny.ts)

interface Case {
  subject: Subject;
  scene: Scene | null;
  image: RgbImage;
}

/** Every catalogue subject on white and in `perScene` seeded placements in each flat scene. */
function cleanCases(size: number, perScene: number, subjects = CATALOGUE.map((e) => e.subject)): Case[] {
  const out: Case[] = [];
  subjects.forEach((subject, i) => {
    out.push({ subject, scene: null, image: renderReference(subject, size).image });
    FLAT_SCENES.forEach((scene, k) => {
      for (let r = 0; r < perScene; r++) {
        out.push({ subject, scene, image: renderScene(subject, scene, size, new Rng(100_003 * (r + 1) + 101 * i + k)).image });
      }
    });
  });
  return out;
}

/** White plus two flat scenes per subject, rotating through the scenes. */
function defectBackgrounds(i: number): (Scene | null)[] {
  return [null, FLAT_SCENES[i % FLAT_SCENES.length]!, FLAT_SCENES[(i + 2) % FLAT_SCENES.length]!];
}

const rate = (xs: boolean[]) => xs.filter(Boolean).length / xs.length;
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const sceneName = (s: Scene | null) => s?.name ?? null;

function table(title: string, rows: [string, number, string][]): void {
  const lines = rows.map(([name, value, chance]) => `  ${name.padEnd(34)} ${pct(value).padStart(6)}   chance ${chance}`);
  console.log(`${title}\n${lines.join("\n")}`);
}

describe("judge on clean renders", () => {
  test(`every catalogue subject, white + ${FLAT_SCENES.length} flat scenes x 2 placements, ${SIZE} px: every attribute >= 95%`, () => {
    const cases = cleanCases(SIZE, 2);
    const verdicts = cases.map((c) => judgeAgainst(c.image, c.subject, sceneName(c.scene)));
    const j = verdicts.map((v) => v.judgement);
    const want = cases.map((c) => c.subject);
    const acc = {
      scene: rate(verdicts.map((v) => v.scene)),
      classNoun: rate(j.map((x, i) => x.classNoun === want[i]!.classNoun)),
      body: rate(j.map((x, i) => x.body === want[i]!.body)),
      pattern: rate(verdicts.map((v) => v.pattern)),
      detailColor: rate(j.map((x, i) => x.detail?.color === want[i]!.details[0]!.color)),
      detailKind: rate(j.map((x, i) => x.detail?.kind === want[i]!.details[0]!.kind)),
      detailPlace: rate(j.map((x, i) => !!x.detail && Math.hypot(x.detail.x - want[i]!.details[0]!.x, x.detail.y - want[i]!.details[0]!.y) <= DETAIL_PLACE_TOLERANCE)),
      detail: rate(verdicts.map((v) => v.detail)),
      identity: rate(verdicts.map((v) => v.identity)),
      allDetails: rate(verdicts.map((v) => v.allDetails)),
    };
    table(`judge, clean renders at ${SIZE} px (n=${cases.length}: ${CATALOGUE.length} subjects x (white + ${FLAT_SCENES.length} scenes x 2))`, [
      ["scene", acc.scene, `1/${FLAT_SCENES.length + 1}`],
      ["class", acc.classNoun, `1/${CATALOGUE_CLASSES.length}`],
      ["body colour", acc.body, "1/6"],
      ["pattern (kind, consistent)", acc.pattern, "1/3"],
      ["detail colour", acc.detailColor, "about 1/5"],
      ["detail kind", acc.detailKind, "1/3"],
      ["detail place", acc.detailPlace, "-"],
      ["detail (all of the above, clean)", acc.detail, "about 1/15"],
      ["identity (class and body)", acc.identity, "1/36"],
      ["allDetails", acc.allDetails, "about 1/1600"],
    ]);
    for (const [name, value] of Object.entries(acc)) {
      if (value < 0.95) throw new Error(`${name} accuracy ${pct(value)} < 95%`);
    }
  });

  test("48 and 96 px: clean renders still read right (>= 95% allDetails)", () => {
    const rows: [string, number, string][] = [];
    for (const [size, subjects] of [
      [48, CATALOGUE.map((e) => e.subject)],
      // Every other subject at 96 px: judging costs grow with the pixel count.
      [96, CATALOGUE.filter((_, i) => i % 2 === 0).map((e) => e.subject)],
    ] as const) {
      const cases = cleanCases(size, 1, [...subjects]);
      const verdicts = cases.map((c) => judgeAgainst(c.image, c.subject, sceneName(c.scene)));
      const all = rate(verdicts.map((v) => v.allDetails && v.scene));
      const kind = rate(verdicts.map((v, i) => v.judgement.detail?.kind === cases[i]!.subject.details[0]!.kind));
      rows.push([`${size} px allDetails+scene (n=${cases.length})`, all, "about 1/8000"], [`${size} px detail kind`, kind, "1/3"]);
      expect(all).toBeGreaterThanOrEqual(0.95);
    }
    table("judge, clean renders at other sizes (white + 4 scenes x 1)", rows);
  });

  test("an image of another subject is called wrong on what differs", () => {
    // Each render read against the next catalogue subject of the same class (other body colour,
    // pattern or detail): a judge that always said "right" fails here and in the defect tests; one
    // that always said "wrong" fails the clean test.
    const byClass = new Map<string, Subject[]>();
    for (const e of CATALOGUE) byClass.set(e.subject.classNoun, [...(byClass.get(e.subject.classNoun) ?? []), e.subject]);
    let pairs = 0, wrongWhereDiffers = 0, differs = 0, allWrong = 0;
    CATALOGUE.forEach((e, i) => {
      const same = byClass.get(e.subject.classNoun)!;
      const other = same[(same.indexOf(e.subject) + 1) % same.length]!;
      const scene = FLAT_SCENES[i % FLAT_SCENES.length]!;
      const j = judgeImage(renderScene(e.subject, scene, SIZE, new Rng(7 + i)).image);
      const v: Verdict = verdictOf(j, other, scene.name);
      const d = other.details[0]!, own = e.subject.details[0]!;
      const checks: [boolean, boolean][] = [
        [other.body !== e.subject.body, !v.identity],
        [other.pattern.kind !== e.subject.pattern.kind, !v.pattern],
        [d.kind !== own.kind || d.color !== own.color, !v.detail],
      ];
      for (const [diff, wrong] of checks) {
        if (!diff) continue;
        differs++;
        if (wrong) wrongWhereDiffers++;
      }
      pairs++;
      if (!v.allDetails) allWrong++;
    });
    console.log(`judge, render vs another subject of its class: ${wrongWhereDiffers}/${differs} differing attributes called wrong, allDetails false ${allWrong}/${pairs}`);
    expect(wrongWhereDiffers).toBe(differs);
    expect(allWrong).toBe(pairs);
  });

  test("an empty image shows no subject; images must be square", () => {
    const blank: RgbImage = { width: SIZE, height: SIZE, data: new Uint8Array(SIZE * SIZE * 3).fill(255) };
    const j = judgeImage(blank);
    expect(j.scene).toBe("white");
    expect(j.classNoun).toBeNull();
    expect(j.detail).toBeNull();
    const v = judgeAgainst(blank, CATALOGUE[0]!.subject, null);
    expect([v.identity, v.pattern, v.detail, v.allDetails]).toEqual([false, false, false, false]);
    expect(() => judgeImage({ width: 64, height: 48, data: new Uint8Array(64 * 48 * 3) })).toThrow(RangeError);
  });
});

describe("judge on planted defects", () => {
  // The clean render of a subject/scene/seed is the same whatever the corruption: judge it once.
  const cleanVerdicts = new Map<string, Verdict>();

  /** Each subject on white and in two flat scenes, with one planted defect of `kind`. */
  function corrupted(kind: CorruptionKind, size = SIZE, backgrounds = defectBackgrounds) {
    const out: { verdict: Verdict; clean: () => Verdict; actual: string }[] = [];
    CATALOGUE.forEach((e, i) => {
      backgrounds(i).forEach((scene, k) => {
        const r = renderCorrupted(e.subject, scene, size, new Rng(7919 * (k + 1) + 13 * i), kind);
        const key = `${size}:${i}:${k}`;
        out.push({
          verdict: judgeAgainst(r.image, e.subject, sceneName(scene)),
          clean: () => {
            if (!cleanVerdicts.has(key)) cleanVerdicts.set(key, judgeAgainst(r.clean.image, e.subject, sceneName(scene)));
            return cleanVerdicts.get(key)!;
          },
          actual: r.corruption.kind,
        });
      });
    });
    return out;
  }

  test(`detail-missing, detail-recolored, detail-moved at ${SIZE} px: detail called wrong >= 95%, identity kept`, () => {
    const rows: [string, number, string][] = [];
    for (const kind of ["detail-missing", "detail-recolored", "detail-moved"] as const) {
      const rs = corrupted(kind);
      const wrong = rate(rs.map((r) => !r.verdict.detail));
      const identity = rate(rs.map((r) => r.verdict.identity));
      const pattern = rate(rs.map((r) => r.verdict.pattern));
      const cleanRight = rate(rs.map((r) => r.clean().detail));
      rows.push(
        [`${kind}: detail wrong (n=${rs.length})`, wrong, "0% (a judge always saying right)"],
        [`${kind}: identity right`, identity, "-"],
        [`${kind}: pattern right`, pattern, "-"],
        [`${kind}: same scene clean, detail right`, cleanRight, "-"],
      );
      if (kind === "detail-moved") {
        // renderCorrupted moves a detail only to a free spot on a face; at DETAIL_SIZE no
        // catalogue face has one, so it recolours instead (its documented fallback). True moves
        // are tested by hand below.
        const moved = rs.filter((r) => r.actual === "detail-moved").length;
        console.log(`  (renderCorrupted "detail-moved" really moved the detail in ${moved}/${rs.length} renders; the rest were recoloured)`);
      }
      expect(wrong).toBeGreaterThanOrEqual(0.95);
      expect(identity).toBeGreaterThanOrEqual(0.95);
      expect(cleanRight).toBeGreaterThanOrEqual(0.95);
    }
    table(`judge, detail defects at ${SIZE} px (${CATALOGUE.length} subjects x white + 2 scenes)`, rows);
  });

  test("a detail moved on the body by 0.15-0.25 is wrong; nudged by 0.03 it is still right", () => {
    /** The subject with its detail moved by `dist` canonical units in a seeded direction, staying on the body. */
    function moved(subject: Subject, dist: [number, number], rng: Rng): Subject | null {
      const d = subject.details[0]!;
      const bodies = subjectGeometry(subject).parts.filter((p) => p.role === "body").map((p) => p.shape);
      const onBody = (u: number, v: number) => bodies.some((s) => s.inside(u, v));
      for (let attempt = 0; attempt < 200; attempt++) {
        const a = 2 * Math.PI * rng.uniform(), r = dist[0] + (dist[1] - dist[0]) * rng.uniform();
        const x = d.x + r * Math.cos(a), y = d.y + r * Math.sin(a);
        const m = 0.7 * d.size;
        if ([[0, 0], [-m, -m], [m, -m], [-m, m], [m, m]].every(([du, dv]) => onBody(x + du!, y + dv!))) {
          return { ...subject, details: [{ ...d, x, y }] };
        }
      }
      return null;
    }
    const far: boolean[] = [], near: boolean[] = [], identity: boolean[] = [];
    let noRoom = 0;
    CATALOGUE.forEach((e, i) => {
      defectBackgrounds(i).forEach((scene, k) => {
        const rng = new Rng(31 * i + k);
        const render = (s: Subject) => (scene ? renderScene(s, scene, SIZE, new Rng(5 + 17 * i + k)) : renderReference(s, SIZE)).image;
        const farSubject = moved(e.subject, [0.15, 0.25], rng);
        if (farSubject) {
          const v = judgeAgainst(render(farSubject), e.subject, sceneName(scene));
          far.push(!v.detail);
          identity.push(v.identity);
        } else noRoom++;
        const nearSubject = moved(e.subject, [0.03, 0.03], rng);
        if (nearSubject) near.push(judgeAgainst(render(nearSubject), e.subject, sceneName(scene)).detail);
      });
    });
    table(`judge, details moved by hand at ${SIZE} px (tolerance ${DETAIL_PLACE_TOLERANCE} canonical)`, [
      [`moved 0.15-0.25: detail wrong (n=${far.length})`, rate(far), "0% (a judge always saying right)"],
      ["moved 0.15-0.25: identity right", rate(identity), "-"],
      [`nudged 0.03: detail right (n=${near.length})`, rate(near), "-"],
    ]);
    if (noRoom) console.log(`  (${noRoom} subject/scene pairs had no room on the body for a 0.15-0.25 move)`);
    expect(far.length).toBeGreaterThanOrEqual(100);
    expect(rate(far)).toBeGreaterThanOrEqual(0.95);
    expect(rate(identity)).toBeGreaterThanOrEqual(0.95);
    expect(rate(near)).toBeGreaterThanOrEqual(0.95);
  });

  test("48 px: missing and recoloured details are still called wrong", () => {
    const rows: [string, number, string][] = [];
    for (const kind of ["detail-missing", "detail-recolored"] as const) {
      const rs = corrupted(kind, 48, (i) => defectBackgrounds(i).slice(0, 2));
      rows.push([`${kind}: detail wrong (n=${rs.length})`, rate(rs.map((r) => !r.verdict.detail)), "0%"]);
      expect(rate(rs.map((r) => !r.verdict.detail))).toBeGreaterThanOrEqual(0.95);
      expect(rate(rs.map((r) => r.verdict.identity))).toBeGreaterThanOrEqual(0.95);
    }
    table("judge, detail defects at 48 px", rows);
  });

  test("pattern-wrong and noise-blob, reported separately", () => {
    // Not part of the >= 95% detail claim: a wrong-pattern disc can fall mostly beside the body or
    // under the logo, and a noise blob is not a detail error as such. The judge's local pattern
    // check and its stray-blob / purity rules catch most of them; the bounds guard regressions.
    const pw = corrupted("pattern-wrong");
    const nb = corrupted("noise-blob");
    const rows: [string, number, string][] = [
      [`pattern-wrong: pattern wrong (n=${pw.length})`, rate(pw.map((r) => !r.verdict.pattern)), "0%"],
      ["pattern-wrong: identity right", rate(pw.map((r) => r.verdict.identity)), "-"],
      ["pattern-wrong: detail right", rate(pw.map((r) => r.verdict.detail)), "-"],
      [`noise-blob: allDetails wrong (n=${nb.length})`, rate(nb.map((r) => !r.verdict.allDetails)), "0%"],
      ["noise-blob: identity right", rate(nb.map((r) => r.verdict.identity)), "-"],
    ];
    table(`judge, other defects at ${SIZE} px`, rows);
    expect(rate(pw.map((r) => !r.verdict.pattern))).toBeGreaterThanOrEqual(0.9);
    expect(rate(pw.map((r) => r.verdict.identity))).toBeGreaterThanOrEqual(0.95);
    expect(rate(nb.map((r) => !r.verdict.allDetails))).toBeGreaterThanOrEqual(0.9);
  });
});
