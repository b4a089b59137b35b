/**
 * The readable one-line form of an audit event, for `aegis audit tail` and `aegis audit query`
 * (`--json` keeps the full JSON record with the base64 leaf):
 *
 *   <time> #<index> <action> <decision> <actor> <reason|-> <payload summary>
 *   2026-11-30T04:53:49.123Z #17 net.connect deny research-agent/0193... net.denied.not_in_allowlist host=evil.example port=443
 *
 * Pure. Event fields are UNTRUSTED (an agent chooses the host names and URLs the gateway logs):
 * control, format and line-separator characters are escaped, so a stored event cannot move the
 * cursor, recolour the terminal or forge a second line; long values are cut.
 */
import type { DecryptedEntry } from '../audit/index.js';

const MAX_VALUE = 60;
const MAX_SUMMARY = 160;

/** Escapes C0/C1 controls, format characters (bidi overrides, zero-width) and U+2028/U+2029. */
export function printable(text: string): string {
  return text.replace(/[\p{Cc}\p{Cf}\u2028\u2029]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

function cut(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}

/** A token without spaces: the value itself, or JSON-quoted when it has spaces or is empty. */
function token(text: string, max = MAX_VALUE): string {
  const t = printable(cut(text, max));
  return t === '' || /[\s"=]/u.test(t) ? JSON.stringify(t) : t;
}

function summaryValue(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return token(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.length}]`;
  return '{…}';
}

/** `key=value` pairs of the payload's top level, in its order, cut to a line. */
export function payloadSummary(payload: Readonly<Record<string, unknown>> | null): string {
  if (payload === null) return '(payload erased)';
  let out = '';
  for (const [k, v] of Object.entries(payload)) {
    const pair = `${token(k, 32)}=${summaryValue(v)}`;
    if (out.length + pair.length + 1 > MAX_SUMMARY) return `${out} …`;
    out = out === '' ? pair : `${out} ${pair}`;
  }
  return out;
}

function actorOf(a: { agent?: string; execution?: string; principal?: string }): string {
  const parts: string[] = [];
  if (a.agent !== undefined || a.execution !== undefined) parts.push(`${token(a.agent ?? '-', 63)}/${token(a.execution ?? '-', 64)}`);
  if (a.principal !== undefined) parts.push(`principal=${token(a.principal, 64)}`);
  return parts.length > 0 ? parts.join(',') : '-';
}

/** One readable line (without the newline) for a stored entry, decoded or not. */
export function readableLine(d: { index: number; decoded?: DecryptedEntry; error?: string }): string {
  const e = d.decoded?.event;
  if (e === undefined) return `#${d.index} ERROR ${printable(cut(d.error ?? 'cannot decode the entry', 200))}`;
  return [
    token(e.time, 40),
    `#${d.index}`,
    token(e.action, 64),
    token(e.decision, 8),
    actorOf(e.actor),
    e.reason !== undefined ? token(e.reason, 64) : '-',
    payloadSummary(e.payload),
  ].join(' ');
}
