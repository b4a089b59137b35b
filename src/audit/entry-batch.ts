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

// One-entry memo: consecutive events usually share actor, action and decision.
const memo = {
  agent: undefined as string | undefined,
  execution: undefined as string | undefined,
  principal: undefined as string | undefined,
  action: '',
  decision: '',
  pre: '',
};

/** `pre` and `post` parts of an entry (see BatchItem); `subjectHash` is the keyed subject hash. */
export function entryParts(
  h: Pick<EntryHeader, 'id' | 'time' | 'actor' | 'action' | 'decision' | 'reason'>,
  subjectHash?: string,
): { pre: string; post: string } {
  const a = h.actor;
  if (
    memo.pre === '' ||
    memo.agent !== a.agent ||
    memo.execution !== a.execution ||
    memo.principal !== a.principal ||
    memo.action !== h.action ||
    memo.decision !== h.decision
  ) {
    let actor = '{';
    if (a.agent !== undefined) actor += `"agent":${q(a.agent)}`;
    if (a.execution !== undefined) actor += `${actor.length > 1 ? ',' : ''}"execution":${q(a.execution)}`;
    if (a.principal !== undefined) actor += `${actor.length > 1 ? ',' : ''}"principal":${q(a.principal)}`;
    actor += '}';
    memo.pre = `{"action":${q(h.action)},"actor":${actor},"decision":${q(h.decision)},`;
    memo.agent = a.agent;
    memo.execution = a.execution;
    memo.principal = a.principal;
    memo.action = h.action;
    memo.decision = h.decision;
  }
  return {
    pre: memo.pre,
    post:
      `"id":${q(h.id)},` +
      (h.reason !== undefined ? `"reason":${q(h.reason)},` : '') +
      (subjectHash !== undefined ? `"subj":${q(subjectHash)},` : '') +
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
  // 12-byte nonces encode to exactly 16 base64 characters each: encode them all at once.
  const nonceB64 = Buffer.from(nonces.buffer, nonces.byteOffset, 12 * n).toString('base64');
  // AAD = "aegis-audit-entry/v1\n<origin>\n<index>\n" (envelope.ts payloadAad), built in place.
  const aadPrefix = Buffer.from(payloadAad(origin, 0)).subarray(0, -2);
  const aad = Buffer.alloc(aadPrefix.length + 24);
  aadPrefix.copy(aad);
  let sealed = Buffer.alloc(4096);
  for (let i = 0; i < n; i++) {
    const it = items[i] as BatchItem;
    const key = keys.get(it.keyId);
    if (key === undefined) throw new Error(`encodeBatch: no data key ${it.keyId}`);
    const c = createCipheriv('aes-256-gcm', key, nonces.subarray(12 * i, 12 * i + 12));
    const aadLen = aadPrefix.length + aad.write(`${start + i}\n`, aadPrefix.length, 'latin1');
    c.setAAD(aad.subarray(0, aadLen));
    const body = c.update(it.secret, 'utf8');
    c.final(); // GCM is a stream mode: final() returns no bytes
    if (body.length + 16 > sealed.length) sealed = Buffer.alloc(2 * (body.length + 16));
    body.copy(sealed);
    c.getAuthTag().copy(sealed, body.length);
    const text = `${it.pre}"enc":{"c":"${sealed.toString('base64', 0, body.length + 16)}","k":${q(it.keyId)},"n":"${nonceB64.slice(16 * i, 16 * i + 16)}"},"i":${start + i},${it.post}`;
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
