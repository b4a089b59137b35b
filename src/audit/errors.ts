/**
 * Errors of the audit area. The code is the API: callers and tests branch on it, never on the
 * message text.
 */
import { AegisError } from '../errors.js';

export type AuditErrorCode =
  /** A Merkle proof or root failed verification (RFC 6962). */
  | 'audit.proof_invalid'
  /** A proof request is out of range (index >= size, size1 > size2, size beyond the log). */
  | 'audit.proof_range'
  /** A signed note / checkpoint could not be parsed (C2SP signed-note, tlog-checkpoint). */
  | 'audit.checkpoint_malformed'
  /** No signature on a checkpoint verifies under the log key. */
  | 'audit.checkpoint_signature'
  /** A new checkpoint would not be consistent with (or would be older than) the latest one. */
  | 'audit.checkpoint_inconsistent'
  /** An event handed to the log is not a valid AuditEventInput. */
  | 'audit.event_invalid'
  /** A value cannot be encoded as canonical JSON (cycles, non-finite numbers, non-plain objects). */
  | 'audit.json_invalid'
  /** A stored entry or record could not be parsed: stored data is untrusted input. */
  | 'audit.entry_malformed'
  /** Decryption failed: wrong key, wrong position (AAD) or modified ciphertext. */
  | 'audit.decrypt_failed'
  /** The data key of an entry has been destroyed (retention or erasure). */
  | 'audit.key_destroyed'
  /** A key file or key variable is unusable (wrong size, wrong permissions, unparsable). */
  | 'audit.key_invalid'
  /** The store moved on under a writer (another writer appended first); the caller catches up. */
  | 'audit.conflict'
  /** The store's contents disagree with its own checkpoints; the log refuses to append. */
  | 'audit.store_corrupt'
  /** The store backend failed (I/O, database). */
  | 'audit.store_io'
  /** The log was used after close(). */
  | 'audit.closed'
  /** A write was attempted through a read-only handle (AuditReader, a store opened read-only). */
  | 'audit.read_only'
  /** A configuration value (AEGIS_AUDIT_* variable, store or sink setting) is invalid. */
  | 'audit.config_invalid'
  /** Publication of a checkpoint to the external sink failed. */
  | 'audit.publish_failed'
  /** The host's audit budget setting (AEGIS_AUDIT_BUDGET_*) is invalid; the run does not start. */
  | 'audit.budget_invalid';

export class AuditError extends AegisError<AuditErrorCode> {}
