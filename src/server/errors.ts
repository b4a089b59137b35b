/**
 * The server's errors. Internally every failure is a `ServerError` with a house code
 * (`server.<snake_case>`); at the HTTP edge it becomes `{"error": {"code", "message"}}` with the
 * API code of issue 11's contract (the house code without `server.`) and its HTTP status.
 */
import { AegisError } from '../errors.js';

export type ServerErrorCode =
  /** 400: a request that does not match its schema (unknown fields, wrong types, bad JSON). */
  | 'server.invalid_request'
  /** 400: the deployed manifest is invalid (the body carries `issues`). */
  | 'server.manifest_invalid'
  /** 400: the uploaded code archive is refused (traversal, links out, devices, bombs). */
  | 'server.archive_invalid'
  /** 401: no key, a malformed, unknown, wrong, expired or revoked key. */
  | 'server.unauthorized'
  /** 403: the principal's roles may not use this route. */
  | 'server.forbidden'
  /** 404: unknown route or id. */
  | 'server.not_found'
  /** 409: an invalid state transition (cancelling an execution that ended, ...). */
  | 'server.conflict'
  /** 413: a body or a part larger than its limit. */
  | 'server.payload_too_large'
  /** 415: a content type the route does not take. */
  | 'server.unsupported_media_type'
  /** 429: too many authentication failures from one source. */
  | 'server.throttled'
  /** 503: not ready (the store or the audit log is not available). */
  | 'server.unavailable'
  /** 500: anything else (details are logged, never sent). */
  | 'server.internal'
  /** `aegis serve` / `aegis keys create` refused their options (TLS, addresses, data folder). */
  | 'server.config_invalid';

export class ServerError extends AegisError<ServerErrorCode> {
  /** Extra fields of the error body (`issues` for manifest_invalid). */
  readonly details: Readonly<Record<string, unknown>> | undefined;
  constructor(code: ServerErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.details = options?.details;
  }
}

export const HTTP_STATUS: Readonly<Record<ServerErrorCode, number>> = {
  'server.invalid_request': 400,
  'server.manifest_invalid': 400,
  'server.archive_invalid': 400,
  'server.unauthorized': 401,
  'server.forbidden': 403,
  'server.not_found': 404,
  'server.conflict': 409,
  'server.payload_too_large': 413,
  'server.unsupported_media_type': 415,
  'server.throttled': 429,
  'server.unavailable': 503,
  'server.internal': 500,
  'server.config_invalid': 500,
};

/** The API code (the contract's spelling) of a house code. */
export function apiCode(code: ServerErrorCode): string {
  return code.slice('server.'.length);
}
