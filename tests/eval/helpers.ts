// Shared by the tests/eval suites: tiny model folders in the layouts --dino / --clip read, image
// folders in the layouts scripts/eval.ts reads, and the DreamBench subset's location.

import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { openSafetensors, writeSafetensors } from "../../lib/io/safetensors.ts";
import { vitConfigFromJson, vitParamShapes } from "../../lib/models/vit.ts";
import { Rng } from "../../lib/rng.ts";

export const REPO = resolve(import.meta.dir, "../..");
/** The DreamBench subset; PATCHDPO_DREAMBENCH points elsewhere (a missing folder skips the photo tests). */
export const DREAMBENCH = resolve(process.env.PATCHDPO_DREAMBENCH ?? join(REPO, "../shared/data/dreambench"));
export const HAVE_DREAMBENCH = ["backpack", "dog", "teapot"].every((s) => existsSync(join(DREAMBENCH, s, "00.jpg")));

/** Real photos committed with the repository (224 x 224 PNGs). */
export const FIXTURE_PHOTOS = {
  dog: join(REPO, "tests/fixtures/images/photo_dog.png"),
  teapot: join(REPO, "tests/fixtures/images/photo_teapot.png"),
  can: join(REPO, "tests/fixtures/images/photo_can.png"),
  dog2: join(REPO, "tests/fixtures/images/photo_dog_512x388.png"),
  mDog: join(REPO, "tests/fixtures/mobilenet/0_dog.png"),
  mTeapot: join(REPO, "tests/fixtures/mobilenet/1_teapot.png"),
  mCan: join(REPO, "tests/fixtures/mobilenet/2_can.png"),
  synthetic: join(REPO, "tests/fixtures/mobilenet/3_synthetic.png"),
};

/** A tiny random facebook/dino-vits16-shaped folder (224 px, patch 16) for the --dino code path. */
export async function tinyDinoFolder(dir: string): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const json = { model_type: "vit", hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, patch_size: 16, image_size: 224, layer_norm_eps: 1e-12, hidden_act: "gelu" };
  writeFileSync(join(dir, "config.json"), JSON.stringify(json));
  const rng = new Rng(5);
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [name, shape] of vitParamShapes(vitConfigFromJson(json))) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = name.includes("layernorm") && name.endsWith("weight") ? new Float32Array(n).fill(1) : rng.normals(n, 0.05);
    tensors[name] = { dtype: "F32", shape, data };
  }
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

/**
 * A tiny CLIPModel folder: the text and vision towers of the CLIP parity fixtures
 * (tests/fixtures/clip/{text,vision}_tiny.safetensors, projection 24) in one model.safetensors, a
 * CLIPConfig, and a character-level tokenizer whose ids fit the tiny vocabulary (bos 98, eos 99).
 */
export async function tinyClipFolder(dir: string): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const text = openSafetensors(join(REPO, "tests/fixtures/clip/text_tiny.safetensors"));
  const vision = openSafetensors(join(REPO, "tests/fixtures/clip/vision_tiny.safetensors"));
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const f of [text, vision]) {
    for (const n of f.names()) if (n.startsWith("text_") || n.startsWith("vision_") || n.startsWith("visual_")) tensors[n] = { dtype: "F32", shape: f.info(n).shape, data: Float32Array.from(f.float32(n)) };
  }
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  const textConfig = JSON.parse(text.metadata.config!);
  const visionConfig = JSON.parse(vision.metadata.config!);
  writeFileSync(join(dir, "config.json"), JSON.stringify({ architectures: ["CLIPModel"], model_type: "clip", projection_dim: 24, text_config: textConfig, vision_config: visionConfig }));
  const vocab: Record<string, number> = { "<|startoftext|>": 98, "<|endoftext|>": 99 };
  "abcdefghijklmnopqrstuvwxyz".split("").forEach((c, i) => {
    vocab[c] = 1 + i;
    vocab[`${c}</w>`] = 27 + i;
  });
  writeFileSync(join(dir, "vocab.json"), JSON.stringify(vocab));
  writeFileSync(join(dir, "merges.txt"), "#version: 0.2\n");
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ model_max_length: 16, bos_token: "<|startoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>", pad_token: "<|endoftext|>" }));
  return dir;
}

/** Copies `files` into `dir` under the given names (creating dir). */
export function place(dir: string, files: Record<string, string>): void {
  mkdirSync(dir, { recursive: true });
  for (const [name, src] of Object.entries(files)) copyFileSync(src, join(dir, name));
}

/** A DreamBench-format prompt file for the fixture subjects (two object prompts, two live ones). */
export function writePromptFile(path: string, classes: Record<string, string>): string {
  const lines = ["Classes", "", "subject_name,class", ...Object.entries(classes).map(([s, c]) => `${s},${c}`), "", "Prompts", "", "Object Prompts", "", "prompt_list = ["];
  lines.push("'a {0} {1} in the jungle'.format(unique_token, class_token),", "'a red {0} {1}'.format(unique_token, class_token)", "]", "", "Live Subject Prompts", "", "prompt_list = [");
  lines.push("'a {0} {1} in the jungle'.format(unique_token, class_token),", "'a {0} {1} wearing a red hat'.format(unique_token, class_token)", "]");
  writeFileSync(path, lines.join("\n") + "\n");
  return path;
}
