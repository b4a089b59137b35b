/**
 * The SDK's errors, typed by code. `AegisApiError`: the server answered with an error
 * (`{"error": {"code", "message"}}`), `.status` is the HTTP status. `AegisClientError`: the
 * request never got an answer, or the answer or a local input was unusable.
 */
import type { ManifestIssue } from './types.js';

/** The codes the server's contract names; others may appear (the union stays open). */
export type ApiErrorCode =
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'payload_too_large'
  | 'throttled'
  | 'invalid_request'
  | 'manifest_invalid'
  | 'internal'
  | (string & NonNullable<unknown>);

export class AegisApiError extends Error {
  readonly code: ApiErrorCode;
  readonly status: number;
  /** For `manifest_invalid`: every problem with its line and column. */
  readonly issues: readonly ManifestIssue[];
  constructor(code: ApiErrorCode, message: string, status: number, issues: readonly ManifestIssue[] = []) {
    super(message);
    this.name = 'AegisApiError';
    this.code = code;
    this.status = status;
    this.issues = issues;
  }
}

export type ClientErrorCode =
  /** The server could not be reached (refused, no such socket, DNS, TLS handshake). */
  | 'unreachable'
  /** The request took longer than its timeout. */
  | 'timeout'
  /** The server's answer was not what the API describes (bad JSON, a cut stream). */
  | 'bad_response'
  /** The code folder cannot be archived (missing, a symlink or special file in it). */
  | 'code_dir_invalid'
  /** The outputs could not be written (destination not empty, an unsafe entry, I/O). */
  | 'outputs_failed'
  /** The options given to the client are unusable (a bad URL). */
  | 'invalid_options';

export class AegisClientError extends Error {
  readonly code: ClientErrorCode;
  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AegisClientError';
    this.code = code;
  }
}

const BY_STATUS: Readonly<Record<number, ApiErrorCode>> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  429: 'throttled',
};

/** The AegisApiError for an error answer (its body parsed defensively). */
export function apiErrorFrom(status: number, body: Buffer): AegisApiError {
  let code: string = BY_STATUS[status] ?? (status >= 500 ? 'internal' : `http_${status}`);
  let message = `the server answered ${status}`;
  let issues: ManifestIssue[] = [];
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    const e = typeof v === 'object' && v !== null ? (v as { error?: unknown }).error : undefined;
    if (typeof e === 'object' && e !== null) {
      const o = e as Record<string, unknown>;
      if (typeof o['code'] === 'string' && o['code'] !== '') code = o['code'];
      if (typeof o['message'] === 'string') message = o['message'];
      if (Array.isArray(o['issues'])) issues = o['issues'].filter(isIssue);
    }
  } catch {
    // Not JSON (a proxy's page): the status says what it can.
  }
  return new AegisApiError(code, message, status, issues);
}

function isIssue(v: unknown): v is ManifestIssue {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o['line'] === 'number' && typeof o['column'] === 'number' && typeof o['path'] === 'string' && typeof o['message'] === 'string'
  );
}
