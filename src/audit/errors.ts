/**
 * Errors of the audit area. The code is the API: callers and tests branch on it, never on the
 * message text.
 */
import { AegisError } from '../errors.js';

export type AuditErrorCode =
  /** A Merkle proof or root failed verification (RFC 6962). */
  | 'proof-invalid'
  /** A proof request is out of range (index >= size, size1 > size2, size beyond the log). */
  | 'proof-range'
  /** A signed note / checkpoint could not be parsed (C2SP signed-note, tlog-checkpoint). */
  | 'checkpoint-malformed'
  /** No signature on a checkpoint verifies under the log key. */
  | 'checkpoint-signature'
  /** A new checkpoint would not be consistent with (or would be older than) the latest one. */
  | 'checkpoint-inconsistent'
  /** An event handed to the log is not a valid AuditEventInput. */
  | 'event-invalid'
  /** A value cannot be encoded as canonical JSON (cycles, non-finite numbers, non-plain objects). */
  | 'json-invalid'
  /** A stored entry or record could not be parsed: stored data is untrusted input. */
  | 'entry-malformed'
  /** Decryption failed: wrong key, wrong position (AAD) or modified ciphertext. */
  | 'decrypt-failed'
  /** The data key of an entry has been destroyed (retention or erasure). */
  | 'key-destroyed'
  /** A key file or key variable is unusable (wrong size, wrong permissions, unparsable). */
  | 'key-invalid'
  /** The store moved on under a writer (another writer appended first); the caller catches up. */
  | 'conflict'
  /** The store's contents disagree with its own checkpoints; the log refuses to append. */
  | 'store-corrupt'
  /** The store backend failed (I/O, database). */
  | 'store-io'
  /** The log was used after close(). */
  | 'closed'
  /** A write was attempted through a read-only handle (AuditReader, a store opened read-only). */
  | 'read-only'
  /** A configuration value (AEGIS_AUDIT_* variable, store or sink setting) is invalid. */
  | 'config-invalid'
  /** Publication of a checkpoint to the external sink failed. */
  | 'publish-failed'
  /** The host's audit budget setting (AEGIS_AUDIT_BUDGET_*) is invalid; the run does not start. */
  | 'budget-invalid';

export class AuditError extends AegisError<AuditErrorCode> {}
