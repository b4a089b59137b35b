/**
 * Sigma selections over AEGIS audit events (pure): compiled once into predicates.
 *
 * A selection is a mapping of `field|modifier...: value(s)` (all must hold) or a list of such
 * mappings (any may hold). Fields are dotted paths into the audit event (`action`, `decision`,
 * `reason`, `actor.execution`, `payload.host`, ...). A list of values matches when any value
 * matches (all, with the `all` modifier). Plain and `contains`/`startswith`/`endswith` string
 * comparisons are case-insensitive, as in Sigma; `re` is case-sensitive. `null` matches a field
 * that is absent or null. Supported modifiers: contains, startswith, endswith, re, cidr,
 * gt, gte, lt, lte, exists, all. Plain values are compared literally (no `*` wildcards: use the
 * modifiers).
 *
 * LIMITATION: `re` runs the rule author's regular expression (the operator's, trusted) on
 * values the agent influences; values longer than RE_MAX_INPUT are not matched by `re`, which
 * bounds the cost of a poorly written expression but not of a catastrophic one.
 */
import ipaddr from 'ipaddr.js';

export type FieldValue = unknown;
export type Predicate = (event: unknown) => boolean;

/** Values longer than this are never matched by a `re` modifier. */
export const RE_MAX_INPUT = 4096;

const IPV4_SHAPE = /^[0-9]{1,3}(\.[0-9]{1,3}){3}$/;
const IPV6_SHAPE = /^[0-9A-Fa-f:.]{2,45}$/;

const MODIFIERS = new Set(['contains', 'startswith', 'endswith', 're', 'cidr', 'gt', 'gte', 'lt', 'lte', 'exists', 'all']);

/**
 * The value at dotted `path` of `event` (own properties only), or undefined. Through a list of
 * objects the path continues in each element (`payload.destinations.address` is the list of
 * every destination's address), and a list of values matches when any element does.
 */
export function fieldOf(event: unknown, path: readonly string[]): unknown {
  let v: unknown = event;
  for (const seg of path) {
    if (Array.isArray(v)) {
      v = v
        .map((x) =>
          x !== null && typeof x === 'object' && !Array.isArray(x) && Object.hasOwn(x, seg)
            ? (x as Record<string, unknown>)[seg]
            : undefined,
        )
        .filter((x) => x !== undefined);
      continue;
    }
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, seg)) return undefined;
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

function asText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return null;
}

function asNumber(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  return null;
}

type One = (actual: unknown) => boolean;

function matcherFor(mods: readonly string[], expected: unknown): One {
  const op = mods.find((m) => m !== 'all');
  if (op === 'exists') {
    if (typeof expected !== 'boolean') throw new Error('the exists modifier takes true or false');
    return (a) => (a !== undefined && a !== null) === expected;
  }
  if (expected === null) {
    if (op !== undefined) throw new Error(`null cannot be used with the ${op} modifier`);
    return (a) => a === undefined || a === null;
  }
  if (op === 'gt' || op === 'gte' || op === 'lt' || op === 'lte') {
    const n = asNumber(expected);
    if (n === null) throw new Error(`the ${op} modifier takes a number, not ${JSON.stringify(expected)}`);
    return (a) => {
      const x = asNumber(a);
      if (x === null) return false;
      return op === 'gt' ? x > n : op === 'gte' ? x >= n : op === 'lt' ? x < n : x <= n;
    };
  }
  const text = asText(expected);
  if (text === null) throw new Error(`expected a string, number or boolean, not ${JSON.stringify(expected)}`);
  if (op === 're') {
    let re: RegExp;
    try {
      re = new RegExp(text, 'u');
    } catch (e) {
      throw new Error(`invalid regular expression ${JSON.stringify(text)}: ${(e as Error).message}`);
    }
    return (a) => {
      const s = asText(a);
      return s !== null && s.length <= RE_MAX_INPUT && re.test(s);
    };
  }
  if (op === 'cidr') {
    let range: [ipaddr.IPv4 | ipaddr.IPv6, number];
    try {
      range = ipaddr.parseCIDR(text);
    } catch {
      throw new Error(`${JSON.stringify(text)} is not a CIDR range`);
    }
    return (a) => {
      const s = asText(a);
      // Only address literals are parsed (a cheap shape check first: most values are names).
      if (s === null || !(IPV4_SHAPE.test(s) || (s.includes(':') && IPV6_SHAPE.test(s)))) return false;
      let addr: ipaddr.IPv4 | ipaddr.IPv6;
      try {
        addr = ipaddr.parse(s);
      } catch {
        return false;
      }
      if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() && range[0].kind() === 'ipv4')
        addr = (addr as ipaddr.IPv6).toIPv4Address();
      return addr.kind() === range[0].kind() && addr.match(range);
    };
  }
  const want = text.toLowerCase();
  const cmp =
    op === 'contains'
      ? (s: string) => s.includes(want)
      : op === 'startswith'
        ? (s: string) => s.startsWith(want)
        : op === 'endswith'
          ? (s: string) => s.endsWith(want)
          : (s: string) => s === want;
  return (a) => {
    const s = asText(a);
    return s !== null && cmp(s.toLowerCase());
  };
}

/** Compiles one `field|mods: value(s)` entry. Throws Error with a message naming the problem. */
export function compileField(key: string, value: unknown): Predicate {
  const [field, ...mods] = key.split('|');
  if (!field || !/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(field))
    throw new Error(`"${field}" is not a field name (dotted, e.g. payload.host)`);
  for (const m of mods) if (!MODIFIERS.has(m)) throw new Error(`unknown modifier "${m}" (supported: ${[...MODIFIERS].join(', ')})`);
  const ops = mods.filter((m) => m !== 'all');
  if (ops.length > 1) throw new Error(`only one modifier besides "all" may be given (${mods.join('|')})`);
  const path = field.split('.');
  const values = Array.isArray(value) ? value : [value];
  if (values.length === 0) throw new Error('an empty list of values matches nothing: remove the field or give values');
  const all = mods.includes('all');
  const exists = ops[0] === 'exists';
  // A list value (answers, destinations) matches when any element matches (exists looks at the list itself).
  const ms = values.map((v) => {
    const one = matcherFor(mods, v);
    return exists ? one : (a: unknown) => (Array.isArray(a) ? a.some(one) : one(a));
  });
  return all
    ? (e) => {
        const a = fieldOf(e, path);
        return ms.every((m) => m(a));
      }
    : (e) => {
        const a = fieldOf(e, path);
        return ms.some((m) => m(a));
      };
}

/** Compiles a selection: a mapping (all fields) or a list of mappings (any). */
export function compileSelection(sel: unknown): Predicate {
  if (Array.isArray(sel)) {
    if (sel.length === 0) throw new Error('an empty selection list matches nothing');
    const alts = sel.map((s) => {
      if (s === null || typeof s !== 'object' || Array.isArray(s))
        throw new Error('keyword selections (a list of plain values) are not supported: use field: value');
      return compileSelection(s);
    });
    return (e) => alts.some((p) => p(e));
  }
  if (sel === null || typeof sel !== 'object') throw new Error('a selection is a mapping of field: value, or a list of such mappings');
  const entries = Object.entries(sel as Record<string, unknown>);
  if (entries.length === 0) throw new Error('an empty selection matches everything: give at least one field');
  const fields = entries.map(([k, v]) => {
    try {
      return compileField(k, v);
    } catch (e) {
      throw new Error(`${k}: ${(e as Error).message}`);
    }
  });
  return (e) => fields.every((p) => p(e));
}
