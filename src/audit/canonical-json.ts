/**
 * Canonical JSON (the subset of RFC 8785 JCS needed here): object keys sorted by UTF-16 code
 * units, no whitespace, numbers and strings serialized as ECMAScript JSON.stringify does.
 * Only JSON values are accepted: undefined members are dropped as JSON.stringify drops them;
 * non-finite numbers, bigint, functions, symbols, cycles and non-plain objects are refused.
 */
import { AuditError } from './errors.js';

const MAX_DEPTH = 64;

export function canonicalJson(value: unknown): string {
  return enc(value, 0, new Set());
}

function enc(v: unknown, depth: number, seen: Set<object>): string {
  if (depth > MAX_DEPTH) throw new AuditError('json-invalid', 'value is nested too deeply');
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) throw new AuditError('json-invalid', 'non-finite number');
      return JSON.stringify(v);
    case 'object': {
      if (v === null) return 'null';
      if (seen.has(v)) throw new AuditError('json-invalid', 'value contains a cycle');
      seen.add(v);
      let out: string;
      if (Array.isArray(v)) {
        out = `[${v.map((x) => (x === undefined ? 'null' : enc(x, depth + 1, seen))).join(',')}]`;
      } else {
        const proto = Object.getPrototypeOf(v) as unknown;
        if (proto !== Object.prototype && proto !== null) throw new AuditError('json-invalid', 'only plain objects are JSON');
        const rec = v as Record<string, unknown>;
        const keys = Object.keys(rec).filter((k) => rec[k] !== undefined).sort();
        out = `{${keys.map((k) => `${JSON.stringify(k)}:${enc(rec[k], depth + 1, seen)}`).join(',')}}`;
      }
      seen.delete(v);
      return out;
    }
    default:
      throw new AuditError('json-invalid', `${typeof v} is not a JSON value`);
  }
}
