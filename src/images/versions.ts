/**
 * Version ordering per ecosystem for advisory matching: Debian (debversion.ts), PyPI (PEP 440,
 * https://peps.python.org/pep-0440/), npm (Semantic Versioning 2.0.0, section 11). Pure.
 * Each comparator throws RangeError on a version it cannot order; the scanner treats that as
 * "possibly affected" (fail secure), never as "not affected".
 */
import { compareDebVersions } from './debversion.js';
import type { Ecosystem } from './sbom.js';

const PEP440 =
  /^v?(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d*))?(?:[-_.]?(dev)[-_.]?(\d*))?(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?$/i;

type Key = Array<number | bigint>;

/** The PEP 440 sort key: epoch, release (trailing zeros dropped), pre, post, dev. */
function pep440Key(v: string): { key: Key; release: bigint[]; local: string } {
  const m = PEP440.exec(v.trim());
  if (!m) throw new RangeError(`not a PEP 440 version: ${v}`);
  const release = m[2]!.split('.').map((x) => BigInt(x));
  while (release.length > 1 && release[release.length - 1] === 0n) release.pop();
  const phase = { a: 0, alpha: 0, b: 1, beta: 1, c: 2, rc: 2, pre: 2, preview: 2 } as Record<string, number>;
  const hasPre = m[3] !== undefined;
  const hasPost = m[5] !== undefined || m[6] !== undefined;
  const hasDev = m[8] !== undefined;
  const INF = Number.POSITIVE_INFINITY;
  // A dev release of a final version sorts before its pre-releases: X.devN < X.aN < X < X.postN.
  const pre: Key = hasPre ? [phase[m[3]!.toLowerCase()]!, BigInt(m[4] || '0')] : !hasPost && hasDev ? [-INF, 0] : [INF, 0];
  const post: Key = hasPost ? [BigInt(m[5] ?? (m[7] || '0'))] : [-INF];
  const dev: Key = hasDev ? [BigInt(m[9] || '0')] : [INF];
  return { key: [BigInt(m[1] ?? '0'), ...pre, ...post, ...dev], release, local: m[10] ?? '' };
}

function cmp(a: number | bigint, b: number | bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function comparePep440(a: string, b: string): number {
  const ka = pep440Key(a);
  const kb = pep440Key(b);
  const c0 = cmp(ka.key[0]!, kb.key[0]!);
  if (c0) return c0;
  for (let i = 0; i < Math.max(ka.release.length, kb.release.length); i++) {
    const c = cmp(ka.release[i] ?? 0n, kb.release[i] ?? 0n);
    if (c) return c;
  }
  for (let i = 1; i < ka.key.length; i++) {
    const c = cmp(ka.key[i]!, kb.key[i]!);
    if (c) return c;
  }
  return ka.local === kb.local ? 0 : ka.local < kb.local ? -1 : 1;
}

const SEMVER = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$/;

export function compareSemver(a: string, b: string): number {
  const ma = SEMVER.exec(a.trim());
  const mb = SEMVER.exec(b.trim());
  if (!ma || !mb) throw new RangeError(`not a semantic version: ${ma ? b : a}`);
  for (let i = 1; i <= 3; i++) {
    const c = cmp(BigInt(ma[i]!), BigInt(mb[i]!));
    if (c) return c;
  }
  const pa = ma[4];
  const pb = mb[4];
  if (pa === undefined || pb === undefined) return pa === pb ? 0 : pa === undefined ? 1 : -1;
  const xa = pa.split('.');
  const xb = pb.split('.');
  for (let i = 0; i < Math.max(xa.length, xb.length); i++) {
    const p = xa[i];
    const q = xb[i];
    if (p === undefined) return -1;
    if (q === undefined) return 1;
    const np = /^\d+$/.test(p);
    const nq = /^\d+$/.test(q);
    if (np && nq) {
      const c = cmp(BigInt(p), BigInt(q));
      if (c) return c;
    } else if (np !== nq) return np ? -1 : 1;
    else if (p !== q) return p < q ? -1 : 1;
  }
  return 0;
}

export function compareVersions(eco: Ecosystem, a: string, b: string): number {
  switch (eco) {
    case 'deb':
      return compareDebVersions(a, b);
    case 'pypi':
      return comparePep440(a, b);
    case 'npm':
      return compareSemver(a, b);
  }
}
