import { AegisError } from '../errors.js';
import type { ManifestIssue } from './parse.js';

/** Error codes of the manifest area (API: tests and callers branch on these). */
export type ManifestErrorCode =
  /** The manifest failed validation; `issues` lists every problem with its position. */
  | 'manifest.invalid'
  /** The manifest file could not be read. */
  | 'manifest.unreadable';

export class ManifestError extends AegisError<ManifestErrorCode> {
  readonly issues: readonly ManifestIssue[];
  constructor(code: ManifestErrorCode, message: string, issues: readonly ManifestIssue[] = [], options?: { cause?: unknown }) {
    super(code, message, options);
    this.issues = issues;
  }
}
