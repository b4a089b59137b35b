/**
 * Unit parsing for agent.yaml values: durations, sizes and rates. Pure.
 * Each parser returns the canonical number or an error message (never throws).
 */

export type UnitResult = { ok: true; value: number } | { ok: false; message: string };

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Spellings users bring from other tools, mapped to the unit they mean, for the "try" hint only:
 * they are never accepted (one spelling per unit keeps manifests greppable).
 */
const DURATION_ALIASES: Record<string, 's' | 'm' | 'h'> = {
  sec: 's',
  secs: 's',
  second: 's',
  seconds: 's',
  min: 'm',
  mins: 'm',
  minute: 'm',
  minutes: 'm',
  hr: 'h',
  hrs: 'h',
  hour: 'h',
  hours: 'h',
};
const SIZE_ALIASES: Record<string, string> = {
  k: 'KB',
  m: 'MB',
  g: 'GB',
  t: 'TB',
  ki: 'KiB',
  mi: 'MiB',
  gi: 'GiB',
  ti: 'TiB',
  bytes: 'B',
  byte: 'B',
  kilobytes: 'KB',
  megabytes: 'MB',
  gigabytes: 'GB',
};

/** `300s`, `5m`, `1.5h` (units s, m, h; case-insensitive) -> milliseconds. */
export function parseDuration(text: string): UnitResult {
  const m = /^([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*([a-zA-Z]*)$/.exec(text.trim());
  if (!m) return { ok: false, message: `"${text}" is not a duration (try 300s, 5m or 1h)` };
  const unit = DURATION_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) {
    const u = m[2]!.toLowerCase();
    const hint =
      u === 'ms'
        ? `${Math.max(1, Math.ceil(Number(m[1]) / 1000))}s: the smallest unit is s`
        : u === 'd' || u === 'day' || u === 'days'
          ? `${Number(m[1]) * 24}h`
          : `${m[1]}${DURATION_ALIASES[u] ?? 's'}`;
    return { ok: false, message: `"${text}" is not a duration: ${m[2] ? `unknown unit "${m[2]}"` : 'a unit is needed'} (try ${hint})` };
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
    return { ok: false, message: `"${text}" is not a size (try ${m[1]}${SIZE_ALIASES[m[2]!.toLowerCase()] ?? 'MB'})` };
  }
  return { ok: true, value: Math.floor(Number(m[1]) * unit) };
}

const RATE_UNITS: Record<string, number> = { s: 1, m: 1 / 60, h: 1 / 3600 };

/** `20/s`, `600/m`, `1000/h` -> events per second. */
export function parseRate(text: string): UnitResult {
  const m = /^([0-9]{1,9})\s*\/\s*([a-zA-Z]+)$/.exec(text.trim());
  if (!m) return { ok: false, message: `"${text}" is not a rate (try 20/s)` };
  const unit = RATE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) {
    const alias = DURATION_ALIASES[m[2]!.toLowerCase()];
    return {
      ok: false,
      message: `"${text}": unknown rate unit "${m[2]}" (${alias !== undefined ? `try ${m[1]}/${alias}` : 'use /s, /m or /h'})`,
    };
  }
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
