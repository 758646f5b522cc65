// Host <-> device bytes per dpo-epoch step on the tiny world's generator (checkpoints/tiny: UNet,
// text encoder, IP-Adapter-Plus over MobileNetV2, pixel-unshuffle VAE; 64 px, patch-dpo, 2 pairs
// per step), counted by lib/graph's transferBytes() at every logged step:
//   cpu                  the host loop (nothing is counted: there is no device);
//   webgpu --state host  gradients down, host AdamW, weights up every step;
//   webgpu --state device  (the default on webgpu) AdamW, clip and guard in the graph, weights
//                        and moments in gpu buffers; down once per checkpoint.
// The steady-state step is the difference between later log rows. It includes the batch's own
// transfers on the device, the same on both webgpu paths (prepare(): images up to the frozen VAE
// and image encoder, latents and image features down, then the noisy latents, targets, ids,
// features and quality maps up to the training graphs).
//
//   XDG_RUNTIME_DIR=/tmp/xdg bun bench/resident-bytes.ts [--steps 4]
//
// Needs a WebGPU adapter (lavapipe here: `sudo make lavapipe`).

import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Device, deviceProblem, transferBytes } from "../lib/graph/index.ts";
import { RAW_ENCODER } from "../lib/models/featurizer.ts";
import { DEFAULTS as DPO_DEFAULTS, run as dpoEpoch, type StateWhere } from "../scripts/dpo-epoch.ts";
import { DEFAULTS as GEN_DEFAULTS, run as generate } from "../scripts/generate-images.ts";
import { DEFAULTS as SCORE_DEFAULTS, run as score } from "../scripts/score-patches.ts";
import { DEFAULTS as PROMPT_DEFAULTS, run as synthesize } from "../scripts/synthesize-prompts.ts";

const REPO = join(import.meta.dir, "..");
const MODEL = join(REPO, "checkpoints/tiny");
const arg = (name: string, d: string) => {
  const i = Bun.argv.indexOf(name);
  return i < 0 ? d : Bun.argv[i + 1]!;
};
const STEPS = Number(arg("--steps", "4"));
const TINY = 64, BATCH = 2;

const problem = await deviceProblem("webgpu");
if (problem) throw new Error(`no WebGPU adapter: ${problem}`);

const root = mkdtempSync(join(tmpdir(), "patchdpo-resident-bytes-"));
try {
  // A scored run: catalogue subjects, renderer references and generations with planted defects.
  const base = join(root, "base");
  await synthesize({ ...PROMPT_DEFAULTS, run: base, subjects: 3, scenesPerSubject: 2, seed: 0, world: "tiny", tinySplit: "train", force: false, log: () => {} });
  const gen = { ...GEN_DEFAULTS, run: base, model: "tinyworld", seed: 0, threads: 1 };
  await generate({ ...gen, mode: "reference", width: 224, height: 224 });
  await generate({ ...gen, mode: "personalized", width: TINY, height: TINY, perReference: 3, defectRate: 1 });
  await score({ ...SCORE_DEFAULTS, run: base, encoder: RAW_ENCODER, featureLayer: "block_13_expand_relu", latentGrid: TINY / 4, threads: 1 });

  const rows: string[] = [];
  for (const [device, state] of [["cpu", "auto"], ["webgpu", "host"], ["webgpu", "device"]] as [Device, StateWhere][]) {
    const run = join(root, `${device}-${state}`);
    cpSync(base, run, { recursive: true });
    const at: { toDevice: number; toHost: number }[] = [];
    const seconds: number[] = [];
    const start = transferBytes();
    const r = await dpoEpoch({
      ...DPO_DEFAULTS, run, model: MODEL, ipAdapter: join(MODEL, "ip-adapter.safetensors"), imageEncoder: "mobilenet_v2", objective: "patch-dpo",
      size: TINY, batch: BATCH, lr: 1e-5, beta: 500, maxSteps: STEPS, saveEvery: 0, device, state, threads: 0,
      onStep: (row) => {
        at.push(transferBytes());
        seconds.push(row.seconds ?? 0);
      },
    });
    const end = transferBytes();
    const n = at.length;
    const per = { up: (at[n - 1]!.toDevice - at[1]!.toDevice) / (n - 2), down: (at[n - 1]!.toHost - at[1]!.toHost) / (n - 2) };
    const first = { up: at[0]!.toDevice - start.toDevice, down: at[0]!.toHost - start.toHost };
    const ck = { up: end.toDevice - at[n - 1]!.toDevice, down: end.toHost - at[n - 1]!.toHost };
    const trainBytes = 4 * r.trainable.values;
    const sps = seconds.slice(1).reduce((a, b) => a + b, 0) / Math.max(1, n - 1);
    rows.push(
      `| ${device} | ${device === "cpu" ? "host (auto)" : state} | ${per.up} | ${per.down} | ${first.up} / ${first.down} | ${ck.down} | ${trainBytes} | ${sps.toFixed(2)} |`,
    );
    console.log(`${device} --state ${state}: per step up ${per.up} B, down ${per.down} B; first step up ${first.up} / down ${first.down}; checkpoint + end down ${ck.down}; trainable ${trainBytes} B (${r.trainable.names} tensors); ${sps.toFixed(2)} s/step`);
  }
  console.log(`\n| device | --state | up per step (B) | down per step (B) | first step up / down (B) | checkpoint down (B) | trainable weights (B) | s/step |\n|---|---|---|---|---|---|---|---|\n${rows.join("\n")}`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
