import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanOrphanTemps, HOST_TAG, tempPathFor, writeFileAtomic, writeJsonAtomic } from "../../lib/io/atomic.ts";

const dir = mkdtempSync(join(tmpdir(), "patchdpo-atomic-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const leftovers = (d: string) => readdirSync(d).filter((n) => n.includes(".tmp-"));

describe("writeFileAtomic", () => {
  test("writes strings and bytes, creating parent directories, leaving no temp file", async () => {
    const p = join(dir, "a", "b", "c.txt");
    await writeFileAtomic(p, "héllo\n");
    expect(readFileSync(p, "utf8")).toBe("héllo\n");
    await writeFileAtomic(p, new Uint8Array([1, 2, 3]));
    expect([...readFileSync(p)]).toEqual([1, 2, 3]);
    expect(leftovers(join(dir, "a", "b"))).toEqual([]);
  });

  test("streams chunks from sync and async iterables", async () => {
    const p = join(dir, "chunks.bin");
    await writeFileAtomic(p, [new Uint8Array([1]), new Uint8Array([2, 3])]);
    expect([...readFileSync(p)]).toEqual([1, 2, 3]);
    async function* gen() {
      yield new Uint8Array([9]);
      yield new Uint8Array([8]);
    }
    await writeFileAtomic(p, gen());
    expect([...readFileSync(p)]).toEqual([9, 8]);
  });

  test("temp file is named <base>.tmp-<pid>-<host>-<rand> in the same directory", () => {
    const t = tempPathFor(join(dir, "x", "model.safetensors"));
    expect(t.startsWith(join(dir, "x", `model.safetensors.tmp-${process.pid}-${HOST_TAG}-`))).toBe(true);
    expect(t).toMatch(/\.tmp-\d+-[0-9a-f]{8}-[0-9a-f]{8}$/);
  });

  test("a failure mid-write removes the temp file and keeps the old file", async () => {
    const p = join(dir, "keep.txt");
    writeFileSync(p, "old contents");
    async function* failing() {
      yield new Uint8Array(1024);
      throw new Error("disk on fire");
    }
    await expect(writeFileAtomic(p, failing())).rejects.toThrow("disk on fire");
    expect(readFileSync(p, "utf8")).toBe("old contents");
    expect(leftovers(dir)).toEqual([]);
  });

  test("keeps the permission bits of the file it replaces", async () => {
    const p = join(dir, "secret.json");
    writeFileSync(p, "{}");
    chmodSync(p, 0o600);
    await writeFileAtomic(p, "{\"a\":1}");
    expect(statSync(p).mode & 0o777).toBe(0o600);
  });

  test("fails clearly when the parent is a file", async () => {
    const f = join(dir, "plainfile");
    writeFileSync(f, "x");
    await expect(writeFileAtomic(join(f, "child.txt"), "y")).rejects.toThrow();
  });

  test("atomic write survives a kill mid-write", async () => {
    const target = join(dir, "weights.dat");
    const old = new Uint8Array(1 << 20);
    crypto.getRandomValues(old.subarray(0, 65536));
    old.set(old.subarray(0, 65536), 65536 * 3);
    writeFileSync(target, old);

    const helper = join(import.meta.dir, "helpers", "slow-writer.ts");
    const child = Bun.spawn([process.execPath, helper, target, "200"], { stdout: "pipe", stderr: "pipe" });
    const prefix = `weights.dat.tmp-${child.pid}-`;
    let tmpSize = 0;
    const deadline = Date.now() + 30_000;
    // Wait until the child has written a good part of the replacement, then kill it hard.
    while (Date.now() < deadline) {
      const tmp = readdirSync(dir).find((n) => n.startsWith(prefix));
      if (tmp) {
        try {
          tmpSize = statSync(join(dir, tmp)).size;
        } catch {
          tmpSize = 0;
        }
        if (tmpSize >= 16 << 20) break;
      }
      if (child.exitCode !== null) break;
      await Bun.sleep(5);
    }
    child.kill("SIGKILL");
    await child.exited;
    const stdout = await new Response(child.stdout).text();
    expect(stdout).not.toContain("finished");
    expect(child.signalCode).toBe("SIGKILL");
    expect(tmpSize).toBeGreaterThanOrEqual(16 << 20);

    // The old file is intact and byte-identical; the partial temp file is all that is left.
    const now = readFileSync(target);
    expect(now.length).toBe(old.length);
    expect(Buffer.compare(now, Buffer.from(old))).toBe(0);
    const partial = readdirSync(dir).filter((n) => n.startsWith(prefix));
    expect(partial.length).toBe(1);
    expect(statSync(join(dir, partial[0]!)).size).toBeLessThan(200 << 20);
    rmSync(join(dir, partial[0]!));

    // And the next writer simply succeeds.
    await writeFileAtomic(target, "new");
    expect(readFileSync(target, "utf8")).toBe("new");
  }, 60_000);
});

describe("cleanOrphanTemps", () => {
  test("removes temp files of dead writers on this host, keeps live ones and young foreign ones", async () => {
    const d = join(dir, "orphans");
    mkdirSync(join(d, "generations"), { recursive: true });
    const dead = Bun.spawnSync([process.execPath, "-e", "console.log(process.pid)"]).stdout.toString().trim();
    const files = {
      deadHere: join(d, "generations", `a-0.png.tmp-${dead}-${HOST_TAG}-0123abcd`),
      liveHere: join(d, `run.json.tmp-${process.pid}-${HOST_TAG}-0123abcd`),
      foreignYoung: join(d, `b.png.tmp-${dead}-ffffffff-0123abcd`),
      foreignOld: join(d, `c.png.tmp-${dead}-ffffffff-0123abcd`),
      oldFormatOld: join(d, `d.png.tmp-${dead}-0123abcd`),
      notATemp: join(d, "e.tmp-notes.txt"),
    };
    for (const f of Object.values(files)) writeFileSync(f, "x");
    const old = new Date(Date.now() - 2 * 3600_000);
    for (const f of [files.foreignOld, files.oldFormatOld]) utimesSync(f, old, old);
    expect(cleanOrphanTemps(d).sort()).toEqual([files.deadHere, files.foreignOld, files.oldFormatOld].sort());
    for (const f of [files.liveHere, files.foreignYoung, files.notATemp]) expect(existsSync(f)).toBe(true);
  });
});

describe("writeJsonAtomic", () => {
  test("pretty JSON with a trailing newline", async () => {
    const p = join(dir, "j", "run.json");
    await writeJsonAtomic(p, { a: 1, b: [1, 2] });
    expect(readFileSync(p, "utf8")).toBe('{\n  "a": 1,\n  "b": [\n    1,\n    2\n  ]\n}\n');
    expect(existsSync(p)).toBe(true);
  });

  test("refuses values JSON cannot represent", async () => {
    await expect(writeJsonAtomic(join(dir, "u.json"), undefined)).rejects.toThrow(/not JSON-serializable/);
  });
});
