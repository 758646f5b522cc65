import { expect, test } from "bun:test";
import { ClipTokenizer, parseMergesTxt } from "../../lib/models/clip-tokenizer.ts";
import { mergesTxt, trainBpe } from "../../lib/models/bpe-train.ts";

const corpus = ["a red striped teapot with a yellow star logo", "a red teapot on the beach", "a blue mug in the snow", "a teapot in the jungle"];

test("trained BPE tokenizes its corpus words whole and anything else byte by byte, never unknown", () => {
  const v = trainBpe(corpus, 200);
  const tok = new ClipTokenizer({ vocab: v.vocab, merges: parseMergesTxt(mergesTxt(v)), maxLength: 16 });
  expect(tok.tokenize("a red teapot")).toEqual(["a</w>", "red</w>", "teapot</w>"]);
  const odd = tok.tokenize("zebra!");
  expect(odd.length).toBeGreaterThan(1);
  for (const t of odd) expect(v.vocab[t]).toBeDefined();
  const enc = tok.encode("a red teapot");
  expect(enc.ids[0]).toBe(tok.bosId);
  expect(enc.ids[enc.eosIndex]).toBe(tok.eosId);
  expect(enc.ids.length).toBe(16);
});

test("deterministic: same corpus, same vocabulary and merges", () => {
  expect(trainBpe(corpus, 50)).toEqual(trainBpe([...corpus], 50));
});
