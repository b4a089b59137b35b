/** Errors of the tools broker (src/tools). Codes are API (docs/tools.md). */
import { AegisError } from '../errors.js';

export type ToolsErrorCode =
  /** The broker could not listen, or was asked to broker an invalid server. */
  | 'tools.start_failed'
  /** A local server's program is not an absolute path nor in the system directories. */
  | 'tools.command_not_found'
  /** A remote server's host resolved to an address the broker refuses (DNS-rebinding guard). */
  | 'tools.address_refused'
  /** The secret bound to a server is missing, expired, or not bound to the server's host. */
  | 'tools.secret_unavailable'
  /** The upstream server could not be reached or its connection failed. */
  | 'tools.server_unavailable'
  /** A message from either side was larger than the broker accepts. */
  | 'tools.message_too_large';

export class ToolsError extends AegisError<ToolsErrorCode> {}
