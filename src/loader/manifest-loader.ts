/**
 * The one manifest loader: reads an agent.yaml (at most MAX_MANIFEST_BYTES, the parser's own
 * limit), parses and compiles it to a Policy, optionally through the compiled-policy cache.
 * `aegis validate`, `aegis policy show|test` and `aegis run` (and the server) load manifests only
 * through here. An adapter: it does the file I/O that src/manifest and src/policy (pure) do not.
 *
 * Cache: compiled policies are stored under `cacheDir` by the SHA-256 of the cache format, the
 * compiler's identity and the exact manifest bytes, so a repeated `aegis run` of an unchanged
 * manifest does not load the manifest parser (zod, yaml, tldts: most of the CLI's start-up time).
 * The bytes hashed are the bytes parsed.
 * ARCHITECTURE NOTE: entries are read only from a cache directory owned by this user with mode
 * 0700 (not a symlink), and only from files owned by this user that nobody else can write, so
 * only this user could have written them; the key covers the compiler's modules, the Node
 * version and the dependency lockfile. Even then an entry is untrusted input: it is parsed and
 * checked (it names its own key; the policy has exactly a Policy's shape, policy-check.ts; the
 * warnings are well-formed issues), and anything else is ignored and recompiled.
 * LIMITATION: someone who can write as this user can plant a well-formed entry with another
 * policy; the cache guards against other users, not against this one.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { ManifestError } from '../manifest/errors.js';
import { MAX_MANIFEST_BYTES } from '../manifest/limits.js';
import type { ManifestIssue } from '../manifest/parse.js';
import type { Policy } from '../policy/types.js';
import { codeStamp, readPrivateEntry, writePrivateEntry } from '../host/private-cache.js';
import { checkPolicy } from './policy-check.js';

/** Bump when the cache entry format changes. */
const POLICY_CACHE_VERSION = '2';

export interface LoadedPolicy {
  readonly file: string;
  readonly policy: Policy;
  /** Formatted warnings (`file:line:col: warning: path: ...`), to print on stderr. */
  readonly warnings: readonly string[];
  /** Where the policy came from: compiled now, or a cache entry. */
  readonly source: 'compiled' | 'cache';
  /** SHA-256 (hex) of the exact manifest bytes loaded (for the run's provenance). */
  readonly manifestSha256: string;
}

export interface LoadOptions {
  /** Directory of the compiled-policy cache; without it, every load compiles. */
  readonly cacheDir?: string;
}

/** One cache entry as stored. */
interface CacheEntry {
  readonly v: string;
  readonly key: string;
  readonly policy: Policy;
  /** Unformatted: the same bytes may be loaded from another path. */
  readonly warnings: readonly ManifestIssue[];
}

export function formatWarning(file: string, w: ManifestIssue, formatIssue: (file: string, i: ManifestIssue) => string): string {
  return formatIssue(file, { ...w, message: `warning: ${w.message}` }).replace(`: ${w.path}: warning:`, `: warning: ${w.path}:`);
}

/** Same output as manifest/parse.ts formatIssue, without loading the parser (cache hits). */
function formatIssueLite(file: string, i: ManifestIssue): string {
  const where = i.line > 0 ? `${file}:${i.line}:${i.column}` : file;
  return i.path === '' ? `${where}: ${i.message}` : `${where}: ${i.path}: ${i.message}`;
}

/** Reads at most MAX_MANIFEST_BYTES of a regular file (ManifestError otherwise). */
export function readManifestBytes(file: string): Buffer {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error('not a regular file');
    // One byte more than the limit tells a file that grew after fstat from one at the limit.
    const buf = Buffer.alloc(Math.min(st.size, MAX_MANIFEST_BYTES) + 1);
    let n = 0;
    for (let r = 1; r > 0 && n < buf.length; n += r) r = readSync(fd, buf, n, buf.length - n, n);
    if (n > MAX_MANIFEST_BYTES || st.size > MAX_MANIFEST_BYTES) {
      throw new ManifestError('manifest.invalid', `${file}: manifest is larger than ${MAX_MANIFEST_BYTES / 1024} KiB`);
    }
    return buf.subarray(0, n);
  } catch (err) {
    if (err instanceof ManifestError) throw err;
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ManifestError('manifest.unreadable', `${file}: cannot read the manifest (${why})`, [], { cause: err });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Identity of the manifest parser and policy compiler this AEGIS runs (see codeStamp). */
function compilerStamp(): string {
  return codeStamp([new URL('../manifest/', import.meta.url), new URL('../policy/', import.meta.url)]);
}

function isIssue(v: unknown): v is ManifestIssue {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    Number.isSafeInteger(o['line']) &&
    Number.isSafeInteger(o['column']) &&
    typeof o['path'] === 'string' &&
    typeof o['message'] === 'string'
  );
}

/** A cache entry parsed and checked, or undefined (then the manifest is compiled again). */
function parseEntry(text: string, key: string): CacheEntry | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (o['v'] !== POLICY_CACHE_VERSION || o['key'] !== key) return undefined;
  const policy = checkPolicy(o['policy']);
  const warnings = o['warnings'];
  if (policy === undefined || !Array.isArray(warnings) || !warnings.every(isIssue)) return undefined;
  return { v: POLICY_CACHE_VERSION, key, policy, warnings };
}

/**
 * Loads `file` and returns its compiled Policy. Throws ManifestError ('manifest.unreadable' |
 * 'manifest.invalid', with every issue formatted and in `issues`).
 */
export async function loadManifest(file: string, opts: LoadOptions = {}): Promise<LoadedPolicy> {
  const bytes = readManifestBytes(file);
  const manifestSha256 = createHash('sha256').update(bytes).digest('hex');
  const cacheDir = opts.cacheDir;
  let key = '';
  if (cacheDir !== undefined) {
    key = createHash('sha256').update(POLICY_CACHE_VERSION).update('\0').update(compilerStamp()).update('\0').update(bytes).digest('hex');
    const text = readPrivateEntry(cacheDir, `${key}.json`);
    const entry = text === undefined ? undefined : parseEntry(text, key);
    if (entry !== undefined) {
      return {
        file,
        policy: entry.policy,
        warnings: entry.warnings.map((w) => formatWarning(file, w, formatIssueLite)),
        source: 'cache',
        manifestSha256,
      };
    }
  }
  // Lazy: the manifest parser (zod, yaml, the public suffix list) is most of the CLI's start-up.
  const [{ parseManifest, formatIssue }, { compilePolicy }] = await Promise.all([
    import('../manifest/parse.js'),
    import('../manifest/compile.js'),
  ]);
  const r = parseManifest(bytes.toString('utf8'));
  if (!r.ok) throw new ManifestError('manifest.invalid', r.issues.map((i) => formatIssue(file, i)).join('\n'), r.issues);
  const policy = compilePolicy(r.manifest);
  const loaded: LoadedPolicy = {
    file,
    policy,
    warnings: r.warnings.map((w) => formatWarning(file, w, formatIssue)),
    source: 'compiled',
    manifestSha256,
  };
  if (cacheDir === undefined) return loaded;
  const entry: CacheEntry = { v: POLICY_CACHE_VERSION, key, policy, warnings: r.warnings };
  writePrivateEntry(cacheDir, `${key}.json`, JSON.stringify(entry));
  return loaded;
}
