/**
 * Reads an agent.yaml from disk and compiles it: the one place the CLI turns a manifest file into
 * a Policy. Every command that takes a manifest (validate, policy, run) goes through here.
 */
import { readFile, stat } from 'node:fs/promises';
import { formatIssue, ManifestError, MAX_MANIFEST_BYTES, parseManifest, type Manifest, type ManifestIssue } from '../manifest/index.js';
import { compilePolicy } from '../manifest/compile.js';
import type { Policy } from '../policy/types.js';

export interface LoadedManifest {
  readonly file: string;
  readonly manifest: Manifest;
  readonly policy: Policy;
  /** Formatted warnings (`file:line:col: warning: ...`), to print on stderr. */
  readonly warnings: readonly string[];
}

export function formatWarning(file: string, w: ManifestIssue): string {
  return formatIssue(file, { ...w, message: `warning: ${w.message}` }).replace(`: ${w.path}: warning:`, `: warning: ${w.path}:`);
}

/** Throws ManifestError ('manifest.unreadable' | 'manifest.invalid') with every issue formatted. */
export async function loadManifestFile(file: string): Promise<LoadedManifest> {
  let text: string;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_MANIFEST_BYTES) {
      throw new ManifestError('manifest.invalid', `${file}: manifest is larger than ${MAX_MANIFEST_BYTES / 1024} KiB`);
    }
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof ManifestError) throw err;
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ManifestError('manifest.unreadable', `${file}: cannot read the manifest (${why})`, [], { cause: err });
  }
  const r = parseManifest(text);
  const warnings = r.warnings.map((w) => formatWarning(file, w));
  if (!r.ok) throw new ManifestError('manifest.invalid', r.issues.map((i) => formatIssue(file, i)).join('\n'), r.issues);
  return { file, manifest: r.manifest, policy: compilePolicy(r.manifest), warnings };
}
