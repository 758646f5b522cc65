import { describe, expect, test } from "bun:test";
import { type } from "arktype";
import {
  GenerationRow,
  Id,
  PairRow,
  PatchScoreRow,
  PromptRow,
  ReferenceRow,
  RunRelPath,
  TrainLogRow,
} from "../../lib/io/schemas.ts";

/** The problems arktype reports, as "field: message" strings (empty when the value is valid). */
function problems(schema: (v: unknown) => unknown, value: unknown): string[] {
  const out = schema(value);
  // Sorted: arktype reports in its own traversal order, not the row's key order.
  return out instanceof type.errors ? out.map((e) => `${e.propString}: ${e.problem}`).sort() : [];
}

// Typed sample rows: these assignments also check the exported inferred types at compile time.
const prompt: PromptRow = {
  subjectId: "teapot-0001",
  classNoun: "teapot",
  attributes: ["red", "ceramic"],
  referencePrompt: "a photo of a red ceramic teapot, isolated on a white background",
  scenePrompts: ["a red ceramic teapot on a picnic blanket"],
  seed: 17,
};
const reference: ReferenceRow = {
  id: "teapot-0001",
  subjectId: "teapot-0001",
  prompt: prompt.referencePrompt,
  image: "references/teapot-0001.png",
  seed: 17,
  settings: { model: "checkpoints/tiny", steps: 20, guidanceScale: 7.5, width: 64, height: 64, sampler: "ddim" },
};
const generation: GenerationRow = {
  id: "teapot-0001-2",
  referenceId: "teapot-0001",
  subjectId: "teapot-0001",
  prompt: "a red ceramic teapot on a picnic blanket",
  image: "generations/teapot-0001-2.png",
  seed: 1002,
  k: 2,
  settings: { ipAdapterScale: 0.8, steps: 20 },
};
const score: PatchScoreRow = {
  id: "teapot-0001-2",
  referenceId: "teapot-0001",
  reference: "references/teapot-0001.png",
  generated: "generations/teapot-0001-2.png",
  qGenMean: 0.71,
  qRefMean: 0.64,
  lowShare: 0.12,
  scores: "patch-scores/teapot-0001-2.safetensors",
  heatmap: "heatmaps/teapot-0001-2.png",
  encoder: "mobilenet_v2-ssl",
};
const pair: PairRow = { id: "p1", reference: "/data/ref.png", generated: "gen/p1.png" };
const log: TrainLogRow = { step: 10, loss: 0.12, lr: 3e-5, implicitAcc: 0.6, mseRef: 0.2 };

describe("valid rows pass", () => {
  test.each([
    ["PromptRow", PromptRow, prompt],
    ["ReferenceRow", ReferenceRow, reference],
    ["GenerationRow", GenerationRow, generation],
    ["PatchScoreRow", PatchScoreRow, score],
    ["PairRow", PairRow, pair],
    ["TrainLogRow", TrainLogRow, log],
  ] as const)("%s", (_name, schema, row) => {
    expect(problems(schema, row)).toEqual([]);
  });

  test("optional referenceId, and unknown keys are kept (newer writers, older readers)", () => {
    const { referenceId: _, ...noRef } = score;
    expect(problems(PatchScoreRow, noRef)).toEqual([]);
    const out = PromptRow({ ...prompt, futureField: 1 });
    expect(out).toEqual({ ...prompt, futureField: 1 } as typeof out);
    const settings = ReferenceRow({ ...reference, settings: { ...reference.settings, scheduler: "karras" } });
    expect(settings instanceof type.errors).toBe(false);
  });
});

describe("invalid rows name the field", () => {
  test("PromptRow", () => {
    expect(problems(PromptRow, { ...prompt, seed: -1, scenePrompts: ["ok", 3], subjectId: "../x" })).toEqual([
      "scenePrompts[1]: must be a string (was a number)",
      "seed: must be non-negative (was -1)",
      'subjectId: must be a safe id ([A-Za-z0-9._-], at most 100 characters, no leading dot) (was "../x")',
    ]);
    expect(problems(PromptRow, { ...prompt, classNoun: "" })).toEqual(["classNoun: must be non-empty"]);
  });

  test("ReferenceRow / GenerationRow paths stay inside the run directory", () => {
    for (const image of ["../elsewhere.png", "/abs/x.png", "a\\b.png", "C:/x.png", ""]) {
      expect(problems(ReferenceRow, { ...reference, image })[0]).toStartWith("image: must be a relative path inside the run directory");
    }
    expect(problems(GenerationRow, { ...generation, k: 1.5 })).toEqual(["k: must be an integer (was 1.5)"]);
    expect(problems(GenerationRow, { ...generation, settings: { steps: 0 } })).toEqual(["settings.steps: must be positive (was 0)"]);
  });

  test("PatchScoreRow ranges", () => {
    expect(problems(PatchScoreRow, { ...score, qGenMean: 1.2, lowShare: -0.1 })).toEqual([
      "lowShare: must be non-negative (was -0.1)",
      "qGenMean: must be at most 1 (was 1.2)",
    ]);
    expect(problems(PatchScoreRow, { ...score, scores: "../x.safetensors" })[0]).toStartWith("scores: must be a relative path");
  });

  test("PairRow and TrainLogRow", () => {
    expect(problems(PairRow, { id: "p", reference: "" })).toEqual(["generated: must be a string (was missing)", "reference: must be non-empty"]);
    expect(problems(TrainLogRow, { step: 1, loss: 0.1, lr: 1e-5, note: "x" })).toEqual(["note: must be a number (was a string)"]);
    expect(problems(TrainLogRow, { step: -1, loss: 0.1, lr: 1e-5 })).toEqual(["step: must be non-negative (was -1)"]);
  });

  test("Id and RunRelPath on their own", () => {
    expect(problems(Id, "ok-1.2_x")).toEqual([]);
    expect(problems(Id, ".git").length).toBe(1);
    expect(problems(RunRelPath, "references/a.png")).toEqual([]);
    expect(problems(RunRelPath, "references/../../a.png").length).toBe(1);
  });
});
