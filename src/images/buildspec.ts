/**
 * Image build specs: what `aegis image build <ref> --from <base> [--apt ...] [--pip ...]
 * [--spec image.yaml]` puts on top of a base image. Pure: the spec text (untrusted) comes in,
 * a validated spec goes out; coded errors (`image.spec_invalid`), never an uncaught exception.
 *
 *     # image.yaml
 *     from: python:3.11              # base image in the store (the CLI's --from wins)
 *     apt: [libxml2, git]            # Debian packages, installed with --no-install-recommends
 *     pip:
 *       requirements: requirements.txt   # relative to the spec file
 *       index_url: https://pypi.internal/simple   # optional (PyPI is not reachable here)
 *       find_links: wheels                # optional local folder of wheels (relative to the spec)
 *     npm:
 *       lockfile: package-lock.json       # node bases: `npm ci` into /node_modules
 *
 * Relative paths are resolved by the caller (the adapter); this module only validates shapes.
 */
import { parse as parseYaml } from 'yaml';
import { parseImageRef as parseRef } from '../policy/image-ref.js';
import type { ImageRef } from '../policy/types.js';
import { ImageError } from './errors.js';

export interface PipSpec {
  /** Path of a requirements file (as written; resolved by the caller). */
  readonly requirements: string;
  readonly indexUrl: string | null;
  readonly findLinks: string | null;
}

export interface BuildSpec {
  readonly from: ImageRef | null;
  readonly apt: readonly string[];
  readonly pip: PipSpec | null;
  /** Path of a package-lock.json (its package.json beside it); installed into /node_modules. */
  readonly npm: string | null;
}

/** Debian package names (policy manual 5.6.1), optionally `=version` (5.6.12). */
const APT_PACKAGE = /^[a-z0-9][a-z0-9+.-]+(=[0-9][A-Za-z0-9.+~:-]*)?$/;

const MAX_SPEC_BYTES = 64 * 1024;

function bad(msg: string): never {
  throw new ImageError('image.spec_invalid', msg);
}

export function checkAptPackage(name: string): string {
  if (!APT_PACKAGE.test(name) || name.length > 200) bad(`"${name}" is not a Debian package name (name or name=version)`);
  return name;
}

/** An index URL: http(s) only, no credentials (they would end up in the image metadata). */
export function checkIndexUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return bad(`--index-url "${url}" is not a URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') bad(`--index-url must be http(s), not ${u.protocol}`);
  if (u.username || u.password) bad('--index-url must not carry credentials (they would be recorded in the image metadata)');
  return u.toString();
}

function optString(o: Record<string, unknown>, key: string, where: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || !v.trim() || v.includes('\0')) return bad(`${where}.${key} must be a non-empty string`);
  return v;
}

/** Parses image.yaml (untrusted). Unknown keys are refused: a typo must not silently build something else. */
export function parseBuildSpec(text: string): BuildSpec {
  if (text.length > MAX_SPEC_BYTES) bad('image spec is larger than 64 KiB');
  let v: unknown;
  try {
    v = parseYaml(text, { maxAliasCount: 10 });
  } catch (err) {
    return bad(`image spec is not YAML: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
  if (v === null || v === undefined) v = {};
  if (typeof v !== 'object' || Array.isArray(v)) bad('image spec must be a mapping');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!['from', 'apt', 'pip', 'npm'].includes(k)) bad(`unknown key "${k}" in image spec (from, apt, pip, npm)`);
  let from: ImageRef | null = null;
  const f = optString(o, 'from', 'spec');
  if (f !== null) {
    const r = parseRef(f.trim());
    if (typeof r === 'string') bad(`from: ${r}`);
    from = r;
  }
  const aptV = o['apt'] ?? [];
  if (!Array.isArray(aptV)) bad('apt must be a list of package names');
  const apt = (aptV as unknown[]).map((p) => (typeof p === 'string' ? checkAptPackage(p) : bad('apt entries must be strings')));
  let pip: PipSpec | null = null;
  if (o['pip'] !== undefined && o['pip'] !== null) {
    if (typeof o['pip'] !== 'object' || Array.isArray(o['pip'])) bad('pip must be a mapping (requirements, index_url, find_links)');
    const p = o['pip'] as Record<string, unknown>;
    for (const k of Object.keys(p))
      if (!['requirements', 'index_url', 'find_links'].includes(k)) bad(`unknown key "pip.${k}" (requirements, index_url, find_links)`);
    const requirements = optString(p, 'requirements', 'pip') ?? bad('pip.requirements is required');
    const indexUrl = optString(p, 'index_url', 'pip');
    pip = { requirements, indexUrl: indexUrl === null ? null : checkIndexUrl(indexUrl), findLinks: optString(p, 'find_links', 'pip') };
  }
  let npm: string | null = null;
  if (o['npm'] !== undefined && o['npm'] !== null) {
    const n = obj(o['npm']) ?? bad('npm must be a mapping (lockfile)');
    for (const k of Object.keys(n)) if (k !== 'lockfile') bad(`unknown key "npm.${k}" (lockfile)`);
    npm = optString(n, 'lockfile', 'npm') ?? bad('npm.lockfile is required');
  }
  return { from, apt, pip, npm };
}

function obj(v: unknown): Record<string, unknown> | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

/** Merges command-line options over a spec: --from replaces, --apt adds, --pip/--index-url/--find-links replace. */
export function mergeBuildSpec(
  spec: BuildSpec,
  cli: { from?: ImageRef; apt?: readonly string[]; pip?: string; indexUrl?: string; findLinks?: string; npm?: string },
): BuildSpec {
  const apt = [...spec.apt, ...(cli.apt ?? []).map(checkAptPackage)];
  let pip = spec.pip;
  if (cli.pip !== undefined) pip = { requirements: cli.pip, indexUrl: pip?.indexUrl ?? null, findLinks: pip?.findLinks ?? null };
  if ((cli.indexUrl !== undefined || cli.findLinks !== undefined) && pip === null)
    bad('--index-url and --find-links need --pip <requirements.txt>');
  if (pip && cli.indexUrl !== undefined) pip = { ...pip, indexUrl: checkIndexUrl(cli.indexUrl) };
  if (pip && cli.findLinks !== undefined) pip = { ...pip, findLinks: cli.findLinks };
  return { from: cli.from ?? spec.from, apt: [...new Set(apt)], pip, npm: cli.npm ?? spec.npm };
}

/**
 * Whether a requirements file pins hashes (`--hash=sha256:...` on any requirement). When it
 * does, the build passes `--require-hashes`, so pip refuses any requirement without a hash,
 * any dependency not listed, and any file whose hash differs.
 */
export function requirementsHaveHashes(text: string): boolean {
  return text.split('\n').some((l) => /(^|\s)--hash[=\s]/.test(l.replace(/#.*$/, '')));
}

/** Requirement-file options that only restrict what pip picks; every other option line is refused. */
const ALLOWED_OPTIONS = /^(--require-hashes|--pre|--prefer-binary|--only-binary[= ]\S+|--no-binary[= ]\S+)$/;

/**
 * Refuses requirement-file lines that would reach outside what the build controls: any option
 * line (`-r`/`-rfile`, `-c`, `-e`, `-i`, `--extra-index-url`, `-f`, `--trusted-host`, ...: nested
 * files are not copied into the build, and index options belong on the command line where they
 * are validated and recorded) except the few in ALLOWED_OPTIONS, local paths and `file:` URLs.
 * Backslash continuations are joined first, as pip does.
 */
export function checkRequirements(text: string): void {
  if (text.length > 1024 * 1024) bad('requirements file is larger than 1 MiB');
  for (const [i, raw] of text
    .replace(/\\\r?\n/g, ' ')
    .split('\n')
    .entries()) {
    const l = raw.replace(/(^|\s)#.*$/, '').trim();
    if (!l) continue;
    if (l.startsWith('-') && !ALLOWED_OPTIONS.test(l))
      bad(`requirements entry ${i + 1}: "${l.split(/\s/)[0] ?? ''}" is not allowed here (use --index-url/--find-links on the build)`);
    if (/^[./~]/.test(l) || /\bfile:/i.test(l)) bad(`requirements entry ${i + 1}: local paths are not allowed (use --find-links)`);
  }
}
