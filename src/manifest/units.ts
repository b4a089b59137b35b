/**
 * Unit parsing for agent.yaml values: durations, sizes and rates. Pure.
 * Each parser returns the canonical number or an error message (never throws).
 */

export type UnitResult = { ok: true; value: number } | { ok: false; message: string };

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000 };

/** `300s`, `5m`, `1.5h` (units s, m, h; case-insensitive) -> milliseconds. */
export function parseDuration(text: string): UnitResult {
  const m = /^([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*([a-zA-Z]*)$/.exec(text.trim());
  if (!m) return { ok: false, message: `"${text}" is not a duration (try 300s, 5m or 1h)` };
  const unit = DURATION_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) {
    return { ok: false, message: `"${text}" is not a duration: ${m[2] ? `unknown unit "${m[2]}"` : 'a unit is needed'} (try ${m[1]}s)` };
  }
  return { ok: true, value: Math.round(Number(m[1]) * unit) };
}

/** Decimal (KB, MB, GB, TB) and binary (KiB, MiB, GiB, TiB) units, and B; case-insensitive. */
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** `512MB`, `1GiB`, `64 kib` -> bytes (whole bytes, rounded down). */
export function parseSize(text: string): UnitResult {
  const m = /^([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*([a-zA-Z]*)$/.exec(text.trim());
  if (!m) return { ok: false, message: `"${text}" is not a size (try 512MB or 1GiB)` };
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) {
    return { ok: false, message: `"${text}" is not a size (try ${m[1]}MB)` };
  }
  return { ok: true, value: Math.floor(Number(m[1]) * unit) };
}

const RATE_UNITS: Record<string, number> = { s: 1, m: 1 / 60, h: 1 / 3600 };

/** `20/s`, `600/m`, `1000/h` -> events per second. */
export function parseRate(text: string): UnitResult {
  const m = /^([0-9]{1,9})\s*\/\s*([a-zA-Z]+)$/.exec(text.trim());
  if (!m) return { ok: false, message: `"${text}" is not a rate (try 20/s)` };
  const unit = RATE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return { ok: false, message: `"${text}": unknown rate unit "${m[2]}" (use /s, /m or /h)` };
  return { ok: true, value: Number(m[1]) * unit };
}

/** Human-readable bytes for messages: 512 MiB, 1.5 GiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}
