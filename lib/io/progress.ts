// A one-line progress bar on stderr, drawn only for a person watching a terminal. Logs and pipes
// get nothing from here (steps write their own JSON lines), so redirected output stays clean.

export interface Progress {
  /** Counts n more finished items (default 1). Redraws at most every `intervalMs`. */
  tick(n?: number): void;
  /** Draws the final state and ends the line. Further ticks are ignored. */
  done(): void;
}

/** The stream a bar draws on: process.stderr, or a stand-in in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  /** Minimum time between redraws (default 100 ms). */
  intervalMs?: number;
  /** Clock in ms (tests pass a fake one). */
  now?: () => number;
}

/** Seconds as m:ss or h:mm:ss. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

function formatRate(rate: number): string {
  if (!Number.isFinite(rate) || rate <= 0) return "-- it/s";
  if (rate >= 1) return `${rate >= 100 ? rate.toFixed(0) : rate.toFixed(1)} it/s`;
  return `${(1 / rate).toFixed(1)} s/it`;
}

/** The bar's text for a given state (exported for tests). */
export function renderProgress(label: string, count: number, total: number, elapsedS: number, columns = 80): string {
  const rate = elapsedS > 0 ? count / elapsedS : 0;
  const eta = count >= total ? `${formatDuration(elapsedS)} total` : `ETA ${formatDuration(rate > 0 ? (total - count) / rate : NaN)}`;
  const pct = total > 0 ? Math.min(100, Math.floor((100 * count) / total)) : 100;
  const tail = ` ${count}/${total} ${String(pct).padStart(3)}% ${formatRate(rate)} ${eta}`;
  const width = Math.max(10, Math.min(40, columns - label.length - tail.length - 4));
  const filled = total > 0 ? Math.min(width, Math.floor((width * count) / total)) : width;
  return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}]${tail}`;
}

/**
 * A progress bar for `total` items on stderr, with rate (items/s) and ETA, when stderr is a
 * terminal; silent otherwise. Usage: `const p = progress(n, "scoring"); ... p.tick(); ... p.done();`
 */
export function progress(total: number, label: string, options: ProgressOptions = {}): Progress {
  const stream = options.stream ?? process.stderr;
  if (!stream.isTTY) return { tick() {}, done() {} };
  const now = options.now ?? (() => performance.now());
  const interval = options.intervalMs ?? 100;
  const start = now();
  let count = 0;
  let lastDraw = -Infinity;
  let finished = false;
  const draw = () => {
    const t = now();
    lastDraw = t;
    // \r returns to the line start, \x1b[K clears what a longer previous line left behind.
    stream.write(`\r${renderProgress(label, count, total, (t - start) / 1000, stream.columns ?? 80)}\x1b[K`);
  };
  return {
    tick(n = 1) {
      if (finished) return;
      count += n;
      if (now() - lastDraw >= interval) draw();
    },
    done() {
      if (finished) return;
      finished = true;
      draw();
      stream.write("\n");
    },
  };
}
