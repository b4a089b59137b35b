/** Errors of the tools broker (src/tools). Codes are API (docs/tools.md). */
import { AegisError } from '../errors.js';

export type ToolsErrorCode =
  /** The broker could not listen, or was asked to broker an invalid server. */
  | 'tools.start_failed'
  /** A local server's sandbox did not start, or the server did not answer `initialize` in time (the agent does not start). */
  | 'tools.server_start_failed'
  /** A local server's manifest cannot be used for a tool server (network, secrets, tools of its own, unreadable, invalid). */
  | 'tools.server_manifest_invalid'
  /** A remote server's host resolved to an address the broker refuses (DNS-rebinding guard). */
  | 'tools.address_refused'
  /** The secret bound to a server is missing, expired, or not bound to the server's host. */
  | 'tools.secret_unavailable'
  /** The upstream server could not be reached or its connection failed. */
  | 'tools.server_unavailable'
  /** A message from either side was larger than the broker accepts. */
  | 'tools.message_too_large';

export class ToolsError extends AegisError<ToolsErrorCode> {}
