/**
 * Envelope encryption of event payloads. Pure: every key is an argument.
 *
 * - A 32-byte master key never encrypts payloads. HKDF-SHA256 derives from it a key-wrapping key
 *   and a subject-hashing key (separate "info" labels).
 * - Data keys (AES-256) encrypt payloads with AES-256-GCM, random 96-bit nonces, and additional
 *   authenticated data naming the log origin and the entry's index, so a ciphertext moved to
 *   another position or log fails to decrypt.
 * - Data keys are stored wrapped (AES-256-GCM under the wrapping key, AAD = key id).
 * Encryption happens BEFORE the entry is hashed into the Merkle tree, so destroying a data key
 * (retention, erasure) leaves every hash and proof intact.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync } from 'node:crypto';
import { AuditError } from './errors.js';

export const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export interface MasterKeys {
  readonly wrap: Uint8Array;
  readonly subject: Uint8Array;
}

export function deriveMasterKeys(master: Uint8Array): MasterKeys {
  if (master.length !== KEY_BYTES) throw new AuditError('audit.key_invalid', 'master key must be 32 bytes');
  const derive = (info: string): Uint8Array => new Uint8Array(hkdfSync('sha256', master, new Uint8Array(0), info, KEY_BYTES));
  return { wrap: derive('aegis-audit/v1 key-wrap'), subject: derive('aegis-audit/v1 subject-hash') };
}

/** Keyed hash of a data-subject id: stored in the clear instead of the id (128 bits, hex). */
export function subjectHash(keys: MasterKeys, subject: string): string {
  return createHmac('sha256', keys.subject).update(subject, 'utf8').digest('hex').slice(0, 32);
}

/** AAD binding a payload ciphertext to its log and position. */
export function payloadAad(origin: string, index: number): Uint8Array {
  return Buffer.from(`aegis-audit-entry/v1\n${origin}\n${index}\n`, 'utf8');
}

function seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(aad);
  const head = c.update(plaintext);
  const tail = c.final();
  return Buffer.concat([head, tail, c.getAuthTag()]);
}

function open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array {
  if (nonce.length !== NONCE_BYTES || sealed.length < TAG_BYTES) throw new AuditError('audit.decrypt_failed', 'ciphertext is too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG_BYTES)), d.final()]);
  } catch (cause) {
    throw new AuditError('audit.decrypt_failed', 'ciphertext does not authenticate (wrong key, position or data)', { cause });
  }
}

/** Encrypts a payload; `nonce` must be 12 fresh random bytes. Returns ciphertext || tag. */
export function encryptPayload(dataKey: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  if (nonce.length !== NONCE_BYTES) throw new AuditError('audit.key_invalid', 'nonce must be 12 bytes');
  return seal(dataKey, nonce, plaintext, aad);
}

export function decryptPayload(dataKey: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array {
  return open(dataKey, nonce, sealed, aad);
}

/** Wraps a data key: nonce (12) || ciphertext (32) || tag (16). */
export function wrapDataKey(keys: MasterKeys, keyId: string, dataKey: Uint8Array, nonce: Uint8Array): Uint8Array {
  if (dataKey.length !== KEY_BYTES) throw new AuditError('audit.key_invalid', 'data key must be 32 bytes');
  return Buffer.concat([nonce, seal(keys.wrap, nonce, dataKey, Buffer.from(keyId, 'utf8'))]);
}

export function unwrapDataKey(keys: MasterKeys, keyId: string, wrapped: Uint8Array): Uint8Array {
  if (wrapped.length !== NONCE_BYTES + KEY_BYTES + TAG_BYTES)
    throw new AuditError('audit.key_invalid', `wrapped key ${keyId} has the wrong size`);
  try {
    return open(keys.wrap, wrapped.subarray(0, NONCE_BYTES), wrapped.subarray(NONCE_BYTES), Buffer.from(keyId, 'utf8'));
  } catch (cause) {
    throw new AuditError('audit.key_invalid', `wrapped key ${keyId} does not unwrap under the master key`, { cause });
  }
}

/**
 * Data key ids: `d.<YYYY-MM-DD>.<tag>` for the day's general key, `s.<subject hash>.<YYYY-MM-DD>.<tag>`
 * for a data subject's key of that day. The day is the log's clock at append time; retention
 * destroys keys by day, erasure destroys every key of one subject.
 */
export interface KeyIdParts {
  readonly subject?: string;
  readonly day: string;
}

const KEY_ID_RE = /^(?:d|s\.([0-9a-f]{32}))\.(\d{4}-\d{2}-\d{2})\.[0-9a-f]{8}$/u;

export function makeKeyId(day: string, tag: string, subject?: string): string {
  return subject === undefined ? `d.${day}.${tag}` : `s.${subject}.${day}.${tag}`;
}

export function parseKeyId(id: string): KeyIdParts | undefined {
  const m = KEY_ID_RE.exec(id);
  if (m === null) return undefined;
  return m[1] === undefined ? { day: m[2] as string } : { subject: m[1], day: m[2] as string };
}
