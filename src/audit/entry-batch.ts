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

/**
 * The events of one batch as flat UTF-8 bytes, filled on the main thread as events are appended:
 * for event k, its `pre`, `post` and `secret` parts (see BatchItem) one after the other, and
 * `ends[3k..3k+2]` where each part ends (each starts where the one before ends). Events are not
 * kept as objects or strings until their batch is written: a batch in flight is one buffer the
 * garbage collector never scans or copies, and it reaches a worker as one block of bytes.
 * Key ids are not in it: they are chosen when the batch is encoded (the day may have changed).
 */
export class BatchArena {
  buf: Buffer;
  ends: Uint32Array;
  count = 0;
  used = 0;

  // Small at first (a batch of one event is common at low rates); doubled as the batch grows.
  constructor(bytes = 4096, events = 16) {
    this.buf = Buffer.allocUnsafe(bytes);
    this.ends = new Uint32Array(3 * events);
  }

  /** Appends one event's parts. */
  add(pre: string, post: string, secret: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    const need = this.used + 3 * (pre.length + post.length + secret.length);
    if (need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.buf.length));
      this.buf.copy(grown, 0, 0, this.used);
      this.buf = grown;
    }
    if (3 * this.count + 3 > this.ends.length) {
      const grown = new Uint32Array(2 * this.ends.length);
      grown.set(this.ends);
      this.ends = grown;
    }
    const buf = this.buf;
    const e = 3 * this.count;
    let off = this.used;
    off += buf.write(pre, off, 'utf8');
    this.ends[e] = off;
    off += buf.write(post, off, 'utf8');
    this.ends[e + 1] = off;
    off += buf.write(secret, off, 'utf8');
    this.ends[e + 2] = off;
    this.used = off;
    this.count++;
  }

  /** Events [from, to) as a self-contained copy (for a worker), offsets rebased to 0. */
  slice(from: number, to: number): ArenaBytes {
    const base = from === 0 ? 0 : (this.ends[3 * from - 1] as number);
    const end = to === 0 ? 0 : (this.ends[3 * to - 1] as number);
    const ends = this.ends.slice(3 * from, 3 * to);
    for (let k = 0; k < ends.length; k++) (ends[k] as number) -= base;
    return { count: to - from, buf: new Uint8Array(this.buf.subarray(base, end)), ends };
  }

  /** A view of the whole arena (no copy), for encoding on this thread. */
  view(): ArenaBytes {
    return { count: this.count, buf: this.buf.subarray(0, this.used), ends: this.ends };
  }
}

/** What encodeArena reads: see BatchArena. */
export interface ArenaBytes {
  readonly count: number;
  readonly buf: Uint8Array;
  readonly ends: Uint32Array;
}

/**
 * Data key of each event: `general` unless `bySubject` names another one for it (events with a
 * data subject; keyed by the event's position in the arena).
 */
export interface ArenaKeys {
  readonly general: string;
  readonly bySubject?: ReadonlyMap<number, string> | undefined;
  readonly keys: ReadonlyMap<string, Uint8Array>;
}

/** Encrypts and encodes `items` as entries start, start+1, ...; nonces: 12 fresh bytes each. */
export function encodeBatch(
  items: readonly BatchItem[],
  start: number,
  origin: string,
  keys: ReadonlyMap<string, Uint8Array>,
  nonces: Uint8Array,
): EncodedBatch {
  const arena = new BatchArena();
  const bySubject = new Map<number, string>();
  items.forEach((it, i) => {
    arena.add(it.pre, it.post, it.secret);
    bySubject.set(i, it.keyId);
  });
  return encodeArena(arena.view(), start, origin, { general: '', bySubject, keys }, nonces);
}

const ENC_C = Buffer.from('"enc":{"c":"', 'latin1');

/**
 * Encrypts and encodes the arena's events as entries start, start+1, ...; nonces: 12 fresh bytes
 * each. Writes each entry straight into the batch buffer: the parts are copied as bytes, only the
 * base64 ciphertext is a string.
 */
export function encodeArena(a: ArenaBytes, start: number, origin: string, k: ArenaKeys, nonces: Uint8Array): EncodedBatch {
  const n = a.count;
  const src = Buffer.from(a.buf.buffer, a.buf.byteOffset, a.buf.length);
  const ends = a.ends;
  // 12-byte nonces encode to exactly 16 base64 characters each: encode them all at once.
  const nonceB64 = Buffer.from(nonces.buffer, nonces.byteOffset, 12 * n).toString('base64');
  // AAD = "aegis-audit-entry/v1\n<origin>\n<index>\n" (envelope.ts payloadAad), built in place.
  const aadPrefix = Buffer.from(payloadAad(origin, 0)).subarray(0, -2);
  const aad = Buffer.alloc(aadPrefix.length + 24);
  aadPrefix.copy(aad);
  // `,"k":"<id>","n":"` per key id (ids are [A-Za-z0-9._-], but quote them as JSON anyway).
  const kTexts = new Map<string, Buffer>();
  const kText = (id: string): Buffer => {
    let t = kTexts.get(id);
    if (t === undefined) kTexts.set(id, (t = Buffer.from(`","k":${q(id)},"n":"`, 'utf8')));
    return t;
  };
  // Exact size: per entry 0x00, pre, `"enc":{"c":"`, base64(ciphertext||tag), `","k":…,"n":"`,
  // 16 nonce characters, `"},"i":<index>,`, post.
  let total = 0;
  let prev = 0;
  for (let i = 0; i < n; i++) {
    const preEnd = ends[3 * i] as number;
    const postEnd = ends[3 * i + 1] as number;
    const secretEnd = ends[3 * i + 2] as number;
    const id = k.bySubject?.get(i) ?? k.general;
    total +=
      1 +
      (preEnd - prev) +
      ENC_C.length +
      4 * Math.ceil((secretEnd - postEnd + 16) / 3) +
      kText(id).length +
      16 +
      8 +
      String(start + i).length +
      (postEnd - preEnd);
    prev = secretEnd;
  }
  const buf = Buffer.allocUnsafe(total);
  const bounds = new Uint32Array(2 * n);
  const hashes = new Uint8Array(32 * n);
  let sealed = Buffer.allocUnsafe(4096);
  let off = 0;
  prev = 0;
  for (let i = 0; i < n; i++) {
    const preEnd = ends[3 * i] as number;
    const postEnd = ends[3 * i + 1] as number;
    const secretEnd = ends[3 * i + 2] as number;
    const id = k.bySubject?.get(i) ?? k.general;
    const key = k.keys.get(id);
    if (key === undefined) throw new Error(`encodeArena: no data key ${id}`);
    const index = start + i;
    const c = createCipheriv('aes-256-gcm', key, nonces.subarray(12 * i, 12 * i + 12));
    const aadLen = aadPrefix.length + aad.write(`${index}\n`, aadPrefix.length, 'latin1');
    c.setAAD(aad.subarray(0, aadLen));
    const body = c.update(src.subarray(postEnd, secretEnd));
    c.final(); // GCM is a stream mode: final() returns no bytes
    const sealedLen = body.length + 16;
    if (sealedLen > sealed.length) sealed = Buffer.allocUnsafe(2 * sealedLen);
    body.copy(sealed);
    c.getAuthTag().copy(sealed, body.length);
    const first = off;
    buf[off++] = 0x00; // RFC 6962 leaf prefix
    off += src.copy(buf, off, prev, preEnd);
    off += ENC_C.copy(buf, off);
    off += buf.write(sealed.toString('base64', 0, sealedLen), off, 'latin1');
    off += kText(id).copy(buf, off);
    off += buf.write(nonceB64.slice(16 * i, 16 * i + 16), off, 'latin1');
    off += buf.write(`"},"i":${index},`, off, 'latin1');
    off += src.copy(buf, off, preEnd, postEnd);
    hashes.set(hash('sha256', buf.subarray(first, off), 'buffer'), 32 * i);
    bounds[2 * i] = first + 1;
    bounds[2 * i + 1] = off;
    prev = secretEnd;
  }
  if (off !== total) throw new Error(`encodeArena: wrote ${off} of ${total} bytes`);
  return { count: n, buf, bounds, hashes };
}
