// A worker thread of AdamW.stepAsync (lib/train/adamw.ts): runs adamwKernel on its segments of
// the shared staging buffers (weights, gradients) and of the shared moments, then answers.
import { type WorkerJob, adamwKernel } from "./adamw.ts";

declare const self: Worker;
self.onmessage = (e: MessageEvent<WorkerJob>) => {
  const { p, g, k, segs } = e.data;
  for (const s of segs) adamwKernel(p, s.so, g, s.so, s.m, s.v, s.mo, s.n, k);
  self.postMessage(0);
};
