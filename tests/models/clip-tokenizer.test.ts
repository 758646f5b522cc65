// lib/models/clip-tokenizer.ts on tiny vocabularies made here (no real vocab file needed): BPE
// merges worked out by hand, unknown characters, special tokens, truncation and padding, loading
// from a folder in both layouts; golden ids from transformers' CLIPTokenizer on a tiny vocabulary
// (tests/fixtures/clip/tokenizer_golden.json) and from openai/CLIP's own tokenizer with the real
// vocabulary on PatchDPO's 750 DreamBench prompts and edge cases, cross-checked there with
// transformers' CLIPTokenizer (tests/fixtures/clip/tokenizer_real_golden.json, carrying the part of
// the real vocabulary those prompts use). Both from bench/parity/make_clip_fixtures.py.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../lib/io/errors.ts";
import { ClipTokenizer, bytesToUnicode, cleanText, parseMergesTxt } from "../../lib/models/clip-tokenizer.ts";
import { clipPoolingIndices } from "../../lib/models/clip-text.ts";

const CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!'.,";
const MERGES = ["t h", "th e</w>", "a t</w>", "c at</w>", "o n", "p h", "o t", "ph ot", "phot o</w>", "o f</w>", "' s</w>"];

/** chars, chars + "</w>", merged tokens in merge order, then bos and eos (like CLIP's vocab.json). */
function tinyVocab(): Record<string, number> {
  const v: Record<string, number> = {};
  for (const c of CHARS) v[c] = Object.keys(v).length;
  for (const c of CHARS) v[`${c}</w>`] = Object.keys(v).length;
  for (const m of MERGES) v[m.replace(" ", "")] = Object.keys(v).length;
  v["<|startoftext|>"] = Object.keys(v).length;
  v["<|endoftext|>"] = Object.keys(v).length;
  return v;
}

const vocab = tinyVocab();
const BOS = vocab["<|startoftext|>"]!;
const EOS = vocab["<|endoftext|>"]!;
const tok = new ClipTokenizer({ vocab, merges: MERGES, maxLength: 12 });

describe("bytesToUnicode", () => {
  test("printable bytes map to themselves, the others to 256+n, all distinct", () => {
    const t = bytesToUnicode();
    expect(new Set(t).size).toBe(256);
    expect(t[0x61]).toBe("a");
    expect(t[0xe9]).toBe("é");
    expect(t[0]).toBe("\u0100");
    expect(t[0x20]).toBe("\u0120"); // space: GPT-2's "Ġ"
    expect(t[0xad]).toBe("\u0143"); // soft hyphen is not printable: the last of the 68 remapped bytes
  });
});

describe("BPE (worked by hand)", () => {
  test("merges apply lowest rank first until none applies", () => {
    // photo: p h o t o</w> -> ph (rank 5) -> ot (6) -> phot (7) -> photo</w> (8)
    expect(tok.tokenize("a photo of the cat")).toEqual(["a</w>", "photo</w>", "of</w>", "the</w>", "cat</w>"]);
  });
  test("a pair merges only where both symbols match, </w> included", () => {
    expect(tok.tokenize("thth")).toEqual(["th", "t", "h</w>"]); // the last h carries </w>
    expect(tok.tokenize("ththx")).toEqual(["th", "th", "x</w>"]); // every occurrence merges
    expect(tok.tokenize("onot")).toEqual(["on", "o", "t</w>"]);
    expect(tok.tokenize("o")).toEqual(["o</w>"]);
  });
  test("contractions, digits and punctuation are pieces of their own", () => {
    expect(tok.tokenize("cat's")).toEqual(["cat</w>", "'s</w>"]);
    expect(tok.tokenize("cat12")).toEqual(["cat</w>", "1</w>", "2</w>"]);
    expect(tok.tokenize("cat!!.")).toEqual(["cat</w>", "!", "!", ".</w>"]);
  });
  test("whitespace is collapsed and text lowercased", () => {
    expect(cleanText("  A\tPHOTO\n\n of ")).toBe("a photo of");
    expect(tok.encodeIds("  A\tPHOTO\n\n of ")).toEqual(tok.encodeIds("a photo of"));
    expect(cleanText("cafe\u0301")).toBe("café"); // NFC
  });
  test("pieces missing from the vocabulary become unk (eos)", () => {
    // é is UTF-8 C3 A9 -> "Ã", "©</w>": neither is in the tiny vocabulary.
    expect(tok.tokenize("é")).toEqual(["Ã", "©</w>"]);
    expect(tok.encodeIds("é a")).toEqual([EOS, EOS, vocab["a</w>"]!]);
  });
});

describe("encode", () => {
  test("bos + ids + eos, padded with eos to maxLength", () => {
    const e = tok.encode("the cat");
    expect(e.ids).toEqual([BOS, vocab["the</w>"]!, vocab["cat</w>"]!, EOS, ...new Array(8).fill(EOS)]);
    expect(e.eosIndex).toBe(3);
    expect(e.length).toBe(4);
    expect(e.truncated).toBe(false);
    expect(tok.encode("the cat", { padding: false }).ids).toHaveLength(4);
  });
  test("empty text is bos, eos", () => {
    expect(tok.encode("").ids.slice(0, 3)).toEqual([BOS, EOS, EOS]);
    expect(tok.encode(" \n").eosIndex).toBe(1);
  });
  test("truncation keeps eos last", () => {
    const e = tok.encode("the ".repeat(20));
    expect(e.ids).toHaveLength(12);
    expect(e.ids[0]).toBe(BOS);
    expect(e.ids.slice(1, 11)).toEqual(new Array(10).fill(vocab["the</w>"]));
    expect(e.ids[11]).toBe(EOS);
    expect(e.eosIndex).toBe(11);
    expect(e.truncated).toBe(true);
    expect(() => tok.encode("the ".repeat(20), { truncation: false })).toThrow(UserError);
    expect(tok.encode("the ".repeat(20), { maxLength: 5 }).ids).toEqual([BOS, vocab["the</w>"]!, vocab["the</w>"]!, vocab["the</w>"]!, EOS]);
  });
  test("special tokens in the text map to their ids", () => {
    expect(tok.encodeIds("the<|endoftext|>cat")).toEqual([vocab["the</w>"]!, EOS, vocab["cat</w>"]!]);
    expect(tok.encodeIds("<|startoftext|>")).toEqual([BOS]);
    expect(tok.encode("cat<|endoftext|>").eosIndex).toBe(2); // the first eos is pooled, as transformers does
  });
  test("a pad token such as SDXL's '!' pads and is cut out of the text as an added token", () => {
    const t2 = new ClipTokenizer({ vocab, merges: MERGES, maxLength: 8, padToken: "!" });
    const bang = vocab["!"]!;
    expect(t2.padId).toBe(bang);
    const e = t2.encode("cat!");
    // transformers' trie splits "!" before BPE: the id of "!", not of "!</w>".
    expect(e.ids).toEqual([BOS, vocab["cat</w>"]!, bang, EOS, bang, bang, bang, bang]);
    expect(e.eosIndex).toBe(3);
    expect(tok.encodeIds("cat!")).toEqual([vocab["cat</w>"]!, vocab["!</w>"]!]);
  });
  test("encodeBatch gives int64 ids [B, L] and eos positions", () => {
    const b = tok.encodeBatch(["the cat", "a photo of the cat"]);
    expect(b.batch).toBe(2);
    expect(b.length).toBe(12);
    expect(Array.from(b.eosIndex, Number)).toEqual([3, 6]);
    expect(Number(b.ids[12 + 2])).toBe(vocab["photo</w>"]!);
    // the pooling rule of transformers finds the same rows
    expect(Array.from(clipPoolingIndices(b.ids, 2, 12, EOS), Number)).toEqual([3, 6]);
  });
  test("decode inverts encode (up to case and whitespace)", () => {
    expect(tok.decode(tok.encode("A photo of  the cat's").ids)).toBe("a photo of the cat 's");
    expect(tok.decode(tok.encode("the cat").ids, true).startsWith("<|startoftext|>the cat <|endoftext|>")).toBe(true);
  });
  test("bad vocabularies fail with a clear message", () => {
    expect(() => new ClipTokenizer({ vocab: { a: 0 }, merges: [] })).toThrow(/bos token "<\|startoftext\|>" is not in the vocabulary/);
    expect(() => new ClipTokenizer({ vocab, merges: ["abc"] })).toThrow(/merge rule 1/);
  });
});

describe("clipPoolingIndices (transformers' rule)", () => {
  test("ids of the real vocabulary: first position of the largest id (49407)", () => {
    const ids = [49406, 320, 49407, 49407, 49406, 320, 1125, 49407];
    expect(Array.from(clipPoolingIndices(ids, 2, 4, 2), Number)).toEqual([2, 3]);
    // SDXL tokenizer_2 pads with 0
    expect(Array.from(clipPoolingIndices([49406, 320, 49407, 0], 1, 4, 2), Number)).toEqual([2]);
  });
  test("other vocabularies: first position of eos_token_id", () => {
    expect(Array.from(clipPoolingIndices([98, 5, 99, 99, 98, 99, 0, 0], 2, 4, 99), Number)).toEqual([2, 1]);
  });
});

describe("fromFolder", () => {
  const dir = mkdtempSync(join(tmpdir(), "clip-tok-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("vocab.json + merges.txt with tokenizer_config.json (SDXL tokenizer_2 style)", () => {
    const d = join(dir, "slow");
    mkdirSync(d);
    writeFileSync(join(d, "vocab.json"), JSON.stringify(vocab));
    writeFileSync(join(d, "merges.txt"), ["#version: 0.2", ...MERGES].join("\n") + "\n");
    writeFileSync(join(d, "tokenizer_config.json"), JSON.stringify({
      model_max_length: 10, pad_token: "!", bos_token: { content: "<|startoftext|>", __type: "AddedToken" },
      added_tokens_decoder: { [String(vocab["!"])]: { content: "!", special: true } },
    }));
    const t = ClipTokenizer.fromFolder(d);
    expect(t.maxLength).toBe(10);
    expect(t.padId).toBe(vocab["!"]!);
    expect(t.encode("the cat").ids).toEqual([BOS, vocab["the</w>"]!, vocab["cat</w>"]!, EOS, ...new Array(6).fill(vocab["!"])]);
  });

  test("tokenizer.json (merges as pairs) with special_tokens_map.json overriding tokenizer_config.json", () => {
    const d = join(dir, "fast");
    mkdirSync(d);
    writeFileSync(join(d, "tokenizer.json"), JSON.stringify({
      model: { type: "BPE", vocab, merges: MERGES.map((m) => m.split(" ")), end_of_word_suffix: "</w>" },
      added_tokens: [{ id: BOS, content: "<|startoftext|>" }, { id: EOS, content: "<|endoftext|>" }],
    }));
    writeFileSync(join(d, "tokenizer_config.json"), JSON.stringify({ pad_token: "!", model_max_length: 77 }));
    writeFileSync(join(d, "special_tokens_map.json"), JSON.stringify({ pad_token: { content: "<|endoftext|>" } }));
    const t = ClipTokenizer.fromFolder(d);
    expect(t.padId).toBe(EOS);
    expect(t.maxLength).toBe(77);
    expect(t.encode("a photo of the cat").ids.slice(0, 8)).toEqual([BOS, vocab["a</w>"]!, vocab["photo</w>"]!, vocab["of</w>"]!, vocab["the</w>"]!, vocab["cat</w>"]!, EOS, EOS]);
  });

  test("a folder without tokenizer files is a UserError naming it", () => {
    expect(() => ClipTokenizer.fromFolder(dir)).toThrow(/no CLIP tokenizer files/);
  });

  test("merges.txt: header skipped, capped at 48894 rules like transformers", () => {
    expect(parseMergesTxt("#version: 0.2\na b\nc d\n")).toEqual(["a b", "c d"]);
    expect(parseMergesTxt(["#version: 0.2", ...Array.from({ length: 49000 }, (_, i) => `a${i} b`)].join("\n"))).toHaveLength(48894);
  });
});

describe("golden ids from transformers' CLIPTokenizer on a tiny vocabulary", () => {
  const golden = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/clip/tokenizer_golden.json"), "utf8")) as {
    max_length: number; vocab: Record<string, number>; merges: string[]; cases: { text: string; ids: number[]; eos_index: number }[];
  };
  const t = new ClipTokenizer({ vocab: golden.vocab, merges: parseMergesTxt(golden.merges.join("\n")), maxLength: golden.max_length });
  for (const c of golden.cases) {
    test(JSON.stringify(c.text), () => {
      const e = t.encode(c.text);
      expect(e.ids).toEqual(c.ids);
      expect(e.eosIndex).toBe(c.eos_index);
    });
  }
});

describe("golden ids from openai/CLIP's tokenizer with the real vocabulary (DreamBench prompts)", () => {
  const golden = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/clip/tokenizer_real_golden.json"), "utf8")) as {
    max_length: number; vocab: Record<string, number>; merges: string[]; cases: { text: string; ids: number[] }[];
  };
  const t = new ClipTokenizer({ vocab: golden.vocab, merges: parseMergesTxt(golden.merges.join("\n")), maxLength: golden.max_length });
  test("the real vocabulary's ids: bos 49406, eos 49407", () => {
    expect([t.bosId, t.eosId]).toEqual([49406, 49407]);
  });
  test(`${golden.cases.length} prompts: ids, truncation to 77 keeping eos, eos position`, () => {
    const wrong: string[] = [];
    let truncated = 0;
    for (const c of golden.cases) {
      const e = t.encode(c.text, { padding: false });
      if (JSON.stringify(e.ids) !== JSON.stringify(c.ids) || e.eosIndex !== c.ids.length - 1) wrong.push(`${JSON.stringify(c.text)}: ${JSON.stringify(e.ids)} vs ${JSON.stringify(c.ids)}`);
      if (e.truncated) truncated++;
      const padded = t.encode(c.text);
      expect(padded.ids.length).toBe(golden.max_length);
      expect(padded.ids.slice(c.ids.length).every((id) => id === t.eosId)).toBe(true);
    }
    expect(wrong).toEqual([]);
    expect(golden.cases.length).toBeGreaterThanOrEqual(750);
    expect(truncated).toBeGreaterThan(0);
  });
});
