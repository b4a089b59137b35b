/**
 * HTTP method and path rules of `permissions.network.allow` entries (issue 12):
 *
 *   - { host: api.github.com, methods: [GET], paths: ["/repos/acme/**"] }
 *
 * Pure. Enforced by the gateway on every request to such a host: over plain HTTP, and over
 * HTTPS because a host with rules is TLS-terminated (like a host with a bound secret).
 *
 * Path patterns: segments separated by "/"; `**` as a whole segment matches any number of
 * segments (zero included), `*` inside a segment any characters but "/". Matching is done on
 * the request path as sent (no query), after refusing anything ambiguous: a `.` or `..`
 * segment, a backslash, or an encoded "/", "\" or "." (`%2f`, `%5c`, `%2e`), because servers
 * disagree on what those mean (fail closed: `net.denied.http_target`). Other percent-escapes
 * are compared as written, so `/repos/%61cme` does not match `/repos/acme/**`.
 */

import type { HttpRule } from './types.js';

export const MAX_HTTP_METHODS = 16;
export const MAX_HTTP_PATHS = 64;
const MAX_PATTERN_LENGTH = 512;
const MAX_DOUBLE_STARS = 4;

const METHOD = /^[A-Z][A-Z-]{0,19}$/;

/** Problem with a method name, or null. The name is upper-cased by the caller. */
export function methodProblem(method: string): string | null {
  return METHOD.test(method) ? null : `"${method}" is not an HTTP method (letters, e.g. GET, POST)`;
}

/** Problem with a path pattern, or null. */
export function pathPatternProblem(p: string): string | null {
  if (!p.startsWith('/')) return `"${p}" must start with "/"`;
  if (p.length > MAX_PATTERN_LENGTH) return `"${p.slice(0, 40)}…" is longer than ${MAX_PATTERN_LENGTH} characters`;
  if (/[?#\\%\s]/.test(p)) return `"${p}" must not contain "?", "#", "%", "\\" or white space (patterns match the path, as sent)`;
  const segs = p.split('/').slice(1);
  if (segs.some((s) => s === '.' || s === '..')) return `"${p}" has a "." or ".." segment`;
  if (segs.some((s) => s.includes('**') && s !== '**')) return `"${p}": "**" must be a whole segment`;
  if (segs.filter((s) => s === '**').length > MAX_DOUBLE_STARS) return `"${p}" has more than ${MAX_DOUBLE_STARS} "**"`;
  return null;
}

/** Why a request path is refused before any pattern is tried, or null. Query and fragment are ignored. */
export function pathTargetProblem(path: string): string | null {
  const q = path.search(/[?#]/);
  const p = q < 0 ? path : path.slice(0, q);
  if (!p.startsWith('/')) return 'request-target is not an absolute path';
  if (p.length > 8192) return 'request path longer than 8192 characters';
  if (p.includes('\\')) return 'request path contains a backslash';
  if (/%(2f|5c|2e)/i.test(p)) return 'request path contains an encoded "/", "\\" or "."';
  if (p.split('/').some((s) => s === '.' || s === '..')) return 'request path contains a "." or ".." segment';
  return null;
}

/** The request path without query or fragment. */
export function pathOnly(path: string): string {
  const q = path.search(/[?#]/);
  return q < 0 ? path : path.slice(0, q);
}

/** `*` within one segment (iterative, no RegExp from the pattern). */
function segmentMatches(pattern: string, s: string): boolean {
  let pi = 0;
  let si = 0;
  let star = -1;
  let mark = 0;
  while (si < s.length) {
    if (pi < pattern.length && pattern[pi] !== '*' && pattern[pi] === s[si]) {
      pi++;
      si++;
    } else if (pi < pattern.length && pattern[pi] === '*') {
      star = pi++;
      mark = si;
    } else if (star >= 0) {
      pi = star + 1;
      si = ++mark;
    } else return false;
  }
  while (pi < pattern.length && pattern[pi] === '*') pi++;
  return pi === pattern.length;
}

/** Whether `path` (no query, checked by pathTargetProblem) matches `pattern`. O(segments²). */
export function pathMatches(pattern: string, path: string): boolean {
  const ps = pattern.split('/').slice(1);
  const ss = path.split('/').slice(1);
  // dp[j]: pattern[0..i) matches path[0..j)
  let dp: boolean[] = Array.from({ length: ss.length + 1 }, (_, j) => j === 0);
  for (const p of ps) {
    const next: boolean[] = Array.from({ length: ss.length + 1 }, () => false);
    if (p === '**') {
      let any = false;
      for (let j = 0; j <= ss.length; j++) {
        any = any || dp[j]!;
        next[j] = any;
      }
    } else {
      for (let j = 1; j <= ss.length; j++) next[j] = dp[j - 1]! && segmentMatches(p, ss[j - 1]!);
    }
    dp = next;
  }
  return dp[ss.length]!;
}

export type HttpRuleVerdict = 'allow' | 'method' | 'path';

/** One rule's verdict on (method, path); the path must have passed pathTargetProblem. */
export function httpRuleVerdict(rule: HttpRule, method: string, path: string): HttpRuleVerdict {
  const p = pathOnly(path);
  const pathOk = rule.paths === null || rule.paths.some((pat) => pathMatches(pat, p));
  if (!pathOk) return 'path';
  return rule.methods === null || rule.methods.includes(method.toUpperCase()) ? 'allow' : 'method';
}

/** How a rule is shown in a decision: `api.github.com [GET] /repos/acme/**`. */
export function describeHttpRule(source: string, rule: HttpRule): string {
  return `${source} [${rule.methods?.join(',') ?? 'any method'}] ${rule.paths?.join(' ') ?? 'any path'}`;
}
