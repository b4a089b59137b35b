/**
 * Parser of bpftrace's JSON output (`bpftrace -f json`, one JSON object a line) for the host
 * program of program.ts (`parseLine`: records that carry their cgroup id), and the records one
 * execution's aggregator gets once the hub has routed them (`MonitorRecord`: without it). Pure.
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

/** A line of the host program: each record about an agent names its cgroup (`cg`). */
export type HostRecord =
  | { readonly kind: 'ready' }
  | { readonly kind: 'control'; readonly op: number; readonly cg: number }
  | { readonly kind: 'exec'; readonly cg: number; readonly pid: number; readonly ppid: number; readonly uid: number; readonly path: string }
  | { readonly kind: 'arg'; readonly cg: number; readonly pid: number; readonly index: number; readonly value: string }
  | { readonly kind: 'exec_result'; readonly cg: number; readonly pid: number; readonly ret: number }
  | { readonly kind: 'exit'; readonly cg: number; readonly pid: number; readonly status: number }
  | { readonly kind: 'opens'; readonly entries: readonly (OpenEntry & { readonly cg: number })[] }
  | { readonly kind: 'open_totals'; readonly entries: readonly { readonly cg: number; readonly count: number }[] }
  | { readonly kind: 'denied'; readonly entries: readonly (DeniedEntry & { readonly cg: number })[] }
  | { readonly kind: 'tick' }
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

function parsePrintf(raw: string): HostRecord {
  if (!raw.endsWith('\n')) return MALFORMED;
  const data = raw.slice(0, -1);
  if (data === 'READY') return { kind: 'ready' };
  if (data === 'T') return { kind: 'tick' };
  if (data.length < 2 || data[1] !== ' ') return MALFORMED;
  switch (data[0]) {
    case 'C': {
      const f = fields(data, 2);
      if (f === null || f.rest !== '' || f.nums[1]! < 0) return MALFORMED;
      return { kind: 'control', op: f.nums[0]!, cg: f.nums[1]! };
    }
    case 'X': {
      const f = fields(data, 4);
      if (f === null) return MALFORMED;
      const [cg, pid, ppid, uid] = f.nums as [number, number, number, number];
      return { kind: 'exec', cg, pid, ppid, uid, path: decodeString(f.rest) };
    }
    case 'A': {
      const f = fields(data, 3);
      if (f === null) return MALFORMED;
      const [cg, pid, index] = f.nums as [number, number, number];
      return { kind: 'arg', cg, pid, index, value: decodeString(f.rest) };
    }
    case 'R': {
      const f = fields(data, 3);
      if (f === null || f.rest !== '') return MALFORMED;
      return { kind: 'exec_result', cg: f.nums[0]!, pid: f.nums[1]!, ret: f.nums[2]! };
    }
    case 'Q': {
      const f = fields(data, 3);
      if (f === null || f.rest !== '') return MALFORMED;
      return { kind: 'exit', cg: f.nums[0]!, pid: f.nums[1]!, status: f.nums[2]! };
    }
    default:
      return MALFORMED;
  }
}

/** The first `n` comma-separated integers of a map key, and the rest (the path: untrusted, may hold commas). */
function keyInts(k: string, n: number): { nums: number[]; rest: string } | null {
  const nums: number[] = [];
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const c = k.indexOf(',', pos);
    const v = int(c < 0 ? k.slice(pos) : k.slice(pos, c));
    if (v === null) return null;
    nums.push(v);
    if (c < 0) return i === n - 1 ? { nums, rest: '' } : null;
    pos = c + 1;
  }
  return { nums, rest: k.slice(pos) };
}

function parseMap(data: Record<string, unknown>): HostRecord {
  const names = Object.keys(data);
  if (names.length !== 1) return MALFORMED;
  const name = names[0]!;
  const v = data[name];
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return name === '@o' || name === '@n' || name === '@d' ? MALFORMED : { kind: 'ignored' };
  const m = v as Record<string, unknown>;
  if (name === '@n') {
    const entries: { cg: number; count: number }[] = [];
    for (const [k, c] of Object.entries(m)) {
      const cg = int(k);
      const n = count(c);
      if (cg === null || cg <= 0 || n === null) return MALFORMED;
      entries.push({ cg, count: n });
    }
    return { kind: 'open_totals', entries };
  }
  if (name === '@o') {
    const entries: (OpenEntry & { cg: number })[] = [];
    for (const [k, c] of Object.entries(m)) {
      // "<cg>,<write>,<errno>,<path>": the path is everything after the third comma.
      const f = keyInts(k, 3);
      const n = count(c);
      if (f === null || k.split(',').length < 4) return MALFORMED;
      const [cg, w, e] = f.nums as [number, number, number];
      if (cg <= 0 || (w !== 0 && w !== 1) || e < 0 || n === null) return MALFORMED;
      entries.push({ cg, write: w === 1, errno: e, path: decodeString(f.rest), count: n });
    }
    return { kind: 'opens', entries };
  }
  if (name === '@d') {
    const entries: (DeniedEntry & { cg: number })[] = [];
    for (const [k, c] of Object.entries(m)) {
      const parts = k.split(',').map((x) => int(x));
      const n = count(c);
      if (parts.length !== 3 || parts.some((x) => x === null) || n === null) return MALFORMED;
      const [cg, nr, errno] = parts as [number, number, number];
      if (cg <= 0) return MALFORMED;
      entries.push({ cg, nr, errno, count: n });
    }
    return { kind: 'denied', entries };
  }
  return { kind: 'ignored' };
}

/** One line of bpftrace's output. */
export function parseLine(line: string): HostRecord {
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
