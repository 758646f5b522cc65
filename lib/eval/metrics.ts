// DreamBench-style similarity metrics (DESIGN.md section 1, "Evaluation"):
//   dino    cosine of DINO ViT-S/16 CLS embeddings, generated image x real photos of its subject
//   clipI   the same with CLIP image embeddings
//   clipT   cosine of a generated image's CLIP embedding and its prompt's CLIP text embedding
//   feature the same as dino with the embedded default encoder's global feature (GAP MobileNetV2);
//           never comparable with published DINO numbers, hence its own name
// Settings: "all-refs" averages over every real photo of the subject (the original protocol);
// "single-ref" scores against one chosen photo per subject.
//
// Aggregation, as the PatchDPO authors' evaluation does it: a subject's score is the mean over all
// (generated, real) pairs of that subject, and the headline is the unweighted mean over subjects.
// With the same number of real photos for every generated image, the mean over pairs equals the
// mean of per-image means, so a per-image row (scores.jsonl) carries all that is needed.
// Per-prompt breakdown: for a prompt key, the mean over subjects of that subject's mean for the key.
// Sums run in float64 over L2-normalized float32 embeddings.

import { type } from "arktype";
import { UsageError } from "../io/errors.ts";
import { Id, ImagePath } from "../io/schemas.ts";

export const METRICS = ["dino", "clipI", "clipT", "feature"] as const;
export type MetricName = (typeof METRICS)[number];
export type MetricValues = Partial<Record<MetricName, number>>;

export const SETTINGS = ["all-refs", "single-ref"] as const;
export type Setting = (typeof SETTINGS)[number];

/** eval/scores.jsonl: one generated image with its metric values. */
export const EvalScoreRow = type({
  /** `<subject>/<file name>` for an images folder, the generation id for a run. */
  id: "string > 0",
  subject: Id,
  prompt: "string",
  /** The prompt with the subject's class noun abstracted ("a {} in the jungle"), for per-prompt means. */
  promptKey: "string",
  /** The generated image, relative to the eval output folder (may start with "../"). */
  image: ImagePath,
  "dino?": "number",
  "clipI?": "number",
  "clipT?": "number",
  "feature?": "number",
});
export type EvalScoreRow = typeof EvalScoreRow.infer;

export interface Summary {
  /** Headline: mean over subjects. */
  metrics: MetricValues;
  subjects: Record<string, MetricValues>;
  prompts: Record<string, MetricValues>;
}

/** x / |x| in float32 (a zero vector stays zero). */
export function l2normalize(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const n = Math.sqrt(s);
  const out = new Float32Array(v.length);
  if (n > 0) for (let i = 0; i < v.length; i++) out[i] = v[i]! / n;
  return out;
}

/** Cosine similarity in float64. */
export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new RangeError(`cosine: vectors of length ${a.length} and ${b.length}`);
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  const d = Math.sqrt(aa) * Math.sqrt(bb);
  return d > 0 ? ab / d : 0;
}

/** cos(a_i, b_j) as a row-major [A.length, B.length] matrix. */
export function cosineMatrix(A: readonly Float32Array[], B: readonly Float32Array[]): Float64Array {
  const out = new Float64Array(A.length * B.length);
  A.forEach((a, i) => B.forEach((b, j) => (out[i * B.length + j] = cosine(a, b))));
  return out;
}

/** Mean of a matrix's entries (all generated x real pairs). */
export function meanOf(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return xs.length ? s / xs.length : NaN;
}

/** Mean cosine of one generated embedding against the chosen real embeddings. */
export function imageScore(gen: Float32Array, refs: readonly Float32Array[]): number {
  if (refs.length === 0) throw new RangeError("imageScore: no real embeddings to compare with");
  return meanOf(cosineMatrix([gen], refs));
}

/** Which real photo `single-ref` uses: a 0-based index into the subject's sorted photos, or a file stem. */
export type RefPhoto = number | string;

/** The real photos a setting compares against (all of them, or the one chosen). */
export function refsForSetting<T>(refs: readonly T[], setting: Setting, pick: RefPhoto = 0, names?: readonly string[], subject = "?"): T[] {
  if (setting === "all-refs") return [...refs];
  let i: number;
  if (typeof pick === "number") i = pick;
  else {
    i = names ? names.indexOf(pick) : -1;
    if (i < 0) throw new UsageError(`single-ref: subject "${subject}" has no photo named "${pick}" (it has ${names?.join(", ") ?? "no names"})`);
  }
  if (!Number.isInteger(i) || i < 0 || i >= refs.length) {
    throw new UsageError(`single-ref: photo index ${pick} is out of range for subject "${subject}", which has ${refs.length} photos (indices 0..${refs.length - 1})`);
  }
  return [refs[i]!];
}

/** Per-subject means, the mean over subjects, and per-prompt means, of the metrics present in rows. */
export function summarize(rows: readonly Pick<EvalScoreRow, "subject" | "promptKey" | MetricName>[]): Summary {
  const present = METRICS.filter((m) => rows.some((r) => typeof r[m] === "number"));
  const group = <K extends string>(key: (r: (typeof rows)[number]) => K) => {
    const g = new Map<K, (typeof rows)[number][]>();
    for (const r of rows) {
      const k = key(r);
      if (!g.has(k)) g.set(k, []);
      g.get(k)!.push(r);
    }
    return g;
  };
  const meanMetric = (rs: readonly (typeof rows)[number][], m: MetricName) => {
    const v = rs.map((r) => r[m]).filter((x): x is number => typeof x === "number");
    return v.length ? meanOf(v) : undefined;
  };
  const means = (rs: readonly (typeof rows)[number][]): MetricValues => {
    const o: MetricValues = {};
    for (const m of present) {
      const v = meanMetric(rs, m);
      if (v !== undefined) o[m] = v;
    }
    return o;
  };
  const bySubject = group((r) => r.subject);
  const subjects: Record<string, MetricValues> = {};
  for (const s of [...bySubject.keys()].sort()) subjects[s] = means(bySubject.get(s)!);
  const metrics: MetricValues = {};
  for (const m of present) {
    const v = Object.values(subjects).map((x) => x[m]).filter((x): x is number => typeof x === "number");
    if (v.length) metrics[m] = meanOf(v);
  }
  // Per prompt: mean over subjects of the subject's mean for that prompt (subjects weigh equally).
  const prompts: Record<string, MetricValues> = {};
  for (const [key, rs] of group((r) => r.promptKey)) {
    const bySub = new Map<string, (typeof rows)[number][]>();
    for (const r of rs) {
      if (!bySub.has(r.subject)) bySub.set(r.subject, []);
      bySub.get(r.subject)!.push(r);
    }
    const o: MetricValues = {};
    for (const m of present) {
      const v = [...bySub.values()].map((x) => meanMetric(x, m)).filter((x): x is number => x !== undefined);
      if (v.length) o[m] = meanOf(v);
    }
    prompts[key] = o;
  }
  return { metrics, subjects, prompts };
}

/**
 * The PatchDPO authors' `all_score.json`: {"clipt_score", "clipi_score", "dino_score"}, values as
 * strings (their script writes `str(numpy value)`), indented by 4. Only the metrics computed appear.
 */
export function authorsScoreJson(metrics: MetricValues): string {
  const o: Record<string, string> = {};
  if (metrics.clipT !== undefined) o.clipt_score = String(metrics.clipT);
  if (metrics.clipI !== undefined) o.clipi_score = String(metrics.clipI);
  if (metrics.dino !== undefined) o.dino_score = String(metrics.dino);
  return `${JSON.stringify(o, null, 4)}\n`;
}
