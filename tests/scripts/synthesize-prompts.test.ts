// scripts/synthesize-prompts.ts and lib/prompts: determinism, uniqueness, counts, the tiny world's
// scene mapping, row validation, the rerun/--force rules, the LLM path against a local fake
// OpenAI-compatible server, and the CLI's exit codes.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import { readJsonlAll } from "../../lib/io/manifest.ts";
import { isSafeId } from "../../lib/io/rundir.ts";
import { readRunJson } from "../../lib/io/runlog.ts";
import { PromptRow } from "../../lib/io/schemas.ts";
import { NOUNS, maxScenesPerSubject, synthesizeOpen } from "../../lib/prompts/grammar.ts";
import { CATALOGUE, FLAT_SCENES, catalogueEntry, flatSceneForPrompt, subjectsOf, tinyScenePrompt } from "../../lib/tinyworld/catalogue.ts";
import { synthesizeTiny } from "../../lib/tinyworld/prompts.ts";
import { LIMITS, cleanText, sanitizeSubject } from "../../lib/prompts/llm.ts";
import { CLASS_NOUNS, describeSubject } from "../../lib/tinyworld/index.ts";
import { DEFAULTS, type SynthesizeOptions, run } from "../../scripts/synthesize-prompts.ts";

const REPO = resolve(import.meta.dir, "../..");
const SCRIPT = join(REPO, "scripts/synthesize-prompts.ts");

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-prompts-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (name: string) => join(root, `${dirCount++}-${name}`);

const opts = (o: Partial<SynthesizeOptions> & { run: string }): SynthesizeOptions => ({ ...DEFAULTS, log: () => {}, ...o });
const bytes = (dir: string) => readFileSync(join(dir, "prompts.jsonl"), "utf8");
const rowsOf = (dir: string) => readJsonlAll(join(dir, "prompts.jsonl"), PromptRow);

function checkUnique(rows: PromptRow[], n: number, k: number) {
  expect(rows.length).toBe(n);
  expect(new Set(rows.map((r) => r.subjectId)).size).toBe(n);
  expect(new Set(rows.map((r) => r.referencePrompt)).size).toBe(n);
  for (const r of rows) {
    expect(isSafeId(r.subjectId)).toBe(true);
    expect(r.scenePrompts.length).toBe(k);
    expect(new Set(r.scenePrompts).size).toBe(k);
    expect(r.referencePrompt).toContain("isolated on a white background, studio lighting, plain white background");
  }
}

describe("open grammar", () => {
  test("same seed same bytes, other seed other bytes; rows validate; counts; no duplicates", async () => {
    const [a, b, c] = [freshDir("a"), freshDir("b"), freshDir("c")];
    expect((await run(opts({ run: a, subjects: 300, scenesPerSubject: 6, seed: 7 }))).status).toBe("written");
    await run(opts({ run: b, subjects: 300, scenesPerSubject: 6, seed: 7 }));
    await run(opts({ run: c, subjects: 300, scenesPerSubject: 6, seed: 8 }));
    expect(bytes(a)).toBe(bytes(b));
    expect(bytes(a)).not.toBe(bytes(c));
    const rows = await rowsOf(a); // readJsonlAll validates every row against PromptRow
    checkUnique(rows, 300, 6);
    expect(new Set(rows.map((r) => r.classNoun)).size).toBeGreaterThan(50);
    for (const r of rows) {
      for (const p of r.scenePrompts) {
        expect(p).toMatch(/^an? /);
        expect(p).not.toMatch(/\ba [aeiou]|\ban [^aeiou]/i);
      }
    }
  });

  test("the word lists cover DreamBench's and the tiny world's classes; prefix-stable in n and k", () => {
    const nouns = new Set(NOUNS.map((e) => e.noun));
    expect(nouns.size).toBe(NOUNS.length);
    expect(nouns.size).toBeGreaterThanOrEqual(60);
    for (const c of [...CLASS_NOUNS, "backpack", "stuffed animal", "bowl", "can", "candle", "cat", "clock", "sneaker", "dog", "boot", "teapot", "vase"]) {
      expect(nouns.has(c)).toBe(true);
    }
    const long = synthesizeOpen({ subjects: 20, scenesPerSubject: 5, seed: 3 });
    const short = synthesizeOpen({ subjects: 10, scenesPerSubject: 3, seed: 3 });
    short.forEach((r, i) => {
      expect(r.subjectId).toBe(long[i]!.subjectId);
      expect(r.scenePrompts).toEqual(long[i]!.scenePrompts.slice(0, 3));
    });
  });

  test("the largest k works and is distinct; larger is a usage error", () => {
    const k = maxScenesPerSubject();
    checkUnique(synthesizeOpen({ subjects: 40, scenesPerSubject: k, seed: 1 }), 40, k);
    expect(() => synthesizeOpen({ subjects: 4, scenesPerSubject: k + 1, seed: 1 })).toThrow(UsageError);
  });
});

describe("tiny world", () => {
  test("subjects come from the catalogue split asked for; every scene prompt is a flat scene of the subject", async () => {
    const d = freshDir("tiny");
    await run(opts({ run: d, world: "tiny", subjects: CATALOGUE.length, scenesPerSubject: FLAT_SCENES.length, seed: 5 }));
    const rows = await rowsOf(d);
    expect(rows.length).toBe(CATALOGUE.length);
    expect(new Set(rows.map((r) => r.subjectId)).size).toBe(CATALOGUE.length);
    expect(new Set(rows.map((r) => r.referencePrompt)).size).toBe(CATALOGUE.length);
    for (const r of rows) {
      const s = catalogueEntry(r.subjectId)!.subject;
      const text = describeSubject(s).text;
      expect(r.classNoun).toBe(s.classNoun);
      expect(r.referencePrompt).toBe(`a photo of ${text}, isolated on a white background`);
      const scenes = r.scenePrompts.map((p) => {
        const sc = flatSceneForPrompt(p);
        expect(sc).not.toBeNull();
        expect(p).toBe(tinyScenePrompt(text, sc!));
        return sc!.name;
      });
      expect(new Set(scenes).size).toBe(FLAT_SCENES.length);
    }
    for (const split of ["train", "val", "test", "held-out"] as const) {
      const want = new Set(subjectsOf(split).map((e) => e.subject.id));
      const got = synthesizeTiny({ subjects: want.size, scenesPerSubject: 1, seed: 3, split });
      expect(new Set(got.map((r) => r.subjectId))).toEqual(want);
      // A shorter run's subjects are the longer run's first ones.
      expect(synthesizeTiny({ subjects: 2, scenesPerSubject: 1, seed: 3, split })).toEqual(got.slice(0, 2));
    }
    expect(() => synthesizeTiny({ subjects: 2, scenesPerSubject: FLAT_SCENES.length + 1, seed: 0, split: "all" })).toThrow(RangeError);
    await expect(run(opts({ run: freshDir("tiny-big"), world: "tiny", subjects: 7, tinySplit: "val" }))).rejects.toBeInstanceOf(UsageError);
  });
});

describe("reruns", () => {
  test("same flags: unchanged bytes; other flags: refused (exit code 1) unless --force", async () => {
    const d = freshDir("rerun");
    await run(opts({ run: d, subjects: 12, seed: 2 }));
    const first = bytes(d);
    expect((await run(opts({ run: d, subjects: 12, seed: 2 }))).status).toBe("unchanged");
    expect(bytes(d)).toBe(first);
    const refused = run(opts({ run: d, subjects: 12, seed: 3 }));
    await expect(refused).rejects.toThrow(/other flags \(seed: 2 -> 3\).*--force/);
    await expect(run(opts({ run: d, subjects: 12, world: "tiny" }))).rejects.toBeInstanceOf(UserError);
    expect(bytes(d)).toBe(first);
    expect((await run(opts({ run: d, subjects: 12, seed: 3, force: true }))).status).toBe("written");
    expect(bytes(d)).not.toBe(first);
    // The latest successful entry now carries seed 3: the old flags are the different ones.
    await expect(run(opts({ run: d, subjects: 12, seed: 2 }))).rejects.toThrow(/seed: 3 -> 2/);
    const steps = (await readRunJson(d)).steps.filter((s) => s.step === "synthesize-prompts");
    expect(steps.map((s) => s.status)).toEqual(["ok", "ok", "failed", "failed", "ok", "failed"]);
  });

  test("a hand-edited file or one without a run.json record is not overwritten", async () => {
    const d = freshDir("edited");
    await run(opts({ run: d, subjects: 3 }));
    writeFileSync(join(d, "prompts.jsonl"), bytes(d).replace("a product photo", "a photo"));
    await expect(run(opts({ run: d, subjects: 3 }))).rejects.toThrow(/differs from what these flags produce/);
    const e = freshDir("foreign");
    mkdirSync(e, { recursive: true });
    writeFileSync(join(e, "prompts.jsonl"), "");
    await expect(run(opts({ run: e, subjects: 3 }))).rejects.toThrow(/flags are unknown.*--force/);
    expect((await run(opts({ run: e, subjects: 3, force: true }))).status).toBe("written");
  });
});

// ---------------------------------------------------------------------------------------------
// The LLM path against a fake OpenAI-compatible server.

type Reply = { status?: number; content?: string; raw?: string };
const chat = (content: string) => JSON.stringify({ choices: [{ index: 0, message: { role: "assistant", content } }] });
const subject = (classNoun: string, attrs: string[], k: number, extra: Partial<Record<string, unknown>> = {}) => ({
  classNoun,
  attributes: attrs,
  referencePrompt: `a product photo of a ${attrs.join(" ")} ${classNoun}, isolated on a white background`,
  scenePrompts: Array.from({ length: k }, (_, i) => `a ${attrs.join(" ")} ${classNoun} in scene ${i}`),
  ...extra,
});

function fakeLlm(replies: Reply[]) {
  const requests: { path: string; auth: string | null; body: { model: string; messages: { content: string }[] } }[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      requests.push({ path: new URL(req.url).pathname, auth: req.headers.get("authorization"), body: (await req.json()) as never });
      const r = replies.shift() ?? { status: 500, raw: "no more replies" };
      return new Response(r.raw ?? chat(r.content ?? ""), { status: r.status ?? 200, headers: { "content-type": "application/json" } });
    },
  });
  return { url: `http://127.0.0.1:${server.port}/v1/`, requests, stop: () => server.stop(true) };
}

describe("LLM source", () => {
  test("retries HTTP errors, invalid JSON and schema errors; sanitizes what it keeps; reuses on rerun", async () => {
    const k = 3;
    const nasty = subject("../../Etc/Passwd\u0000", ["red\u0007", "  ceramic\n", "with a \u202egold star logo"], k, {
      referencePrompt: "a red ceramic teapot\u001b[31m on a table", // no white background: the phrasing is appended
      scenePrompts: ["a red teapot on the beach", "A red teapot on the beach", `a red teapot ${"very ".repeat(200)}far away`, "a red teapot in the snow"],
    });
    const fenced = "Here you go:\n```json\n" + JSON.stringify({ subjects: [subject("mug", ["blue", "glass"], k)] }) + "\n```";
    const fake = fakeLlm([
      { status: 503, raw: "overloaded" },
      { content: "{ not json" },
      { content: JSON.stringify({ subjects: [{ classNoun: 3, attributes: "x" }] }) },
      { content: JSON.stringify({ subjects: [nasty, subject("vase", ["green"], k)] }) },
      // Batch 2: a duplicate and a subject with too few scene prompts give nothing new: ask again.
      { content: JSON.stringify({ subjects: [subject("vase", ["green"], k), subject("can", ["tin"], k - 1)] }) },
      { content: fenced },
    ]);
    const log: string[] = [];
    process.env.PATCHDPO_TEST_LLM_KEY = "sk-test";
    try {
      const d = freshDir("llm");
      const o = opts({ run: d, subjects: 3, scenesPerSubject: k, llmUrl: fake.url, llmModel: "fake-7b", llmKeyEnv: "PATCHDPO_TEST_LLM_KEY", llmBatch: 2, llmBackoffMs: 1, log: (l) => log.push(l) });
      const res = await run(o);
      expect(res).toMatchObject({ rows: 3, status: "written" });
      expect(fake.requests.length).toBe(6);
      expect(log.filter((l) => l.includes("retrying")).length).toBe(3);
      expect(log.join("\n")).toMatch(/HTTP 503[\s\S]*not JSON[\s\S]*schema/);
      expect(fake.requests.every((r) => r.path === "/v1/chat/completions" && r.auth === "Bearer sk-test" && r.body.model === "fake-7b")).toBe(true);

      const rows = await rowsOf(d);
      expect(rows.map((r) => r.classNoun)).toEqual(["../../etc/passwd", "vase", "mug"]);
      for (const r of rows) {
        expect(r.subjectId).toMatch(/^[a-z0-9][a-z0-9_-]*-[0-9a-f]{8}$/);
        for (const s of [r.classNoun, ...r.attributes, r.referencePrompt, ...r.scenePrompts]) {
          expect(s).not.toMatch(/[\p{Cc}\p{Cf}]/u);
          expect(s.length).toBeLessThanOrEqual(LIMITS.prompt);
        }
        expect(r.referencePrompt).toContain("white background");
        expect(r.scenePrompts.length).toBe(k);
      }
      const n = rows[0]!;
      expect(n.subjectId.startsWith("etc_passwd-")).toBe(true);
      expect(n.attributes).toEqual(["red", "ceramic", "with a gold star logo"]);
      expect(n.referencePrompt).toBe("a red ceramic teapot [31m on a table, isolated on a white background, studio lighting, plain white background");
      expect(n.scenePrompts[0]).toBe("a red teapot on the beach"); // the case-insensitive duplicate is gone
      expect(n.scenePrompts[1]!.length).toBeLessThanOrEqual(LIMITS.prompt);

      // Same flags again: the file is kept, the model is not asked.
      expect((await run(o)).status).toBe("kept");
      expect(fake.requests.length).toBe(6);
    } finally {
      delete process.env.PATCHDPO_TEST_LLM_KEY;
      fake.stop();
    }
  });

  test("a 401 fails at once; endless bad replies fail after the retries", async () => {
    const fake = fakeLlm([{ status: 401, raw: '{"error":"bad key"}' }, ...Array.from({ length: 3 }, () => ({ content: "nope" }))]);
    try {
      const base = { subjects: 1, scenesPerSubject: 2, llmUrl: fake.url, llmModel: "m", llmBackoffMs: 1, llmRetries: 2 };
      await expect(run(opts({ run: freshDir("401"), ...base }))).rejects.toThrow(/HTTP 401.*--llm-key-env/);
      expect(fake.requests.length).toBe(1);
      await expect(run(opts({ run: freshDir("bad"), ...base }))).rejects.toThrow(/no valid reply after 3 attempts.*not JSON/);
      expect(fake.requests.length).toBe(4);
    } finally {
      fake.stop();
    }
  });

  test("sanitizeSubject and cleanText", () => {
    expect(cleanText("a\u0000b\u200bc\td  ", 10)).toBe("a b c d");
    expect(cleanText("word ".repeat(20), 22)).toBe("word word word word");
    expect(sanitizeSubject({ classNoun: "\u0000 \u0007", attributes: [], referencePrompt: "x", scenePrompts: ["a"] }, 1)).toBeNull();
    expect(sanitizeSubject({ classNoun: "cup", attributes: [], referencePrompt: "", scenePrompts: ["a"] }, 1)).toBeNull();
    expect(sanitizeSubject({ classNoun: "cup", attributes: Array(20).fill("x"), referencePrompt: "r", scenePrompts: ["a", "b"] }, 1)?.attributes.length).toBe(LIMITS.attributes);
  });
});

// ---------------------------------------------------------------------------------------------
// CLI.

function cli(args: string[]) {
  const p = Bun.spawnSync(["bun", SCRIPT, ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

describe("CLI", () => {
  test("--help exits 0 and shows every default", () => {
    const r = cli(["--help"]);
    expect(r.code).toBe(0);
    for (const s of ["--subjects", "(default: 100)", "--scenes-per-subject", "(default: 4;", "--seed", "--world", "(default: open)", "--llm-url", "--llm-model", "--llm-key-env", "--force"]) {
      expect(r.out).toContain(s);
    }
  });

  test("bad flags exit 2 without writing", () => {
    const d = freshDir("cli-bad");
    const bad = [
      ["--subjects", "0"], ["--subjects", "1.5"], ["--seed", "-1"], ["--world", "mars"], ["--bogus"],
      ["--scenes-per-subject", String(maxScenesPerSubject() + 1)], ["--world", "tiny", "--scenes-per-subject", "5"], ["--world", "tiny", "--tiny-split", "nope"],
      ["--llm-url", "http://127.0.0.1:9/v1"], ["--llm-url", "ftp://host/v1", "--llm-model", "m"], ["--world", "tiny", "--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m"],
      ["--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m", "--llm-key-env", "PATCHDPO_SURELY_UNSET_VAR"],
    ];
    for (const args of bad) {
      const r = cli(["--run", d, ...args]);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.err).toStartWith("error: ");
    }
    expect(cli(["--subjects", "3"]).code).toBe(2); // no --run
    expect(() => readFileSync(join(d, "prompts.jsonl"))).toThrow();
  });

  test("a run, a same-flag rerun (exit 0), a different-flag rerun (exit 1)", () => {
    const d = freshDir("cli");
    const args = ["--run", d, "--world", "tiny", "--subjects", "5", "--scenes-per-subject", "2", "--seed", "9"];
    expect(cli(args).code).toBe(0);
    const first = bytes(d);
    expect(cli(args).code).toBe(0);
    expect(bytes(d)).toBe(first);
    const r = cli([...args.slice(0, -1), "10"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("--force");
    expect(first).toBe(synthesizeTiny({ subjects: 5, scenesPerSubject: 2, seed: 9, split: "all" }).map((x) => `${JSON.stringify(x)}\n`).join(""));
  });
});
