// Byte-level BPE trained on a small corpus (the tiny world's prompts, test models), in the
// CLIP vocab.json + merges.txt format, so the same ClipTokenizer code reads it and a real SD
// tokenizer folder alike. The vocabulary keeps all 512 CLIP base symbols (every byte, with and
// without the end-of-word mark), so any text tokenizes without unknown pieces; merges cover the
// tiny world's words.

import { bytesToUnicode, CLIP_BOS, CLIP_EOS, cleanText } from "./clip-tokenizer.ts";

const WORD = /'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu;

export interface BpeVocab {
  /** token -> id, as vocab.json */
  vocab: Record<string, number>;
  /** merge rules in rank order, "a b" (merges.txt lines without the header) */
  merges: string[];
}

/** Symbols of a word as CLIP's BPE starts them: byte characters, the last one with "</w>". */
function wordSymbols(word: string, byteChar: string[]): string[] {
  const chars = [...new TextEncoder().encode(word)].map((b) => byteChar[b]!);
  chars[chars.length - 1] += "</w>";
  return chars;
}

/** Learns `numMerges` BPE merges from `texts` (most frequent adjacent pair first; ties by name). */
export function trainBpe(texts: string[], numMerges: number): BpeVocab {
  const byteChar = bytesToUnicode();
  const counts = new Map<string, number>();
  for (const t of texts) for (const m of cleanText(t).matchAll(WORD)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  const words = [...counts].map(([w, n]) => ({ syms: wordSymbols(w, byteChar), n }));
  const vocab: Record<string, number> = {};
  let id = 0;
  for (const c of byteChar) vocab[c] = id++;
  for (const c of byteChar) vocab[`${c}</w>`] = id++;
  const merges: string[] = [];
  for (let k = 0; k < numMerges; k++) {
    const pairs = new Map<string, number>();
    for (const w of words) for (let i = 0; i + 1 < w.syms.length; i++) {
      const key = `${w.syms[i]} ${w.syms[i + 1]}`;
      pairs.set(key, (pairs.get(key) ?? 0) + w.n);
    }
    let best = "", bestN = 0;
    for (const [p, n] of pairs) if (n > bestN || (n === bestN && p < best)) [best, bestN] = [p, n];
    if (!bestN) break;
    const [a, b] = best.split(" ") as [string, string];
    merges.push(best);
    vocab[a + b] ??= id++;
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) (out.push(a + b), i++);
        else out.push(w.syms[i]!);
      }
      w.syms = out;
    }
  }
  vocab[CLIP_BOS] = id++;
  vocab[CLIP_EOS] = id++;
  return { vocab, merges };
}

/** merges.txt text (with the "#version" header line CLIP's files have). */
export function mergesTxt(v: BpeVocab): string {
  return `#version: 0.2\n${v.merges.join("\n")}\n`;
}
