import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { signCheckpoint } from './checkpoint/checkpoint.js';
import { noteSigner, noteVerifier, rawEd25519PublicKey } from './checkpoint/note.js';
import { encodeEntry } from './entry.js';
import { MerkleTree, hashLeaf } from './merkle/index.js';
import type { AuditStore, StoredRecord } from './store/types.js';
import { workerAnalyzer } from './verify-pool.js';
import { verifyLog } from './verify.js';

const ORIGIN = 'example.org/test-log';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const signer = noteSigner(ORIGIN, privateKey);
const verifier = noteVerifier(ORIGIN, rawEd25519PublicKey(publicKey));

function entry(i: number): Uint8Array {
  return encodeEntry(
    { index: i, id: `id-${i}`, time: '2026-11-25T00:00:00.000Z', actor: {}, action: 'x.y', decision: 'info' },
    { keyId: 'd.2026-11-25.00000000', nonce: new Uint8Array(12), ciphertext: new Uint8Array(16) },
  );
}

/** A read-only in-memory store: records and checkpoint notes as given (possibly damaged). */
function memStore(records: StoredRecord[], checkpoints: string[]): AuditStore {
  const no = (): never => {
    throw new Error('audit.read_only');
  };
  return {
    location: 'memory',
    readLeafHashes: no,
    async *readEntries() {
      yield* records;
    },
    append: no,
    appendCheckpoint: no,
    readCheckpoints: async () => checkpoints,
    putKey: no,
    getKey: no,
    listKeyIds: no,
    deleteKey: no,
    writeFrontier: no,
    readFrontier: no,
    close: async () => undefined,
  };
}

function goodLog(n: number): { records: StoredRecord[]; checkpoint: string } {
  const tree = new MerkleTree();
  const records = Array.from({ length: n }, (_, i) => {
    const e = entry(i);
    tree.append(hashLeaf(e));
    return { index: i, leafHash: hashLeaf(e), entry: e };
  });
  return { records, checkpoint: signCheckpoint({ origin: ORIGIN, size: n, root: tree.root(), extensions: [] }, signer) };
}

describe('verifyLog', () => {
  it('accepts a good log and reports its size and root', async () => {
    const { records, checkpoint } = goodLog(9);
    const r = await verifyLog({ store: memStore(records, [checkpoint]), verifier, origin: ORIGIN });
    assert.ok(r.ok);
    assert.equal(r.ok && r.size, 9);
    assert.equal(r.ok && r.checkpoints, 1);
  });

  it('ignores an incomplete record at the tail with a warning (interrupted, never acknowledged)', async () => {
    const { records, checkpoint } = goodLog(4);
    const r = await verifyLog({
      store: memStore([...records, { index: 4, error: 'incomplete record at byte 999 (interrupted write at the tail)' }], [checkpoint]),
      verifier,
      origin: ORIGIN,
    });
    assert.ok(r.ok);
    assert.equal(r.warnings.length, 1);
  });

  it('names an unreadable record', async () => {
    const { records, checkpoint } = goodLog(4);
    const damaged = [...records.slice(0, 2), { index: 2, error: 'unreadable record at byte 300: record length 0 is invalid' }];
    const r = await verifyLog({ store: memStore(damaged, [checkpoint]), verifier, origin: ORIGIN });
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.problem, /^entry 2: unreadable record/u);
  });

  it('names an entry that is not JSON even when its stored hash matches', async () => {
    const { records, checkpoint } = goodLog(3);
    const junk = Buffer.from('not json');
    const r = await verifyLog({
      store: memStore([records[0]!, { index: 1, leafHash: hashLeaf(junk), entry: junk }], [checkpoint]),
      verifier,
      origin: ORIGIN,
    });
    assert.match(r.ok ? '' : r.problem, /^entry 1: malformed/u);
  });

  it('names a garbage checkpoint note', async () => {
    const { records, checkpoint } = goodLog(3);
    const r = await verifyLog({ store: memStore(records, [checkpoint, '{"size":3,"no']), verifier, origin: ORIGIN });
    assert.match(r.ok ? '' : r.problem, /^checkpoint 1: audit.checkpoint_malformed/u);
  });

  it('names a checkpoint smaller than the one before it (rollback of the checkpoint list)', async () => {
    const { records, checkpoint } = goodLog(5);
    const tree = new MerkleTree();
    records.slice(0, 2).forEach((r) => r.error === undefined && tree.append(r.leafHash));
    const small = signCheckpoint({ origin: ORIGIN, size: 2, root: tree.root(), extensions: [] }, signer);
    const r = await verifyLog({ store: memStore(records, [checkpoint, small]), verifier, origin: ORIGIN });
    assert.match(r.ok ? '' : r.problem, /^checkpoint 1: size 2 is smaller than the previous checkpoint's 5/u);
  });

  it('gives the same results with the worker-thread analyzer as inline, across chunk boundaries', async () => {
    const a = workerAnalyzer();
    try {
      const { records, checkpoint } = goodLog(20_000);
      const ok = await verifyLog({ store: memStore(records, [checkpoint]), verifier, origin: ORIGIN, analyze: a.analyze });
      const okInline = await verifyLog({ store: memStore(records, [checkpoint]), verifier, origin: ORIGIN });
      assert.ok(ok.ok && okInline.ok);
      assert.deepEqual(Buffer.from(ok.ok ? ok.root : []), Buffer.from(okInline.ok ? okInline.root : []));
      const junk = Buffer.from('not json');
      const bad = [...records.slice(0, 17_000), { index: 17_000, leafHash: hashLeaf(junk), entry: junk }, ...records.slice(17_001)];
      const r = await verifyLog({ store: memStore(bad, [checkpoint]), verifier, origin: ORIGIN, analyze: a.analyze });
      assert.match(r.ok ? '' : r.problem, /^entry 17000: malformed/u);
    } finally {
      await a.close();
    }
  });
});
