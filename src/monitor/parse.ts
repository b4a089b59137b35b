/**
 * Parser of bpftrace's JSON output (`bpftrace -f json`, one JSON object a line) for the program
 * of program.ts. Pure.
 *
 * ARCHITECTURE NOTE: hostile input. Paths and argv come from the agent; bpftrace escapes them
 * as JSON strings, and every field we read is checked for its type and range. A line that does
 * not parse, or a record of an unexpected shape, becomes `{ kind: 'malformed' }` (counted in the
 * run's monitor summary), never an exception and never a partly trusted record.
 */

export type MonitorRecord =
  | { readonly kind: 'ready' }
  | { readonly kind: 'exec'; readonly pid: number; readonly ppid: number; readonly uid: number; readonly path: string }
  | { readonly kind: 'arg'; readonly pid: number; readonly index: number; readonly value: string }
  | { readonly kind: 'exec_result'; readonly pid: number; readonly ret: number }
  | { readonly kind: 'exit'; readonly pid: number; readonly status: number }
  | { readonly kind: 'opens'; readonly entries: readonly OpenEntry[] }
  | { readonly kind: 'open_total'; readonly count: number }
  | { readonly kind: 'denied'; readonly entries: readonly DeniedEntry[] }
  | { readonly kind: 'io'; readonly readBytes: number; readonly writeBytes: number }
  | { readonly kind: 'tick' }
  | { readonly kind: 'end' }
  | { readonly kind: 'lost'; readonly count: number }
  | { readonly kind: 'ignored' }
  | { readonly kind: 'malformed' };

export interface OpenEntry {
  readonly write: boolean;
  /** 0 for success, else the positive errno. */
  readonly errno: number;
  readonly path: string;
  readonly count: number;
}

export interface DeniedEntry {
  readonly nr: number;
  readonly errno: number;
  readonly count: number;
}

const MALFORMED = { kind: 'malformed' } as const;
const INT = /^-?\d{1,20}$/;

function int(s: string | undefined): number | null {
  if (s === undefined || !INT.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

function count(v: unknown): number | null {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null;
}

/**
 * bpftrace 0.17 writes a byte >= 0x80 of a string as `\uffffffXX` (a sign-extended char), which
 * JSON reads as U+FFFF followed by the text `ffXX`. U+FFFF cannot come from the agent (its own
 * bytes would have been escaped the same way), so the sequence is turned back into the byte, and
 * the bytes are decoded as UTF-8 (invalid sequences become U+FFFD).
 */
export function decodeString(s: string): string {
  if (!s.includes('\uffff')) return s;
  const bytes: number[] = [];
  const enc = new TextEncoder();
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0xffff && s.slice(i + 1, i + 3) === 'ff' && /^[0-9a-f]{2}$/.test(s.slice(i + 3, i + 5))) {
      bytes.push(parseInt(s.slice(i + 3, i + 5), 16));
      i += 4;
    } else if (c < 0x80) bytes.push(c);
    else {
      const cp = s.codePointAt(i) ?? 0xfffd;
      if (cp > 0xffff) i++;
      bytes.push(...enc.encode(String.fromCodePoint(cp)));
    }
  }
  return new TextDecoder('utf-8', { fatal: false }).decode(new Uint8Array(bytes));
}

/** `<tag> <int> <int>... <rest>`: `n` integers after the tag, then the untrusted rest (may be empty). */
function fields(data: string, n: number): { nums: number[]; rest: string } | null {
  const nums: number[] = [];
  let pos = 2;
  for (let k = 0; k < n; k++) {
    const sp = data.indexOf(' ', pos);
    const end = sp < 0 ? data.length : sp;
    const v = int(data.slice(pos, end));
    if (v === null) return null;
    nums.push(v);
    pos = end + 1;
  }
  return { nums, rest: pos <= data.length ? data.slice(pos) : '' };
}

function parsePrintf(raw: string): MonitorRecord {
  if (!raw.endsWith('\n')) return MALFORMED;
  const data = raw.slice(0, -1);
  if (data === 'READY') return { kind: 'ready' };
  if (data === 'T') return { kind: 'tick' };
  if (data === 'END') return { kind: 'end' };
  if (data.length < 2 || data[1] !== ' ') return MALFORMED;
  switch (data[0]) {
    case 'X': {
      const f = fields(data, 3);
      if (f === null) return MALFORMED;
      const [pid, ppid, uid] = f.nums as [number, number, number];
      return { kind: 'exec', pid, ppid, uid, path: decodeString(f.rest) };
    }
    case 'A': {
      const f = fields(data, 2);
      if (f === null) return MALFORMED;
      const [pid, index] = f.nums as [number, number];
      return { kind: 'arg', pid, index, value: decodeString(f.rest) };
    }
    case 'R': {
      const f = fields(data, 2);
      if (f === null || f.rest !== '') return MALFORMED;
      return { kind: 'exec_result', pid: f.nums[0]!, ret: f.nums[1]! };
    }
    case 'Q': {
      const f = fields(data, 2);
      if (f === null || f.rest !== '') return MALFORMED;
      return { kind: 'exit', pid: f.nums[0]!, status: f.nums[1]! };
    }
    default:
      return MALFORMED;
  }
}

function parseMap(data: Record<string, unknown>): MonitorRecord {
  const names = Object.keys(data);
  if (names.length !== 1) return MALFORMED;
  const name = names[0]!;
  const v = data[name];
  if (name === '@n') {
    const c = count(v);
    return c === null ? MALFORMED : { kind: 'open_total', count: c };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return MALFORMED;
  const m = v as Record<string, unknown>;
  if (name === '@o') {
    const entries: OpenEntry[] = [];
    for (const [k, c] of Object.entries(m)) {
      // "<write>,<errno>,<path>": the path is everything after the second comma.
      const a = k.indexOf(',');
      const b = a < 0 ? -1 : k.indexOf(',', a + 1);
      const w = int(k.slice(0, a));
      const e = int(k.slice(a + 1, b));
      const n = count(c);
      if (a < 0 || b < 0 || (w !== 0 && w !== 1) || e === null || e < 0 || n === null) return MALFORMED;
      entries.push({ write: w === 1, errno: e, path: decodeString(k.slice(b + 1)), count: n });
    }
    return { kind: 'opens', entries };
  }
  if (name === '@d') {
    const entries: DeniedEntry[] = [];
    for (const [k, c] of Object.entries(m)) {
      const [nr, errno, extra] = k.split(',').map((x) => int(x));
      const n = count(c);
      if (nr === null || nr === undefined || errno === null || errno === undefined || extra !== undefined || n === null) return MALFORMED;
      entries.push({ nr, errno, count: n });
    }
    return { kind: 'denied', entries };
  }
  if (name === '@io') {
    for (const k of Object.keys(m)) if (k !== '0' && k !== '1') return MALFORMED;
    const r = m['0'] === undefined ? 0 : count(m['0']);
    const w = m['1'] === undefined ? 0 : count(m['1']);
    return r === null || w === null ? MALFORMED : { kind: 'io', readBytes: r, writeBytes: w };
  }
  return { kind: 'ignored' };
}

/** One line of bpftrace's output. */
export function parseLine(line: string): MonitorRecord {
  if (line.trim() === '') return { kind: 'ignored' };
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch {
    return MALFORMED;
  }
  if (typeof msg !== 'object' || msg === null) return MALFORMED;
  const { type, data } = msg as { type?: unknown; data?: unknown };
  switch (type) {
    case 'printf':
      return typeof data === 'string' ? parsePrintf(data) : MALFORMED;
    case 'map':
      return typeof data === 'object' && data !== null && !Array.isArray(data) ? parseMap(data as Record<string, unknown>) : MALFORMED;
    case 'lost_events': {
      const n = count((data as { events?: unknown } | null)?.events);
      return n === null ? MALFORMED : { kind: 'lost', count: n };
    }
    case 'attached_probes':
      return { kind: 'ignored' };
    default:
      return { kind: 'ignored' };
  }
}
