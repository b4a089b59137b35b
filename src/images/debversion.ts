/**
 * Debian version comparison, written from the Debian Policy Manual, section 5.6.12 "Version"
 * (https://www.debian.org/doc/debian-policy/ch-controlfields.html#version). Pure.
 *
 *     [epoch:]upstream_version[-debian_revision]
 *
 * - epoch: an unsigned integer, default 0; compared numerically first.
 * - upstream_version and debian_revision (split at the LAST hyphen; absent revision = "")
 *   are each compared with the same algorithm: alternately the longest non-digit prefix,
 *   compared character by character where letters sort before non-letters and `~` sorts
 *   before everything, even the end of the part; then the longest digit prefix, compared
 *   numerically (absent = 0).
 */

export interface DebVersion {
  readonly epoch: number;
  readonly upstream: string;
  readonly revision: string;
}

/** Parses a version string; null when it is not a valid Debian version. */
export function parseDebVersion(text: string): DebVersion | null {
  const v = text.trim();
  let epoch = 0;
  let rest = v;
  const colon = v.indexOf(':');
  if (colon >= 0) {
    const e = v.slice(0, colon);
    if (!/^[0-9]{1,9}$/.test(e)) return null;
    epoch = Number(e);
    rest = v.slice(colon + 1);
  }
  const dash = rest.lastIndexOf('-');
  const upstream = dash >= 0 ? rest.slice(0, dash) : rest;
  const revision = dash >= 0 ? rest.slice(dash + 1) : '';
  // Upstream starts with a digit (policy "should"; dpkg warns but accepts letters too).
  if (!/^[A-Za-z0-9][A-Za-z0-9.+~-]*$/.test(upstream)) return null;
  if (dash >= 0 && !/^[A-Za-z0-9.+~]+$/.test(revision)) return null;
  return { epoch, upstream, revision };
}

/** Sort weight of one character of a non-digit part (dpkg's `order`). */
function order(c: number | undefined): number {
  if (c === undefined) return 0;
  if (c >= 0x30 && c <= 0x39) return 0; // digit: end of the non-digit part
  if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) return c;
  if (c === 0x7e) return -1; // ~
  return c + 256;
}

const isDigit = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x39;

/** Compares one part (upstream or revision) by the policy algorithm. */
function comparePart(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    // Non-digit prefixes.
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const ac = order(i < a.length ? a.charCodeAt(i) : undefined);
      const bc = order(j < b.length ? b.charCodeAt(j) : undefined);
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    // Digit prefixes, numerically (leading zeros skipped; then longer is larger, else lexical).
    while (a.charCodeAt(i) === 0x30) i++;
    while (b.charCodeAt(j) === 0x30) j++;
    let si = i;
    let sj = j;
    while (isDigit(a.charCodeAt(si))) si++;
    while (isDigit(b.charCodeAt(sj))) sj++;
    const da = a.slice(i, si);
    const db = b.slice(j, sj);
    if (da.length !== db.length) return da.length - db.length;
    if (da !== db) return da < db ? -1 : 1;
    i = si;
    j = sj;
  }
  return 0;
}

/** -1, 0 or 1 as `a` sorts before, equal to, or after `b`; throws on an invalid version. */
export function compareDebVersions(a: string, b: string): number {
  const va = parseDebVersion(a);
  const vb = parseDebVersion(b);
  if (!va || !vb) throw new RangeError(`not a Debian version: ${va ? b : a}`);
  if (va.epoch !== vb.epoch) return va.epoch < vb.epoch ? -1 : 1;
  return Math.sign(comparePart(va.upstream, vb.upstream) || comparePart(va.revision, vb.revision));
}
