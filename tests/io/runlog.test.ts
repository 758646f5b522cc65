import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../lib/io/errors.ts";
import { readRunJson, recordStep, type RunJson } from "../../lib/io/runlog.ts";

const base = mkdtempSync(join(tmpdir(), "patchdpo-runlog-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const freshRun = () => join(base, `run${n++}`);
const runJson = (dir: string) => JSON.parse(readFileSync(join(dir, "run.json"), "utf8")) as RunJson;
const pkgVersion = (JSON.parse(readFileSync(join(import.meta.dir, "../../package.json"), "utf8")) as { version: string }).version;

describe("recordStep", () => {
  test("records options, timings, versions and status, and returns fn's value", async () => {
    const run = freshRun();
    const opts = { run, subjects: 500, seed: 0n, device: "cpu", skip: undefined, cb: () => 1 };
    const out = await recordStep(run, "synthesize-prompts", opts, async () => {
      await Bun.sleep(30);
      return 42;
    });
    expect(out).toBe(42);
    const [e, ...rest] = runJson(run).steps;
    expect(rest).toEqual([]);
    expect(e!.step).toBe("synthesize-prompts");
    expect(e!.status).toBe("ok");
    expect(e!.options).toEqual({ run, subjects: 500, seed: "0", device: "cpu" });
    expect(e!.seconds).toBeGreaterThanOrEqual(0.02);
    expect(Date.parse(e!.finishedAt!)).toBeGreaterThanOrEqual(Date.parse(e!.startedAt));
    expect(e!.versions.patchdpo).toBe(pkgVersion);
    expect(e!.versions.bun).toBe(Bun.version);
    expect(e!.versions.platform).toBe(`${process.platform}-${process.arch}`);
    expect(typeof e!.versions.onnxruntime).toBe("object");
    expect((e!.versions.onnxruntime as Record<string, string>).common).toMatch(/^\d+\.\d+/);
    expect(e!.error).toBeUndefined();
    expect(readFileSync(join(run, "run.json"), "utf8").endsWith("}\n")).toBe(true);
    expect(existsSync(join(run, "run.json.lock"))).toBe(false);
  });

  test("a failure is recorded with its message and rethrown; later steps append", async () => {
    const run = freshRun();
    await expect(
      recordStep(run, "score-patches", { shard: "0/2" }, async () => {
        throw new UserError("generations.jsonl:3: image: missing");
      }),
    ).rejects.toThrow("generations.jsonl:3: image: missing");
    await recordStep(run, "score-patches", { shard: "1/2" }, () => "sync fn works too");
    const steps = runJson(run).steps;
    expect(steps.map((s) => [s.status, s.error])).toEqual([
      ["failed", "generations.jsonl:3: image: missing"],
      ["ok", undefined],
    ]);
  });

  test("concurrent steps (shard jobs) do not lose each other's entries", async () => {
    const run = freshRun();
    await Promise.all(Array.from({ length: 8 }, (_, i) => recordStep(run, "generate-images", { shard: `${i}/8` }, async () => i)));
    const shards = runJson(run).steps.map((s) => (s.options as { shard: string }).shard).sort();
    expect(shards).toEqual(Array.from({ length: 8 }, (_, i) => `${i}/8`));
  });

  test("a stale lock left by a killed process is broken", async () => {
    const run = freshRun();
    await recordStep(run, "a", {}, async () => 0);
    const lock = join(run, "run.json.lock");
    writeFileSync(lock, "99999\n");
    const old = new Date(Date.now() - 10 * 60_000);
    utimesSync(lock, old, old);
    await recordStep(run, "b", {}, async () => 0);
    expect(runJson(run).steps.map((s) => s.step)).toEqual(["a", "b"]);
  });

  test("keeps other top-level keys; a corrupt run.json is a clear error", async () => {
    const run = freshRun();
    await recordStep(run, "a", {}, async () => 0);
    const doc = runJson(run);
    writeFileSync(join(run, "run.json"), JSON.stringify({ ...doc, note: "baseline" }));
    await recordStep(run, "b", {}, async () => 0);
    expect(runJson(run).note).toBe("baseline");
    writeFileSync(join(run, "run.json"), "{ not json");
    await expect(readRunJson(run)).rejects.toThrow(/run\.json: not valid JSON/);
    expect(await readRunJson(freshRun())).toEqual({ steps: [] });
  });
});
