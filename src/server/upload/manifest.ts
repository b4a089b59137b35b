/**
 * Manifest text sent to the server (the `manifest` part of `POST /v1/agents`), validated exactly
 * as `aegis validate` does it: the same parser and compiler (src/manifest), the same 64 KiB limit,
 * the same issues (`line`, `column`, `path`, `message`; `aegis validate --json` prints these),
 * and warnings formatted by the same loader helper. No I/O: the text arrives as an argument.
 */
import { formatWarning } from '../../loader/manifest-loader.js';
import { compilePolicy } from '../../manifest/compile.js';
import { MAX_MANIFEST_BYTES } from '../../manifest/limits.js';
import { formatIssue, parseManifest, type ManifestIssue } from '../../manifest/parse.js';
import type { Policy } from '../../policy/types.js';
import { sha256Digest } from './extract.js';

export type ManifestValidation =
  | {
      readonly ok: true;
      readonly policy: Policy;
      /** `sha256:<hex>` of the exact manifest bytes. */
      readonly manifestDigest: string;
      /** Warnings formatted as `aegis validate` prints them (`<file>:line:col: warning: path: message`). */
      readonly warnings: readonly string[];
    }
  | { readonly ok: false; readonly issues: readonly ManifestIssue[] };

export interface ValidateManifestOptions {
  /** The name used in formatted warnings (default `agent.yaml`). */
  readonly file?: string;
}

/**
 * Validates manifest text (a string, or the raw bytes of the upload, decoded as UTF-8 only
 * after the size check). Never throws on bad input: every problem is an issue.
 */
export function validateManifestText(text: string | Buffer, opts: ValidateManifestOptions = {}): ManifestValidation {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  if (bytes.length > MAX_MANIFEST_BYTES) {
    // Same issue as the parser's own check, without decoding an oversized body first.
    return { ok: false, issues: [{ line: 1, column: 1, path: '', message: `manifest is larger than ${MAX_MANIFEST_BYTES / 1024} KiB` }] };
  }
  const r = parseManifest(bytes.toString('utf8'));
  if (!r.ok) return { ok: false, issues: r.issues };
  const file = opts.file ?? 'agent.yaml';
  return {
    ok: true,
    policy: compilePolicy(r.manifest),
    manifestDigest: sha256Digest(bytes),
    warnings: r.warnings.map((w) => formatWarning(file, w, formatIssue)),
  };
}
