// The settings that determine a manifest's rows, kept beside it: `generations.jsonl` ->
// `generations.settings.json` (a shard's beside its shard file). A resume with other settings
// would mix rows of two settings in one manifest, so it is refused, naming each setting and both
// values; `--force` (which redoes the rows) or another run directory are the ways out. `expected`
// lists the ids the manifest is to hold, so `--merge` and `status.ts` can tell a finished manifest
// from one whose step was killed.

import { existsSync, readFileSync } from "node:fs";
import { writeJsonAtomic } from "./atomic.ts";
import { UserError } from "./errors.ts";

export type Settings = Record<string, unknown>;

export interface SettingsFile {
  step: string;
  settings: Settings;
  /** Ids the manifest holds when its step has finished (a shard: the ids of that shard). */
  expected?: string[];
  /** "i/n" for a shard file. */
  shard?: string;
}

/** `<dir>/<name>.jsonl` -> `<dir>/<name>.settings.json`. */
export const settingsPath = (manifest: string) => `${manifest.replace(/\.jsonl$/, "")}.settings.json`;

export function readSettings(manifest: string): SettingsFile | undefined {
  const path = settingsPath(manifest);
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as SettingsFile;
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message}); it records the settings ${manifest} was made with: redo that step with --force`);
  }
}

export async function writeSettings(manifest: string, file: SettingsFile, path = settingsPath(manifest)): Promise<void> {
  await writeJsonAtomic(path, file);
}

/** `key: then -> now` for every setting that differs. */
export function settingsDiff(then: Settings, now: Settings): { key: string; then: unknown; now: unknown }[] {
  const keys = [...new Set([...Object.keys(then), ...Object.keys(now)])];
  return keys
    .filter((k) => JSON.stringify(then[k] ?? null) !== JSON.stringify(now[k] ?? null))
    .map((k) => ({ key: k, then: then[k] ?? null, now: now[k] ?? null }));
}

/** "--ip-scale 0.6 then, 0.8 now; --seed 0 then, 1 now" (keys shown as the flags that set them). */
export function describeDiff(diff: { key: string; then: unknown; now: unknown }[]): string {
  const flag = (k: string) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
  return diff.map((d) => `${flag(d.key)} ${JSON.stringify(d.then)} then, ${JSON.stringify(d.now)} now`).join("; ");
}

/**
 * Before a resume appends to `manifest`: throws when its recorded settings differ from `now`. A
 * manifest without a settings file (written before they were recorded) is resumed as it is.
 */
export function checkResumeSettings(manifest: string, now: Settings, step: string): void {
  if (!existsSync(manifest)) return;
  const rec = readSettings(manifest);
  if (!rec) return;
  const diff = settingsDiff(rec.settings, now);
  if (diff.length === 0) return;
  throw new UserError(
    `${manifest} was made with other settings (${describeDiff(diff)}): resuming would mix rows of both in one manifest. ` +
      `Rerun ${step} with the recorded settings, pass --force to redo every row with the new ones, or write to another --run`,
  );
}
