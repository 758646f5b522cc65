// lib/eval/metrics.ts against numpy (bench/parity/make_eval_fixture.py -> tests/fixtures/eval/):
// fixed float32 embeddings of 3 subjects (4/6/3 real photos, 5/3/4 generated images), the
// per-image, per-subject, headline and per-prompt means of the all-refs and single-ref settings
// and CLIP-T, computed the way the PatchDPO authors' script does (normalize, matrix, np.mean).
// Tolerance: 1e-9 against numpy's float64 computation (ours sums in float64 too); 1e-6 against
// the float32 arithmetic of the authors' numpy code.
// Also: the DINO-protocol preprocessing (torchvision Resize(256, bicubic) + CenterCrop(224) +
// Normalize on PIL) of a synthetic pattern and, when present, of DreamBench photos; DreamBench's
// prompt file format.

import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readPromptFile, renderPrompt, subjectPrompts, templateKey } from "../../lib/eval/dreambench.ts";
import { DINO_PREPROCESS } from "../../lib/eval/embeddings.ts";
import { EvalScoreRow, authorsScoreJson, cosine, cosineMatrix, imageScore, l2normalize, refsForSetting, summarize } from "../../lib/eval/metrics.ts";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import { IMAGENET_MEAN, IMAGENET_STD, loadImage, preprocessImage, toCHW } from "../../lib/io/images.ts";
import { openSafetensors } from "../../lib/io/safetensors.ts";
import { DREAMBENCH, HAVE_DREAMBENCH, REPO, writePromptFile } from "./helpers.ts";

const FIX = join(REPO, "tests/fixtures/eval");
const f = openSafetensors(join(FIX, "metrics.safetensors"));
const arr = (n: string) => Array.from(f.view(n) as ArrayLike<number>);
const rows2d = (n: string) => {
  const [r, c] = f.info(n).shape as [number, number];
  const v = f.float32(n);
  return Array.from({ length: r }, (_, i) => Float32Array.from(v.subarray(i * c, (i + 1) * c)));
};
const gen = rows2d("gen");
const real = rows2d("real");
const text = rows2d("text");
const genSubject = arr("gen_subject");
const realSubject = arr("real_subject");
const genPrompt = arr("gen_prompt");
const subjects = [...new Set(genSubject)];
const realOf = (s: number) => real.filter((_, i) => realSubject[i] === s);
const maxDiff = (a: number[], b: number[]) => {
  expect(a.length).toBe(b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
};

describe("metrics vs numpy (tests/fixtures/eval/metrics.safetensors)", () => {
  const allRefs = gen.map((g, i) => imageScore(g, refsForSetting(realOf(genSubject[i]!), "all-refs")));
  const singleRef = gen.map((g, i) => imageScore(g, refsForSetting(realOf(genSubject[i]!), "single-ref", 1)));
  const clipT = gen.map((g, i) => cosine(g, text[i]!));
  const rows = (values: number[]) => values.map((v, i) => ({ subject: `s${genSubject[i]}`, promptKey: `p${genPrompt[i]}`, dino: v, clipT: clipT[i] }));

  test("per-image mean cosine, all-refs and single-ref (photo 1)", () => {
    expect(maxDiff(allRefs, arr("image_all"))).toBeLessThan(1e-9);
    expect(maxDiff(singleRef, arr("image_single"))).toBeLessThan(1e-9);
  });

  test("per-subject means, mean over subjects, per-prompt means, CLIP-T", () => {
    const all = summarize(rows(allRefs));
    const single = summarize(rows(singleRef));
    expect(maxDiff(subjects.map((s) => all.subjects[`s${s}`]!.dino!), arr("subject_all"))).toBeLessThan(1e-9);
    expect(maxDiff(subjects.map((s) => single.subjects[`s${s}`]!.dino!), arr("subject_single"))).toBeLessThan(1e-9);
    expect(Math.abs(all.metrics.dino! - arr("mean_all")[0]!)).toBeLessThan(1e-9);
    expect(Math.abs(single.metrics.dino! - arr("mean_single")[0]!)).toBeLessThan(1e-9);
    expect(maxDiff(subjects.map((s) => all.subjects[`s${s}`]!.clipT!), arr("clipt_subject"))).toBeLessThan(1e-9);
    expect(Math.abs(all.metrics.clipT! - arr("clipt_mean")[0]!)).toBeLessThan(1e-9);
    const prompts = [0, 1, 2, 3].map((p) => all.prompts[`p${p}`]!.dino!);
    expect(maxDiff(prompts, arr("prompt_all"))).toBeLessThan(1e-9);
    // The authors' float32 numpy arithmetic.
    expect(Math.abs(all.metrics.dino! - arr("mean_all_f32")[0]!)).toBeLessThan(1e-6);
    expect(Math.abs(single.metrics.dino! - arr("mean_single_f32")[0]!)).toBeLessThan(1e-6);
    expect(Math.abs(all.metrics.clipT! - arr("clipt_mean_f32")[0]!)).toBeLessThan(1e-6);
  });

  test("a subject's mean over all pairs equals the mean of its per-image means", () => {
    for (const s of subjects) {
      const gs = gen.filter((_, i) => genSubject[i] === s);
      const m = cosineMatrix(gs, realOf(s));
      const pairs = m.reduce((a, b) => a + b, 0) / m.length;
      expect(Math.abs(pairs - arr("subject_all")[s]!)).toBeLessThan(1e-9);
    }
  });

  test("subjects weigh equally whatever their image counts", () => {
    const s = summarize([
      { subject: "a", promptKey: "x", feature: 1 },
      { subject: "a", promptKey: "y", feature: 1 },
      { subject: "a", promptKey: "y", feature: 1 },
      { subject: "b", promptKey: "x", feature: 0 },
    ]);
    expect(s.metrics.feature).toBe(0.5);
    expect(s.prompts.x!.feature).toBe(0.5);
    expect(s.prompts.y!.feature).toBe(1);
    expect(s.metrics.dino).toBeUndefined();
  });
});

describe("metric helpers", () => {
  test("cosine, l2normalize, zero vectors", () => {
    const a = Float32Array.of(3, 4), b = Float32Array.of(4, 3);
    expect(cosine(a, b)).toBeCloseTo(24 / 25, 12);
    expect(Array.from(l2normalize(a))).toEqual([Math.fround(0.6), Math.fround(0.8)]);
    expect(cosine(new Float32Array(2), a)).toBe(0);
    expect(() => cosine(a, Float32Array.of(1))).toThrow(RangeError);
  });

  test("refsForSetting: all photos, an index, a file stem; out-of-range and unknown names are usage errors", () => {
    const refs = ["p0", "p1", "p2"];
    expect(refsForSetting(refs, "all-refs", 7)).toEqual(refs);
    expect(refsForSetting(refs, "single-ref")).toEqual(["p0"]);
    expect(refsForSetting(refs, "single-ref", 2)).toEqual(["p2"]);
    expect(refsForSetting(refs, "single-ref", "01", ["00", "01", "02"])).toEqual(["p1"]);
    expect(() => refsForSetting(refs, "single-ref", 3, undefined, "dog")).toThrow(/photo index 3 is out of range for subject "dog", which has 3 photos/);
    expect(() => refsForSetting(refs, "single-ref", "09", ["00", "01", "02"], "dog")).toThrow(UsageError);
  });

  test("all_score.json in the authors' format: string values, indent 4, computed metrics only", () => {
    const text = authorsScoreJson({ dino: 0.7271, clipI: 0.8382, clipT: 0.2921, feature: 0.5 });
    expect(JSON.parse(text)).toEqual({ clipt_score: "0.2921", clipi_score: "0.8382", dino_score: "0.7271" });
    expect(text).toContain('\n    "clipt_score": "0.2921"');
    expect(JSON.parse(authorsScoreJson({ feature: 0.5 }))).toEqual({});
  });

  test("EvalScoreRow accepts rows with any subset of the metrics and rejects unsafe subjects", () => {
    expect(EvalScoreRow({ id: "a/x.png", subject: "a", prompt: "x", promptKey: "x", image: "../a/x.png", feature: 0.5 })).not.toBeInstanceOf(Error);
    const bad = EvalScoreRow({ id: "a", subject: "../a", prompt: "x", promptKey: "x", image: "x.png" });
    expect(String((bad as { summary?: string }).summary ?? "")).toContain("subject");
  });
});

describe("DINO-protocol preprocessing (resize 256 bicubic, centre crop 224, ImageNet mean/std)", () => {
  test("matches torchvision on PIL for a 96x64 pattern (every 4th pixel, channel sums)", async () => {
    const pre = openSafetensors(join(FIX, "preprocess.safetensors"));
    const ours = preprocessImage(await loadImage(join(FIX, "pattern_96x64.png")), DINO_PREPROCESS);
    const sub = pre.float32("sub");
    let worst = 0;
    for (let c = 0; c < 3; c++) for (let y = 0; y < 56; y++) for (let x = 0; x < 56; x++) worst = Math.max(worst, Math.abs(ours[c * 224 * 224 + y * 4 * 224 + x * 4]! - sub[c * 56 * 56 + y * 56 + x]!));
    expect(worst).toBe(0); // PIL-exact resampling and torchvision-exact float32 steps
    const sums = [0, 1, 2].map((c) => ours.subarray(c * 224 * 224, (c + 1) * 224 * 224).reduce((a, b) => a + b, 0));
    expect(maxDiff(sums, Array.from(pre.view("channel_sum") as Float64Array))).toBeLessThan(1e-2);
  });

  test.skipIf(!HAVE_DREAMBENCH)("DreamBench photos: the same pixels as PIL's (tests/fixtures/images/photo_<subject>.png)", async () => {
    for (const s of ["dog", "teapot", "can"]) {
      const ours = preprocessImage(await loadImage(join(DREAMBENCH, s, "00.jpg")), DINO_PREPROCESS);
      const pil = toCHW(await loadImage(join(REPO, `tests/fixtures/images/photo_${s}.png`)), IMAGENET_MEAN, IMAGENET_STD);
      expect(ours).toEqual(pil);
    }
  });
  if (!HAVE_DREAMBENCH) console.log(`eval metrics tests: ${DREAMBENCH} is absent; skipping the DreamBench photo preprocessing check`);
});

describe("DreamBench prompt file", () => {
  test("renderPrompt / templateKey: class noun only by default (the authors' rendering), unique token on request", () => {
    const t = "a {0} {1} on top of pink fabric";
    expect(renderPrompt(t, "stuffed animal")).toBe("a stuffed animal on top of pink fabric");
    expect(renderPrompt(t, "dog", "sks")).toBe("a sks dog on top of pink fabric");
    expect(templateKey(t)).toBe("a {} on top of pink fabric");
  });

  test("a written prompt file parses; live subjects get the live list first", () => {
    const dir = mkdtempSync(join(tmpdir(), "patchdpo-evalprompts-"));
    const p = readPromptFile(writePromptFile(join(dir, "prompts.txt"), { dog: "dog", teapot: "teapot" }));
    expect(p.classes.get("teapot")).toBe("teapot");
    expect(p.objectPrompts).toEqual(["a {0} {1} in the jungle", "a red {0} {1}"]);
    expect([...subjectPrompts(p, "dog").entries()][1]).toEqual(["a dog wearing a red hat", { key: "a {} wearing a red hat", live: true }]);
    expect(subjectPrompts(p, "teapot").get("a red teapot")).toEqual({ key: "a red {}", live: false });
    expect(() => subjectPrompts(p, "vase")).toThrow(/subject "vase" is not in the Classes section/);
  });

  test("a file in another format is refused", () => {
    const dir = mkdtempSync(join(tmpdir(), "patchdpo-evalprompts-"));
    const path = join(dir, "bad.txt");
    writeFileSync(path, "just some prompts\na dog\n");
    expect(() => readPromptFile(path)).toThrow(UserError);
    expect(() => readPromptFile(join(dir, "missing.txt"))).toThrow(/cannot read the prompt file/);
  });

  const shared = join(DREAMBENCH, "prompts_and_classes.txt");
  test.skipIf(!existsSync(shared))("DreamBench's own prompts_and_classes.txt: 30 subjects, 25 + 25 prompts", () => {
    const p = readPromptFile(shared);
    expect(p.classes.size).toBe(30);
    expect(p.classes.get("bear_plushie")).toBe("stuffed animal");
    expect(p.objectPrompts.length).toBe(25);
    expect(p.livePrompts.length).toBe(25);
    expect(subjectPrompts(p, "backpack").has("a backpack with the Eiffel Tower in the background")).toBe(true);
    expect(subjectPrompts(p, "cat").get("a cat in a chef outfit")?.live).toBe(true);
    expect(readFileSync(shared, "utf8")).toContain("Live Subject Prompts");
  });
});
