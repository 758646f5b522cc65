// The shipped patch encoder (checkpoints/patch-encoder, issue 10): what `--encoder default` means
// for score-patches and eval. It must load on a fresh clone (no ../shared), be read at the layer it
// was trained for, and score differently from the raw MobileNetV2 it was finetuned from.
// (On the shared photos, tests/scripts/score-patches.test.ts checks it tells subjects apart at
// least as well as the raw encoder.)

import { describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { UserError } from "../../lib/io/errors.ts";
import { loadImage } from "../../lib/io/images.ts";
import { type TensorInput, openSafetensors, writeSafetensors } from "../../lib/io/safetensors.ts";
import { DEFAULT_PATCH_ENCODER, RAW_ENCODER, loadFeaturizer, loadGraphEncoder } from "../../lib/models/featurizer.ts";
import { qualityMaps } from "../../lib/patch/quality.ts";

const REPO = resolve(import.meta.dir, "../..");
const LAYER = "block_13_expand_relu";
const photo = (name: string) => loadImage(join(REPO, "tests/fixtures/mobilenet", `${name}.png`));

describe("the shipped patch encoder", () => {
  test("lives in the repository, names its raw base and the layer it was trained for, and holds only the trained blocks", () => {
    expect(DEFAULT_PATCH_ENCODER).toBe(join(REPO, "checkpoints/patch-encoder"));
    const state = JSON.parse(readFileSync(join(DEFAULT_PATCH_ENCODER, "state.json"), "utf8"));
    expect(state.config.encoder).toBe(RAW_ENCODER);
    expect(state.config.featureLayer).toBe(LAYER);
    const ge = loadGraphEncoder("default");
    expect(ge.trainedLayer).toBe(LAYER);
    // Only the blocks under the scored layer are stored (small; the rest comes from the embedded model).
    const names = openSafetensors(join(DEFAULT_PATCH_ENCODER, "weights.safetensors")).names();
    const blocks = new Set(names.map((n) => Number(/^block_(\d+)_/.exec(n)?.[1] ?? -1)));
    expect(Math.min(...blocks)).toBeGreaterThanOrEqual(13 - state.config.trainBlocks + 1);
    expect(Math.max(...blocks)).toBe(13);
    expect(names.sort()).toEqual([...state.config.trained].sort());
  });

  test("is read at block_13_expand_relu by default; another layer is refused with the way out", async () => {
    const f = await loadFeaturizer("default", { batchSize: 1, threads: 2 });
    expect((await f.features([await photo("0_dog")])).patchShape).toEqual([576, 14, 14]);
    const refused = loadFeaturizer("default", { featureLayer: "out_relu" });
    await expect(refused).rejects.toThrow(UserError);
    await expect(refused).rejects.toThrow(/--encoder mobilenet_v2/);
  });

  test("a finetuned encoder with a NaN weight is refused by name when it is loaded", async () => {
    const dir = mkdtempSync(join(tmpdir(), "patch-encoder-nan-"));
    try {
      cpSync(join(DEFAULT_PATCH_ENCODER, "state.json"), join(dir, "state.json"));
      const f = openSafetensors(join(DEFAULT_PATCH_ENCODER, "weights.safetensors"));
      const tensors: Record<string, TensorInput> = {};
      for (const n of f.names()) tensors[n] = { dtype: "F32", shape: f.info(n).shape, data: Float32Array.from(f.float32(n)) };
      const victim = f.names()[0]!;
      (tensors[victim]!.data as Float32Array)[3] = NaN;
      await writeSafetensors(join(dir, "weights.safetensors"), tensors);
      expect(() => loadGraphEncoder(dir)).toThrow(new RegExp(`finetuned encoder tensor "${victim}" holds NaN`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("scores differ from the raw MobileNetV2's at the same layer", async () => {
    const [dog, teapot] = [await photo("0_dog"), await photo("1_teapot")];
    const maps = async (spec: string) => {
      const f = await loadFeaturizer(spec, { featureLayer: spec === RAW_ENCODER ? LAYER : undefined, batchSize: 2, threads: 2 });
      const { patches, patchShape } = await f.features([dog, teapot]);
      const [C, h, w] = patchShape;
      const n = C * h * w;
      return { feats: patches, q: qualityMaps({ data: patches.subarray(0, n), c: C, h, w }, { data: patches.subarray(n, 2 * n), c: C, h, w }).qGen };
    };
    const raw = await maps(RAW_ENCODER), shipped = await maps("default");
    let featDiff = 0, qDiff = 0;
    for (let i = 0; i < raw.feats.length; i++) featDiff = Math.max(featDiff, Math.abs(raw.feats[i]! - shipped.feats[i]!));
    for (let i = 0; i < raw.q.length; i++) qDiff = Math.max(qDiff, Math.abs(raw.q[i]! - shipped.q[i]!));
    expect(featDiff).toBeGreaterThan(1e-2);
    expect(qDiff).toBeGreaterThan(1e-3);
  });

});
