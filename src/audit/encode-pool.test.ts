import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import { EncodePool } from './encode-pool.js';
import { BatchArena, encodeArena, entryParts } from './entry-batch.js';
import { encodeEntry, parseEntry, secretJson } from './entry.js';
import { decryptPayload, payloadAad } from './envelope.js';
import { hashLeaf } from './merkle/hash.js';
import { batchEntry, batchLeafHash, type EntryBatch } from './store/types.js';

const ORIGIN = 'example.org/log';
const GENERAL = 'd.2026-11-30.0a0b0c0d';
const SUBJECT_KEY = 's.0123456789abcdef0123456789abcdef.2026-11-30.01020304';

/** `n` events; every 7th has a data subject (and so the subject's key); some carry non-ASCII text. */
function events(n: number): Array<{ header: Parameters<typeof entryParts>[0]; subj?: string; payload: Record<string, unknown> }> {
  return Array.from({ length: n }, (_, i) => ({
    header: {
      id: `019ad3e4-5b6c-7d8e-9f00-${String(i).padStart(12, '0')}`,
      time: '2026-11-30T10:00:00.000Z',
      actor: i % 3 === 0 ? { agent: 'a', execution: `exec-${i % 5}` } : { principal: 'ops' },
      action: i % 2 === 0 ? 'net.connect' : 'fs.write',
      decision: i % 10 === 0 ? ('deny' as const) : ('allow' as const),
      ...(i % 4 === 0 ? { reason: `why ${i} ✓` } : {}),
    },
    ...(i % 7 === 0 ? { subj: '0123456789abcdef0123456789abcdef' } : {}),
    payload: { host: 'api.example.com', n: i, text: i % 11 === 0 ? 'é\u2028😀' : 'plain' },
  }));
}

function arenaOf(evs: ReturnType<typeof events>): { arena: BatchArena; bySubject: Map<number, string> } {
  const arena = new BatchArena(64, 4); // small: the arena must grow while filled
  const bySubject = new Map<number, string>();
  evs.forEach((e, i) => {
    const { pre, post } = entryParts(e.header, e.subj);
    arena.add(pre, post, secretJson({ payload: e.payload }));
    if (e.subj !== undefined) bySubject.set(i, SUBJECT_KEY);
  });
  return { arena, bySubject };
}

/** Every entry is the generic canonical encoding at its index, hashed as a leaf, and decrypts under its key. */
function check(b: EntryBatch, evs: ReturnType<typeof events>, start: number, keys: Map<string, Uint8Array>): void {
  assert.equal(b.count, evs.length);
  evs.forEach((e, i) => {
    const entry = batchEntry(b, i);
    const parsed = parseEntry(entry);
    assert.equal(parsed.index, start + i);
    assert.equal(parsed.enc.keyId, e.subj !== undefined ? SUBJECT_KEY : GENERAL);
    const reference = encodeEntry({ ...e.header, index: start + i, ...(e.subj !== undefined ? { subjectHash: e.subj } : {}) }, parsed.enc);
    assert.equal(Buffer.from(entry).toString(), Buffer.from(reference).toString());
    assert.deepEqual(Buffer.from(batchLeafHash(b, i)), Buffer.from(hashLeaf(entry)));
    const key = keys.get(parsed.enc.keyId) as Uint8Array;
    const plain = decryptPayload(key, parsed.enc.nonce, parsed.enc.ciphertext, payloadAad(ORIGIN, start + i));
    assert.equal(Buffer.from(plain).toString(), canonicalJson({ payload: e.payload }));
  });
}

describe('encode pool (the arena path)', () => {
  const keys = new Map<string, Uint8Array>([
    [GENERAL, randomBytes(32)],
    [SUBJECT_KEY, randomBytes(32)],
  ]);

  it('encodes on this thread exactly what the generic encoder writes, with each subject key', () => {
    const evs = events(40);
    const { arena, bySubject } = arenaOf(evs);
    const b = encodeArena(arena.view(), 5, ORIGIN, { general: GENERAL, bySubject, keys }, randomBytes(12 * evs.length));
    check(b, evs, 5, keys);
  });

  it('splits a batch across worker threads and joins the parts in order (subjects keep their keys)', async () => {
    const pool = new EncodePool(undefined, 2);
    try {
      for (const n of [100, 1000, 1001]) {
        const evs = events(n);
        const { arena, bySubject } = arenaOf(evs);
        const b = await pool.encode(arena, 1_000_000, ORIGIN, { general: GENERAL, bySubject, keys });
        check(b, evs, 1_000_000, keys);
        // The arena is kept (a batch is re-encoded at another position after a conflict).
        check(await pool.encode(arena, 7, ORIGIN, { general: GENERAL, bySubject, keys }), evs, 7, keys);
      }
    } finally {
      await pool.close();
    }
  });
});
