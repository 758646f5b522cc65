// One assertion that test files share: a promise rejects with an error of this class whose message
// holds every part (what the user is told, not just that something failed).

import { expect } from "bun:test";

export async function expectRejects(p: Promise<unknown>, cls: abstract new (...args: never[]) => Error, ...parts: (string | RegExp)[]): Promise<Error> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(cls);
  for (const part of parts) expect((err as Error).message).toMatch(part);
  return err as Error;
}
