// CLIP's byte-level BPE tokenizer (OpenAI CLIP's simple_tokenizer, transformers' CLIPTokenizer /
// CLIPTokenizerFast), read from a diffusers `tokenizer/` folder: `vocab.json` + `merges.txt`, or a
// fast tokenizer's `tokenizer.json`, plus `tokenizer_config.json` / `special_tokens_map.json` for
// the special tokens and the maximum length.
//
// The steps, as transformers runs them:
// 1. Added tokens (bos, eos, unk, pad and `added_tokens_decoder` entries) are cut out of the raw
//    text first, case-sensitively, leftmost-longest, and map straight to their ids. This matters
//    for SDXL's tokenizer_2, whose pad token "!" is an added special token with id 0: "hi!" there
//    encodes the "!" as 0, not as the BPE token "!</w>" (256), exactly as diffusers' pipelines do.
// 2. Text cleanup. CLIP runs ftfy.fix_text (and OpenAI's version html.unescape) before collapsing
//    whitespace and lowercasing; ftfy is not available here, so we do what the fast tokenizer's
//    normalizer does: Unicode NFC, every whitespace run -> one space, trim, lowercase. Ordinary
//    prompts (anything ftfy would leave alone: no mojibake, no HTML entities) tokenize identically.
//    We do not space out CJK ideographs (transformers' fallback BasicTokenizer does when ftfy is
//    missing; the fast tokenizer and ftfy do not).
// 3. Pre-tokenization with CLIP's pattern
//    `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//    (letters runs, single digits, punctuation runs; whitespace is dropped).
// 4. Each piece's UTF-8 bytes are mapped to printable characters (GPT-2's bytes_to_unicode), the
//    last character gets the end-of-word suffix `</w>`, and BPE merges the lowest-ranked adjacent
//    pair until none is in the merge table.
// 5. Tokens become ids through the vocabulary; a token missing from it becomes the unk token
//    (`<|endoftext|>` in every CLIP tokenizer; with the full byte-level vocabulary this never
//    happens, with the tiny vocabularies of tests and the tiny world it does).
// 6. `<|startoftext|>` + ids + `<|endoftext|>`, truncated so that the whole fits max_length (77)
//    with eos kept last, then padded with the pad token (SD 1.x: eos 49407; SDXL tokenizer_2: "!" 0).

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../io/errors.ts";

/** GPT-2 / CLIP byte -> printable character table (printable Latin-1 bytes map to themselves). */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return table;
}

const BYTE_ENCODER = bytesToUnicode();
const BYTE_DECODER = new Map(BYTE_ENCODER.map((c, b) => [c, b]));

/** CLIP's pre-tokenization pattern (transformers compiles it with IGNORECASE; text is lowercase by then). */
const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/** The merges transformers' slow CLIPTokenizer reads from merges.txt (after the "#version" line). */
const MAX_MERGES = 49152 - 256 - 2;

export const CLIP_BOS = "<|startoftext|>";
export const CLIP_EOS = "<|endoftext|>";

export interface ClipTokenizerOptions {
  /** token -> id (vocab.json, or tokenizer.json's model.vocab). */
  vocab: Record<string, number> | Map<string, number>;
  /** Merge rules in rank order: "a b" strings or [a, b] pairs. */
  merges: readonly (string | readonly [string, string])[];
  bosToken?: string;
  eosToken?: string;
  /** Token for pieces missing from the vocabulary (default eos, as in every CLIP tokenizer). */
  unkToken?: string;
  /** Default eos (SD 1.x); SDXL's tokenizer_2 uses "!". */
  padToken?: string;
  /** Sequence length after truncation and padding (default 77). */
  maxLength?: number;
  /** More tokens cut out of the text before BPE (token -> id), e.g. tokenizer_config's added_tokens_decoder. */
  addedTokens?: Record<string, number> | Map<string, number>;
}

export interface Encoding {
  /** Token ids, `maxLength` long when padded. */
  ids: number[];
  /**
   * Position of the first eos id: the row the text encoder pools (transformers and OpenAI CLIP pool
   * the first eos; an eos typed in the text, or an unknown piece, since unk is eos, comes first).
   */
  eosIndex: number;
  /** Tokens before padding, bos and eos included. */
  length: number;
  /** True when text had to be cut to fit maxLength. */
  truncated: boolean;
}

export interface EncodeOptions {
  /** Default: the tokenizer's maxLength (77). */
  maxLength?: number;
  /** Pad to maxLength (default true, diffusers' padding="max_length"). */
  padding?: boolean;
  /** Cut to maxLength keeping eos last (default true); false throws on text that is too long. */
  truncation?: boolean;
}

/** A batch ready to feed a CLIP text graph: input ids [B, L] and eos positions [B], int64. */
export interface EncodedBatch {
  ids: BigInt64Array;
  eosIndex: BigInt64Array;
  batch: number;
  length: number;
  encodings: Encoding[];
}

export class ClipTokenizer {
  readonly vocab: Map<string, number>;
  readonly bosId: number;
  readonly eosId: number;
  readonly unkId: number;
  readonly padId: number;
  readonly maxLength: number;
  readonly bosToken: string;
  readonly eosToken: string;
  readonly padToken: string;
  private readonly decoder = new Map<number, string>();
  private readonly ranks = new Map<string, number>();
  private readonly added: Map<string, number>;
  /** Added tokens, longest first (leftmost-longest splitting). */
  private readonly addedOrder: string[];
  private readonly cache = new Map<string, string[]>();

  constructor(o: ClipTokenizerOptions, readonly label = "CLIP tokenizer") {
    this.vocab = o.vocab instanceof Map ? new Map(o.vocab) : new Map(Object.entries(o.vocab));
    for (const [t, id] of this.vocab) this.decoder.set(id, t);
    o.merges.forEach((m, rank) => {
      const pair = typeof m === "string" ? m.split(" ") : m;
      if (pair.length !== 2 || !pair[0] || !pair[1]) throw new UserError(`${label}: merge rule ${rank + 1} ("${String(m)}") is not two symbols separated by one space`);
      const key = `${pair[0]} ${pair[1]}`;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
    });
    this.bosToken = o.bosToken ?? CLIP_BOS;
    this.eosToken = o.eosToken ?? CLIP_EOS;
    this.padToken = o.padToken ?? this.eosToken;
    const unkToken = o.unkToken ?? this.eosToken;
    this.added = o.addedTokens instanceof Map ? new Map(o.addedTokens) : new Map(Object.entries(o.addedTokens ?? {}));
    for (const [t, id] of this.added) this.decoder.set(id, t);
    const idOf = (role: string, t: string) => {
      const id = this.added.get(t) ?? this.vocab.get(t);
      if (id === undefined) throw new UserError(`${label}: the ${role} token "${t}" is not in the vocabulary (check vocab.json / tokenizer.json and the tokenizer config)`);
      this.added.set(t, id); // special tokens are cut out of the text like added tokens (transformers does)
      return id;
    };
    this.bosId = idOf("bos", this.bosToken);
    this.eosId = idOf("eos", this.eosToken);
    this.unkId = idOf("unk", unkToken);
    this.padId = idOf("pad", this.padToken);
    this.addedOrder = [...this.added.keys()].filter((t) => t.length > 0).sort((a, b) => b.length - a.length);
    this.maxLength = o.maxLength ?? 77;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw new UserError(`${label}: maxLength must be an integer >= 2, got ${this.maxLength}`);
  }

  /** The slow tokenizer's files (vocab.json + merges.txt) or a tokenizer.json, with the folder's configs. */
  static fromFolder(dir: string): ClipTokenizer {
    const path = (f: string) => join(dir, f);
    const readJson = (f: string): Record<string, unknown> | undefined => {
      if (!existsSync(path(f))) return undefined;
      try {
        return JSON.parse(readFileSync(path(f), "utf8")) as Record<string, unknown>;
      } catch (e) {
        throw new UserError(`${path(f)}: not valid JSON (${(e as Error).message})`, { cause: e });
      }
    };
    let vocab: Record<string, number>;
    let merges: (string | [string, string])[];
    const added: Record<string, number> = {};
    if (existsSync(path("vocab.json")) && existsSync(path("merges.txt"))) {
      vocab = readJson("vocab.json") as Record<string, number>;
      merges = parseMergesTxt(readFileSync(path("merges.txt"), "utf8"));
    } else if (existsSync(path("tokenizer.json"))) {
      const tj = readJson("tokenizer.json")!;
      const model = tj.model as { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] } | undefined;
      if (!model || (model.type !== undefined && model.type !== "BPE") || !model.vocab || !model.merges) {
        throw new UserError(`${path("tokenizer.json")}: expected a BPE model with "vocab" and "merges" (a CLIP tokenizer)`);
      }
      vocab = model.vocab;
      merges = model.merges;
      for (const t of (tj.added_tokens ?? []) as { id: number; content: string }[]) added[t.content] = t.id;
    } else {
      throw new UserError(`${dir}: no CLIP tokenizer files (need vocab.json + merges.txt, or tokenizer.json); point at the model's tokenizer/ folder`);
    }
    const config = readJson("tokenizer_config.json") ?? {};
    const special = { ...config, ...(readJson("special_tokens_map.json") ?? {}) }; // special_tokens_map wins, as in transformers
    const decoderEntries = (config.added_tokens_decoder ?? {}) as Record<string, unknown>;
    for (const [id, t] of Object.entries(decoderEntries)) {
      const content = tokenContent(t);
      if (content !== undefined) added[content] = Number(id);
    }
    const maxLen = typeof config.model_max_length === "number" && config.model_max_length <= 1e6 ? config.model_max_length : 77;
    return new ClipTokenizer(
      {
        vocab, merges, addedTokens: added, maxLength: maxLen,
        bosToken: tokenContent(special.bos_token), eosToken: tokenContent(special.eos_token),
        unkToken: tokenContent(special.unk_token), padToken: tokenContent(special.pad_token),
      },
      `CLIP tokenizer ${dir}`,
    );
  }

  /** BPE tokens of a text, without bos/eos (transformers' `tokenizer.tokenize`). */
  tokenize(text: string): string[] {
    return this.pieces(text).flatMap((p) => (p.added ? [p.text] : this.wordTokens(p.text)));
  }

  /** Ids of a text, without bos/eos, truncation or padding. */
  encodeIds(text: string): number[] {
    const ids: number[] = [];
    for (const p of this.pieces(text)) {
      if (p.added) ids.push(this.added.get(p.text)!);
      else for (const t of this.wordTokens(p.text)) ids.push(this.vocab.get(t) ?? this.unkId);
    }
    return ids;
  }

  /** `<|startoftext|> text <|endoftext|>`, truncated to maxLength (eos kept) and padded. */
  encode(text: string, opts: EncodeOptions = {}): Encoding {
    const L = opts.maxLength ?? this.maxLength;
    let body = this.encodeIds(text);
    let truncated = false;
    if (body.length + 2 > L) {
      if (opts.truncation === false) throw new UserError(`${this.label}: "${text.slice(0, 60)}..." is ${body.length + 2} tokens, more than the maximum ${L}; shorten the prompt`);
      body = body.slice(0, L - 2);
      truncated = true;
    }
    const ids = [this.bosId, ...body, this.eosId];
    const length = ids.length;
    if (opts.padding !== false) while (ids.length < L) ids.push(this.padId);
    return { ids, eosIndex: ids.indexOf(this.eosId), length, truncated };
  }

  /** Several texts padded to the same length, as int64 arrays for a graph's inputs. */
  encodeBatch(texts: readonly string[], opts: Omit<EncodeOptions, "padding"> = {}): EncodedBatch {
    const L = opts.maxLength ?? this.maxLength;
    const encodings = texts.map((t) => this.encode(t, { ...opts, maxLength: L, padding: true }));
    const ids = new BigInt64Array(texts.length * L);
    encodings.forEach((e, b) => e.ids.forEach((id, i) => (ids[b * L + i] = BigInt(id))));
    return { ids, eosIndex: BigInt64Array.from(encodings.map((e) => BigInt(e.eosIndex))), batch: texts.length, length: L, encodings };
  }

  /** Ids back to text: `</w>` becomes a space; special tokens are dropped unless asked for. */
  decode(ids: readonly number[], keepSpecial = false): string {
    const special = new Set([this.bosId, this.eosId, this.padId]);
    let out = "";
    const flush = (chunk: string[]) => {
      const bytes = Uint8Array.from([...chunk.join("")].map((c) => BYTE_DECODER.get(c) ?? 0x3f));
      return new TextDecoder().decode(bytes);
    };
    let run: string[] = [];
    for (const id of ids) {
      const t = this.decoder.get(id);
      if (t === undefined) continue;
      if (this.added.has(t)) {
        out += flush(run);
        run = [];
        if (keepSpecial || !special.has(id)) out += t;
      } else run.push(t);
    }
    out += flush(run);
    return out.replaceAll("</w>", " ").replace(/ +/g, " ").trim();
  }

  /** Splits raw text into added tokens and cleaned pre-tokenized words. */
  private pieces(text: string): { text: string; added: boolean }[] {
    const out: { text: string; added: boolean }[] = [];
    const words = (chunk: string) => {
      for (const m of cleanText(chunk).matchAll(PATTERN)) out.push({ text: m[0], added: false });
    };
    let rest = text;
    while (rest.length) {
      let at = -1;
      let tok = "";
      for (const t of this.addedOrder) {
        const i = rest.indexOf(t);
        if (i >= 0 && (at < 0 || i < at)) (at = i), (tok = t); // longest first: ties keep the longer
      }
      if (at < 0) {
        words(rest);
        break;
      }
      words(rest.slice(0, at));
      out.push({ text: tok, added: true });
      rest = rest.slice(at + tok.length);
    }
    return out;
  }

  /** BPE of one pre-tokenized word (bytes mapped to characters, `</w>` on the last one). */
  private wordTokens(word: string): string[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let result: string[];
    if (word === CLIP_BOS || word === CLIP_EOS) result = [word];
    else {
      const chars = [...new TextEncoder().encode(word)].map((b) => BYTE_ENCODER[b]!);
      chars[chars.length - 1] += "</w>";
      result = this.bpe(chars);
    }
    if (this.cache.size < 100_000) this.cache.set(word, result);
    return result;
  }

  private bpe(symbols: string[]): string[] {
    let word = symbols;
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) (bestRank = r), (best = i);
      }
      if (best < 0) break;
      const first = word[best]!;
      const second = word[best + 1]!;
      // Merge every occurrence of the pair, left to right (non-overlapping), as CLIP does.
      const next: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
          next.push(first + second);
          i += 2;
        } else next.push(word[i++]!);
      }
      word = next;
    }
    return word;
  }
}

/** NFC, whitespace runs -> one space, trim, lowercase (see the file comment for what ftfy would add). */
export function cleanText(text: string): string {
  return text.normalize("NFC").replace(/\s+/gu, " ").trim().toLowerCase();
}

/** merges.txt: a "#version" header line, then "a b" per line; capped as transformers' CLIPTokenizer does. */
export function parseMergesTxt(text: string): string[] {
  const lines = text.replace(/\r\n/g, "\n").trim().split("\n");
  const body = lines[0]?.startsWith("#") ? lines.slice(1) : lines;
  return body.filter((l) => l.length > 0).slice(0, MAX_MERGES);
}

/** A special-token entry of a tokenizer config: a string or an AddedToken dict {content, ...}. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}
