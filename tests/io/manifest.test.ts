import { afterAll, describe, expect, test } from "bun:test";
import { type } from "arktype";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../lib/io/errors.ts";
import { appendJsonl, ManifestError, readJsonl, readJsonlAll, repairJsonlTail, writeJsonl } from "../../lib/io/manifest.ts";

const dir = mkdtempSync(join(tmpdir(), "patchdpo-manifest-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const Row = type({ id: "string", seed: "number.integer", tags: "string[]", "meta?": { k: "number" } });
type Row = typeof Row.infer;

function put(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

async function errorOf(p: Promise<unknown>): Promise<ManifestError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ManifestError);
    expect(e).toBeInstanceOf(UserError);
    return e as ManifestError;
  }
  throw new Error("expected a ManifestError");
}

describe("readJsonl", () => {
  test("yields validated rows; blank lines and CRLF are fine", async () => {
    const p = put("ok.jsonl", '{"id":"a","seed":1,"tags":[]}\r\n\n  \n{"id":"b","seed":2,"tags":["x"],"meta":{"k":3}}\n');
    const rows: Row[] = [];
    for await (const r of readJsonl(p, Row)) rows.push(r);
    expect(rows).toEqual([
      { id: "a", seed: 1, tags: [] },
      { id: "b", seed: 2, tags: ["x"], meta: { k: 3 } },
    ]);
  });

  test("a bad row fails with <file>:<line>: <field path>: <message>", async () => {
    const p = put("bad.jsonl", '{"id":"a","seed":1,"tags":[]}\n\n{"id":"b","seed":1.5,"tags":["x",2]}\n');
    const e = await errorOf(readJsonlAll(p, Row));
    expect(e.message).toBe(`${p}:3: seed: must be an integer (was 1.5)\n${p}:3: tags[1]: must be a string (was a number)`);
    expect(e.file).toBe(p);
    expect(e.line).toBe(3);
  });

  test("nested fields, missing keys and non-object rows", async () => {
    const nested = await errorOf(readJsonlAll(put("nested.jsonl", '{"id":"a","seed":1,"tags":[],"meta":{"k":"no"}}\n'), Row));
    expect(nested.message).toEndWith(":1: meta.k: must be a number (was a string)");
    const missing = await errorOf(readJsonlAll(put("missing.jsonl", '{"id":"a","tags":[]}\n'), Row));
    expect(missing.message).toEndWith(":1: seed: must be a number (was missing)");
    const scalar = await errorOf(readJsonlAll(put("scalar.jsonl", "42\n"), Row));
    expect(scalar.message).toMatch(/scalar\.jsonl:1: \(row\): must be an object \(was a number\)/);
  });

  test("invalid JSON names the line", async () => {
    const p = put("json.jsonl", '{"id":"a","seed":1,"tags":[]}\n{"id": "b", seed: 2}\n');
    const e = await errorOf(readJsonlAll(p, Row));
    expect(e.message).toStartWith(`${p}:2: invalid JSON: `);
    expect(e.message).toContain('{\\"id\\": \\"b\\", seed: 2}');
  });

  test("a truncated final line (crash mid-append) is reported as such", async () => {
    const p = put("torn.jsonl", '{"id":"a","seed":1,"tags":[]}\n{"id":"b","se');
    const e = await errorOf(readJsonlAll(p, Row));
    expect(e.message).toStartWith(`${p}:2: truncated last line (no trailing newline, not valid JSON)`);
    expect(e.message).toContain("interrupted mid-append");
    // Rows before it were fine and are yielded before the error.
    const seen: string[] = [];
    await errorOf(
      (async () => {
        for await (const r of readJsonl(p, Row)) seen.push(r.id);
      })(),
    );
    expect(seen).toEqual(["a"]);
  });

  test("a torn append cut inside a multi-byte character is also reported as truncated", async () => {
    const snow = new TextEncoder().encode('{"id":"☃"}');
    const q = join(dir, "torn-utf8.jsonl");
    writeFileSync(q, new Uint8Array([...new TextEncoder().encode('{"id":"a","seed":1,"tags":[]}\n'), ...snow.subarray(0, 8)]));
    expect((await errorOf(readJsonlAll(q, Row))).message).toStartWith(`${q}:2: truncated last line`);
  });

  test("a complete final row without its newline (hand-edited file) is accepted", async () => {
    const rows = await readJsonlAll(put("nonl.jsonl", '{"id":"a","seed":1,"tags":[]}\n{"id":"b","seed":2,"tags":[]}'), Row);
    expect(rows.map((r) => r.id)).toEqual(["a", "b"]);
  });

  test("streams: lines across 64 KiB chunk boundaries, a 200 KB line, exact line numbers far in", async () => {
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++) lines.push(JSON.stringify({ id: `row-${i}`, seed: i, tags: ["x".repeat(i % 97)] }));
    lines[10] = JSON.stringify({ id: "long", seed: 10, tags: ["y".repeat(200_000)] });
    lines[2500] = JSON.stringify({ id: "bad", seed: "2500", tags: [] });
    const p = put("big.jsonl", `${lines.join("\n")}\n`);
    const e = await errorOf(readJsonlAll(p, Row));
    expect(e.message).toBe(`${p}:2501: seed: must be a number (was a string)`);
    lines[2500] = JSON.stringify({ id: "good", seed: 2500, tags: [] });
    const rows = await readJsonlAll(put("big2.jsonl", `${lines.join("\n")}\n`), Row);
    expect(rows.length).toBe(3000);
    expect(rows[10]!.tags[0]!.length).toBe(200_000);
    expect(rows[2999]!.id).toBe("row-2999");
  });

  test("multi-byte UTF-8 split across chunks; invalid UTF-8 names the line", async () => {
    const snow = "☃".repeat(30_000); // 90 KB of 3-byte characters
    const p = put("utf8.jsonl", `${JSON.stringify({ id: snow, seed: 0, tags: [] })}\n`);
    expect((await readJsonlAll(p, Row))[0]!.id).toBe(snow);
    const bytes = new Uint8Array([...new TextEncoder().encode('{"id":"a","seed":0,"tags":[]}\n{"id":"'), 0xff, ...new TextEncoder().encode('","seed":0,"tags":[]}\n')]);
    const q = join(dir, "badutf8.jsonl");
    writeFileSync(q, bytes);
    expect((await errorOf(readJsonlAll(q, Row))).message).toBe(`${q}:2: invalid UTF-8`);
  });

  test("a missing manifest says which step should have written it", async () => {
    const e = await errorOf(readJsonlAll(join(dir, "none.jsonl"), Row));
    expect(e.message).toMatch(/none\.jsonl: no such manifest \(did the step that writes it run\?\)/);
  });
});

describe("writeJsonl", () => {
  test("round trip, one compact JSON object per line", async () => {
    const p = join(dir, "out", "rows.jsonl");
    const rows: Row[] = [
      { id: "a", seed: 1, tags: ["é", 'q"uote'] },
      { id: "b\nc", seed: 2, tags: [] },
    ];
    await writeJsonl(p, rows, Row);
    const text = readFileSync(p, "utf8");
    expect(text.split("\n").length).toBe(3);
    expect(text.endsWith("\n")).toBe(true);
    expect(await readJsonlAll(p, Row)).toEqual(rows);
  });

  test("validates every row before writing anything", async () => {
    const p = join(dir, "never.jsonl");
    const e = await errorOf(writeJsonl(p, [{ id: "a", seed: 1, tags: [] }, { id: "b", seed: -0.5, tags: [] }] as Row[], Row));
    expect(e.message).toBe(`${p}:2: seed: must be an integer (was -0.5)`);
    expect(existsSync(p)).toBe(false);
  });

  test("empty manifest", async () => {
    const p = join(dir, "empty.jsonl");
    await writeJsonl(p, []);
    expect(readFileSync(p, "utf8")).toBe("");
    expect(await readJsonlAll(p, Row)).toEqual([]);
  });
});

describe("appendJsonl and repairJsonlTail", () => {
  test("appends complete lines; concurrent appends never interleave", async () => {
    const p = join(dir, "append.jsonl");
    await appendJsonl(p, { id: "first", seed: 0, tags: [] }, Row);
    await Promise.all(Array.from({ length: 40 }, (_, i) => appendJsonl(p, { id: `r${i}`, seed: i, tags: ["z".repeat(5000)] }, Row)));
    const rows = await readJsonlAll(p, Row);
    expect(rows.length).toBe(41);
    expect(new Set(rows.map((r) => r.id)).size).toBe(41);
  });

  test("a row the schema rejects is not appended", async () => {
    const p = put("append-bad.jsonl", '{"id":"a","seed":1,"tags":[]}\n');
    await expect(appendJsonl(p, { id: "b", seed: "x" } as unknown as Row, Row)).rejects.toThrow(/append-bad\.jsonl \(row to append\): seed: must be a number \(was a string\)/);
    expect(readFileSync(p, "utf8")).toBe('{"id":"a","seed":1,"tags":[]}\n');
  });

  test("refuses to append after a torn line; repair removes it, then appending works", async () => {
    const p = put("resume.jsonl", '{"id":"a","seed":1,"tags":[]}\n{"id":"b","se');
    await expect(appendJsonl(p, { id: "c", seed: 3, tags: [] }, Row)).rejects.toThrow(/ends with a partial line/);
    expect(await repairJsonlTail(p)).toBe("removed");
    expect(readFileSync(p, "utf8")).toBe('{"id":"a","seed":1,"tags":[]}\n');
    await appendJsonl(p, { id: "c", seed: 3, tags: [] }, Row);
    expect((await readJsonlAll(p, Row)).map((r) => r.id)).toEqual(["a", "c"]);
  });

  test("repair completes a valid last row, and leaves good files and missing files alone", async () => {
    const p = put("hand.jsonl", '{"id":"a","seed":1,"tags":[]}');
    expect(await repairJsonlTail(p)).toBe("completed");
    expect(readFileSync(p, "utf8")).toBe('{"id":"a","seed":1,"tags":[]}\n');
    expect(await repairJsonlTail(p)).toBe("none");
    expect(await repairJsonlTail(join(dir, "absent.jsonl"))).toBe("none");
    const single = put("single-torn.jsonl", '{"id":"a"');
    expect(await repairJsonlTail(single)).toBe("removed");
    expect(readFileSync(single, "utf8")).toBe("");
    // A torn line longer than the 64 KiB scan block.
    const long = put("long-torn.jsonl", `{"id":"a","seed":1,"tags":[]}\n{"id":"${"x".repeat(150_000)}`);
    expect(await repairJsonlTail(long)).toBe("removed");
    expect(readFileSync(long, "utf8")).toBe('{"id":"a","seed":1,"tags":[]}\n');
  });
});
