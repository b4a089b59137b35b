/**
 * Retention and erasure by crypto-shredding: destroying a data key makes the payloads it
 * encrypted unreadable; hashes, proofs and checkpoints are unaffected.
 */
import { type MasterKeys, parseKeyId, subjectHash } from './envelope.js';
import type { KeyRing } from './key-ring.js';
import type { AuditStore } from './store/types.js';
import { isoDay } from './batch-writer.js';

const DAY_MS = 86_400_000;

/**
 * Destroys the data keys whose day is older than `retentionDays` before `now` (0: none).
 * Returns their ids.
 */
export async function applyRetention(store: AuditStore, keys: KeyRing, retentionDays: number, now: number): Promise<string[]> {
  if (retentionDays <= 0) return [];
  const cutoff = isoDay(now - retentionDays * DAY_MS);
  const doomed = (await store.listKeyIds()).filter((id) => {
    const p = parseKeyId(id);
    return p !== undefined && p.day < cutoff;
  });
  for (const id of doomed) await keys.destroy(id);
  return doomed;
}

/** Destroys every data key of `subject`; returns the subject's keyed hash and the key count. */
export async function eraseSubject(
  store: AuditStore,
  keys: KeyRing,
  masterKeys: MasterKeys,
  subject: string,
): Promise<{ subjectHash: string; keysDestroyed: number }> {
  const hash = subjectHash(masterKeys, subject);
  const doomed = (await store.listKeyIds()).filter((id) => parseKeyId(id)?.subject === hash);
  for (const id of doomed) await keys.destroy(id);
  return { subjectHash: hash, keysDestroyed: doomed.length };
}
