import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { describeError, UsageError, UserError } from "../../lib/io/errors.ts";

const helper = join(import.meta.dir, "helpers", "run-main.ts");
async function runHelper(mode: string) {
  const p = Bun.spawn([process.execPath, helper, mode], { stdout: "pipe", stderr: "pipe", env: { ...process.env, PATCHDPO_DEBUG: "" } });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { stdout, stderr, code };
}

describe("UserError / UsageError", () => {
  test("classes and exit codes", () => {
    const u = new UserError("what, where, what to do");
    expect(u).toBeInstanceOf(Error);
    expect(u.name).toBe("UserError");
    expect(u.exitCode).toBe(1);
    const g = new UsageError("unknown flag --x");
    expect(g).toBeInstanceOf(UserError);
    expect(g.name).toBe("UsageError");
    expect(g.exitCode).toBe(2);
    expect(new UserError("m", { cause: 3 }).cause).toBe(3);
  });

  test("describeError", () => {
    expect(describeError(new UserError("bad row"))).toEqual({ text: "error: bad row", exitCode: 1 });
    expect(describeError(new UsageError("bad flag"))).toEqual({ text: "error: bad flag", exitCode: 2 });
    const bug = describeError(new RangeError("oops"));
    expect(bug.exitCode).toBe(1);
    expect(bug.text).toStartWith("RangeError: oops\n");
    expect(bug.text).toContain("    at ");
  });
});

describe("runMain (in a child process)", () => {
  test("UserError: `error: <message>` without a stack, exit 1", async () => {
    const r = await runHelper("user");
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: model folder checkpoints/x is missing unet/config.json; download it first\n");
  });
  test("UsageError: exit 2", async () => {
    const r = await runHelper("usage");
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("error: unknown flag --fast\n");
  });
  test("a bug keeps its stack, exit 1", async () => {
    const r = await runHelper("bug");
    expect(r.code).toBe(1);
    expect(r.stderr).toStartWith("TypeError: cannot read properties of undefined");
    expect(r.stderr).toContain("run-main.ts");
  });
  test("a thrown non-Error, exit 1", async () => {
    const r = await runHelper("string");
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error (non-Error value thrown): plain string\n");
  });
  test("success: exit 0, stdout untouched", async () => {
    const r = await runHelper("ok");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ran fine\n");
    expect(r.stderr).toBe("");
  });
});
