// lib/tinyworld is a leaf (DESIGN.md section 3): scripts, bench and tests use it; no other lib
// folder imports it, and it imports nothing of the model stack (only lib/io, lib/rng.ts).

import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const LIB = resolve(import.meta.dir, "../../lib");
const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []));
const imports = (file: string) => [...readFileSync(file, "utf8").matchAll(/^import[^;]*?from\s+"([^"]+)"/gms)].map((m) => resolve(join(file, ".."), m[1]!));

test("no lib folder imports lib/tinyworld", () => {
  const bad = files(LIB)
    .filter((f) => !relative(LIB, f).startsWith("tinyworld"))
    .flatMap((f) => imports(f).filter((i) => relative(LIB, i).startsWith("tinyworld")).map((i) => `${relative(LIB, f)} -> ${relative(LIB, i)}`));
  expect(bad).toEqual([]);
});

test("lib/tinyworld imports only itself, lib/io and lib/rng.ts", () => {
  const bad = files(join(LIB, "tinyworld")).flatMap((f) =>
    imports(f)
      .filter((i) => i.startsWith(LIB))
      .map((i) => relative(LIB, i))
      .filter((i) => !i.startsWith("tinyworld") && !i.startsWith("io/") && i !== "rng.ts")
      .map((i) => `${relative(LIB, f)} -> ${i}`),
  );
  expect(bad).toEqual([]);
});
