// Subjects and scene prompts from a language model behind an OpenAI-compatible API (OpenAI, vLLM,
// llama.cpp's server, Ollama, ...): POST {base}/chat/completions, the reply's message content must
// be JSON of the shape LlmReply. Everything the model writes is untrusted: the reply is validated
// with arktype, strings are NFKC-normalized, stripped of control and format characters and capped
// in length, and ids are made by us (sanitized class noun + a hash), never taken from the reply.
// Requests are retried with exponential backoff on network errors, HTTP 408/429/5xx, replies that
// are not JSON and replies that fail the schema; other HTTP errors (a wrong URL, a bad key) fail at
// once with a message that says what to check.

import { ArkErrors, type } from "arktype";
import { UserError } from "../io/errors.ts";
import type { PromptRow } from "../io/schemas.ts";
import { Rng } from "../rng.ts";
import { NOUNS, subjectIdFor, uniqueId } from "./grammar.ts";

/** What the model must return (extra keys are ignored). */
export const LlmReply = type({
  subjects: type({
    classNoun: "string",
    attributes: "string[]",
    referencePrompt: "string",
    scenePrompts: "string[]",
  }).array(),
});
export type LlmReply = typeof LlmReply.infer;

/** Length caps (characters) on what the model writes. CLIP reads 77 tokens, about 300 characters. */
export const LIMITS = { classNoun: 40, attribute: 80, attributes: 8, prompt: 300 } as const;

export interface LlmOptions {
  /** Base URL of the OpenAI-compatible API, e.g. http://localhost:8000/v1. */
  url: string;
  model: string;
  /** Bearer token; none is sent when absent (local servers). */
  apiKey?: string;
  /** Subjects asked for per request. */
  batch: number;
  /** Extra attempts per request after a failure. */
  retries: number;
  /** First backoff; doubles per attempt (capped at 30 s). */
  backoffMs: number;
  /** Per-request timeout. */
  timeoutMs: number;
  temperature: number;
  /** Called with one line per retry (tests and logs). */
  log?: (line: string) => void;
}

export const LLM_DEFAULTS = { batch: 8, retries: 4, backoffMs: 1000, timeoutMs: 120_000, temperature: 0.9 } as const;

/** `s` made safe to store and to show: normalized, no control/format characters, one space between words, capped. */
export function cleanText(s: string, max: number): string {
  const t = s
    .normalize("NFKC")
    .replace(/[\p{Cc}\p{Cf}\p{Co}\p{Cs}\u2028\u2029]/gu, " ")
    .replace(/\s+/g, " ")
    .trim();
  if (t.length <= max) return t;
  // Cut at a word boundary when one is near, so a capped prompt does not end mid-word.
  const cut = t.slice(0, max);
  const space = cut.lastIndexOf(" ");
  return (space > max * 0.6 ? cut.slice(0, space) : cut).replace(/[\s,;:]+$/, "");
}

export interface LlmSubject {
  classNoun: string;
  attributes: string[];
  referencePrompt: string;
  scenePrompts: string[];
}

/**
 * A reply subject made safe, or null when too little is left: class noun lower-cased, every string
 * cleaned and capped, scene prompts deduplicated (case-insensitively) and cut to `k`, a reference
 * prompt without a white background getting the clean-background phrasing appended.
 */
export function sanitizeSubject(raw: LlmReply["subjects"][number], k: number): LlmSubject | null {
  const classNoun = cleanText(raw.classNoun, LIMITS.classNoun).toLowerCase();
  if (!/[\p{L}\p{N}]/u.test(classNoun)) return null;
  const attributes = raw.attributes.map((a) => cleanText(a, LIMITS.attribute)).filter((a) => a !== "").slice(0, LIMITS.attributes);
  let referencePrompt = cleanText(raw.referencePrompt, LIMITS.prompt);
  if (referencePrompt === "") return null;
  if (!/white background/i.test(referencePrompt)) {
    referencePrompt = cleanText(`${referencePrompt.replace(/[\s.,;:]+$/, "")}, isolated on a white background, studio lighting, plain white background`, LIMITS.prompt);
  }
  const seen = new Set<string>();
  const scenePrompts: string[] = [];
  for (const p of raw.scenePrompts) {
    const c = cleanText(p, LIMITS.prompt);
    const key = c.toLowerCase();
    if (c === "" || seen.has(key)) continue;
    seen.add(key);
    scenePrompts.push(c);
  }
  if (scenePrompts.length < k) return null;
  return { classNoun, attributes, referencePrompt, scenePrompts: scenePrompts.slice(0, k) };
}

/** The JSON object inside a model's message: bare, or in a ``` fence, or amid prose. */
export function extractJson(content: string): unknown {
  const fenced = /```(?:json)?\s*([\s\S]*?)```/i.exec(content);
  const text = (fenced ? fenced[1]! : content).trim();
  try {
    return JSON.parse(text);
  } catch (err) {
    const a = text.indexOf("{"), b = text.lastIndexOf("}");
    if (a >= 0 && b > a) return JSON.parse(text.slice(a, b + 1));
    throw err;
  }
}

const SYSTEM = [
  "You write prompts for a text-to-image data set used to train subject-driven image generation.",
  "Reply with one JSON object and nothing else.",
].join(" ");

/** The user message for one batch. */
export function requestMessage(count: number, k: number, nounHints: readonly string[], avoid: readonly string[]): string {
  const lines = [
    `Invent ${count} distinct subjects: everyday objects, toys or pets, each a class noun with concrete visual attributes`,
    "(colour, material, pattern, and one small distinctive detail such as a logo, a coloured part or a collar).",
    `Use these class nouns, one each, in this order: ${nounHints.join(", ")}.`,
    "For every subject write:",
    '- "referencePrompt": a product photo of the subject alone, "isolated on a white background, studio lighting, plain white background";',
    `- "scenePrompts": ${k} different prompts that show the same subject, with all its attributes, in different places, in the style`,
    '  "a red ceramic teapot with a gold star logo on the beach" / "... with a city in the background"; no people, no text.',
    'Return {"subjects": [{"classNoun": "teapot", "attributes": ["red", "ceramic", "with a gold star logo"],',
    ' "referencePrompt": "...", "scenePrompts": ["...", ...]}, ...]}.',
  ];
  if (avoid.length > 0) lines.push(`Do not repeat these subjects: ${avoid.join("; ")}.`);
  return lines.join("\n");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Retryable extends Error {}

/** Base URL + "/chat/completions"; refuses what is not an http(s) URL. */
export function completionsUrl(base: string): string {
  let u: URL;
  try {
    u = new URL(base);
  } catch {
    throw new UserError(`--llm-url ${JSON.stringify(base)} is not a URL (expected e.g. http://localhost:8000/v1)`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new UserError(`--llm-url ${JSON.stringify(base)}: only http and https are supported`);
  return `${base.replace(/\/+$/, "")}/chat/completions`;
}

/** One chat completion whose content passes LlmReply, retried as the file header says. */
export async function requestSubjects(o: LlmOptions, message: string, seed: number): Promise<LlmReply> {
  const url = completionsUrl(o.url);
  const body = JSON.stringify({
    model: o.model,
    messages: [{ role: "system", content: SYSTEM }, { role: "user", content: message }],
    temperature: o.temperature,
    seed,
    response_format: { type: "json_object" },
  });
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;
  let last = "";
  for (let attempt = 0; attempt <= o.retries; attempt++) {
    let retryAfterMs = 0;
    try {
      let res: Response;
      try {
        res = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(o.timeoutMs) });
      } catch (err) {
        throw new Retryable(`request failed: ${(err as Error).message}`);
      }
      const text = await res.text();
      if (!res.ok) {
        const why = `HTTP ${res.status} ${res.statusText}: ${cleanText(text, 200)}`;
        if (res.status === 408 || res.status === 429 || res.status >= 500) {
          retryAfterMs = Math.min(60_000, 1000 * (Number(res.headers.get("retry-after")) || 0));
          throw new Retryable(why);
        }
        const hint = res.status === 401 || res.status === 403 ? " (check the key: --llm-key-env names the variable that holds it)" : res.status === 404 ? " (check --llm-url: it is the base URL, e.g. http://host:8000/v1, and --llm-model)" : "";
        throw new UserError(`LLM at ${url}: ${why}${hint}`);
      }
      let content: unknown;
      try {
        content = (JSON.parse(text) as { choices?: { message?: { content?: unknown } }[] }).choices?.[0]?.message?.content;
      } catch {
        throw new Retryable(`response is not JSON: ${cleanText(text, 120)}`);
      }
      if (typeof content !== "string") throw new Retryable("response has no choices[0].message.content string");
      let parsed: unknown;
      try {
        parsed = extractJson(content);
      } catch (err) {
        throw new Retryable(`message is not JSON (${(err as Error).message}): ${cleanText(content, 120)}`);
      }
      const reply = LlmReply(parsed);
      if (reply instanceof ArkErrors) throw new Retryable(`message does not match the schema: ${cleanText(reply.summary, 300)}`);
      return reply;
    } catch (err) {
      if (!(err instanceof Retryable)) throw err;
      last = err.message;
      if (attempt < o.retries) {
        const wait = Math.max(retryAfterMs, Math.min(30_000, o.backoffMs * 2 ** attempt));
        o.log?.(`llm: attempt ${attempt + 1} of ${o.retries + 1} failed (${last}); retrying in ${wait} ms`);
        await sleep(wait);
      }
    }
  }
  throw new UserError(`LLM at ${url}: no valid reply after ${o.retries + 1} attempts; last problem: ${last}`);
}

/**
 * `subjects` prompts.jsonl rows from the model, `scenesPerSubject` scene prompts each. Duplicate
 * subjects (same class noun and attributes, or same reference prompt) and unusable ones are
 * dropped and asked for again, within a bounded number of requests. The class-noun hints and the
 * row seeds come from Rng(seed); the model's text does not repeat exactly between runs.
 */
export async function synthesizeWithLlm(
  o: LlmOptions,
  req: { subjects: number; scenesPerSubject: number; seed: number },
): Promise<PromptRow[]> {
  const rng = new Rng(req.seed);
  const rows: PromptRow[] = [];
  const keys = new Set<string>();
  const ids = new Set<string>();
  const maxRequests = 3 * Math.ceil(req.subjects / o.batch) + 2;
  for (let r = 0; rows.length < req.subjects; r++) {
    if (r >= maxRequests) {
      throw new UserError(`LLM at ${o.url}: only ${rows.length} usable distinct subjects after ${maxRequests} requests (asked for ${req.subjects}); try a larger model or fewer --scenes-per-subject`);
    }
    const count = Math.min(o.batch, req.subjects - rows.length);
    const hints = Array.from({ length: count }, () => NOUNS[rng.int(NOUNS.length)]!.noun);
    const avoid = rows.slice(-40).map((row) => `${row.attributes.join(" ")} ${row.classNoun}`);
    const reply = await requestSubjects(o, requestMessage(count, req.scenesPerSubject, hints, avoid), rng.nextU32() >>> 1);
    let usable = 0;
    for (const raw of reply.subjects) {
      if (rows.length >= req.subjects) break;
      const s = sanitizeSubject(raw, req.scenesPerSubject);
      if (!s) continue;
      const key = `${s.classNoun}|${s.attributes.map((a) => a.toLowerCase()).sort().join("|")}`;
      const refKey = s.referencePrompt.toLowerCase();
      if (keys.has(key) || keys.has(refKey)) continue;
      keys.add(key);
      keys.add(refKey);
      const id = uniqueId(subjectIdFor(s.classNoun, s.referencePrompt), ids);
      ids.add(id);
      rows.push({ subjectId: id, classNoun: s.classNoun, attributes: s.attributes, referencePrompt: s.referencePrompt, scenePrompts: s.scenePrompts, seed: rng.nextU32() });
      usable++;
    }
    if (usable === 0) o.log?.(`llm: request ${r + 1} gave no usable new subject`);
  }
  return rows;
}
