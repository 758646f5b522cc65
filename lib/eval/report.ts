// eval/report.html: one self-contained file a person opens in a browser (no network, no scripts):
// images inlined as base64 JPEG thumbnails, charts as inline SVG.
//
// Sections: the metric table (with the published PatchDPO / IP-Adapter-Plus DreamBench numbers when
// the evaluation followed the DreamBench protocol), a before/after table against another run
// (--compare), per-subject and per-prompt tables, training curves from train-log.jsonl files, a
// gallery of reference | generated | heatmap triples worst-first (patch scores when the run has
// them, else the generated images ranked by the lowest metric), and the prompt list.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { type } from "arktype";
import sharp from "sharp";
import { UserError } from "../io/errors.ts";
import { readJsonlAll } from "../io/manifest.ts";
import { runPaths } from "../io/rundir.ts";
import { PatchScoreRow } from "../io/schemas.ts";
import { DREAMBENCH_SUBJECTS, PUBLISHED } from "./dreambench.ts";
import { EvalScoreRow, METRICS, type MetricName, type MetricValues, type Summary } from "./metrics.ts";

export interface SummaryFile extends Summary {
  meta?: {
    protocol?: string;
    setting?: string;
    refPhoto?: string;
    images?: number;
    subjects?: number;
    encoders?: Record<string, string>;
    source?: { run?: string; images?: string };
    prompts?: string;
    realPhotos?: Record<string, string[]>;
  };
}

export interface ReportOptions {
  /** The eval folder (summary.json, scores.jsonl). */
  evalDir: string;
  /** The run directory (train logs, patch scores, heatmaps); default: the one summary.json names. */
  run?: string;
  /** Another run directory or eval folder to compare against ("before"). */
  compare?: string;
  /** More train-log.jsonl files, or folders searched for them. */
  trainLogs?: string[];
  /** Gallery size. */
  gallery?: number;
  /** Longest side of a gallery thumbnail in pixels. */
  thumb?: number;
  /** Loss axes on a log scale. */
  logScale?: boolean;
  title?: string;
}

export const METRIC_LABELS: Record<MetricName, string> = { dino: "DINO", clipI: "CLIP-I", clipT: "CLIP-T", feature: "feature" };

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
const fmt = (v: number | undefined, d = 3) => (v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(d));
const signed = (v: number | undefined, d = 3) => (v === undefined || !Number.isFinite(v) ? "–" : `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(d)}`);

function readSummary(path: string): SummaryFile {
  if (!existsSync(path)) throw new UserError(`${path} is missing: run scripts/eval.ts first (the report reads its summary.json and scores.jsonl)`);
  try {
    const s = JSON.parse(readFileSync(path, "utf8")) as SummaryFile;
    if (!s || typeof s.metrics !== "object" || typeof s.subjects !== "object") throw new Error('no "metrics" / "subjects"');
    s.prompts ??= {};
    return s;
  } catch (e) {
    throw new UserError(`${path}: not an eval summary (${(e as Error).message})`);
  }
}

/** An eval folder from a run directory or an eval folder itself. */
export function resolveEvalDir(dirOrRun: string): string {
  const d = resolve(dirOrRun);
  if (existsSync(join(d, "summary.json"))) return d;
  if (existsSync(join(d, "eval", "summary.json"))) return join(d, "eval");
  throw new UserError(`${dirOrRun}: neither it nor ${join(dirOrRun, "eval")} holds a summary.json (run scripts/eval.ts on it first)`);
}

// ------------------------------------------------------------------------------------ thumbnails

/** A data: URI of a JPEG thumbnail (longest side `size`, or height `size` for wide strips). */
export async function thumbnail(file: string, size: number, wide = false): Promise<string | undefined> {
  try {
    const buf = await sharp(readFileSync(file))
      .rotate()
      .flatten({ background: "#ffffff" })
      .resize(wide ? { height: size, width: size * 4, fit: "inside" } : { width: size, height: size, fit: "inside" })
      .jpeg({ quality: 80 })
      .toBuffer();
    return `data:image/jpeg;base64,${buf.toString("base64")}`;
  } catch {
    return undefined;
  }
}

const imgTag = (uri: string | undefined, alt: string, file?: string) =>
  uri ? `<img src="${uri}" alt="${esc(alt)}" title="${esc(file ?? alt)}">` : `<div class="missing">${esc(file ? `unreadable: ${basename(file)}` : "no image")}</div>`;

// ------------------------------------------------------------------------------------ charts

/** "Nice" tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Ticks of a log axis spanning [10^a, 10^b]: decades, plus 2x and 5x when fewer than 3 decades show. */
function logTicks(a: number, b: number): number[] {
  const inRange = (v: number) => Math.log10(v) >= a - 1e-9 && Math.log10(v) <= b + 1e-9;
  const decades: number[] = [];
  for (let d = Math.floor(a); d <= Math.ceil(b); d++) decades.push(d);
  const ones = decades.map((d) => 10 ** d).filter(inRange);
  if (ones.length >= 3) return ones.length > 8 ? ones.filter((_, i) => i % Math.ceil(ones.length / 8) === 0) : ones;
  return decades.flatMap((d) => [1, 2, 5].map((m) => Number((m * 10 ** d).toPrecision(6)))).filter(inRange);
}

const tickLabel = (v: number) => (v === 0 ? "0" : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(1) : String(Number(v.toPrecision(4))));

export interface Series {
  name: string;
  points: [number, number][];
}

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/** An inline SVG line chart. Log scale drops non-positive values. */
export function lineChart(title: string, series: Series[], opts: { logY?: boolean; width?: number; height?: number; xLabel?: string } = {}): string {
  const W = opts.width ?? 520, H = opts.height ?? 260;
  const m = { l: 60, r: 12, t: 26, b: 36 };
  const logY = !!opts.logY;
  const pts = series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0)) }));
  const all = pts.flatMap((s) => s.points);
  if (all.length === 0) return `<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" role="img"><text x="${W / 2}" y="${H / 2}" text-anchor="middle">${esc(title)}: no data</text></svg>`;
  const fy = (y: number) => (logY ? Math.log10(y) : y);
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => fy(p[1]))), Math.max(...all.map((p) => fy(p[1])))];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - Math.max(1e-12, Math.abs(y0) * 0.1), y1 + Math.max(1e-12, Math.abs(y1) * 0.1)];
  const px = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - ((fy(y) - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts: string[] = [];
  parts.push(`<text x="${m.l}" y="16" class="ct">${esc(title)}${logY ? " (log scale)" : ""}</text>`);
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#999"/>`);
  for (const t of niceTicks(x0, x1)) {
    parts.push(`<line x1="${px(t)}" x2="${px(t)}" y1="${H - m.b}" y2="${H - m.b + 4}" stroke="#666"/><text x="${px(t)}" y="${H - m.b + 16}" text-anchor="middle">${tickLabel(t)}</text>`);
  }
  const yTicks = logY ? logTicks(y0, y1) : niceTicks(y0, y1);
  for (const t of yTicks) {
    const y = py(t);
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y}" y2="${y}" stroke="#eee"/><text x="${m.l - 4}" y="${y + 4}" text-anchor="end">${tickLabel(t)}</text>`);
  }
  if (opts.xLabel) parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 4}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  pts.forEach((s, i) => {
    const c = COLOURS[i % COLOURS.length];
    const d = s.points.map(([x, y], k) => `${k ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
    parts.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="1.5"><title>${esc(s.name)}</title></path>`);
    if (pts.length > 1) parts.push(`<text x="${W - m.r - 4}" y="${m.t + 14 + 14 * i}" text-anchor="end" fill="${c}">${esc(s.name)}</text>`);
  });
  return `<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">${parts.join("")}</svg>`;
}

// ------------------------------------------------------------------------------------ train logs

const LogRow = type({ step: "number >= 0", "[string]": "unknown" });

/** train-log.jsonl files: given files, and any under given folders (three levels deep). */
export function findTrainLogs(roots: string[]): string[] {
  const out = new Set<string>();
  const walk = (d: string, depth: number) => {
    if (!existsSync(d)) return;
    if (statSync(d).isFile()) return void out.add(resolve(d));
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isFile() && e.name === "train-log.jsonl") out.add(resolve(d, e.name));
      else if (e.isDirectory() && depth > 0 && !e.name.startsWith(".")) walk(join(d, e.name), depth - 1);
    }
  };
  for (const r of roots) walk(r, 3);
  return [...out].sort();
}

async function trainSection(files: string[], base: string, logY: boolean): Promise<string> {
  if (files.length === 0) return `<p class="note">No train-log.jsonl found (looked in the run's train/ and checkpoints/ folders).</p>`;
  const blocks: string[] = [];
  for (const f of files) {
    const name = relative(base, f) || basename(f);
    let rows: (typeof LogRow.infer)[];
    try {
      rows = await readJsonlAll(f, LogRow);
    } catch (e) {
      blocks.push(`<h3>${esc(name)}</h3><p class="error">${esc((e as Error).message)}</p>`);
      continue;
    }
    const cols = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => k !== "step" && typeof r[k] === "number")))];
    // loss and lr first, then up to four more columns (implicit accuracy, MSEs, grad norm, ...).
    const order = [...cols.filter((c) => c === "loss"), ...cols.filter((c) => c === "lr"), ...cols.filter((c) => c !== "loss" && c !== "lr" && c !== "seconds").slice(0, 4)];
    const charts = order.map((c) =>
      lineChart(c, [{ name: c, points: rows.filter((r) => typeof r[c] === "number").map((r) => [r.step, r[c] as number]) }], { logY: logY && (c === "loss" || c.includes("mse")), xLabel: "step" }),
    );
    blocks.push(`<h3>${esc(name)} <span class="note">(${rows.length} rows)</span></h3><div class="charts">${charts.join("")}</div>`);
  }
  return blocks.join("\n");
}

// ------------------------------------------------------------------------------------ tables

function metricTable(rows: { label: string; values: MetricValues; cls?: string }[], metrics: MetricName[]): string {
  const head = `<tr><th>method</th>${metrics.map((m) => `<th>${esc(METRIC_LABELS[m])}</th>`).join("")}</tr>`;
  const body = rows.map((r) => `<tr${r.cls ? ` class="${r.cls}"` : ""}><td>${esc(r.label)}</td>${metrics.map((m) => `<td class="num">${fmt(r.values[m])}</td>`).join("")}</tr>`).join("");
  return `<table class="metrics"><thead>${head}</thead><tbody>${body}</tbody></table>`;
}

function breakdownTable(caption: string, keyName: string, data: Record<string, MetricValues>, metrics: MetricName[], counts?: Map<string, number>): string {
  const keys = Object.keys(data).sort();
  const head = `<tr><th>${esc(keyName)}</th>${counts ? "<th>images</th>" : ""}${metrics.map((m) => `<th>${esc(METRIC_LABELS[m])}</th>`).join("")}</tr>`;
  const body = keys.map((k) => `<tr><td>${esc(k)}</td>${counts ? `<td class="num">${counts.get(k) ?? 0}</td>` : ""}${metrics.map((m) => `<td class="num">${fmt(data[k]![m])}</td>`).join("")}</tr>`).join("");
  return `<table class="${esc(keyName)}"><caption>${esc(caption)}</caption><thead>${head}</thead><tbody>${body}</tbody></table>`;
}

function compareTables(before: SummaryFile, after: SummaryFile, label: string, metrics: MetricName[]): string {
  const ms = metrics.filter((m) => before.metrics[m] !== undefined || after.metrics[m] !== undefined);
  const head = `<tr><th>metric</th><th>before (${esc(label)})</th><th>after (this run)</th><th>Δ</th></tr>`;
  const body = ms.map((m) => {
    const d = (after.metrics[m] ?? NaN) - (before.metrics[m] ?? NaN);
    return `<tr><td>${esc(METRIC_LABELS[m])}</td><td class="num">${fmt(before.metrics[m])}</td><td class="num">${fmt(after.metrics[m])}</td><td class="num ${d > 0 ? "up" : d < 0 ? "down" : ""}">${signed(d)}</td></tr>`;
  }).join("");
  const subjects = [...new Set([...Object.keys(before.subjects), ...Object.keys(after.subjects)])].sort();
  const sHead = `<tr><th>subject</th>${ms.map((m) => `<th>${esc(METRIC_LABELS[m])} before</th><th>after</th><th>Δ</th>`).join("")}</tr>`;
  const sBody = subjects.map((s) => `<tr><td>${esc(s)}</td>${ms.map((m) => {
    const b = before.subjects[s]?.[m], a = after.subjects[s]?.[m];
    const d = a !== undefined && b !== undefined ? a - b : undefined;
    return `<td class="num">${fmt(b)}</td><td class="num">${fmt(a)}</td><td class="num ${d !== undefined && d > 0 ? "up" : d !== undefined && d < 0 ? "down" : ""}">${signed(d)}</td>`;
  }).join("")}</tr>`).join("");
  return `<table class="compare"><caption>Before / after: mean over subjects</caption><thead>${head}</thead><tbody>${body}</tbody></table>
<table class="compare-subjects"><caption>Before / after per subject</caption><thead>${sHead}</thead><tbody>${sBody}</tbody></table>`;
}

// ------------------------------------------------------------------------------------ gallery

interface GalleryItem {
  title: string;
  detail: string;
  reference?: string;
  generated: string;
  heatmap?: string;
}

async function galleryFromPatchScores(run: string, scores: EvalScoreRow[], n: number): Promise<GalleryItem[] | undefined> {
  const paths = runPaths(run);
  if (!existsSync(paths.patchScores)) return undefined;
  const rows = (await readJsonlAll(paths.patchScores, PatchScoreRow)).sort((a, b) => a.qGenMean - b.qGenMean).slice(0, n);
  const byId = new Map(scores.map((s) => [s.id, s]));
  const abs = (p: string) => (p.startsWith("/") ? p : resolve(run, p));
  return rows.map((r) => {
    const ev = byId.get(r.id);
    const metrics = ev ? METRICS.filter((m) => ev[m] !== undefined).map((m) => `${METRIC_LABELS[m]} ${fmt(ev[m])}`).join(", ") : "";
    return {
      title: r.id,
      detail: `q_gen mean ${fmt(r.qGenMean)}, low-quality share ${fmt(r.lowShare, 2)}${metrics ? `; ${metrics}` : ""}${ev ? ` — “${ev.prompt}”` : ""}`,
      reference: abs(r.reference),
      generated: abs(r.generated),
      heatmap: existsSync(join(run, r.heatmap)) ? join(run, r.heatmap) : undefined,
    };
  });
}

function galleryFromScores(evalDir: string, summary: SummaryFile, scores: EvalScoreRow[], n: number): GalleryItem[] {
  const metric = (["dino", "clipI", "feature", "clipT"] as const).find((m) => scores.some((r) => r[m] !== undefined));
  if (!metric) return [];
  return [...scores]
    .filter((r) => r[metric] !== undefined)
    .sort((a, b) => a[metric]! - b[metric]!)
    .slice(0, n)
    .map((r) => {
      const refs = summary.meta?.realPhotos?.[r.subject];
      return {
        title: r.id,
        detail: `${METRIC_LABELS[metric]} ${fmt(r[metric])} — “${r.prompt}”`,
        reference: refs?.[0] ? resolve(evalDir, refs[0]) : undefined,
        generated: resolve(evalDir, r.image),
      };
    });
}

async function galleryHtml(items: GalleryItem[], thumb: number): Promise<string> {
  const cells: string[] = [];
  for (const it of items) {
    // A heatmap file (lib/patch/heatmap.ts) is itself the triple: reference | generated | overlay.
    const h = it.heatmap ? await thumbnail(it.heatmap, Math.round(thumb * 1.25), true) : undefined;
    const panels = h
      ? imgTag(h, "reference | generated | patch-quality heatmap", it.heatmap)
      : (it.reference ? imgTag(await thumbnail(it.reference, thumb), "reference", it.reference) : "") + imgTag(await thumbnail(it.generated, thumb), "generated", it.generated);
    cells.push(`<figure class="triple"><div class="row">${panels}</div><figcaption><b>${esc(it.title)}</b><br>${esc(it.detail)}</figcaption></figure>`);
  }
  return cells.join("\n");
}

// ------------------------------------------------------------------------------------ page

const CSS = `body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f4f4f4}
caption{text-align:left;font-weight:600;padding:4px 0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.ours td{font-weight:600;background:#f3f8ff}tr.published td{color:#555}tr.before td{color:#555}
td.up{color:#17803d}td.down{color:#b3261e}.note{color:#666;font-size:13px}.error{color:#b3261e}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg.chart{font-size:11px;background:#fff}svg .ct{font-weight:600;font-size:12px}
.gallery{display:flex;flex-direction:column;gap:14px}figure.triple{margin:0}figure .row{display:flex;gap:6px;align-items:flex-start}
figure img{display:block;border:1px solid #ddd}.missing{width:120px;height:120px;border:1px dashed #c66;color:#c66;font-size:12px;display:flex;align-items:center;justify-content:center;text-align:center}
figcaption{font-size:12px;color:#444;margin-top:3px}ol.prompts{columns:2}`;

/** The report's HTML. */
export async function buildReport(o: ReportOptions): Promise<string> {
  const evalDir = resolveEvalDir(o.evalDir);
  const summary = readSummary(join(evalDir, "summary.json"));
  const scoresFile = join(evalDir, "scores.jsonl");
  const scores = existsSync(scoresFile) ? await readJsonlAll(scoresFile, EvalScoreRow) : [];
  const meta = summary.meta ?? {};
  const run = o.run ? resolve(o.run) : meta.source?.run ? resolve(evalDir, meta.source.run) : undefined;
  const setting = (meta.setting === "single-ref" ? "single-ref" : "all-refs") as keyof typeof PUBLISHED;
  const dreambench = meta.protocol === "dreambench";
  const before = o.compare ? readSummary(join(resolveEvalDir(o.compare), "summary.json")) : undefined;
  const metrics = METRICS.filter((m) => summary.metrics[m] !== undefined || (before && before.metrics[m] !== undefined));
  const title = o.title ?? `Evaluation report — ${run ? basename(run) : basename(dirname(evalDir))}`;

  const html: string[] = [];
  html.push(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${esc(title)}</title><style>${CSS}</style></head><body>`);
  html.push(`<h1>${esc(title)}</h1>`);
  const encoders = Object.entries(meta.encoders ?? {}).map(([k, v]) => `${METRIC_LABELS[k as MetricName] ?? k}: ${v}`).join("; ");
  html.push(`<p class="note">${esc(`${meta.images ?? scores.length} generated images, ${Object.keys(summary.subjects).length} subjects; protocol ${meta.protocol ?? "custom"}, setting ${setting}${meta.refPhoto ? ` (photo ${meta.refPhoto})` : ""}. Encoders — ${encoders || "n/a"}.`)}</p>`);

  // Metric table.
  html.push(`<h2 id="metrics">Metrics</h2>`);
  const rows: { label: string; values: MetricValues; cls?: string }[] = [{ label: "this run", values: summary.metrics, cls: "ours" }];
  if (before) rows.push({ label: `before (${o.compare})`, values: before.metrics, cls: "before" });
  if (dreambench) for (const p of PUBLISHED[setting]) rows.push({ label: p.method, values: { dino: p.dino, clipI: p.clipI, clipT: p.clipT }, cls: "published" });
  const shown = dreambench ? METRICS.filter((m) => metrics.includes(m) || m !== "feature") : metrics;
  html.push(metricTable(rows, shown));
  html.push(`<p class="note">Each subject's score is the mean cosine over all (generated, real photo) pairs${setting === "single-ref" ? " (one chosen photo per subject)" : ""}; the headline is the mean over subjects. The feature score (a MobileNetV2 embedding, the shipped SSL-finetuned one unless --encoder-feature says otherwise) is not comparable with DINO numbers.${dreambench ? ` Published numbers cover all ${DREAMBENCH_SUBJECTS} DreamBench subjects; this evaluation covers ${Object.keys(summary.subjects).length}.` : ""}</p>`);
  if (before) {
    html.push(`<h2 id="compare">Before / after</h2>`);
    html.push(compareTables(before, summary, o.compare!, metrics));
  }

  html.push(`<h2 id="subjects">Per subject</h2>`);
  const counts = new Map<string, number>();
  for (const r of scores) counts.set(r.subject, (counts.get(r.subject) ?? 0) + 1);
  html.push(breakdownTable("Mean over each subject's (generated, real) pairs", "subject", summary.subjects, metrics.filter((m) => summary.metrics[m] !== undefined), counts));
  html.push(`<h2 id="prompts-table">Per prompt</h2>`);
  html.push(breakdownTable("Mean over subjects, per prompt", "prompt", summary.prompts, metrics.filter((m) => summary.metrics[m] !== undefined)));

  html.push(`<h2 id="training">Training curves</h2>`);
  const logRoots = [...(run ? [join(run, "train"), join(run, "checkpoints")] : []), ...(o.trainLogs ?? [])];
  html.push(await trainSection(findTrainLogs(logRoots), run ?? evalDir, !!o.logScale));

  html.push(`<h2 id="gallery">Gallery, worst first</h2>`);
  const n = o.gallery ?? 24;
  const fromPatches = run ? await galleryFromPatchScores(run, scores, n) : undefined;
  const items = fromPatches ?? galleryFromScores(evalDir, summary, scores, n);
  html.push(`<p class="note">${fromPatches ? "reference | generated | patch-quality heatmap, ranked by mean generated-patch quality (patch-scores.jsonl)." : "reference (the subject's first real photo) | generated, ranked by the lowest image metric."}</p>`);
  html.push(`<div class="gallery">${await galleryHtml(items, o.thumb ?? 160)}</div>`);

  html.push(`<h2 id="prompt-list">Prompts</h2>`);
  const promptCounts = new Map<string, number>();
  for (const r of scores) promptCounts.set(r.prompt, (promptCounts.get(r.prompt) ?? 0) + 1);
  html.push(`<ol class="prompts">${[...promptCounts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([p, c]) => `<li>${esc(p)}${c > 1 ? ` <span class="note">(×${c})</span>` : ""}</li>`).join("")}</ol>`);
  html.push(`</body></html>\n`);
  return html.join("\n");
}
