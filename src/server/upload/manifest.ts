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
  const policy = compilePolicy(r.manifest);
  const refused = deployerToolProblems(policy);
  if (refused.length > 0) return { ok: false, issues: refused };
  return {
    ok: true,
    policy,
    manifestDigest: sha256Digest(bytes),
    warnings: r.warnings.map((w) => formatWarning(file, w, formatIssue)),
  };
}

/**
 * ARCHITECTURE NOTE: what a manifest may say through the API and not on the host. A local tool
 * server's `mcp.volumes` name HOST folders (as `aegis run --volume` does, the host operator's
 * choice): a deployer could otherwise hand any host folder to a server whose answers reach the
 * agent, so they are refused here. A server's `mcp.manifest` must be a relative path inside the
 * uploaded code (no `..`, not absolute): another folder of the host is not the deployer's.
 */
function deployerToolProblems(policy: Policy): ManifestIssue[] {
  const issues: ManifestIssue[] = [];
  (policy.tools?.servers ?? []).forEach((server, i) => {
    const t = server.transport;
    if (t.kind !== 'sandbox') return;
    if (t.volumes.length > 0)
      issues.push({
        line: 0,
        column: 0,
        path: `tools[${i}].mcp.volumes`,
        message: 'host folders for a tool server are given on the host (aegis run), not through the API',
      });
    if (t.manifest.startsWith('/') || t.manifest.split('/').includes('..'))
      issues.push({
        line: 0,
        column: 0,
        path: `tools[${i}].mcp.manifest`,
        message: "must be a relative path inside the uploaded code (no '..')",
      });
  });
  return issues;
}
