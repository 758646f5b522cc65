export * from "./graph.ts";
export * from "./ops.ts";
export { broadcastShapes } from "./shape.ts";
export { lower, OPSET, type Emit, type NodeRewrite } from "./lower.ts";
export { deviceProblem, ensureDevice, ORT_BIN_DIR, CUDA_PROVIDER_FILES, cudaInstallCommand } from "./device.ts";
export { webgpuRewrite, WEBGPU_REWRITTEN_OPS } from "./webgpu.ts";
export { compile, clearSessionCache, openOnnxFile, OnnxFile, toOnnx, Compiled, DeviceTensor, readback, transferBytes, upload, DEVICES, type Device, type CompileOptions, type Feeds, type HostArray } from "./session.ts";
export { grad, sumTo, differentiableOps, resizeMatrix } from "./autodiff.ts";
export { autocast, COMPUTE_DTYPE, currentPrecision, FLOAT32_OPS, LOW_OPS, PRECISION_FLAG, PRECISION_HELP, PRECISIONS, precisionSupport, usePrecision, withPrecision, type Precision } from "./precision.ts";
