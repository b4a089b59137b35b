/**
 * Errors of the server's state store (SQLite and PostgreSQL). The code is the API: callers (the
 * API layer, the dispatcher) and tests branch on it, never on the message text.
 */
import { AegisError } from '../../errors.js';

export type StoreErrorCode =
  /** The database failed (I/O, connection, a query the server refused). */
  | 'store.io'
  /** A row already exists under this id (API key id, execution id). */
  | 'store.conflict'
  /** The row a write refers to does not exist (an execution, an agent version). */
  | 'store.not_found'
  /** A value handed to the store is invalid (a code digest that is not the archive's, a bad limit, a bad schema name). */
  | 'store.invalid'
  /** A stored row could not be parsed: stored data is untrusted input. */
  | 'store.corrupt'
  /** The database was written by a newer AEGIS (its schema version is unknown here); nothing is changed. */
  | 'store.schema_newer'
  /** The data folder or database file is open to other users (group/other-writable, or owned by someone else). */
  | 'store.insecure'
  /** The store was used after close(). */
  | 'store.closed';

export class StoreError extends AegisError<StoreErrorCode> {}
