// JSONL manifests: one JSON object per line, every row validated by an arktype schema on the way
// in and (optionally) on the way out. A bad row fails with `<file>:<line>: <field>: <problem>`.
//
// Resumable steps append one finished row at a time (appendJsonl: one write() on an O_APPEND
// descriptor, so a crash leaves whole rows plus at most one partial last line). Readers report such
// a partial last line as a crash artefact; repairJsonlTail removes it before a resumed step appends.

import { ArkErrors } from "arktype";
import { writeSync } from "node:fs";
import { open } from "node:fs/promises";
import { resolve } from "node:path";
import { writeFileAtomic } from "./atomic.ts";
import { UserError } from "./errors.ts";
import { faultPoint } from "./fault.ts";

/** Anything callable like an arktype Type: returns the validated row or arktype's errors. */
export type RowSchema<T> = (data: unknown) => T | ArkErrors;

/** A manifest row that fails to parse or validate. */
export class ManifestError extends UserError {
  constructor(
    message: string,
    readonly file: string,
    readonly line: number,
  ) {
    super(message);
    this.name = "ManifestError";
  }
}

/** `<where>: <field path>: <arktype's message>`, one line per problem. */
function describeIssues(where: string, errors: ArkErrors): string {
  return errors.map((e) => `${where}: ${e.propString === "" ? "(row)" : e.propString}: ${e.problem}`).join("\n");
}

/** Validates a row; `line` 0 means a row not yet in the file (an append). */
function validate<T>(file: string, line: number, schema: RowSchema<T>, value: unknown): T {
  const out = schema(value);
  if (out instanceof ArkErrors) {
    throw new ManifestError(describeIssues(line > 0 ? `${file}:${line}` : `${file} (row to append)`, out), file, line);
  }
  return out;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

function truncatedLine(file: string, lineNo: number): ManifestError {
  return new ManifestError(
    `${file}:${lineNo}: truncated last line (no trailing newline, not valid JSON): the step that wrote ` +
      `this file was probably interrupted mid-append. Rerun that step (it resumes and repairs the file), ` +
      `or delete line ${lineNo}.`,
    file,
    lineNo,
  );
}

function parseLine<T>(file: string, lineNo: number, bytes: Uint8Array, complete: boolean, schema: RowSchema<T>): T {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    // A cut inside a multi-byte character is a torn append too.
    throw complete ? new ManifestError(`${file}:${lineNo}: invalid UTF-8`, file, lineNo) : truncatedLine(file, lineNo);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    if (!complete) throw truncatedLine(file, lineNo);
    const shown = text.length > 80 ? `${text.slice(0, 77)}...` : text;
    throw new ManifestError(`${file}:${lineNo}: invalid JSON: ${(err as Error).message} in ${JSON.stringify(shown)}`, file, lineNo);
  }
  return validate(file, lineNo, schema, value);
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function isBlank(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  return true;
}

/**
 * Streams the rows of a JSONL file (64 KiB reads; memory stays flat for any file size), validating
 * each against `schema`. Blank lines are skipped (they still count for line numbers); `\r\n` works.
 * A missing file, invalid JSON, a row the schema rejects, or a truncated last line throws a
 * ManifestError naming `<file>:<line>`.
 */
export async function* readJsonl<T>(path: string, schema: RowSchema<T>): AsyncGenerator<T> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new ManifestError(`${path}: no such manifest (did the step that writes it run?)`, path, 0);
    throw err;
  }
  try {
    const chunk = new Uint8Array(64 * 1024);
    let pending: Uint8Array[] = []; // pieces of a line that started in earlier chunks
    let lineNo = 0;
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      const data = chunk.subarray(0, bytesRead);
      let start = 0;
      for (let nl = data.indexOf(0x0a); nl !== -1; nl = data.indexOf(0x0a, start)) {
        lineNo++;
        const line = pending.length > 0 ? concat([...pending, data.subarray(start, nl)]) : data.subarray(start, nl);
        pending = [];
        start = nl + 1;
        if (!isBlank(line)) yield parseLine(path, lineNo, line, true, schema);
      }
      if (start < data.length) pending.push(data.slice(start)); // copy: `chunk` is reused by the next read
    }
    const last = concat(pending.length > 0 ? pending : [new Uint8Array(0)]);
    if (!isBlank(last)) yield parseLine(path, lineNo + 1, last, false, schema);
  } finally {
    await fh.close();
  }
}

/** All validated rows of a JSONL file. */
export async function readJsonlAll<T>(path: string, schema: RowSchema<T>): Promise<T[]> {
  const rows: T[] = [];
  for await (const row of readJsonl(path, schema)) rows.push(row);
  return rows;
}

function serializeRow(file: string, line: number, row: unknown): string {
  const text = JSON.stringify(row);
  if (text === undefined) {
    throw new ManifestError(`${line > 0 ? `${file}:${line}` : `${file} (row to append)`}: row is not JSON-serializable (${typeof row})`, file, line);
  }
  return text;
}

/**
 * Writes rows as JSONL atomically (temp file + rename). With a schema, every row is validated
 * before anything is written; an invalid row throws a ManifestError with the line it would have had.
 */
export async function writeJsonl<T>(path: string, rows: Iterable<T>, schema?: RowSchema<T>): Promise<void> {
  const lines: string[] = [];
  let line = 0;
  for (const row of rows) {
    line++;
    if (schema) validate(path, line, schema, row);
    lines.push(`${serializeRow(path, line, row)}\n`);
  }
  await writeFileAtomic(path, lines.join(""));
}

/** The pending appends of this process, per file (see appendJsonl). */
const appending = new Map<string, Promise<void>>();

/**
 * Appends one row as one complete line, in a single write() on an O_APPEND descriptor: lines never
 * interleave, and a crash loses at most this row. Validates first when given a schema. Refuses to
 * append after a partial last line (see repairJsonlTail). Appends of one process to one file run
 * one after another: the partial-line check reads the file's last byte, which another append still
 * in flight may be writing (a concurrent reader can see a write half done), and would then refuse
 * a healthy file. Separate processes do not append to one file at once: each shard has its own
 * manifest and lock (lib/io/lock.ts).
 */
export async function appendJsonl<T>(path: string, row: T, schema?: RowSchema<T>): Promise<void> {
  if (schema) validate(path, 0, schema, row);
  const key = resolve(path);
  const next = (appending.get(key) ?? Promise.resolve()).then(() => appendNow(path, row));
  const settled = next.then(() => {}, () => {});
  appending.set(key, settled);
  settled.then(() => {
    if (appending.get(key) === settled) appending.delete(key);
  });
  return next;
}

async function appendNow<T>(path: string, row: T): Promise<void> {
  const bytes = new TextEncoder().encode(`${serializeRow(path, 0, row)}\n`);
  const fh = await open(path, "a+");
  try {
    const { size } = await fh.stat();
    if (size > 0) {
      const last = new Uint8Array(1);
      await fh.read(last, 0, 1, size - 1);
      if (last[0] !== 0x0a) {
        throw new ManifestError(
          `${path}: the file ends with a partial line (an interrupted append?); not appending after it. ` +
            `Call repairJsonlTail (resumable steps do this when they start) or rerun the step with --force.`,
          path,
          0,
        );
      }
    }
    faultPoint(`append ${path.split(/[\\/]/).pop()}`, () => writeSync(fh.fd, bytes, 0, bytes.length >> 1)); // a torn append
    const { bytesWritten } = await fh.write(bytes, 0, bytes.length, null);
    if (bytesWritten !== bytes.length) {
      throw new Error(`${path}: short append (${bytesWritten} of ${bytes.length} bytes; disk full?)`);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Makes a JSONL file safe to append to after a crash: a final line without its newline is removed
 * if it is not valid JSON (a torn append), or completed with "\n" if it is (a hand-edited file).
 * Returns what it did. A missing file is fine ("none").
 */
export async function repairJsonlTail(path: string): Promise<"none" | "removed" | "completed"> {
  let fh;
  try {
    fh = await open(path, "r+");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "none";
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (size === 0) return "none";
    // Scan back from the end for the last newline, 64 KiB at a time.
    const block = new Uint8Array(64 * 1024);
    let end = size;
    let lastNl = -1;
    while (end > 0 && lastNl < 0) {
      const start = Math.max(0, end - block.length);
      const { bytesRead } = await fh.read(block, 0, end - start, start);
      const i = block.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (i >= 0) lastNl = start + i;
      end = start;
    }
    if (lastNl === size - 1) return "none";
    const tailStart = lastNl + 1;
    const tail = new Uint8Array(size - tailStart);
    await fh.read(tail, 0, tail.length, tailStart);
    let ok = true;
    try {
      JSON.parse(decoder.decode(tail));
    } catch {
      ok = false;
    }
    if (ok) {
      await fh.write(new Uint8Array([0x0a]), 0, 1, size);
      return "completed";
    }
    await fh.truncate(tailStart);
    return "removed";
  } finally {
    await fh.close();
  }
}

/**
 * Rows by id, refusing a duplicated id with both line numbers: a second row with one id would
 * otherwise silently win over the first (files are named by id, joins look rows up by it).
 */
export function byUniqueId<T>(rows: readonly T[], file: string, key: (row: T) => string = (r) => (r as { id: string }).id): Map<string, T> {
  const out = new Map<string, T>();
  const line = new Map<string, number>();
  rows.forEach((r, i) => {
    const id = key(r);
    if (out.has(id)) {
      throw new ManifestError(`${file}:${i + 1}: duplicate id "${id}" (line ${line.get(id)! + 1} has it too); ids must be unique: remove or rename one of the rows, or redo the step that wrote the file`, file, i + 1);
    }
    out.set(id, r);
    line.set(id, i);
  });
  return out;
}
