// Preflight of the GPU execution providers: before the first session on `cuda` or `webgpu`, one
// tiny graph runs on that provider alone. When it cannot, the run stops with what is missing and
// the exact command that fixes it, instead of ONNX Runtime's "Failed to load shared library".
//
// cuda: onnxruntime-node's npm package does not ship its CUDA provider (too large for npm). Its
//   install script downloads Microsoft.ML.OnnxRuntime.Gpu.Linux (CUDA 12 only) from nuget.org
//   into node_modules/onnxruntime-node/bin/napi-v6/linux/x64/: libonnxruntime_providers_cuda.so,
//   libonnxruntime_providers_shared.so (and the TensorRT one). Bun runs that script only for a
//   trusted package; `make setup-cuda` runs it. The provider then needs the CUDA 12 runtime,
//   cuBLAS, cuFFT, cuRAND and cuDNN 9 from the system (LD_LIBRARY_PATH) and an NVIDIA driver.
// webgpu: bundled (Dawn on Vulkan); it needs a Vulkan driver: the GPU vendor's, or Mesa's lavapipe
//   on a machine without a GPU (.ci/lavapipe installs it on Debian 12).

import { existsSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { UserError } from "../io/errors.ts";
import { encodeModel } from "../onnx/index.ts";
import type { Device } from "./session.ts";

/** Where onnxruntime-node keeps its native libraries for this platform. */
export const ORT_BIN_DIR = resolve(dirname(require.resolve("onnxruntime-node")), "..", "bin", "napi-v6", process.platform, process.arch);

/** The files onnxruntime-node's install script downloads for the CUDA 12 provider (its install-metadata.js). */
export const CUDA_PROVIDER_FILES = ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"];

/** The command that installs the CUDA provider without make (what `make setup-cuda` runs). */
export function cudaInstallCommand(): string {
  const pkg = relative(process.cwd(), resolve(ORT_BIN_DIR, "../../../..")) || ".";
  // ONNXRUNTIME_NODE_INSTALL=cuda12 reads as "no flag" in 1.30's install-utils.js (its switch
  // has no return for that value); ONNXRUNTIME_NODE_INSTALL_CUDA=v12 forces the CUDA 12 files.
  return `(cd ${pkg} && ONNXRUNTIME_NODE_INSTALL_CUDA=v12 node script/install.js)`;
}

const CUDA_LIBS_HINT =
  "The provider needs the CUDA 12 runtime, cuBLAS, cuFFT, cuRAND and cuDNN 9 on the library path and an NVIDIA driver: " +
  "for example `pip install nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 nvidia-cufft-cu12 nvidia-curand-cu12 nvidia-cudnn-cu12` " +
  "and LD_LIBRARY_PATH set to their nvidia/*/lib folders, or NVIDIA's apt packages cuda-libraries-12-x and libcudnn9-cuda-12. " +
  "onnxruntime-node 1.30 has no CUDA 13 build.";

const WEBGPU_HINT =
  "WebGPU runs on Vulkan: install the GPU's Vulkan driver (NVIDIA's driver ships one; Mesa's for AMD/Intel) and libvulkan1. " +
  "Without a GPU, Mesa 25's lavapipe works (Debian 12: sudo .ci/lavapipe, from bookworm-backports; Debian 12's own Mesa 22.3 is refused). " +
  "Set XDG_RUNTIME_DIR to a writable folder.";

/** The loader's own message for a shared library (dlopen + dlerror through libc), or null when it loads. */
export function dlopenError(file: string): string | null {
  if (process.platform !== "linux") return null;
  // Loaded lazily: bun:ffi is Bun's; nothing else in lib/graph needs it.
  const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
  const libc = dlopen("libc.so.6", {
    dlopen: { args: [FFIType.cstring, FFIType.i32], returns: FFIType.ptr },
    dlerror: { args: [], returns: FFIType.cstring },
    dlclose: { args: [FFIType.ptr], returns: FFIType.i32 },
  });
  try {
    const RTLD_NOW = 2;
    const handle = libc.symbols.dlopen(Buffer.from(`${file}\0`), RTLD_NOW);
    if (handle) {
      libc.symbols.dlclose(handle);
      return null;
    }
    return String(libc.symbols.dlerror());
  } finally {
    libc.close();
  }
}

/** Runs y = x * x on `device` alone (no CPU fallback); returns ONNX Runtime's error, or null. */
async function tinyRun(device: Device): Promise<string | null> {
  const info = (name: string) => ({ name, type: { tensorType: { elemType: 1 as never, shape: [2, 4, 8].map((d) => ({ dimValue: d })) } } });
  const model = encodeModel({
    irVersion: 8, opsetImport: [{ domain: "", version: 17 }], producerName: "patchdpo", producerVersion: "0.1.0",
    graph: { name: "preflight", node: [{ opType: "Mul", input: ["x", "x"], output: ["y"], attribute: [] }], initializer: [], input: [info("x")], output: [info("y")], valueInfo: [] },
  });
  let session: ort.InferenceSession | undefined;
  try {
    session = await ort.InferenceSession.create(model, {
      executionProviders: [device] as never,
      extra: { session: { disable_cpu_ep_fallback: "1" } },
    });
    const x = new ort.Tensor("float32", Float32Array.from({ length: 64 }, (_, i) => i / 8), [2, 4, 8]);
    const y = (await session.run({ x })).y!.data as Float32Array;
    if (y[9] !== (9 / 8) ** 2) return `the test graph computed ${y[9]} for ${(9 / 8) ** 2}`;
    return null;
  } catch (e) {
    return (e as Error).message.trim();
  } finally {
    await session?.release().catch(() => {});
  }
}

/**
 * What keeps `device` from running, as a message that says what to do, or null when it runs.
 * `binDir` is onnxruntime-node's native folder (tests point it elsewhere).
 */
export async function deviceProblem(device: Device, binDir = ORT_BIN_DIR): Promise<string | null> {
  if (device === "cpu") return null;
  if (device === "webgpu") {
    const err = await tinyRun("webgpu");
    return err && `--device webgpu: ONNX Runtime's WebGPU provider cannot run here (${firstLine(err)}). ${WEBGPU_HINT}`;
  }
  if (`${process.platform}/${process.arch}` !== "linux/x64") {
    return `--device cuda: onnxruntime-node 1.30 ships its CUDA provider for Linux x64 only (this is ${process.platform}/${process.arch}); use --device webgpu or cpu`;
  }
  const missing = CUDA_PROVIDER_FILES.filter((f) => !existsSync(join(binDir, f)));
  if (missing.length) {
    return `--device cuda: onnxruntime-node's CUDA 12 provider is not installed (${missing.join(", ")} missing in ${binDir}). ` +
      `Install it with: make setup-cuda   (or: ${cudaInstallCommand()}). It downloads Microsoft.ML.OnnxRuntime.Gpu.Linux from nuget.org, so it needs internet once.`;
  }
  // The files are there: do the provider and the CUDA libraries it links against load?
  for (const f of CUDA_PROVIDER_FILES) {
    const err = dlopenError(join(binDir, f));
    if (err) return `--device cuda: ${f} does not load: ${err}. ${/invalid ELF|file too short|wrong ELF/i.test(err) ? `Reinstall it: make setup-cuda   (or: ${cudaInstallCommand()}). ` : ""}${CUDA_LIBS_HINT}`;
  }
  if (binDir !== ORT_BIN_DIR) return null; // a test folder: ONNX Runtime loads only its own
  const err = await tinyRun("cuda");
  return err && `--device cuda: ONNX Runtime's CUDA provider cannot run here (${firstLine(err)}). Is there an NVIDIA GPU and driver (nvidia-smi)? ${CUDA_LIBS_HINT}`;
}

/** ONNX Runtime's message without its source location ("/onnxruntime_src/...cc:136 ... was false. "). */
const firstLine = (s: string) => s.split("\n")[0]!.replace(/^\/onnxruntime_src\/.*? was false\. /, "").slice(0, 400);

const checked = new Map<Device, Promise<void>>();

/** Throws a UserError saying what to fix when `device` cannot run; checks once per process. */
export function ensureDevice(device: Device): Promise<void> {
  if (device === "cpu") return Promise.resolve();
  let p = checked.get(device);
  if (!p) {
    p = deviceProblem(device).then((problem) => {
      if (problem) throw new UserError(problem);
    });
    checked.set(device, p);
  }
  return p;
}
