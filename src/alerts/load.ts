/**
 * Loading rule files (adapter): a file, or every *.yml / *.yaml in a folder (sorted), parsed,
 * compiled and linked as one set. The default pack ships in the repository's rules/ folder.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AlertError } from './errors.js';
import { type CompiledRule, linkRules, MAX_RULE_FILE_BYTES, parseRules } from './rule.js';

/** The default rule pack (rules/aegis-default.yml beside the package). */
export const DEFAULT_PACK = fileURLToPath(new URL('../../../rules/aegis-default.yml', import.meta.url));

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

/** Loads and links the rules in `paths` (files or folders). Throws AlertError. */
export function loadRules(paths: readonly string[]): CompiledRule[] {
  const rules: CompiledRule[] = [];
  for (const file of paths.flatMap(filesOf)) {
    let text: string;
    try {
      if (statSync(file).size > MAX_RULE_FILE_BYTES) throw new AlertError('alerts.rule_invalid', `${file}: larger than ${MAX_RULE_FILE_BYTES} bytes`);
      text = readFileSync(file, 'utf8');
    } catch (e) {
      if (e instanceof AlertError) throw e;
      throw new AlertError('alerts.io', `cannot read rules ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    rules.push(...parseRules(text, file));
  }
  return linkRules(rules);
}
