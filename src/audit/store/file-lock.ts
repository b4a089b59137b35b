/**
 * The embedded store's cross-process writer lock: a pid-file lock (src/host/pid-lock.ts) held
 * only for the duration of one write (one batch), so concurrent `aegis run` processes
 * interleave their batches. A lock left behind by a killed process is taken over.
 *
 * Appends stay safe even in the lock's narrow takeover race (see the LIMITATION there): each
 * append re-checks the file length under the lock. A lock held past the timeout ends in
 * AuditError('audit.store_io').
 */
import { withPidLock } from '../../host/pid-lock.js';
import { AuditError } from '../errors.js';

export function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  return withPidLock(path, fn, {
    timeoutMs: 15_000,
    error: (message, cause) => new AuditError('audit.store_io', `audit store ${message}`, { cause }),
  });
}
