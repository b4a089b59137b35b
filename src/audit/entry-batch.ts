/**
 * Batch encoding of entries: encrypt payloads, write each entry's canonical JSON, hash each leaf.
 * This is the CPU-heavy half of an append, so it runs in a worker thread (encode-pool.ts) while
 * the main thread validates events and writes the previous batch. Pure: keys and nonces are
 * arguments, so the same function runs inline in tests.
 *
 * The entry text is assembled from parts prepared on the main thread, in canonical key order
 * (action, actor, decision | enc, i | id, reason, subj, time, v); entry.test.ts checks that the
 * result equals the generic canonical encoding.
 */
import { createCipheriv, hash } from 'node:crypto';
import type { EntryHeader } from './entry.js';
import { payloadAad } from './envelope.js';
import type { EntryBatch } from './store/types.js';

export interface BatchItem {
  /** `{"action":…,"actor":…,"decision":…,` */
  readonly pre: string;
  /** `"id":…,["reason":…,]["subj":…,]"time":…,"v":1}` */
  readonly post: string;
  /** Canonical JSON of the secret part {"payload":…,"subject"?:…}. */
  readonly secret: string;
  readonly keyId: string;
}

/**
 * An EntryBatch (store/types.ts) whose buf also holds a 0x00 byte (the RFC 6962 leaf prefix)
 * before each entry, so that each leaf is hashed in one shot.
 */
export type EncodedBatch = EntryBatch;

const q = JSON.stringify;

export function entryParts(h: Omit<EntryHeader, 'index'>): { pre: string; post: string } {
  const a = h.actor;
  let actor = '{';
  if (a.agent !== undefined) actor += `"agent":${q(a.agent)}`;
  if (a.execution !== undefined) actor += `${actor.length > 1 ? ',' : ''}"execution":${q(a.execution)}`;
  if (a.principal !== undefined) actor += `${actor.length > 1 ? ',' : ''}"principal":${q(a.principal)}`;
  actor += '}';
  return {
    pre: `{"action":${q(h.action)},"actor":${actor},"decision":${q(h.decision)},`,
    post:
      `"id":${q(h.id)},` +
      (h.reason !== undefined ? `"reason":${q(h.reason)},` : '') +
      (h.subjectHash !== undefined ? `"subj":${q(h.subjectHash)},` : '') +
      `"time":${q(h.time)},"v":1}`,
  };
}

/** Encrypts and encodes `items` as entries start, start+1, ...; nonces: 12 fresh bytes each. */
export function encodeBatch(
  items: readonly BatchItem[],
  start: number,
  origin: string,
  keys: ReadonlyMap<string, Uint8Array>,
  nonces: Uint8Array,
): EncodedBatch {
  const n = items.length;
  const texts: string[] = new Array<string>(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const it = items[i] as BatchItem;
    const key = keys.get(it.keyId);
    if (key === undefined) throw new Error(`encodeBatch: no data key ${it.keyId}`);
    const nonce = nonces.subarray(12 * i, 12 * i + 12);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    c.setAAD(payloadAad(origin, start + i));
    const body = c.update(it.secret, 'utf8');
    c.final(); // GCM is a stream mode: final() returns no bytes
    const sealed = Buffer.concat([body, c.getAuthTag()]).toString('base64');
    const nb = Buffer.from(nonce.buffer, nonce.byteOffset, 12).toString('base64');
    const text = `${it.pre}"enc":{"c":"${sealed}","k":${q(it.keyId)},"n":"${nb}"},"i":${start + i},${it.post}`;
    texts[i] = text;
    total += Buffer.byteLength(text, 'utf8') + 1;
  }
  const buf = Buffer.allocUnsafe(total);
  const bounds = new Uint32Array(2 * n);
  const hashes = new Uint8Array(32 * n);
  let off = 0;
  for (let i = 0; i < n; i++) {
    buf[off] = 0x00; // RFC 6962 leaf prefix
    const len = buf.write(texts[i] as string, off + 1, 'utf8');
    hashes.set(hash('sha256', buf.subarray(off, off + 1 + len), 'buffer'), 32 * i);
    bounds[2 * i] = off + 1;
    bounds[2 * i + 1] = off + 1 + len;
    off += 1 + len;
  }
  return { count: n, buf, bounds, hashes };
}
