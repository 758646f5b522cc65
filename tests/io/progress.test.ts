import { describe, expect, test } from "bun:test";
import { formatDuration, progress, renderProgress } from "../../lib/io/progress.ts";

function fakeTerminal(isTTY: boolean) {
  const writes: string[] = [];
  return { writes, stream: { isTTY, columns: 100, write: (s: string) => writes.push(s) } };
}

describe("progress", () => {
  test("silent when stderr is not a terminal", () => {
    const t = fakeTerminal(false);
    const p = progress(10, "scoring", { stream: t.stream });
    for (let i = 0; i < 10; i++) p.tick();
    p.done();
    expect(t.writes).toEqual([]);
  });

  test("draws with rate and ETA, throttled, and ends the line on done", () => {
    const t = fakeTerminal(true);
    let now = 0;
    const p = progress(100, "scoring", { stream: t.stream, now: () => now, intervalMs: 100 });
    now = 1000;
    p.tick(10); // first tick draws
    expect(t.writes.length).toBe(1);
    expect(t.writes[0]).toStartWith("\rscoring [");
    expect(t.writes[0]).toContain(" 10/100  10% 10.0 it/s ETA 0:09");
    expect(t.writes[0]).toEndWith("\x1b[K");
    now = 1050;
    for (let i = 0; i < 20; i++) p.tick(); // within 100 ms: no redraw
    expect(t.writes.length).toBe(1);
    now = 1200;
    p.tick(); // 31 done at 1.2 s
    expect(t.writes.length).toBe(2);
    expect(t.writes[1]).toContain(" 31/100  31%");
    now = 4000;
    p.tick(69);
    p.done();
    const last = t.writes.at(-2)!;
    expect(last).toContain("100/100 100% 25.0 it/s 0:04 total");
    expect(t.writes.at(-1)).toBe("\n");
    const count = t.writes.length;
    p.tick();
    p.done();
    expect(t.writes.length).toBe(count);
  });

  test("renderProgress and formatDuration", () => {
    const empty = renderProgress("gen", 0, 4, 0, 60);
    expect(empty).toMatch(/^gen \[-+\] 0\/4   0% -- it\/s ETA --:--$/);
    expect(empty.length).toBeLessThan(60); // fits the terminal without wrapping
    const half = renderProgress("gen", 2, 4, 10, 80);
    expect(half).toMatch(/ 2\/4  50% 5\.0 s\/it ETA 0:10$/);
    const bar = /\[(#*)(-*)\]/.exec(half)!;
    expect(bar[1]!.length).toBe(bar[2]!.length);
    expect(renderProgress("a-very-long-label", 1, 4, 1, 20)).toContain("[##--------]"); // bar never below 10
    expect(formatDuration(59.4)).toBe("0:59");
    expect(formatDuration(61)).toBe("1:01");
    expect(formatDuration(3 * 3600 + 5 * 60 + 7)).toBe("3:05:07");
    expect(formatDuration(NaN)).toBe("--:--");
  });
});
