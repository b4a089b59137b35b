/**
 * Loading rule files (adapter): a file, or every *.yml / *.yaml in a folder (sorted), parsed,
 * compiled and linked as one set. The default pack ships in the repository's rules/ folder.
 *
 * With a cache dir (aegis run), the validated rule documents are kept in a private cache
 * (src/host/private-cache.ts) keyed by the rule files' paths and bytes and the code that parses
 * them, so a run whose rules did not change compiles them without loading the YAML parser or
 * zod. A cached entry is untrusted: every document is compiled and checked again, and anything
 * that fails is ignored and the files are parsed anew.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { codeStamp, readPrivateEntry, writePrivateEntry } from '../host/private-cache.js';
import { AlertError } from './errors.js';
import { type CompiledRule, compileRuleDoc, linkRules, MAX_RULE_FILE_BYTES, type RuleDoc } from './rule.js';

/** The default rule pack (rules/aegis-default.yml beside the package). */
export const DEFAULT_PACK = fileURLToPath(new URL('../../../rules/aegis-default.yml', import.meta.url));

const CACHE_VERSION = '1';

function filesOf(path: string): string[] {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new AlertError('alerts.io', `cannot read rules ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isDirectory()) return [path];
  return readdirSync(path)
    .filter((n) => n.endsWith('.yml') || n.endsWith('.yaml'))
    .sort()
    .map((n) => join(path, n));
}

function readRuleFile(file: string): string {
  try {
    if (statSync(file).size > MAX_RULE_FILE_BYTES)
      throw new AlertError('alerts.rule_invalid', `${file}: larger than ${MAX_RULE_FILE_BYTES} bytes`);
    return readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof AlertError) throw e;
    throw new AlertError('alerts.io', `cannot read rules ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

interface CacheEntry {
  readonly v: string;
  readonly key: string;
  readonly docs: ReadonlyArray<{ readonly doc: RuleDoc; readonly source: string }>;
}

/** A cache entry compiled and linked, or undefined when it does not check out. */
function fromCache(text: string, key: string): CompiledRule[] | undefined {
  try {
    const e = JSON.parse(text) as CacheEntry;
    if (e === null || typeof e !== 'object' || e.v !== CACHE_VERSION || e.key !== key || !Array.isArray(e.docs)) return undefined;
    return linkRules(e.docs.map((d) => compileRuleDoc(d.doc, String(d.source))));
  } catch {
    return undefined;
  }
}

export interface LoadRulesOptions {
  /** Keep the validated documents in this private cache dir (see the note at the top). */
  readonly cacheDir?: string;
}

/** Loads and links the rules in `paths` (files or folders). Throws AlertError. */
export async function loadRules(paths: readonly string[], opts: LoadRulesOptions = {}): Promise<CompiledRule[]> {
  const files = paths.flatMap(filesOf).map((file) => ({ file, text: readRuleFile(file) }));
  let key = '';
  if (opts.cacheDir !== undefined) {
    const h = createHash('sha256')
      .update(CACHE_VERSION)
      .update('\0')
      .update(codeStamp([new URL('./', import.meta.url)]));
    for (const f of files) h.update('\0').update(f.file).update('\0').update(f.text);
    key = h.digest('hex');
    const text = readPrivateEntry(opts.cacheDir, `${key}.json`);
    const cached = text === undefined ? undefined : fromCache(text, key);
    if (cached !== undefined) return cached;
  }
  const { parseRules } = await import('./rule-file.js');
  const docs: Array<{ doc: RuleDoc; source: string }> = [];
  const rules: CompiledRule[] = [];
  for (const f of files) for (const r of parseRules(f.text, f.file, docs)) rules.push(r);
  const linked = linkRules(rules);
  if (opts.cacheDir !== undefined)
    writePrivateEntry(opts.cacheDir, `${key}.json`, JSON.stringify({ v: CACHE_VERSION, key, docs } satisfies CacheEntry));
  return linked;
}
