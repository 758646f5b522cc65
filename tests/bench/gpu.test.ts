// bench/gpu.sh's smoke mode end to end (the GPU box benchmark, reduced): a small UNet's CFG sample
// step and patch-dpo step (1 pair, AdamW) on cpu and, where an adapter exists, webgpu (lavapipe in
// CI); PyTorch left out (CI has no torch). The script must finish, report every row, and ours on
// webgpu must compute what ours on cpu computes (the printed guided value and loss).

import { expect, setDefaultTimeout, test } from "bun:test";
import { resolve } from "node:path";
import { NO_WEBGPU } from "../graph/webgpu-helpers.ts";

setDefaultTimeout(300_000);
const REPO = resolve(import.meta.dir, "../..");

test("bench/gpu.sh --mode smoke: every row, webgpu's values equal cpu's", () => {
  const devices = NO_WEBGPU ? "cpu" : "cpu,webgpu";
  const p = Bun.spawnSync(["bench/gpu.sh", "--mode", "smoke", "--devices", devices, "--torch", "no", "--iters", "1"], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  const out = p.stdout.toString();
  console.log(out.split("\n").filter((l) => /^ {2}(sample|dpo)|measurements/.test(l)).join("\n"));
  expect(p.exitCode).toBe(0);
  expect(out).not.toContain("FAILED");
  const value = (task: string, who: string) => {
    const m = out.match(new RegExp(`^ {2}${task} +${who} .*\\[(?:guided\\[0\\]|loss) (\\S+)\\]$`, "m"));
    expect(m, `${task} ${who} row`).not.toBeNull();
    return Number(m![1]);
  };
  for (const task of ["sample", "dpo"]) {
    const cpu = value(task, "ours-cpu");
    expect(Number.isFinite(cpu)).toBe(true);
    if (!NO_WEBGPU) expect(Math.abs(value(task, "ours-webgpu") - cpu)).toBeLessThan(1e-3 * Math.max(1, Math.abs(cpu)));
  }
});
