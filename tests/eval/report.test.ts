// lib/eval/report.ts + scripts/report.ts: eval/report.html is one self-contained file (every image a
// data: URI, charts inline SVG, nothing fetched), with the metric table (published DreamBench
// numbers beside ours under the DreamBench protocol), before/after, per-subject / per-prompt tables,
// training curves, a worst-first gallery and the prompt list; and it renders in headless Chromium
// (skipped when /usr/bin/chromium is absent).

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { featureEmbedder } from "../../lib/eval/embeddings.ts";
import { lineChart, niceTicks } from "../../lib/eval/report.ts";
import { loadImage } from "../../lib/io/images.ts";
import { DEFAULTS, run as evalRun } from "../../scripts/eval.ts";
import { run as report } from "../../scripts/report.ts";
import { FIXTURE_PHOTOS as P, REPO, place, writePromptFile } from "./helpers.ts";

setDefaultTimeout(60_000);
const CHROMIUM = "/usr/bin/chromium";
let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "patchdpo-report-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
const feature = featureEmbedder("default", { threads: 2, batch: 4 });
const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

/** A DreamBench-protocol eval of an images folder. */
async function dreambenchEval(dir: string, swap = false): Promise<string> {
  place(join(dir, "real", "dog"), { "00.png": P.dog, "01.png": P.mDog });
  place(join(dir, "real", "can"), { "00.png": P.can, "01.png": P.mCan });
  place(join(dir, "gen", "dog"), { "a dog in the jungle.png": swap ? P.synthetic : P.dog2, "a red dog.png": P.mDog });
  place(join(dir, "gen", "can"), { "a red can.png": swap ? P.teapot : P.can });
  const prompts = writePromptFile(join(dir, "prompts.txt"), { dog: "dog", can: "can" });
  await evalRun({ ...DEFAULTS, threads: 2, images: join(dir, "gen"), real: join(dir, "real"), prompts, out: join(dir, "eval"), embedders: { feature: await feature } });
  return join(dir, "eval");
}

/** A run directory with generations, patch scores + heatmaps, train logs and an eval. */
async function runWithEverything(dir: string): Promise<string> {
  const settings = {};
  place(join(dir, "references"), { "mug.png": P.teapot, "tin.png": P.can });
  place(join(dir, "generations"), { "mug-0.png": P.mTeapot, "mug-1.png": P.synthetic, "tin-0.png": P.mCan });
  place(join(dir, "heatmaps"), { "mug-0.png": P.dog2, "mug-1.png": P.dog, "tin-0.png": P.mDog });
  writeFileSync(join(dir, "references.jsonl"), jsonl([
    { id: "mug", subjectId: "mug", prompt: "a teapot", image: "references/mug.png", seed: 0, settings },
    { id: "tin", subjectId: "tin", prompt: "a can", image: "references/tin.png", seed: 1, settings },
  ]));
  writeFileSync(join(dir, "generations.jsonl"), jsonl([
    { id: "mug-0", referenceId: "mug", subjectId: "mug", prompt: "a teapot <on> a table", image: "generations/mug-0.png", seed: 0, k: 0, settings },
    { id: "mug-1", referenceId: "mug", subjectId: "mug", prompt: "a teapot in the snow", image: "generations/mug-1.png", seed: 0, k: 1, settings },
    { id: "tin-0", referenceId: "tin", subjectId: "tin", prompt: "a can on a table", image: "generations/tin-0.png", seed: 1, k: 0, settings },
  ]));
  const ps = (id: string, ref: string, q: number) => ({ id, referenceId: ref, reference: `references/${ref}.png`, generated: `generations/${id}.png`, qGenMean: q, qRefMean: 0.5, lowShare: 0.2, scores: `patch-scores/${id}.safetensors`, heatmap: `heatmaps/${id}.png`, encoder: "default" });
  writeFileSync(join(dir, "patch-scores.jsonl"), jsonl([ps("mug-0", "mug", 0.6), ps("mug-1", "mug", 0.2), ps("tin-0", "tin", 0.4)]));
  mkdirSync(join(dir, "train"), { recursive: true });
  writeFileSync(join(dir, "train", "train-log.jsonl"), jsonl(Array.from({ length: 30 }, (_, i) => ({ step: i * 10, loss: 2 * Math.exp(-i / 8) + 0.05, lr: 3e-5 * Math.min(1, (i + 1) / 5), implicitAcc: 0.5 + i / 80 }))));
  mkdirSync(join(dir, "checkpoints", "encoder-ft"), { recursive: true });
  writeFileSync(join(dir, "checkpoints", "encoder-ft", "train-log.jsonl"), jsonl([{ step: 0, loss: 4, lr: 1e-4 }, { step: 1, loss: 3.5, lr: 1e-4 }]));
  mkdirSync(join(dir, "checkpoints", "broken"), { recursive: true });
  writeFileSync(join(dir, "checkpoints", "broken", "train-log.jsonl"), '{"step": 0, "loss": 1}\n{"loss": 2}\n');
  await evalRun({ ...DEFAULTS, threads: 2, run: dir, embedders: { feature: await feature } });
  return dir;
}

const externalRefs = (html: string) => [...html.matchAll(/\b(?:src|href)\s*=\s*"(?!data:)([^"]*)"/g)].map((m) => m[1]);

describe("report.html", () => {
  test("DreamBench protocol: our numbers beside the published ones; per-subject and per-prompt tables; self-contained", async () => {
    const evalDir = await dreambenchEval(join(root, "db"));
    const { path } = await report({ eval: evalDir });
    expect(path).toBe(join(evalDir, "report.html"));
    const html = readFileSync(path, "utf8");
    expect(html.startsWith("<!DOCTYPE html>")).toBe(true);
    expect(html).toContain('<table class="metrics">');
    expect(html).toContain("PatchDPO (paper)");
    expect(html).toContain("IP-Adapter-Plus (paper)");
    expect(html).toMatch(/<td class="num">0\.727<\/td><td class="num">0\.838<\/td><td class="num">0\.292<\/td>/);
    expect(html).toContain("this evaluation covers 2");
    expect(html).toContain('<table class="subject">');
    expect(html).toContain("<td>a {} in the jungle</td>");
    expect(html).toContain("<li>a red dog</li>");
    const imgs = [...html.matchAll(/<img src="([^"]+)"/g)].map((m) => m[1]!);
    expect(imgs.length).toBe(6); // 3 generated images, each with its subject's first real photo
    for (const src of imgs) expect(src).toMatch(/^data:image\/jpeg;base64,[A-Za-z0-9+/]+=*$/);
    expect(externalRefs(html)).toEqual([]);
    expect(html).not.toMatch(/<script|<link |@import|url\(/);
  });

  test("a run: training curves as SVG, gallery of reference | generated | heatmap worst first, malformed logs reported", async () => {
    const dir = await runWithEverything(join(root, "run"));
    await report({ run: dir, logScale: true });
    const html = readFileSync(join(dir, "eval", "report.html"), "utf8");
    expect(html).not.toContain("PatchDPO (paper)"); // not the DreamBench protocol
    const svgs = html.match(/<svg class="chart"/g) ?? [];
    expect(svgs.length).toBe(5); // train-log: loss, lr, implicitAcc; encoder-ft: loss, lr
    expect(html).toContain("train/train-log.jsonl");
    expect(html).toContain("checkpoints/encoder-ft/train-log.jsonl");
    expect(html).toContain("loss (log scale)");
    expect(html).toMatch(/checkpoints\/broken\/train-log\.jsonl<\/h3><p class="error">[^<]*:2/);
    const figures = [...html.matchAll(/<figure class="triple">([\s\S]*?)<\/figure>/g)].map((m) => m[1]!);
    expect(figures.map((f) => /<b>([^<]+)<\/b>/.exec(f)![1])).toEqual(["mug-1", "tin-0", "mug-0"]); // by q_gen mean, lowest first
    // The heatmap file is itself the reference | generated | overlay triple: shown alone.
    for (const f of figures) expect((f.match(/<img src="data:image\/jpeg;base64,/g) ?? []).length).toBe(1);
    expect(html).toContain("a teapot &lt;on&gt; a table"); // prompts are escaped
    expect(externalRefs(html)).toEqual([]);
  });

  test("--compare: a before/after table with differences, per subject too", async () => {
    const after = await dreambenchEval(join(root, "after"));
    const before = await dreambenchEval(join(root, "before"), true);
    await report({ eval: after, compare: join(root, "before"), out: join(root, "cmp.html") });
    const html = readFileSync(join(root, "cmp.html"), "utf8");
    expect(html).toContain('<table class="compare">');
    expect(html).toContain('<table class="compare-subjects">');
    const b = JSON.parse(readFileSync(join(before, "summary.json"), "utf8")).metrics.feature;
    const a = JSON.parse(readFileSync(join(after, "summary.json"), "utf8")).metrics.feature;
    expect(html).toContain(`${a - b >= 0 ? "+" : "−"}${Math.abs(a - b).toFixed(3)}`);
    expect(html).toMatch(/<tr class="before"><td>before \(/);
  });

  test("missing eval folder: a clear error", async () => {
    await expect(report({ eval: join(root, "nowhere") })).rejects.toThrow(/holds a summary.json \(run scripts\/eval.ts on it first\)/);
  });

  test("CLI: --help, and exit 1 for a run without an eval", () => {
    const env = { ...process.env, OMP_NUM_THREADS: "2" };
    const help = Bun.spawnSync(["bun", join(REPO, "scripts/report.ts"), "--help"], { env });
    expect(help.exitCode).toBe(0);
    expect(help.stdout.toString()).toContain("--compare <dir>");
    const bad = Bun.spawnSync(["bun", join(REPO, "scripts/report.ts"), "--run", join(root, "nowhere")], { env });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr.toString()).toMatch(/^error: /);
  });
});

describe("charts", () => {
  test("niceTicks covers the range with 1-2-2.5-5 steps", () => {
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(3, 97)).toEqual([20, 40, 60, 80]);
    expect(niceTicks(5, 5)).toEqual([5]);
  });

  test("lineChart: a path per series, log scale drops non-positive values, empty data says so", () => {
    const svg = lineChart("loss", [{ name: "a", points: [[0, 1], [1, 0.1], [2, 0]] }, { name: "b", points: [[0, 2], [2, 1]] }], { logY: true });
    expect(svg.match(/<path /g)!.length).toBe(2);
    expect(svg).toContain("(log scale)");
    for (const t of ["0.1", "0.2", "0.5", "1", "2"]) expect(svg).toContain(`>${t}</text>`); // decades plus 2x / 5x over a short log range
    expect(svg).not.toContain("NaN");
    expect(lineChart("x", [{ name: "x", points: [] }])).toContain("no data");
  });
});

describe.skipIf(!existsSync(CHROMIUM))("headless Chromium", () => {
  test("renders the report: tables and inline images in the DOM, a non-blank screenshot", async () => {
    const dir = await runWithEverything(join(root, "chromium-run"));
    const { path } = await report({ run: dir });
    const profile = mkdtempSync(join(tmpdir(), "patchdpo-chromium-"));
    const shot = join(root, "shot.png");
    const base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", `--user-data-dir=${profile}`];
    try {
      const dom = Bun.spawnSync([...base, "--dump-dom", `file://${path}`], { timeout: 60_000 });
      const text = dom.stdout.toString();
      expect(text).toContain('<table class="metrics">');
      expect((text.match(/<img src="data:image\/jpeg;base64,/g) ?? []).length).toBe(3);
      expect((text.match(/<svg class="chart"/g) ?? []).length).toBeGreaterThanOrEqual(3);
      const ss = Bun.spawnSync([...base, `--screenshot=${shot}`, "--window-size=1200,2000", `file://${path}`], { timeout: 60_000 });
      expect(existsSync(shot)).toBe(true);
      const img = await loadImage(shot);
      expect([img.width, img.height]).toEqual([1200, 2000]);
      let dark = 0;
      for (let i = 0; i < img.data.length; i += 3) if (img.data[i]! + img.data[i + 1]! + img.data[i + 2]! < 300) dark++;
      expect(dark).toBeGreaterThan(10_000); // text, table rules and photos were drawn
      void ss;
    } finally {
      rmSync(profile, { recursive: true, force: true });
    }
  });
});
if (!existsSync(CHROMIUM)) console.log(`report tests: ${CHROMIUM} is absent; skipping the headless Chromium render test (apt-get install -y --no-install-recommends chromium)`);
