// The lib/io pieces that make reruns safe (issue 12): the staging swap of a forced rerun, the
// per-manifest lock, recorded settings, the options check that run() and the CLI share, portable
// paths, duplicate ids, and the finite-weights check.

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type } from "arktype";
import { HOST_TAG } from "../../lib/io/atomic.ts";
import { resolveOptions } from "../../lib/io/cli.ts";
import { UsageError, UserError } from "../../lib/io/errors.ts";
import { acquireLock } from "../../lib/io/lock.ts";
import { byUniqueId } from "../../lib/io/manifest.ts";
import { fromPortablePath, portablePath } from "../../lib/io/rundir.ts";
import { assertFiniteWeights, writeSafetensors } from "../../lib/io/safetensors.ts";
import { checkResumeSettings, settingsPath, writeSettings } from "../../lib/io/settings.ts";
import { Staging } from "../../lib/io/staging.ts";

const base = mkdtempSync(join(tmpdir(), "patchdpo-reruns-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const fresh = () => {
  const d = join(base, `d${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
};
const deadPid = () => Number(Bun.spawnSync([process.execPath, "-e", "console.log(process.pid)"]).stdout.toString().trim());

describe("Staging: a forced rerun replaces results only when it commits", () => {
  test("staged files stay aside until commit; commit deletes what it is told, moves the rest, the listed files last", async () => {
    const root = fresh();
    writeFileSync(join(root, "m.jsonl"), "old\n");
    mkdirSync(join(root, "maps"));
    writeFileSync(join(root, "maps", "a.bin"), "old-a");
    writeFileSync(join(root, "maps", "gone.bin"), "old-gone");
    const s = new Staging(root, "m");
    s.begin();
    writeFileSync(s.path("m.jsonl"), "new\n");
    mkdirSync(join(s.dir, "maps"), { recursive: true });
    writeFileSync(s.path("maps/a.bin"), "new-a");
    expect(readFileSync(join(root, "m.jsonl"), "utf8")).toBe("old\n"); // nothing replaced yet
    await s.commit(["maps/gone.bin"], ["m.jsonl"]);
    expect(readFileSync(join(root, "m.jsonl"), "utf8")).toBe("new\n");
    expect(readFileSync(join(root, "maps", "a.bin"), "utf8")).toBe("new-a");
    expect(existsSync(join(root, "maps", "gone.bin"))).toBe(false);
    expect(existsSync(join(root, ".staging"))).toBe(false);
  });

  test("recover: an unfinished forced run is discarded; a decided swap that a crash interrupted is completed", () => {
    const root = fresh();
    writeFileSync(join(root, "m.jsonl"), "old\n");
    const s = new Staging(root, "m");
    s.begin();
    writeFileSync(s.path("m.jsonl"), "half\n");
    expect(s.recover()).toBe("discarded");
    expect(existsSync(s.dir)).toBe(false);
    expect(readFileSync(join(root, "m.jsonl"), "utf8")).toBe("old\n");
    // A commit decided (its .commit written) but killed before the renames: rolled forward.
    s.begin();
    writeFileSync(s.path("m.jsonl"), "new\n");
    writeFileSync(join(s.dir, ".commit"), JSON.stringify({ delete: [], last: ["m.jsonl"] }));
    expect(s.recover()).toBe("rolled-forward");
    expect(readFileSync(join(root, "m.jsonl"), "utf8")).toBe("new\n");
    expect(s.recover()).toBe("none");
  });

  test("staged paths cannot leave the staging folder", () => {
    expect(() => new Staging(fresh(), "m").path("../../x")).toThrow(UserError);
  });
});

describe("acquireLock: one writer per manifest", () => {
  test("a running holder is refused with its pid; a killed holder's lock is taken over; release removes it", async () => {
    const d = fresh();
    const path = join(d, "generations.shard-0-of-2.jsonl.lock");
    const held = await acquireLock(path, "generate-images --shard 0/2");
    await expect(acquireLock(path, "generate-images --shard 0/2")).rejects.toThrow(new RegExp(`already running \\(pid ${process.pid} on .*delete ${path.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`));
    held.release();
    expect(existsSync(path)).toBe(false);
    writeFileSync(path, JSON.stringify({ pid: deadPid(), host: "here", hostTag: HOST_TAG, what: "x", since: "then" }));
    const taken = await acquireLock(path, "generate-images --shard 0/2");
    expect(JSON.parse(readFileSync(path, "utf8")).pid).toBe(process.pid);
    taken.release();
  });

  test("another host's lock with a fresh time stamp is respected", async () => {
    const path = join(fresh(), "x.lock");
    writeFileSync(path, JSON.stringify({ pid: 1, host: "node7", hostTag: "ffffffff", what: "score-patches --shard 1/4", since: "then" }));
    await expect(acquireLock(path, "score-patches --shard 1/4")).rejects.toThrow(/score-patches --shard 1\/4 is already running \(pid 1 on node7/);
  });
});

describe("recorded settings", () => {
  test("a resume with other settings is refused naming each flag and both values; same settings pass; no record passes", async () => {
    const d = fresh();
    const m = join(d, "generations.jsonl");
    writeFileSync(m, '{"id":"a"}\n');
    checkResumeSettings(m, { seed: 1 }, "generate-images"); // no record: an older run, resumed as it is
    await writeSettings(m, { step: "generate-images", settings: { seed: 0, ipScale: 0.6, pairPrompt: "reference" } });
    expect(settingsPath(m)).toBe(join(d, "generations.settings.json"));
    checkResumeSettings(m, { seed: 0, ipScale: 0.6, pairPrompt: "reference" }, "generate-images");
    let err: unknown;
    try {
      checkResumeSettings(m, { seed: 1, ipScale: 0.8, pairPrompt: "reference" }, "generate-images");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    for (const part of ["--seed 0 then, 1 now", "--ip-scale 0.6 then, 0.8 now", "--force", "another --run"]) expect(msg).toContain(part);
    expect(msg).not.toContain("pair-prompt");
  });
});

describe("resolveOptions: run() and the CLI share defaults and the schema", () => {
  const Schema = type({ run: "string > 0", imageEncoder: "string > 0", lr: "number > 0", "maxSteps?": "number.integer > 0" });
  test("defaults fill what is not given (undefined counts as not given)", () => {
    expect(resolveOptions(Schema, { lr: 3e-5 }, { run: "r", imageEncoder: "m", lr: undefined })).toEqual({ run: "r", imageEncoder: "m", lr: 3e-5 });
  });
  test("errors name flags, not option keys", () => {
    expect(() => resolveOptions(Schema, { lr: 1 }, { run: "r", maxSteps: 1.5 })).toThrow(UsageError);
    expect(() => resolveOptions(Schema, { lr: 1 }, { run: "r", maxSteps: 1.5 })).toThrow(/--image-encoder is required; --max-steps must be an integer/);
    expect(() => resolveOptions(Schema, { lr: 1 }, { run: "r", imageEncoder: "m", lr: -1 })).toThrow(/--lr must be positive/);
  });
});

describe("portable paths and unique ids", () => {
  test("a path inside the base is stored relative and resolves against a copy; outside ones stay absolute", () => {
    expect(portablePath("/runs/a", "/runs/a/train/x.safetensors")).toBe("train/x.safetensors");
    expect(fromPortablePath("/runs/copy", "train/x.safetensors")).toBe("/runs/copy/train/x.safetensors");
    expect(portablePath("/runs/a", "/models/tiny")).toBe("/models/tiny");
    expect(portablePath("/runs/a", "/runs/ab/x")).toBe("/runs/ab/x");
    expect(portablePath("/runs/a/out", "/runs/a/images")).toBe("/runs/a/images");
  });
  test("byUniqueId refuses a duplicated id with both lines", () => {
    expect(() => byUniqueId([{ id: "a" }, { id: "b" }, { id: "a" }], "references.jsonl")).toThrow(/references.jsonl:3: duplicate id "a" \(line 1 has it too\)/);
    expect([...byUniqueId([{ id: "a" }, { id: "b" }], "r").keys()]).toEqual(["a", "b"]);
  });
});

describe("assertFiniteWeights", () => {
  test("NaN or Inf in F32 / F16 / BF16 tensors is refused naming file, tensor and position; finite files pass", async () => {
    const d = fresh();
    const ok = join(d, "ok.safetensors");
    await writeSafetensors(ok, { w: { dtype: "F32", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) } });
    assertFiniteWeights(ok);
    const cases: [string, "F32" | "F16" | "BF16", ArrayLike<number>, RegExp][] = [
      ["nan32", "F32", new Float32Array([0, 0, 0, 0, Number.NaN, 0]), /tensor "w" holds NaN at \[1, 1\]/],
      ["inf32", "F32", new Float32Array([0, Number.POSITIVE_INFINITY, 0, 0, 0, 0]), /holds an infinite value at \[0, 1\]/],
      ["nan16", "F16", new Uint16Array([0, 0, 0, 0x7e00, 0, 0]), /holds NaN at \[1, 0\]/],
      ["inf16", "BF16", new Uint16Array([0, 0, 0, 0, 0, 0x7f80]), /holds an infinite value at \[1, 2\]/],
    ];
    for (const [name, dtype, data, msg] of cases) {
      const f = join(d, `${name}.safetensors`);
      await writeSafetensors(f, { ok: { dtype: "F32", shape: [1], data: new Float32Array([1]) }, w: { dtype, shape: [2, 3], data: data as never } });
      expect(() => assertFiniteWeights(f, "IP-Adapter")).toThrow(msg);
      expect(() => assertFiniteWeights(f, "IP-Adapter")).toThrow(new RegExp(`${name}.safetensors: IP-Adapter tensor`));
    }
  });
});
