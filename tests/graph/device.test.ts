// The --device preflight (lib/graph/device.ts): a GPU provider that cannot run stops the run with
// what is missing and the exact command that fixes it. Here (no CUDA) the failure paths run for
// real; a fake provider folder stands in for an installed provider whose CUDA libraries are missing.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as G from "../../lib/graph/index.ts";
import { CUDA_PROVIDER_FILES, ORT_BIN_DIR, cudaInstallCommand, deviceProblem } from "../../lib/graph/index.ts";
import { UserError } from "../../lib/io/errors.ts";
import { NO_WEBGPU } from "./webgpu-helpers.ts";

const REPO = resolve(import.meta.dir, "../..");
const CUDA_INSTALLED = CUDA_PROVIDER_FILES.every((f) => existsSync(join(ORT_BIN_DIR, f)));
const LINUX_X64 = process.platform === "linux" && process.arch === "x64";
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "patchdpo-device-"));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("--device cuda preflight", () => {
  test.skipIf(CUDA_INSTALLED || !LINUX_X64)("without the CUDA provider: compile stops with a UserError naming make setup-cuda and the install script", async () => {
    const g = new G.Graph();
    const x = g.input("x", [2]);
    const err = await G.compile({ y: G.mul(x, x) }, { device: "cuda" }).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toContain("libonnxruntime_providers_cuda.so");
    expect(err.message).toContain("make setup-cuda");
    expect(err.message).toContain("ONNXRUNTIME_NODE_INSTALL_CUDA=v12 node script/install.js");
    // ONNX files (transformers.js encoders) go through the same check.
    await expect(G.openOnnxFile(join(REPO, "tests/fixtures/vit/vit-onnx/onnx/model.onnx"), { device: "cuda" })).rejects.toThrow(/make setup-cuda/);
  });

  test.skipIf(CUDA_INSTALLED || !LINUX_X64)("a script run with --device cuda exits 1 with the fix, no stack trace", () => {
    const dir = join(tmp, "cli");
    mkdirSync(join(dir, "real", "dog"), { recursive: true });
    mkdirSync(join(dir, "gen", "dog"), { recursive: true });
    for (const d of ["real", "gen"]) spawnSync("cp", [join(REPO, "tests/fixtures/images/photo_dog.png"), join(dir, d, "dog", d === "gen" ? "a dog.png" : "00.png")]);
    const r = spawnSync("bun", ["scripts/eval.ts", "--images", join(dir, "gen"), "--real", join(dir, "real"), "--out", join(dir, "out"), "--encoder-feature", "mobilenet_v2", "--device", "cuda"], { cwd: REPO, encoding: "utf8" });
    expect(r.stderr).toContain("make setup-cuda");
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(r.status).toBe(1);
  });

  test("the install command is onnxruntime-node's own script, forced to CUDA 12", () => {
    expect(cudaInstallCommand()).toMatch(/^\(cd .*node_modules\/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL_CUDA=v12 node script\/install\.js\)$/);
    // The flag it sets is the one that 1.30's parser turns into "cuda12" (ONNXRUNTIME_NODE_INSTALL=cuda12 is read as no flag).
    const parse = (env: Record<string, string>) =>
      spawnSync("bun", ["-e", "console.log(String(require('./script/install-utils.js').parseInstallFlag()))"], { cwd: resolve(ORT_BIN_DIR, "../../../.."), env: { ...process.env, ...env }, encoding: "utf8" }).stdout.trim();
    expect(parse({ ONNXRUNTIME_NODE_INSTALL_CUDA: "v12" })).toBe("cuda12");
    expect(parse({ ONNXRUNTIME_NODE_INSTALL: "cuda12" })).toBe("undefined");
  });

  test.skipIf(!LINUX_X64)("provider files that are there but do not load: the loader's reason and what to install", async () => {
    // Not a shared library at all: reinstall.
    const broken = join(tmp, "broken");
    mkdirSync(broken);
    for (const f of CUDA_PROVIDER_FILES) writeFileSync(join(broken, f), "not an ELF file");
    const p1 = (await deviceProblem("cuda", broken))!;
    expect(p1).toContain("does not load");
    expect(p1).toContain("make setup-cuda");
    // A real shared library that needs one that is absent (as the CUDA provider needs libcudnn.so.9).
    const cc = spawnSync("cc", ["--version"]).status === 0;
    if (!cc) return console.log("no C compiler: the missing-dependency case is skipped");
    const deps = join(tmp, "deps"), fake = join(tmp, "fake");
    mkdirSync(deps);
    mkdirSync(fake);
    writeFileSync(join(deps, "dep.c"), "int cudnn_like(void) { return 9; }\n");
    writeFileSync(join(deps, "provider.c"), "int cudnn_like(void); int GetProvider(void) { return cudnn_like(); }\n");
    const run = (args: string[]) => expect(spawnSync("cc", args, { cwd: deps, encoding: "utf8" }).status).toBe(0);
    run(["-shared", "-fPIC", "-o", "libfakecudnn.so.9", "-Wl,-soname,libfakecudnn.so.9", "dep.c"]);
    run(["-shared", "-fPIC", "-o", join(fake, "libonnxruntime_providers_cuda.so"), "provider.c", "-Wl,--no-as-needed", join(deps, "libfakecudnn.so.9")]);
    run(["-shared", "-fPIC", "-o", join(fake, "libonnxruntime_providers_shared.so"), "dep.c"]);
    rmSync(join(deps, "libfakecudnn.so.9"));
    const p2 = (await deviceProblem("cuda", fake))!;
    expect(p2).toContain("libonnxruntime_providers_cuda.so does not load: libfakecudnn.so.9: cannot open shared object file");
    expect(p2).toContain("cuDNN 9");
  });
});

describe("--device webgpu preflight", () => {
  test.skipIf(NO_WEBGPU === null)("without an adapter: the reason and how to get one (lavapipe)", () => {
    expect(NO_WEBGPU).toContain("--device webgpu");
    expect(NO_WEBGPU).toContain(".ci/lavapipe");
  });

  test.skipIf(NO_WEBGPU !== null)("with an adapter there is no problem; with the Vulkan driver hidden, the reason and the fix", async () => {
    expect(await deviceProblem("webgpu")).toBeNull();
    // A fresh process that finds no Vulkan driver (Dawn reads VK_ICD_FILENAMES through the loader).
    const r = spawnSync("bun", ["-e", "import { deviceProblem } from './lib/graph/index.ts'; console.log(await deviceProblem('webgpu'))"], {
      cwd: REPO, env: { ...process.env, VK_ICD_FILENAMES: join(tmp, "none.json"), VK_DRIVER_FILES: join(tmp, "none.json") }, encoding: "utf8",
    });
    expect(r.stdout).toContain("Failed to get a WebGPU adapter");
    expect(r.stdout).toContain(".ci/lavapipe");
  });
});
