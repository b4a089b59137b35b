/**
 * Canonical JSON (the subset of RFC 8785 JCS needed here): object keys sorted by UTF-16 code
 * units, no whitespace, numbers and strings serialized as ECMAScript JSON.stringify does.
 * Only JSON values are accepted: undefined members are dropped as JSON.stringify drops them;
 * non-finite numbers, bigint, functions, symbols, non-plain objects and nesting deeper than 64
 * levels (which includes every cycle) are refused with AuditError('audit.json_invalid').
 * This is on the append hot path: plain loops and string concatenation, no intermediate arrays.
 */
import { AuditError } from './errors.js';

const MAX_DEPTH = 64;

/**
 * `"<key>":` for keys seen before: producers use a few fixed payload shapes, so the same keys come
 * back on every event. Bounded: once full, other keys are quoted each time.
 */
const quotedKeys = new Map<string, string>();
const QUOTED_KEYS_MAX = 4096;

function quotedKey(k: string): string {
  let q = quotedKeys.get(k);
  if (q === undefined) {
    q = `${JSON.stringify(k)}:`;
    if (quotedKeys.size < QUOTED_KEYS_MAX) quotedKeys.set(k, q);
  }
  return q;
}

export function canonicalJson(value: unknown): string {
  return enc(value, 0);
}

function enc(v: unknown, depth: number): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) throw new AuditError('audit.json_invalid', 'non-finite number');
      return String(v); // the same as JSON.stringify for finite numbers (-0 is "0" in both)
    case 'object': {
      if (v === null) return 'null';
      if (depth >= MAX_DEPTH) throw new AuditError('audit.json_invalid', 'value is nested too deeply (or contains a cycle)');
      if (Array.isArray(v)) {
        let out = '[';
        for (let i = 0; i < v.length; i++) {
          if (i > 0) out += ',';
          const x: unknown = v[i];
          out += x === undefined ? 'null' : enc(x, depth + 1);
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) throw new AuditError('audit.json_invalid', 'only plain objects are JSON');
      const rec = v as Record<string, unknown>;
      const keys = Object.keys(rec);
      if (keys.length > 1) keys.sort(); // default sort: UTF-16 code units, as JCS requires
      let out = '{';
      let first = true;
      for (const k of keys) {
        const x = rec[k];
        if (x === undefined) continue;
        if (!first) out += ',';
        first = false;
        out += quotedKey(k) + enc(x, depth + 1);
      }
      return `${out}}`;
    }
    default:
      throw new AuditError('audit.json_invalid', `${typeof v} is not a JSON value`);
  }
}
