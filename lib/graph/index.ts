export * from "./graph.ts";
export * from "./ops.ts";
export { broadcastShapes } from "./shape.ts";
export { lower, OPSET } from "./lower.ts";
export { compile, clearSessionCache, openOnnxFile, OnnxFile, toOnnx, Compiled, DEVICES, type Device, type CompileOptions, type Feeds, type HostArray } from "./session.ts";
export { grad, sumTo, differentiableOps, resizeMatrix } from "./autodiff.ts";
