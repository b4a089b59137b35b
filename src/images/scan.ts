/**
 * `aegis image scan <ref> --db <dir>`: matches an image's SBOM against an offline folder of
 * advisories in the OSV format (https://ossf.github.io/osv-schema/). The advisory files are
 * untrusted input: a file that does not parse is a coded error (`image.advisory_invalid`), so
 * a broken database can never pass for a clean scan.
 *
 * Matching (pure, `matchAdvisories`):
 * - Debian packages are matched by their SOURCE package name and version (Debian's OSV
 *   advisories, DSA/DLA/DEBIAN-CVE, name source packages), for ecosystem `Debian` or
 *   `Debian:<release>` equal to the image's release (os-release VERSION_ID);
 * - PyPI by PEP 503 normalized name, npm by exact name;
 * - `affected[].versions` (exact list) and `ranges` of type ECOSYSTEM or SEMVER, evaluated as
 *   the OSV schema says: events sorted by version, `introduced` opens, `fixed` (exclusive) and
 *   `last_affected` (inclusive) close. GIT ranges and `limit` events are ignored.
 * - A version that cannot be ordered (malformed in the image or the advisory) counts as
 *   affected (fail secure), and the finding says so.
 *
 * Severity: `database_specific.severity` or `affected[].ecosystem_specific.severity` (LOW,
 * MODERATE/MEDIUM, HIGH, CRITICAL), else a CVSS v3.x vector in `severity[]` scored with the
 * CVSS 3.1 base formula. LIMITATION: an advisory with none of these is ranked critical, so
 * a missing severity never hides a finding.
 */
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageError } from './errors.js';
import { type Ecosystem, type ImageSbom, normalizePypiName, type SbomPackage } from './sbom.js';
import { compareVersions } from './versions.js';

export const LEVELS = ['low', 'medium', 'high', 'critical'] as const;
export type Level = (typeof LEVELS)[number];

export interface Advisory {
  readonly id: string;
  readonly summary: string;
  readonly aliases: readonly string[];
  readonly level: Level;
  /** Where the level came from: a label, a CVSS score, or "none" (ranked critical). */
  readonly levelSource: string;
  readonly affected: ReadonlyArray<{
    readonly ecosystem: string;
    readonly name: string;
    readonly versions: readonly string[];
    readonly ranges: ReadonlyArray<{ readonly type: string; readonly events: ReadonlyArray<Record<string, string>> }>;
    readonly level: Level | null;
  }>;
}

export interface Finding {
  readonly id: string;
  readonly aliases: readonly string[];
  readonly level: Level;
  readonly levelSource: string;
  readonly summary: string;
  readonly package: string;
  readonly ecosystem: Ecosystem;
  readonly version: string;
  readonly purl: string;
  /** The first `fixed` version above the installed one, when the advisory gives one. */
  readonly fixed: string | null;
  /** Set when the versions could not be ordered and the package is reported as affected anyway. */
  readonly uncertain?: string;
}

function bad(file: string, msg: string): never {
  throw new ImageError('image.advisory_invalid', `${file}: ${msg}`);
}

const str = (x: unknown): string | null => (typeof x === 'string' ? x : null);
const obj = (x: unknown): Record<string, unknown> | null =>
  typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Record<string, unknown>) : null;

export function levelOf(label: unknown): Level | null {
  const s = str(label)?.trim().toLowerCase();
  if (s === 'low' || s === 'negligible' || s === 'unimportant') return 'low';
  if (s === 'medium' || s === 'moderate') return 'medium';
  if (s === 'high' || s === 'important') return 'high';
  if (s === 'critical') return 'critical';
  return null;
}

/** CVSS v3.0/3.1 base score of a vector (CVSS 3.1 specification, section 7.1); null if malformed. */
export function cvss3BaseScore(vector: string): number | null {
  const m = new Map<string, string>();
  const parts = vector.trim().split('/');
  if (!/^CVSS:3\.[01]$/.test(parts[0] ?? '')) return null;
  for (const p of parts.slice(1)) {
    const [k, v] = p.split(':');
    if (!k || !v) return null;
    m.set(k, v);
  }
  const W: Record<string, Record<string, number>> = {
    AV: { N: 0.85, A: 0.62, L: 0.55, P: 0.2 },
    AC: { L: 0.77, H: 0.44 },
    UI: { N: 0.85, R: 0.62 },
    C: { H: 0.56, L: 0.22, N: 0 },
    I: { H: 0.56, L: 0.22, N: 0 },
    A: { H: 0.56, L: 0.22, N: 0 },
  };
  const scope = m.get('S');
  if (scope !== 'U' && scope !== 'C') return null;
  const g = (k: string): number | null => W[k]?.[m.get(k) ?? ''] ?? null;
  const pr = { N: 0.85, L: scope === 'C' ? 0.68 : 0.62, H: scope === 'C' ? 0.5 : 0.27 }[m.get('PR') ?? ''] as number | undefined;
  const [av, ac, ui, c, i, a] = ['AV', 'AC', 'UI', 'C', 'I', 'A'].map(g);
  if (av == null || ac == null || ui == null || c == null || i == null || a == null || pr === undefined) return null;
  const iss = 1 - (1 - c) * (1 - i) * (1 - a);
  const impact = scope === 'U' ? 6.42 * iss : 7.52 * (iss - 0.029) - 3.25 * Math.pow(iss - 0.02, 15);
  const expl = 8.22 * av * ac * pr * ui;
  if (impact <= 0) return 0;
  // Roundup as defined in the 3.1 specification, Appendix A (integer arithmetic).
  const roundup = (x: number) => {
    const n = Math.round(x * 100000);
    return n % 10000 === 0 ? n / 100000 : (Math.floor(n / 10000) + 1) / 10;
  };
  return roundup(Math.min(scope === 'U' ? impact + expl : 1.08 * (impact + expl), 10));
}

/** Qualitative rating of a CVSS score (CVSS 3.1 section 5). */
export function levelOfScore(score: number): Level {
  return score >= 9 ? 'critical' : score >= 7 ? 'high' : score >= 4 ? 'medium' : 'low';
}

/** Parses one OSV document (untrusted); `file` names it in errors. */
export function parseOsv(v: unknown, file: string): Advisory {
  const o = obj(v) ?? bad(file, 'not an OSV object');
  const id = str(o['id']);
  if (!id || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(id)) bad(file, 'missing or malformed "id"');
  const aliases = Array.isArray(o['aliases']) ? (o['aliases'] as unknown[]).filter((x): x is string => typeof x === 'string') : [];
  let level = levelOf(obj(o['database_specific'])?.['severity']);
  let levelSource = level ? 'label' : 'none';
  if (!level && Array.isArray(o['severity'])) {
    for (const s of o['severity'] as unknown[]) {
      const so = obj(s);
      const score = str(so?.['score']);
      if (score && /^CVSS_V3/.test(str(so?.['type']) ?? '')) {
        const n = cvss3BaseScore(score);
        if (n !== null) {
          level = levelOfScore(n);
          levelSource = `CVSS ${n.toFixed(1)}`;
          break;
        }
      }
    }
  }
  if (!Array.isArray(o['affected'])) bad(file, `${id}: "affected" must be a list`);
  const affected = (o['affected'] as unknown[]).map((a, n) => {
    const ao = obj(a) ?? bad(file, `${id}: affected[${n}] is not an object`);
    const pkg = obj(ao['package']);
    const ecosystem = str(pkg?.['ecosystem']);
    const name = str(pkg?.['name']);
    if (!ecosystem || !name) bad(file, `${id}: affected[${n}].package needs ecosystem and name`);
    const versions = Array.isArray(ao['versions']) ? (ao['versions'] as unknown[]).filter((x): x is string => typeof x === 'string') : [];
    const ranges = (Array.isArray(ao['ranges']) ? (ao['ranges'] as unknown[]) : []).map((r, k) => {
      const ro = obj(r) ?? bad(file, `${id}: affected[${n}].ranges[${k}] is not an object`);
      const type = str(ro['type']) ?? bad(file, `${id}: affected[${n}].ranges[${k}] has no type`);
      if (!Array.isArray(ro['events'])) bad(file, `${id}: affected[${n}].ranges[${k}].events must be a list`);
      const events = (ro['events'] as unknown[]).map((e) => {
        const eo = obj(e) ?? bad(file, `${id}: a range event is not an object`);
        const out: Record<string, string> = {};
        for (const k2 of ['introduced', 'fixed', 'last_affected', 'limit']) {
          const x = eo[k2];
          if (x !== undefined) out[k2] = str(x) ?? bad(file, `${id}: event ${k2} must be a string`);
        }
        if (Object.keys(out).length !== 1)
          bad(file, `${id}: a range event must have exactly one of introduced, fixed, last_affected, limit`);
        return out;
      });
      return { type, events };
    });
    const eco = obj(ao['ecosystem_specific']);
    return { ecosystem, name, versions, ranges, level: levelOf(eco?.['severity']) ?? levelOf(eco?.['urgency']) };
  });
  return {
    id,
    summary: str(o['summary']) ?? str(o['details'])?.split('\n')[0] ?? '',
    aliases,
    level: level ?? 'critical',
    levelSource,
    affected,
  };
}

const MAX_DB_FILES = 200_000;
const MAX_DB_FILE_BYTES = 16 * 1024 * 1024;

/** Reads every `*.json` under `dir` (recursively, symlinks not followed). Each file: one OSV object or a list of them. */
export function loadAdvisoryDb(dir: string): Advisory[] {
  const out: Advisory[] = [];
  let files = 0;
  const visit = (d: string, depth: number) => {
    let names: string[];
    try {
      names = readdirSync(d).sort();
    } catch (err) {
      bad(d, `cannot read the advisory folder: ${(err as Error).message}`);
    }
    for (const n of names) {
      const p = join(d, n);
      const st = lstatSync(p);
      if (st.isDirectory() && depth < 8) visit(p, depth + 1);
      else if (st.isFile() && n.endsWith('.json')) {
        if (++files > MAX_DB_FILES) bad(dir, `more than ${MAX_DB_FILES} advisory files`);
        if (st.size > MAX_DB_FILE_BYTES) bad(p, 'larger than 16 MiB');
        let v: unknown;
        try {
          v = JSON.parse(readFileSync(p, 'utf8'));
        } catch (err) {
          bad(p, `not JSON: ${(err as Error).message}`);
        }
        for (const x of Array.isArray(v) ? v : [v]) out.push(parseOsv(x, p));
      }
    }
  };
  let st;
  try {
    st = lstatSync(dir);
  } catch {
    return bad(dir, 'advisory folder does not exist');
  }
  if (!st.isDirectory()) bad(dir, 'not a folder');
  visit(dir, 0);
  return out;
}

/** Which SBOM ecosystem an OSV ecosystem names for this image, or null (not applicable). */
function ecosystemFor(osvEco: string, distro: string | null): Ecosystem | null {
  if (osvEco === 'PyPI') return 'pypi';
  if (osvEco === 'npm') return 'npm';
  if (osvEco === 'Debian') return 'deb';
  const m = /^Debian:(\d+)$/.exec(osvEco);
  if (m) return distro === null || distro === `debian-${m[1]}` ? 'deb' : null;
  return null;
}

function keyOf(p: SbomPackage): { name: string; version: string } {
  if (p.ecosystem === 'deb') return p.source ?? { name: p.name, version: p.version };
  if (p.ecosystem === 'pypi') return { name: normalizePypiName(p.name), version: p.version };
  return { name: p.name, version: p.version };
}

/** OSV range evaluation; returns affected and the fix above `v`; throws RangeError when versions cannot be ordered. */
function inRange(eco: Ecosystem, v: string, events: ReadonlyArray<Record<string, string>>): { affected: boolean; fixed: string | null } {
  const cmp = (a: string, b: string) => compareVersions(eco, a, b);
  const value = (e: Record<string, string>) => Object.values(e)[0]!;
  const sorted = [...events]
    .filter((e) => e['limit'] === undefined)
    .sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      if (a['introduced'] === '0') return b['introduced'] === '0' ? 0 : -1;
      if (b['introduced'] === '0') return 1;
      return cmp(va, vb);
    });
  let affected = false;
  let fixed: string | null = null;
  for (const e of sorted) {
    if (e['introduced'] !== undefined) {
      if (e['introduced'] === '0' || cmp(v, e['introduced']) >= 0) affected = true;
    } else if (e['fixed'] !== undefined) {
      if (cmp(v, e['fixed']) >= 0) affected = false;
      else if (affected && fixed === null) fixed = e['fixed'];
    } else if (e['last_affected'] !== undefined) {
      if (cmp(v, e['last_affected']) > 0) affected = false;
    }
  }
  return { affected, fixed: affected ? fixed : null };
}

/** Matches the SBOM against the advisories; findings sorted by level (highest first), id, package. */
export function matchAdvisories(sbom: ImageSbom, advisories: readonly Advisory[]): Finding[] {
  const byName = new Map<string, SbomPackage[]>();
  for (const p of sbom.packages) {
    const k = `${p.ecosystem} ${keyOf(p).name}`;
    byName.set(k, [...(byName.get(k) ?? []), p]);
  }
  const out: Finding[] = [];
  const seen = new Set<string>();
  for (const adv of advisories) {
    for (const aff of adv.affected) {
      const eco = ecosystemFor(aff.ecosystem, sbom.distro);
      if (!eco) continue;
      const name = eco === 'pypi' ? normalizePypiName(aff.name) : aff.name;
      for (const p of byName.get(`${eco} ${name}`) ?? []) {
        const v = keyOf(p).version;
        let hit = aff.versions.includes(v);
        let fixed: string | null = null;
        let uncertain: string | undefined;
        for (const r of aff.ranges) {
          if (hit) break;
          if (r.type !== 'ECOSYSTEM' && r.type !== 'SEMVER') continue;
          try {
            const res = inRange(eco, v, r.events);
            hit = res.affected;
            fixed = res.fixed;
          } catch (err) {
            hit = true;
            uncertain = (err as Error).message;
          }
        }
        const dedup = `${adv.id} ${p.purl}`;
        if (!hit || seen.has(dedup)) continue;
        seen.add(dedup);
        const level = aff.level ?? adv.level;
        out.push({
          id: adv.id,
          aliases: adv.aliases,
          level,
          levelSource: aff.level ? 'label' : adv.levelSource,
          summary: adv.summary,
          package: p.name,
          ecosystem: p.ecosystem,
          version: p.version,
          purl: p.purl,
          fixed,
          ...(uncertain ? { uncertain } : {}),
        });
      }
    }
  }
  const rank = (l: Level) => LEVELS.indexOf(l);
  return out.sort((a, b) => rank(b.level) - rank(a.level) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) || (a.package < b.package ? -1 : 1));
}

/** Whether any finding is at or above `failOn`. */
export function failsAt(findings: readonly Finding[], failOn: Level): boolean {
  return findings.some((f) => LEVELS.indexOf(f.level) >= LEVELS.indexOf(failOn));
}
